"""The contract every registered candidate model keeps (one test class, run for each)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recpipe.artifacts import load_model, save_model
from recpipe.models.base import RECS_COLUMNS, Recommender, TrainData
from recpipe.models.registry import MODELS, model_class
from recpipe.models.retrieval import FactorIndex

# Small settings so the contract runs in seconds; defaults are for real data.
TEST_SETTINGS: dict[str, dict] = {
    "popularity": {"per_category": True},  # the tilt, so a history moves the scores
    "itemknn": {"neighbours": 20},
    "svd": {"factors": 8, "epochs": 30},
    "als": {"factors": 8, "iterations": 15},
    "tfidf": {},
    "ease": {"l2": 5.0},
    "seqknn": {"window": 3, "neighbours": 20},
}

N_USERS, N_ITEMS = 40, 30
COLD_ITEM = N_ITEMS - 1  # in the catalogue, never interacted with
COLD_USER = N_USERS - 1  # in the user table, no history


def block_data(seed: int = 0) -> TrainData:
    """Two tastes: users 0-19 like items 0-14 ('alpha' items), users 20-38 like 15-28.

    Each user saw 8 random items of their own block (and one of the other, as noise), so the
    right recommendations are the unseen items of the user's block.
    """
    rng = np.random.default_rng(seed)
    rows = []
    t = 0
    for u in range(N_USERS - 1):
        own = np.arange(0, 15) if u < 20 else np.arange(15, N_ITEMS - 1)
        other = np.arange(15, N_ITEMS - 1) if u < 20 else np.arange(0, 15)
        for i in rng.choice(own, 8, replace=False).tolist() + [int(rng.choice(other))]:
            t += 1
            rating = 5.0 if i in own else 1.0
            rows.append((u, i, rating, "rating", 1.0 if i in own else 0.5, t))
    inter = pd.DataFrame(
        rows, columns=["user_idx", "item_idx", "rating", "event", "weight", "timestamp"]
    )
    inter["user_id"] = inter["user_idx"].astype(str)
    inter["item_id"] = inter["item_idx"].astype(str)
    words_a = ["alpha", "river", "forest", "green"]
    words_b = ["beta", "steel", "city", "grey"]
    items = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(N_ITEMS)],
            "item_idx": np.arange(N_ITEMS),
            "title": [f"item {i}" for i in range(N_ITEMS)],
            "text": [
                " ".join(rng.choice(words_a if i < 15 else words_b, 3)) for i in range(N_ITEMS)
            ],
            "categories": [["outdoor"] if i < 15 else ["urban"] for i in range(N_ITEMS)],
        }
    )
    # The cold item is an 'alpha' item nobody has touched yet.
    items.loc[COLD_ITEM, "text"] = "alpha river forest green"
    items.loc[COLD_ITEM, "categories"] = ["outdoor"]
    users = pd.DataFrame(
        {"user_id": [str(u) for u in range(N_USERS)], "user_idx": np.arange(N_USERS)}
    )
    return TrainData(inter, items, users)


def tied_data() -> TrainData:
    """:func:`block_data` with events four at a time in one second (same-second ties, which
    SeqKNN breaks by a seeded hash of user and item) and every fifth event repeated later
    (duplicate pairs, whose weights are summed)."""
    data = block_data()
    inter = data.interactions.copy()
    inter["timestamp"] //= 4
    again = inter.iloc[::5].copy()
    again["timestamp"] += 7
    inter = pd.concat([inter, again], ignore_index=True)
    return TrainData(inter, data.items, data.users)


def history_of(data: TrainData, user: int) -> pd.DataFrame:
    """The user's rows of the fit's interactions, in their order there."""
    return data.interactions[data.interactions["user_idx"] == user]


def make(name: str, seed: int = 0, **overrides) -> Recommender:
    cls = model_class(name)
    cfg = cls.config_class(**{**TEST_SETTINGS[name], **overrides})
    return cls(cfg, seed=seed)


@pytest.fixture(scope="module")
def data() -> TrainData:
    return block_data()


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, data) -> Recommender:
    return make(request.param).fit(data)


def test_registry_names_match_classes() -> None:
    for name in MODELS:
        assert model_class(name).name == name


def test_recs_exclude_seen_and_are_well_formed(fitted: Recommender, data: TrainData) -> None:
    users = np.arange(N_USERS - 1)
    recs = fitted.recommend(users, 5)
    assert list(recs.columns) == ["user_idx", "item_idx", "score", "rank"]
    seen = set(zip(data.interactions["user_idx"], data.interactions["item_idx"], strict=True))
    assert not {(u, i) for u, i in zip(recs["user_idx"], recs["item_idx"], strict=True)} & seen
    for _, g in recs.groupby("user_idx"):
        assert g["rank"].tolist() == list(range(1, len(g) + 1))
        assert (np.diff(g["score"].to_numpy()) <= 1e-6).all()
        assert g["item_idx"].is_unique
    assert recs["score"].notna().all()
    assert set(recs["user_idx"]) == set(users)


def test_deterministic_for_a_seed(fitted: Recommender, data: TrainData) -> None:
    again = make(fitted.name).fit(data)
    users = np.arange(N_USERS - 1)
    pd.testing.assert_frame_equal(fitted.recommend(users, 5), again.recommend(users, 5))


def test_unknown_users_and_items_get_no_score(fitted: Recommender) -> None:
    # Indices outside the fitted ranges: NaN, never an exception.
    s = fitted.score(np.array([-1, N_USERS + 5, 0]), np.array([0, 0, N_ITEMS + 3]))
    assert np.isnan(s).all()
    recs = fitted.recommend(np.array([N_USERS + 5]), 5)
    assert len(recs) == 0
    if fitted.name != "popularity":
        # A user with no history cannot be personalised: no recommendations, NaN scores.
        assert len(fitted.recommend(np.array([COLD_USER]), 5)) == 0
        assert np.isnan(fitted.score(np.array([COLD_USER]), np.array([0]))).all()


def test_cold_item_is_scored_only_by_content_models(fitted: Recommender) -> None:
    s = fitted.score(np.array([0]), np.array([COLD_ITEM]))
    if fitted.name == "tfidf":
        assert np.isfinite(s).all()
    else:
        assert np.isnan(s).all()


def test_a_loaded_model_shares_an_equal_seen_matrix_and_refuses_another(
    fitted: Recommender, data: TrainData, tmp_path: Path
) -> None:
    save_model(fitted, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.seen is not data.seen
    loaded.share_seen(data.seen)
    assert loaded.seen is data.seen
    other = data.seen.copy()
    other.data = other.data * 2
    with pytest.raises(ValueError, match=f"{fitted.name}: the seen matrix"):
        loaded.share_seen(other)
    with pytest.raises(ValueError, match="the seen matrix"):
        loaded.share_seen(data.seen[:-1])
    assert loaded.seen is data.seen


def test_score_agrees_with_recommend(fitted: Recommender) -> None:
    recs = fitted.recommend(np.arange(N_USERS - 1), 5)
    s = fitted.score(recs["user_idx"].to_numpy(), recs["item_idx"].to_numpy())
    np.testing.assert_allclose(s, recs["score"].to_numpy(), rtol=1e-4, atol=1e-5)


def test_a_pairs_score_does_not_depend_on_the_pairs_scored_with_it(fitted: Recommender) -> None:
    """The blend's outputs do not depend on its block of users (blend.block_users): each
    block scores other pairs. Every pair of the grid, scored in one call, in shuffled
    subsets of six sizes and in blocks of 2 users, gives the same bits."""
    users, items = np.divmod(np.arange(N_USERS * N_ITEMS), N_ITEMS)
    users = np.r_[users, -1, N_USERS + 2]  # pairs out of range score NaN wherever they are
    items = np.r_[items, 0, 1]
    whole = fitted.score(users, items)
    rng = np.random.default_rng(4)
    for size in (1, 2, 7, 50, len(users) // 3, len(users)):
        pick = rng.permutation(len(users))[:size]
        got = fitted.score(users[pick], items[pick])
        assert np.array_equal(got, whole[pick], equal_nan=True), size
    blocked = copy.copy(fitted)
    # the user blocks of Recommender.score, 2 users each (the factor models and untilted
    # popularity score pairs without them)
    blocked.block_size = 2
    assert np.array_equal(blocked.score(users, items), whole, equal_nan=True)


def test_held_scores_give_what_recommend_and_score_give(fitted: Recommender) -> None:
    """The bundle's blend asks each model for a chunk of users' lists, then for the scores of
    their union's pairs, from one held block (Recommender.hold): the same bits as recommend
    and score, for any chunk and any of its pairs, the out-of-range ones included."""
    users, items = np.divmod(np.arange(N_USERS * N_ITEMS), N_ITEMS)
    whole = fitted.score(users, items)
    for chunk in (np.arange(N_USERS), np.array([3, 1, 3, 27, COLD_USER, -1, N_USERS + 4])):
        held = fitted.hold(chunk)
        for n in (1, 5, N_ITEMS):
            pd.testing.assert_frame_equal(held.recommend(n), fitted.recommend(chunk, n))
        mine = np.isin(users, chunk)
        pu = np.r_[users[mine], -1, N_USERS + 4, chunk[0]]
        pi = np.r_[items[mine], 0, 2, N_ITEMS + 1]
        got = held.score(pu, pi)
        assert got.dtype == np.float32
        assert np.array_equal(got[: mine.sum()], whole[mine], equal_nan=True)
        assert np.isnan(got[mine.sum() :]).all()
        none = held.score(pu[:0], pi[:0])
        assert none.dtype == np.float32 and none.shape == (0,)
    held = fitted.hold(np.array([2, 5]))
    if fitted.holds_scores:  # a user it does not hold is refused, not scored as another
        with pytest.raises(ValueError, match=f"{fitted.name}: user 4 is not among"):
            held.score(np.array([2, 4]), np.array([0, 0]))
    else:  # the others score any pair, as score does
        assert np.array_equal(
            held.score(np.array([2, 4]), np.array([0, 0])),
            fitted.score(np.array([2, 4]), np.array([0, 0])),
            equal_nan=True,
        )


@pytest.mark.parametrize("name", ["itemknn", "seqknn", "tfidf", "ease"])
def test_the_costly_models_compute_a_held_block_once(
    name: str, data: TrainData, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make(name).fit(data)
    calls = []
    compute = model._block_scores
    monkeypatch.setattr(model, "_block_scores", lambda users: calls.append(users) or compute(users))
    held = model.hold(np.arange(10))
    recs = held.recommend(5)
    held.score(recs["user_idx"].to_numpy(), recs["item_idx"].to_numpy() // 2)
    assert len(calls) == 1 and np.array_equal(calls[0], np.arange(10))
    model.recommend(np.arange(10), 5)  # without hold: computed for each
    assert len(calls) == 2


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"popularity"}))
def test_block_structure_is_recovered(name: str, data: TrainData) -> None:
    """Known answer: a user's top items come from the user's own taste block."""
    recs = make(name).fit(data).recommend(np.arange(N_USERS - 1), 3)
    own = np.where(recs["user_idx"] < 20, recs["item_idx"] < 15, recs["item_idx"] >= 15)
    assert own.mean() >= 0.9, f"{name}: only {own.mean():.0%} of top-3 from the user's block"


def test_tfidf_recommends_matching_cold_item(data: TrainData) -> None:
    recs = make("tfidf").fit(data).recommend(np.arange(20), 10)
    share = recs.groupby("user_idx")["item_idx"].apply(lambda s: COLD_ITEM in set(s)).mean()
    assert share >= 0.9


# -- scoring a history given at request time -----------------------------------------------

#: models that score an arbitrary history; all but ALS reproduce score_users bit for bit
HISTORY_MODELS = {"popularity", "itemknn", "ease", "seqknn", "tfidf", "als"}
EXACT_HISTORY = HISTORY_MODELS - {"als"}


def test_supports_history_is_declared_where_implemented() -> None:
    assert {n for n in MODELS if model_class(n).supports_history} == HISTORY_MODELS


def test_history_scores_equal_batch_scores(fitted: Recommender, data: TrainData) -> None:
    """Every user's own rows, scored as a history, give that user's batch scores exactly
    (the user without history included: NaN, or the global ranking for popularity)."""
    if fitted.name not in EXACT_HISTORY:
        pytest.skip(f"{fitted.name}: no exact history scores")
    batch = fitted.score_users(np.arange(N_USERS))
    for u in range(N_USERS):
        scores = fitted.score_history(history_of(data, u), data.now)
        assert scores.dtype == np.float32 and scores.shape == (N_ITEMS,)
        assert np.array_equal(scores, fitted.score_users(np.array([u]))[0], equal_nan=True), u
        assert np.array_equal(scores, batch[u], equal_nan=True), u


def test_history_scores_inside_shared_histories_equal_those_outside() -> None:
    """A fresh ranking scores one history with every model inside ``shared_histories``
    (checked and converted once): the same scores as each model alone; another frame
    inside the block is converted on its own, and a bad one still refused."""
    from recpipe.models.base import history_data, shared_histories

    data = tied_data()
    models = [make(name, seed=3).fit(data) for name in sorted(HISTORY_MODELS)]
    histories = [history_of(data, u) for u in range(3)]
    alone = [[m.score_history(h, data.now) for m in models] for h in histories]
    with shared_histories():
        for h, expected in zip(histories, alone, strict=True):
            for m, scores in zip(models, expected, strict=True):
                assert np.array_equal(m.score_history(h, data.now), scores, equal_nan=True)
        pd.testing.assert_frame_equal(
            history_data(histories[1], N_ITEMS).interactions,
            history_data(histories[1].copy(), N_ITEMS).interactions,
        )
        # models that keep every item share one TrainData; a mask gets its own rows
        assert history_data(histories[2], N_ITEMS) is history_data(histories[2], N_ITEMS)
        mask = np.ones(N_ITEMS, dtype=bool)
        mask[histories[2]["item_idx"].iloc[0]] = False
        kept = history_data(histories[2], N_ITEMS, mask).interactions["item_idx"]
        assert len(kept) == (~np.isin(histories[2]["item_idx"], np.flatnonzero(~mask))).sum()
        with pytest.raises(ValueError, match="outside"):
            history_data(histories[0].assign(item_idx=N_ITEMS), N_ITEMS)


# Settings that take the other branches of the user-side code (category tilt, decays,
# summed weights, the EASE item cap, SeqKNN's order options), on data with ties.
HISTORY_SETTINGS = [
    ("popularity", {"per_category": True, "category_beta": 2.0, "half_life_days": 0.001}),
    ("popularity", {"count": "weight", "per_category": True}),
    ("itemknn", {"value": "weight", "neighbours": 3}),
    ("ease", {"value": "weight", "max_items": 12}),
    ("tfidf", {"half_life_days": 0.0005}),
    ("seqknn", {}),
    ("seqknn", {"direction": "forward", "history": 3, "gap_decay": 0.5, "recency_decay": 0.3}),
]


@pytest.mark.parametrize(("name", "settings"), HISTORY_SETTINGS)
def test_history_scores_equal_batch_scores_for_other_settings(name: str, settings: dict) -> None:
    data = tied_data()
    model = make(name, seed=3, **settings).fit(data)
    batch = model.score_users(np.arange(N_USERS))
    for u in range(N_USERS):
        scores = model.score_history(history_of(data, u), data.now)
        assert np.array_equal(scores, batch[u], equal_nan=True), (name, settings, u)


def test_seqknn_history_breaks_same_second_ties_as_its_user() -> None:
    """Regression guard: ties are hashed with the history's user_idx. Without it (an
    anonymous visitor) the order of tied items may differ, which this data shows, so the
    exactness above really rests on the salt."""
    data = tied_data()
    model = make("seqknn", seed=3).fit(data)
    differs = 0
    for u in range(N_USERS - 1):
        anonymous = history_of(data, u).drop(columns="user_idx")
        scores = model.score_history(anonymous, data.now)
        differs += not np.array_equal(scores, model.score_users(np.array([u]))[0], equal_nan=True)
    assert differs > 0


def test_models_without_history_support_say_so(fitted: Recommender, data: TrainData) -> None:
    if fitted.supports_history:
        pytest.skip(f"{fitted.name} supports histories")
    history = history_of(data, 0)
    with pytest.raises(NotImplementedError, match=rf"{fitted.name}:.*supports_history"):
        fitted.score_history(history, data.now)
    with pytest.raises(NotImplementedError, match="supports_history"):
        fitted.recommend_history(history, data.now, 5)


def test_recommend_history_equals_recommend(fitted: Recommender, data: TrainData) -> None:
    """History items excluded; the user's own list from recommend, with user_idx 0."""
    if not fitted.supports_history:
        pytest.skip(f"{fitted.name} does not support histories")
    for u in range(N_USERS):
        history = history_of(data, u)
        recs = fitted.recommend_history(history, data.now, 5)
        assert list(recs.columns) == RECS_COLUMNS
        assert (recs["user_idx"] == 0).all()
        assert not set(recs["item_idx"]) & set(history["item_idx"])
        assert recs["rank"].tolist() == list(range(1, len(recs) + 1))
        if fitted.name in EXACT_HISTORY:
            expected = fitted.recommend(np.array([u]), 5).assign(user_idx=0)
            pd.testing.assert_frame_equal(recs, expected)
        else:  # ALS: the top-5 of its own (folded-in) scores
            scores = fitted.score_history(history, data.now)
            np.testing.assert_array_equal(recs["score"], scores[recs["item_idx"]])
            best = np.sort(np.delete(scores, history["item_idx"]))[::-1]
            np.testing.assert_array_equal(recs["score"], best[np.isfinite(best)][:5])


