"""DVC stage ``rank``: train the XGBoost ranker on the valid fold, rank the test fold.

Usage: ``python -m stages.rank --split data/split --prepared data/prepared --blend data/blend
--features data/features --model-dir models/ranker --out data/rank --summary
reports/ranker.json``. Reads params ``ranker``, ``features`` and ``seed``.

Writes ``<model-dir>/model.json`` (XGBoost), ``<model-dir>/scoring.json`` (the feature
columns in order and the base-margin column the trees start from, which applying the model
needs), ``<model-dir>/importance.json`` (total gain per feature), ``<out>/test_recs.parquet``
(the ranker's top-N of the test fold's candidates) and a training summary.
The ranker learns from the valid fold and every extra ranker fold (``split.ranker_folds``):
each user's candidates in each of them is one list, labelled by that fold's targets. Only
those folds' targets are read (as labels); the test fold's never. With worker processes
(:mod:`recpipe.engine`) the training folds are described side by side, and with them the
test fold, whose features need no ranker: its blocks wait in a scratch folder beside the
output until the ranker is trained (at 1M events rank took about 40 s instead of 46: the
test fold's description, some 8 s, no longer follows the training). In one process the
test fold is described after training, block by block as it is scored.
The blend's fold files hold each user's top ``ranker.rerank_top`` pairs (its
``pairs.json`` says how many): a ranker asking for more, or for all, stops before it
writes anything, with what to do (re-run the blend with the same params).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyarrow import feather

from recpipe.blending import check_cut
from recpipe.config import load_params
from recpipe.engine import run_folds, workers
from recpipe.errors import DataError
from recpipe.features.config import FeaturesConfig
from recpipe.features.history import history_now
from recpipe.features.metadata import item_vectors
from recpipe.features.pairs import pair_arrays, pair_context, pair_features, similarities_by_block
from recpipe.folds import Fold, history_events, load_catalogue, load_fold, ranker_folds
from recpipe.io import atomic_path, scratch_beside, user_blocks_of, write_json, write_parquet
from recpipe.log import get_logger
from recpipe.models.base import concat_recs
from recpipe.ranking import (
    KEY,
    RankerConfig,
    assemble,
    describe_block,
    importance,
    labels,
    learning_columns,
    negatives_cap,
    rank_described,
    select_features,
    top_candidates,
    train,
    training_rows,
)
from recpipe.stage import run_stage

PARAMS = ("ranker", "features", "seed")

LIST_STRIDE = 1 << 40
"""Distance between the list ids of two training folds (above any user index)."""

log = get_logger("rank")


def candidate_blocks(
    fold: Fold, blend_dir: Path, rcfg: RankerConfig, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The fold's candidate pairs the ranker works on, ``rcfg.block_users`` users at a time
    (read a row group at a time): each user's ``rcfg.rerank_top`` by the blend (all with
    null), with the blend's columns (or only ``columns``, which must hold the key and the
    blend's ``m_hybrid``), sorted by user and item."""
    for block in user_blocks_of(blend_dir / f"{fold.name}.parquet", rcfg.block_users, columns):
        yield top_candidates(block, rcfg).sort_values(KEY, kind="stable", ignore_index=True)


