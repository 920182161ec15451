"""Metrics match hand-computed values, their definitions and sklearn where those coincide."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score
from sklearn.metrics.pairwise import cosine_distances

from recpipe.errors import DataError
from recpipe.evaluation.metrics import (
    TOPN_METRICS,
    average_popularity,
    bootstrap_interval,
    coverage,
    intra_list_diversity,
    mae,
    metric_name,
    novelty,
    paired_bootstrap,
    rating_errors,
    rmse,
    topn_metrics,
    topn_per_user,
)

KS = [1, 3, 5]


def make_recs(lists: dict[int, list[int]]) -> pd.DataFrame:
    """Recommendations from {user: [items, best first]}."""
    rows = [(u, i, r) for u, items in lists.items() for r, i in enumerate(items, start=1)]
    df = pd.DataFrame(rows, columns=["user_idx", "item_idx", "rank"])
    return df.astype({"user_idx": "int64", "item_idx": "int64", "rank": "int64"})


def make_truth(
    relevant: dict[int, list[int]], not_relevant: dict[int, list[int]] | None = None
) -> pd.DataFrame:
    """Targets from {user: [relevant items]} and {user: [non-relevant items]}."""
    rows = [(u, i, True) for u, items in relevant.items() for i in items]
    rows += [(u, i, False) for u, items in (not_relevant or {}).items() for i in items]
    df = pd.DataFrame(rows, columns=["user_idx", "item_idx", "relevant"])
    return df.astype({"user_idx": "int64", "item_idx": "int64", "relevant": "bool"})


def log2(x: float) -> float:
    return math.log2(x)


# --------------------------------------------------------------------------- top-N: by hand


def hand_case() -> tuple[pd.DataFrame, pd.DataFrame]:
    recs = make_recs(
        {
            1: [10, 11, 12, 13, 14],
            2: [20, 21],
            5: [50, 51],  # not in truth: ignored
        }
    )
    truth = make_truth(
        relevant={1: [11, 13, 99], 2: [20], 3: [30]},  # 99 never recommended; 3 has no recs
        not_relevant={2: [21], 4: [40]},  # 4 has no relevant target: excluded
    )
    return recs, truth


def test_topn_hand_computed() -> None:
    recs, truth = hand_case()
    got = topn_per_user(recs, truth, [3, 5])
    assert list(got.index) == [1, 2, 3]
    assert got.index.name == "user_idx"
    assert list(got.columns) == [metric_name(m, k) for m in TOPN_METRICS for k in (3, 5)]

    idcg3 = 1 + 1 / log2(3) + 1 / log2(4)  # |R| = 3 ideal hits at ranks 1, 2, 3
    # User 1, R = {11, 13, 99}: hits at ranks 2 (item 11) and 4 (item 13).
    # @3: one hit (rank 2). precision 1/3, recall 1/3, DCG 1/log2(3), IDCG over min(3,3)=3,
    #     AP = precision@2 / min(3,3) = (1/2)/3 = 1/6, MRR 1/2, hit 1.
    # @5: two hits. precision 2/5, recall 2/3, DCG 1/log2(3) + 1/log2(5), IDCG over 3,
    #     AP = (precision@2 + precision@4) / 3 = (1/2 + 2/4) / 3 = 1/3, MRR 1/2, hit 1.
    u1 = got.loc[1]
    assert u1["precision@3"] == pytest.approx(1 / 3)
    assert u1["recall@3"] == pytest.approx(1 / 3)
    assert u1["ndcg@3"] == pytest.approx((1 / log2(3)) / idcg3)
    assert u1["map@3"] == pytest.approx(1 / 6)
    assert u1["mrr@3"] == pytest.approx(1 / 2)
    assert u1["hitrate@3"] == 1.0
    assert u1["precision@5"] == pytest.approx(2 / 5)
    assert u1["recall@5"] == pytest.approx(2 / 3)
    assert u1["ndcg@5"] == pytest.approx((1 / log2(3) + 1 / log2(5)) / idcg3)
    assert u1["map@5"] == pytest.approx(1 / 3)
    assert u1["mrr@5"] == pytest.approx(1 / 2)

    # User 2, R = {20} (21 is a non-relevant target), list [20, 21]: hit at rank 1.
    # @3: precision 1/3 (short list not forgiven), recall 1/1, DCG 1 / IDCG over min(1,3)=1
    #     position = 1, AP = precision@1 / min(1,3) = 1, MRR 1. @5: precision 1/5, rest the same.
    u2 = got.loc[2]
    assert u2["precision@3"] == pytest.approx(1 / 3)
    assert u2["precision@5"] == pytest.approx(1 / 5)
    for m in ("recall", "ndcg", "map", "mrr", "hitrate"):
        assert u2[f"{m}@3"] == pytest.approx(1.0)
        assert u2[f"{m}@5"] == pytest.approx(1.0)

    # User 3 has a relevant target but no recommendations: 0 everywhere, not skipped.
    assert (got.loc[3] == 0.0).all()

    # Means over the 3 evaluation users, e.g. precision@3 = (1/3 + 1/3 + 0) / 3 = 2/9 and
    # map@5 = (1/3 + 1 + 0) / 3 = 4/9.
    means = topn_metrics(recs, truth, [3, 5])
    assert means["precision@3"] == pytest.approx(2 / 9)
    assert means["map@5"] == pytest.approx(4 / 9)
    assert means["hitrate@5"] == pytest.approx(2 / 3)


def test_topn_perfect_list_when_more_relevant_than_k() -> None:
    # R = {1, 2, 3, 4}, list [1, 2, 9]. @2: both slots hit, so precision 1, recall 2/4,
    # DCG = IDCG (ideal over min(4, 2) = 2 positions) -> ndcg 1, AP = (1/1 + 2/2) / 2 = 1.
    # @3: hits at 1, 2; precision 2/3, IDCG over 3 positions: ndcg = (1 + 1/log2 3) / (1 + 1/log2
    # 3 + 1/2), AP = (1 + 1) / min(4, 3) = 2/3.
    got = topn_per_user(make_recs({0: [1, 2, 9]}), make_truth({0: [1, 2, 3, 4]}), [2, 3]).loc[0]
    assert got["precision@2"] == 1.0
    assert got["recall@2"] == pytest.approx(0.5)
    assert got["ndcg@2"] == pytest.approx(1.0)
    assert got["map@2"] == pytest.approx(1.0)
    assert got["precision@3"] == pytest.approx(2 / 3)
    assert got["ndcg@3"] == pytest.approx((1 + 1 / log2(3)) / (1 + 1 / log2(3) + 0.5))
    assert got["map@3"] == pytest.approx(2 / 3)


def test_topn_duplicate_truth_rows_count_once_and_any_relevant_wins() -> None:
    # Item 7 is listed twice as relevant and once as not: it is one relevant item, |R| = 1.
    truth = pd.concat([make_truth({0: [7, 7]}, {0: [7]})], ignore_index=True)
    got = topn_per_user(make_recs({0: [7]}), truth, [1]).loc[0]
    assert got["recall@1"] == 1.0
    assert got["map@1"] == 1.0


def test_topn_duplicate_ks_are_merged_and_sorted() -> None:
    got = topn_per_user(make_recs({0: [1]}), make_truth({0: [1]}), [5, 1, 5])
    assert list(got.columns)[:2] == ["precision@1", "precision@5"]


def test_topn_no_evaluation_user_gives_nan_means() -> None:
    truth = make_truth({}, {0: [1]})
    assert topn_per_user(make_recs({0: [1]}), truth, [1]).empty
    assert all(math.isnan(v) for v in topn_metrics(make_recs({0: [1]}), truth, [1]).values())


@pytest.mark.parametrize(
    ("recs", "column"),
    [
        (make_recs({0: [1, 1]}), "item_idx"),  # same item twice
        (make_recs({0: [1, 2]}).assign(rank=[1, 1]), "rank"),  # same rank twice
        (make_recs({0: [1, 2]}).assign(rank=[1, 3]), "rank"),  # gap
        (make_recs({0: [1, 2]}).assign(rank=[0, 1]), "rank"),  # ranks start at 0
        (make_recs({0: [1]}).astype({"rank": "float64"}), "rank"),  # not integer
        (make_recs({0: [1]}).drop(columns="rank"), "rank"),  # missing
    ],
)
def test_bad_recs_are_rejected_naming_the_column(recs: pd.DataFrame, column: str) -> None:
    with pytest.raises(DataError) as info:
        topn_per_user(recs, make_truth({0: [1]}), [5])
    assert info.value.column == column


def test_non_boolean_relevance_is_rejected() -> None:
    truth = make_truth({0: [1]}).astype({"relevant": "int64"})
    with pytest.raises(DataError, match="relevant"):
        topn_per_user(make_recs({0: [1]}), truth, [1])


def test_bad_ks_are_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        topn_per_user(make_recs({0: [1]}), make_truth({0: [1]}), [])
    with pytest.raises(ValueError, match=">= 1"):
        topn_per_user(make_recs({0: [1]}), make_truth({0: [1]}), [0])


# --------------------------------------------------------------------------- top-N: properties

N_ITEMS = 10


@st.composite
def recs_and_truth(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A few users with random lists (possibly empty) and random targets (possibly none)."""
    users = draw(st.lists(st.integers(0, 50), min_size=1, max_size=6, unique=True))
    lists, relevant, not_relevant = {}, {}, {}
    for u in users:
        order = draw(st.permutations(range(N_ITEMS)))
        lists[u] = order[: draw(st.integers(0, N_ITEMS))]
        targets = draw(st.lists(st.integers(0, N_ITEMS - 1), max_size=N_ITEMS, unique=True))
        flags = draw(st.lists(st.booleans(), min_size=len(targets), max_size=len(targets)))
        relevant[u] = [i for i, f in zip(targets, flags, strict=True) if f]
        not_relevant[u] = [i for i, f in zip(targets, flags, strict=True) if not f]
    return make_recs(lists), make_truth(relevant, not_relevant)


