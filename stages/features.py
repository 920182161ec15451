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

from stages.core.config import load_params
from stages.core.errors import ConfigError
from stages.core.features import FeaturesConfig, history_now, item_features, user_features
from stages.core.folds import fold_names, load_catalogue, load_fold
from stages.core.io import write_many
from stages.core.log import get_logger

PARAMS = ("features",)

log = get_logger("features")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--split", required=True)
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        cfg = load_params("features", FeaturesConfig, args.params)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
