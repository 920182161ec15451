"""Leakage-free splits of the interaction log into ``train``, ``valid`` and ``test``.

Every method partitions each user's events by time (or, for ``random``, by item), and the
*targets* of a part are the (user, item) pairs that first appear in it: items the user
already had in the history before it are not targets, because recommendations exclude seen
items and a target the model has already been shown would only measure memory.

- ``temporal`` (default): per user, distinct items are ordered by their first event (ties
  in time by a hash of the pair seeded by ``seed``, so which of several items stamped with
  one second becomes the target is random, not decided by how item ids sort); the last
  ``n_test`` items are test targets and the ``n_valid`` before them valid targets. The
  user's events from the first event of the first valid (test) item on go to ``valid``
  (``test``); an event in the same second as that first event
  goes with it only when its item comes at or after it in the order. So no history event is
  later than a target it is used to predict, funnel events (view, click, cart) of a target
  item never leak into its history, and every user long enough gets exactly ``n_valid``
  and ``n_test`` targets even when a rating log stamps many items with one second.
- ``global_time``: one cut-off time for valid and one for test (quantiles of all timestamps
  or absolute seconds). Users first seen after a cut-off are cold users.
- ``random``: per user, distinct items are shuffled with the seed and cut at the ratios
  (e.g. 0.6/0.15/0.25); all events of a (user, item) pair go to the same part. Used to
  compare with published tables that use random per-user splits.

Folds (docs/architecture.md): the valid fold learns from ``train`` and predicts valid
targets; the test fold learns from ``train + valid`` and predicts test targets. With
``ranker_folds`` > 0 the split also carves that many extra folds out of the test fold's
history (see :func:`ranker_fold_roles`): each is a history and targets shaped like the
valid fold, so the ranker can learn from several folds' labels instead of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from recpipe.config import Config
from recpipe.errors import DataError
from recpipe.hashing import tie_key


class Relevance(Config):
    """Which target pairs count as relevant (hits) for top-N metrics and ranker labels."""

    min_rating: float | None = Field(
        None, description="a rated pair is relevant when its best rating >= this; None: any"
    )
    events: list[str] | None = Field(
        None, description="pairs with one of these events are relevant; None: any event"
    )


class KCore(Config):
    """Iterative k-core filter on distinct (user, item) pairs, applied before splitting."""

    user: int = Field(0, ge=0, description="keep users with at least this many items")
    item: int = Field(0, ge=0, description="keep items with at least this many users")


class _SplitBase(Config):
    kcore: KCore = KCore()
    relevance: Relevance = Relevance()
    ranker_folds: int = Field(
        0,
        ge=0,
        description="extra folds the ranker also learns from, carved from the test fold's "
        "history the way valid is carved from the whole log (random: other seeded draws of "
        "the valid share; temporal and global_time: earlier cut-offs, each fold predicting "
        "the period just before the next one's); more labelled lists for the ranker at the "
        "cost of fitting every candidate model once more per fold. The most there will be: "
        "see ranker_fold_users",
    )
    ranker_fold_users: int | None = Field(
        18_000,
        ge=1,
        description="extra folds are only carved while the ranker's folds (valid plus the "
        "extra ones) hold fewer target users than this: ceil(ranker_fold_users / valid "
        "target users) - 1 of them, at most ranker_folds. Small data gets every extra fold, "
        "large data (enough lists in the valid fold alone) none, so the candidate models "
        "are not fitted again for lists the ranker does not need; null: always ranker_folds",
    )


class TemporalSplit(_SplitBase):
    """Per-user leave-last-n by time, counted in distinct new items."""

    method: Literal["temporal"] = "temporal"
    n_valid: int = Field(1, ge=0, description="valid targets per user (distinct items)")
    n_test: int = Field(1, ge=1, description="test targets per user (distinct items)")
    min_history: int = Field(
        1, ge=1, description="distinct items a user must keep in train to get targets"
    )


class GlobalTimeSplit(_SplitBase):
    """One cut-off time for all users."""

    method: Literal["global_time"] = "global_time"
    cutoff: Literal["quantile", "timestamp"] = Field(
        "quantile", description="whether valid_start/test_start are quantiles or unix seconds"
    )
    valid_start: float = Field(0.8, description="start of the valid period")
    test_start: float = Field(0.9, description="start of the test period")

    @model_validator(mode="after")
    def _ordered(self) -> GlobalTimeSplit:
        if self.valid_start > self.test_start:
            raise ValueError("valid_start must not be after test_start")
        if self.cutoff == "quantile" and not 0 < self.valid_start <= self.test_start < 1:
            raise ValueError("quantile cut-offs must satisfy 0 < valid_start <= test_start < 1")
        return self


class RandomSplit(_SplitBase):
    """Per-user random ratios over distinct items (train, valid, test)."""

    method: Literal["random"] = "random"
    ratios: tuple[float, float, float] = Field(
        (0.6, 0.15, 0.25), description="shares of each user's items in train, valid, test"
    )
    min_history: int = Field(1, ge=1, description="items every user keeps in train")

    @model_validator(mode="after")
    def _sum_to_one(self) -> RandomSplit:
        if any(r < 0 for r in self.ratios) or abs(sum(self.ratios) - 1) > 1e-9:
            raise ValueError(f"ratios must be >= 0 and sum to 1, got {self.ratios}")
        if self.ranker_folds and (self.ratios[0] <= 0 or self.ratios[1] + self.ratios[2] <= 0):
            raise ValueError("ranker_folds needs a train ratio > 0 and a valid or test ratio > 0")
        return self


SplitConfig = Annotated[
    TemporalSplit | GlobalTimeSplit | RandomSplit, Field(discriminator="method")
]


@dataclass(frozen=True)
class Split:
    """The three event partitions, the targets of the two folds, and the extra ranker folds.

    ``ranker_roles`` has one row per event of ``train`` then ``valid`` (the test fold's
    history, in that order) and one column per extra ranker fold: 0 where the event is in
    that fold's history, 1 in its target period, 2 hidden from it (later than its period).
    ``ranker_targets[k]`` are the targets of extra fold ``k`` (like ``valid_targets``).
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    valid_targets: pd.DataFrame
    test_targets: pd.DataFrame
    ranker_roles: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int8))
    ranker_targets: tuple[pd.DataFrame, ...] = ()


