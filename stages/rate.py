"""DVC stage ``rate``: fit the pipeline's rating predictor on the test fold's history.

Usage: ``python -m stages.rate --split data/split --prepared data/prepared --model-dir
models/rating``. Reads params ``rating`` and ``seed``.

The predictor is :class:`stages.core.rating.HybridRating` (baseline, SVD, item-kNN and content
signals blended by a combiner fit on an inner held-out share of the history), fitted on the
latest rating of every rated (user, item) pair in ``train + valid``; the evaluate stage scores
it on the test fold's rated targets (RMSE, MAE). Writes ``<model-dir>/model.pkl`` and
``<model-dir>/meta.json``. With ``rating.enabled: false``, or a history without enough
ratings (implicit data), it writes only ``meta.json`` saying so, and evaluation skips it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import Field

from stages.candidates import save_model
from stages.core.config import load_params
from stages.core.errors import ConfigError
from stages.core.folds import load_catalogue
from stages.core.io import write_json
from stages.core.log import get_logger
from stages.core.models.base import TrainData
from stages.core.rating import HybridRating, HybridRatingConfig

PARAMS = ("rating", "seed")

log = get_logger("rate")


class RatingConfig(HybridRatingConfig):
    """The rating predictor of the pipeline (``rating``)."""

    enabled: bool = Field(True, description="false: no rating model is fitted or scored")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("split", "prepared", "model-dir"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        cfg = load_params("rating", RatingConfig, args.params)
        seed = load_params("seed", int, args.params)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    model_dir = Path(args.model_dir)
    meta: dict = {"model": "rating", "enabled": cfg.enabled}
    if not cfg.enabled:
        write_json(meta, model_dir / "meta.json")
        (model_dir / "model.pkl").unlink(missing_ok=True)
        log.info("rating model disabled")
        return 0
    items, users = load_catalogue(args.prepared)
    # The test fold's history; its targets are never read here.
    history = pd.concat(
        [pd.read_parquet(Path(args.split) / f"{part}.parquet") for part in ("train", "valid")],
        ignore_index=True,
    )
    rated = TrainData(history, items, users).matrix("rating").tocoo()
    table = items.sort_values("item_idx", kind="stable").reset_index(drop=True)
    model = HybridRating(HybridRatingConfig(**cfg.model_dump(exclude={"enabled"})), seed)
    try:
        model.fit(
            rated.row.astype(np.int64),
            rated.col.astype(np.int64),
            rated.data.astype(np.float64),
            n_users=len(users),
            n_items=len(items),
            item_table=table,
        )
    except ValueError as exc:
        if rated.nnz and "held-out ratings" not in str(exc):
            raise
        # Implicit data (or nearly): there is no rating scale to predict. Say so, skip.
        log.warning("no rating model: %d rated pairs in the history (%s)", rated.nnz, exc)
        meta.update(enabled=False, reason=f"{rated.nnz} rated pairs: too few to fit")
        write_json(meta, model_dir / "meta.json")
        (model_dir / "model.pkl").unlink(missing_ok=True)
        return 0
    save_model(model, model_dir / "model.pkl")
    meta.update(rated_pairs=int(rated.nnz))
    write_json(meta, model_dir / "meta.json")
    log.info("fitted on %d rated pairs", rated.nnz)
    return 0


if __name__ == "__main__":
    sys.exit(main())
