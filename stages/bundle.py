"""DVC stage ``bundle``: everything the service needs, in one versioned folder.

Usage: ``python -m stages.bundle --split data/split --prepared data/prepared --blend
data/blend --ranker models/ranker --rating models/rating --metrics reports/metrics.json
--out models/bundle``. Reads params ``serve``, ``candidates``, ``features`` and ``seed``.

With ``serve.fold: serve`` every enabled candidate model is refitted on every interaction
(the split's train, valid and test parts), and each known user's lists are ranked from that
history by the blend's weights and the ranker trained by the rank stage (its features are
relative to a fold's history, so it applies unchanged). With ``serve.fold: test`` the same
is built from the test fold's history: the ranker's lists of the test users are then the
evaluated ones. The layout is in :mod:`recpipe.serving.build`; ``manifest.json`` is written
last, so a folder without it is an unfinished bundle and the service refuses it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from recpipe.blending import WEIGHTS_FILE
from recpipe.config import load_params, parse
from recpipe.engine import (
    FIT_PARALLEL_MAX_EVENTS,
    SHARED_PARALLEL_MAX_EVENTS,
    map_shared,
    workers,
)
from recpipe.errors import ConfigError, DataError
from recpipe.features.config import FeaturesConfig
from recpipe.features.pairs import (
    PairSimilarities,
    group_similarities,
    pair_arrays,
    similarity_groups,
)
from recpipe.folds import load_catalogue, load_fold
from recpipe.io import (
    ParquetRows,
    frame_parquet,
    json_bytes,
    scratch_beside,
    staged_files,
    write_json,
)
from recpipe.log import get_logger
from recpipe.models.registry import MODELS, model_class
from recpipe.serving.build import (
    FORMAT,
    FORMAT_VERSION,
    check_ranker_models,
    digest_files,
    fit_models,
    git_revision,
    item_popularity,
    load_ranker,
    neighbours,
    params_digest,
    popular_lists,
    ranker_features,
    ranking_of,
    serve_history,
    serve_settings,
    user_blocks,
)
from recpipe.serving.config import ServeConfig
from recpipe.serving.online import Lists, Ranking
from recpipe.stage import run_stage

PARAMS = ("serve", "candidates", "features", "seed")

log = get_logger("bundle")


def model_configs(candidates: dict, cfg: ServeConfig, params: str) -> dict:
    """name -> (class, config) of the models the bundle holds: the enabled ones, or
    ``serve.models``."""
    if cfg.models is not None:
        unknown = [m for m in cfg.models if m not in MODELS]
        if unknown:
            raise ConfigError(
                f"{params}: serve.models: unknown model {unknown[0]!r} (models: "
                f"{', '.join(MODELS)})"
            )
    out = {}
    for name in MODELS:
        cls = model_class(name)
        mcfg = parse(candidates[name], cls.config_class, f"candidates.{name}", params)
        if mcfg.enabled and (cfg.models is None or name in cfg.models):
            out[name] = (cls, mcfg)
        elif cfg.models is not None and name in cfg.models:
            raise ConfigError(f"{params}: serve.models: {name} is disabled in candidates.{name}")
    if not out:
        raise ConfigError(f"{params}: no enabled candidate model to serve")
    return out


@dataclass(frozen=True)
class _Shared:
    """What every block of :func:`rank_every_user` reads: its workers inherit it from the
    stage's process (:func:`~recpipe.engine.map_shared`), so the models are not sent."""

    ranking: Ranking
    n: int
    scratch: Path
    similarities: PairSimilarities | None = None


def _blend_block(shared: _Shared, block: tuple[int, np.ndarray]) -> tuple[Lists, tuple]:
    """The first pass over one block of users: its lists but the ranker's, and the keys of
    its pairs, which go to a scratch file for the second pass."""
    k, users = block
    pairs, lists = shared.ranking.blend_users(users, shared.n)
    frame_parquet(pairs, shared.scratch / f"{k}.parquet")
    return lists, pair_arrays(pairs)