def block_keys(
    fold: Fold, blend_dir: Path, rcfg: RankerConfig
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The pairs of each of :func:`candidate_blocks`, as ``(user_idx, item_idx)`` arrays,
    from the blend's key and score columns alone: what
    :func:`~recpipe.features.pairs.similarities_by_block` groups."""
    return [
        pair_arrays(block) for block in candidate_blocks(fold, blend_dir, rcfg, [*KEY, "m_hybrid"])
    ]


def candidates(fold: Fold, blend_dir: Path, rcfg: RankerConfig) -> pd.DataFrame:
    """All of :func:`candidate_blocks` in one frame."""
    return pd.concat(list(candidate_blocks(fold, blend_dir, rcfg)), ignore_index=True)


def describe(
    fold: Fold,
    blend: pd.DataFrame,
    features_dir: Path,
    items: pd.DataFrame,
    cfg: FeaturesConfig,
    content: sp.csr_matrix | None = None,
) -> pd.DataFrame:
    """The pairs of ``blend`` (candidates of ``fold``) with every feature, sorted by user
    and item (``content``: the items' content vectors, when computed already)."""
    uf = pd.read_parquet(features_dir / fold.name / "users.parquet")
    itf = pd.read_parquet(features_dir / fold.name / "items.parquet")
    now = history_now(fold.history)
    pf = pair_features(blend[KEY], fold.history, items, now, cfg, content)
    return assemble(blend, uf, itf, pd.concat([blend[KEY], pf], axis=1))


@dataclass(frozen=True)
class ListsJob:
    """What describing the ranker's folds needs (picklable: it goes to the workers)."""

    split: Path
    blend: Path
    features: Path
    items: pd.DataFrame
    cfg: FeaturesConfig
    rcfg: RankerConfig
    seed: int
    folds: tuple[str, ...]  # the training folds
    n_users: int = 0  # users of the catalogue (the test fold's pair context)
    # the items' content vectors (item_vectors): the same for every fold, computed once in
    # the stage's process (sent to the workers with each block, like the rest of the job)
    content: sp.csr_matrix | None = None


def fold_lists(
    job: ListsJob, fold_k: tuple[int, str]
) -> tuple[pd.DataFrame, list[str], np.ndarray, np.ndarray, int, bool]:
    """One training fold's part of :func:`training_lists` (one block of the engine): its
    learning columns, every described column's name, labels, list ids, the lists left out
    for having no positive, and whether its negatives were sampled."""
    k, name = fold_k
    rcfg = job.rcfg
    fold = load_fold(job.split, name)
    pairs = candidates(fold, job.blend, rcfg)
    y = labels(pairs, fold.targets)
    keep, without = training_rows(pairs, y, None, job.seed + k)
    lists = int(pairs.loc[keep, "user_idx"].nunique())
    positives = int(y[keep].sum())
    rows = int(keep.sum())
    cap = negatives_cap(rcfg, lists=lists, positives=positives, rows=rows, folds=len(job.folds))
    sampled = False
    if cap is not None:
        keep, _ = training_rows(pairs, y, cap, job.seed + k)
        if int(keep.sum()) < rows:
            sampled = True
            log.info("%s: at most %d negatives kept a list (ranker.train_*)", name, cap)
    # features only for the rows learnt from: they are most of the stage's cost
    kept = pairs[keep].reset_index(drop=True)
    df = describe(fold, kept, job.features, job.items, job.cfg, job.content)
    columns = list(df.columns)
    # every fold selects from its own columns; training_lists checks they are the same
    feats = select_features(columns, rcfg)
    return (
        learning_columns(df, feats, rcfg),
        columns,
        labels(df, fold.targets),
        df["user_idx"].to_numpy(np.int64) + k * LIST_STRIDE,
        without,
        sampled,
    )


Lists = tuple[pd.DataFrame, list[str], np.ndarray, np.ndarray, int, int]
"""What :func:`training_lists` gives: the stacked learning columns, the features, labels,
list ids, lists left out, sampled folds."""

TEST = "test"


def training_lists(
    job: ListsJob, test_into: Path | None = None
) -> tuple[Lists, tuple[list[str], int] | None]:
    """The pairs the ranker learns from: of every fold of ``job.folds``, the lists with a
    positive (and of those the rows :func:`recpipe.ranking.training_rows` keeps), described
    and labelled with that fold's targets, stacked (only what training reads:
    :func:`~recpipe.ranking.learning_columns`); the features; with each row's list id (fold
    number times a stride above every user index, plus the user), so a user's lists of
    different folds stay apart; how many lists were left out for having no positive; and
    how many folds were sampled (``ranker.train_max_rows``, ``train_many_lists``,
    ``train_negatives``). The folds are independent blocks, described side by side in
    worker processes where :mod:`recpipe.engine` says.

    With ``test_into`` (a scratch folder), the test fold is described in the same pool,
    into that folder (:func:`describe_test_into`), and its described columns and number
    of blocks come second; None otherwise."""
    folds = job.folds
    blocks = [*([(-1, TEST)] if test_into is not None else []), *enumerate(folds)]
    parts = run_folds(
        partial(fold_block, job, test_into), blocks, history_events(job.split), "folds"
    )
    test_part = parts.pop(0) if test_into is not None else None
    columns = parts[0][1]
    feats = select_features(columns, job.rcfg)
    for name, part in zip(folds, parts, strict=True):
        check_columns(name, part[1], feats, job)
    frames, _, ys, queries, without, sampled = zip(*parts, strict=True)
    del parts
    lists = (
        pd.concat(frames, ignore_index=True),
        feats,
        np.concatenate(ys).astype(np.float32),
        np.concatenate(queries),
        sum(without),
        sum(sampled),
    )
    return lists, test_part


def described_test(job: ListsJob) -> Iterator[pd.DataFrame]:
    """The test fold's candidates (:func:`candidate_blocks`) described with every feature,
    one block of ``ranker.block_users`` users at a time; the similarity features of many
    blocks are computed at once (:func:`~recpipe.features.pairs.similarities_by_block`:
    each block alone would repeat nearly the whole item x item product on a large fold)."""
    test = load_fold(job.split, TEST)
    uf = pd.read_parquet(job.features / TEST / "users.parquet")
    itf = pd.read_parquet(job.features / TEST / "items.parquet")
    now = history_now(test.history)
    context = pair_context(test.history, job.items, now, job.cfg, job.n_users, content=job.content)
    shared = similarities_by_block(block_keys(test, job.blend, job.rcfg), context)
    for similarities, block in zip(
        shared, candidate_blocks(test, job.blend, job.rcfg), strict=True
    ):
        yield describe_block(block, uf, itf, context, similarities)


def describe_test_into(job: ListsJob, scratch: Path) -> tuple[list[str], int]:
    """:func:`described_test`, each block's :func:`~recpipe.ranking.learning_columns` written
    to ``scratch`` as ``<k>.arrow`` (uncompressed Arrow: read back at once) for the ranker to
    score once trained; every described column's name and the number of blocks."""
    columns: list[str] = []
    count = 0
    for count, df in enumerate(described_test(job), start=1):
        columns = list(df.columns)
        block = learning_columns(df, select_features(columns, job.rcfg), job.rcfg)
        feather.write_feather(block, scratch / f"{count - 1}.arrow", compression="uncompressed")
    return columns, count


def fold_block(
    job: ListsJob, scratch: Path | None, fold_k: tuple[int, str]
) -> tuple[pd.DataFrame, list[str], np.ndarray, np.ndarray, int, bool] | tuple[list[str], int]:
    """One block of the engine: a training fold's :func:`fold_lists`, or the test fold
    described into ``scratch`` (:func:`describe_test_into`: beside the training folds, while
    the ranker cannot score it yet)."""
    if fold_k[1] == TEST:
        assert scratch is not None
        return describe_test_into(job, scratch)
    return fold_lists(job, fold_k)


def check_columns(fold: str, columns: list[str], feats: list[str], job: ListsJob) -> None:
    """Refuse a fold whose described columns give other features than ``feats`` (those of
    the first training fold), naming a column at fault and the file it comes from."""
    mine = select_features(columns, job.rcfg)
    if mine == feats:
        return
    missing = [c for c in feats if c not in mine]
    if missing:
        column, what = missing[0], "lack the ranker feature"
    else:
        extra = [c for c in mine if c not in feats]
        moved = next((a for a, b in zip(mine, feats, strict=False) if a != b), mine[-1])
        column = extra[0] if extra else moved
        what = "have a feature the training folds lack:" if extra else "have, out of place,"
    tables = {"u_": "users.parquet", "i_": "items.parquet"}
    source = (
        job.features / fold / tables[column[:2]]
        if column[:2] in tables
        else job.blend / f"{fold}.parquet"
    )
    raise DataError(
        f"fold {fold}: its candidates {what} {column!r} (blend or features written by "
        "different runs?); rerun the pipeline",
        file=str(source),
        column=column,
    )


def run(args: argparse.Namespace) -> None:
    cfg = load_params("ranker", RankerConfig, args.params)
    fcfg = load_params("features", FeaturesConfig, args.params)
    seed = load_params("seed", int, args.params)
    items, users = load_catalogue(args.prepared)
    blend_dir, features_dir = Path(args.blend), Path(args.features)
    check_cut(blend_dir, cfg.rerank_top)

    train_folds = ("valid", *ranker_folds(args.split))
    job = ListsJob(
        Path(args.split),
        blend_dir,
        features_dir,
        items,
        fcfg,
        cfg,
        seed,
        train_folds,
        len(users),
        item_vectors(items),
    )
    with scratch_beside(Path(args.out) / "test_recs.parquet") as scratch:
        # With workers, the test fold is described beside the training folds (it needs no
        # ranker), into scratch files scored once the ranker is trained; in one process it
        # is described after training, block by block, as it is scored.
        beside = workers(history_events(args.split)) > 1
        lists, test_part = training_lists(job, scratch if beside else None)
        train_df, feats, y, queries, dropped, sampled = lists
        del lists
        if test_part is not None and test_part[1]:  # before training: a bad fold stops here
            check_columns(TEST, test_part[0], feats, job)
        result = train(train_df, y, cfg, seed, queries, feats)
        log.info(
            "trained on %d lists of %d folds (%d without a positive left out), %d trees, "
            "holdout ndcg@%d %.4f",
            result.lists_used,
            len(train_folds),
            dropped + result.lists_without_positive,
            result.best_iteration,
            cfg.eval_at,
            result.holdout_ndcg,
        )
        del train_df

        # The test fold, one block of users at a time: memory bounded by ranker.block_users.
        if test_part is not None:
            described: Iterator[pd.DataFrame] = (
                feather.read_feather(scratch / f"{k}.arrow") for k in range(test_part[1])
            )
        else:
            described = described_test(job)
        ranked = []
        for k, df in enumerate(described):
            if k == 0 and test_part is None:
                check_columns(TEST, list(df.columns), feats, job)
            ranked.append(rank_described(df, result, cfg.n))
        recs = concat_recs(ranked)

    model_dir = Path(args.model_dir)
    with atomic_path(model_dir / "model.json") as tmp:
        tmp.write_bytes(bytes(result.model.get_booster().save_raw(raw_format="json")))
    write_json(importance(result), model_dir / "importance.json")
    # what applying model.json needs besides it: the feature columns and the starting score
    write_json(
        {
            "features": result.features,
            "base_margin": cfg.base_margin,
            "base_margin_scale": cfg.base_margin_scale,
            "rerank_top": cfg.rerank_top,
        },
        model_dir / "scoring.json",
    )
    write_parquet(recs, Path(args.out) / "test_recs.parquet")
    write_json(
        {
            "features": len(result.features),
            "trees": result.best_iteration,
            "train_folds": len(train_folds),
            "lists_trained": result.lists_used,
            "lists_without_positive": dropped + result.lists_without_positive,
            "train_pairs": int(len(y)),
            # folds whose negatives were sampled: the holdout NDCG then scores sampled lists
            "train_sampled_folds": sampled,
            "train_positives": int(y.sum()),
            f"holdout_ndcg@{cfg.eval_at}": round(result.holdout_ndcg, 4),
        },
        args.summary,
    )


def main(argv: list[str] | None = None) -> int:
    return run_stage(
        run,
        argv,
        name="rank",
        doc=__doc__,
        paths=("split", "prepared", "blend", "features", "model-dir", "out", "summary"),
    )


if __name__ == "__main__":
    sys.exit(main())
