"""DVC stage ``blend``: merge every enabled model's candidates per fold and add the hybrid.

Usage: ``python -m stages.blend --split data/split --candidates data/candidates --models
models --out data/blend --summary reports/blend.json``. Reads params ``blend``, ``seed`` and
``ranker.rerank_top``.

Writes ``<out>/<fold>.parquet``, the pairs the ranker works on: each user's
``ranker.rerank_top`` best candidate pairs by ``m_hybrid`` (every pair when it is null),
with every model's score, rank and normalised score (computed over all the user's
candidates) and ``m_hybrid``; and ``<out>/<fold>_recs.parquet`` (the hybrid's top-N, from
all the candidates); ``<out>/pairs.json`` records the cut (``{"rerank_top": n}``, which
the ranker checks against its own). ``reports/blend.json`` counts each fold's pairs before
and after the cut.
With ``blend.search`` the weights are picked on the valid fold (its labels) and then applied
unchanged to the test fold; the test fold's targets are never read here. With search bags,
the valid fold's own hybrid is out of bag: each user's comes from the bags without the user.
Every fold is built and written in blocks of at most ``blend.block_users`` users, of even
sizes (:func:`recpipe.engine.even_cuts`; the search holds only its bags' users). Once the
weights are known every fold, the valid one included, is an independent block: they are
blended side by side in worker processes where :func:`fold_workers` says (at least two
folds a worker), the valid fold from the candidates and models the search loaded (the
workers are forked after it), each other fold from its own files; otherwise one at a
time, each fold's blocks of users side by side. Each block is finished (its recs, its cut)
where it is built, so the process that writes a fold's files does nothing else.
``<out>/weights.json`` holds the weights applied to the test fold (unrounded) and the
normalisation, which the serving bundle applies again.
Extra ranker folds (``split.ranker_folds``) get ``<out>/<fold>.parquet`` only, their hybrid
from the valid fold's weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from recpipe.artifacts import candidates_file, load_model, model_dir, model_enabled
from recpipe.blending import (
    CUT_FILE,
    RERANK_TOP,
    WEIGHTS_FILE,
    BlendConfig,
    TopPairs,
    ValidFold,
    blend_block,
    candidate_block,
    candidate_ranges,
    hybrid_score,
    rank_by,
    top_rows,
)
from recpipe.config import load_params
from recpipe.engine import SHARED_PARALLEL_MAX_EVENTS, map_shared, workers
from recpipe.errors import ConfigError, DataError
from recpipe.folds import FOLDS, fold_names, history_events, load_fold
from recpipe.io import ParquetRows, json_bytes, staged_files
from recpipe.log import get_logger
from recpipe.models.registry import MODELS
from recpipe.stage import run_stage

PARAMS = ("blend", "seed", "ranker.rerank_top")

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
    """What blending a fold needs: the settings, the weights and where a fold other than
    the valid one reads its inputs; every fold's temporaries."""

    cfg: BlendConfig
    top: int | None  # ranker.rerank_top: each user's pairs written to a fold's file
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


@dataclass(frozen=True)
class _FoldBlocks:
    """What every block of a fold other than the valid one reads: the workers of
    :func:`~recpipe.engine.map_shared` inherit it from the process that loaded it."""

    cands: dict[str, pd.DataFrame]
    models: dict
    normalise: str
    weights: dict[str, float]
    finish: Callable[[pd.DataFrame], Finished]


class Finished(NamedTuple):
    """One block of a fold as :func:`write_blocks` writes it (:func:`finish_block`)."""

    pairs: pd.DataFrame  # each user's top ranker.rerank_top pairs by the hybrid
    recs: pd.DataFrame | None  # the hybrid's top n of each user (None: an extra fold)
    union: int  # the pairs of the block before the cut
    users: int


def finish_block(df: pd.DataFrame, n: int, top: int | None, recs: bool) -> Finished:
    """A blended block (with ``m_hybrid``) made ready to write, where the block was built
    (in a worker, when blocks or folds run in workers, so the stage's process only writes):
    the pairs of each user's ``top`` best by the hybrid (all with None) and, with ``recs``,
    the hybrid's top ``n`` of each user from all the pairs."""
    hybrid = df["m_hybrid"].to_numpy()
    top_n = rank_by(df, hybrid, n) if recs else None
    union, users = len(df), int(df["user_idx"].nunique())
    if top is not None:
        u, i = df["user_idx"].to_numpy(), df["item_idx"].to_numpy()
        df = df[top_rows(u, i, hybrid, top)]
    return Finished(df, top_n, union, users)


def _hybrid_block(fold: _FoldBlocks, ranges: dict[str, tuple[int, int]]) -> Finished:
    """One block of users of a fold other than the valid one, with the hybrid, finished."""
    block = blend_block(candidate_block(fold.cands, ranges), fold.models, fold.normalise)
    return fold.finish(with_hybrid(block, fold.weights))


def _finisher(job: _FoldJob, fold_name: str) -> Callable[[pd.DataFrame], Finished]:
    """:func:`finish_block` with the fold's settings (picklable: it goes to the workers)."""
    return partial(finish_block, n=job.cfg.n, top=job.top, recs=job.out[fold_name][1] is not None)


