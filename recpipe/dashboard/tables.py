"""Pure frame shaping for the dashboard: JSON reports and Parquet rows in, small frames out.

Nothing here reads a file or imports Streamlit, so every function is tested on its own
(``tests/test_dashboard_tables.py``). The pages call these on what :mod:`.data` loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from recpipe.evaluation.review import LOWER_IS_BETTER, RunComparison, flatten

FINAL_MODELS: tuple[str, ...] = ("blend", "ranker")
"""The lists built from the candidates; shown after the candidate models."""

NOT_MODELS: tuple[str, ...] = ("candidate_recall",)
"""Top-level entries of ``metrics.json`` that are not a model's metrics."""

BEYOND_PREFIXES: tuple[str, ...] = ("coverage", "diversity", "novelty", "arp")
"""Beyond-accuracy metrics, as named in ``metrics.json`` before ``@K``."""

RATING_METRICS: tuple[str, ...] = ("rmse", "mae", "rated_pairs", "unpredicted")

VERDICT_MARK = {"better": "▲ better", "worse": "▼ worse"}


def model_order(metrics: Mapping[str, Any]) -> list[str]:
    """The models of ``metrics.json``: candidate models in file order, then blend, ranker."""
    names = [k for k, v in metrics.items() if isinstance(v, Mapping) and k not in NOT_MODELS]
    return [m for m in names if m not in FINAL_MODELS] + [m for m in FINAL_MODELS if m in names]


def lower_is_better(metric: str) -> bool:
    return metric.split("@", 1)[0] in LOWER_IS_BETTER


def best_models(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, list[str]]:
    """Per column, the row labels holding its best value (ties all marked; NaN never best)."""
    best: dict[str, list[str]] = {}
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        if values.notna().any():
            top = values.min() if lower_is_better(col) else values.max()
            best[col] = [str(m) for m in frame.index[values == top]]
    return best


def headline_table(
    metrics: Mapping[str, Any], intervals: Mapping[str, Any], headline: Sequence[str]
) -> pd.DataFrame:
    """One row per model with a list (index), per headline metric its value and its interval
    as text (``"[0.257, 0.399]"``, from ``intervals.json``), plus the users it was averaged
    over."""
    rows = {}
    for model in model_order(metrics):
        m = metrics[model]
        if not any(metric in m for metric in headline):
            continue  # e.g. the rating predictor: it has no lists (see rating_table)
        row: dict[str, Any] = {}
        for metric in headline:
            row[metric] = _number(m.get(metric))
            iv = intervals.get(model, {}).get(metric)
            row[f"{metric} CI"] = (
                f"[{iv['low']:.3f}, {iv['high']:.3f}]" if isinstance(iv, Mapping) else ""
            )
        row["users"] = _number(m.get("users"))
        rows[model] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    if "users" in frame:
        frame["users"] = frame["users"].astype("Int64")
    return frame


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return float("nan")


def beyond_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Coverage, diversity, novelty and average popularity of each model's lists."""
    rows = {}
    for model in model_order(metrics):
        row = {
            k: _number(v)
            for k, v in metrics[model].items()
            if k.split("@", 1)[0] in BEYOND_PREFIXES
        }
        if row:
            rows[model] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame


def rating_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """RMSE and MAE of every model that predicts ratings (empty frame when none does)."""
    rows = {
        model: {k: _number(metrics[model].get(k)) for k in RATING_METRICS}
        for model in model_order(metrics)
        if "rmse" in metrics[model]
    }
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(RATING_METRICS))
    frame.index.name = "model"
    return frame


def verdict_table(run: RunComparison) -> pd.DataFrame:
    """The review's comparisons as a frame: model, metric, base, head, Δ, interval, verdict."""
    rows = [
        {
            "model": c.model,
            "metric": c.metric,
            "base": c.base,
            "head": c.head,
            "paired Δ": c.diff,
            "low": c.low,
            "high": c.high,
            "p": c.p_value,
            "users": c.users,
            "verdict": c.verdict,
        }
        for c in run.comparisons
    ]
    return pd.DataFrame(
        rows,
        columns=["model", "metric", "base", "head", "paired Δ", "low", "high", "p", "users"]
        + ["verdict"],
    )


