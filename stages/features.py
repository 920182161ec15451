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
from pathlib import Path

from recpipe.config import load_params
from recpipe.features.config import FeaturesConfig
from recpipe.features.history import history_now
from recpipe.features.items import item_features
from recpipe.features.users import user_features
from recpipe.folds import fold_names, load_catalogue, load_fold
from recpipe.io import write_many
from recpipe.log import get_logger
from recpipe.stage import run_stage

PARAMS = ("features",)

log = get_logger("features")


def run(args: argparse.Namespace) -> None:
    cfg = load_params("features", FeaturesConfig, args.params)
    items, users = load_catalogue(args.prepared)
    frames = {}
    for fold_name in fold_names(args.split):
        history = load_fold(args.split, fold_name).history
        now = history_now(history)
        uf = user_features(history, users, items, now, cfg)
        itf = item_features(history, items, now, cfg)
        frames[Path(args.out) / fold_name / "users.parquet"] = uf.reset_index()
        frames[Path(args.out) / fold_name / "items.parquet"] = itf.reset_index()
        log.info("%s: %d user and %d item features", fold_name, uf.shape[1], itf.shape[1])
    write_many(frames)


def main(argv: list[str] | None = None) -> int:
    return run_stage(run, argv, name="features", doc=__doc__, paths=("split", "prepared", "out"))


if __name__ == "__main__":
    sys.exit(main())
