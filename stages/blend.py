"""DVC stage ``blend``: merge every enabled model's candidates per fold and add the hybrid.

Usage: ``python -m stages.blend --split data/split --candidates data/candidates --models
models --out data/blend --summary reports/blend.json``. Reads params ``blend`` and ``seed``.

Writes ``<out>/<fold>.parquet`` (every candidate pair with every model's score, rank and
normalised score, and ``m_hybrid``) and ``<out>/<fold>_recs.parquet`` (the hybrid's top-N).
With ``blend.search`` the weights are picked on the valid fold (its labels) and then applied
unchanged to the test fold; the test fold's targets are never read here. With search bags,
the valid fold's own hybrid is out of bag: each user's comes from the bags without the user.
Every fold is built and written in blocks of at most ``blend.block_users`` users, of even
sizes (:func:`recpipe.engine.even_cuts`; the search holds only its bags' users). Once the
weights are known every fold, the valid one included, is an independent block: they are
blended side by side in worker processes where :mod:`recpipe.engine` says, the valid fold
from the candidates and models the search loaded (the workers are forked after it), each
other fold from its own files.
``<out>/weights.json`` holds the weights applied to the test fold (unrounded) and the
normalisation, which the serving bundle applies again.
Extra ranker folds (``split.ranker_folds``) get ``<out>/<fold>.parquet`` only, their hybrid
from the valid fold's weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recpipe.artifacts import candidates_file, load_model, model_dir, model_enabled
from recpipe.blending import (
    WEIGHTS_FILE,
    BlendConfig,
    ValidFold,
    blend_block,
    candidate_block,
    candidate_ranges,
    hybrid_score,
    rank_by,
)
from recpipe.config import load_params
from recpipe.engine import SHARED_PARALLEL_MAX_EVENTS, map_shared, workers
from recpipe.errors import ConfigError, DataError
from recpipe.folds import FOLDS, fold_names, history_events, load_fold
from recpipe.io import ParquetRows, json_bytes, staged_files
from recpipe.log import get_logger
from recpipe.models.registry import MODELS
from recpipe.stage import run_stage

PARAMS = ("blend", "seed")

log = get_logger("blend")


def enabled_candidates(candidates_dir: Path, fold: str) -> dict[str, pd.DataFrame]:
    """Each registered model's candidates for ``fold``; a disabled model's file is empty."""
    out = {}
    for name in MODELS:
        df = pd.read_parquet(candidates_file(candidates_dir, fold, name))
        if len(df):
            out[name] = df
    return out


def with_hybrid(df: pd.DataFrame, weights: dict[str, float]) -> pd.DataFrame:
    df["m_hybrid"] = hybrid_score(df, weights)
    return df


@dataclass(frozen=True)
class _FoldJob:
    """What blending a fold needs: the settings, the weights and where a fold after the
    valid one reads its inputs; every fold's temporaries."""

    cfg: BlendConfig
    weights: dict[str, float]
    candidates: Path
    models: Path
    out: dict[str, tuple[Path, Path | None]]  # fold -> temporaries of its pairs and recs


def fold_inputs(
    cand_dir: Path, models_dir: Path, fold_name: str
) -> tuple[dict[str, pd.DataFrame], dict]:
    """The fold's candidates of every enabled model and those models, fitted on the fold."""
    cands = enabled_candidates(cand_dir, fold_name)
    if not cands:
        enabled = [m for m in MODELS if model_enabled(model_dir(models_dir, m, fold_name))]
        if not enabled:
            raise ConfigError("no enabled candidate model: enable at least one in candidates.*")
        raise DataError(
            f"no candidates for the {fold_name} fold: the enabled models "
            f"({', '.join(enabled)}) recommended nothing (does the fold have target "
            "users? see reports/split.json)",
            file=str(cand_dir),
        )
    return cands, {m: load_model(model_dir(models_dir, m, fold_name)) for m in cands}


def write_fold(
    frames: Iterable[pd.DataFrame], pairs: ParquetRows, recs: ParquetRows | None, n: int
) -> int:
    """Write a fold's blocks (and the hybrid's top ``n`` of each to ``recs``); its users."""
    users = 0
    for df in frames:
        pairs.write(df)
        if recs is not None:  # an extra ranker fold only feeds the ranker
            recs.write(rank_by(df, df["m_hybrid"].to_numpy(), n))
        users += int(df["user_idx"].nunique())  # blocks never share a user
    return users


@dataclass(frozen=True)
class _FoldBlocks:
    """What every block of a fold after the valid one reads: the workers of
    :func:`~recpipe.engine.map_shared` inherit it from the process that loaded it."""

    cands: dict[str, pd.DataFrame]
    models: dict
    normalise: str
    weights: dict[str, float]


