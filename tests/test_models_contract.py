"""The contract every registered candidate model keeps (one test class, run for each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recpipe.models.base import Recommender, TrainData
from recpipe.models.registry import MODELS, model_class

# Small settings so the contract runs in seconds; defaults are for real data.
TEST_SETTINGS: dict[str, dict] = {
    "popularity": {},
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


def test_score_agrees_with_recommend(fitted: Recommender) -> None:
    recs = fitted.recommend(np.arange(N_USERS - 1), 5)
    s = fitted.score(recs["user_idx"].to_numpy(), recs["item_idx"].to_numpy())
    np.testing.assert_allclose(s, recs["score"].to_numpy(), rtol=1e-4, atol=1e-5)


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
    """What a model answers: every pair's score and each user's top 5 (candidate models),
    or every pair's predicted rating (the rating model)."""
    users, items = np.divmod(np.arange(N_USERS * N_ITEMS), N_ITEMS)
    if isinstance(model, Recommender):
        recs = model.recommend(np.arange(N_USERS), 5)
        return {
            "score": model.score(users, items),
            **{f"recs_{c}": recs[c].to_numpy() for c in recs.columns},
        }
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
