"""Evaluation of the test fold: every model scored on the same users with the same metrics.

The metric definitions live in :mod:`recpipe.evaluation.metrics`; this module decides *what* is
evaluated (which users, which segments, which cut-offs) and shapes the results for the
``evaluate`` stage's outputs. Everything here is pure: frames and arrays in, dicts and frames
out; reading files and drawing figures happen elsewhere. The Markdown report is rendered in
:mod:`recpipe.evaluation.report`, the item embedding map computed in
:mod:`recpipe.evaluation.embedding`.

Who is evaluated
----------------
The evaluation users are the test fold's users with at least one relevant target (as in
:mod:`recpipe.evaluation.metrics`); a model that gives a user no list scores 0 for that user.
Segments restrict that set:

- ``all``: every evaluation user;
- ``cold_users``: users with at most ``cold_user_max_events`` history events (0 included);
- ``heavy_users``: users whose history event count is at or above the ``heavy_user_quantile``
  quantile of the evaluation users' counts (the top decile by default; ties at the threshold
  are all included, so the segment can be a little larger than the quantile suggests). A
  quantile instead of a fixed count keeps the segment meaningful at any data scale;
- ``cold_items``: only the relevant targets whose item has no history event count as
  relevant, so the metrics measure how well a model surfaces items nobody has touched yet;
  averaged over the users with at least one such target. The models' full lists are scored,
  so a cold item must compete with everything else for a slot.

Popularity (novelty, ARP and the popularity profile) is the number of distinct history users
per item, counted on the fold's history (train + valid for the test fold), never on targets.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from recpipe.config import Config
from recpipe.errors import DataError
from recpipe.evaluation.metrics import (
    REC_COLUMNS,
    TOPN_METRICS,
    average_popularity,
    bootstrap_interval,
    coverage,
    intra_list_diversity,
    metric_name,
    novelty,
    rating_errors,
    topn_per_user,
)

SEGMENTS: tuple[str, ...] = ("all", "cold_users", "heavy_users", "cold_items")
"""Segment names, in the order of the report."""

BEYOND_ACCURACY: tuple[str, ...] = ("coverage", "diversity", "novelty", "arp")
"""Beyond-accuracy keys of ``metrics.json`` (``arp`` is metrics.py's ``average_popularity``)."""

RESERVED_NAMES: frozenset[str] = frozenset({"candidate_recall", "union"})
"""Names a model may not take: they are keys or columns of the outputs."""

ROUND_DIGITS = 4
"""Decimals of every float written to the outputs."""


# --------------------------------------------------------------------------- config


def _distinct(values: list, what: str) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"{what} must be distinct, got {values}")
    return values


def parse_metric(name: str) -> tuple[str, int]:
    """Split ``"ndcg@10"`` into ``("ndcg", 10)``; raises ValueError for anything else."""
    metric, sep, k = name.partition("@")
    if not sep or metric not in TOPN_METRICS or not k.isdigit() or int(k) < 1:
        raise ValueError(
            f"{name!r} is not a top-N metric at a cut-off: expected NAME@K with NAME one of "
            f"{', '.join(TOPN_METRICS)}"
        )
    return metric, int(k)


