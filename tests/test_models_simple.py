"""Known answers and hyper-parameter sensitivity of popularity, item-kNN, EASE, TF-IDF and
sequential item-kNN."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from recpipe.models.base import Recommender, TrainData, top_n
from recpipe.models.ease import EASE, EASEConfig, ease_weights
from recpipe.models.itemknn import ItemKNN, ItemKNNConfig, _keep_top_k
from recpipe.models.popularity import Popularity, PopularityConfig
from recpipe.models.seqknn import SeqKNN, SeqKNNConfig, top_k_per_group
from recpipe.models.tfidf import TfIdf, TfIdfConfig

DAY = 86_400


def make_data(
    rows: list[tuple],
    n_users: int,
    n_items: int,
    texts: list[str] | None = None,
    categories: list[list[str]] | None = None,
) -> TrainData:
    """TrainData from ``(user, item, timestamp[, weight])`` tuples and optional item metadata."""
    inter = pd.DataFrame(
        [(r[0], r[1], np.nan, "view", float(r[3]) if len(r) > 3 else 1.0, int(r[2])) for r in rows],
        columns=["user_idx", "item_idx", "rating", "event", "weight", "timestamp"],
    )
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "item_idx": np.arange(n_items),
            "title": [f"title{i}" for i in range(n_items)],
            "text": texts if texts is not None else [""] * n_items,
            "categories": categories if categories is not None else [[] for _ in range(n_items)],
        }
    )
    users = pd.DataFrame(
        {"user_id": [f"u{u}" for u in range(n_users)], "user_idx": np.arange(n_users)}
    )
    return TrainData(inter, items, users)


def all_scores(model: Recommender) -> np.ndarray:
    return model.score_users(np.arange(model.n_users))


# -- every main setting changes the output -------------------------------------------------

WORDS = ["apple", "fruit", "red", "car", "steel", "engine", "the", "of", "river", "green"]


@pytest.fixture(scope="module")
def rich_data() -> TrainData:
    """A random log with repeats, varied weights, 200 days of timestamps and item texts."""
    rng = np.random.default_rng(3)
    n_users, n_items = 30, 20
    rows = [
        (int(u), int(i), int(t), float(w))
        for u, i, t, w in zip(
            rng.integers(0, n_users - 1, 400),
            # skewed, so popularity has a clear order
            np.minimum(rng.geometric(0.12, 400) - 1, n_items - 2),
            rng.integers(0, 200 * DAY, 400),
            rng.choice([1.0, 2.0, 5.0], 400),
            strict=True,
        )
    ]
    texts = [
        " ".join(rng.choice(WORDS, 6)) + " " + rng.choice(WORDS[:6]) + " the"
        for _ in range(n_items)
    ]
    cats = [[f"g{i % 3}"] + (["extra"] if i % 4 == 0 else []) for i in range(n_items)]
    return make_data(rows, n_users, n_items, texts, cats)


SETTING_CASES = [
    (Popularity, {}, {"count": "weight"}),
    (Popularity, {}, {"half_life_days": 10.0}),
    (Popularity, {}, {"per_category": True}),
    (Popularity, {"per_category": True}, {"per_category": True, "category_beta": 4.0}),
    (ItemKNN, {"neighbours": 0}, {"neighbours": 2}),
    (ItemKNN, {}, {"shrinkage": 50.0}),
    (ItemKNN, {}, {"value": "weight"}),
    (EASE, {"l2": 1.0}, {"l2": 50.0}),
    (EASE, {"l2": 5.0}, {"l2": 5.0, "value": "weight"}),
    (TfIdf, {}, {"min_df": 3}),
    (TfIdf, {}, {"max_df": 0.5}),
    (TfIdf, {}, {"max_features": 4}),
    (TfIdf, {}, {"ngram_max": 2}),
    (TfIdf, {}, {"sublinear_tf": False}),
    (TfIdf, {}, {"stop_words": "english"}),
    (TfIdf, {}, {"half_life_days": 10.0}),
    (SeqKNN, {}, {"window": 1}),
    (SeqKNN, {}, {"gap_decay": 0.3}),
    (SeqKNN, {}, {"direction": "forward"}),
    (SeqKNN, {}, {"shrinkage": 0.0}),
    (SeqKNN, {"neighbours": 0}, {"neighbours": 2}),
    (SeqKNN, {}, {"history": 1}),
    (SeqKNN, {}, {"recency_decay": 0.2}),
]


@pytest.mark.parametrize(
    ("cls", "base", "changed"),
    SETTING_CASES,
    ids=[f"{c.name}-{next(iter(ch))}" for c, _, ch in SETTING_CASES],
)
def test_each_setting_changes_the_scores(
    cls: type[Recommender], base: dict, changed: dict, rich_data: TrainData
) -> None:
    a = all_scores(cls(cls.config_class(**base)).fit(rich_data))
    b = all_scores(cls(cls.config_class(**changed)).fit(rich_data))
    assert a.shape == b.shape == (rich_data.n_users, rich_data.n_items)
    assert a.dtype == b.dtype == np.float32
    assert not np.allclose(a, b, equal_nan=True), f"{cls.name}: {changed} changed nothing"


@pytest.mark.parametrize(
    ("cls", "bad"),
    [
        (Popularity, {"half_life_days": 0}),
        (Popularity, {"category_beta": -1}),
        (Popularity, {"count": "clicks"}),
        (ItemKNN, {"neighbours": -1}),
        (ItemKNN, {"shrinkage": -0.1}),
        (EASE, {"l2": 0}),
        (EASE, {"max_items": 0}),
        (TfIdf, {"min_df": 0}),
        (TfIdf, {"max_df": 1.5}),
        (TfIdf, {"ngram_max": 0}),
        (TfIdf, {"neighbours": 5}),  # unknown key
    ],
)
def test_configs_reject_out_of_range_values(cls: type[Recommender], bad: dict) -> None:
    with pytest.raises(ValidationError):
        cls.config_class(**bad)


# -- popularity ------------------------------------------------------------------------------


def test_binary_matrix_is_ones_on_the_distinct_pairs() -> None:
    rng = np.random.default_rng(4)
    n = 400
    inter = pd.DataFrame(
        {
            "user_idx": rng.integers(0, 12, n),
            "item_idx": rng.integers(0, 30, n),  # many pairs repeat
            "weight": rng.random(n).astype(np.float32),
            "timestamp": np.arange(n),
        }
    )
    data = TrainData(
        inter,
        items=pd.DataFrame(index=pd.RangeIndex(30)),
        users=pd.DataFrame(index=pd.RangeIndex(12)),
    )
    got = data.matrix("binary")
    distinct = inter.drop_duplicates(["user_idx", "item_idx"])
    want = sp.csr_matrix(
        (np.ones(len(distinct), np.float32), (distinct["user_idx"], distinct["item_idx"])),
        shape=(12, 30),
    )
    want.sum_duplicates()
    assert got.dtype == np.float32 and got.has_canonical_format
    for attr in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got, attr), getattr(want, attr))
    assert got.nnz == len(distinct) < n


def test_popularity_order_equals_hand_counts() -> None:
    # item 0: users 0,1,2 (user 0 three times); item 1: users 0,1; item 2: user 3 (weight 9);
    # item 3: nobody. User 4 has no history.
    rows = [(0, 0, 1), (0, 0, 2), (0, 0, 3), (1, 0, 4), (2, 0, 5), (0, 1, 6), (1, 1, 7)]
    rows.append((3, 2, 8, 9.0))
    data = make_data(rows, n_users=5, n_items=4)
    users = Popularity(PopularityConfig()).fit(data).score_users(np.array([0, 4]))
    np.testing.assert_array_equal(users[1, :3], [3, 2, 1])
    assert np.isnan(users[:, 3]).all()
    weight = Popularity(PopularityConfig(count="weight")).fit(data).score_users(np.array([4]))
    np.testing.assert_array_equal(weight[0, :3], [5, 2, 9])
    # The cold user (4) gets the global ranking; user 0 gets it minus what they saw.
    recs = Popularity(PopularityConfig()).fit(data).recommend(np.array([0, 4]), 10)
    assert recs[recs.user_idx == 4]["item_idx"].tolist() == [0, 1, 2]
    assert recs[recs.user_idx == 0]["item_idx"].tolist() == [2]


def test_popularity_decay_favours_recent_items() -> None:
    now = 100 * DAY
    # item 0: three users 90 days before the end; item 1: two users on the last day.
    rows = [(u, 0, now - 90 * DAY) for u in range(3)] + [(3, 1, now), (4, 1, now)]
    data = make_data(rows, n_users=6, n_items=2)
    plain = Popularity(PopularityConfig()).fit(data).score_users(np.array([5]))[0]
    assert plain[0] > plain[1]
    decayed = Popularity(PopularityConfig(half_life_days=30.0)).fit(data).score_users(np.array([5]))
    np.testing.assert_allclose(decayed[0], [3 * 0.5**3, 2.0], rtol=1e-6)
    assert decayed[0, 1] > decayed[0, 0]


def test_popularity_per_category_tilt_is_the_documented_formula() -> None:
    # Items 0,1 are 'a'; item 2 is 'b'; item 3 is 'a' and 'b'. User 0 saw item 0 only.
    rows = [(0, 0, 1), (1, 1, 2), (2, 1, 3), (1, 2, 4), (2, 2, 5), (3, 2, 6), (3, 3, 7)]
    cats = [["a"], ["a"], ["b"], ["a", "b"]]
    data = make_data(rows, n_users=5, n_items=4, categories=cats)
    model = Popularity(PopularityConfig(per_category=True, category_beta=2.0)).fit(data)
    s = model.score_users(np.array([0, 4]))
    pop = np.array([1, 2, 3, 1], dtype=float)
    # user 0: share of history in 'a' = 1, in 'b' = 0; item 3 averages its two categories.
    share = np.array([1.0, 1.0, 0.0, 0.5])
    np.testing.assert_allclose(s[0], pop * (1 + 2.0 * share), rtol=1e-6)
    np.testing.assert_allclose(s[1], pop, rtol=1e-6)  # no history: plain popularity


# -- item-kNN --------------------------------------------------------------------------------


def test_itemknn_identical_user_sets_have_similarity_one() -> None:
    # items 0 and 1 were seen by exactly users 0 and 1; item 2 by users 1 and 2.
    rows = [(0, 0, 1), (1, 0, 2), (0, 1, 3), (1, 1, 4), (1, 2, 5), (2, 2, 6)]
    model = ItemKNN(ItemKNNConfig(neighbours=0, shrinkage=0.0)).fit(make_data(rows, 3, 3))
    s = model.similarity.toarray()
    assert s[0, 1] == pytest.approx(1.0)
    assert s[1, 0] == pytest.approx(1.0)
    assert s[0, 2] == pytest.approx(0.5)  # one common user of two each
    np.testing.assert_array_equal(np.diag(s), 0.0)


def test_itemknn_scores_equal_hand_computation_on_3x3() -> None:
    r = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=float)
    rows = [(u, i, 1 + u * 3 + i) for u, i in zip(*np.nonzero(r), strict=True)]
    data = make_data(rows, 3, 3)
    norms = np.sqrt(r.sum(axis=0))
    for shrink in (0.0, 2.0):
        sim = (r.T @ r) / (np.outer(norms, norms) + shrink)
        np.fill_diagonal(sim, 0.0)
        model = ItemKNN(ItemKNNConfig(neighbours=0, shrinkage=shrink)).fit(data)
        np.testing.assert_allclose(all_scores(model), r @ sim, rtol=1e-6)
    # neighbours=1: each item keeps only its single most similar item (ties: lower index).
    # cosines: s01 = 2/sqrt(6), s02 = 1/2, s12 = 2/sqrt(6) -> N(0)={1}, N(1)={0}, N(2)={1}.
    sim = (r.T @ r) / np.outer(norms, norms)
    pruned = np.zeros((3, 3))
    for target, source in ((0, 1), (1, 0), (2, 1)):
        pruned[source, target] = sim[source, target]
    model = ItemKNN(ItemKNNConfig(neighbours=1, shrinkage=0.0)).fit(data)
    np.testing.assert_allclose(all_scores(model), r @ pruned, rtol=1e-6)


def test_itemknn_top_k_breaks_ties_by_lower_index() -> None:
    sim = np.array([[0.2, 0.5, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.1, 0.0]], dtype=np.float32)
    kept = _keep_top_k(sim, 2).toarray()
    np.testing.assert_array_equal(kept[0], [0, 0.5, 0.5, 0, 0])
    np.testing.assert_array_equal(kept[1], [0, 0, 0, np.float32(0.1), 0])  # zeros never kept


def test_itemknn_blocks_do_not_change_the_similarity(rich_data: TrainData) -> None:
    whole = ItemKNN(ItemKNNConfig(neighbours=5)).fit(rich_data)
    blocked = ItemKNN(ItemKNNConfig(neighbours=5))
    blocked.sim_block_size = 3
    blocked.fit(rich_data)
    np.testing.assert_allclose(blocked.similarity.toarray(), whole.similarity.toarray())


# -- EASE ------------------------------------------------------------------------------------


def test_ease_weights_equal_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((12, 6)) < 0.4).astype(float)
    x[:, 3] = 0.0  # an item nobody saw: compressed away, NaN in the scores
    x[0] = 0.0  # a user with no history
    x[1, 0] = 1.0
    rows = [(u, i, 1 + k) for k, (u, i) in enumerate(zip(*np.nonzero(x), strict=True))]
    model = EASE(EASEConfig(l2=3.0)).fit(make_data(rows, 12, 6))
    active = [0, 1, 2, 4, 5]
    xa = x[:, active]
    p = np.linalg.inv(xa.T @ xa + 3.0 * np.eye(len(active)))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    np.testing.assert_array_equal(model._active, active)
    np.testing.assert_array_equal(np.diag(model.weights), 0.0)
    np.testing.assert_allclose(model.weights, b, rtol=1e-5, atol=1e-7)
    scores = all_scores(model)
    assert np.isnan(scores[:, 3]).all()
    assert np.isnan(scores[0]).all()
    np.testing.assert_allclose(scores[1:, active], (xa @ b)[1:], rtol=1e-5, atol=1e-6)


def test_ease_past_max_items_fits_the_most_active_items_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: EASE refused to fit past max_items; now it keeps the most active items
    (most distinct users, ties to the lower index) and leaves the rest unscored."""
    rng = np.random.default_rng(1)
    x = (rng.random((30, 8)) < 0.5).astype(float)
    x[:, 2] = 1.0  # every user: the most active
    x[:, 6] = 0.0
    x[:3, 6] = 1.0  # three users: the least active
    rows = [(u, i, 1 + k) for k, (u, i) in enumerate(zip(*np.nonzero(x), strict=True))]
    data = make_data(rows, 30, 8)
    users_per_item = x.sum(axis=0)
    order = np.lexsort((np.arange(8), -users_per_item))
    kept = np.sort(order[:5])
    model = EASE(EASEConfig(l2=3.0, max_items=5)).fit(data)
    np.testing.assert_array_equal(model._active, kept)
    assert 2 in kept and 6 not in kept
    assert "fitting on the 5 most active (candidates.ease.max_items)" in caplog.text
    scores = all_scores(model)
    assert np.isnan(np.delete(scores, kept, axis=1)).all()
    # on the kept items it is EASE on those columns alone
    alone = EASE(EASEConfig(l2=3.0)).fit(
        make_data([(u, i, t) for u, i, t in rows if i in set(kept.tolist())], 30, 8)
    )
    np.testing.assert_allclose(scores[:, kept], all_scores(alone)[:, kept], rtol=1e-5)


