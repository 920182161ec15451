"""DVC stage ``candidates@<model>``: fit one model per fold and write its top-N candidates.

Usage: ``python -m stages.candidates --model als --split data/split --prepared
data/prepared --models-dir models/als --out data/candidates``. Reads params
``candidates.<model>`` and ``seed``.

For each fold (``valid``, ``test`` and any extra ranker folds of ``split.ranker_folds``) the
model is fitted on that fold's history (DESIGN.md, "Folds") and
recommends for the fold's target users; it writes ``<out>/<fold>/<model>.parquet``
(``user_idx, item_idx, score, rank``; an extra fold's go to
``<out>/extra/<model>/<fold>.parquet``) and the fitted model ``<models-dir>/<fold>/model.pkl``
(the blend and the evaluation score arbitrary pairs with it). A disabled model writes empty
candidates and no model file, so the DAG keeps its shape.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from stages.core.config import load_params
from stages.core.errors import ConfigError
from stages.core.folds import FOLDS, fold_names, load_catalogue, load_fold, ranker_folds, train_data
from stages.core.io import atomic_path, write_json, write_parquet
from stages.core.log import get_logger
from stages.core.models.base import Recommender, concat_recs
from stages.core.models.registry import model_class

log = get_logger("candidates")


def params_for(model: str) -> tuple[str, ...]:
    """The params blocks stage ``candidates@<model>`` reads (mirrored in dvc.yaml)."""
    return (f"candidates.{model}", "seed")


EXTRA_DIR = "extra"
"""Where, under the candidates folder, the extra ranker folds' candidates go:
``extra/<model>/<fold>.parquet``, one folder per model, so that each ``candidates@<model>``
stage owns its own folder whatever the number of folds (a DVC output cannot depend on it)."""


def candidates_file(out: str | Path, fold: str, model: str) -> Path:
    """The candidates of ``model`` for ``fold``: ``<out>/<fold>/<model>.parquet`` for
    ``valid`` and ``test``, ``<out>/extra/<model>/<fold>.parquet`` for an extra ranker fold."""
    if fold in FOLDS:
        return Path(out) / fold / f"{model}.parquet"
    return Path(out) / EXTRA_DIR / model / f"{fold}.parquet"


def save_model(model: Recommender, path: Path) -> None:
    with atomic_path(path, ".pkl") as tmp, tmp.open("wb") as fh:
        pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_model(path: str | Path) -> Recommender:
    """Load a fitted model written by this stage (our own artefact; trusted)."""
    with Path(path).open("rb") as fh:
        return pickle.load(fh)  # noqa: S301 - reads only this pipeline's own outputs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        cls = model_class(args.model)
        cfg = load_params(f"candidates.{args.model}", cls.config_class, args.params)
        seed = load_params("seed", int, args.params)
    except (ConfigError, KeyError) as exc:
        log.error("%s", exc)
        return 2
    items, users = load_catalogue(args.prepared)
    models_dir, out = Path(args.models_dir), Path(args.out)
    for fold_name in fold_names(args.split):
        fold = load_fold(args.split, fold_name)
        target = candidates_file(out, fold_name, args.model)
        meta = {"model": args.model, "fold": fold_name, "enabled": cfg.enabled}
        if not cfg.enabled:
            write_parquet(concat_recs([]), target)
            write_json(meta, models_dir / fold_name / "meta.json")
            log.info("%s disabled: wrote empty candidates for %s", args.model, fold_name)
            continue
        model = cls(cfg, seed=seed).fit(train_data(fold, items, users))
        recs = model.recommend(fold.target_users.to_numpy(), cfg.n)
        save_model(model, models_dir / fold_name / "model.pkl")
        write_parquet(recs, target)
        meta.update(users=int(recs["user_idx"].nunique()), rows=len(recs))
        write_json(meta, models_dir / fold_name / "meta.json")
        log.info(
            "%s/%s: %d candidates for %d of %d target users",
            args.model,
            fold_name,
            len(recs),
            meta["users"],
            len(fold.target_users),
        )
    # The extra folds' folder is this stage's DVC output even when the split made no extra
    # fold: a small index of what it holds keeps it present.
    extra = list(ranker_folds(args.split))
    write_json({"model": args.model, "folds": extra}, out / EXTRA_DIR / args.model / "folds.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
