"""Our candidate models against cornac's on the same MovieLens-100k split, with our metrics.

    pip install -e '.[bench]'     # cornac 3.0.1
    python bench/peers.py --data ../shared/data/ml-100k [--repeats 3] [--json out.json] \\
        [--workdir /tmp/recpipe-peers]

It runs our whole pipeline with the ``ms_benchmark`` protocol through ``dvc exp run`` in a
scratch copy of the project (as ``bench/quality.py`` does), then, on that run's test fold
(history = ``data/split/train.parquet`` + ``valid.parquet``, binary; targets =
``data/split/test_targets.parquet``):

- fits cornac's ``MostPop``, ``ItemKNN`` (cosine), ``BPR`` (seeded) and ``EASE`` on the
  history, recommends the top 10 unseen items to every test user and scores the lists with
  our :func:`recpipe.evaluation.metrics.topn_metrics`;
- fits our matching models (popularity, itemknn, als, ease) directly through
  :func:`recpipe.models.registry.model_class` with the run's ``params.yaml`` on the same
  history, recommends the top 10 and scores them the same way (checked against the run's
  ``reports/metrics.json``);
- times fit + recommend of each (median of ``--repeats``; cornac's includes building its
  ``Dataset`` from the triples, ours building the matrices from the history frame).

Cornac ids: our ``user_idx``/``item_idx`` are cornac's raw ids; cornac's internal indices
are mapped back through the dataset's ``uid_map``/``iid_map``. Seen items are removed by
masking cornac's own ``score`` output with the training matrix, in blocks of users, and ties
go to the lower ``item_idx`` (as in our models).

Prints a Markdown table (pair, our and cornac's NDCG@10 / P@10, times, time ratio) and a line
comparing our ranker with cornac's best model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.quality import check_data, fresh_repo, machine, run_pipeline, scratch_dir  # noqa: E402
from recpipe.config import load_params  # noqa: E402
from recpipe.evaluation.metrics import topn_metrics  # noqa: E402
from recpipe.folds import Fold, load_catalogue, load_fold, train_data  # noqa: E402
from recpipe.models.registry import model_class  # noqa: E402

K = 10
"""List length and metric cut-off."""

BLOCK = 256
"""Users per block when scoring cornac models and masking seen items."""

ITEMKNN_K = 200
"""Cornac ItemKNN neighbours (ours keeps 200 neighbours per item: ``candidates.itemknn``)."""

EASE_LAMBDA = 500.0
"""Cornac EASE's L2 penalty (ours: ``candidates.ease.l2`` = 500)."""

# BPR as in Microsoft Recommenders' cornac BPR notebook (the published BPR figure).
BPR_PARAMS: dict[str, Any] = {"k": 200, "max_iter": 100, "learning_rate": 0.01, "lambda_reg": 1e-3}


@dataclass(frozen=True)
class Pair:
    """One row of the table: our model and cornac's counterpart."""

    ours: str
    cornac: str
    note: str


PAIRS: tuple[Pair, ...] = (
    Pair("popularity", "MostPop", "distinct users per item"),
    Pair(
        "itemknn",
        "ItemKNN",
        f"cosine, cornac k={ITEMKNN_K}; cornac predicts a similarity-weighted average of the "
        "user's values, which is ~1 for every item on binary input",
    ),
    Pair("als", "BPR", "matrix factorisation: implicit ALS, 32 factors; BPR, 200 factors"),
    Pair("ease", "EASE", f"lambda={EASE_LAMBDA:g}, negative weights kept (posB=False)"),
)


def cornac_models(seed: int) -> dict[str, Callable[[], Any]]:
    """Factories of the cornac models (a fresh, unfitted model per call)."""
    import cornac.models as cm

    return {
        "MostPop": lambda: cm.MostPop(),
        "ItemKNN": lambda: cm.ItemKNN(k=ITEMKNN_K, similarity="cosine", verbose=False),
        "BPR": lambda: cm.BPR(**BPR_PARAMS, seed=seed, verbose=False),
        "EASE": lambda: cm.EASE(lamb=EASE_LAMBDA, posB=False, verbose=False, seed=seed),
    }