class EvalConfig(Config):
    """Settings of the evaluation (``eval``)."""

    ks: list[PositiveInt] = Field(
        [5, 10, 20],
        min_length=1,
        description="cut-offs K of the top-N metrics in metrics.json and segments.json",
    )
    headline: list[str] = Field(
        ["ndcg@10", "precision@10", "recall@10", "map@10", "mrr@10", "hitrate@10"],
        min_length=1,
        description="metrics (NAME@K, K in ks) with bootstrap intervals, per-user values and "
        "a column in the report's table; the first one also heads the segment table",
    )
    beyond_k: PositiveInt = Field(
        10, description="cut-off of coverage, diversity, novelty, arp and the popularity plot"
    )
    curve_ks: list[PositiveInt] = Field(
        [1, 2, 3, 5, 10, 15, 20],
        min_length=1,
        description="cut-offs of the metric-vs-K curves (plots only; ks are added)",
    )
    curve_metrics: list[str] = Field(
        ["ndcg", "recall"],
        min_length=1,
        description="top-N metrics drawn against K (metric_vs_k.png, <metric>_vs_k.csv)",
    )
    n_boot: PositiveInt = Field(1000, description="bootstrap resamples of the users")
    level: float = Field(0.95, gt=0, lt=1, description="confidence level of the intervals")
    cold_user_max_events: int = Field(
        5, ge=0, description="cold users have at most this many history events"
    )
    heavy_user_quantile: float = Field(
        0.9,
        gt=0,
        lt=1,
        description="heavy users have at least as many history events as this quantile of "
        "the evaluation users' counts (0.9: the top decile)",
    )
    recall_ns: list[PositiveInt] = Field(
        [10, 20, 50, 100],
        min_length=1,
        description="list lengths N of the candidate recall (share of relevant test pairs in "
        "the candidate models' top N, per model and for their union)",
    )
    diversity: Literal["categories", "tfidf"] = Field(
        "categories",
        description="item vectors of the intra-list diversity: category one-hot or TF-IDF of "
        "title, text and categories",
    )
    embedding_clusters: PositiveInt = Field(
        8, description="K-means clusters of the item embedding map"
    )
    popularity_bins: int = Field(
        10, ge=2, description="popularity buckets of the catalogue (10: deciles)"
    )
    importance_top: PositiveInt = Field(
        20, description="features shown in importance.png (importance.csv lists all)"
    )

    @field_validator("ks", "curve_ks", "recall_ns", "curve_metrics", "headline")
    @classmethod
    def _no_repeats(cls, value: list, info: ValidationInfo) -> list:
        return _distinct(value, info.field_name)

    @field_validator("curve_metrics")
    @classmethod
    def _known_curve_metrics(cls, value: list[str]) -> list[str]:
        unknown = [m for m in value if m not in TOPN_METRICS]
        if unknown:
            raise ValueError(f"unknown top-N metric {unknown[0]!r}; known: {TOPN_METRICS}")
        return value

    @model_validator(mode="after")
    def _headline_in_ks(self) -> Self:
        for name in self.headline:
            _, k = parse_metric(name)
            if k not in self.ks:
                raise ValueError(f"headline metric {name!r}: cut-off {k} is not in ks {self.ks}")
        return self

    @property
    def all_ks(self) -> list[int]:
        """Every cut-off computed: ``ks`` plus ``curve_ks``, ascending."""
        return sorted(set(self.ks) | set(self.curve_ks))

    def topn_columns(self) -> list[str]:
        """The top-N keys of ``metrics.json``: every metric at every K of ``ks``."""
        return [metric_name(m, k) for m in TOPN_METRICS for k in sorted(self.ks)]


# --------------------------------------------------------------------------- the fold


@dataclass(frozen=True)
class FoldData:
    """What every model's evaluation shares: targets, segments and history statistics.

    Built once by :func:`prepare_fold`; item arrays are indexed by ``item_idx``.
    """

    truth: pd.DataFrame
    """Distinct relevant target pairs (``user_idx, item_idx, relevant``), sorted."""
    cold_truth: pd.DataFrame
    """The relevant target pairs whose item has no history event (same columns)."""
    segment_users: dict[str, np.ndarray]
    """Sorted evaluation users of each user segment (``all``, ``cold_users``, ...)."""
    heavy_threshold: float
    """History events a heavy user has at least (NaN without evaluation users)."""
    n_items: int
    """Catalogue size (coverage's denominator)."""
    n_history_users: int
    """Distinct users in the history (novelty's denominator)."""
    item_users: np.ndarray
    """Distinct history users per item (popularity)."""
    item_events: np.ndarray
    """History events per item."""
    popularity_bucket: np.ndarray
    """Per item, its popularity bucket: 1 = the most popular 1/bins of the catalogue."""
    item_vectors: sp.csr_matrix
    """Item features for diversity (rows = ``item_idx``; no columns: diversity is NaN)."""
    seen_keys: np.ndarray
    """Sorted distinct ``user_idx * n_items + item_idx`` of the history (items a list must
    not hold: recommendations exclude what the user already has)."""

    @property
    def users(self) -> np.ndarray:
        """The evaluation users."""
        return self.segment_users["all"]


