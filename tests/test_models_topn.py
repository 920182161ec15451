"""Top-N and pair scores without the dense users x items block give exactly the dense path's
results: ``top_n_sparse`` and ``top_n_ordered`` against ``top_n``, and every model that
takes a shortcut (sparse products, one popularity order, EASE's active columns) against
ranking its own dense ``score_users``."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recpipe.dataset import TrainData
from recpipe.models.base import SparseScores, concat_recs, top_n, top_n_ordered, top_n_sparse
from recpipe.models.registry import model_class


def dense_top_n(users: np.ndarray, dense: np.ndarray, seen: sp.csr_matrix, n: int) -> pd.DataFrame:
    return concat_recs([top_n(users, dense.astype(np.float32, copy=True), seen, n)])


def random_scores(seed: int, n_users: int = 30, n_items: int = 25) -> SparseScores:
    """Sparse scores with positives, negatives, stored zeros and ties, some rows nearly
    empty (so zeros and negatives fill their lists), an unscorable user and items."""
    rng = np.random.default_rng(seed)
    density = rng.uniform(0.02, 0.6, size=(n_users, 1))
    mask = rng.random((n_users, n_items)) < density
    values = rng.choice(np.array([-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0], np.float32), mask.shape)
    values += np.where(rng.random(mask.shape) < 0.5, rng.random(mask.shape), 0).astype(np.float32)
    rows, cols = np.nonzero(mask)
    m = sp.csr_matrix((values[rows, cols], (rows, cols)), shape=(n_users, n_items))
    # rows unsorted, as a sparse product leaves them
    for row in range(n_users):
        lo, hi = m.indptr[row], m.indptr[row + 1]
        order = lo + rng.permutation(hi - lo)
        m.indices[lo:hi], m.data[lo:hi] = m.indices[order], m.data[order]
    m.has_sorted_indices = False
    users_ok = rng.random(n_users) > 0.1
    items_ok = rng.random(n_items) > 0.15
    return SparseScores(m, users_ok, items_ok)


def random_seen(seed: int, n_users: int, n_items: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed + 100)
    mask = rng.random((n_users, n_items)) < rng.uniform(0, 0.5, size=(n_users, 1))
    seen = sp.csr_matrix(mask.astype(np.float32))
    if seen.nnz:
        seen.data[0] = 0.0  # a stored zero is not seen
    return seen


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("n", [1, 3, 10, 40])
def test_top_n_sparse_equals_dense(seed: int, n: int) -> None:
    scores = random_scores(seed)
    users = np.arange(100, 100 + scores.matrix.shape[0], dtype=np.int64)
    seen = random_seen(seed, *scores.matrix.shape)
    expected = dense_top_n(users, scores.dense(), seen, n)
    got = concat_recs([top_n_sparse(users, scores, seen, n)])
    pd.testing.assert_frame_equal(got, expected)


def test_top_n_sparse_fills_short_rows_with_zeros_then_negatives() -> None:
    m = sp.csr_matrix(np.array([[0.0, -1.0, 3.0, 0.0, -0.5]], dtype=np.float32))
    scores = SparseScores(m, np.array([True]), np.array([True, True, True, False, True]))
    recs = top_n_sparse(np.array([7]), scores, sp.csr_matrix((1, 5)), 5)
    assert recs["item_idx"].tolist() == [2, 0, 4, 1]  # item 3 cannot be scored
    assert recs["score"].tolist() == [3.0, 0.0, -0.5, -1.0]
    assert recs["rank"].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("n", [1, 5, 30])
def test_top_n_ordered_equals_dense(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = 20, 24
    values = rng.choice(np.array([1.0, 2.0, 3.5, np.nan], np.float32), n_items)
    scored = np.flatnonzero(~np.isnan(values))
    order = scored[np.lexsort((scored, -values[scored]))]
    users = np.arange(n_users, dtype=np.int64) * 3
    seen = random_seen(seed, n_users, n_items)
    expected = dense_top_n(users, np.tile(values, (n_users, 1)), seen, n)
    got = concat_recs([top_n_ordered(users, order, values[order], seen, n)])
    pd.testing.assert_frame_equal(got, expected)


def shop(seed: int = 0, n_users: int = 60, n_items: int = 45) -> TrainData:
    """Users with 1 to 25 events (light users get short sparse lists), some negative weights,
    repeated pairs, categories, and items nobody touched."""
    rng = np.random.default_rng(seed)
    rows = []
    t = 0
    for u in range(n_users - 2):  # the last two users have no history
        for i in rng.choice(n_items - 3, int(rng.integers(1, 26)), replace=True):
            t += int(rng.integers(0, 3))
            weight = float(rng.choice([1.0, 0.5, -1.0, 2.0]))
            rows.append((u, int(i), float(rng.integers(1, 6)), "view", weight, t))
    inter = pd.DataFrame(
        rows, columns=["user_idx", "item_idx", "rating", "event", "weight", "timestamp"]
    )
    inter["user_id"] = inter["user_idx"].astype(str)
    inter["item_id"] = inter["item_idx"].astype(str)
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(n_items)],
            "item_idx": np.arange(n_items),
            "title": [f"item {i}" for i in range(n_items)],
            "text": [f"word{i % 5} term{i % 3}" for i in range(n_items)],
            "categories": [[f"c{i % 4}"] for i in range(n_items)],
        }
    )
    users = pd.DataFrame({"user_id": [str(u) for u in range(n_users)]})
    users["user_idx"] = np.arange(n_users)
    return TrainData(inter, items, users)


CASES = [
    ("popularity", {}),
    ("popularity", {"count": "weight", "half_life_days": 3.0}),
    ("popularity", {"per_category": True}),
    ("itemknn", {"neighbours": 5}),
    ("itemknn", {"value": "weight", "neighbours": 0}),
    ("seqknn", {"window": 2, "neighbours": 4}),
    ("seqknn", {"direction": "forward", "neighbours": 3, "history": 3}),
    ("tfidf", {}),
    ("tfidf", {"half_life_days": 2.0, "min_df": 2}),
    ("ease", {"l2": 5.0}),
    ("ease", {"l2": 5.0, "max_items": 12}),
    ("ease", {"l2": 2.0, "value": "weight"}),
]


_FITTED: dict[int, object] = {}


def fitted_case(case: int):
    """A fresh copy of CASES[case] fitted on :func:`shop` (fitted once per case: the routes
    and list lengths of the test below change only how the model scores)."""
    if case not in _FITTED:
        name, settings = CASES[case]
        cls = model_class(name)
        _FITTED[case] = cls(cls.config_class(**settings), seed=3).fit(shop())
    return copy.deepcopy(_FITTED[case])


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{n}-{s}" for n, s in CASES])
@pytest.mark.parametrize("n", [3, 30])
@pytest.mark.parametrize(
    ("sparse_pairs", "sparse_top_n"), [(False, False), (True, True), (True, False), (False, True)]
)
def test_model_shortcuts_equal_ranking_the_dense_scores(
    case: int, n: int, sparse_pairs: bool, sparse_top_n: bool, monkeypatch
) -> None:
    """recommend and score, and the same through held scores (Recommender.hold), against
    the dense scores."""
    # sparse products take each sparse routine always, or never
    monkeypatch.setattr(SparseScores, "is_sparse", lambda self: sparse_pairs)
    monkeypatch.setattr(SparseScores, "sparse_top_n_pays", lambda self: sparse_top_n)
    model = fitted_case(case)
    model.block_size = 7  # several blocks, including a short last one
    users = np.arange(-1, model.n_users + 2)  # out-of-range users get nothing
    in_range = np.arange(model.n_users)
    expected = dense_top_n(in_range, model.score_users(in_range), model.seen[in_range], n)
    pd.testing.assert_frame_equal(model.recommend(users, n), expected)

    rng = np.random.default_rng(1)
    pu = rng.integers(-1, model.n_users + 1, 500)
    pi = rng.integers(-1, model.n_items + 1, 500)
    dense = model.score_users(in_range)
    ok = (pu >= 0) & (pu < model.n_users) & (pi >= 0) & (pi < model.n_items)
    want = np.full(len(pu), np.nan, dtype=np.float32)
    want[ok] = dense[pu[ok], pi[ok]]
    np.testing.assert_array_equal(model.score(pu, pi).view(np.int32), want.view(np.int32))

    held = model.hold(users)
    pd.testing.assert_frame_equal(held.recommend(n), expected)
    np.testing.assert_array_equal(held.score(pu, pi).view(np.int32), want.view(np.int32))
    # a chunk the model has nothing for: the typed empty lists recommend gives
    cold = np.array([model.n_users - 2, model.n_users - 1, model.n_users + 3])
    pd.testing.assert_frame_equal(model.hold(cold).recommend(n), model.recommend(cold, n))


def reference_top_n(users: np.ndarray, scores: np.ndarray, seen: sp.csr_matrix, n: int):
    """Each row's finite scores fully sorted by (score descending, item): the definition
    top_n implements."""
    parts = []
    seen = seen.toarray() != 0
    for row, user in enumerate(users):
        ok = np.flatnonzero(np.isfinite(scores[row]) & ~seen[row])
        ok = ok[np.lexsort((ok, -scores[row, ok]))][:n]
        parts.append(
            pd.DataFrame(
                {
                    "user_idx": np.full(len(ok), user, dtype=np.int64),
                    "item_idx": ok.astype(np.int64),
                    "score": scores[row, ok].astype(np.float32),
                    "rank": np.arange(1, len(ok) + 1, dtype=np.int32),
                }
            )
        )
    return concat_recs(parts)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("n", [1, 4, 24, 50])
def test_top_n_ranks_by_score_then_item(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    # few distinct values: many ties, some at the n-th place; infinities and NaN too
    values = np.array([np.nan, -np.inf, -2.0, 0.0, 0.5, 1.0, 3.0, np.inf], np.float32)
    scores = rng.choice(values, size=(15, 24), p=[0.15, 0.05, 0.1, 0.2, 0.2, 0.15, 0.1, 0.05])
    users = np.arange(15, dtype=np.int64) + 5
    seen = random_seen(seed, 15, 24)
    before = scores.copy()
    got = concat_recs([top_n(users, scores, seen, n)])
    np.testing.assert_array_equal(scores, before)  # the caller's scores are left alone
    pd.testing.assert_frame_equal(got, reference_top_n(users, scores, seen, n))


@pytest.mark.parametrize("seed", range(20))
def test_item_neighbourhoods_keep_the_k_best_positives_ties_to_the_lower_item(seed: int) -> None:
    from recpipe.models.itemknn import _keep_top_k

    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    k = int(rng.integers(1, n + 3))
    values = np.array([0, 0, 0, 0.1, 0.2, 0.5, -0.1], np.float32)  # ties everywhere
    sim = rng.choice(values, size=(int(rng.integers(1, 40)), n))
    got = _keep_top_k(sim, k).toarray()
    want = np.zeros_like(sim)
    for row in range(len(sim)):
        cols = np.flatnonzero(sim[row] > 0)
        cols = cols[np.lexsort((cols, -sim[row, cols]))][:k]
        want[row, cols] = sim[row, cols]
    np.testing.assert_array_equal(got, want)


def test_tfidf_routes_give_the_same_floats_bit_for_bit(monkeypatch, tmp_path) -> None:
    # the synthetic shop's descriptions share a small vocabulary, as in the large catalogues
    # the dense route is for; decayed, repeated and variously weighted events, some negative
    import recpipe.models.tfidf as tfidf
    from recpipe.artifacts import load_model, save_model
    from recpipe.models.tfidf import TfIdf, TfIdfConfig
    from recpipe.schema import finalize
    from recpipe.sources.synthetic import SyntheticConfig, generate

    raw = generate(SyntheticConfig(n_users=120, n_items=90, n_events=3000), seed=5)
    inter, items, users, _ = finalize(raw.interactions, raw.items, raw.users, file="synthetic")
    inter.loc[::7, "weight"] *= -1.0
    # an item without a description and a user without history: both unscorable (NaN)
    items.loc[0, ["title", "text"]] = ""
    items.at[0, "categories"] = []
    extra = pd.DataFrame({"user_id": ["nobody"], "user_idx": [len(users)]})
    data = TrainData(inter, items, pd.concat([users, extra], ignore_index=True))
    model = TfIdf(TfIdfConfig(half_life_days=20.0)).fit(data)
    assert model.profiles.has_sorted_indices and model.item_vectors.has_sorted_indices
    users = np.arange(model.n_users)
    known = model._known_users
    sparse = model._scores(model.profiles, known).dense()
    assert np.isnan(sparse[-1]).all() and np.isnan(sparse[:, 0]).all()
    assert (sparse > 0).mean() > 0.3 and (sparse < 0).mean() > 0.02
    for step in (1, 7, 256):  # one user a product takes scipy's one-vector kernel
        monkeypatch.setattr(tfidf, "DENSE_CHUNK_USERS", step)
        dense = model._dense_scores(model.profiles, known)
        np.testing.assert_array_equal(dense.view(np.int32), sparse.view(np.int32))

    # through recommend and score: the dense route, and the sparse product with its sparse
    # top-N and pair look-ups
    lists = {}
    pu, pi = np.repeat(users, 5), np.tile(np.arange(5), len(users))
    for route in (True, False):
        monkeypatch.setattr(TfIdf, "dense_route_pays", lambda self, p, route=route: route)
        monkeypatch.setattr(SparseScores, "is_sparse", lambda self: True)
        monkeypatch.setattr(SparseScores, "sparse_top_n_pays", lambda self: True)
        model.block_size = 17
        lists[route] = model.recommend(users, 25)
        np.testing.assert_array_equal(
            model.score(pu, pi).view(np.int32), sparse[:, :5].ravel().view(np.int32)
        )
    pd.testing.assert_frame_equal(lists[True], lists[False])

    # a model saved before profiles kept their terms sorted is sorted when loaded
    old = model.profiles.copy()
    for row in range(old.shape[0]):
        lo, hi = old.indptr[row], old.indptr[row + 1]
        old.indices[lo:hi], old.data[lo:hi] = old.indices[lo:hi][::-1], old.data[lo:hi][::-1]
    old.has_sorted_indices = False
    model.profiles = old
    save_model(model, tmp_path / "tfidf")
    loaded = load_model(tmp_path / "tfidf")
    assert loaded.profiles.has_sorted_indices
    again = loaded._dense_scores(loaded.profiles, known)
    np.testing.assert_array_equal(again.view(np.int32), sparse.view(np.int32))


def test_tfidf_picks_the_dense_route_where_profiles_reach_most_items() -> None:
    from recpipe.models.tfidf import TfIdf, TfIdfConfig

    data = shop()
    model = TfIdf(TfIdfConfig()).fit(data)
    # shop's documents: 5 + 3 words and 4 categories over 45 items, so a profile meets
    # most items through a few terms: the dense route pays for a block of users
    assert model.dense_route_pays(model.profiles)
    # a profile of one rare term (an item's own title number) does not
    term = model.vocabulary["44"]
    rare = sp.csr_matrix(([1.0], ([0], [term])), shape=(1, model.profiles.shape[1]))
    assert not model.dense_route_pays(rare.astype(np.float32))


@pytest.mark.parametrize(("name", "settings"), [c for c in CASES if c[0] != "popularity"])
def test_blocks_in_threads_give_the_same_lists_and_scores(name: str, settings: dict) -> None:
    cls = model_class(name)
    assert cls.block_threads >= 1
    model = cls(cls.config_class(**settings), seed=3).fit(shop())
    model.block_size = 5  # many blocks, a short last one
    users = np.arange(model.n_users)
    rng = np.random.default_rng(2)
    pu, pi = rng.integers(-1, model.n_users + 1, 400), rng.integers(-1, model.n_items + 1, 400)
    model.block_threads = 1
    one, one_pairs = model.recommend(users, 10), model.score(pu, pi)
    model.block_threads = 3
    pd.testing.assert_frame_equal(model.recommend(users, 10), one)
    np.testing.assert_array_equal(model.score(pu, pi).view(np.int32), one_pairs.view(np.int32))
    held = model.hold(users)  # its blocks in threads too
    pd.testing.assert_frame_equal(held.recommend(10), one)
    np.testing.assert_array_equal(held.score(pu, pi).view(np.int32), one_pairs.view(np.int32))


def test_item_knn_similarity_blocks_in_threads_give_the_same_matrix() -> None:
    from recpipe.models.itemknn import ItemKNN, ItemKNNConfig

    fitted = []
    for threads in (1, 3):
        model = ItemKNN(ItemKNNConfig(neighbours=5))
        model.sim_block_size, model.block_threads = 4, threads  # 12 blocks of items
        fitted.append(model.fit(shop()).similarity)
    one, many = fitted
    assert one.nnz > 0 and (one != many).nnz == 0
    np.testing.assert_array_equal(one.indptr, many.indptr)
    np.testing.assert_array_equal(one.indices, many.indices)
    np.testing.assert_array_equal(one.data.view(np.int32), many.data.view(np.int32))


def test_ease_gram_matrix_in_threads_is_the_same_matrix() -> None:
    from recpipe.models.ease import gram_matrix

    x = shop().matrix("weight")
    want = (x.T @ x).toarray().astype(np.float32)
    for threads in (1, 3):
        got = gram_matrix(x, step=4, threads=threads)  # 12 blocks of rows
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