def test_history_edge_cases(fitted: Recommender, data: TrainData) -> None:
    """Empty histories, items the model never saw and repeated events behave as in the
    batch path; indices outside the catalogue and missing columns fail with the column."""
    if not fitted.supports_history:
        pytest.skip(f"{fitted.name} does not support histories")
    now = data.now
    no_history = fitted.score_users(np.array([COLD_USER]))[0]
    empty = history_of(data, COLD_USER)
    assert len(empty) == 0
    assert np.array_equal(fitted.score_history(empty, now), no_history, equal_nan=True)
    # an empty frame with only the required columns (a visitor who did nothing yet)
    bare = pd.DataFrame({"item_idx": [], "weight": [], "timestamp": []})
    assert np.array_equal(fitted.score_history(bare, now), no_history, equal_nan=True)
    assert len(fitted.recommend_history(empty, now, 5)) == len(fitted.recommend([COLD_USER], 5))

    own = history_of(data, 3)
    expected = fitted.score_history(own, now)
    cold = own.iloc[[-1]].assign(item_idx=COLD_ITEM, timestamp=now)
    with_cold = fitted.score_history(pd.concat([own, cold]), now)
    only_cold = fitted.score_history(cold, now)
    assert with_cold.shape == only_cold.shape == (N_ITEMS,)
    if fitted.name not in {"popularity", "tfidf"}:
        # items the model never saw are ignored (the catalogue's categories and texts
        # describe them for popularity's tilt and tfidf)
        assert np.array_equal(with_cold, expected, equal_nan=True)
        assert np.isnan(only_cold).all()
    repeated = pd.concat([own, own], ignore_index=True)
    assert np.array_equal(fitted.score_history(repeated, now), expected, equal_nan=True)

    for bad in (-1, N_ITEMS):
        with pytest.raises(ValueError, match="'item_idx'"):
            fitted.score_history(own.assign(item_idx=bad), now)
    with pytest.raises(ValueError, match="'timestamp'"):
        fitted.score_history(own.drop(columns="timestamp"), now)
    with pytest.raises(RuntimeError, match="fit"):
        make(fitted.name).score_history(own, now)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("settings", [{}, {"value": "weight", "alpha": 10.0}])