def reference_topn(recs: pd.DataFrame, truth: pd.DataFrame, k: int) -> dict[int, dict]:
    """Loop-per-user implementation written straight from the definitions, for comparison."""
    out = {}
    rel_rows = truth[truth["relevant"]]
    for u, grp in rel_rows.groupby("user_idx"):
        rel = set(grp["item_idx"])
        ranked = list(recs[recs["user_idx"] == u].sort_values("rank")["item_idx"])[:k]
        hit = [i in rel for i in ranked]
        prec_at = [sum(hit[: j + 1]) / (j + 1) for j in range(len(hit))]
        first = next((j + 1 for j, h in enumerate(hit) if h), None)
        dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hit) if h)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(len(rel), k)))
        out[u] = {
            "precision": sum(hit) / k,
            "recall": sum(hit) / len(rel),
            "ndcg": dcg / idcg,
            "map": sum(p for p, h in zip(prec_at, hit, strict=True) if h) / min(len(rel), k),
            "mrr": 1 / first if first else 0.0,
            "hitrate": float(any(hit)),
        }
    return out


@settings(max_examples=30, deadline=None)
@given(recs_and_truth())
def test_topn_matches_loop_reference_and_is_bounded(case: tuple) -> None:
    recs, truth = case
    got = topn_per_user(recs, truth, KS)
    values = got.to_numpy()
    assert ((values >= 0) & (values <= 1 + 1e-12)).all()
    for k in KS:
        ref = reference_topn(recs, truth, k)
        assert list(got.index) == sorted(ref)
        for u, metrics in ref.items():
            for m, v in metrics.items():
                assert got.loc[u, metric_name(m, k)] == pytest.approx(v)