def test_ease_weights_in_float32_match_float64_closely() -> None:
    """The float32 in-place Cholesky inverse against numpy's float64 inverse, on a Gram
    matrix with counts in the hundreds (as on real data)."""
    rng = np.random.default_rng(2)
    x = sp.csr_matrix((rng.random((3000, 60)) < 0.3).astype(np.float64))
    b = ease_weights(x, 50.0)
    assert b.dtype == np.float32 and b.flags.c_contiguous
    g = (x.T @ x).toarray() + 50.0 * np.eye(60)
    p = np.linalg.inv(g)
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(b, expected, atol=2e-6 * np.abs(expected).max())


# -- TF-IDF ----------------------------------------------------------------------------------

FRUIT_CAR = [
    "red apple fruit",  # 0: in user 0's history
    "red apple pie",  # 1
    "steel car engine",  # 2
    "car wheel engine",  # 3
    "apple fruit fresh",  # 4: cold, nobody interacted with it
    "fresh bread",  # 5
]


def test_tfidf_ranks_items_sharing_words_first_and_recommends_cold_items() -> None:
    rows = [(0, 0, 1), (1, 2, 2), (1, 3, 3), (2, 1, 4), (2, 5, 5)]
    data = make_data(rows, 3, 6, texts=FRUIT_CAR)
    model = TfIdf(TfIdfConfig()).fit(data)
    recs = model.recommend(np.array([0]), 3)
    # Items 4 and 1 both share two words with item 0; 4 wins because its other word ("fresh",
    # in two items) weighs less than 1's unique "pie". Items 2 and 3 share nothing.
    assert recs["item_idx"].tolist()[:2] == [4, 1]
    # Score = cosine(profile, item); a one-item profile is that item's own vector.
    v = model.item_vectors.toarray()
    np.testing.assert_allclose(all_scores(model)[0], v @ v[0], rtol=1e-5, atol=1e-6)
    assert np.isfinite(model.score(np.array([0]), np.array([4]))).all()


