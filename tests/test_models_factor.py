"""Factor models: faiss retrieval (FactorIndex), SVD (surprise) and ALS (implicit).

Known answers for the retrieval (a brute-force numpy ranking), agreement of SVD's numpy
scores with surprise's own ``predict`` (the only place a test calls it), and a check that
every main hyper-parameter and the seed change the output.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from pydantic import ValidationError

from recpipe.artifacts import load_model, save_model
from recpipe.models.als import ALS, ALSConfig, confidence
from recpipe.models.base import TrainData, top_n
from recpipe.models.retrieval import FactorIndex, RetrievalConfig
from recpipe.models.svd import (
    SVD,
    SVDConfig,
    fit_surprise,
    training_ratings,
    weights_to_ratings,
)
from recpipe.persist import load, save

# -- data -------------------------------------------------------------------------------


def make_data(inter: pd.DataFrame, n_users: int, n_items: int) -> TrainData:
    """TrainData over a catalogue of ``n_items`` and ``n_users`` from index-space rows."""
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "item_idx": np.arange(n_items),
            "title": [f"title {i}" for i in range(n_items)],
            "text": [""] * n_items,
            "categories": [[] for _ in range(n_items)],
        }
    )
    users = pd.DataFrame(
        {"user_id": [f"u{u}" for u in range(n_users)], "user_idx": np.arange(n_users)}
    )
    return TrainData(inter.reset_index(drop=True), items, users)


N_USERS, N_ITEMS = 62, 45
NO_RATING_USER = N_USERS - 2  # only unrated events: no SVD vector with rating_source=rating
COLD_USER = N_USERS - 1  # no history at all
COLD_ITEM = N_ITEMS - 1  # never touched


@pytest.fixture(scope="module")
def rated() -> TrainData:
    """Ratings from a 3-factor taste model plus noise, with varied event weights."""
    rng = np.random.default_rng(11)
    p = rng.normal(size=(N_USERS, 3))
    q = rng.normal(size=(N_ITEMS, 3))
    rows = []
    t = 0
    for u in range(N_USERS - 2):
        for i in rng.choice(N_ITEMS - 1, 18, replace=False):
            t += 1
            r = float(np.clip(np.rint(3.5 + p[u] @ q[i] + rng.normal(0, 0.5)), 1, 5))
            rows.append((u, int(i), r, "rating", float(rng.integers(1, 6)), t))
    for i in range(5):
        t += 1
        rows.append((NO_RATING_USER, i, np.nan, "view", 1.0, t))
    inter = pd.DataFrame(
        rows, columns=["user_idx", "item_idx", "rating", "event", "weight", "timestamp"]
    )
    return make_data(inter, N_USERS, N_ITEMS)


@pytest.fixture(scope="module")
def implicit_log(rated: TrainData) -> TrainData:
    """The same pairs as ``rated`` without ratings (an implicit log)."""
    inter = rated.interactions.assign(rating=np.nan, event="view")
    return make_data(inter, N_USERS, N_ITEMS)


# -- FactorIndex ------------------------------------------------------------------------


def random_index(seed: int = 0, n_users: int = 70, n_items: int = 400, d: int = 6, **kw):
    """A FactorIndex with biases, offsets, unknown users/items, and the inputs it was made of."""
    rng = np.random.default_rng(seed)
    parts = {
        "users": rng.normal(size=(n_users, d)).astype(np.float32),
        "items": rng.normal(size=(n_items, d)).astype(np.float32),
        "offset": rng.normal(size=n_users).astype(np.float32),
        "bias": rng.normal(size=n_items).astype(np.float32),
        "known_users": rng.random(n_users) > 0.1,
        "known_items": rng.random(n_items) > 0.1,
    }
    index = FactorIndex(
        parts["users"],
        parts["items"],
        user_offset=parts["offset"],
        item_bias=parts["bias"],
        known_users=parts["known_users"],
        known_items=parts["known_items"],
        **kw,
    )
    return index, parts


def random_seen(seed: int, n_users: int, n_items: int) -> sp.csr_matrix:
    """Seen matrix with very different counts per user (one user saw most of the catalogue)."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < rng.uniform(0, 0.3, size=(n_users, 1))
    dense[3, : int(n_items * 0.8)] = True
    return sp.csr_matrix(dense.astype(np.float32))


