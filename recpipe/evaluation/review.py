"""Review of a change: which metric differences between two runs are bigger than noise.

Pure logic behind ``python -m stages.review``: frames and dicts in, Markdown out. Reading
files from git or the workspace and calling ``dvc`` happen in the entry point.

The comparison
--------------
Two runs (``base``, e.g. the main branch, and ``head``, e.g. the workspace) each leave
``reports/per_user.parquet`` (one row per ``(model, user_idx)`` with the headline metrics)
and ``reports/metrics.json`` (``{model: {metric: value}}``). For every model both runs
scored and every headline metric both runs report, the users both runs scored are paired
(inner join on ``user_idx``) and a paired bootstrap over those users
(:func:`recpipe.evaluation.metrics.paired_bootstrap`) gives the mean difference ``head - base``
and its percentile interval. The verdict is ``better`` or ``worse`` when the interval
excludes 0, otherwise ``no change``: ``(identical)`` when every user's value is exactly the
same, ``(within noise)`` when values moved but not beyond what resampling users explains.

Pairing matters: two runs on the same users share most of their between-user variance, so
the paired interval is far narrower than two separate per-run intervals would suggest.
Every (model, metric) uses the same seed, hence the same resamples of the users (common
random numbers), and the output is a function of the inputs and the seed alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from recpipe.errors import DataError
from recpipe.evaluation.metrics import paired_bootstrap

KEY_COLUMNS: tuple[str, ...] = ("model", "user_idx")
"""Columns of ``per_user.parquet`` that identify a row; every other column is a metric."""

LOWER_IS_BETTER: tuple[str, ...] = ("rmse", "mae")
"""Metric names (before any ``@K``) for which a decrease is an improvement."""

BETTER, WORSE = "better", "worse"
NO_CHANGE_IDENTICAL = "no change (identical)"
NO_CHANGE_NOISE = "no change (within noise)"
NO_USERS = "no common users"

MAX_LISTED = 8
"""Significant changes named in the summary line; the rest are counted."""


class _Missing:
    """Marks a params key that exists on one side only (distinct from a ``null`` value)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


# --------------------------------------------------------------------------- params


@dataclass(frozen=True)
class ParamChange:
    """One flattened params key whose value differs; ``MISSING`` on the side that lacks it."""

    key: str
    base: Any
    head: Any


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}``; lists are leaves, compared as a whole.

    Lists stay whole because their elements have no stable name (a weight list reordered is
    one change, not many), which is also how ``dvc params diff`` shows them.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def diff_params(base: Mapping[str, Any], head: Mapping[str, Any]) -> list[ParamChange]:
    """Flattened keys whose values differ between two params trees, sorted by key."""
    fb, fh = flatten(base), flatten(head)
    changes = []
    for key in sorted(set(fb) | set(fh)):
        old, new = fb.get(key, MISSING), fh.get(key, MISSING)
        # 1 and 1.0 are the same setting to every stage; only report real differences.
        if old is MISSING or new is MISSING or not _same_value(old, new):
            changes.append(ParamChange(key, old, new))
    return changes


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _param_text(value: Any) -> str:
    if value is MISSING:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def has_rows(table_md: str) -> bool:
    """True when a Markdown table has data rows, not just a header.

    ``dvc params diff --md`` prints a bare header when no param changed.
    """
    return sum(1 for line in table_md.splitlines() if line.lstrip().startswith("|")) > 2


