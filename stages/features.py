"""DVC stage ``features``: user and item features per fold, from that fold's history only.

Usage: ``python -m stages.features --split data/split --prepared data/prepared --out
data/features``. Reads params ``features``. Writes, for every fold (extra ranker folds
included), ``<out>/<fold>/users.parquet`` and
``<out>/<fold>/items.parquet`` (index columns ``user_idx``/``item_idx``). Pair features
depend on the candidates and are computed by the rank stage.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from recpipe.config import load_params
from recpipe.engine import FIT_PARALLEL_MAX_EVENTS, run_folds
from recpipe.features.config import FeaturesConfig
from recpipe.features.history import history_now
from recpipe.features.items import item_features
from recpipe.features.users import user_features
from recpipe.folds import fold_names, history_events, load_catalogue, load_fold
from recpipe.io import write_many
from recpipe.log import get_logger
from recpipe.stage import run_stage

PARAMS = ("features",)

log = get_logger("features")


@dataclass(frozen=True)
class _FeaturesJob:
    """What one fold's features need besides its name (picklable: for a worker)."""

    split: Path
    items: pd.DataFrame
    users: pd.DataFrame
    cfg: FeaturesConfig


def fold_features(job: _FeaturesJob, fold_name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One fold's user and item features (one block of the engine)."""
    history = load_fold(job.split, fold_name).history
    now = history_now(history)
    uf = user_features(history, job.users, job.items, now, job.cfg)
    itf = item_features(history, job.items, now, job.cfg)
    return uf.reset_index(), itf.reset_index()


def run(args: argparse.Namespace) -> None:
    cfg = load_params("features", FeaturesConfig, args.params)
    items, users = load_catalogue(args.prepared)
    folds = fold_names(args.split)
    job = _FeaturesJob(Path(args.split), items, users, cfg)
    # the folds are independent blocks, side by side in worker processes where
    # recpipe.engine says
    parts = run_folds(
        partial(fold_features, job),
        folds,
        history_events(args.split),
        "folds",
        FIT_PARALLEL_MAX_EVENTS,
    )
    frames = {}
    for fold_name, (uf, itf) in zip(folds, parts, strict=True):
        frames[Path(args.out) / fold_name / "users.parquet"] = uf
        frames[Path(args.out) / fold_name / "items.parquet"] = itf
        # (the index column is not a feature)
        log.info("%s: %d user and %d item features", fold_name, uf.shape[1] - 1, itf.shape[1] - 1)
    write_many(frames)


def main(argv: list[str] | None = None) -> int:
    return run_stage(run, argv, name="features", doc=__doc__, paths=("split", "prepared", "out"))


if __name__ == "__main__":
    sys.exit(main())