def brute_force(parts: dict, users: np.ndarray, n: int, seen: sp.csr_matrix) -> dict:
    """Each known user's top-n (item, score) by a full float64 numpy sort."""
    scores = (
        parts["users"].astype(np.float64) @ parts["items"].T.astype(np.float64)
        + parts["bias"][None, :]
        + parts["offset"][:, None]
    )
    out = {}
    for u in users:
        if not parts["known_users"][u]:
            continue
        ok = parts["known_items"] & (seen[u].toarray().ravel() == 0)
        cand = np.flatnonzero(ok)
        order = np.lexsort((cand, -scores[u, cand]))[:n]
        out[u] = (cand[order], scores[u, cand[order]])
    return out


def test_exact_index_equals_brute_force() -> None:
    index, parts = random_index()
    index.block_size = 16  # several faiss blocks with different fetch sizes
    seen = random_seen(1, 70, 400)
    users = np.arange(70)
    recs = index.recommend(users, 10, seen)
    expected = brute_force(parts, users, 10, seen)
    assert set(recs["user_idx"]) == set(expected)
    for u, g in recs.groupby("user_idx"):
        items, scores = expected[u]
        assert g["item_idx"].tolist() == items.tolist()
        assert g["rank"].tolist() == list(range(1, 11))
        np.testing.assert_allclose(g["score"], scores, rtol=1e-5, atol=1e-5)


def test_explicit_zeros_in_seen_exclude_nothing() -> None:
    """An entry of ``seen`` stored as 0 is not seen (as in the dense ranking)."""
    index, parts = random_index(seed=4)
    index.block_size = 16
    seen = random_seen(5, 70, 400)
    seen.data[::3] = 0.0  # stored, but zero
    users = np.arange(70)
    recs = index.recommend(users, 10, seen)
    expected = brute_force(parts, users, 10, seen)
    assert set(recs["user_idx"]) == set(expected)
    for u, g in recs.groupby("user_idx"):
        assert g["item_idx"].tolist() == expected[u][0].tolist()


def test_seen_columns_past_the_catalogue_are_ignored() -> None:
    index, _ = random_index(seed=6)
    seen = random_seen(7, 70, 400)
    wider = sp.hstack([seen, sp.csr_matrix(np.ones((70, 3), dtype=np.float32))]).tocsr()
    users = np.arange(70)
    pd.testing.assert_frame_equal(
        index.recommend(users, 10, wider), index.recommend(users, 10, seen)
    )


def test_exact_index_equals_dense_top_n_and_score() -> None:
    index, _ = random_index(seed=2)
    seen = random_seen(3, 70, 400)
    users = np.arange(70)
    recs = index.recommend(users, 25, seen)
    known = users[index.known_users]
    dense = top_n(known, index.score_users(known), seen[known], 25)
    pd.testing.assert_frame_equal(recs[["user_idx", "item_idx", "rank"]], dense.iloc[:, [0, 1, 3]])
    np.testing.assert_allclose(recs["score"], dense["score"], rtol=1e-5, atol=1e-5)
    # recommend and score share their arithmetic: identical values, not just close ones.
    np.testing.assert_array_equal(
        index.score(recs["user_idx"].to_numpy(), recs["item_idx"].to_numpy()), recs["score"]
    )