def render_params_table(changes: Sequence[ParamChange]) -> str:
    """Markdown table ``param | base | head`` of the changes (``—``: absent on that side)."""
    if not changes:
        return "No params changed."
    lines = ["| param | base | head |", "|---|---|---|"]
    for c in changes:
        lines.append(
            f"| {_cell(c.key)} | {_cell(_param_text(c.base))} | {_cell(_param_text(c.head))} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- per-user inputs


def check_per_user(df: pd.DataFrame, what: str) -> list[str]:
    """Validate a ``per_user.parquet`` frame; returns its metric columns in file order.

    Raises :class:`DataError` naming ``what`` (the file and revision) when key columns are
    missing, a (model, user) pair repeats, or a metric column is not numeric.
    """
    for col in KEY_COLUMNS:
        if col not in df.columns:
            raise DataError(f"lacks column (has {list(df.columns)})", file=what, column=col)
    dup = df.duplicated(list(KEY_COLUMNS))
    if dup.any():
        row = df.loc[dup].iloc[0]
        raise DataError(
            f"user {row['user_idx']} appears twice for model {row['model']!r}", file=what
        )
    metrics = [c for c in df.columns if c not in KEY_COLUMNS]
    for col in metrics:
        if not pd.api.types.is_numeric_dtype(df[col]):
            raise DataError(
                f"metric column is not numeric ({df[col].dtype})", file=what, column=col
            )
    return metrics


def _models(df: pd.DataFrame) -> list[str]:
    """Model names in order of first appearance (the evaluate stage's order)."""
    return list(dict.fromkeys(df["model"].astype(str)))


# --------------------------------------------------------------------------- comparison


@dataclass(frozen=True)
class Comparison:
    """One model and metric compared between base and head."""

    model: str
    metric: str
    base: float
    """The base run's value (``metrics.json``, else the mean over its per-user rows)."""
    head: float
    """The head run's value (likewise)."""
    users: int
    """Users both runs scored: the paired sample."""
    diff: float
    """Mean over the paired users of ``head - base`` (NaN without paired users)."""
    low: float
    high: float
    p_value: float
    verdict: str

    @property
    def significant(self) -> bool:
        """True when the verdict is ``better`` or ``worse``."""
        return self.verdict in (BETTER, WORSE)


@dataclass
class ModelUsers:
    """How many users each side scored for one model, and how many were paired."""

    base: int
    head: int
    paired: int


@dataclass
class RunComparison:
    """Everything the review shows about the metrics of two runs."""

    comparisons: list[Comparison]
    """Model-major, in head's model order, then head's metric order."""
    models: list[str]
    """Models both runs scored, in head's order."""
    added: list[str]
    """Models only head scored."""
    removed: list[str]
    """Models only base scored."""
    metrics: list[str]
    """Metric columns both runs report, in head's order."""
    metrics_one_side: list[str]
    """Metric columns only one side reports (not compared)."""
    users: dict[str, ModelUsers] = field(default_factory=dict)
    n_boot: int = 0
    seed: int = 0
    level: float = 0.95

    @property
    def significant(self) -> list[Comparison]:
        """Comparisons whose interval excludes 0."""
        return [c for c in self.comparisons if c.significant]


def _summary_value(metrics: Mapping[str, Any], model: str, metric: str, fallback: float) -> float:
    entry = metrics.get(model)
    if isinstance(entry, Mapping):
        value = entry.get(metric)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return fallback


def verdict_of(metric: str, diff: float, low: float, high: float, identical: bool) -> str:
    """``better``/``worse`` when ``[low, high]`` excludes 0, else a ``no change`` verdict.

    The direction accounts for metrics where lower is better (:data:`LOWER_IS_BETTER`).
    """
    if identical:
        return NO_CHANGE_IDENTICAL
    if not (low > 0 or high < 0):
        return NO_CHANGE_NOISE
    lower_better = metric.split("@", 1)[0] in LOWER_IS_BETTER
    return BETTER if (diff > 0) != lower_better else WORSE


def compare_runs(
    base_per_user: pd.DataFrame,
    head_per_user: pd.DataFrame,
    base_metrics: Mapping[str, Any],
    head_metrics: Mapping[str, Any],
    *,
    n_boot: int,
    seed: int,
    level: float = 0.95,
    base_name: str = "base per_user.parquet",
    head_name: str = "head per_user.parquet",
) -> RunComparison:
    """Paired comparison of every model and metric that both runs report.

    ``*_per_user`` are ``per_user.parquet`` frames, ``*_metrics`` the parsed
    ``metrics.json`` (used for the before/after columns so they match ``dvc metrics diff``;
    a missing entry falls back to the per-user mean). Users with a non-finite value on
    either side are left out of that metric's pairing.
    """
    base_cols = check_per_user(base_per_user, base_name)
    head_cols = check_per_user(head_per_user, head_name)
    metrics = [c for c in head_cols if c in base_cols]
    one_side = sorted(set(base_cols) ^ set(head_cols))
    base_models, head_models = _models(base_per_user), _models(head_per_user)
    models = [m for m in head_models if m in base_models]
    result = RunComparison(
        comparisons=[],
        models=models,
        added=[m for m in head_models if m not in base_models],
        removed=[m for m in base_models if m not in head_models],
        metrics=metrics,
        metrics_one_side=one_side,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
    base_by_model = dict(tuple(base_per_user.groupby(base_per_user["model"].astype(str))))
    head_by_model = dict(tuple(head_per_user.groupby(head_per_user["model"].astype(str))))
    for model in models:
        b, h = base_by_model[model], head_by_model[model]
        # Sorting by user fixes the order of the paired arrays, so the bootstrap (which
        # resamples positions) gives the same answer whatever order the files hold.
        paired = b.merge(h, on="user_idx", suffixes=("_b", "_h")).sort_values("user_idx")
        result.users[model] = ModelUsers(base=len(b), head=len(h), paired=len(paired))
        for metric in metrics:
            result.comparisons.append(
                _compare_one(model, metric, b, h, paired, base_metrics, head_metrics, result)
            )
    return result


def _compare_one(
    model: str,
    metric: str,
    b: pd.DataFrame,
    h: pd.DataFrame,
    paired: pd.DataFrame,
    base_metrics: Mapping[str, Any],
    head_metrics: Mapping[str, Any],
    cfg: RunComparison,
) -> Comparison:
    vb = paired[f"{metric}_b"].to_numpy(np.float64)
    vh = paired[f"{metric}_h"].to_numpy(np.float64)
    finite = np.isfinite(vb) & np.isfinite(vh)
    vb, vh = vb[finite], vh[finite]
    base_value = _summary_value(base_metrics, model, metric, _nanmean(b[metric]))
    head_value = _summary_value(head_metrics, model, metric, _nanmean(h[metric]))
    if not len(vb):
        nan = float("nan")
        return Comparison(model, metric, base_value, head_value, 0, nan, nan, nan, nan, NO_USERS)
    res = paired_bootstrap(vh, vb, cfg.n_boot, cfg.seed, cfg.level)
    diff, low, high = float(res["diff"]), float(res["low"]), float(res["high"])
    identical = bool(np.array_equal(vb, vh))
    return Comparison(
        model=model,
        metric=metric,
        base=base_value,
        head=head_value,
        users=len(vb),
        diff=diff,
        low=low,
        high=high,
        p_value=float(res["p_value"]),
        verdict=verdict_of(metric, diff, low, high, identical),
    )


def _nanmean(values: pd.Series) -> float:
    v = values.to_numpy(np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


# --------------------------------------------------------------------------- Markdown


def fmt_diff(x: float, signed: bool = True) -> str:
    """Three decimals, or two significant digits for a nonzero value below 0.001.

    Without the fallback a small but significant change would print as ``-0.000``.
    """
    if not np.isfinite(x):
        return "n/a"
    sign = "+" if signed else ""
    if x != 0 and abs(x) < 0.0005:
        return f"{x:{sign}.2g}"
    return f"{x:{sign}.3f}"


def _fmt4(x: float, signed: bool = False) -> str:
    if not np.isfinite(x):
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _change_text(c: Comparison) -> str:
    interval = f"[{fmt_diff(c.low, signed=False)}, {fmt_diff(c.high, signed=False)}]"
    return f"{c.model} {c.metric} {c.verdict} ({fmt_diff(c.diff)} {interval})"


def summary_line(run: RunComparison) -> str:
    """One line for the top of the review: the significant changes, then added/removed."""
    sig = run.significant
    if sig:
        noun = "change" if len(sig) == 1 else "changes"
        listed = ", ".join(_change_text(c) for c in sig[:MAX_LISTED])
        more = f", and {len(sig) - MAX_LISTED} more" if len(sig) > MAX_LISTED else ""
        text = f"**{len(sig)} significant {noun}:** {listed}{more}"
    elif run.comparisons:
        text = f"**No significant changes** ({len(run.comparisons)} comparisons)"
    else:
        text = "**Nothing to compare**: no model and metric appears in both runs"
    if run.added:
        text += f"; models added: {', '.join(run.added)}"
    if run.removed:
        text += f"; models removed: {', '.join(run.removed)}"
    return text + "."


def _model_table(run: RunComparison, model: str) -> list[str]:
    pct = f"{run.level:.0%}"
    u = run.users[model]
    if u.base == u.head == u.paired:
        who = f"{u.paired} users, the same in both runs."
    else:
        who = f"Paired over the {u.paired} users both runs scored (base {u.base}, head {u.head})."
    lines = [
        f"#### {model}",
        "",
        who,
        "",
        f"| metric | base | head | Δ | paired Δ [{pct} interval] | p | verdict |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for c in (c for c in run.comparisons if c.model == model):
        paired = (
            "n/a"
            if not c.users
            else f"{_fmt4(c.diff, True)} [{_fmt4(c.low, True)}, {_fmt4(c.high, True)}]"
        )
        p = "n/a" if not np.isfinite(c.p_value) else f"{c.p_value:.3f}"
        verdict = f"**{c.verdict}**" if c.significant else c.verdict
        lines.append(
            f"| {c.metric} | {_fmt4(c.base)} | {_fmt4(c.head)} | {_fmt4(c.head - c.base, True)}"
            f" | {paired} | {p} | {verdict} |"
        )
    return lines


def render_review(
    run: RunComparison,
    params_md: str,
    *,
    base_label: str,
    head_label: str,
    params_source: str,
) -> str:
    """The review as Markdown: summary line, params changes, per-model metric tables, method.

    ``base_label``/``head_label`` are Markdown naming the two runs (e.g. "`main` (1a2b3c4)").

    Models whose per-user values moved are shown open, in head's order; models identical to
    the base are folded into a ``<details>`` block so a PR comment stays short.
    """
    lines = [
        f"## Review: {head_label} vs {base_label}",
        "",
        summary_line(run),
        "",
        "### Params",
        "",
        params_md.strip() if has_rows(params_md) else "No params changed.",
        "",
        f"<sub>{params_source}</sub>",
        "",
        "### Metrics",
        "",
    ]
    if run.added:
        lines += [f"Models added (no base to compare): {', '.join(run.added)}.", ""]
    if run.removed:
        lines += [f"Models removed (no head to compare): {', '.join(run.removed)}.", ""]
    if run.metrics_one_side:
        lines += [f"Metrics in one run only (not compared): {', '.join(run.metrics_one_side)}.", ""]
    moved = {c.model for c in run.comparisons if c.verdict != NO_CHANGE_IDENTICAL}
    shown = [m for m in run.models if m in moved]
    same = [m for m in run.models if m not in moved]
    for model in shown:
        lines += [*_model_table(run, model), ""]
    if same:
        # A model no per-user value of which moved says nothing new; fold it away so the
        # models the change did reach stand out in a PR comment.
        title = f"{len(same)} model{'s' if len(same) != 1 else ''} identical to the base"
        lines += ["<details>", f"<summary>{title}: {', '.join(same)}</summary>", ""]
        for model in same:
            lines += [*_model_table(run, model), ""]
        lines += ["</details>", ""]
    lines += [_method_note(run)]
    return "\n".join(lines).rstrip() + "\n"


def _method_note(run: RunComparison) -> str:
    pct = f"{run.level:.0%}"
    moved = sum(1 for c in run.comparisons if c.verdict not in (NO_CHANGE_IDENTICAL, NO_USERS))
    note = (
        "<sub>base/head: `metrics.json` of each run; Δ = head − base. Paired Δ: mean over the "
        "users both runs scored of head − base, with a percentile bootstrap interval "
        f"({run.n_boot} resamples of the users, seed {run.seed}, {pct}). better/worse: the "
        "interval excludes 0; identical: every user's value is the same."
    )
    if moved:
        note += (
            f" {moved} comparison{'s' if moved != 1 else ''} moved at all; at {pct} about "
            f"{moved * (1 - run.level):.1f} of them could be flagged by chance alone, so weigh a "
            "lone flag on a model you did not touch accordingly."
        )
    return note + "</sub>"