def test_als_fold_in_is_an_als_user_step(settings: dict) -> None:
    """The folded-in factor of a user of the fit is close to the trained one (training ends
    on an item step, and the CG solver is approximate), its scores are FactorIndex's for
    that vector, and it is what implicit's own user step (recalculate_user) gives. A
    fold-in without the regularisation fails the same bounds."""
    from implicit.cpu.als import AlternatingLeastSquares

    from recpipe.models.als import confidence, user_step

    data = block_data()
    model = make("als", **settings).fit(data)
    users = np.arange(N_USERS - 1)
    histories = [history_of(data, u) for u in users]
    folded = np.stack([model.fold_in(h) for h in histories])
    assert folded.dtype == np.float32
    cos = _cosines(folded, model.user_factors[users])
    assert cos.mean() > 0.99 and cos.min() > 0.95, cos

    overlap = []
    for u, h in zip(users, histories, strict=True):
        scores = model.score_history(h, data.now)
        index = FactorIndex(
            folded[u][None, :], model.item_factors, known_items=model.index.known_items
        )
        assert np.array_equal(scores, index.score_users(np.array([0]))[0], equal_nan=True)
        mine = set(model.recommend_history(h, data.now, 10)["item_idx"])
        overlap.append(len(mine & set(model.recommend(np.array([u]), 10)["item_idx"])) / 10)
    assert np.mean(overlap) >= 0.9, overlap

    conf = confidence(model._values(data), model.config.alpha)
    reference = AlternatingLeastSquares(
        factors=model.config.factors, regularization=model.config.regularization, alpha=1.0
    )
    reference.item_factors = model.item_factors
    np.testing.assert_allclose(
        folded, reference.recalculate_user(users, conf[users]), rtol=1e-4, atol=1e-5
    )

    # negative control: the bounds above catch a fold-in that drops the regularisation
    gram = model.item_factors.astype(np.float64).T @ model.item_factors.astype(np.float64)
    unregularised = np.stack([user_step(conf[[u]], model.item_factors, gram, 0.0) for u in users])
    bad = _cosines(unregularised, model.user_factors[users])
    assert not (bad.mean() > 0.99 and bad.min() > 0.95)