def test_lists_do_not_depend_on_the_block_even_for_users_settled_on_the_full_row(
    monkeypatch,
) -> None:
    """Items sharing one vector tie with the n-th item past the fetched window, so those
    users' lists are settled on their full rows: scored as ``score`` scores (not by a
    matrix product, whose last bits depend on which users share the block), so every
    blocking gives the same frame to the bit, and the scores equal ``score``'s."""
    index, parts = random_index(seed=8, n_items=300)
    # 60 items with one vector and a bias (the last column) that puts them first for all
    index.item_vectors[:60] = index.item_vectors[0]
    index.item_vectors[:60, -1] = 100.0
    seen = random_seen(9, 70, 300)
    users = np.arange(70)
    settled = []
    exact_rows = FactorIndex._exact_rows
    monkeypatch.setattr(
        FactorIndex, "_exact_rows", lambda self, u: settled.append(len(u)) or exact_rows(self, u)
    )
    frames = []
    for size in (1000, 16, 5, 1):
        index.block_size = size
        frames.append(index.recommend(users, 10, seen))
    assert sum(settled) > 0  # the full-row path was taken
    for other in frames[1:]:
        pd.testing.assert_frame_equal(other, frames[0])
    recs = frames[0]
    np.testing.assert_array_equal(
        index.score(recs["user_idx"].to_numpy(), recs["item_idx"].to_numpy()), recs["score"]
    )
    assert recs["user_idx"].is_monotonic_increasing


def test_more_wanted_than_available_returns_every_unseen_known_item() -> None:
    index, parts = random_index(seed=4, n_items=30)
    seen = random_seen(5, 70, 30)
    recs = index.recommend(np.array([3]), 1000, seen)
    assert len(recs) == (parts["known_items"] & (seen[3].toarray().ravel() == 0)).sum()


