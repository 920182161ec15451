"""Splits are leakage-free partitions, deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recpipe.errors import DataError
from recpipe.splitting import (
    GlobalTimeSplit,
    KCore,
    RandomSplit,
    Relevance,
    TemporalSplit,
    check_targets,
    extra_fold_count,
    kcore_filter,
    split,
)
from tests.conftest import make_interactions

CONFIGS = [
    TemporalSplit(n_valid=1, n_test=2),
    GlobalTimeSplit(valid_start=0.7, test_start=0.85),
    RandomSplit(ratios=(0.6, 0.15, 0.25)),
]


def key(df: pd.DataFrame) -> set[tuple]:
    return set(zip(df["user_idx"], df["item_idx"], df["timestamp"], df["event"], strict=True))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.method)
def test_parts_are_disjoint_and_complete(random_log: pd.DataFrame, cfg) -> None:
    s = split(random_log, cfg, seed=3)
    assert len(s.train) + len(s.valid) + len(s.test) == len(random_log)
    idx = pd.concat([s.train, s.valid, s.test])
    assert not idx.duplicated().any()
    assert key(idx) == key(random_log)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.method)
def test_targets_are_new_to_their_history(random_log: pd.DataFrame, cfg) -> None:
    s = split(random_log, cfg, seed=3)
    seen_valid = set(zip(s.train["user_idx"], s.train["item_idx"], strict=True))
    hist_test = pd.concat([s.train, s.valid])
    seen_test = set(zip(hist_test["user_idx"], hist_test["item_idx"], strict=True))
    vt = set(zip(s.valid_targets["user_idx"], s.valid_targets["item_idx"], strict=True))
    tt = set(zip(s.test_targets["user_idx"], s.test_targets["item_idx"], strict=True))
    assert vt and tt
    assert not vt & seen_valid
    assert not tt & seen_test


@pytest.mark.parametrize("cfg", CONFIGS[:2], ids=lambda c: c.method)
def test_no_target_precedes_its_history(random_log: pd.DataFrame, cfg) -> None:
    s = split(random_log, cfg, seed=3)
    last_train = s.train.groupby("user_idx")["timestamp"].max()
    hist_test = pd.concat([s.train, s.valid]).groupby("user_idx")["timestamp"].max()
    for part, hist in ((s.valid, last_train), (s.test, hist_test)):
        first = part.groupby("user_idx")["timestamp"].min()
        both = first.index.intersection(hist.index)
        assert (first[both] >= hist[both]).all()


def test_temporal_counts_distinct_items_and_keeps_funnel_out_of_history() -> None:
    # User 1 views, clicks and buys item c at the end: all three events are test, so the
    # history never reveals the target. Item b is the valid target.
    rows = [
        (1, "a", 1),
        (1, "b", 2),
        (1, "a", 3),
        (1, "c", 4, 0, "view"),
        (1, "c", 5, 0, "click"),
        (1, "c", 6, 0, "purchase"),
    ]
    rows = [r if len(r) > 3 else (*r, 0, "view") for r in rows]
    inter = make_interactions(rows)
    s = split(inter, TemporalSplit(n_valid=1, n_test=1), seed=0)
    items = dict(zip(inter["item_idx"], inter["item_id"], strict=False))
    assert [items[i] for i in s.test_targets["item_idx"]] == ["c"]
    assert [items[i] for i in s.valid_targets["item_idx"]] == ["b"]
    assert len(s.test) == 3 and "c" not in {items[i] for i in s.train["item_idx"]}
    # The repeat of a at t=3 happens after b's first event: it belongs to the valid period
    # but is not a target (a was already seen).
    assert sorted(s.valid["timestamp"]) == [2, 3]


def test_temporal_items_in_one_second_are_cut_by_position() -> None:
    # Regression: rating logs stamp several items with one second. Cutting by time alone
    # sent every tied item to test and left the valid period empty: 415 of ML-100k's 943
    # users had no valid target and the test fold had 2,148 targets instead of 943.
    inter = make_interactions([(1, "a", 1), (1, "b", 5), (1, "c", 5), (1, "d", 5)])
    items = dict(zip(inter["item_idx"], inter["item_id"], strict=False))
    s = split(inter, TemporalSplit(n_valid=1, n_test=1), seed=0)
    test = [items[i] for i in s.test_targets["item_idx"]]
    valid = [items[i] for i in s.valid_targets["item_idx"]]
    train = sorted(items[i] for i in s.train["item_idx"])
    assert len(test) == 1 and len(valid) == 1 and len(train) == 2 and "a" in train
    assert sorted(test + valid + train) == ["a", "b", "c", "d"]
    # a tied history event is not later than the target: equal seconds are allowed
    assert s.train["timestamp"].max() <= s.valid_targets["timestamp"].min()
    two = split(inter, TemporalSplit(n_valid=2, n_test=1), seed=0)
    assert len(two.valid_targets) == 2 and len(two.test_targets) == 1


def test_temporal_ties_in_time_are_broken_at_random_not_by_item_id() -> None:
    # Regression: ties went by item index, so among items stamped with one second the test
    # target was always the one whose id sorts last, and a sequence model could learn that.
    rows = [(u, i, 7) for u in range(300) for i in ("a", "b", "c")]
    inter = make_interactions(rows)
    items = dict(zip(inter["item_idx"], inter["item_id"], strict=False))
    s = split(inter, TemporalSplit(n_valid=1, n_test=1, min_history=1), seed=0)
    share = (s.test_targets["item_idx"].map(items) == "c").mean()
    assert 0.2 < share < 0.47
    again = split(inter, TemporalSplit(n_valid=1, n_test=1, min_history=1), seed=0)
    pd.testing.assert_frame_equal(s.test_targets, again.test_targets)
    other = split(inter, TemporalSplit(n_valid=1, n_test=1, min_history=1), seed=1)
    assert not s.test_targets["item_idx"].equals(other.test_targets["item_idx"])


def test_short_users_keep_everything_in_train() -> None:
    inter = make_interactions([(1, "a", 1), (2, "a", 1), (2, "b", 2), (2, "c", 3)])
    s = split(inter, TemporalSplit(n_valid=1, n_test=1, min_history=1), seed=0)
    u1 = inter.loc[inter["user_id"] == "1", "user_idx"].iloc[0]
    assert (s.train["user_idx"] == u1).sum() == 1
    assert u1 not in set(s.test_targets["user_idx"])
    assert len(s.test_targets) == 1 and len(s.valid_targets) == 1


def test_random_ratios_per_user(random_log: pd.DataFrame) -> None:
    s = split(random_log, RandomSplit(ratios=(0.6, 0.15, 0.25)), seed=1)
    n_items = random_log.groupby("user_idx")["item_idx"].nunique()
    n_test = s.test_targets.groupby("user_idx").size().reindex(n_items.index, fill_value=0)
    share = (n_test / n_items).mean()
    assert 0.2 < share < 0.3


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.method)
def test_same_seed_same_split_other_seed_differs_for_random(random_log, cfg) -> None:
    a, b = split(random_log, cfg, seed=5), split(random_log, cfg, seed=5)
    pd.testing.assert_frame_equal(a.test_targets, b.test_targets)
    pd.testing.assert_frame_equal(a.train, b.train)
    c = split(random_log, cfg, seed=6)
    if cfg.method == "random":
        assert not a.test_targets[["user_idx", "item_idx"]].equals(
            c.test_targets[["user_idx", "item_idx"]]
        )


def test_relevance_rule() -> None:
    rows = [(1, "a", 1, 5), (1, "b", 2, 2), (1, "c", 3, 4), (1, "d", 4, 5)]
    inter = make_interactions(rows, with_rating=True)
    s = split(inter, TemporalSplit(n_valid=0, n_test=2, relevance=Relevance(min_rating=4)), 0)
    assert s.test_targets["relevant"].tolist() == [True, True]
    s = split(inter, RandomSplit(ratios=(0.25, 0.0, 0.75), relevance=Relevance(min_rating=4)), 0)
    by_item = dict(zip(s.test_targets["rating"], s.test_targets["relevant"], strict=True))
    assert all(rel == (r >= 4) for r, rel in by_item.items())
    s = split(inter, TemporalSplit(n_valid=0, n_test=2, relevance=Relevance(events=["buy"])), 0)
    assert not s.test_targets["relevant"].any()


def test_kcore_iterates_to_a_fixed_point() -> None:
    # Item z has 1 user; dropping it leaves user 3 with 1 item, which then goes too.
    rows = [(1, "x", 1), (1, "y", 2), (2, "x", 1), (2, "y", 2), (3, "x", 1), (3, "z", 2)]
    inter = make_interactions(rows)
    out = kcore_filter(inter, KCore(user=2, item=2))
    assert set(out["user_id"]) == {"1", "2"} and set(out["item_id"]) == {"x", "y"}
    pairs = out.groupby("user_idx")["item_idx"].nunique()
    assert (pairs >= 2).all()
    assert (out.groupby("item_idx")["user_idx"].nunique() >= 2).all()
    assert np.array_equal(kcore_filter(inter, KCore()).index, inter.index)


# --------------------------------------------------------------------------- ranker folds

RANKER_CONFIGS = [c.model_copy(update={"ranker_folds": 3}) for c in CONFIGS]


def extra_fold(s, k: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(history, target period, hidden events) of extra ranker fold ``k`` (0-based)."""
    hist = pd.concat([s.train, s.valid], ignore_index=True)
    role = s.ranker_roles[:, k]
    return hist[role == 0], hist[role == 1], hist[role == 2]


