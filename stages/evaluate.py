"""DVC stage ``evaluate``: score every model, the blend and the ranker on the test fold.

Usage::

    python -m stages.evaluate --split data/split --prepared data/prepared \\
        --recs als=data/candidates/test/als.parquet --recs ranker=data/rank/test_recs.parquet \\
        --candidates-dir data/candidates/test --rating-model svd=models/svd/test \\
        --embedding-model models/als/test --importance models/ranker/importance.json \\
        --metrics reports/metrics.json --segments reports/segments.json \\
        --intervals reports/intervals.json --per-user reports/per_user.parquet \\
        --plots reports/plots --report reports/report.md

Reads params ``eval`` and ``seed``. Every ``--recs NAME=PATH`` is a ranked list of the test
fold (``user_idx, item_idx, score, rank``); an empty file is a disabled model and is skipped.
``--rating-model``, ``--embedding-model`` and ``--importance`` are optional; a model folder
without a model because its model is disabled (its ``meta.json`` says so) is skipped too.

All outputs are computed in memory first and then replaced together, so bad input (e.g. a
list without its ``rank`` column) fails with a message naming the file and column and leaves
the previous outputs as they were. Nothing written carries a date.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from recpipe.artifacts import load_optional_model
from recpipe.config import load_params
from recpipe.errors import ConfigError, DataError
from recpipe.evaluation import plots
from recpipe.evaluation.embedding import embedding_map, item_factors_of
from recpipe.evaluation.metrics import REC_COLUMNS, TOPN_METRICS
from recpipe.evaluation.report import ReportData, render_report
from recpipe.evaluation.scoring import (
    RESERVED_NAMES,
    SEGMENTS,
    EvalConfig,
    FoldData,
    ModelResult,
    candidate_ranks,
    candidate_recall,
    candidate_recall_table,
    curve_wide,
    curves_table,
    evaluate_model,
    importance_table,
    intervals,
    json_ready,
    latest_ratings,
    per_user_table,
    popularity_table,
    prepare_fold,
    rating_metrics,
)
from recpipe.features.metadata import item_category_matrix, item_vectors
from recpipe.folds import load_catalogue, load_fold
from recpipe.io import frame_parquet, write_many
from recpipe.log import get_logger
from recpipe.stage import run_stage

PARAMS = ("eval", "seed")

log = get_logger("evaluate")

# Every file the stage may write into the plots folder. Those not written by a run (no
# importance given, embedding model disabled...) are removed, so a folder reused outside DVC
# never shows a stale figure next to fresh ones; other files there are left alone.
PLOT_FILES = (
    "metric_vs_k.csv",
    "metric_vs_k.png",
    "popularity.csv",
    "popularity.png",
    "candidate_recall.csv",
    "importance.csv",
    "importance.png",
    "embedding_map.png",
    *(f"{m}_vs_k.csv" for m in TOPN_METRICS),
)


# --------------------------------------------------------------------------- reading


def named_paths(values: list[str], flag: str) -> dict[str, Path]:
    """``["als=a.parquet", ...]`` -> ``{"als": Path("a.parquet")}``, names unique and valid."""
    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise ConfigError(f"{flag} {value!r}: expected NAME=PATH")
        if name in out:
            raise ConfigError(f"{flag}: name {name!r} given twice")
        if name in RESERVED_NAMES:
            raise ConfigError(f"{flag}: {name!r} is reserved (a key of the outputs)")
        out[name] = Path(path)
    return out


def read_recs(path: Path) -> pd.DataFrame:
    """The ``user_idx, item_idx, rank`` columns of a ranked list (empty: disabled model)."""
    if not path.exists():
        raise DataError("recommendation file not found", file=str(path))
    names = pq.read_schema(path).names
    for col in REC_COLUMNS:
        if col not in names:
            raise DataError(f"lacks required column (has {names})", file=str(path), column=col)
    # Only what the metrics read: the score column is not needed and lists can be large.
    return pd.read_parquet(path, columns=list(REC_COLUMNS))


def in_file(exc: DataError, path: Path) -> DataError:
    """``exc`` with the file it came from prefixed to its message."""
    err = DataError(str(exc), file=str(path))
    err.column, err.row = exc.column, exc.row
    return err


def read_importance(path: Path) -> dict[str, float]:
    """``{feature: gain}`` from the ranker's importance file."""
    if not path.exists():
        raise DataError("importance file not found", file=str(path))
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in data.values()
    ):
        raise DataError("expected a JSON object {feature: gain}", file=str(path))
    return {str(k): float(v) for k, v in data.items()}