def clustered(seed: int = 0, n_items: int = 3000, n_users: int = 200, d: int = 16):
    """Item and user vectors drawn around 30 shared centres (the shape real factors have)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d)) * 3
    items = centres[rng.integers(0, 30, n_items)] + rng.normal(size=(n_items, d))
    users = centres[rng.integers(0, 30, n_users)] + rng.normal(size=(n_users, d))
    return users.astype(np.float32), items.astype(np.float32)


@pytest.mark.parametrize(
    "retrieval",
    [
        RetrievalConfig(index="ivf", nlist=40, nprobe=8),
        RetrievalConfig(index="hnsw", hnsw_m=16, ef_search=64),
    ],
    ids=["ivf", "hnsw"],
)
def test_approximate_index_finds_most_of_the_exact_top_n(retrieval: RetrievalConfig) -> None:
    users, items = clustered()
    seen = random_seen(6, len(users), len(items))
    exact = FactorIndex(users, items).recommend(np.arange(len(users)), 10, seen)
    approx = FactorIndex(users, items, config=retrieval, seed=1)
    got = approx.recommend(np.arange(len(users)), 10, seen)
    pairs = set(zip(got["user_idx"], got["item_idx"], strict=True))
    truth = set(zip(exact["user_idx"], exact["item_idx"], strict=True))
    assert len(pairs & truth) / len(truth) >= 0.9
    assert not pairs & set(zip(*seen.nonzero(), strict=True))
    # Rebuilt from scratch (k-means / graph construction), the result is the same.
    again = FactorIndex(users, items, config=retrieval, seed=1)
    pd.testing.assert_frame_equal(got, again.recommend(np.arange(len(users)), 10, seen))
    # Built ahead of the first search (as the bundle does before it forks), the same again.
    ahead = FactorIndex(users, items, config=retrieval, seed=1)
    ahead.build()
    assert ahead._index is not None
    pd.testing.assert_frame_equal(got, ahead.recommend(np.arange(len(users)), 10, seen))


def test_ties_are_broken_by_item_index() -> None:
    """Identical item vectors tie everywhere: the lowest unseen indices win, in order."""
    items = np.tile(np.array([[1.0, 2.0]], dtype=np.float32), (50, 1))
    users = np.array([[0.5, 0.1], [1.0, 1.0]], dtype=np.float32)
    seen = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 1], [0, 2, 1])), shape=(2, 50))
    recs = FactorIndex(users, items).recommend(np.array([0, 1]), 4, seen)
    assert recs[recs["user_idx"] == 0]["item_idx"].tolist() == [1, 3, 4, 5]
    assert recs[recs["user_idx"] == 1]["item_idx"].tolist() == [0, 2, 3, 4]


def test_ties_in_pairs_match_dense_top_n_and_do_not_depend_on_the_block() -> None:
    rng = np.random.default_rng(8)
    items = np.repeat(rng.normal(size=(100, 4)).astype(np.float32), 2, axis=0)  # twins
    users = rng.normal(size=(40, 4)).astype(np.float32)
    seen = random_seen(9, 40, 200)
    index = FactorIndex(users, items)
    recs = index.recommend(np.arange(40), 7, seen)
    dense = top_n(np.arange(40), index.score_users(np.arange(40)), seen, 7)
    pd.testing.assert_frame_equal(recs[["user_idx", "item_idx", "rank"]], dense.iloc[:, [0, 1, 3]])
    one = index.recommend(np.array([17]), 7, seen)
    pd.testing.assert_frame_equal(one, recs[recs["user_idx"] == 17].reset_index(drop=True))


def test_unknown_users_and_items_get_nothing() -> None:
    index, parts = random_index(seed=10)
    seen = sp.csr_matrix((70, 400), dtype=np.float32)
    unknown_user = int(np.flatnonzero(~parts["known_users"])[0])
    unknown_item = int(np.flatnonzero(~parts["known_items"])[0])
    assert len(index.recommend(np.array([unknown_user, -3, 70, 999]), 5, seen)) == 0
    recs = index.recommend(np.arange(70), 400, seen)
    assert unknown_item not in set(recs["item_idx"])
    s = index.score(np.array([unknown_user, 0, -1, 0]), np.array([0, unknown_item, 0, 400]))
    assert np.isnan(s).all()
    block = index.score_users(np.array([unknown_user, 0]))
    assert np.isnan(block[0]).all() and np.isnan(block[1, unknown_item])
    assert np.isfinite(np.delete(block[1], np.flatnonzero(~parts["known_items"]))).all()


def test_saved_index_rebuilds_faiss_and_gives_the_same_result(tmp_path) -> None:
    index, _ = random_index(seed=12, config=RetrievalConfig(index="hnsw"))
    seen = random_seen(13, 70, 400)
    recs = index.recommend(np.arange(70), 5, seen)
    save(index, tmp_path / "index", "test")
    copy = load(tmp_path / "index", "test")
    assert copy._index is None  # the faiss index is derived data: not saved, rebuilt
    pd.testing.assert_frame_equal(copy.recommend(np.arange(70), 5, seen), recs)


def test_retrieval_config_is_validated() -> None:
    assert SVDConfig(retrieval={"index": "ivf"}).retrieval.index == "ivf"
    with pytest.raises(ValidationError, match="nprob"):
        ALSConfig(retrieval={"nprob": 3})
    with pytest.raises(ValidationError):
        ALSConfig(retrieval={"index": "annoy"})


# -- SVD --------------------------------------------------------------------------------

SMALL_SVD = {"factors": 6, "epochs": 15}


def svd(data: TrainData, seed: int = 0, **kw) -> SVD:
    return SVD(SVDConfig(**{**SMALL_SVD, **kw}), seed=seed).fit(data)


@pytest.mark.parametrize("biased", [True, False])
def test_svd_scores_equal_surprise_predict(rated: TrainData, biased: bool) -> None:
    """Our numpy scores = surprise's unclipped estimate (the only test calling predict)."""
    cfg = SVDConfig(**SMALL_SVD, biased=biased)
    model = SVD(cfg, seed=5).fit(rated)
    algo, _ = fit_surprise(training_ratings(rated, cfg), cfg, 5)
    pairs = [(0, 0), (1, 7), (13, 40), (25, 3), (59, 21), (44, 44 - 1)]
    users, items = np.array(pairs).T
    est = np.array([algo.predict(u, i, clip=False).est for u, i in pairs])
    clipped = np.array([algo.predict(u, i).est for u, i in pairs])
    np.testing.assert_allclose(model.score(users, items), est, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict_ratings(users, items), clipped, rtol=1e-5, atol=1e-5)