def pairs(df: pd.DataFrame) -> set[tuple]:
    return set(zip(df["user_idx"], df["item_idx"], strict=True))


@pytest.mark.parametrize("cfg", RANKER_CONFIGS, ids=lambda c: c.method)
def test_ranker_folds_are_valid_like_folds_inside_the_test_history(random_log, cfg) -> None:
    s = split(random_log, cfg, seed=3)
    n_hist = len(s.train) + len(s.valid)
    assert s.ranker_roles.shape == (n_hist, 3) and s.ranker_roles.dtype == np.int8
    assert len(s.ranker_targets) == 3
    for k in range(3):
        history, period, hidden = extra_fold(s, k)
        targets = s.ranker_targets[k]
        assert len(targets) and len(history)
        # targets are the period's pairs new to the fold's history, and only those
        assert pairs(targets) == pairs(period) - pairs(history)
        assert set(targets.columns) == set(s.valid_targets.columns)
        if cfg.method == "random":
            assert hidden.empty  # no time order: everything is history or target
        else:
            # nothing of the valid period is seen, and no history event follows a target
            assert key(s.valid) <= key(hidden)
            first_target = period.groupby("user_idx")["timestamp"].min()
            last_hist = history.groupby("user_idx")["timestamp"].max()
            both = first_target.index.intersection(last_hist.index)
            assert (last_hist[both] <= first_target[both]).all()
            if cfg.method == "global_time":
                assert period["timestamp"].max() < s.valid["timestamp"].min()