def _check_index(values: np.ndarray, size: int, what: str, column: str) -> None:
    if len(values) and (values.min() < 0 or values.max() >= size):
        raise DataError(
            f"{what} has {column} outside [0, {size}): min {values.min()}, max {values.max()}",
            column=column,
        )


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    for col in columns:
        if col not in df.columns:
            raise DataError(f"{what} lacks column (has {list(df.columns)})", column=col)


def relevant_pairs(targets: pd.DataFrame) -> pd.DataFrame:
    """Distinct relevant ``(user_idx, item_idx)`` pairs of ``targets`` with ``relevant=True``."""
    _require(targets, ("user_idx", "item_idx", "relevant"), "targets")
    if not pd.api.types.is_bool_dtype(targets["relevant"]):
        raise DataError(
            f"relevant must be boolean, got {targets['relevant'].dtype}", column="relevant"
        )
    rel = targets.loc[targets["relevant"].to_numpy(bool), ["user_idx", "item_idx"]]
    rel = rel.astype(np.int64).drop_duplicates()
    rel = rel.sort_values(["user_idx", "item_idx"], ignore_index=True)
    return rel.assign(relevant=True)


def popularity_buckets(item_users: np.ndarray, bins: int) -> np.ndarray:
    """Bucket 1..``bins`` of each item by popularity rank (1 = most popular).

    Items are ordered by distinct history users, most first, ties by ``item_idx``; the
    ordered catalogue is cut into ``bins`` parts of (nearly) equal item counts, so bucket
    ``b`` always holds about ``1/bins`` of the catalogue whatever the popularity curve.
    """
    n = len(item_users)
    order = np.lexsort((np.arange(n), -np.asarray(item_users, dtype=np.float64)))
    bucket = np.empty(n, dtype=np.int64)
    # position p of the ordered catalogue falls in bucket floor(p * bins / n) + 1
    bucket[order] = np.arange(n) * bins // max(n, 1) + 1
    return bucket


def prepare_fold(
    history: pd.DataFrame,
    targets: pd.DataFrame,
    n_items: int,
    item_vectors: sp.csr_matrix,
    cfg: EvalConfig,
) -> FoldData:
    """Targets, segments and history statistics of one fold (see the module docstring).

    ``history`` needs ``user_idx, item_idx``; ``targets`` needs ``user_idx, item_idx,
    relevant``; ``item_vectors`` has one row per catalogue item.
    """
    _require(history, ("user_idx", "item_idx"), "history")
    hu = history["user_idx"].to_numpy(np.int64)
    hi = history["item_idx"].to_numpy(np.int64)
    _check_index(hi, n_items, "history", "item_idx")
    truth = relevant_pairs(targets)
    _check_index(truth["item_idx"].to_numpy(), n_items, "targets", "item_idx")
    if item_vectors.shape[0] != n_items:
        raise ValueError(f"item_vectors has {item_vectors.shape[0]} rows for {n_items} items")

    item_events = np.bincount(hi, minlength=n_items)
    # Distinct (user, item) pairs through one int64 key: hashing beats sorting 10M rows.
    pair_key = pd.unique(hu * n_items + hi)
    item_users = np.bincount(pair_key % n_items, minlength=n_items)
    n_history_users = int(len(pd.unique(hu)))

    cold = item_events[truth["item_idx"].to_numpy()] == 0
    cold_truth = truth.loc[cold].reset_index(drop=True)

    users = np.unique(truth["user_idx"].to_numpy())
    counts = pd.Series(hu).value_counts()
    events = counts.reindex(users, fill_value=0).to_numpy()
    if len(users):
        threshold = float(np.quantile(events, cfg.heavy_user_quantile, method="higher"))
    else:
        threshold = float("nan")
    segment_users = {
        "all": users,
        "cold_users": users[events <= cfg.cold_user_max_events],
        "heavy_users": users[events >= threshold],
        "cold_items": np.unique(cold_truth["user_idx"].to_numpy()),
    }
    return FoldData(
        truth=truth,
        cold_truth=cold_truth,
        segment_users=segment_users,
        heavy_threshold=threshold,
        n_items=n_items,
        n_history_users=n_history_users,
        item_users=item_users,
        item_events=item_events,
        popularity_bucket=popularity_buckets(item_users, cfg.popularity_bins),
        item_vectors=sp.csr_matrix(item_vectors),
        seen_keys=np.sort(pair_key),
    )