@settings(max_examples=30, deadline=None)
@given(
    relevant=st.dictionaries(
        st.integers(0, 20), st.lists(st.integers(0, 30), min_size=1, max_size=8, unique=True)
    ),
    tail=st.integers(0, 4),
)
def test_perfect_ranking_scores_one(relevant: dict[int, list[int]], tail: int) -> None:
    # Every relevant item first, then `tail` items that are not relevant (ids >= 100).
    lists = {u: items + list(range(100, 100 + tail)) for u, items in relevant.items()}
    got = topn_per_user(make_recs(lists), make_truth(relevant), KS)
    for u, items in relevant.items():
        for k in KS:
            row = got.loc[u]
            if len(items) >= k:
                assert row[metric_name("precision", k)] == pytest.approx(1.0)
            if len(items) <= k:
                assert row[metric_name("recall", k)] == pytest.approx(1.0)
            for m in ("ndcg", "map", "mrr", "hitrate"):
                assert row[metric_name(m, k)] == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(recs_and_truth(), st.integers(0, 2**32 - 1))
def test_topn_ignores_row_order(case: tuple, seed: int) -> None:
    recs, truth = case
    rng = np.random.default_rng(seed)
    shuffled_recs = recs.iloc[rng.permutation(len(recs))].reset_index(drop=True)
    shuffled_truth = truth.iloc[rng.permutation(len(truth))].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        topn_per_user(recs, truth, KS),
        topn_per_user(shuffled_recs, shuffled_truth, KS),
        check_exact=True,
    )