def test_temporal_ranker_folds_step_back_one_valid_target_at_a_time() -> None:
    # one user, six items in time order a..f: valid = e, test = f, extra folds d, c, b
    inter = make_interactions([(1, i, t) for t, i in enumerate("abcdef", start=1)])
    s = split(inter, TemporalSplit(n_valid=1, n_test=1, ranker_folds=3), seed=0)
    items = dict(zip(inter["item_idx"], inter["item_id"], strict=True))
    got = [[items[i] for i in t["item_idx"]] for t in s.ranker_targets]
    assert got == [["d"], ["c"], ["b"]]
    history, _, _ = extra_fold(s, 2)
    assert [items[i] for i in history["item_idx"]] == ["a"]
    # a fold too deep for the user's history has no target for the user
    deep = split(inter, TemporalSplit(n_valid=1, n_test=1, ranker_folds=5), seed=0)
    assert [len(t) for t in deep.ranker_targets] == [1, 1, 1, 0, 0]


@pytest.mark.parametrize(
    ("fold_users", "valid_users", "expected"),
    [
        (None, 100, 4),  # no rule: always ranker_folds
        (18_000, 943, 4),  # the default rule: ML-100k keeps every extra fold
        (18_000, 4_499, 4),
        (18_000, 4_500, 3),
        (18_000, 6_040, 2),  # MovieLens-1M's shape
        (18_000, 9_000, 1),
        (18_000, 69_878, 0),  # 10M events
        (20_000, 943, 4),  # small data: every extra fold (capped)
        (20_000, 6_040, 3),  # ceil(20000 / 6040) = 4 folds in all
        (12_000, 6_040, 1),
        (12_000, 69_878, 0),  # the valid fold alone has enough lists
        (6_040, 6_040, 0),
        (6_041, 6_040, 1),
        (12_000, 0, 4),  # no target user at all: nothing to go by
    ],
)
def test_extra_fold_count_follows_the_rule(
    fold_users: int | None, valid_users: int, expected: int
) -> None:
    cfg = TemporalSplit(ranker_folds=4, ranker_fold_users=fold_users)
    assert extra_fold_count(cfg, valid_users) == expected