_FIT_AND_SAVE = """
import sys
import numpy as np
sys.path.insert(0, "tests")
from test_models_contract import fit_all, scores_of
from recpipe.artifacts import save_model
out = sys.argv[1]
for name, model in fit_all().items():
    save_model(model, f"{out}/{name}")
    np.savez(f"{out}/{name}.expected.npz", **scores_of(model))
"""

_LOAD_AND_SCORE = """
import sys
import numpy as np
sys.path.insert(0, "tests")
from test_models_contract import saved_names, scores_of
from recpipe.artifacts import load_model
out = sys.argv[1]
for name in saved_names():
    model = load_model(f"{out}/{name}")
    assert type(model).__module__.startswith("recpipe."), type(model)
    np.savez(f"{out}/{name}.loaded.npz", **scores_of(model))
"""


def saved_names() -> list[str]:
    """Every registered model, and the rating model with each combiner."""
    return sorted(MODELS) + ["rating-ridge", "rating-gbm"]


def fit_all() -> dict:
    """Each of :func:`saved_names` fitted on :func:`block_data`, every config field set
    explicitly (as when a config comes from params.yaml)."""
    from recpipe.rating import HybridRating, HybridRatingConfig

    data = block_data()
    out = {}
    for name in sorted(MODELS):
        cls = model_class(name)
        cfg = cls.config_class(**cls.config_class(**TEST_SETTINGS[name]).model_dump())
        model = cls(cfg, seed=0).fit(data)
        model.recommend(np.arange(5), 3)  # builds lazy state such as the faiss index
        out[name] = model
    rated = data.matrix("rating").tocoo()
    for combiner in ("ridge", "gbm"):
        cfg = HybridRatingConfig(
            combiner=combiner, gbm_trees=20, svd={"factors": 4, "epochs": 5}, knn_k=5
        )
        model = HybridRating(cfg, seed=0)
        model.fit(
            rated.row.astype(np.int64),
            rated.col.astype(np.int64),
            rated.data.astype(np.float64),
            n_users=data.n_users,
            n_items=data.n_items,
            item_table=data.items,
        )
        out[f"rating-{combiner}"] = model
    return out