@settings(max_examples=30, deadline=None)
@given(recs_and_truth(), st.lists(st.tuples(st.integers(0, 60), st.integers(0, 40))))
def test_non_relevant_truth_rows_change_nothing(case: tuple, extra: list) -> None:
    recs, truth = case
    # Extra non-relevant rows: new pairs, new users (only non-relevant) and recommended items.
    # Pairs already relevant are skipped: re-listing one as non-relevant is a separate rule.
    rel = truth[truth["relevant"]]
    relevant = set(zip(rel["user_idx"], rel["item_idx"], strict=True))
    rows = [p for p in extra if p not in relevant]
    noise = pd.DataFrame(rows, columns=["user_idx", "item_idx"], dtype="int64")
    more = pd.concat([truth, noise.assign(relevant=False)], ignore_index=True)
    pd.testing.assert_frame_equal(topn_per_user(recs, truth, KS), topn_per_user(recs, more, KS))


@settings(max_examples=30, deadline=None)
@given(recs_and_truth(), st.lists(st.integers(0, N_ITEMS - 1), min_size=1, unique=True))
def test_user_without_recommendations_scores_zero(case: tuple, targets: list[int]) -> None:
    recs, truth = case
    newcomer = 1000  # has relevant targets, gets no list
    more = pd.concat([truth, make_truth({newcomer: targets})], ignore_index=True)
    got = topn_per_user(recs, more, KS)
    assert (got.loc[newcomer] == 0.0).all()
    # The other users keep their scores: the newcomer only adds a row of zeros.
    pd.testing.assert_frame_equal(got.drop(index=newcomer), topn_per_user(recs, truth, KS))


