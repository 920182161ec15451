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

from stages.candidates import candidates_file, load_model
from stages.core.blending import (
    BlendConfig,
    describe_pairs,
    hybrid_score,
    out_of_bag_hybrid,
    rank_by,
    search,
    union_candidates,
)
from stages.core.config import load_params
from stages.core.errors import ConfigError
from stages.core.folds import FOLDS, fold_names, load_fold
from stages.core.io import write_json, write_many
from stages.core.log import get_logger
from stages.core.models.registry import MODELS

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--split", required=True)
    ap.add_argument("--candidates", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--summary", required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        cfg = load_params("blend", BlendConfig, args.params)
        seed = load_params("seed", int, args.params)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    cand_dir, models_dir, out = Path(args.candidates), Path(args.models), Path(args.out)
    weights = dict(cfg.weights)
    searched = None
    summary: dict = {"normalise": cfg.normalise}
    frames: dict[Path, pd.DataFrame] = {}
    for fold_name in fold_names(args.split):
        cands = enabled_candidates(cand_dir, fold_name)
        if not cands:
            log.error("no enabled candidate model: enable at least one in candidates.*")
            return 2
        models = {m: load_model(models_dir / m / fold_name / "model.pkl") for m in cands}
        df = describe_pairs(union_candidates(cands), models, cfg.normalise)
        if fold_name == "valid" and cfg.search:
            truth = load_fold(args.split, "valid").targets
            searched = search(df, truth, list(cands), cfg, seed)
            weights = searched.weights
            summary[f"valid_{cfg.search_metric}"] = round(searched.value, 4)
            log.info(
                "searched weights %s (valid %s %.4f)", weights, cfg.search_metric, searched.value
            )
        if fold_name == "valid":
            unknown = set(weights) - set(cands)
            if unknown:
                log.warning("weights for models that are off or unknown are ignored: %s", unknown)
            # Every enabled model is reported, with weight 0 where the blend ignores it.
            weights = {m: float(weights.get(m, 0.0)) for m in cands}
            if not any(w > 0 for w in weights.values()):
                log.error(
                    "blend.weights: no positive weight on an enabled model (enabled: %s)",
                    ", ".join(cands),
                )
                return 2
            total = sum(weights.values())
            weights = {m: w / total for m, w in weights.items()}
        if fold_name == "valid" and searched is not None and searched.bags:
            # The ranker learns from this fold's labels: each user's hybrid comes from the
            # bags that did not see the user, so those labels never shaped it.
            df["m_hybrid"] = out_of_bag_hybrid(df, searched)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