def scores_of(model) -> dict[str, np.ndarray]:
    """What a model answers: every pair's score, each user's top 5 and some histories'
    scores (candidate models), or every pair's predicted rating (the rating model)."""
    users, items = np.divmod(np.arange(N_USERS * N_ITEMS), N_ITEMS)
    if isinstance(model, Recommender):
        recs = model.recommend(np.arange(N_USERS), 5)
        out = {
            "score": model.score(users, items),
            **{f"recs_{c}": recs[c].to_numpy() for c in recs.columns},
        }
        if model.supports_history:  # a loaded model rebuilds what histories need
            data = block_data()
            out["history"] = np.stack(
                [model.score_history(history_of(data, u), data.now) for u in (0, 20, COLD_USER)]
            )
        return out
    return {"rating": model.predict_ratings(users, items)}


def _run(script: str, out: Path, hash_seed: str) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[1]
    return subprocess.Popen(
        [sys.executable, "-c", script, str(out)],
        cwd=root,
        env=dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(root)),
    )


def test_saved_models_are_identical_across_processes_and_load_in_a_fresh_one(
    tmp_path: Path,
) -> None:
    """Every registered model (and the rating model) saved without pickle, in two processes
    with different string hashing: byte-identical files (DVC sees an unchanged model as
    unchanged; pickles once differed through pydantic's fields-set and the TF-IDF
    vectorizer's id() of its stop words). Loaded in a third, fresh process that never fitted
    anything: identical scores, lists and predicted ratings."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    procs = [_run(_FIT_AND_SAVE, d, seed) for d, seed in zip(dirs, ("1", "2"), strict=True)]
    assert [proc.wait() for proc in procs] == [0, 0]
    files = sorted(p.relative_to(dirs[0]) for p in dirs[0].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dirs[1]) for p in dirs[1].rglob("*") if p.is_file())
    assert not [f for f in files if f.suffix == ".pkl"]
    for f in files:
        assert (dirs[0] / f).read_bytes() == (dirs[1] / f).read_bytes(), f
    assert _run(_LOAD_AND_SCORE, dirs[0], "3").wait() == 0
    for name in saved_names():
        assert (dirs[0] / name / "model.json").is_file(), name
        expected = np.load(dirs[0] / f"{name}.expected.npz")
        loaded = np.load(dirs[0] / f"{name}.loaded.npz")
        assert sorted(expected.files) == sorted(loaded.files)
        for key in expected.files:
            np.testing.assert_array_equal(loaded[key], expected[key], err_msg=f"{name} {key}")


def test_a_model_that_holds_scores_cannot_bypass_them() -> None:
    """Held scores rank and score through _block_scores, _top_n_of and _pairs_of: a model
    that holds them and overrides recommend, _recommend_block or score would give the
    bundle other lists than the candidate stage's, so it is refused where it is defined."""
    itemknn = model_class("itemknn")
    with pytest.raises(TypeError, match="holds_scores with its own score"):
        type("Shortcut", (itemknn,), {"score": lambda self, users, items: None})
    with pytest.raises(TypeError, match="its own _recommend_block"):
        type("Shortcut", (itemknn,), {"_recommend_block": lambda self, users, n: None})
    # without holding, a model may take its own shortcut (popularity does)
    type("Shortcut", (itemknn,), {"holds_scores": False, "score": lambda self, u, i: None})