@settings(max_examples=30, deadline=None)
@given(
    n_items=st.integers(2, 8),
    data=st.data(),
    k=st.integers(1, 8),
)
def test_ndcg_matches_sklearn_on_full_rankings(n_items: int, data: st.DataObject, k: int) -> None:
    # The definitions coincide when relevance is binary, every item is scored and there are
    # no ties: sklearn's IDCG@k also sums over min(|R|, k) ideal positions.
    order = data.draw(st.permutations(range(n_items)))
    rel = data.draw(st.lists(st.integers(0, n_items - 1), min_size=1, unique=True))
    got = topn_per_user(make_recs({0: order}), make_truth({0: rel}), [k]).loc[0]
    y_true = np.isin(np.arange(n_items), rel).astype(float)
    y_score = np.empty(n_items)
    y_score[order] = np.arange(n_items, 0, -1)  # rank 1 gets the highest score
    assert got[metric_name("ndcg", k)] == pytest.approx(ndcg_score([y_true], [y_score], k=k))


# --------------------------------------------------------------------------- coverage


def test_coverage_hand_computed() -> None:
    recs = make_recs({0: [0, 1, 2], 1: [1, 3, 4], 2: []})
    # Top 2: {0, 1} and {1, 3} -> {0, 1, 3} = 3 of 10 items. Top 3 adds 2 and 4 -> 5 / 10.
    assert coverage(recs, 10, 2) == pytest.approx(0.3)
    assert coverage(recs, 10, 3) == pytest.approx(0.5)
    with pytest.raises(DataError, match="catalogue"):
        coverage(recs, 4, 3)  # item 4 does not exist in a catalogue of 4 items


# --------------------------------------------------------------------------- diversity


def test_diversity_identical_items_is_zero_and_orthogonal_is_one() -> None:
    recs = make_recs({0: [0, 1, 2]})
    same = np.tile([[0.3, 0.0, 2.0]], (3, 1))
    assert intra_list_diversity(recs, same, 3) == pytest.approx(0.0, abs=1e-12)
    assert intra_list_diversity(recs, np.eye(3), 3) == pytest.approx(1.0)
    assert intra_list_diversity(recs, sp.csr_matrix(np.eye(3)), 3) == pytest.approx(1.0)


def test_diversity_hand_computed() -> None:
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    recs = make_recs({0: [0, 1, 2], 1: [0, 3], 2: [2]})
    # User 0: pairs (0,1) cos 1 -> distance 0, (0,2) and (1,2) distance 1: mean 2/3.
    # User 1: item 3 has a zero vector, similarity 0 by convention -> distance 1.
    # User 2: one item, no pair: skipped. ILD = (2/3 + 1) / 2 = 5/6.
    assert intra_list_diversity(recs, vectors, 3) == pytest.approx(5 / 6)
    # Top 1 leaves nobody with a pair.
    assert math.isnan(intra_list_diversity(recs, vectors, 1))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_diversity_matches_pairwise_distances(data: st.DataObject) -> None:
    n_items, dim = 8, 4
    vectors = np.array(
        data.draw(
            st.lists(
                st.lists(st.integers(-3, 3), min_size=dim, max_size=dim),
                min_size=n_items,
                max_size=n_items,
            )
        ),
        dtype=float,
    )
    lists = {
        u: data.draw(st.permutations(range(n_items)))[: data.draw(st.integers(0, n_items))]
        for u in range(4)
    }
    k = data.draw(st.integers(1, n_items))
    expected = []
    for items in lists.values():
        top = items[:k]
        if len(top) >= 2:
            d = cosine_distances(vectors[top])  # zero rows: similarity 0, as ours
            expected.append(d.sum() / (len(top) * (len(top) - 1)))  # diagonal is 0
    recs = make_recs(lists)
    got_dense = intra_list_diversity(recs, vectors, k)
    got_sparse = intra_list_diversity(recs, sp.csr_array(vectors), k)
    if expected:
        assert got_dense == pytest.approx(np.mean(expected), abs=1e-9)
        assert got_sparse == pytest.approx(np.mean(expected), abs=1e-9)
    else:
        assert math.isnan(got_dense) and math.isnan(got_sparse)


# --------------------------------------------------------------------------- novelty, ARP