def verdict_marks(verdicts: pd.DataFrame) -> pd.DataFrame:
    """model x metric text for the overview: ``▲ better +0.012``, ``▼ worse``, ``~`` (within
    noise) or ``=`` (identical)."""
    if verdicts.empty:
        return pd.DataFrame()

    def mark(row: pd.Series) -> str:
        v = str(row["verdict"])
        if v in VERDICT_MARK:
            return f"{VERDICT_MARK[v]} {row['paired Δ']:+.4f}"
        return "=" if "identical" in v else "~ noise" if "noise" in v else v

    out = verdicts.assign(mark=verdicts.apply(mark, axis=1))
    table = out.pivot(index="model", columns="metric", values="mark")
    table.columns = [f"{c} vs base" for c in table.columns]
    return table.reindex(list(dict.fromkeys(verdicts["model"])))


def params_digest(params: Mapping[str, Any]) -> str:
    """A short sha256 of the params (key order does not matter): two runs with the same
    digest had the same settings."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def data_source(params: Mapping[str, Any]) -> str:
    """``synthetic (120 users, 80 items, 3000 events)``, ``movielens 1m (path)``, ``files
    (data/user/events.csv)``: what ingest read, from the ``data`` params block."""
    d = params.get("data", {}) if isinstance(params, Mapping) else {}
    source = str(d.get("source", "unknown"))
    if source == "synthetic":
        return (
            f"synthetic ({d.get('n_users')} users, {d.get('n_items')} items, "
            f"{d.get('n_events')} events, seed {params.get('seed')})"
        )
    if source == "movielens":
        return f"movielens {d.get('variant')} ({d.get('path') or 'downloaded'})"
    if source == "files":
        return f"files ({d.get('interactions')})"
    return source


# --------------------------------------------------------------------------- experiments

RUN_COLUMNS = ("run", "rev", "kind", "created")


def experiments_frame(exp_show: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``dvc exp show --json`` as one row per run: ``run`` (a name, the short rev or
    ``workspace``), ``rev`` (full sha, ``workspace`` for the workspace), ``kind``
    (``workspace`` / ``commit`` / ``experiment``), ``created``, then every params key
    (``params.yaml`` flattened, prefixed ``param:``) and every number of the metrics files
    (``metric:<model>.<metric>``, the file's path left out, except for the non-model files).
    Runs whose data DVC could not read (failed experiments) are kept with empty values."""
    rows: list[dict[str, Any]] = []

    def add(rev: Mapping[str, Any], kind: str) -> None:
        sha = str(rev.get("rev"))
        name = rev.get("name")
        run = "workspace" if sha == "workspace" else str(name or sha[:7])
        row: dict[str, Any] = {"run": run, "rev": sha, "kind": kind}
        data = rev.get("data") or {}
        row["created"] = data.get("timestamp")
        for file, content in (data.get("params") or {}).items():
            tree = (content or {}).get("data") or {}
            prefix = "param:" if file == "params.yaml" else f"param:{file}:"
            row.update({prefix + k: _cell(v) for k, v in flatten(tree).items()})
        for file, content in (data.get("metrics") or {}).items():
            tree = (content or {}).get("data") or {}
            prefix = "metric:" if file.endswith("metrics.json") else f"metric:{_stem(file)}."
            row.update(
                {
                    prefix + k: v
                    for k, v in flatten(tree).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
            )
        rows.append(row)

    for entry in exp_show:
        add(entry, "workspace" if entry.get("rev") == "workspace" else "commit")
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                add(rev, "experiment")
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    # one run may appear twice (a branch and HEAD on one commit): keep its first row
    frame = frame.drop_duplicates("rev", keep="first").reset_index(drop=True)
    return frame


def _stem(file: str) -> str:
    name = file.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0]


def _cell(value: Any) -> Any:
    """Lists and dicts as JSON text: a table cell holds one value."""
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return value


def varying(frame: pd.DataFrame, prefix: str) -> list[str]:
    """Columns starting with ``prefix`` whose value is not the same in every row that has
    any such column (a run DVC could not read, e.g. a failed experiment, does not count)."""
    cols = [c for c in frame.columns if c.startswith(prefix)]
    rows = frame[cols].notna().any(axis=1)
    return [c for c in cols if frame.loc[rows, c].astype(str).nunique(dropna=False) > 1]


def filter_runs(
    frame: pd.DataFrame, text: str = "", kinds: Sequence[str] | None = None
) -> pd.DataFrame:
    """Rows whose run name contains ``text`` (case-insensitive) and whose kind is listed."""
    out = frame
    if kinds is not None:
        out = out[out["kind"].isin(list(kinds))]
    if text:
        out = out[out["run"].astype(str).str.contains(text, case=False, regex=False)]
    return out


# --------------------------------------------------------------------------- data page


