"""The Markdown evaluation report (the ``evaluate`` stage's ``report.md``).

:func:`render_report` lays out results already computed by :mod:`recpipe.evaluation.scoring`
(a :class:`ReportData`); it computes nothing itself and writes no date, so the same results
give the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from recpipe.evaluation.metrics import metric_name
from recpipe.evaluation.scoring import BEYOND_ACCURACY, SEGMENTS, EvalConfig, FoldData

METRIC_DEFINITIONS: dict[str, str] = {
    "precision@K": "hits in the top K / K (a list shorter than K is not forgiven)",
    "recall@K": "hits in the top K / the user's relevant test items",
    "ndcg@K": "DCG@K with binary gain and discount 1/log2(rank+1), divided by the best DCG a "
    "K-list could reach (min(relevant, K) hits at the top)",
    "map@K": "sum of precision@i over the ranks i <= K that hold a hit, divided by "
    "min(relevant, K)",
    "mrr@K": "1 / rank of the first hit if it is within the top K, else 0",
    "hitrate@K": "1 if any of the top K items is relevant, else 0",
    "coverage@K": "share of the catalogue's items in at least one user's top K",
    "diversity@K": "mean over users of the mean pairwise cosine distance between the top-K "
    "items' feature vectors (item categories or TF-IDF, see eval.diversity)",
    "novelty@K": "mean over users of the mean self-information -log2(p) of their top-K items, "
    "p = share of history users who interacted with the item (at least one user)",
    "arp@K": "average recommendation popularity: mean over users of the mean number of history "
    "users of their top-K items",
    "rmse / mae": "root mean squared / mean absolute error of the predicted ratings on the "
    "rated test pairs the model can score (unpredicted pairs are counted, not scored)",
    "candidate recall@N": "share of the relevant test (user, item) pairs found in a model's "
    "top N (union: in any enabled candidate model's top N)",
}
"""One line per metric for the report (the definitions of :mod:`recpipe.evaluation.metrics`)."""


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


@dataclass(frozen=True)
class ReportData:
    """What the Markdown report shows (already computed; models in display order)."""

    models: Sequence[str]
    """The models whose lists were evaluated, in display order."""
    metrics: Mapping[str, Mapping[str, float]]
    intervals: Mapping[str, Mapping[str, Mapping[str, float]]]
    segments: Mapping[str, Mapping[str, Mapping[str, float]]]
    candidate_recall: Mapping[str, float]
    candidate_models: Sequence[str]
    ratings: Mapping[str, Mapping[str, float]]
    skipped: Sequence[str]
    fold: FoldData
    seed: int


def render_report(data: ReportData, cfg: EvalConfig) -> str:
    """The Markdown summary: headline table with intervals, beyond accuracy, ratings,
    candidate recall, segments and metric definitions. No dates, so reruns are identical."""
    topn_models = list(data.models)
    fold = data.fold
    lines = ["# Evaluation report", ""]
    lines.append(
        f"Test fold: {len(fold.users)} users with a relevant target "
        f"({len(fold.truth)} relevant pairs), catalogue of {fold.n_items} items. "
        f"Intervals: {cfg.level:.0%} percentile bootstrap over users "
        f"({cfg.n_boot} resamples, seed {data.seed}, the same resamples for every model)."
    )
    if data.skipped:
        lines += ["", f"Skipped (disabled, empty lists): {', '.join(data.skipped)}."]

    lines += ["", "## Top-N accuracy", ""]
    best = {}
    for name in cfg.headline:
        values = [round(data.metrics[m].get(name, float("nan")), 4) for m in topn_models]
        finite = [v for v in values if math.isfinite(v)]
        best[name] = max(finite) if finite else None
    rows = []
    for m in topn_models:
        row = [m]
        for name in cfg.headline:
            iv = data.intervals.get(m, {}).get(name, {})
            mean = data.metrics[m].get(name, float("nan"))
            cell = _fmt(mean)
            if best[name] is not None and math.isfinite(mean) and round(mean, 4) == best[name]:
                cell = f"**{cell}**"
            if iv and iv.get("low") is not None and math.isfinite(iv["low"]):
                cell += f" [{_fmt(iv['low'], 3)}, {_fmt(iv['high'], 3)}]"
            row.append(cell)
        row.append(str(data.metrics[m]["users"]))
        rows.append(row)
    lines += _table(["model", *cfg.headline, "users"], rows)
    lines += ["", "Best value per column in **bold**."]

    k = cfg.beyond_k
    lines += ["", f"## Beyond accuracy (top {k})", ""]
    beyond = [metric_name(b, k) for b in BEYOND_ACCURACY]
    rows = [[m, *[_fmt(data.metrics[m].get(b)) for b in beyond]] for m in topn_models]
    lines += _table(["model", *beyond], rows)

    if data.ratings:
        lines += ["", "## Rating error", ""]
        for m, r in data.ratings.items():
            if r["rated_pairs"] == 0:
                lines.append(f"- {m}: no rated test pairs (the data has no explicit ratings).")
                continue
            lines.append(
                f"- {m}: RMSE {_fmt(r['rmse'])}, MAE {_fmt(r['mae'])} over "
                f"{r['rated_pairs'] - r['unpredicted']} of {r['rated_pairs']} rated test pairs "
                f"({r['unpredicted']} unpredicted)."
            )

    rec = data.candidate_recall
    if data.candidate_models:
        lines += ["", "## Candidate recall", ""]
        ns = sorted(cfg.recall_ns)
        union = ", ".join(f"@{n} {_fmt(rec.get(f'union@{n}'))}" for n in ns)
        lines.append(
            f"Share of the {rec.get('relevant_pairs', 0)} relevant test pairs in the union of "
            f"the candidate models' top N: {union}."
        )
        n_max = ns[-1]
        per_model = ", ".join(f"{m} {_fmt(rec.get(f'{m}@{n_max}'))}" for m in data.candidate_models)
        lines.append(f"Per model at N={n_max}: {per_model}.")

    first = cfg.headline[0]
    lines += ["", f"## Segments ({first})", ""]
    seg_desc = {
        "all": "every evaluation user",
        "cold_users": f"at most {cfg.cold_user_max_events} history events",
        "heavy_users": f"at least {_fmt(fold.heavy_threshold, 0)} history events "
        f"(quantile {cfg.heavy_user_quantile:g})",
        "cold_items": "relevant targets on items without history only",
    }
    rows = []
    for seg in SEGMENTS:
        per_model = data.segments.get(seg, {})
        n_users = len(fold.segment_users[seg])
        rows.append(
            [seg, seg_desc[seg], str(n_users)]
            + [_fmt(per_model.get(m, {}).get(first)) for m in topn_models]
        )
    lines += _table(["segment", "definition", "users", *topn_models], rows)

    lines += ["", "## Metrics", ""]
    lines.append(
        "Top-N metrics average over the users with at least one relevant test target; a user "
        "without a list scores 0. Beyond-accuracy metrics average over the users with a list."
    )
    lines.append("")
    lines += [f"- **{name}**: {text}" for name, text in METRIC_DEFINITIONS.items()]
    return "\n".join(lines) + "\n"