def _rank_block(shared: _Shared, k: int) -> pd.DataFrame:
    """The second pass over one block of users: the ranker's lists of its pairs."""
    pairs = pd.read_parquet(shared.scratch / f"{k}.parquet")
    return shared.ranking.rank_pairs(pairs, shared.n, shared.similarities)


def rank_every_user(
    ranking: Ranking,
    history: pd.DataFrame,
    cfg: ServeConfig,
    streams: dict[str, ParquetRows],
    out: Path,
    n_workers: int = 1,
) -> int:
    """Every list of every user with history, in blocks of at most ``cfg.block_users``
    users (of even sizes, :func:`~recpipe.engine.even_cuts`), written
    to ``streams`` (one per list name); returns how many users were ranked.

    With more than one block, in two passes, up to ``n_workers`` blocks side by side
    (:func:`~recpipe.engine.map_shared`; the lists are written here, in block order): the
    first writes the blend's and each model's lists and keeps each block's pairs for the
    ranker in a scratch folder beside ``out``; the second ranks each block's pairs, with the
    similarity features of many blocks computed at once, here, before their blocks go to
    the workers (:func:`~recpipe.features.pairs.similarity_groups`: each block alone would
    repeat nearly the whole item x item product). The lists are those of
    :meth:`~recpipe.serving.online.Ranking.rank_users`, block by block."""
    blocks = list(user_blocks(history, cfg.block_users, n_workers))
    if len(blocks) <= 1:
        for block in blocks:
            lists = ranking.rank_users(block, cfg.cache_n)
            for name, stream in streams.items():
                stream.write(lists.get(name))
        return sum(len(block) for block in blocks)
    ranking.prepare()  # built once here, not once in each worker
    with scratch_beside(out) as scratch:
        shared = _Shared(ranking, cfg.cache_n, scratch)
        keys = []
        work = (_blend_block, shared, list(enumerate(blocks)), n_workers, "blocks of users")
        with closing(map_shared(*work)) as first:
            for lists, block_keys in first:
                for name, stream in streams.items():
                    if name != "ranker":
                        stream.write(lists.get(name))
                keys.append(block_keys)
        for group in similarity_groups([len(users) for users, _ in keys]):
            similarities = group_similarities([keys[k] for k in group], ranking.context)
            with_group = replace(shared, similarities=similarities)
            work = (_rank_block, with_group, group, n_workers, "blocks of users to rank")
            with closing(map_shared(*work)) as second:
                for ranked in second:
                    streams["ranker"].write(ranked)
            del similarities, with_group, work
    return sum(len(block) for block in blocks)