# --------------------------------------------------------------------------- one model


@dataclass
class ModelResult:
    """Everything the outputs need from one model's list (the list itself can then go)."""

    metrics: dict[str, float]
    """``metrics.json`` entry: top-N at every K of ``ks``, beyond-accuracy, ``users``."""
    segments: dict[str, dict[str, float]]
    """Per segment: top-N at every K of ``ks`` and ``users``."""
    per_user: pd.DataFrame
    """Headline metrics per evaluation user (index ``user_idx``, float64)."""
    curves: pd.DataFrame
    """Mean top-N metrics at every K of ``cfg.all_ks`` (index ``k``, columns the metrics)."""
    popularity: np.ndarray
    """Share of the top-``beyond_k`` slots in each popularity bucket (sums to 1, or NaN)."""


def _means(per_user: pd.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    if not len(per_user):
        return dict.fromkeys(columns, float("nan"))
    return {c: float(per_user[c].to_numpy().mean()) for c in columns}


def _segment(per_user: pd.DataFrame, users: np.ndarray, columns: Sequence[str]) -> dict:
    # per_user is indexed by all evaluation users, so a user segment is a row subset: the
    # metrics of a user depend only on that user's own targets and list.
    rows = per_user.loc[users, list(columns)] if len(users) else per_user.iloc[:0]
    return {**_means(rows, columns), "users": len(users)}


def beyond_accuracy(recs: pd.DataFrame, fold: FoldData, k: int) -> dict[str, float]:
    """``coverage``, ``diversity``, ``novelty`` and ``arp`` at ``k`` (keys ``name@k``)."""
    if fold.item_vectors.shape[1] == 0:
        diversity = float("nan")  # no features: every item would count as different
    else:
        diversity = intra_list_diversity(recs, fold.item_vectors, k)
    if fold.n_history_users:
        nov = novelty(recs, fold.item_users, fold.n_history_users, k)
    else:
        nov = float("nan")
    return {
        metric_name("coverage", k): coverage(recs, fold.n_items, k),
        metric_name("diversity", k): diversity,
        metric_name("novelty", k): nov,
        metric_name("arp", k): average_popularity(recs, fold.item_users, k),
    }


def popularity_shares(recs: pd.DataFrame, fold: FoldData, k: int, bins: int) -> np.ndarray:
    """Share of the recommendation slots at rank <= ``k`` that fall in each popularity bucket."""
    items = recs.loc[recs["rank"].to_numpy() <= k, "item_idx"].to_numpy(np.int64)
    counts = np.bincount(fold.popularity_bucket[items] - 1, minlength=bins).astype(float)
    return counts / counts.sum() if counts.sum() else np.full(bins, np.nan)


def _check_unseen(recs: pd.DataFrame, fold: FoldData) -> None:
    """A list that holds an item of the user's history is an error naming the first row."""
    keys = recs["user_idx"].to_numpy(np.int64) * fold.n_items + recs["item_idx"].to_numpy(np.int64)
    if len(fold.seen_keys) == 0 or len(keys) == 0:
        return
    pos = np.minimum(np.searchsorted(fold.seen_keys, keys), len(fold.seen_keys) - 1)
    seen = fold.seen_keys[pos] == keys
    if seen.any():
        first = int(np.flatnonzero(seen)[0])
        raise DataError(
            f"{int(seen.sum())} recommendations are items the user already has in the history, "
            f"e.g. user_idx {int(recs['user_idx'].iloc[first])}, "
            f"item_idx {int(recs['item_idx'].iloc[first])}",
            column="item_idx",
            row=first + 1,
        )


def evaluate_model(recs: pd.DataFrame, fold: FoldData, cfg: EvalConfig) -> ModelResult:
    """Score one model's ranked list (``user_idx, item_idx, rank``) on the fold.

    Raises :class:`DataError` (naming the column) for malformed lists: missing columns,
    non-integer or gapped ranks, repeated items, items outside the catalogue, and items the
    user already has in the history (every model is scored on new items only).
    """
    _require(recs, REC_COLUMNS, "recommendations")
    for col in REC_COLUMNS:
        if not pd.api.types.is_integer_dtype(recs[col]):
            raise DataError(f"must be an integer column, got {recs[col].dtype}", column=col)
    _check_index(recs["item_idx"].to_numpy(), fold.n_items, "recommendations", "item_idx")
    _check_unseen(recs, fold)

    ks = sorted(cfg.ks)
    # Every metric reads only the head of the lists; cutting once here saves each metric
    # call its own filter over the full candidate lists (often 100 per user).
    recs = recs.loc[recs["rank"].to_numpy() <= max(cfg.all_ks[-1], cfg.beyond_k)]
    per_user = topn_per_user(recs, fold.truth, cfg.all_ks)
    columns = cfg.topn_columns()
    metrics = {
        **_means(per_user, columns),
        **beyond_accuracy(recs, fold, cfg.beyond_k),
        "users": len(per_user),
    }
    segments = {
        name: _segment(per_user, fold.segment_users[name], columns)
        for name in ("all", "cold_users", "heavy_users")
    }
    cold = topn_per_user(recs, fold.cold_truth, ks)
    segments["cold_items"] = {**_means(cold, columns), "users": len(cold)}

    curve_rows = {
        k: _means(per_user, [metric_name(m, k) for m in TOPN_METRICS]) for k in cfg.all_ks
    }
    curves = pd.DataFrame(
        [[row[metric_name(m, k)] for m in TOPN_METRICS] for k, row in curve_rows.items()],
        index=pd.Index(cfg.all_ks, name="k"),
        columns=list(TOPN_METRICS),
    )
    return ModelResult(
        metrics=metrics,
        segments=segments,
        per_user=per_user[list(cfg.headline)],
        curves=curves,
        popularity=popularity_shares(recs, fold, cfg.beyond_k, cfg.popularity_bins),
    )


def intervals(
    per_user: pd.DataFrame, headline: Sequence[str], n_boot: int, level: float, seed: int
) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "low", "high"}}``: percentile bootstrap over users of each metric.

    Every metric (and every model) uses the same ``seed``, so all intervals come from the
    same resamples of the users (common random numbers): models evaluated on the same users
    are compared on identical resamples. NaN everywhere without users.
    """
    out: dict[str, dict[str, float]] = {}
    # The interval is a function of (values, n_boot, seed, level), so metrics with identical
    # per-user values share one bootstrap: with one relevant target per user (leave-last-one
    # splits) recall equals hitrate and map equals mrr, which saves a third of the work.
    done: dict[bytes, tuple[float, float]] = {}
    for name in headline:
        values = per_user[name].to_numpy(np.float64)
        if not len(values):
            out[name] = {"mean": float("nan"), "low": float("nan"), "high": float("nan")}
            continue
        key = hashlib.blake2b(values.tobytes(), digest_size=16).digest()
        if key not in done:
            done[key] = bootstrap_interval(values, n_boot, seed, level)
        low, high = done[key]
        out[name] = {"mean": float(values.mean()), "low": low, "high": high}
    return out


def per_user_table(per_user: Mapping[str, pd.DataFrame], headline: Sequence[str]) -> pd.DataFrame:
    """One row per (model, user): ``model, user_idx`` and the headline metrics as float32.

    Models keep their given order; users are sorted within each model. Every model has the
    same users (the evaluation users), which is what a paired comparison needs.
    """
    parts = []
    for name, df in per_user.items():
        part = pd.DataFrame({"model": name, "user_idx": df.index.to_numpy(np.int64)})
        for col in headline:
            part[col] = df[col].to_numpy(np.float32)
        parts.append(part)
    if not parts:
        empty = {"model": pd.Series([], dtype=str), "user_idx": np.zeros(0, np.int64)}
        return pd.DataFrame({**empty, **{c: np.zeros(0, np.float32) for c in headline}})
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- candidate recall


def candidate_ranks(
    recs: pd.DataFrame, truth: pd.DataFrame, n_items: int, max_n: int
) -> np.ndarray:
    """Rank of each relevant pair of ``truth`` in ``recs`` (inf where absent or beyond max_n).

    ``truth`` must be sorted by ``(user_idx, item_idx)`` (as :func:`relevant_pairs` gives);
    a pair listed twice in ``recs`` takes its best rank.
    """
    _require(recs, REC_COLUMNS, "candidates")
    best = np.full(len(truth), np.inf)
    top = recs.loc[recs["rank"].to_numpy() <= max_n]
    # (user, item) -> one int64 key; truth sorted by (user, item) means sorted keys.
    keys = truth["user_idx"].to_numpy(np.int64) * n_items + truth["item_idx"].to_numpy(np.int64)
    rec_keys = top["user_idx"].to_numpy(np.int64) * n_items + top["item_idx"].to_numpy(np.int64)
    if not len(keys) or not len(rec_keys):
        return best
    pos = np.minimum(np.searchsorted(keys, rec_keys), len(keys) - 1)
    hit = keys[pos] == rec_keys
    np.minimum.at(best, pos[hit], top["rank"].to_numpy(np.float64)[hit])
    return best


def candidate_recall(ranks: Mapping[str, np.ndarray], n_pairs: int, ns: Sequence[int]) -> dict:
    """Share of the ``n_pairs`` relevant pairs within each model's top N and their union.

    Keys ``<model>@N`` and ``union@N`` for every N, plus ``relevant_pairs``. A pair is in the
    union's top N when any model ranks it at N or better. NaN without relevant pairs.
    """
    out: dict[str, float | int] = {"relevant_pairs": int(n_pairs)}
    union = np.full(n_pairs, np.inf)
    for r in ranks.values():
        union = np.minimum(union, r)
    for n in sorted(ns):
        for name, r in {**ranks, "union": union}.items():
            out[f"{name}@{n}"] = float(np.mean(r <= n)) if n_pairs else float("nan")
    return out


def candidate_recall_table(
    recall: Mapping[str, Any], names: Sequence[str], ns: Sequence[int]
) -> pd.DataFrame:
    """Wide plot table: column ``n``, then ``union`` and one column per name (NaN: disabled)."""
    cols = ["union", *names]
    rows = [[n, *[recall.get(f"{c}@{n}", float("nan")) for c in cols]] for n in sorted(ns)]
    return pd.DataFrame(rows, columns=["n", *cols])


# --------------------------------------------------------------------------- rating error


def latest_ratings(targets: pd.DataFrame) -> pd.DataFrame:
    """Rated target pairs with their latest rating (``user_idx, item_idx, rating``)."""
    _require(targets, ("user_idx", "item_idx", "rating"), "targets")
    rated = targets[targets["rating"].notna()]
    if "timestamp" in rated.columns:
        rated = rated.sort_values("timestamp", kind="stable")
    rated = rated.drop_duplicates(["user_idx", "item_idx"], keep="last")
    return rated[["user_idx", "item_idx", "rating"]].sort_values(
        ["user_idx", "item_idx"], ignore_index=True
    )


def rating_metrics(model: Any, rated: pd.DataFrame) -> dict[str, float]:
    """``rmse``, ``mae``, ``rated_pairs`` and ``unpredicted`` of a rating predictor.

    ``model.predict_ratings(users, items)`` returns NaN for pairs it cannot score; those are
    counted in ``unpredicted`` and left out of the errors (see ``metrics.rating_errors``).
    """
    users = rated["user_idx"].to_numpy(np.int64)
    items = rated["item_idx"].to_numpy(np.int64)
    pred = np.asarray(model.predict_ratings(users, items), dtype=np.float64)
    err = rating_errors(pred, rated["rating"].to_numpy(np.float64))
    return {
        "rmse": err["rmse"],
        "mae": err["mae"],
        "rated_pairs": len(rated),
        "unpredicted": err["n_missing"],
    }


# --------------------------------------------------------------------------- plot tables


def curves_table(curves: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Long table ``model, k, <every top-N metric>`` (models in the given order)."""
    parts = [c.reset_index().assign(model=name) for name, c in curves.items()]
    cols = ["model", "k", *TOPN_METRICS]
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]


