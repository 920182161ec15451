"""DVC stage ``blend``: merge every enabled model's candidates per fold and add the hybrid.

Usage: ``python -m stages.blend --split data/split --candidates data/candidates --models
models --out data/blend --summary reports/blend.json``. Reads params ``blend`` and ``seed``.

Writes ``<out>/<fold>.parquet`` (every candidate pair with every model's score, rank and
normalised score, and ``m_hybrid``) and ``<out>/<fold>_recs.parquet`` (the hybrid's top-N).
With ``blend.search`` the weights are picked on the valid fold (its labels) and then applied
unchanged to the test fold; the test fold's targets are never read here. With search bags,
the valid fold's own hybrid is out of bag: each user's comes from the bags without the user.
Every fold is built and written ``blend.block_users`` users at a time (the search holds
only its bags' users).
``<out>/weights.json`` holds the weights applied to the test fold (unrounded) and the
normalisation, which the serving bundle applies again.
Extra ranker folds (``split.ranker_folds``) get ``<out>/<fold>.parquet`` only, their hybrid
from the valid fold's weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from recpipe.artifacts import candidates_file, load_model, model_dir, model_enabled
from recpipe.blending import (
    WEIGHTS_FILE,
    BlendConfig,
    ValidFold,
    blend_block,
    candidate_blocks,
    hybrid_score,
    rank_by,
)
from recpipe.config import load_params
from recpipe.errors import ConfigError, DataError
from recpipe.folds import FOLDS, fold_names, load_fold
from recpipe.io import json_bytes, staged_files
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


def run(args: argparse.Namespace) -> None:
    cfg = load_params("blend", BlendConfig, args.params)
    seed = load_params("seed", int, args.params)
    cand_dir, out = Path(args.candidates), Path(args.out)
    weights: dict[str, float] = {}
    summary: dict = {"normalise": cfg.normalise}
    with staged_files() as staged:
        for fold_name in fold_names(args.split):  # valid first: it fixes the weights
            cands = enabled_candidates(cand_dir, fold_name)
            if not cands:
                enabled = [m for m in MODELS if model_enabled(model_dir(args.models, m, fold_name))]
                if not enabled:
                    raise ConfigError(
                        "no enabled candidate model: enable at least one in candidates.*"
                    )
                raise DataError(
                    f"no candidates for the {fold_name} fold: the enabled models "
                    f"({', '.join(enabled)}) recommended nothing (does the fold have target "
                    "users? see reports/split.json)",
                    file=str(cand_dir),
                )
            models = {m: load_model(model_dir(args.models, m, fold_name)) for m in cands}
            valid = None
            if fold_name == "valid":  # first: it fixes the weights
                truth = load_fold(args.split, "valid").targets if cfg.search else None
                valid = ValidFold(cands, models, cfg, seed, truth)
                weights = valid.weights
                if valid.searched is not None:
                    log.info("searched weights %s", valid.searched.weights)
                frames: Iterable[pd.DataFrame] = valid.blocks()
            else:
                frames = (
                    with_hybrid(blend_block(block, models, cfg.normalise), weights)
                    for block in candidate_blocks(cands, cfg.block_users)
                )
            pairs = staged.stream(out / f"{fold_name}.parquet")
            recs = staged.stream(out / f"{fold_name}_recs.parquet") if fold_name in FOLDS else None
            users = 0
            for df in frames:
                pairs.write(df)
                if recs is not None:  # an extra ranker fold only feeds the ranker
                    recs.write(rank_by(df, df["m_hybrid"].to_numpy(), cfg.n))
                users += int(df["user_idx"].nunique())  # blocks never share a user
            del frames, cands, models
            if valid is not None and valid.value is not None:
                summary[f"valid_{cfg.search_metric}"] = round(valid.value, 4)
                log.info("valid %s of the searched weights: %.4f", cfg.search_metric, valid.value)
            summary[fold_name] = {
                "pairs": pairs.rows,
                "users": users,
                "mean_candidates_per_user": round(pairs.rows / users, 2) if users else 0.0,
            }
            log.info("%s: %d pairs for %d users", fold_name, pairs.rows, users)
        summary["weights"] = {m: round(float(w), 4) for m, w in sorted(weights.items())}
        # unrounded, for whatever applies the blend later (the serving bundle)
        applied = {m: float(w) for m, w in weights.items()}
        staged.add(out / WEIGHTS_FILE, json_bytes({"normalise": cfg.normalise, "weights": applied}))
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