def test_tfidf_decay_follows_the_recent_taste() -> None:
    # User 0 read about fruit long ago and about cars yesterday.
    rows = [(0, 0, 0), (0, 2, 99 * DAY), (1, 1, 50 * DAY)]
    data = make_data(rows, 2, 6, texts=FRUIT_CAR)
    plain = TfIdf(TfIdfConfig()).fit(data).score_users(np.array([0]))[0]
    recent = TfIdf(TfIdfConfig(half_life_days=7.0)).fit(data).score_users(np.array([0]))[0]
    # Items 3 (car) and 4 (fruit) match the two history items about equally without decay.
    assert recent[3] > plain[3]
    assert recent[4] < plain[4]
    assert recent[3] > recent[4]


def test_tfidf_uses_categories_as_tokens_and_leaves_no_history_users_unscored() -> None:
    texts = ["", "", "", ""]
    cats = [["Sci-Fi"], ["Sci-Fi", "Drama"], ["Drama"], ["Children's"]]
    data = make_data([(0, 0, 1)], 2, 4, texts=texts, categories=cats)
    model = TfIdf(TfIdfConfig()).fit(data)
    vocab = set(model.vocabulary)
    assert {"cat_sci_fi", "cat_drama", "cat_children_s"} <= vocab
    s = all_scores(model)
    assert s[0, 1] > s[0, 2]
    assert np.isnan(s[1]).all()