def test_svd_predict_ratings_are_clipped_to_the_scale(rated: TrainData) -> None:
    model = svd(rated, epochs=60, lr_all=0.05, reg_all=0.0)
    users, items = (a.ravel() for a in np.meshgrid(np.arange(N_USERS), np.arange(N_ITEMS)))
    raw = model.score(users, items)
    assert (raw[np.isfinite(raw)] > 5).any() and (raw[np.isfinite(raw)] < 1).any()
    pred = model.predict_ratings(users, items)
    np.testing.assert_array_equal(np.isnan(pred), np.isnan(raw))
    assert np.nanmin(pred) == 1.0 and np.nanmax(pred) == 5.0
    np.testing.assert_array_equal(pred, np.clip(raw, 1.0, 5.0))


def test_svd_without_a_rating_has_no_score(rated: TrainData) -> None:
    model = svd(rated)
    assert np.isnan(model.score(np.array([NO_RATING_USER, COLD_USER, 0]), [0, 0, COLD_ITEM])).all()
    assert np.isnan(model.predict_ratings(np.array([COLD_USER]), np.array([0]))).all()
    assert len(model.recommend(np.array([NO_RATING_USER, COLD_USER]), 5)) == 0
    # With weights, the unrated events count: that user gets a vector.
    assert len(svd(rated, rating_source="weight").recommend(np.array([NO_RATING_USER]), 5)) == 5


def test_svd_recommendations_are_its_best_unseen_scores(rated: TrainData) -> None:
    model = svd(rated)
    users = np.arange(N_USERS)
    recs = model.recommend(users, 8)
    known = np.unique(recs["user_idx"])
    dense = top_n(known, model.score_users(known), model.seen[known], 8)
    pd.testing.assert_frame_equal(recs[["user_idx", "item_idx", "rank"]], dense.iloc[:, [0, 1, 3]])


def test_weights_map_to_the_rating_scale() -> None:
    cfg = SVDConfig(min_rating=1.0, max_rating=5.0, weight_cap_quantile=0.5)
    w = np.array([0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 1000.0])
    r = weights_to_ratings(w, cfg)
    # The median (between 5 and 8) is the cap: above it, the top of the scale.
    assert r[0] == 1.0 and (r[5:] == 5.0).all()
    assert (np.diff(r[:6]) > 0).all()
    np.testing.assert_allclose(r[2], 1.0 + 4.0 * np.log1p(2.0) / np.median(np.log1p(w)))
    assert weights_to_ratings(np.ones(4), cfg).tolist() == [5.0] * 4


def test_svd_on_implicit_data_falls_back_to_weights(implicit_log: TrainData) -> None:
    by_rating = svd(implicit_log, rating_source="rating")
    by_weight = svd(implicit_log, rating_source="weight")
    np.testing.assert_array_equal(by_rating.user_factors, by_weight.user_factors)
    pred = by_weight.predict_ratings(np.arange(5), np.arange(5))
    assert np.nanmin(pred) >= 1.0 and np.nanmax(pred) <= 5.0