def run(args: argparse.Namespace) -> None:
    cfg = load_params("serve", ServeConfig, args.params)
    candidates = load_params("candidates", dict, args.params)
    fcfg = load_params("features", FeaturesConfig, args.params)
    seed = load_params("seed", int, args.params)
    configs = model_configs(candidates, cfg, args.params)
    out = Path(args.out)
    (out / "manifest.json").unlink(missing_ok=True)  # unfinished until written again

    items, users = load_catalogue(args.prepared)
    split = Path(args.split)
    if cfg.fold == "serve":
        parts = [pd.read_parquet(split / f"{p}.parquet") for p in ("train", "valid", "test")]
        history = serve_history(parts)
    else:
        history = serve_history([load_fold(split, "test").history])
    blend_file = Path(args.blend) / WEIGHTS_FILE
    if not blend_file.exists():
        raise DataError(f"{blend_file}: missing; rerun the blend stage", file=str(blend_file))
    blend = json.loads(blend_file.read_text())
    check_ranker_models(ranker_features(args.ranker), list(configs), list(MODELS))

    fit_workers = workers(len(history), max_events=FIT_PARALLEL_MAX_EVENTS)
    models = fit_models(history, items, users, configs, seed, out / "models", fit_workers)
    # loaded after the fits' workers are forked: XGBoost may run OpenMP as it loads
    ranker = load_ranker(args.ranker)
    n = {m: int(c.n) for m, (_, c) in configs.items()}
    ranking = ranking_of(models, n, blend, ranker, fcfg, history, items, users)
    log.info("%d models fitted on %d events (%s)", len(models), len(history), cfg.fold)

    pop = item_popularity(history, len(items), cfg.trending_days)
    # the whole items table (the content features rebuild their documents from it), plus
    # each item's popularity
    catalogue = items.sort_values("item_idx", ignore_index=True)
    catalogue["item_idx"] = catalogue["item_idx"].astype(np.int64)
    clash = [c for c in pop.columns if c in catalogue.columns]
    if clash:
        raise DataError(
            f"items table: column {clash[0]!r} is reserved for the bundle's popularity",
            file=str(Path(args.prepared) / "items.parquet"),
            column=clash[0],
        )
    catalogue[list(pop.columns)] = pop
    counts: dict[str, int] = {}
    with staged_files() as staged:
        names = ["ranker", "blend", *models]
        streams = {name: staged.stream(out / "lists" / f"{name}.parquet") for name in names}
        n_workers = workers(len(history), max_events=SHARED_PARALLEL_MAX_EVENTS)
        n_users = rank_every_user(ranking, history, cfg, streams, out, n_workers)
        counts = {f"list_rows_{name}": streams[name].rows for name in names}
        staged.add(out / "items.parquet", catalogue)
        staged.add(
            out / "users.parquet",
            users[["user_id", "user_idx"]]
            .astype({"user_idx": np.int64})
            .sort_values("user_idx", ignore_index=True),
        )
        staged.add(
            out / "history.parquet",
            history.sort_values(["user_idx", "timestamp"], kind="stable", ignore_index=True),
        )
        staged.add(out / "popular.parquet", popular_lists(items, pop, cfg.popular_n))
        staged.add(out / "neighbours.parquet", neighbours(ranking, cfg.neighbours))
        staged.add(out / "features" / "users.parquet", ranking.user_feats)
        staged.add(out / "features" / "items.parquet", ranking.item_feats)
        settings = serve_settings(cfg, fcfg, ranker, blend, n, ranking.now)
        staged.add(out / "serve.json", json_bytes(settings))
    for src, dst in ((Path(args.ranker), out / "ranker"), (Path(args.rating), out / "rating")):
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            if f.is_file():
                shutil.copyfile(f, dst / f.name)

    metrics_file = Path(args.metrics)
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    inputs = [split, Path(args.prepared) / "items.parquet", Path(args.prepared) / "users.parquet"]
    inputs += [blend_file, Path(args.ranker), Path(args.rating)]
    blocks = {"serve": cfg.model_dump(mode="json"), "features": fcfg.model_dump(mode="json")}
    blocks |= {"candidates": candidates, "seed": seed}
    p_digest = params_digest(blocks)
    bundle_id = digest_files(inputs)[:8] + p_digest[:8]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bundle_id": bundle_id,
        "git_revision": git_revision(),
        "params_digest": p_digest,
        "fold": cfg.fold,
        "metrics": metrics,
        "models": list(models),
        "lists": names,
        "ranker_features": ranker.features,
        "counts": {
            "users": int(len(users)),
            "items": int(len(items)),
            "events": int(len(history)),
            "users_with_lists": n_users,
            **counts,
        },
    }
    write_json(manifest, out / "manifest.json")
    log.info("bundle %s: %d users ranked, %d items", bundle_id, n_users, len(items))


def main(argv: list[str] | None = None) -> int:
    return run_stage(
        run,
        argv,
        name="bundle",
        doc=__doc__,
        paths=("split", "prepared", "blend", "ranker", "rating", "metrics", "out"),
    )


if __name__ == "__main__":
    sys.exit(main())