def test_tfidf_vocabulary_ignores_interactions() -> None:
    rows_a = [(0, 0, 1)]
    rows_b = [(0, 0, 1), (1, 2, 2), (1, 3, 3), (0, 3, 4)]
    a = TfIdf(TfIdfConfig()).fit(make_data(rows_a, 2, 6, texts=FRUIT_CAR))
    b = TfIdf(TfIdfConfig()).fit(make_data(rows_b, 2, 6, texts=FRUIT_CAR))
    assert a.vocabulary == b.vocabulary
    assert (a.item_vectors != b.item_vectors).nnz == 0
    assert isinstance(a.item_vectors, sp.csr_matrix)


# -- sequential item-kNN -----------------------------------------------------------------


def test_seqknn_follows_the_order_not_the_set() -> None:
    """Known answer: users 0-3 all take up items 0, 1, 2, 3 (one a day), so 0 and 1 sit
    together, as do 2 and 3, while 0 and 3 are three places apart. User 4 has seen 0 then 3:
    the item next to 3 (item 2) must beat the item next to 0 (item 1), because 3 is the more
    recent. Item-kNN, which sees sets, scores 1 and 2 alike for user 4."""
    rows = [(u, i, i * DAY) for u in range(4) for i in range(4)]
    rows += [(4, 0, 0), (4, 3, DAY)]
    data = make_data(rows, 5, 4)
    model = SeqKNN(SeqKNNConfig(window=1, shrinkage=0.0, recency_decay=0.5)).fit(data)
    s = model.score(np.array([4, 4]), np.array([1, 2]))
    assert s[1] > s[0] > 0
    # window 1, both ways: C[0,1] = 4; d0 = 4 + 1 (user 4's own 0 -> 3), d1 = 4 + 4. Item 0
    # is user 4's second most recent, weight 0.5: score(4, 1) = 0.5 * 4 / sqrt(5 * 8).
    assert s[0] == pytest.approx(0.5 * 4 / np.sqrt(5 * 8), rel=1e-6)
    knn = ItemKNN(ItemKNNConfig(neighbours=0, shrinkage=0.0)).fit(data)
    k = knn.score(np.array([4, 4]), np.array([1, 2]))
    assert k[0] == pytest.approx(k[1])
    recs = model.recommend(np.array([4]), 2)
    assert recs["item_idx"].tolist() == [2, 1]