def events_over_time(interactions: pd.DataFrame, freq: str = "D") -> pd.DataFrame:
    """Events per period and event type: ``period`` (timestamp), ``event``, ``events``."""
    ts = pd.to_datetime(interactions["timestamp"].to_numpy(), unit="s")
    period = pd.Series(ts).dt.to_period(freq).dt.start_time
    event = interactions["event"].astype(str).to_numpy()
    frame = pd.DataFrame({"period": period.to_numpy(), "event": event})
    out = frame.groupby(["period", "event"], sort=True).size().rename("events").reset_index()
    return out


def count_distribution(counts: np.ndarray) -> pd.DataFrame:
    """How many entities have each count (``count``, ``entities``), counts >= 1, sorted."""
    counts = np.asarray(counts)
    counts = counts[counts > 0]
    values, n = np.unique(counts, return_counts=True)
    return pd.DataFrame({"count": values.astype(np.int64), "entities": n.astype(np.int64)})


def split_sizes(split: Mapping[str, Any]) -> pd.DataFrame:
    """``reports/split.json`` as rows ``part``, ``what`` (events, users, pairs, relevant),
    ``count``; extra ranker folds as ``extra1``, ``extra2``..."""
    rows = []
    for part, value in split.items():
        if part == "ranker_folds" and isinstance(value, list):
            for i, fold in enumerate(value, start=1):
                rows += [(f"extra{i} targets", k, v) for k, v in fold.items()]
        elif isinstance(value, Mapping):
            rows += [(part, k, v) for k, v in value.items() if isinstance(v, int | float)]
    return pd.DataFrame(rows, columns=["part", "what", "count"])


# --------------------------------------------------------------------------- explorers


def top_lists(
    lists: Mapping[str, pd.DataFrame], items: pd.DataFrame, hits: set[int], n: int = 10
) -> pd.DataFrame:
    """Models side by side: one row per rank 1..n, one column per model holding the item's
    title (``✓`` in front of a test-fold hit); ``lists`` maps a model to one user's rows
    (``item_idx``, ``rank``)."""
    titles = items.set_index("item_idx")["title"].astype(str)
    table = pd.DataFrame(index=pd.RangeIndex(1, n + 1, name="rank"))
    for model, recs in lists.items():
        recs = recs.sort_values("rank").head(n)
        col = [
            ("✓ " if int(i) in hits else "") + titles.get(int(i), str(i)) for i in recs["item_idx"]
        ]
        table[model] = pd.Series(col, index=pd.RangeIndex(1, len(col) + 1), dtype=object)
    return table.fillna("")


def hit_counts(lists: Mapping[str, pd.DataFrame], hits: set[int], n: int = 10) -> pd.Series:
    """How many of each model's top n are test-fold hits."""
    return pd.Series(
        {
            m: int(r.sort_values("rank").head(n)["item_idx"].isin(list(hits)).sum())
            for m, r in lists.items()
        },
        name="hits",
    )


def nearest(sims: np.ndarray, known: np.ndarray, item: int, n: int) -> pd.DataFrame:
    """The ``n`` items most similar to ``item`` (``sims``: its similarity to every item),
    among ``known`` items, the item itself excluded; ties by the lower index. Empty when
    ``item`` is not known."""
    sims = np.asarray(sims, dtype=np.float64).ravel()
    known = np.asarray(known, dtype=bool)
    if item < 0 or item >= len(sims) or not known[item]:
        return pd.DataFrame({"item_idx": np.array([], np.int64), "similarity": []})
    sims = np.where(known, sims, -np.inf)
    sims[item] = -np.inf
    order = np.lexsort((np.arange(len(sims)), -sims))
    order = order[np.isfinite(sims[order])][:n]
    return pd.DataFrame({"item_idx": order.astype(np.int64), "similarity": sims[order]})


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norm, out=np.zeros_like(matrix, dtype=np.float64), where=norm > 0)


def popularity_trend(events: pd.DataFrame, freq: str = "W") -> pd.DataFrame:
    """One item's events per period: ``period``, ``events``, ``users`` (distinct)."""
    if events.empty:
        return pd.DataFrame({"period": [], "events": [], "users": []})
    ts = pd.to_datetime(events["timestamp"].to_numpy(), unit="s")
    period = pd.Series(ts).dt.to_period(freq).dt.start_time.to_numpy()
    frame = pd.DataFrame({"period": period, "user_idx": events["user_idx"].to_numpy()})
    out = frame.groupby("period").agg(events=("user_idx", "size"), users=("user_idx", "nunique"))
    return out.reset_index()


def category_text(categories: Any) -> str:
    """An item's category list as ``"a, b"`` (Parquet gives arrays; None gives ``""``)."""
    if categories is None or (isinstance(categories, float) and np.isnan(categories)):
        return ""
    return ", ".join(str(c) for c in list(categories))