def curve_wide(
    curves: Mapping[str, pd.DataFrame], metric: str, names: Sequence[str], ks: Sequence[int]
) -> pd.DataFrame:
    """Wide table ``k, <name>...`` of one metric: one column (line) per model, NaN: disabled."""
    out = pd.DataFrame({"k": list(ks)})
    for name in names:
        out[name] = curves[name][metric].to_numpy() if name in curves else np.nan
    return out


def popularity_table(
    shares: Mapping[str, np.ndarray], fold: FoldData, names: Sequence[str], bins: int
) -> pd.DataFrame:
    """Per popularity bucket: catalogue share, history-event share and each model's share.

    ``catalogue`` is the flat reference (each bucket holds ~1/bins of the items); ``history``
    is how the users' own events spread over the buckets (the long tail). A model above
    ``history`` in bucket 1 amplifies popularity; one close to ``catalogue`` ignores it.
    """
    bucket = fold.popularity_bucket - 1
    catalogue = np.bincount(bucket, minlength=bins) / max(len(bucket), 1)
    events = np.bincount(bucket, weights=fold.item_events, minlength=bins)
    history = events / events.sum() if events.sum() else np.full(bins, np.nan)
    out = pd.DataFrame(
        {"popularity_bucket": np.arange(1, bins + 1), "catalogue": catalogue, "history": history}
    )
    for name in names:
        out[name] = shares.get(name, np.full(bins, np.nan))
    return out


def importance_table(importance: Mapping[str, float]) -> pd.DataFrame:
    """``feature, gain, share`` sorted by gain (largest first), ties by feature name."""
    df = pd.DataFrame(
        {"feature": list(importance), "gain": [float(v) for v in importance.values()]}
    )
    total = df["gain"].sum()
    df["share"] = df["gain"] / total if total > 0 else np.nan
    return df.sort_values(["gain", "feature"], ascending=[False, True], ignore_index=True)


# --------------------------------------------------------------------------- JSON


def json_ready(obj: Any, digits: int = ROUND_DIGITS) -> Any:
    """``obj`` with floats rounded, NaN/inf as None and numpy scalars as Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v, digits) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return round(value, digits) + 0.0 if math.isfinite(value) else None  # + 0.0: no -0.0
    return obj