def test_seqknn_forward_credits_only_what_came_after() -> None:
    # Users 0 and 1 go 0 -> 1; user 2 has only item 1. Forward, item 0 never follows item 1,
    # so it gets no score from it; both ways it does.
    rows = [(u, i, i * DAY) for u in range(2) for i in range(2)] + [(2, 1, 0)]
    data = make_data(rows, 3, 2)
    both = SeqKNN(SeqKNNConfig(window=1)).fit(data).score(np.array([2]), np.array([0]))
    fwd = SeqKNN(SeqKNNConfig(window=1, direction="forward")).fit(data)
    assert both[0] > 0 and fwd.score(np.array([2]), np.array([0]))[0] == 0


def test_top_k_per_group_ties_go_to_the_lower_key() -> None:
    group = np.array([0, 0, 0, 1, 1, 1])
    value = np.array([0.5, 0.9, 0.5, 0.0, 0.2, 0.1])
    tie = np.array([3, 1, 2, 0, 1, 2])
    keep = top_k_per_group(group, value, tie, 2)
    # group 0: 0.9 and the 0.5 with the lower key (2); group 1: zero never kept
    assert keep.tolist() == [False, True, True, False, True, True]


def test_seqknn_orders_same_second_items_by_a_seeded_hash_not_by_id() -> None:
    # Regression: ties in time went by item index, so a sequence model learned how item ids
    # sort ("next in id order") wherever a log stamps several items with one second.
    from recpipe.models.seqknn import sequences

    rows = [(u, i, 5) for u in range(200) for i in (1, 2)]
    data = make_data(rows, 200, 3)
    user, item, _ = sequences(data, seed=0)
    first = item[np.r_[True, user[1:] != user[:-1]]]
    assert 0.35 < np.mean(first == 1) < 0.65
    again = sequences(data, seed=0)[1]
    np.testing.assert_array_equal(item, again)
    assert not np.array_equal(item, sequences(data, seed=1)[1])


