"""DVC stage ``rate``: fit the pipeline's rating predictor on the test fold's history.

Usage: ``python -m stages.rate --split data/split --prepared data/prepared --model-dir
models/rating``. Reads params ``rating`` and ``seed``.

The predictor is :class:`recpipe.rating.HybridRating` (baseline, SVD, item-kNN and content
signals blended by a combiner fit on an inner held-out share of the history), fitted on the
latest rating of every rated (user, item) pair in ``train + valid``; the evaluate stage scores
it on the test fold's rated targets (RMSE, MAE). Writes the model into ``<model-dir>`` (see
:mod:`recpipe.artifacts`) and ``<model-dir>/meta.json``. With ``rating.enabled: false``, or a
history without enough ratings (implicit data), it writes only ``meta.json`` saying so, and
evaluation skips it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from recpipe.artifacts import remove_model, save_model
from recpipe.config import load_params
from recpipe.folds import load_catalogue
from recpipe.io import write_json
from recpipe.log import get_logger
from recpipe.rating import RatingConfig, fit_on_history
from recpipe.stage import run_stage

PARAMS = ("rating", "seed")

log = get_logger("rate")


def run(args: argparse.Namespace) -> None:
    cfg = load_params("rating", RatingConfig, args.params)
    seed = load_params("seed", int, args.params)
    model_dir = Path(args.model_dir)
    meta: dict = {"model": "rating", "enabled": cfg.enabled}
    if not cfg.enabled:
        remove_model(model_dir)
        write_json(meta, model_dir / "meta.json")
        log.info("rating model disabled")
        return
    items, users = load_catalogue(args.prepared)
    # The test fold's history; its targets are never read here.
    history = pd.concat(
        [pd.read_parquet(Path(args.split) / f"{part}.parquet") for part in ("train", "valid")],
        ignore_index=True,
    )
    model, rated, reason = fit_on_history(history, items, users, cfg.hybrid_config(), seed)
    if model is None:
        # Implicit data (or nearly): there is no rating scale to predict. Say so, skip.
        log.warning("no rating model: %s", reason)
        meta.update(enabled=False, reason=f"{rated} rated pairs: too few to fit")
        remove_model(model_dir)
        write_json(meta, model_dir / "meta.json")
        return
    save_model(model, model_dir)
    meta.update(rated_pairs=rated)
    write_json(meta, model_dir / "meta.json")
    log.info("fitted on %d rated pairs", rated)


def main(argv: list[str] | None = None) -> int:
    return run_stage(run, argv, name="rate", doc=__doc__, paths=("split", "prepared", "model-dir"))


if __name__ == "__main__":
    sys.exit(main())