# --------------------------------------------------------------------------- writing


def json_bytes(obj: object) -> bytes:
    """Rounded, key-sorted JSON (NaN as null) with a final newline."""
    return (json.dumps(json_ready(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def csv_bytes(df: pd.DataFrame) -> bytes:
    """CSV with floats rounded to 4 decimals, NaN as an empty cell, ``\\n`` line ends."""
    return df.round(4).to_csv(index=False, lineterminator="\n").encode()


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame_parquet(df, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- the stage


def score_lists(
    recs_paths: Mapping[str, Path], fold: FoldData, cfg: EvalConfig, seed: int
) -> tuple[dict[str, ModelResult], dict[str, dict], list[str]]:
    """Every enabled list's results and bootstrap intervals, plus the skipped (empty) names."""
    results: dict[str, ModelResult] = {}
    skipped: list[str] = []
    pending: dict[str, Future] = {}
    # The bootstraps are the costliest step and run almost entirely in numpy without the
    # GIL: a thread runs each model's while the next list is read and scored. Every call
    # has its own generator (same seed), so the results do not depend on the scheduling.
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for name, path in recs_paths.items():
            recs = read_recs(path)
            if not len(recs):
                skipped.append(name)
                log.info("%s: empty list (disabled), skipped", name)
                continue
            try:
                results[name] = evaluate_model(recs, fold, cfg)
            except DataError as exc:
                raise in_file(exc, path) from exc
            del recs  # lists can be large: hold one at a time
            pending[name] = pool.submit(
                intervals, results[name].per_user, cfg.headline, cfg.n_boot, cfg.level, seed
            )
            head = cfg.headline[0]
            log.info("%s: %s %.4f", name, head, results[name].metrics[head])
        boot = {name: future.result() for name, future in pending.items()}
    return results, boot, skipped


def score_ratings(rating_paths: Mapping[str, Path], targets: pd.DataFrame) -> dict[str, dict]:
    """RMSE/MAE of each enabled rating model on the test fold's rated targets."""
    ratings: dict[str, dict] = {}
    if not rating_paths:
        return ratings
    rated = latest_ratings(targets)
    for name, path in rating_paths.items():
        model = load_optional_model(path)
        if model is None:
            log.info("%s: rating model disabled, skipped", name)
            continue
        if not hasattr(model, "predict_ratings"):
            raise DataError(f"{type(model).__name__} cannot predict ratings", file=str(path))
        ratings[name] = rating_metrics(model, rated)
    return ratings


def score_candidates(
    candidates_dir: Path, fold: FoldData, cfg: EvalConfig
) -> tuple[dict, list[str], list[str]]:
    """Candidate recall of every list in the folder; also all names and the enabled ones."""
    ranks: dict[str, np.ndarray] = {}
    names: list[str] = []
    for path in sorted(candidates_dir.glob("*.parquet")):
        names.append(path.stem)
        recs = read_recs(path)
        if not len(recs):
            continue
        try:
            ranks[path.stem] = candidate_ranks(recs, fold.truth, fold.n_items, max(cfg.recall_ns))
        except DataError as exc:
            raise in_file(exc, path) from exc
    return candidate_recall(ranks, len(fold.truth), cfg.recall_ns), names, list(ranks)


def embedding_png(
    path: Path, cats: sp.csr_matrix, cat_names: list[str], cfg: EvalConfig, seed: int
) -> bytes | None:
    """The embedding map of a factor model's items (None: model disabled or too few items)."""
    model = load_optional_model(path)
    if model is None:
        return None
    try:
        factors, known = item_factors_of(model)
    except DataError as exc:
        raise in_file(exc, path) from exc
    emap = embedding_map(factors, known, cats, cat_names, cfg.embedding_clusters, seed)
    if emap is None:
        return None
    return plots.png_bytes(plots.embedding_map(emap, model=type(model).__name__))


def run(args: argparse.Namespace, cfg: EvalConfig, seed: int) -> dict[Path, bytes]:
    """Evaluate everything and return the output files (path -> bytes); writes nothing."""
    recs_paths = named_paths(args.recs, "--recs")
    rating_paths = named_paths(args.rating_model, "--rating-model")
    test = load_fold(args.split, "test")
    items, _ = load_catalogue(args.prepared)
    n_items = len(items)
    if not np.array_equal(np.sort(items["item_idx"].to_numpy()), np.arange(n_items)):
        raise DataError("item_idx must be 0..n-1", file=str(Path(args.prepared)), column="item_idx")
    cats, cat_names = item_category_matrix(items)
    vectors = cats if cfg.diversity == "categories" else item_vectors(items)
    fold = prepare_fold(test.history, test.targets, n_items, vectors, cfg)
    log.info(
        "test fold: %d evaluation users, %d relevant pairs (%d on cold items)",
        len(fold.users),
        len(fold.truth),
        len(fold.cold_truth),
    )

    results, boot, skipped = score_lists(recs_paths, fold, cfg, seed)
    metrics: dict[str, dict] = {name: dict(r.metrics) for name, r in results.items()}
    ratings = score_ratings(rating_paths, test.targets)
    for name, r in ratings.items():
        metrics.setdefault(name, {}).update(r)
    cand_names: list[str] = []
    cand_enabled: list[str] = []
    if args.candidates_dir:
        recall, cand_names, cand_enabled = score_candidates(Path(args.candidates_dir), fold, cfg)
        metrics["candidate_recall"] = recall
    segments = {seg: {name: r.segments[seg] for name, r in results.items()} for seg in SEGMENTS}

    out_plots = Path(args.plots)
    names = list(recs_paths)
    curves = {name: r.curves for name, r in results.items()}
    pop = popularity_table(
        {n: r.popularity for n, r in results.items()}, fold, names, cfg.popularity_bins
    )
    files: dict[Path, bytes] = {
        Path(args.metrics): json_bytes(metrics),
        Path(args.segments): json_bytes(segments),
        Path(args.intervals): json_bytes(boot),
        Path(args.per_user): parquet_bytes(
            per_user_table({n: r.per_user for n, r in results.items()}, cfg.headline)
        ),
        out_plots / "metric_vs_k.csv": csv_bytes(curves_table(curves)),
        out_plots / "popularity.csv": csv_bytes(pop),
    }
    for metric in cfg.curve_metrics:
        files[out_plots / f"{metric}_vs_k.csv"] = csv_bytes(
            curve_wide(curves, metric, names, cfg.all_ks)
        )
    if args.candidates_dir:
        files[out_plots / "candidate_recall.csv"] = csv_bytes(
            candidate_recall_table(metrics["candidate_recall"], cand_names, cfg.recall_ns)
        )
    if results:
        files[out_plots / "metric_vs_k.png"] = plots.png_bytes(
            plots.metric_vs_k(curves, cfg.curve_metrics)
        )
        files[out_plots / "popularity.png"] = plots.png_bytes(
            plots.popularity(pop, names, cfg.beyond_k)
        )
    if args.importance:
        table = importance_table(read_importance(Path(args.importance)))
        files[out_plots / "importance.csv"] = csv_bytes(table)
        files[out_plots / "importance.png"] = plots.png_bytes(
            plots.importance(table, cfg.importance_top)
        )
    if args.embedding_model:
        png = embedding_png(Path(args.embedding_model), cats, cat_names, cfg, seed)
        if png is not None:
            files[out_plots / "embedding_map.png"] = png

    report = ReportData(
        models=list(results),
        metrics=metrics,
        intervals=boot,
        segments=segments,
        candidate_recall=metrics.get("candidate_recall", {}),
        candidate_models=cand_enabled,
        ratings=ratings,
        skipped=skipped,
        fold=fold,
        seed=seed,
    )
    files[Path(args.report)] = render_report(report, cfg).encode()
    return files


def configure(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--split", required=True, help="split folder (test fold: train+valid, test)")
    ap.add_argument("--prepared", required=True, help="prepared folder (items, users)")
    ap.add_argument("--recs", action="append", default=[], help="NAME=PATH of a ranked list")
    ap.add_argument("--candidates-dir", help="folder of the candidate models' test lists")
    ap.add_argument(
        "--rating-model", action="append", default=[], help="NAME=FOLDER of a saved model"
    )
    ap.add_argument("--embedding-model", help="folder of a saved factor model (embedding map)")
    ap.add_argument("--importance", help="ranker importance JSON {feature: gain}")
    for name in ("metrics", "segments", "intervals", "per-user", "plots", "report"):
        ap.add_argument(f"--{name}", required=True)


def stage(args: argparse.Namespace) -> None:
    cfg = load_params("eval", EvalConfig, args.params)
    seed = load_params("seed", int, args.params)
    files = run(args, cfg, seed)
    write_many(files)
    for name in PLOT_FILES:
        stale = Path(args.plots) / name
        if stale not in files and stale.exists():
            stale.unlink()
    log.info("wrote %d files", len(files))


def main(argv: list[str] | None = None) -> int:
    return run_stage(stage, argv, name="evaluate", doc=__doc__, configure=configure)


if __name__ == "__main__":
    sys.exit(main())