@pytest.mark.parametrize(
    "change",
    [
        {"factors": 4},
        {"epochs": 5},
        {"lr_all": 0.01},
        {"reg_all": 0.5},
        {"init_std": 0.3},
        {"biased": False},
        {"rating_source": "weight"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_svd_setting_changes_the_scores(rated: TrainData, change: dict) -> None:
    users = np.arange(N_USERS - 2)
    base = svd(rated).score_users(users)
    other = svd(rated, **change).score_users(users)
    assert not np.allclose(base, other, equal_nan=True)


def test_svd_seed(rated: TrainData) -> None:
    a, b, c = svd(rated, seed=1), svd(rated, seed=1), svd(rated, seed=2)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    pd.testing.assert_frame_equal(a.recommend(np.arange(10), 5), b.recommend(np.arange(10), 5))
    assert not np.allclose(a.item_factors, c.item_factors)


# -- ALS --------------------------------------------------------------------------------

# Light regularisation: the default (10) is meant for real data and flattens this tiny set.
SMALL_ALS = {"factors": 6, "iterations": 8, "regularization": 1.0}


def als(data: TrainData, seed: int = 0, **kw) -> ALS:
    return ALS(ALSConfig(**{**SMALL_ALS, **kw}), seed=seed).fit(data)


def test_confidence_is_one_plus_alpha_times_value() -> None:
    x = sp.csr_matrix(np.array([[0.0, 2.0], [1.0, 0.0]], dtype=np.float32))
    c = confidence(x, 3.0)
    np.testing.assert_array_equal(c.toarray(), [[0.0, 7.0], [4.0, 0.0]])
    assert c.nnz == 2 and x.data.tolist() == [2.0, 1.0]  # input untouched, zeros stay absent


def test_als_masks_users_and_items_without_interactions(rated: TrainData) -> None:
    model = als(rated)
    # implicit gave them vectors; they must not be used.
    assert model.item_factors.shape[0] == N_ITEMS
    assert np.isnan(model.score(np.array([COLD_USER, 0]), np.array([0, COLD_ITEM]))).all()
    recs = model.recommend(np.arange(N_USERS), 50)
    assert COLD_ITEM not in set(recs["item_idx"]) and COLD_USER not in set(recs["user_idx"])
    assert NO_RATING_USER in set(recs["user_idx"])  # binary value: unrated events count
    assert len(als(rated, value="rating").recommend(np.array([NO_RATING_USER]), 5)) == 0


@pytest.mark.parametrize(
    "change",
    [
        {"factors": 4},
        {"iterations": 2},
        {"regularization": 5.0},
        {"alpha": 5.0},
        {"value": "weight"},
        {"value": "rating"},
        {"use_cg": False},
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))}",
)
def test_every_als_setting_changes_the_scores(rated: TrainData, change: dict) -> None:
    users = np.arange(N_USERS - 2)
    base = als(rated).score_users(users)
    other = als(rated, **change).score_users(users)
    assert not np.allclose(base, other, equal_nan=True)


def test_als_seed(rated: TrainData) -> None:
    a, b, c = als(rated, seed=1), als(rated, seed=1), als(rated, seed=2)
    np.testing.assert_array_equal(a.user_factors, b.user_factors)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    pd.testing.assert_frame_equal(a.recommend(np.arange(10), 5), b.recommend(np.arange(10), 5))
    assert not np.allclose(a.item_factors, c.item_factors)


@pytest.mark.parametrize("use_cg", [True, False])
def test_als_thread_count_does_not_change_the_factors(rated: TrainData, use_cg: bool) -> None:
    """Guards the claim behind ``num_threads: 0``: training threads change speed only."""
    one = als(rated, num_threads=1, use_cg=use_cg)
    many = als(rated, num_threads=4, use_cg=use_cg)
    np.testing.assert_array_equal(one.user_factors, many.user_factors)
    np.testing.assert_array_equal(one.item_factors, many.item_factors)


@pytest.mark.parametrize("model", ["svd", "als"])
def test_fitted_models_save_without_faiss_state(rated: TrainData, model: str, tmp_path) -> None:
    fitted = svd(rated) if model == "svd" else als(rated)
    recs = fitted.recommend(np.arange(N_USERS), 5)
    save_model(fitted, tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    copy = load_model(tmp_path)
    assert copy.index._index is None
    pd.testing.assert_frame_equal(copy.recommend(np.arange(N_USERS), 5), recs)