def test_ranker_fold_users_cuts_the_extra_folds_of_a_split(random_log) -> None:
    cfg = RandomSplit(ratios=(0.6, 0.15, 0.25), ranker_folds=3)
    full = split(random_log, cfg, seed=3)
    n_valid = full.valid_targets.loc[full.valid_targets["relevant"], "user_idx"].nunique()
    cut = split(random_log, cfg.model_copy(update={"ranker_fold_users": 2 * n_valid}), seed=3)
    assert len(full.ranker_targets) == 3 and len(cut.ranker_targets) == 1
    # the folds kept are the first ones of the full split, unchanged
    pd.testing.assert_frame_equal(cut.ranker_targets[0], full.ranker_targets[0])
    assert np.array_equal(cut.ranker_roles[:, 0], full.ranker_roles[:, 0])


def test_random_ranker_folds_draw_the_valid_share_with_their_own_seeds(random_log) -> None:
    cfg = RandomSplit(ratios=(0.6, 0.15, 0.25), ranker_folds=2)
    s = split(random_log, cfg, seed=3)
    hist = pd.concat([s.train, s.valid], ignore_index=True)
    n_items = hist.groupby("user_idx")["item_idx"].nunique()
    for t in s.ranker_targets:
        share = t.groupby("user_idx").size().reindex(n_items.index, fill_value=0) / n_items
        assert 0.15 < share.mean() < 0.25  # 0.15 / 0.75 = 0.2 of the test fold's history
    assert pairs(s.ranker_targets[0]) != pairs(s.ranker_targets[1])
    again = split(random_log, cfg, seed=3)
    np.testing.assert_array_equal(s.ranker_roles, again.ranker_roles)
    # the valid and test folds do not depend on how many extra folds are drawn
    plain = split(random_log, cfg.model_copy(update={"ranker_folds": 0}), seed=3)
    pd.testing.assert_frame_equal(plain.test_targets, s.test_targets)
    pd.testing.assert_frame_equal(plain.valid_targets, s.valid_targets)
    assert plain.ranker_roles.shape == (len(hist), 0) and plain.ranker_targets == ()


@pytest.mark.parametrize(
    "rows",
    [
        [(u, f"i{u}", u) for u in range(20)],  # every user has one event
        [(1, f"i{k}", k) for k in range(12)],  # a single user: one valid target at most
    ],
    ids=["one event per user", "one user"],
)
def test_a_split_without_targets_is_a_clear_error(rows: list[tuple]) -> None:
    """Regression: such data passed split with 0 targets and failed later, in blend ("no
    enabled candidate model") or with a traceback from rank."""
    s = split(make_interactions(rows), TemporalSplit(n_valid=1, n_test=1), seed=0)
    with pytest.raises(
        DataError,
        match=r"file prep/interactions\.parquet: the split leaves "
        r"nothing to learn from or evaluate: .*users with a relevant",
    ):
        check_targets(s, "prep/interactions.parquet")


def test_a_split_with_targets_passes_the_check(random_log: pd.DataFrame) -> None:
    for cfg in CONFIGS:
        check_targets(split(random_log, cfg, seed=0), "x")