@pytest.mark.parametrize("seed", range(8))
def test_seqknn_sequences_of_one_user_equal_those_among_others(seed: int) -> None:
    """A one-user log (a history ranked at request time) takes a numpy path: its sequence
    equals the one the groupby gives that user in a log of several users (repeated items,
    times tied and out of order, hash ties by ``tie_user``)."""
    from recpipe.models.seqknn import sequences

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    mine = [
        (3, int(i), int(t))
        for i, t in zip(rng.integers(0, 12, n), rng.integers(0, 6, n), strict=True)
    ]
    others = [(u, int(rng.integers(0, 12)), int(rng.integers(0, 6))) for u in (0, 5, 5, 1)]
    alone = sequences(make_data(mine, 6, 12), seed=seed, tie_user=3)
    mixed = make_data(others[:2] + mine + others[2:], 6, 12)
    user, item, from_end = sequences(mixed, seed=seed)
    assert np.all(alone[0] == 3)
    np.testing.assert_array_equal(alone[1], item[user == 3])
    np.testing.assert_array_equal(alone[2], from_end[user == 3])


def test_ease_falls_back_to_float64_when_float32_cannot_factorise(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import scipy.linalg

    rng = np.random.default_rng(3)
    x = sp.csr_matrix((rng.random((40, 7)) < 0.4).astype(np.float64))
    expected = ease_weights(x, 2.0)
    # a float32 factorisation that reports failure, as LAPACK does on a matrix that is no
    # longer positive definite in single precision
    monkeypatch.setattr(scipy.linalg.lapack, "spotrf", lambda a, **kw: (a, 3))
    got = ease_weights(x, 2.0)
    assert "float32 Cholesky failed (info=3); solving in float64" in caplog.text
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [1, 3, 9, 40])
def test_top_n_is_the_full_sort_by_score_then_item(seed: int, n: int) -> None:
    """Against the plain definition: every unseen, scored item sorted by score (descending)
    then item index, first n; with many ties (integer scores), NaNs and seen items."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 25, 30
    scores = rng.integers(0, 4 if seed % 2 else 50, size=(n_users, n_items)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = np.nan
    scores[3] = np.nan  # a user with no score at all
    seen = sp.csr_matrix(rng.random((n_users, n_items)) < 0.3)
    users = np.arange(n_users) * 2
    got = top_n(users, scores.copy(), seen, n)
    dense_seen = seen.toarray()
    expected = []
    for row in range(n_users):
        ok = [j for j in range(n_items) if not np.isnan(scores[row, j]) and not dense_seen[row, j]]
        best = sorted(ok, key=lambda j: (-scores[row, j], j))[:n]
        expected += [(users[row], j, scores[row, j], r + 1) for r, j in enumerate(best)]
    assert list(got.itertuples(index=False, name=None)) == expected


@pytest.mark.parametrize("seed", range(6))
def test_top_n_of_one_row_equals_its_rows_in_a_block(seed: int) -> None:
    """One row (a fresh ranking's shortcut) ranks as it does among other rows, an entry of
    ``seen`` stored as 0 not counting as seen."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=(6, 40)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = np.nan
    seen = sp.csr_matrix((rng.random((6, 40)) < 0.3).astype(np.float32))
    seen.data[::4] = 0.0
    users = np.arange(6) + 10
    block = top_n(users, scores.copy(), seen, 12)
    for row in range(6):
        alone = top_n(users[row : row + 1], scores[row : row + 1].copy(), seen[row], 12)
        mine = block[block["user_idx"] == users[row]].reset_index(drop=True)
        pd.testing.assert_frame_equal(alone, mine)


def reference_profiles(model: TfIdf, data: TrainData, now: int) -> sp.csr_matrix:
    """The profiles' formula written the plain way: decayed weights summed per user and
    item, times the whole float64 item matrix, rows scaled by a diagonal product."""
    from recpipe.models.tfidf import time_decay

    inter = data.interactions
    w = inter["weight"].to_numpy(np.float64) * time_decay(
        inter["timestamp"].to_numpy(), now, model.config.half_life_days
    )
    hist = sp.csr_matrix(
        (w, (inter["user_idx"].to_numpy(), inter["item_idx"].to_numpy())),
        shape=(data.n_users, data.n_items),
    )
    hist.sum_duplicates()
    prof = sp.csr_matrix(hist @ model.item_vectors.astype(np.float64))
    prof.eliminate_zeros()
    norms = np.sqrt(np.asarray(prof.multiply(prof).sum(axis=1)).ravel())
    prof = sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-300), 0.0)) @ prof
    prof = sp.csr_matrix(prof, dtype=np.float32)
    prof.sort_indices()
    return prof