def test_novelty_and_average_popularity_hand_computed() -> None:
    n_users_train = 8
    popularity = np.array([8, 4, 2, 1, 0])  # training users per item
    recs = make_recs({0: [0, 1], 1: [2, 4]})
    # User 0: -log2(8/8) = 0, -log2(4/8) = 1 -> 0.5.
    # User 1: -log2(2/8) = 2, item 4 unseen: floor count 1 -> -log2(1/8) = 3 -> 2.5.
    # Novelty = (0.5 + 2.5) / 2 = 1.5.
    assert novelty(recs, popularity, n_users_train, 2) == pytest.approx(1.5)
    # ARP: user 0 (8 + 4) / 2 = 6, user 1 (2 + 0) / 2 = 1 -> 3.5.
    assert average_popularity(recs, popularity, 2) == pytest.approx(3.5)
    # Top 1: novelty (0 + 2) / 2 = 1, ARP (8 + 2) / 2 = 5.
    assert novelty(recs, popularity, n_users_train, 1) == pytest.approx(1.0)
    assert average_popularity(recs, popularity, 1) == pytest.approx(5.0)


def test_popularity_series_reads_missing_items_as_unseen() -> None:
    popularity = pd.Series({0: 8, 1: 4, 2: 2})  # item 4 absent: never seen in training
    recs = make_recs({0: [0, 1], 1: [2, 4]})
    assert novelty(recs, popularity, 8, 2) == pytest.approx(1.5)
    assert average_popularity(recs, popularity, 2) == pytest.approx(3.5)


def test_popularity_array_must_cover_recommended_items() -> None:
    with pytest.raises(DataError, match="item_popularity"):
        average_popularity(make_recs({0: [0, 5]}), np.array([1, 2]), 2)
    with pytest.raises(ValueError, match="n_users_train"):
        novelty(make_recs({0: [0]}), np.array([9]), 8, 1)  # 9 users of 8: wrong counts


# --------------------------------------------------------------------------- rating error


def test_rating_errors_report_missing_predictions() -> None:
    pred = np.array([3.0, np.nan, 5.0, 1.0])
    actual = np.array([4.0, 2.0, 5.0, 3.0])
    # Predicted pairs: errors -1, 0, -2. RMSE = sqrt((1 + 0 + 4) / 3), MAE = (1 + 0 + 2) / 3.
    got = rating_errors(pred, actual)
    assert got["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert got["mae"] == pytest.approx(1.0)
    assert (got["n"], got["n_missing"]) == (3, 1)
    with pytest.raises(ValueError, match="rating_errors"):
        rmse(pred, actual)
    with pytest.raises(ValueError, match="rating_errors"):
        mae(pred, actual)


def test_rmse_mae_simple_helpers() -> None:
    # Errors 1, -1, 2: RMSE sqrt((1 + 1 + 4) / 3) = sqrt(2), MAE (1 + 1 + 2) / 3 = 4/3.
    pred, actual = np.array([2.0, 2.0, 5.0]), np.array([1.0, 3.0, 3.0])
    assert rmse(pred, actual) == pytest.approx(math.sqrt(2))
    assert mae(pred, actual) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="length"):
        rmse(pred, actual[:2])


def test_rating_errors_with_nothing_predicted() -> None:
    got = rating_errors(np.array([np.nan, np.nan]), np.array([1.0, 2.0]))
    assert math.isnan(got["rmse"]) and math.isnan(got["mae"])
    assert (got["n"], got["n_missing"]) == (0, 2)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_contains_mean_and_is_deterministic() -> None:
    values = np.random.default_rng(0).random(300)
    low, high = bootstrap_interval(values, n_boot=2000, seed=11)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_interval(values, n_boot=2000, seed=11)
    assert (low, high) != bootstrap_interval(values, n_boot=2000, seed=12)
    # Rough size check: the standard error of a mean of 300 U(0,1) is about 0.0167, so a 95%
    # interval spans about 4 * 0.0167 = 0.065.
    assert 0.04 < high - low < 0.09
    narrow = bootstrap_interval(values, n_boot=2000, seed=11, level=0.5)
    assert low < narrow[0] < narrow[1] < high


