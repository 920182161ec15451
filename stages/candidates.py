"""DVC stage ``candidates@<model>``: fit one model per fold and write its top-N candidates.

Usage: ``python -m stages.candidates --model als --split data/split --prepared
data/prepared --models-dir models/als --out data/candidates``. Reads params
``candidates.<model>`` and ``seed``.

For each fold (``valid``, ``test`` and any extra ranker folds of ``split.ranker_folds``) the
model is fitted on that fold's history (docs/architecture.md, "Folds") and recommends for
the fold's target users; it writes the candidates (``user_idx, item_idx, score, rank``) and
the fitted model where :mod:`recpipe.artifacts` says (the blend and the evaluation score
arbitrary pairs with it). The folds are independent blocks, fitted side by side in worker
processes where :mod:`recpipe.engine` says. A disabled model writes empty candidates and
no model file, so the DAG keeps its shape.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from recpipe.artifacts import EXTRA_DIR, candidates_file, remove_model, save_model
from recpipe.config import Config, load_params
from recpipe.engine import FIT_PARALLEL_MAX_EVENTS, run_folds
from recpipe.errors import ConfigError
from recpipe.folds import (
    fold_names,
    history_events,
    load_catalogue,
    load_fold,
    ranker_folds,
    train_data,
)
from recpipe.io import write_json, write_parquet
from recpipe.log import get_logger
from recpipe.models.base import concat_recs
from recpipe.models.registry import model_class
from recpipe.stage import run_stage

log = get_logger("candidates")


def params_for(model: str) -> tuple[str, ...]:
    """The params blocks stage ``candidates@<model>`` reads (mirrored in dvc.yaml)."""
    return (f"candidates.{model}", "seed")


@dataclass(frozen=True)
class _Job:
    """What fitting one fold needs besides the fold's name (picklable: it goes to a worker)."""

    model: str
    cfg: Config
    seed: int
    split: Path
    prepared: Path
    models_dir: Path
    out: Path


def run(args: argparse.Namespace) -> None:
    try:
        cls = model_class(args.model)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    cfg = load_params(f"candidates.{args.model}", cls.config_class, args.params)
    seed = load_params("seed", int, args.params)
    job = _Job(
        args.model,
        cfg,
        seed,
        Path(args.split),
        Path(args.prepared),
        Path(args.models_dir),
        Path(args.out),
    )
    folds, work = fold_names(job.split), partial(_fit_fold, job)
    if cfg.enabled:
        cls.preload()  # once here, not once in each fold's worker
        run_folds(work, folds, history_events(job.split), "folds", FIT_PARALLEL_MAX_EVENTS)
    else:  # nothing to fit: empty files
        for fold_name in folds:
            work(fold_name)
    # The extra folds' folder is this stage's DVC output even when the split made no extra
    # fold: a small index of what it holds keeps it present.
    extra = list(ranker_folds(job.split))
    write_json(
        {"model": args.model, "folds": extra}, job.out / EXTRA_DIR / args.model / "folds.json"
    )


def _fit_fold(job: _Job, fold_name: str) -> None:
    """Fit the model on one fold and write its candidates, model and meta (one block)."""
    target = candidates_file(job.out, fold_name, job.model)
    fold_dir = job.models_dir / fold_name
    meta = {"model": job.model, "fold": fold_name, "enabled": job.cfg.enabled}
    if not job.cfg.enabled:
        write_parquet(concat_recs([]), target)
        remove_model(fold_dir)
        write_json(meta, fold_dir / "meta.json")
        log.info("%s disabled: wrote empty candidates for %s", job.model, fold_name)
        return
    items, users = load_catalogue(job.prepared)
    fold = load_fold(job.split, fold_name)
    model = model_class(job.model)(job.cfg, seed=job.seed).fit(train_data(fold, items, users))
    recs = model.recommend(fold.target_users.to_numpy(), job.cfg.n)
    save_model(model, fold_dir)
    write_parquet(recs, target)
    meta.update(users=int(recs["user_idx"].nunique()), rows=len(recs))
    write_json(meta, fold_dir / "meta.json")
    log.info(
        "%s/%s: %d candidates for %d of %d target users",
        job.model,
        fold_name,
        len(recs),
        meta["users"],
        len(fold.target_users),
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage(
        run,
        argv,
        name="candidates",
        doc=__doc__,
        paths=("model", "split", "prepared", "models-dir", "out"),
    )


if __name__ == "__main__":
    sys.exit(main())