@pytest.mark.parametrize("weights", ["plain", "tiny", "nan"])
def test_tfidf_profiles_equal_the_plain_formula_bit_for_bit(rich_data: TrainData, weights) -> None:
    """The profiles take only the touched items' rows when a few users touch few items, and
    scale rows in place: the same bits as the plain formula, for the whole fold (every
    item touched: the whole matrix), for each user alone (the service's one history: the
    touched rows), for weights so small that a profile's squares underflow (its norm is
    0, so it is empty either way), and for a user whose weights are not numbers (no norm:
    an empty row, as the diagonal product leaves it)."""
    data = rich_data
    tiny = weights == "tiny"
    if weights != "plain":
        inter = data.interactions
        if tiny:
            inter = inter.assign(weight=inter["weight"] * 1e-170)
        else:
            inter = inter.assign(weight=inter["weight"].where(inter["user_idx"] != 4, np.nan))
        data = TrainData(inter, data.items, data.users)
    model = TfIdf(TfIdfConfig(half_life_days=30.0)).fit(data)
    parts = [data] + [
        TrainData(
            data.interactions[data.interactions["user_idx"] == u].assign(user_idx=0),
            data.items,
            data.users.iloc[:1],
        )
        for u in np.unique(data.interactions["user_idx"])
    ]
    for part in parts:
        got, want = model._profiles(part, data.now), reference_profiles(model, part, data.now)
        assert got.shape == want.shape and got.dtype == want.dtype == np.float32
        assert np.array_equal(got.indptr, want.indptr)
        assert np.array_equal(got.indices, want.indices)
        assert np.array_equal(got.data, want.data)
    assert model.profiles.nnz > 0 or tiny
    if tiny:  # every norm underflowed: nobody has a profile, as with the plain formula
        assert model.profiles.nnz == 0
    if weights == "nan":
        assert model.profiles[4].nnz == 0 and model.profiles[5].nnz > 0