def test_bootstrap_interval_over_many_chunks() -> None:
    # 20,000 users make each chunk hold ~200 resamples, so 1,000 resamples take several chunks.
    values = np.random.default_rng(1).normal(5.0, 1.0, 20_000)
    low, high = bootstrap_interval(values, n_boot=1000, seed=3)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_interval(values, n_boot=1000, seed=3)


def test_bootstrap_of_constant_values_is_a_point() -> None:
    assert bootstrap_interval(np.full(10, 0.25), n_boot=100, seed=0) == pytest.approx((0.25, 0.25))


def test_bootstrap_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty"):
        bootstrap_interval(np.array([]), n_boot=10, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_interval(np.array([1.0, np.nan]), n_boot=10, seed=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(np.ones(3), n_boot=10, seed=0, level=1.0)


def test_paired_bootstrap_flags_a_clear_shift() -> None:
    rng = np.random.default_rng(5)
    b = rng.random(200)
    a = b + 0.05 + rng.normal(0, 0.01, 200)  # every user gains about 0.05
    got = paired_bootstrap(a, b, n_boot=2000, seed=1)
    assert got["diff"] == pytest.approx(a.mean() - b.mean())
    assert got["low"] > 0 and got["significant"] is True
    assert got["p_value"] == 0.0
    assert got == paired_bootstrap(a, b, n_boot=2000, seed=1)
    # Swapping the runs mirrors the result.
    swapped = paired_bootstrap(b, a, n_boot=2000, seed=1)
    assert swapped["diff"] == pytest.approx(-got["diff"])
    assert swapped["high"] < 0 and swapped["significant"] is True


def test_paired_bootstrap_of_identical_runs_is_not_significant() -> None:
    a = np.random.default_rng(6).random(100)
    got = paired_bootstrap(a, a.copy(), n_boot=500, seed=2)
    assert got["diff"] == 0.0
    assert (got["low"], got["high"]) == (0.0, 0.0)
    assert got["significant"] is False
    assert got["p_value"] == 1.0


def test_paired_bootstrap_noise_is_not_significant() -> None:
    # Per-user differences of +-0.1 that cancel out (plus a little noise): the interval must
    # straddle 0 and the p-value stay large.
    rng = np.random.default_rng(8)
    b = rng.random(200)
    a = b + np.tile([0.1, -0.1], 100) + rng.normal(0, 1e-3, 200)
    got = paired_bootstrap(a, b, n_boot=2000, seed=4)
    assert got["low"] < 0 < got["high"]
    assert got["significant"] is False
    assert got["p_value"] > 0.05


def test_paired_bootstrap_needs_aligned_runs() -> None:
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap(np.ones(3), np.ones(4), n_boot=10, seed=0)


def test_paired_bootstrap_p_value_agrees_with_the_interval() -> None:
    # A weak shift (mean 0.01, per-user noise 0.1, 200 users: z ~ 1.4) gives a p-value strictly
    # between 0 and 1. A share s of resampled diffs <= 0 means p = 2s, and the lower end of the
    # level-L interval is the (1-L)/2 quantile: it lies above 0 when L < 1 - p and below 0 when
    # L > 1 - p. Factor-2 margins on either side keep the check clear of interpolation.
    rng = np.random.default_rng(9)
    b = rng.random(200)
    a = b + 0.01 + rng.normal(0, 0.1, 200)
    p = paired_bootstrap(a, b, n_boot=4000, seed=7)["p_value"]
    assert 0.01 < p < 0.4
    assert paired_bootstrap(a, b, n_boot=4000, seed=7, level=1 - 2 * p)["significant"] is True
    assert paired_bootstrap(a, b, n_boot=4000, seed=7, level=1 - p / 2)["significant"] is False