# --------------------------------------------------------------------------- cornac side


def history_triples(history: pd.DataFrame) -> list[tuple[int, int, float]]:
    """Distinct (user_idx, item_idx, 1.0) triples of the history: cornac's binary input."""
    pairs = history[["user_idx", "item_idx"]].drop_duplicates()
    u = pairs["user_idx"].to_numpy(np.int64).tolist()
    i = pairs["item_idx"].to_numpy(np.int64).tolist()
    return list(zip(u, i, [1.0] * len(u), strict=True))


def cornac_recommend(model: Any, dataset: Any, users: np.ndarray, n: int) -> pd.DataFrame:
    """Top-``n`` unseen items of each of ``users`` (our ``user_idx``) from a fitted cornac model.

    Scores come from cornac's ``model.score(inner_user)`` (all known items, in cornac's inner
    item order); per block of users the block's seen items (the training matrix) and
    non-finite scores are set to -inf, columns are put in ``item_idx`` order and a stable
    sort keeps the best ``n``, so ties go to the lower ``item_idx``. Users cornac does not
    know get no rows (they score 0, as in our evaluation).
    """
    uid_map, iid_map = dataset.uid_map, dataset.iid_map
    raw_item = np.empty(len(iid_map), dtype=np.int64)  # inner item index -> our item_idx
    raw_item[np.fromiter(iid_map.values(), np.int64)] = np.fromiter(iid_map.keys(), np.int64)
    by_item = np.argsort(raw_item, kind="stable")  # columns in item_idx order
    items_sorted = raw_item[by_item]
    known = np.array([u for u in users.tolist() if u in uid_map], dtype=np.int64)
    inner = np.array([uid_map[u] for u in known.tolist()], dtype=np.int64)
    seen = dataset.matrix.tocsr()
    k = min(n, len(raw_item))
    parts = []
    for start in range(0, len(inner), BLOCK):
        block = inner[start : start + BLOCK]
        scores = np.vstack(
            [np.asarray(model.score(int(u)), dtype=np.float64).ravel() for u in block]
        )
        scores[~np.isfinite(scores)] = -np.inf
        rows, cols = seen[block].nonzero()
        scores[rows, cols] = -np.inf
        scores = scores[:, by_item]
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        keep = np.isfinite(top_scores)
        rank = np.broadcast_to(np.arange(1, k + 1), top.shape)
        user = np.broadcast_to(known[start : start + BLOCK, None], top.shape)
        parts.append(
            pd.DataFrame(
                {
                    "user_idx": user[keep],
                    "item_idx": items_sorted[top[keep]],
                    "rank": rank[keep].astype(np.int64),
                }
            )
        )
    if not parts:
        return pd.DataFrame(
            {c: pd.Series(dtype=np.int64) for c in ("user_idx", "item_idx", "rank")}
        )
    return pd.concat(parts, ignore_index=True)


def run_cornac(
    factory: Callable[[], Any],
    triples: list[tuple[int, int, float]],
    users: np.ndarray,
    seed: int,
) -> tuple[pd.DataFrame, float]:
    """(top-K lists, seconds) of one cornac model: build the dataset, fit, recommend."""
    from cornac.data import Dataset

    start = time.perf_counter()
    dataset = Dataset.from_uir(triples, seed=seed)
    model = factory().fit(dataset)
    recs = cornac_recommend(model, dataset, users, K)
    return recs, time.perf_counter() - start


# --------------------------------------------------------------------------- our side


