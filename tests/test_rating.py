"""HybridRating: stacking of rating signals, on tiny planted ratings (never MovieLens)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recpipe.models.svd import SVDConfig
from recpipe.rating import SIGNALS, HybridRating, HybridRatingConfig, item_content

N_USERS, N_ITEMS, N_GENRES = 240, 160, 6


def planted(seed: int = 0, per_user: int = 45) -> dict:
    """Ratings = biases + a rank-2 taste + a per-user genre taste + noise, rounded to 1..5.

    Each part is what one base signal models best (baseline, svd, content), so only a blend
    recovers all of it.
    """
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, N_GENRES, N_ITEMS)
    year = rng.choice([1960.0, 1975.0, 1988.0, 1995.0], N_ITEMS)
    bu = rng.normal(0, 0.4, N_USERS)
    bi = rng.normal(0, 0.5, N_ITEMS)
    p = rng.normal(0, 0.8, (N_USERS, 2))
    q = rng.normal(0, 0.8, (N_ITEMS, 2))
    taste = rng.normal(0, 0.7, (N_USERS, N_GENRES))
    users = np.repeat(np.arange(N_USERS), per_user)
    items = np.concatenate([rng.choice(N_ITEMS, per_user, replace=False) for _ in range(N_USERS)])
    true = 3.5 + bu[users] + bi[items] + (p[users] * q[items]).sum(1) + taste[users, genre[items]]
    ratings = np.clip(np.round(true + rng.normal(0, 0.3, len(users))), 1, 5)
    table = pd.DataFrame(
        {"categories": [[f"g{g}"] for g in genre], "year": year, "title": [""] * N_ITEMS}
    )
    test = rng.random(len(users)) < 0.2
    return {"users": users, "items": items, "ratings": ratings, "test": test, "table": table}


def small_config(**changes: object) -> HybridRatingConfig:
    svd = SVDConfig(factors=8, epochs=40, lr_all=0.01, reg_all=0.05)
    return HybridRatingConfig(**{"svd": svd, "knn_k": 20, **changes})


def fit(data: dict, config: HybridRatingConfig | None = None, seed: int = 0) -> HybridRating:
    tr = ~data["test"]
    return HybridRating(config or small_config(), seed=seed).fit(
        data["users"][tr],
        data["items"][tr],
        data["ratings"][tr],
        n_users=N_USERS,
        n_items=N_ITEMS,
        item_table=data["table"],
    )


def rmse(pred: np.ndarray, actual: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - actual) ** 2)))


@pytest.fixture(scope="module")
def data() -> dict:
    return planted()


@pytest.fixture(scope="module")
def model(data: dict) -> HybridRating:
    return fit(data)


def test_hybrid_beats_every_base_signal(data: dict, model: HybridRating) -> None:
    te = data["test"]
    u, i, r = data["users"][te], data["items"][te], data["ratings"][te]
    blend = rmse(model.predict(u, i), r)
    base = model.base_predictions(u, i)
    assert list(base.columns) == list(SIGNALS)
    for name in SIGNALS:
        alone = rmse(base[name].to_numpy(), r)
        assert blend < alone - 0.01, f"hybrid {blend:.3f} vs {name} alone {alone:.3f}"


@pytest.mark.parametrize("combiner", ["ridge", "gbm"])
def test_same_seed_same_predictions(data: dict, combiner: str) -> None:
    cfg = small_config(combiner=combiner, gbm_trees=30)
    te = data["test"]
    a = fit(data, cfg, seed=3).predict(data["users"][te], data["items"][te])
    b = fit(data, cfg, seed=3).predict(data["users"][te], data["items"][te])
    c = fit(data, cfg, seed=4).predict(data["users"][te], data["items"][te])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_with_combiner_equals_a_fresh_fit(data: dict, model: HybridRating) -> None:
    te = data["test"]
    u, i = data["users"][te], data["items"][te]
    signals = ("baseline", "svd")
    shared = model.with_combiner(signals=signals).predict(u, i)
    fresh = fit(data, small_config(signals=signals)).predict(u, i)
    np.testing.assert_allclose(shared, fresh, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="not combiner settings"):
        model.with_combiner(knn_k=5)


def test_predictions_are_clipped_to_the_scale(data: dict) -> None:
    # A user who rates everything 5 and loved items: unclipped blends exceed 5.
    users = np.r_[data["users"], np.zeros(60, dtype=np.int64)]
    items = np.r_[data["items"], np.arange(60)]
    ratings = np.r_[data["ratings"], np.full(60, 5.0)]
    model = HybridRating(small_config(min_rating=1.0, max_rating=5.0)).fit(
        users, items, ratings, n_users=N_USERS, n_items=N_ITEMS, item_table=data["table"]
    )
    grid_u = np.repeat(np.arange(N_USERS), N_ITEMS)
    grid_i = np.tile(np.arange(N_ITEMS), N_USERS)
    pred = model.predict(grid_u, grid_i)
    assert np.nanmin(pred) >= 1.0 and np.nanmax(pred) <= 5.0
    assert (pred == 5.0).any()
    base = model.base_predictions(grid_u, grid_i).to_numpy()
    assert np.nanmin(base) >= 1.0 and np.nanmax(base) <= 5.0


def test_unknown_and_cold_users_and_items(data: dict) -> None:
    tr = ~data["test"]
    keep = tr & (data["users"] != 7) & (data["items"] != 11)  # user 7, item 11: cold
    model = HybridRating(small_config()).fit(
        data["users"][keep],
        data["items"][keep],
        data["ratings"][keep],
        n_users=N_USERS,
        n_items=N_ITEMS,
        item_table=data["table"],
    )
    users = np.array([-1, N_USERS, 0, 7, 0, 7])
    items = np.array([0, 0, N_ITEMS, 3, 11, 11])
    pred = model.predict(users, items)
    assert np.isnan(pred[:3]).all()  # outside the fitted index ranges: no score
    assert np.isfinite(pred[3:]).all()  # cold but in range: content/baseline fallback
    base = model.base_predictions(users, items)
    np.testing.assert_allclose(pred[3:], base["content"].to_numpy()[3:])
    assert base[["svd", "knn"]].iloc[3:].isna().all().all()


def test_cold_item_gets_the_users_genre_taste(data: dict) -> None:
    """A new item is scored from its genre: fans of the genre get a higher prediction."""
    model = fit(data)
    genre_of_11 = data["table"]["categories"][11][0]
    content = model._bases.content  # type: ignore[union-attr]
    g = sorted({c[0] for c in data["table"]["categories"]}).index(genre_of_11)
    taste = content.genre_taste[:, g]
    fan, hater = int(np.argmax(taste)), int(np.argmin(taste))
    pred = model.base_predictions(np.array([fan, hater]), np.array([11, 11]))["content"]
    bias = model._bases.baseline.user_bias  # type: ignore[union-attr]
    assert pred[0] - bias[fan] > pred[1] - bias[hater]


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="knn_kk"):
        HybridRatingConfig(knn_kk=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="greater than min_rating"):
        HybridRatingConfig(min_rating=5, max_rating=1)
    with pytest.raises(ValidationError, match="repeat"):
        HybridRatingConfig(signals=("svd", "svd"))
    with pytest.raises(ValidationError):
        HybridRatingConfig(signals=("svd", "magic"))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        HybridRatingConfig(holdout=0.0)
    with pytest.raises(ValidationError):
        HybridRatingConfig(signals=())


def test_bad_inputs_raise(data: dict) -> None:
    with pytest.raises(ValueError, match="item_table"):
        HybridRating(small_config()).fit(
            data["users"], data["items"], data["ratings"], n_users=N_USERS, n_items=N_ITEMS
        )
    with pytest.raises(ValueError, match="outside"):
        HybridRating(small_config()).fit(
            data["users"],
            data["items"],
            data["ratings"],
            n_users=10,
            n_items=N_ITEMS,
            item_table=data["table"],
        )
    with pytest.raises(RuntimeError, match="fit"):
        HybridRating().predict(np.array([0]), np.array([0]))


@pytest.mark.parametrize(
    "change",
    [
        {"reg_user": 0.0},
        {"reg_item": 0.0},
        {"knn_k": 3},
        {"knn_shrinkage": 0.0},
        {"content_reg": 100.0},
        {"ridge_alpha": 1e4},
        {"holdout": 0.4},
        {"svd": SVDConfig(factors=2, epochs=5)},
        {"combiner": "gbm", "gbm_trees": 20},
    ],
)
def test_each_setting_changes_the_predictions(
    data: dict, model: HybridRating, change: dict
) -> None:
    te = data["test"]
    u, i = data["users"][te], data["items"][te]
    other = fit(data, small_config(**change)).predict(u, i)
    assert not np.allclose(other, model.predict(u, i))


def test_item_content_matrices() -> None:
    table = pd.DataFrame(
        {"categories": [["a", "b"], [], ["b", "b"]], "year": [1994.0, np.nan, 2001.0]}
    )
    genres, decades = item_content(table)
    np.testing.assert_array_equal(genres.toarray(), [[1, 1], [0, 0], [0, 1]])
    np.testing.assert_array_equal(decades.toarray(), [[1, 0], [0, 0], [0, 1]])


def test_too_few_ratings_to_hold_out() -> None:
    users, items = np.arange(10) % 3, np.arange(10) % 4
    table = pd.DataFrame({"categories": [["a"]] * 4, "year": [1990.0] * 4})
    with pytest.raises(ValueError, match="held-out ratings"):
        HybridRating(small_config()).fit(
            users, items, np.full(10, 3.0), n_users=3, n_items=4, item_table=table
        )


def test_item_table_without_content_columns() -> None:
    genres, decades = item_content(pd.DataFrame({"title": ["x", "y"]}))
    assert genres.shape[0] == decades.shape[0] == 2
    assert genres.nnz == decades.nnz == 0


# --------------------------------------------------------------------------- the rate stage


def _stage_project(root, rated: bool) -> tuple:
    """A split folder and a prepared folder from the planted ratings (or without ratings)."""
    import yaml

    from recpipe.io import write_many

    data = planted()
    n = len(data["users"])
    inter = pd.DataFrame(
        {
            "user_id": data["users"].astype(str),
            "item_id": data["items"].astype(str),
            "user_idx": data["users"],
            "item_idx": data["items"],
            "rating": data["ratings"] if rated else np.nan,
            "event": "rating" if rated else "view",
            "weight": 1.0,
            "timestamp": np.arange(n, dtype=np.int64),
        }
    )
    part = np.random.default_rng(1).choice(3, n, p=[0.6, 0.2, 0.2])
    items = data["table"].assign(
        item_idx=np.arange(N_ITEMS), item_id=np.arange(N_ITEMS).astype(str)
    )
    users = pd.DataFrame(
        {"user_idx": np.arange(N_USERS), "user_id": np.arange(N_USERS).astype(str)}
    )
    split_dir, prepared = root / "split", root / "prepared"
    frames = {
        split_dir / "train.parquet": inter[part == 0],
        split_dir / "valid.parquet": inter[part == 1],
        prepared / "items.parquet": items,
        prepared / "users.parquet": users,
    }
    write_many(frames)
    params = root / "params.yaml"
    block = {"svd": {"factors": 8, "epochs": 20}, "knn_k": 20}
    params.write_text(yaml.safe_dump({"seed": 3, "rating": block}))
    test = inter[part == 2]
    return split_dir, prepared, params, test


def _run_rate(root, split_dir, prepared, params) -> int:
    from stages import rate

    argv = ["--split", str(split_dir), "--prepared", str(prepared)]
    return rate.main([*argv, "--model-dir", str(root / "model"), "--params", str(params)])


def test_rate_stage_fits_on_train_and_valid_and_predicts_held_out_ratings(tmp_path) -> None:
    import json

    from recpipe.artifacts import load_model

    split_dir, prepared, params, test = _stage_project(tmp_path, rated=True)
    assert _run_rate(tmp_path, split_dir, prepared, params) == 0
    meta = json.loads((tmp_path / "model/meta.json").read_text())
    assert meta["enabled"] is True
    assert meta["rated_pairs"] == len(planted()["users"]) - len(test)  # train + valid
    model = load_model(tmp_path / "model")
    pred = model.predict_ratings(test["user_idx"].to_numpy(), test["item_idx"].to_numpy())
    mean_only = rmse(np.full(len(test), test["rating"].mean()), test["rating"].to_numpy())
    assert rmse(pred, test["rating"].to_numpy()) < 0.8 * mean_only


def test_rate_stage_without_ratings_says_so_and_writes_no_model(tmp_path) -> None:
    import json

    split_dir, prepared, params, _ = _stage_project(tmp_path, rated=False)
    (tmp_path / "model").mkdir()
    (tmp_path / "model/model.json").write_bytes(b"stale")
    (tmp_path / "model/model.npz").write_bytes(b"stale")
    assert _run_rate(tmp_path, split_dir, prepared, params) == 0
    meta = json.loads((tmp_path / "model/meta.json").read_text())
    assert meta["enabled"] is False and meta["reason"].startswith("0 rated pairs")
    assert not (tmp_path / "model/model.json").exists()
    assert not (tmp_path / "model/model.npz").exists()


def test_rate_stage_disabled_and_misspelled_keys(tmp_path) -> None:
    import json

    import yaml

    split_dir, prepared, params, _ = _stage_project(tmp_path, rated=True)
    params.write_text(yaml.safe_dump({"seed": 3, "rating": {"enabled": False}}))
    assert _run_rate(tmp_path, split_dir, prepared, params) == 0
    assert json.loads((tmp_path / "model/meta.json").read_text())["enabled"] is False
    params.write_text(yaml.safe_dump({"seed": 3, "rating": {"knn_kk": 3}}))
    assert _run_rate(tmp_path, split_dir, prepared, params) == 2


# -- agreement with surprise's own algorithms ---------------------------------------------
def _surprise_fit(algo_cls, ratings: pd.DataFrame, **options):
    """Fit a surprise algorithm on (user_idx, item_idx, rating); returns (algo, trainset)."""
    from surprise import Dataset, Reader

    reader = Reader(rating_scale=(1.0, 5.0))
    trainset = Dataset.load_from_df(ratings, reader).build_full_trainset()
    algo = algo_cls(verbose=False, **options)
    algo.fit(trainset)
    return algo, trainset


def _small_ratings(seed: int = 3) -> pd.DataFrame:
    """About 300 random ratings of 25 users over 18 items (every pair at most once)."""
    rng = np.random.default_rng(seed)
    pairs = rng.choice(25 * 18, size=300, replace=False)
    users, items = np.divmod(pairs, 18)
    taste = rng.normal(size=25)[users] + rng.normal(size=18)[items]
    ratings = np.clip(np.round(3 + taste + rng.normal(scale=0.7, size=300)), 1, 5)
    return pd.DataFrame({"user_idx": users, "item_idx": items, "rating": ratings})


BSL = {"method": "als", "reg_u": 7.0, "reg_i": 4.0, "n_epochs": 6}


def _our_baseline(df: pd.DataFrame, cfg: HybridRatingConfig):
    from recpipe.rating import Baseline

    u, i, r = (df[c].to_numpy() for c in ("user_idx", "item_idx", "rating"))
    return Baseline.fit(u, i, r.astype(np.float64), 25, 18, cfg), u, i, r


def test_baseline_equals_surprise_baseline_only() -> None:
    """The baseline claims to be surprise's BaselineOnly (ALS): same biases, pair by pair.
    Changing its regularisation, its epochs or its update order fails this test."""
    from surprise import BaselineOnly

    df = _small_ratings()
    cfg = HybridRatingConfig(reg_user=7.0, reg_item=4.0, baseline_epochs=6)
    ours, u, i, _ = _our_baseline(df, cfg)
    algo, ts = _surprise_fit(BaselineOnly, df, bsl_options=BSL)
    inner_u = np.array([ts.to_inner_uid(x) for x in u])
    inner_i = np.array([ts.to_inner_iid(x) for x in i])
    assert ours.mu == pytest.approx(ts.global_mean, abs=1e-12)
    np.testing.assert_allclose(ours.user_bias[u], algo.bu[inner_u], atol=1e-10)
    np.testing.assert_allclose(ours.item_bias[i], algo.bi[inner_i], atol=1e-10)


def test_item_knn_equals_surprise_knn_baseline() -> None:
    """The kNN signal claims surprise's KNNBaseline with the pearson-baseline similarity
    (item-based, shrunk): same similarities and, added to the baseline, the same estimate
    for every (user, item) pair. Changing the shrinkage, the normaliser, k or the
    neighbour selection fails this test."""
    from surprise import KNNBaseline

    from recpipe.rating import ItemKNN

    df = _small_ratings()
    cfg = HybridRatingConfig(
        reg_user=7.0, reg_item=4.0, baseline_epochs=6, knn_k=5, knn_shrinkage=30.0
    )
    base, u, i, r = _our_baseline(df, cfg)
    knn = ItemKNN.fit(u, i, r - base.predict(u, i), 25, 18, cfg)
    sim_options = {"name": "pearson_baseline", "user_based": False, "shrinkage": 30}
    algo, ts = _surprise_fit(KNNBaseline, df, k=5, sim_options=sim_options, bsl_options=BSL)
    raw_items = np.array([ts.to_raw_iid(j) for j in range(ts.n_items)])
    theirs = algo.sim.copy()
    np.fill_diagonal(theirs, 0.0)  # surprise puts 1 on the diagonal; we never use it
    np.testing.assert_allclose(knn.sim[np.ix_(raw_items, raw_items)], theirs, atol=1e-6)

    # Pairs the user has not rated (the ones ever predicted): on a rated pair surprise also
    # counts the pair's own rating, as its own neighbour with similarity 1.
    users, items = np.divmod(np.arange(25 * 18), 18)
    unrated = ~np.isin(users * 18 + items, u * 18 + i)
    users, items = users[unrated], items[unrated]
    assert len(users) == 25 * 18 - 300
    offset, _ = knn.predict(users, items)
    ours = base.predict(users, items) + offset
    # estimate() answers (estimate, details); every user and item of the data is known
    expected = [
        algo.estimate(ts.to_inner_uid(x), ts.to_inner_iid(y))[0]
        for x, y in zip(users, items, strict=True)
    ]
    np.testing.assert_allclose(ours, np.array(expected, dtype=float), atol=1e-5)


def test_item_knn_past_max_items_covers_the_most_rated_items_only(caplog, tmp_path) -> None:
    """Past ``knn_max_items`` the similarity covers the most rated items (ties: the lower
    index): their pairs get exactly the neighbourhood of a kNN fitted on their ratings
    alone, every other pair none (offset and support 0); the warning names the setting;
    the bounded model survives a save and load. Up to the bound nothing changes."""
    from recpipe.artifacts import load_model, save_model
    from recpipe.rating import ItemKNN

    df = _small_ratings()
    cfg = HybridRatingConfig(knn_k=5, knn_shrinkage=30.0, signals=("baseline", "knn"))
    base, u, i, r = _our_baseline(df, cfg)
    res = r - base.predict(u, i)
    counts = np.bincount(i, minlength=18)
    # the 7 most rated items, ties to the lower index, by a full sort
    order = sorted(range(18), key=lambda j: (-counts[j], j))
    kept = np.sort(order[:7])
    with caplog.at_level("WARNING"):
        bounded = ItemKNN.fit(u, i, res, 25, 18, cfg.model_copy(update={"knn_max_items": 7}))
    assert "rating.knn_max_items" in caplog.text
    np.testing.assert_array_equal(bounded.kept, kept)
    assert bounded.sim.shape == (7, 7)

    on_kept = np.isin(i, kept)
    pos = np.searchsorted(kept, i[on_kept])
    alone = ItemKNN.fit(u[on_kept], pos, res[on_kept], 25, 7, cfg)
    np.testing.assert_array_equal(bounded.sim, alone.sim)
    users, items = np.divmod(np.arange(25 * 18), 18)
    offset, support = bounded.predict(users, items)
    covered = np.isin(items, kept)
    ref_offset, ref_support = alone.predict(users[covered], np.searchsorted(kept, items[covered]))
    np.testing.assert_array_equal(offset[covered], ref_offset)
    np.testing.assert_array_equal(support[covered], ref_support)
    assert (offset[~covered] == 0).all() and (support[~covered] == 0).all()
    assert np.abs(offset[covered]).max() > 0  # the covered pairs do get neighbours

    # up to the bound: every item covered, the very same model as without a bound
    full = ItemKNN.fit(u, i, res, 25, 18, cfg.model_copy(update={"knn_max_items": 18}))
    assert full.kept is None
    np.testing.assert_array_equal(full.sim, ItemKNN.fit(u, i, res, 25, 18, cfg).sim)

    # a hybrid with the bound saved and loaded predicts the same
    model = HybridRating(cfg.model_copy(update={"knn_max_items": 7}), seed=0).fit(
        u, i, r, n_users=25, n_items=18
    )
    save_model(model, tmp_path / "rating")
    again = load_model(tmp_path / "rating")
    np.testing.assert_array_equal(again.predict(users, items), model.predict(users, items))
    assert model.base_predictions(users, items)["knn"].notna().any()