def kcore_filter(inter: pd.DataFrame, kc: KCore) -> pd.DataFrame:
    """Drop users with fewer than ``kc.user`` items and items with fewer than ``kc.item`` users,
    repeatedly, until both hold (counts over distinct pairs)."""
    if kc.user <= 1 and kc.item <= 1:
        return inter
    pairs = inter[["user_idx", "item_idx"]].drop_duplicates()
    while True:
        uc = pairs.groupby("user_idx").size()
        ic = pairs.groupby("item_idx").size()
        keep = pairs["user_idx"].map(uc).ge(kc.user) & pairs["item_idx"].map(ic).ge(kc.item)
        if keep.all():
            break
        pairs = pairs[keep]
    users, items = pairs["user_idx"].unique(), pairs["item_idx"].unique()
    return inter[inter["user_idx"].isin(users) & inter["item_idx"].isin(items)]


def _first_events(inter: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One row per (user, item) with its first timestamp, ordered within each user by time,
    ties in time by a seeded hash of the pair (never by how item ids sort)."""
    first = (
        inter.groupby(["user_idx", "item_idx"], sort=False, observed=True)["timestamp"]
        .min()
        .reset_index()
    )
    first["_tie"] = tie_key(first["user_idx"].to_numpy(), first["item_idx"].to_numpy(), seed)
    first = first.sort_values(["user_idx", "timestamp", "_tie"], kind="stable").drop(columns="_tie")
    first["pos"] = first.groupby("user_idx").cumcount()
    first["n"] = first.groupby("user_idx")["item_idx"].transform("size")
    return first


def _temporal_parts(inter: pd.DataFrame, cfg: TemporalSplit, seed: int) -> np.ndarray:
    first = _first_events(inter, seed)
    # Users too short for both folds still get a test target when they can afford one.
    n = first["n"].to_numpy()
    n_test = np.where(n >= cfg.n_test + cfg.min_history, cfg.n_test, 0)
    n_valid = np.where(n >= cfg.n_test + cfg.n_valid + cfg.min_history, cfg.n_valid, 0)
    pos_from_end = n - 1 - first["pos"].to_numpy()
    first["start_test"] = pos_from_end == n_test - 1
    first["start_valid"] = (pos_from_end == n_test + n_valid - 1) & (n_valid > 0)
    # A period starts at its first target's (timestamp, position in the user's sequence):
    # items first seen in the same second (common in rating logs) are cut by their position,
    # so n_test / n_valid count items exactly and a valid period is never empty by a tie.
    starts_test = first[first["start_test"]].set_index("user_idx")
    starts_valid = first[first["start_valid"]].set_index("user_idx")
    # Users without test targets keep everything in train (their cut is "never"); users
    # without valid targets have an empty valid period (it starts at their test cut).
    never = np.iinfo(np.int64).max
    users = inter["user_idx"].to_numpy()
    tt = _lookup(starts_test["timestamp"], users, never)
    pt = _lookup(starts_test["pos"], users, never)
    tv = _lookup(starts_valid["timestamp"], users, never)
    pv = _lookup(starts_valid["pos"], users, never)
    no_valid = tv == never
    tv, pv = np.where(no_valid, tt, tv), np.where(no_valid, pt, pv)
    # Each event's pair position, through one int64 key (a MultiIndex reindex of 10M events
    # takes several times the memory).
    width = int(inter["item_idx"].max()) + 1 if len(inter) else 1
    pair_key = first["user_idx"].to_numpy(np.int64) * width + first["item_idx"].to_numpy()
    order = np.argsort(pair_key)
    event_key = inter["user_idx"].to_numpy(np.int64) * width + inter["item_idx"].to_numpy()
    pos = first["pos"].to_numpy()[order][np.searchsorted(pair_key[order], event_key)]
    ts = inter["timestamp"].to_numpy()
    in_test = (ts > tt) | ((ts == tt) & (pos >= pt))
    in_valid = (ts > tv) | ((ts == tv) & (pos >= pv))
    return np.where(in_test, 2, np.where(in_valid, 1, 0))


def _lookup(values: pd.Series, keys: np.ndarray, default: int) -> np.ndarray:
    """``values[k]`` for each key as int64, ``default`` where a key is absent."""
    out = np.full(len(keys), default, dtype=np.int64)
    pos = values.index.get_indexer(keys)
    found = pos >= 0
    out[found] = values.to_numpy(np.int64)[pos[found]]
    return out


def _global_cutoffs(inter: pd.DataFrame, cfg: GlobalTimeSplit) -> tuple[int, int]:
    """The valid and test start times in seconds."""
    if cfg.cutoff == "quantile":
        ts = inter["timestamp"].to_numpy()
        tv, tt = np.quantile(ts, [cfg.valid_start, cfg.test_start], method="higher")
        return int(tv), int(tt)
    return int(cfg.valid_start), int(cfg.test_start)


def _global_parts(inter: pd.DataFrame, cfg: GlobalTimeSplit) -> np.ndarray:
    ts = inter["timestamp"].to_numpy()
    tv, tt = _global_cutoffs(inter, cfg)
    return np.where(ts >= tt, 2, np.where(ts >= tv, 1, 0))


def _random_parts(inter: pd.DataFrame, cfg: RandomSplit, seed: int) -> np.ndarray:
    pairs = inter[["user_idx", "item_idx"]].drop_duplicates().sort_values(["user_idx", "item_idx"])
    rng = np.random.default_rng(seed)
    pairs = pairs.assign(key=rng.random(len(pairs))).sort_values(["user_idx", "key"])
    pos = pairs.groupby("user_idx").cumcount().to_numpy()
    n = pairs.groupby("user_idx")["item_idx"].transform("size").to_numpy()
    r_train, r_valid, _ = cfg.ratios
    # Train and valid counts are rounded; test takes the rest, so a user's counts sum to n.
    n_train = np.maximum(np.round(n * r_train).astype(int), np.minimum(cfg.min_history, n))
    n_valid = np.minimum(np.round(n * r_valid).astype(int), n - n_train)
    part = np.where(pos < n_train, 0, np.where(pos < n_train + n_valid, 1, 2))
    key = pd.Series(part, index=pd.MultiIndex.from_arrays([pairs["user_idx"], pairs["item_idx"]]))
    idx = pd.MultiIndex.from_arrays([inter["user_idx"], inter["item_idx"]])
    return key.reindex(idx).to_numpy()


def targets(history: pd.DataFrame, period: pd.DataFrame, rel: Relevance) -> pd.DataFrame:
    """The (user, item) pairs that first appear in ``period`` given ``history``, one row each.

    Columns: ``user_idx``, ``item_idx``, ``user_id``, ``item_id``, ``rating`` (the pair's
    highest rating, NaN if unrated), ``weight`` (summed), ``timestamp`` (first event in the
    period), ``relevant`` (bool, by the relevance rule).
    """
    seen = pd.MultiIndex.from_frame(history[["user_idx", "item_idx"]].drop_duplicates())
    key = pd.MultiIndex.from_frame(period[["user_idx", "item_idx"]])
    new = period[~key.isin(seen)]
    if rel.events is not None:
        new = new.assign(_rel_event=new["event"].astype(str).isin(rel.events))
    else:
        new = new.assign(_rel_event=True)
    g = new.groupby(["user_idx", "item_idx"], sort=True, observed=True)
    out = g.agg(
        user_id=("user_id", "first"),
        item_id=("item_id", "first"),
        rating=("rating", "max"),
        weight=("weight", "sum"),
        timestamp=("timestamp", "min"),
        _rel_event=("_rel_event", "any"),
    ).reset_index()
    relevant = out["_rel_event"].to_numpy(bool).copy()
    if rel.min_rating is not None:
        # Unrated pairs (implicit events) stay relevant; rated ones must reach the threshold.
        r = out["rating"].to_numpy()
        relevant &= np.isnan(r) | (r >= rel.min_rating)
    out["relevant"] = relevant
    return out.drop(columns="_rel_event")


def ranker_fold_roles(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    cfg: TemporalSplit | GlobalTimeSplit | RandomSplit,
    seed: int,
    cutoffs: tuple[int, int] | None = None,
) -> np.ndarray:
    """The role of every event of ``train`` then ``valid`` in each of ``cfg.ranker_folds``
    extra ranker folds (see :class:`Split`), int8 of shape (events, folds).

    - ``random``: fold ``k`` draws the valid share of every user's items again from the
      test fold's history (seed ``seed + 1 + k``), so it has the valid fold's proportions
      (e.g. 60% history, 15% targets of the whole log); draws overlap, like bootstrap bags.
    - ``temporal``: fold 1 splits the valid fold's history (``train``) the way valid was
      split off, its last ``n_valid`` items per user (``n_test`` when ``n_valid`` is 0)
      becoming targets; fold ``k + 1`` splits fold ``k``'s history again. ``valid`` events,
      and each fold's later periods, are hidden from it.
    - ``global_time``: fold ``k`` is the window of the valid period's length that ends
      where fold ``k - 1``'s (for fold 1, the valid period) starts. ``cutoffs`` are the
      valid and test start times.

    No fold's history or targets contain any event of the valid fold's targets' period or
    later, except under ``random``, where there is no time order to respect and the valid
    items may be drawn into an extra fold's targets or history.
    """
    n_folds = cfg.ranker_folds
    history = pd.concat([train, valid], ignore_index=True)
    roles = np.zeros((len(history), n_folds), dtype=np.int8)
    if isinstance(cfg, RandomSplit):
        r_train, r_valid, r_test = cfg.ratios
        share = r_valid if r_valid > 0 else r_test
        draw = RandomSplit(
            ratios=(r_train / (r_train + share), 0.0, share / (r_train + share)),
            min_history=cfg.min_history,
        )
        for k in range(n_folds):
            roles[:, k] = np.where(_random_parts(history, draw, seed + 1 + k) == 2, 1, 0)
        return roles
    if isinstance(cfg, TemporalSplit):
        step = TemporalSplit(
            n_valid=0, n_test=cfg.n_valid or cfg.n_test, min_history=cfg.min_history
        )
        active = np.r_[np.ones(len(train), bool), np.zeros(len(valid), bool)]
        for k in range(n_folds):
            roles[:, k] = 2
            part = _temporal_parts(history[active], step, seed)
            roles[active, k] = np.where(part == 2, 1, 0)
            active &= roles[:, k] == 0
        return roles
    if cutoffs is None:
        raise ValueError("global_time ranker folds need the valid and test cut-offs")
    tv, tt = cutoffs
    width = max(tt - tv, 1)
    ts = history["timestamp"].to_numpy()
    for k in range(n_folds):
        start, end = tv - (k + 1) * width, tv - k * width
        roles[:, k] = np.where(ts >= end, 2, np.where(ts >= start, 1, 0))
    return roles


def relevant_users(targets: pd.DataFrame) -> int:
    """How many users have at least one relevant target."""
    return int(targets.loc[targets["relevant"], "user_idx"].nunique())


def extra_fold_count(cfg: TemporalSplit | GlobalTimeSplit | RandomSplit, valid_users: int) -> int:
    """How many extra ranker folds to carve when the valid fold has ``valid_users`` target
    users: ``cfg.ranker_folds``, fewer when ``cfg.ranker_fold_users`` is reached sooner."""
    if cfg.ranker_fold_users is None or valid_users == 0:
        return cfg.ranker_folds
    return min(cfg.ranker_folds, max(0, -(-cfg.ranker_fold_users // valid_users) - 1))


def split(
    inter: pd.DataFrame, cfg: TemporalSplit | GlobalTimeSplit | RandomSplit, seed: int
) -> Split:
    """Split canonical interactions by ``cfg``; deterministic for a given ``seed``."""
    inter = kcore_filter(inter, cfg.kcore)
    cutoffs = None
    if isinstance(cfg, TemporalSplit):
        part = _temporal_parts(inter, cfg, seed)
    elif isinstance(cfg, GlobalTimeSplit):
        part = _global_parts(inter, cfg)
        cutoffs = _global_cutoffs(inter, cfg)
    else:
        part = _random_parts(inter, cfg, seed)
    train, valid, test = (inter[part == p].reset_index(drop=True) for p in (0, 1, 2))
    history_test = pd.concat([train, valid], ignore_index=True)
    valid_targets = targets(train, valid, cfg.relevance)
    n_extra = extra_fold_count(cfg, relevant_users(valid_targets))
    roles = ranker_fold_roles(
        train, valid, cfg.model_copy(update={"ranker_folds": n_extra}), seed, cutoffs
    )
    extra = tuple(
        targets(history_test[roles[:, k] == 0], history_test[roles[:, k] == 1], cfg.relevance)
        for k in range(roles.shape[1])
    )
    return Split(
        train=train,
        valid=valid,
        test=test,
        valid_targets=valid_targets,
        test_targets=targets(history_test, test, cfg.relevance),
        ranker_roles=roles,
        ranker_targets=extra,
    )


def split_summary(s: Split) -> dict:
    """Counts that describe a split (a DVC metrics file)."""

    def part(df: pd.DataFrame) -> dict:
        return {"events": len(df), "users": int(df["user_idx"].nunique())}

    def tgt(df: pd.DataFrame) -> dict:
        return {
            "pairs": len(df),
            "users": int(df["user_idx"].nunique()),
            "relevant": int(df["relevant"].sum()),
        }

    return {
        "train": part(s.train),
        "valid": part(s.valid),
        "test": part(s.test),
        "valid_targets": tgt(s.valid_targets),
        "test_targets": tgt(s.test_targets),
        "ranker_folds": [tgt(t) for t in s.ranker_targets],
    }


def check_targets(s: Split, file: str) -> None:
    """A :class:`DataError` naming ``file`` when the split leaves nothing to learn or measure:
    no relevant test target, or fewer than two users with a relevant valid target (the blend
    search and the ranker learn from those). Data where every user has a single item, say,
    would otherwise run on with empty candidate lists and fail far from the cause."""
    problems = []
    for name, targets, least in (("test", s.test_targets, 1), ("valid", s.valid_targets, 2)):
        users = relevant_users(targets)
        if users < least:
            problems.append(
                f"{users} users with a relevant {name} target (at least {least} needed)"
            )
    if problems:
        items = pd.concat([s.train, s.valid, s.test]).groupby("user_idx")["item_idx"].nunique()
        raise DataError(
            "the split leaves nothing to learn from or evaluate: "
            + "; ".join(problems)
            + f". Of {len(items)} users, {int((items >= 3).sum())} have 3 or more distinct "
            "items (a user needs its history plus a valid and a test target): use more data, "
            "or lower split.min_history / split.kcore, or check split.relevance",
            file=file,
        )