def run_ours(
    name: str, repo: Path, fold: Fold, items: pd.DataFrame, users_table: pd.DataFrame
) -> tuple[pd.DataFrame, float]:
    """(top-K lists, seconds) of our model ``name`` with the run's params: fit + recommend."""
    cls = model_class(name)
    cfg = load_params(f"candidates.{name}", cls.config_class, repo / "params.yaml")
    seed = load_params("seed", int, repo / "params.yaml")
    target_users = fold.target_users.to_numpy()
    start = time.perf_counter()
    model = cls(cfg, seed=seed).fit(train_data(fold, items, users_table))
    recs = model.recommend(target_users, K)
    return recs, time.perf_counter() - start


# --------------------------------------------------------------------------- bench


@dataclass
class Row:
    """Measured numbers of one pair."""

    pair: Pair
    ours: dict[str, float]
    cornac: dict[str, float]
    ours_seconds: float
    cornac_seconds: float
    pipeline_ndcg: float | None


def timed_median(
    run: Callable[[], tuple[pd.DataFrame, float]], repeats: int
) -> tuple[pd.DataFrame, float]:
    """The first run's lists and the median seconds over ``repeats`` runs."""
    recs, first = run()
    seconds = [first] + [run()[1] for _ in range(repeats - 1)]
    return recs, statistics.median(seconds)


def score(recs: pd.DataFrame, targets: pd.DataFrame) -> dict[str, float]:
    """NDCG@K and P@K of ``recs`` against the fold's targets, with our metrics code."""
    m = topn_metrics(recs, targets, [K])
    return {"ndcg@10": m[f"ndcg@{K}"], "precision@10": m[f"precision@{K}"]}


def dataset_seconds(triples: list[tuple[int, int, float]], seed: int, repeats: int) -> float:
    """Median seconds of building cornac's ``Dataset`` alone (part of every cornac time)."""
    from cornac.data import Dataset

    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        Dataset.from_uir(triples, seed=seed)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


@dataclass
class Outcome:
    """Everything the table and the JSON report."""

    rows: list[Row]
    ranker_ndcg: float
    repeats: int
    pipeline_seconds: float
    dataset_seconds: float
    users: int | None

    @property
    def best(self) -> Row:
        """The pair whose cornac model scores the highest NDCG@10."""
        return max(self.rows, key=lambda r: r.cornac["ndcg@10"])


def bench(repo: Path, repeats: int) -> tuple[list[Row], float]:
    """Fit, time and score every pair on the test fold of the run in ``repo``.

    Returns the rows and the median seconds of building cornac's dataset alone.
    """
    seed = load_params("seed", int, repo / "params.yaml")
    fold = load_fold(repo / "data/split", "test")
    items, users_table = load_catalogue(repo / "data/prepared")
    target_users = fold.target_users.to_numpy()
    triples = history_triples(fold.history)
    pipeline = json.loads((repo / "reports/metrics.json").read_text())
    factories = cornac_models(seed)
    rows = []
    for pair in PAIRS:
        ours_recs, ours_s = timed_median(
            lambda p=pair: run_ours(p.ours, repo, fold, items, users_table), repeats
        )
        cornac_recs, cornac_s = timed_median(
            lambda p=pair: run_cornac(factories[p.cornac], triples, target_users, seed),
            repeats,
        )
        row = Row(
            pair=pair,
            ours=score(ours_recs, fold.targets),
            cornac=score(cornac_recs, fold.targets),
            ours_seconds=ours_s,
            cornac_seconds=cornac_s,
            pipeline_ndcg=pipeline.get(pair.ours, {}).get("ndcg@10"),
        )
        if row.pipeline_ndcg is not None and abs(row.pipeline_ndcg - row.ours["ndcg@10"]) > 5e-4:
            print(
                f"warning: {pair.ours} refit here scores NDCG@10 {row.ours['ndcg@10']:.4f}, "
                f"the pipeline's metrics.json says {row.pipeline_ndcg:.4f}",
                file=sys.stderr,
            )
        rows.append(row)
        print(f"  measured {pair.ours} / {pair.cornac}", file=sys.stderr, flush=True)
    return rows, dataset_seconds(triples, seed, repeats)