_FIT_AFTER_PRELOAD = """
import json, os, sys
import numpy as np
from recpipe.models.registry import MODELS, model_class
from tests.test_models_contract import TEST_SETTINGS, block_data

data = block_data()
def third_party():
    return {m for m in sys.modules if m.split(".")[0] not in sys.stdlib_module_names
            and m.split(".")[0] not in ("recpipe", "tests")}
found = {}
for name in sorted(MODELS):
    read, write = os.pipe()
    if os.fork() == 0:  # each model in its own child of this fresh process
        os.close(read)
        cls = model_class(name)
        cfg = cls.config_class(**TEST_SETTINGS[name])
        start = third_party()
        cls.preload()
        before = third_party()
        cls(cfg, seed=0).fit(data)
        new = {"preloaded": sorted(before - start), "fit": sorted(third_party() - before)}
        os.write(write, json.dumps(new).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as r:
        found[name] = json.loads(r.read())
    os.wait()
print(json.dumps(found))
"""


def test_a_model_fit_imports_nothing_its_preload_left_out() -> None:
    """A stage that forks workers to fit a model first imports the model's ``fit_imports``
    (:meth:`Recommender.preload`), so that each worker does not import them again (about
    1.3 s of scikit-learn in each). In a fresh process, after ``preload``, no model's fit
    loads another third-party module (beyond what this test file itself imports: pytest
    and its own): one left out of ``fit_imports`` would be imported in every worker."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _FIT_AFTER_PRELOAD],
        cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.splitlines()[-1])
    assert sorted(found) == sorted(MODELS)
    assert {name: new["fit"] for name, new in found.items() if new["fit"]} == {}
    # what preloading spares the workers (the fits would load it otherwise)
    for name, package in (("tfidf", "sklearn"), ("als", "implicit"), ("svd", "surprise")):
        assert package in found[name]["preloaded"], (name, found[name]["preloaded"][:5])


def test_preload_refuses_a_project_module() -> None:
    """The code stage reads project imports from import statements: a project module named
    in ``fit_imports`` would be loaded where it cannot see it, so preload refuses it."""
    cls = type("Named", (model_class("popularity"),), {"fit_imports": ("recpipe.text",)})
    with pytest.raises(ValueError, match=r"Named.fit_imports: recpipe.text is a project module"):
        cls.preload()
