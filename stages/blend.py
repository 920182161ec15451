"""DVC stage ``blend``: merge every enabled model's candidates per fold and add the hybrid.

Usage: ``python -m stages.blend --split data/split --candidates data/candidates --models
models --out data/blend --summary reports/blend.json``. Reads params ``blend`` and ``seed``.

Writes ``<out>/<fold>.parquet`` (every candidate pair with every model's score, rank and
normalised score, and ``m_hybrid``) and ``<out>/<fold>_recs.parquet`` (the hybrid's top-N).
With ``blend.search`` the weights are picked on the valid fold (its labels) and then applied
unchanged to the test fold; the test fold's targets are never read here. With search bags,
the valid fold's own hybrid is out of bag: each user's comes from the bags without the user.
Extra ranker folds (``split.ranker_folds``) get ``<out>/<fold>.parquet`` only, their hybrid
from the valid fold's weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from recpipe.artifacts import candidates_file, load_model, model_dir, model_enabled
from recpipe.blending import (
    BlendConfig,
    choose_weights,
    describe_pairs,
    fold_hybrid,
    hybrid_score,
    rank_by,
    union_candidates,
)
from recpipe.config import load_params
from recpipe.errors import ConfigError, DataError
from recpipe.folds import FOLDS, fold_names, load_fold
from recpipe.io import write_json, write_many
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


def run(args: argparse.Namespace) -> None:
    cfg = load_params("blend", BlendConfig, args.params)
    seed = load_params("seed", int, args.params)
    cand_dir, out = Path(args.candidates), Path(args.out)
    weights: dict[str, float] = {}
    summary: dict = {"normalise": cfg.normalise}
    frames: dict[Path, pd.DataFrame] = {}
    for fold_name in fold_names(args.split):  # valid first: it fixes the weights
        cands = enabled_candidates(cand_dir, fold_name)
        if not cands:
            enabled = [m for m in MODELS if model_enabled(model_dir(args.models, m, fold_name))]
            if not enabled:
                raise ConfigError("no enabled candidate model: enable at least one in candidates.*")
            raise DataError(
                f"no candidates for the {fold_name} fold: the enabled models "
                f"({', '.join(enabled)}) recommended nothing (does the fold have target users? "
                "see reports/split.json)",
                file=str(cand_dir),
            )
        models = {m: load_model(model_dir(args.models, m, fold_name)) for m in cands}
        df = describe_pairs(union_candidates(cands), models, cfg.normalise)
        if fold_name == "valid":
            truth = load_fold(args.split, "valid").targets if cfg.search else None
            weights, searched = choose_weights(df, list(cands), cfg, seed, truth)
            if searched is not None:
                summary[f"valid_{cfg.search_metric}"] = round(searched.value, 4)
                log.info(
                    "searched weights %s (valid %s %.4f)",
                    searched.weights,
                    cfg.search_metric,
                    searched.value,
                )
            df["m_hybrid"] = fold_hybrid(df, weights, searched)
        else:
            df["m_hybrid"] = hybrid_score(df, weights)
        frames[out / f"{fold_name}.parquet"] = df
        if fold_name in FOLDS:  # an extra ranker fold only feeds the ranker
            frames[out / f"{fold_name}_recs.parquet"] = rank_by(
                df, df["m_hybrid"].to_numpy(), cfg.n
            )
        per_user = df.groupby("user_idx").size()
        summary[fold_name] = {
            "pairs": len(df),
            "users": int(per_user.size),
            "mean_candidates_per_user": round(float(per_user.mean()), 2),
        }
        log.info("%s: %d pairs for %d users", fold_name, len(df), per_user.size)
    summary["weights"] = {m: round(float(w), 4) for m, w in sorted(weights.items())}
    write_many(frames)
    write_json(summary, args.summary)


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