def render(out: Outcome) -> str:
    """The Markdown table, the ranker line and what the numbers are."""
    lines = [
        "| pair (ours / cornac) | our NDCG@10 | our P@10 | cornac NDCG@10 | cornac P@10 "
        "| our s | cornac s | time ratio (ours/cornac) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in out.rows:
        ratio = r.ours_seconds / r.cornac_seconds if r.cornac_seconds > 0 else float("nan")
        lines.append(
            f"| {r.pair.ours} / {r.pair.cornac} | {r.ours['ndcg@10']:.4f} "
            f"| {r.ours['precision@10']:.4f} | {r.cornac['ndcg@10']:.4f} "
            f"| {r.cornac['precision@10']:.4f} | {r.ours_seconds:.3f} | {r.cornac_seconds:.3f} "
            f"| {ratio:.2f} |"
        )
    best = out.best.cornac["ndcg@10"]
    lines += [
        "",
        f"Our ranker: NDCG@10 {out.ranker_ndcg:.4f}; cornac's best ({out.best.pair.cornac}): "
        f"{best:.4f}; ratio {out.ranker_ndcg / best:.3f}.",
        "",
        f"Test fold of the `ms_benchmark` run ({out.users} evaluation users); times are fit + "
        f"top-{K} for every test user, median of {out.repeats}; each cornac time includes "
        f"building its Dataset ({out.dataset_seconds:.3f} s alone); the pipeline run itself "
        f"took {out.pipeline_seconds:.0f} s.",
        "Pairs: "
        + "; ".join(f"{r.pair.ours} / {r.pair.cornac}: {r.pair.note}" for r in out.rows)
        + ".",
    ]
    return "\n".join(lines)


def as_json(out: Outcome) -> dict:
    """The numbers of the table, for ``--json``."""
    return {
        "protocol": "ms_benchmark",
        "repeats": out.repeats,
        "machine": machine(),
        "users": out.users,
        "pairs": [
            {
                "ours": r.pair.ours,
                "cornac": r.pair.cornac,
                "note": r.pair.note,
                "ours_metrics": r.ours,
                "cornac_metrics": r.cornac,
                "ours_seconds": round(r.ours_seconds, 4),
                "cornac_seconds": round(r.cornac_seconds, 4),
                "time_ratio": round(r.ours_seconds / r.cornac_seconds, 3),
                "pipeline_ndcg@10": r.pipeline_ndcg,
            }
            for r in out.rows
        ],
        "cornac_dataset_seconds": round(out.dataset_seconds, 4),
        "ranker_ndcg@10": out.ranker_ndcg,
        "cornac_best": {"model": out.best.pair.cornac, "ndcg@10": out.best.cornac["ndcg@10"]},
        "ranker_over_cornac_best": out.ranker_ndcg / out.best.cornac["ndcg@10"],
        "dvc_exp_run_seconds": round(out.pipeline_seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True, type=Path, help="local ML-100k folder or zip")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--workdir", help="keep the scratch repository under this folder")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    try:
        import cornac
    except ImportError:
        raise SystemExit("cornac is missing: pip install -e '.[bench]'") from None
    data = check_data(args.data)
    repo, cleanup = scratch_dir(args.workdir, "recpipe-peers-")
    print(f"machine: {machine()}; cornac {cornac.__version__}; scratch repository: {repo}\n")
    try:
        fresh_repo(repo)
        result = run_pipeline(repo, data, "ms_benchmark")
        rows, dataset_s = bench(repo, args.repeats)
    finally:
        if cleanup:
            shutil.rmtree(repo.parent, ignore_errors=True)
    out = Outcome(
        rows=rows,
        ranker_ndcg=result.metrics["ranker"]["ndcg@10"],
        repeats=args.repeats,
        pipeline_seconds=result.seconds,
        dataset_seconds=dataset_s,
        users=result.users,
    )
    print(render(out), flush=True)
    if args.json:
        args.json.write_text(json.dumps(as_json(out), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