def blend_fold(job: _FoldJob, fold_name: str, n_workers: int = 1) -> FoldCounts:
    """Blend one fold other than the valid one with its weights: write its pairs and recs
    into the temporaries ``job.out`` names (:func:`write_blocks`). Its blocks of users run
    up to ``n_workers`` side by side (one when the folds themselves run in workers)."""
    cands, models = fold_inputs(job.candidates, job.models, fold_name)
    finish = _finisher(job, fold_name)
    fold = _FoldBlocks(cands, models, job.cfg.normalise, job.weights, finish)
    ranges = candidate_ranges(cands, job.cfg.block_users)
    work = (_hybrid_block, fold, ranges, n_workers, f"blocks of {fold_name} users")
    with closing(map_shared(*work)) as blocks:
        return write_blocks(blocks, job.out[fold_name])


class FoldCounts(NamedTuple):
    """A fold's entry of ``reports/blend.json`` (:meth:`summary`)."""

    pairs: int  # the union of the models' candidates
    to_rank: int  # the pairs written: each user's top ranker.rerank_top by the hybrid
    users: int

    def summary(self) -> dict:
        return {
            "pairs": self.pairs,
            "pairs_to_rank": self.to_rank,
            "users": self.users,
            "mean_candidates_per_user": round(self.pairs / self.users, 2) if self.users else 0.0,
        }


def write_blocks(blocks: Iterable[Finished], out: tuple[Path, Path | None]) -> FoldCounts:
    """Write a fold's finished blocks into the temporaries ``out`` (pairs, and recs unless
    there is no second path: an extra ranker fold only feeds the ranker)."""
    pairs = ParquetRows(out[0])
    recs = None if out[1] is None else ParquetRows(out[1])
    union = users = 0
    for block in blocks:
        union += block.union
        users += block.users  # blocks never share a user
        pairs.write(block.pairs)
        if recs is not None:
            assert block.recs is not None, "a fold with recs gets them from every block"
            recs.write(block.recs)
    for rows in (pairs, recs):
        if rows is not None:
            rows.close()
    return FoldCounts(union, pairs.rows, users)


@dataclass
class _Folds:
    """What every fold's block (:func:`_blend_fold_of`) reads: the workers of
    :func:`~recpipe.engine.map_shared` inherit it from the process that built it. ``valid``
    holds the valid fold's candidates and models as the search loaded them (None once
    blended: a stage blending its folds one at a time then drops them; with the folds in
    workers, only the worker that blended it drops its copy, and the stage's process holds
    them until every fold is written)."""

    job: _FoldJob
    valid: ValidFold | None
    n_workers: int  # for the blocks of users of a fold blended in the stage's process


def _blend_fold_of(folds: _Folds, fold_name: str) -> tuple[FoldCounts, float | None]:
    """Blend one fold (the engine's block): its counts, and for the valid fold the search
    metric of the chosen weights over the whole fold (None for the others)."""
    if fold_name != "valid":
        return blend_fold(folds.job, fold_name, folds.n_workers), None
    valid, folds.valid = folds.valid, None
    assert valid is not None, "the valid fold is blended once"
    finish = _finisher(folds.job, "valid")
    with closing(valid.blocks(folds.n_workers, finish)) as blocks:
        counts = write_blocks(blocks, folds.job.out["valid"])
    return counts, valid.value


def fold_workers(n_folds: int, events: int) -> int:
    """Workers the folds are blended in side by side (each fold's blocks of users then run
    one at a time in its worker): the stage's default bound (:func:`recpipe.engine.workers`),
    and only with at least two folds a worker. With fewer, the folds run one at a time in
    the stage's process, each fold's blocks side by side, which keeps the workers as busy
    (two folds on two workers take one round either way) and holds one fold's models and
    candidates instead of one a worker. At 10M events (two folds), alternated twice, the
    folds side by side took 166.1 and 156.1 s against 167.0 and 171.5 s, within the
    machine's noise, and peaked at 6.3 and 6.7 GiB against 4.3 (``bench/README.md``).
    Side by side, the valid fold's inputs stay in the stage's process until every fold is
    written."""
    n = workers(events)
    return n if n_folds >= 2 * n else 1


def run(args: argparse.Namespace) -> None:
    cfg = load_params("blend", BlendConfig, args.params)
    seed = load_params("seed", int, args.params)
    top = load_params("ranker.rerank_top", TopPairs, args.params, default=RERANK_TOP)
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
        job = _FoldJob(cfg, top, weights, cand_dir, models_dir, out_files)
        events = history_events(args.split)
        # the blocks of a fold blended in this process have the shared bound
        folds = _Folds(job, valid, workers(events, max_events=SHARED_PARALLEL_MAX_EVENTS))
        del valid
        work = (_blend_fold_of, folds, names, fold_workers(len(names), events), "folds")
        with closing(map_shared(*work)) as done:
            for fold_name, (counts, value) in zip(names, done, strict=True):
                summary[fold_name] = counts.summary()
                log.info(
                    "%s: %d pairs for %d users (%d to rank)",
                    fold_name,
                    counts.pairs,
                    counts.users,
                    counts.to_rank,
                )
                if value is not None:
                    summary[f"valid_{cfg.search_metric}"] = round(value, 4)
                    log.info("valid %s of the searched weights: %.4f", cfg.search_metric, value)
        summary["weights"] = {m: round(float(w), 4) for m, w in sorted(weights.items())}
        # unrounded, for whatever applies the blend later (the serving bundle)
        applied = {m: float(w) for m, w in weights.items()}
        staged.add(out / WEIGHTS_FILE, json_bytes({"normalise": cfg.normalise, "weights": applied}))
        staged.add(out / CUT_FILE, json_bytes({"rerank_top": top}))
        staged.add(Path(args.summary), json_bytes(summary))


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