def _hybrid_block(fold: _FoldBlocks, ranges: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """One block of users of a fold after the valid one, with the hybrid."""
    block = blend_block(candidate_block(fold.cands, ranges), fold.models, fold.normalise)
    return with_hybrid(block, fold.weights)


def blend_fold(job: _FoldJob, fold_name: str, n_workers: int = 1) -> tuple[int, int]:
    """Blend one fold after the valid one with its weights: write its pairs and recs into
    the temporaries ``job.out`` names; (pairs, users). Its blocks of users run up to
    ``n_workers`` side by side (one when the folds themselves run in workers)."""
    cands, models = fold_inputs(job.candidates, job.models, fold_name)
    fold = _FoldBlocks(cands, models, job.cfg.normalise, job.weights)
    ranges = candidate_ranges(cands, job.cfg.block_users)
    work = (_hybrid_block, fold, ranges, n_workers, f"blocks of {fold_name} users")
    with closing(map_shared(*work)) as frames:
        return write_blocks(frames, job.out[fold_name], job.cfg.n)


def write_blocks(
    frames: Iterable[pd.DataFrame], out: tuple[Path, Path | None], n: int
) -> tuple[int, int]:
    """:func:`write_fold` into the temporaries ``out`` (pairs, recs or None); (pairs, users)."""
    pairs = ParquetRows(out[0])
    recs = None if out[1] is None else ParquetRows(out[1])
    users = write_fold(frames, pairs, recs, n)
    for rows in (pairs, recs):
        if rows is not None:
            rows.close()
    return pairs.rows, users


@dataclass
class _Folds:
    """What every fold's block (:func:`_blend_fold_of`) reads: the workers of
    :func:`~recpipe.engine.map_shared` inherit it from the process that built it. ``valid``
    holds the valid fold's candidates and models as the search loaded them (None once
    blended, so a stage blending its folds one at a time does not hold them further)."""

    job: _FoldJob
    valid: ValidFold | None
    n_workers: int  # for the blocks of users of a fold blended in the stage's process


def _blend_fold_of(folds: _Folds, fold_name: str) -> tuple[int, int, float | None]:
    """Blend one fold (the engine's block): (pairs, users, and for the valid fold the
    search metric of the chosen weights over the whole fold, None for the others)."""
    if fold_name != "valid":
        return (*blend_fold(folds.job, fold_name, folds.n_workers), None)
    valid, folds.valid = folds.valid, None
    assert valid is not None, "the valid fold is blended once"
    with closing(valid.blocks(folds.n_workers)) as blocks:
        rows, users = write_blocks(blocks, folds.job.out["valid"], folds.job.cfg.n)
    return rows, users, valid.value


def run(args: argparse.Namespace) -> None:
    cfg = load_params("blend", BlendConfig, args.params)
    seed = load_params("seed", int, args.params)
    cand_dir, models_dir, out = Path(args.candidates), Path(args.models), Path(args.out)
    summary: dict = {"normalise": cfg.normalise}
    with staged_files() as staged:
        # The valid fold first: its labels fix the weights.
        cands, models = fold_inputs(cand_dir, models_dir, "valid")
        truth = load_fold(args.split, "valid").targets if cfg.search else None
        valid = ValidFold(cands, models, cfg, seed, truth)
        del cands, models
        weights = valid.weights
        if valid.searched is not None:
            log.info("searched weights %s", valid.searched.weights)
        # Then every fold with those weights, the valid one included: independent blocks.
        names = fold_names(args.split)
        out_files = {
            f: (
                staged.temporary(out / f"{f}.parquet"),
                staged.temporary(out / f"{f}_recs.parquet") if f in FOLDS else None,
            )
            for f in names
        }
        job = _FoldJob(cfg, weights, cand_dir, models_dir, out_files)
        events = history_events(args.split)
        # the folds side by side have the stage's default bound; the blocks of a fold
        # blended in this process (map_shared), the shared one
        folds = _Folds(job, valid, workers(events, max_events=SHARED_PARALLEL_MAX_EVENTS))
        del valid
        with closing(map_shared(_blend_fold_of, folds, names, workers(events), "folds")) as done:
            for fold_name, (rows, users, value) in zip(names, done, strict=True):
                summary[fold_name] = fold_summary(rows, users)
                log.info("%s: %d pairs for %d users", fold_name, rows, users)
                if value is not None:
                    summary[f"valid_{cfg.search_metric}"] = round(value, 4)
                    log.info("valid %s of the searched weights: %.4f", cfg.search_metric, value)
        summary["weights"] = {m: round(float(w), 4) for m, w in sorted(weights.items())}
        # unrounded, for whatever applies the blend later (the serving bundle)
        applied = {m: float(w) for m, w in weights.items()}
        staged.add(out / WEIGHTS_FILE, json_bytes({"normalise": cfg.normalise, "weights": applied}))
        staged.add(Path(args.summary), json_bytes(summary))


def fold_summary(rows: int, users: int) -> dict:
    """A fold's entry of ``reports/blend.json``."""
    return {
        "pairs": rows,
        "users": users,
        "mean_candidates_per_user": round(rows / users, 2) if users else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    return run_stage(
        run,
        argv,
        name="blend",
        doc=__doc__,
        paths=("split", "candidates", "models", "out", "summary"),
    )


if __name__ == "__main__":
    sys.exit(main())
