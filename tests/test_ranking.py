"""Ranker: feature selection, labels, a planted signal it must find, its knobs, and the
``features`` + ``rank`` stages on a tiny project (labels only from the valid fold)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

# The project builder lives with the blend stage's test (the rank stage needs its outputs).
from test_blending import Project, build_project, run_blend

from recpipe import engine
from recpipe.artifacts import candidates_file
from recpipe.blending import best_first, hybrid_score, rank_by
from recpipe.engine import WORKERS
from recpipe.errors import ConfigError
from recpipe.evaluation.metrics import topn_metrics
from recpipe.features.config import FeaturesConfig
from recpipe.folds import load_catalogue, load_fold, ranker_folds
from recpipe.io import write_parquet
from recpipe.models.base import concat_recs
from recpipe.models.registry import MODELS
from recpipe.ranking import (
    KEY,
    RankerConfig,
    TrainResult,
    _ranker,
    assemble,
    candidate_rows,
    fit_rounds,
    importance,
    labels,
    learning_columns,
    margin,
    negatives_cap,
    predict,
    select_features,
    top_candidates,
    train,
    training_rows,
)
from stages import candidates, features, rank

# --------------------------------------------------------------------------- select_features

COLUMNS = [
    "user_idx",
    "item_idx",
    "m_als_rank",
    "m_als_score",
    "m_als_norm",
    "m_ease_rank",
    "m_ease_norm",
    "m_n_models",
    "m_hybrid",
    "u_events",
    "i_users",
    "p_cat_affinity",
]


def cfg_with(**kw: object) -> RankerConfig:
    return RankerConfig(**kw)


def test_select_features_default_patterns() -> None:
    chosen = select_features(COLUMNS, RankerConfig())
    # Raw scores are left out by default; the order is that of the columns.
    assert chosen == [c for c in COLUMNS[2:] if c != "m_als_score"]


def test_select_features_keeps_column_order_not_pattern_order() -> None:
    cfg = cfg_with(features=["p_*", "u_events", "m_*_rank"])
    assert select_features(COLUMNS, cfg) == [
        "m_als_rank",
        "m_ease_rank",
        "u_events",
        "p_cat_affinity",
    ]


def test_select_features_exclude() -> None:
    cfg = cfg_with(features=["m_*", "p_*"], exclude=["m_ease_*", "m_hybrid"])
    assert select_features(COLUMNS, cfg) == [
        "m_als_rank",
        "m_als_score",
        "m_als_norm",
        "m_n_models",
        "p_cat_affinity",
    ]


def test_select_features_never_picks_the_key() -> None:
    assert "user_idx" not in select_features(COLUMNS, cfg_with(features=["*"]))
    with pytest.raises(ConfigError, match="'user_idx'"):
        select_features(COLUMNS, cfg_with(features=["m_*", "user_idx"]))


@pytest.mark.parametrize(
    "kw,pattern",
    [
        ({"features": ["m_*_rank", "x_*"]}, "x_*"),
        ({"features": ["M_*"]}, "M_*"),  # matching is case-sensitive
        ({"features": ["m_*"], "exclude": ["m_svd_*"]}, "m_svd_*"),
    ],
)
def test_select_features_pattern_matching_nothing_is_named(kw: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"pattern {pattern!r} matches no column")):
        select_features(COLUMNS, cfg_with(**kw))


def test_select_features_nothing_left() -> None:
    with pytest.raises(ConfigError, match="leave no feature"):
        select_features(COLUMNS, cfg_with(features=["p_*"], exclude=["p_cat_*"]))


# --------------------------------------------------------------------------- labels


def test_top_candidates_keeps_each_users_best_by_the_hybrid() -> None:
    df = pd.DataFrame(
        {
            "user_idx": [0, 0, 0, 0, 1, 1],
            "item_idx": [1, 2, 3, 4, 1, 2],
            "m_hybrid": [0.5, np.nan, 0.9, 0.5, -1.0, 2.0],
        }
    )
    top = top_candidates(df, RankerConfig(rerank_top=2))
    # u0: 3 (0.9), then 1 beats 4 on the tie (lower item), NaN last; u1 keeps both
    assert top[KEY].values.tolist() == [[0, 1], [0, 3], [1, 1], [1, 2]]
    assert top_candidates(df, RankerConfig(rerank_top=None)).equals(df)
    with pytest.raises(ConfigError, match="rerank_top needs the blend's m_hybrid"):
        top_candidates(df.drop(columns="m_hybrid"), RankerConfig(rerank_top=2))
    # the same rows from plain arrays (the service's one-user Columns)
    columns = {c: df[c].to_numpy() for c in df.columns}
    keep = candidate_rows(columns, RankerConfig(rerank_top=2))
    assert df[keep].reset_index(drop=True).equals(top)
    assert candidate_rows(columns, RankerConfig(rerank_top=None)) is None
    with pytest.raises(ConfigError, match="rerank_top needs the blend's m_hybrid"):
        candidate_rows({"user_idx": columns["user_idx"]}, RankerConfig(rerank_top=2))


def test_labels() -> None:
    pairs = pd.DataFrame({"user_idx": [0, 0, 1, 2, 2], "item_idx": [1, 2, 1, 5, 6]})
    targets = pd.DataFrame(
        {
            "user_idx": [0, 1, 2, 3, 2],
            "item_idx": [2, 1, 5, 3, 7],
            "relevant": [True, False, True, True, True],
        }
    )
    y = labels(pairs, targets)
    assert y.dtype == np.float32
    # (1, 1) is a target but not relevant; (3, 3) and (2, 7) are relevant but no candidate.
    np.testing.assert_array_equal(y, [0, 1, 0, 1, 0])


# --------------------------------------------------------------------------- planted signal

FEATURES = ["m_*", "u_*", "i_*", "p_*"]
N_CANDS = 30


def planted(
    n_users: int,
    seed: int,
    first_user: int = 0,
    without_positive: int = 0,
    strength: float = 1.0,
    noise: float = 0.1,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """``n_users`` x 30 candidate pairs, 1-4 positives per user (none for the first
    ``without_positive`` users). ``p_signal`` = ``strength`` * label + N(0, ``noise``); every
    other feature is noise. Returns (pairs sorted by user and item, labels, targets)."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(first_user, first_user + n_users), N_CANDS)
    items = np.concatenate(
        [np.sort(rng.choice(500, N_CANDS, replace=False)) for _ in range(n_users)]
    )
    y = np.zeros(len(users), dtype=np.float32)
    for k in range(without_positive, n_users):
        y[k * N_CANDS + rng.choice(N_CANDS, rng.integers(1, 5), replace=False)] = 1
    n = len(users)
    user_noise = rng.normal(size=first_user + n_users)
    item_noise = rng.normal(size=500)
    df = pd.DataFrame(
        {
            "user_idx": users,
            "item_idx": items,
            "m_a_rank": rng.integers(1, N_CANDS + 1, n).astype(np.float32),
            "m_a_norm": rng.normal(size=n).astype(np.float32),
            "u_noise": user_noise[users].astype(np.float32),
            "i_noise": item_noise[items].astype(np.float32),
            "p_noise": rng.normal(size=n).astype(np.float32),
            "p_signal": (strength * y + rng.normal(0, noise, n)).astype(np.float32),
        }
    )
    targets = df[["user_idx", "item_idx"]].assign(relevant=y.astype(bool))
    return df, y, targets


def ndcg_at_10(df: pd.DataFrame, scores: np.ndarray, targets: pd.DataFrame) -> float:
    return topn_metrics(rank_by(df, scores, 10), targets, [10])["ndcg@10"]


# One thread: the results do not depend on it (checked below), and tests run side by side.
# No blend column in these frames: the trees start from 0 unless a test says otherwise.
STRONG_CFG = {
    "features": FEATURES,
    "n_estimators": 50,
    "early_stopping_rounds": 10,
    "n_threads": 1,
    "base_margin": None,
}


@pytest.fixture(scope="module")
def strong() -> dict:
    """A strong planted signal: training users (20 without a positive), fresh test users,
    and the ranker trained on them with seed 1."""
    train_df, y, _ = planted(200, seed=0, without_positive=20)
    test_df, _, test_targets = planted(100, seed=1, first_user=1000)
    result = train(train_df, y, RankerConfig(**STRONG_CFG), seed=1)
    return {"df": train_df, "y": y, "test": test_df, "targets": test_targets, "result": result}


def test_ranker_finds_the_planted_signal(strong: dict) -> None:
    result = strong["result"]
    assert result.features == ["m_a_rank", "m_a_norm", "u_noise", "i_noise", "p_noise", "p_signal"]
    ndcg = ndcg_at_10(strong["test"], predict(result, strong["test"]), strong["targets"])
    assert ndcg >= 0.95
    blind_cfg = RankerConfig(**STRONG_CFG, exclude=["p_signal"])
    blind = train(strong["df"], strong["y"], blind_cfg, seed=1)
    assert "p_signal" not in blind.features
    blind_ndcg = ndcg_at_10(strong["test"], predict(blind, strong["test"]), strong["targets"])
    assert blind_ndcg <= 0.5 and blind_ndcg < ndcg - 0.4


def test_learning_columns_train_the_same_model(strong: dict) -> None:
    """The narrow float32 frame rank holds for training gives the booster the same values:
    the same model, byte for byte, with float64 and integer features, an excluded column
    and a float64 base margin that is also a feature."""
    rng = np.random.default_rng(3)
    wide = strong["df"].assign(
        m_hybrid=lambda d: d["m_a_norm"].astype(np.float64) + rng.normal(0, 0.1, len(d)),
        u_count=lambda d: (d["user_idx"] % 7).astype(np.int64),
        i_wide=lambda d: rng.normal(size=len(d)),  # float64
        m_a_score=lambda d: rng.normal(size=len(d)),  # not a feature
    )
    wide.loc[wide.index[::9], "m_hybrid"] = np.nan
    cfg = RankerConfig(
        **{**STRONG_CFG, "base_margin": "m_hybrid"},
    ).model_copy(
        update={
            "features": ["m_*_rank", "m_*_norm", "m_hybrid", "u_*", "i_*", "p_*"],
            "exclude": ["p_noise"],
        }
    )
    feats = select_features(list(wide.columns), cfg)
    assert "m_hybrid" in feats and "u_count" in feats and "p_noise" not in feats
    narrow = learning_columns(wide, feats, cfg)
    assert narrow.columns.tolist() == ["user_idx", "item_idx", *feats]
    assert narrow["m_hybrid"].dtype == np.float64 and narrow["i_wide"].dtype == np.float32
    full = train(wide, strong["y"], cfg, seed=1)
    held = train(narrow, strong["y"], cfg, seed=1, features=feats)
    assert held.features == full.features == feats
    raw = [r.model.get_booster().save_raw(raw_format="json") for r in (full, held)]
    assert raw[0] == raw[1]


def test_lists_without_positive_are_left_out_and_counted(strong: dict) -> None:
    result = strong["result"]
    assert result.lists_without_positive == 20
    assert result.lists_used == 180
    assert 1 <= result.best_iteration <= STRONG_CFG["n_estimators"]
    assert 0 <= result.holdout_ndcg <= 1


def test_train_needs_two_users_with_a_positive() -> None:
    df, y, _ = planted(5, seed=0, without_positive=4)
    with pytest.raises(ValueError, match="fewer than 2 users"):
        train(df, y, RankerConfig(**{**STRONG_CFG, "n_estimators": 5}), seed=0)


def test_more_folds_than_users_is_a_clear_error() -> None:
    df, y, _ = planted(6, seed=0, without_positive=2)
    with pytest.raises(ValueError, match="cannot fill ranker.cv_folds = 5"):
        train(df, y, RankerConfig(**STRONG_CFG), seed=0)
    assert train(df, y, RankerConfig(**{**STRONG_CFG, "cv_folds": 4}), seed=0).lists_used == 4


def test_trees_start_from_the_base_margin(strong: dict) -> None:
    # The signal only as the starting score (not a feature): one small tree keeps its order.
    cfg = RankerConfig(
        **{**STRONG_CFG, "base_margin": "p_signal", "n_estimators": 1, "learning_rate": 0.01},
        exclude=["p_signal"],
    )
    result = train(strong["df"], strong["y"], cfg, seed=1)
    assert "p_signal" not in result.features
    scores = predict(result, strong["test"])
    assert ndcg_at_10(strong["test"], scores, strong["targets"]) >= 0.95
    # predictions are the margin plus the trees' output
    no_margin = result.model.predict(strong["test"][result.features], output_margin=True)
    np.testing.assert_allclose(
        scores - no_margin, strong["test"]["p_signal"].to_numpy(), rtol=1e-5, atol=1e-5
    )
    doubled = predict(
        train(strong["df"], strong["y"], cfg.model_copy(update={"base_margin_scale": 2.0}), seed=1),
        strong["test"],
    )
    assert not np.array_equal(doubled, scores)


def test_missing_base_margin_counts_as_the_users_lowest() -> None:
    df = pd.DataFrame(
        {"user_idx": [0, 0, 0, 1, 1], "m_hybrid": [2.0, np.nan, -1.0, np.nan, np.nan]}
    )
    got = margin(df, RankerConfig(base_margin_scale=3.0))
    np.testing.assert_array_equal(got, [6.0, -3.0, -3.0, 0.0, 0.0])
    assert margin(df, RankerConfig(base_margin=None)) is None
    with pytest.raises(ConfigError, match="ranker.base_margin: no column 'm_blend'"):
        margin(df, RankerConfig(base_margin="m_blend"))
    columns = {c: df[c].to_numpy() for c in df.columns}  # the service's one-user Columns
    np.testing.assert_array_equal(margin(columns, RankerConfig(base_margin_scale=3.0)), got)
    with pytest.raises(ConfigError, match="ranker.base_margin: no column 'm_blend'"):
        margin(columns, RankerConfig(base_margin="m_blend"))


def test_importance_names_every_feature_and_ranks_the_planted_one_first(strong: dict) -> None:
    result = strong["result"]
    gain = importance(result)
    assert list(gain) == sorted(result.features)
    assert all(v >= 0 for v in gain.values())
    assert max(gain, key=gain.get) == "p_signal"
    assert gain["p_signal"] > 3 * sum(v for k, v in gain.items() if k != "p_signal")


def test_ranker_is_deterministic_for_a_seed_and_any_thread_count(strong: dict) -> None:
    a = predict(strong["result"], strong["test"])
    again = train(strong["df"], strong["y"], RankerConfig(**STRONG_CFG), seed=1)
    np.testing.assert_array_equal(predict(again, strong["test"]), a)
    two = train(strong["df"], strong["y"], RankerConfig(**{**STRONG_CFG, "n_threads": 2}), seed=1)
    np.testing.assert_array_equal(predict(two, strong["test"]), a)
    assert a.dtype == np.float32 and len(a) == len(strong["test"])


def with_weak_signals(df: pd.DataFrame, y: np.ndarray, seed: int) -> pd.DataFrame:
    """Add five features that each carry a little of the label: the best score is their sum,
    which trees build up slowly, so the holdout keeps improving over many rounds."""
    rng = np.random.default_rng(seed)
    for j in range(5):
        df[f"p_weak{j}"] = (0.5 * y + rng.normal(size=len(y))).astype(np.float32)
    return df


WEAK_BASE = {
    "features": FEATURES,
    "n_estimators": 30,
    "early_stopping_rounds": 100,
    "n_threads": 1,
    "base_margin": None,
}


@pytest.fixture(scope="module")
def weak() -> dict:
    """A weak, spread-out signal, so more trees keep helping and every knob shows; with the
    ranker of :data:`WEAK_BASE` trained on it (seed 0) and its test predictions."""
    train_df, y, _ = planted(300, seed=1, strength=0.5, noise=1.0)
    test_df, y_test, _ = planted(100, seed=3, first_user=1000, strength=0.5, noise=1.0)
    out = {
        "df": with_weak_signals(train_df, y, seed=101),
        "y": y,
        "test": with_weak_signals(test_df, y_test, seed=103),
    }
    out["result"] = train(out["df"], y, RankerConfig(**WEAK_BASE), seed=0)
    out["base"] = predict(out["result"], out["test"])
    return out


def weak_train(weak: dict, **overrides: object) -> TrainResult:
    return train(weak["df"], weak["y"], RankerConfig(**{**WEAK_BASE, **overrides}), seed=0)


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # control: the same settings give the same predictions
        {"max_depth": 2},
        {"learning_rate": 0.3},
        {"n_estimators": 5},  # with refit (the default): fewer trees in the final model
        {"objective": "rank:pairwise"},
        {"objective": "rank:map"},
        {"cv_folds": 1},
        {"cv_folds": 3},
        {"base_margin": "p_weak0"},
        {"min_child_weight": 20.0},
        {"subsample": 0.5},
        {"reg_lambda": 50.0},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "same",
)
def test_each_setting_changes_the_predictions(weak: dict, overrides: dict) -> None:
    changed = predict(weak_train(weak, **overrides), weak["test"])
    assert np.array_equal(weak["base"], changed) == (not overrides)


def test_fit_rounds_matches_xgbrankers_own_fit(weak: dict) -> None:
    """The holdout held in a plain DMatrix (faster to predict each round) gives the curve
    and the trees that ``XGBRanker.fit`` gives with the same rows as its ``eval_set``, with
    and without a starting score, stopping early before the last round."""
    df, y = weak["df"], weak["y"]
    X = df[select_features(list(df.columns), RankerConfig(features=FEATURES))]
    qid = df["user_idx"].to_numpy()
    hold = qid % 4 == 0
    for start in (None, "p_weak0"):
        cfg = RankerConfig(**{**WEAK_BASE, "early_stopping_rounds": 3, "base_margin": start})
        base = margin(df, cfg, qid)
        ours, curve = fit_rounds(X, y, qid, base, cfg, 5, ~hold, 30, hold)
        theirs = _ranker(cfg, 5, 30, early_stop=True).fit(
            X[~hold],
            y[~hold],
            qid=qid[~hold],
            base_margin=None if base is None else base[~hold],
            eval_set=[(X[hold], y[hold])],
            eval_qid=[qid[hold]],
            base_margin_eval_set=[None if base is None else base[hold]],
        )
        assert curve == theirs.evals_result()["validation_0"]["ndcg@10"]
        assert len(curve) < 30  # it stopped early, on the same round
        assert bytes(ours.get_booster().save_raw("json")) == bytes(
            theirs.get_booster().save_raw("json")
        )


def test_many_users_use_one_holdout_instead_of_folds(weak: dict) -> None:
    one = predict(weak_train(weak, cv_folds=1), weak["test"])
    capped = predict(weak_train(weak, cv_folds=3, cv_max_users=50), weak["test"])
    np.testing.assert_array_equal(capped, one)
    folds = predict(weak_train(weak, cv_folds=3), weak["test"])
    assert not np.array_equal(folds, one)


def test_refit_matters_with_a_single_holdout(weak: dict) -> None:
    one = predict(weak_train(weak, cv_folds=1), weak["test"])
    kept = predict(weak_train(weak, cv_folds=1, refit=False), weak["test"])
    assert not np.array_equal(one, kept)


def test_without_refit_the_holdout_model_is_cut_to_its_best_round(weak: dict) -> None:
    """No second fit: the early-stopped model cut to its best round is, tree for tree, the
    model a fit of that many rounds on the rows outside the holdout gives."""
    kept = weak_train(weak, cv_folds=1, refit=False)
    assert kept.model.get_booster().num_boosted_rounds() == kept.best_iteration
    refit_of_fitting_rows = weak_train(
        weak, cv_folds=1, refit=False, n_estimators=kept.best_iteration
    )
    # With n_estimators = best, early stopping ends at the same round or later, and the
    # curve's argmax is the same round: the final model is a fit of exactly those rows.
    assert refit_of_fitting_rows.best_iteration == kept.best_iteration
    assert bytes(kept.model.get_booster().save_raw("json")) == bytes(
        refit_of_fitting_rows.model.get_booster().save_raw("json")
    )


def test_refit_max_lists_keeps_the_early_stopped_model_on_many_lists(weak: dict) -> None:
    lists = weak_train(weak, cv_folds=1).lists_used
    refit = predict(weak_train(weak, cv_folds=1, refit_max_lists=lists), weak["test"])
    np.testing.assert_array_equal(refit, predict(weak_train(weak, cv_folds=1), weak["test"]))
    kept = predict(weak_train(weak, cv_folds=1, refit_max_lists=lists - 1), weak["test"])
    np.testing.assert_array_equal(
        kept, predict(weak_train(weak, cv_folds=1, refit=False), weak["test"])
    )
    assert not np.array_equal(kept, refit)


def test_n_estimators_caps_the_trees_with_refit(weak: dict) -> None:
    full, small = weak["result"], weak_train(weak, n_estimators=5)
    assert small.best_iteration <= 5 < full.best_iteration <= 30
    for result in (small, full):
        # The refitted model has exactly the number of trees early stopping found.
        assert result.model.get_booster().num_boosted_rounds() == result.best_iteration


# --------------------------------------------------------------------------- the stage


def run_rank(
    p: Project, split_dir: Path, blend_out: Path, out: Path, params: Path | None = None
) -> int:
    return rank.main(
        [
            "--split",
            str(split_dir),
            "--prepared",
            str(p.prepared),
            "--blend",
            str(blend_out / "blend"),
            "--features",
            str(p.root / "features"),
            "--model-dir",
            str(out / "model"),
            "--out",
            str(out / "rank"),
            "--summary",
            str(out / "ranker.json"),
            "--params",
            str(params or p.params),
        ]
    )


def run_all(root: Path, ranker_folds: int = 0) -> tuple[Project, Path, Path]:
    """The tiny project (with ``ranker_folds`` extra ranker folds) through candidates, blend
    (without test targets), features and rank. Returns (project, blend output folder, rank
    output folder)."""
    p = build_project(root, ranker_folds=ranker_folds)
    blend_out = p.root / "blend_run"
    assert run_blend(p, blend_out) == 0
    argv = ["--split", str(p.split), "--prepared", str(p.prepared)]
    assert features.main([*argv, "--out", str(p.root / "features"), "--params", str(p.params)]) == 0
    out = p.root / "rank_run"
    assert run_rank(p, p.split, blend_out, out) == 0
    return p, blend_out, out


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, Path]:
    """The tiny project through rank, valid fold only (see :func:`run_all`)."""
    return run_all(tmp_path_factory.mktemp("rank_project"))


def test_rank_stage_writes_model_importance_recs_and_summary(ranked: tuple) -> None:
    p, blend_out, out = ranked
    booster = xgb.Booster()
    booster.load_model(out / "model" / "model.json")
    gain = json.loads((out / "model" / "importance.json").read_text())
    assert booster.feature_names is not None
    assert sorted(booster.feature_names) == list(gain)
    assert any(f.startswith("m_") for f in gain) and any(f.startswith("p_") for f in gain)
    summary = json.loads((out / "ranker.json").read_text())
    assert summary["features"] == len(gain)
    assert summary["trees"] == booster.num_boosted_rounds()
    assert summary["lists_trained"] >= 2 and summary["lists_without_positive"] > 0
    assert summary["train_positives"] == summary["lists_trained"]  # one valid target per user
    assert 0 <= summary["holdout_ndcg@10"] <= 1

    recs = pd.read_parquet(out / "rank" / "test_recs.parquet")
    assert list(recs.columns) == ["user_idx", "item_idx", "score", "rank"]
    assert not recs[["user_idx", "item_idx"]].duplicated().any()
    ranks = recs.groupby("user_idx")["rank"].apply(list)
    assert all(r == list(range(1, len(r) + 1)) for r in ranks)
    assert ranks.map(len).max() == 15  # ranker.n
    assert recs.groupby("user_idx")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    # The ranker re-orders the test fold's blend candidates, nothing else.
    blend_test = pd.read_parquet(blend_out / "blend" / "test.parquet")
    key = pd.MultiIndex.from_frame(blend_test[["user_idx", "item_idx"]])
    assert pd.MultiIndex.from_frame(recs[["user_idx", "item_idx"]]).isin(key).all()
    assert set(recs["user_idx"]) == set(blend_test["user_idx"])
    # model.json with scoring.json is the model that ranked: its scores on the test pairs,
    # started from the base margin it names, give the same recs.
    scoring = json.loads((out / "model" / "scoring.json").read_text())
    assert scoring == {
        "features": booster.feature_names,
        "base_margin": "m_hybrid",
        "base_margin_scale": 1.0,
        "rerank_top": RankerConfig().rerank_top,  # the default: the fixture sets none
    }
    items, _ = load_catalogue(p.prepared)
    test = load_fold(p.split, "test")
    every = pd.read_parquet(blend_out / "blend" / "test.parquet")
    pairs = rank.describe(test, every, p.root / "features", items, FeaturesConfig())
    start = margin(pairs, RankerConfig(base_margin=scoring["base_margin"]))
    matrix = xgb.DMatrix(pairs[scoring["features"]].astype(np.float32), base_margin=start)
    scores = booster.predict(matrix, output_margin=True)
    expected = rank_by(pairs, scores, 15)
    pd.testing.assert_frame_equal(recs[KEY + ["rank"]], expected[KEY + ["rank"]])
    np.testing.assert_allclose(recs["score"], expected["score"], rtol=1e-5, atol=1e-6)


def test_rank_stage_rejects_a_feature_pattern_matching_nothing(
    ranked: tuple, tmp_path: Path
) -> None:
    p, blend_out, _ = ranked
    params = yaml.safe_load(p.params.read_text())
    params["ranker"]["features"] = ["m_*_norm", "q_*"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert run_rank(p, p.split, blend_out, tmp_path, path) == 2
    assert not (tmp_path / "model").exists()


def shuffled_split(p: Project, name: str, part: str) -> Path:
    """A copy of the split whose ``<part>_targets`` have their ``relevant`` column shuffled."""
    dst = p.root / name
    shutil.copytree(p.split, dst)
    path = dst / f"{part}_targets.parquet"
    targets = pd.read_parquet(path)
    shuffled = np.random.default_rng(0).permutation(targets["relevant"].to_numpy())
    assert (shuffled != targets["relevant"].to_numpy()).any()  # the shuffle changes labels
    targets["relevant"] = shuffled
    targets.to_parquet(path)
    return dst


def test_rank_stage_does_not_learn_from_test_targets(ranked: tuple) -> None:
    p, blend_out, out = ranked
    other = p.root / "rank_shuffled_test"
    assert run_rank(p, shuffled_split(p, "split_shuffled_test", "test"), blend_out, other) == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(other / "rank" / "test_recs.parquet"),
        pd.read_parquet(out / "rank" / "test_recs.parquet"),
    )
    assert (other / "model" / "model.json").read_bytes() == (
        out / "model" / "model.json"
    ).read_bytes()


def test_rank_stage_learns_from_valid_targets(ranked: tuple) -> None:
    """The check above has power: shuffling the valid labels does change the ranker."""
    p, blend_out, out = ranked
    other = p.root / "rank_shuffled_valid"
    assert run_rank(p, shuffled_split(p, "split_shuffled_valid", "valid"), blend_out, other) == 0
    assert (other / "model" / "model.json").read_bytes() != (
        out / "model" / "model.json"
    ).read_bytes()


# --------------------------------------------------------------------------- extra ranker folds


def test_one_list_per_user_is_the_default_queries(strong: dict) -> None:
    cfg = RankerConfig(**STRONG_CFG)
    users = strong["df"]["user_idx"].to_numpy()
    given = train(strong["df"], strong["y"], cfg, seed=1, queries=users * 7 + 3)
    np.testing.assert_array_equal(
        predict(given, strong["test"]), predict(strong["result"], strong["test"])
    )
    with pytest.raises(ValueError, match="ascending order"):
        train(strong["df"], strong["y"], cfg, seed=1, queries=users[::-1].copy())


def test_a_users_lists_from_several_folds_are_held_out_together() -> None:
    # Pure noise, the same users in two "folds" with the same rows: a holdout that kept one
    # copy of a user for fitting and the other for early stopping would reward memorising.
    df, y, _ = planted(120, seed=4, strength=0.0)
    two = pd.concat([df, df], ignore_index=True)
    y2 = np.r_[y, y]
    lists = np.r_[df["user_idx"].to_numpy(), df["user_idx"].to_numpy() + 10_000]
    cfg = RankerConfig(
        **{
            **STRONG_CFG,
            "features": ["p_noise", "i_noise"],
            "max_depth": 8,
            "n_estimators": 30,
            "early_stopping_rounds": 30,
        },
        min_child_weight=0.0,
        reg_lambda=0.0,
        subsample=1.0,
        colsample_bytree=1.0,
        cv_folds=1,
        holdout_share=0.3,
    )
    grouped = train(two, y2, cfg, seed=0, queries=lists)
    # the same frame with every copy posing as another user: the copies get split apart
    leaky = train(two.assign(user_idx=lists), y2, cfg, seed=0)
    assert grouped.lists_used == leaky.lists_used == 240
    assert leaky.holdout_ndcg > grouped.holdout_ndcg + 0.2
    assert grouped.holdout_ndcg < 0.6


@pytest.fixture(scope="module")
def ranked_extra(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Path, Path]:
    """The tiny project with two extra ranker folds, through rank (see :func:`run_all`)."""
    return run_all(tmp_path_factory.mktemp("rank_extra"), ranker_folds=2)


def test_extra_ranker_folds_flow_through_candidates_blend_and_features(ranked_extra) -> None:
    p, blend_out, _ = ranked_extra
    assert ranker_folds(p.split) == ("extra1", "extra2")
    for model in ("itemknn", "ease"):  # (als is off in this project)
        index = json.loads((p.candidates / "extra" / model / "folds.json").read_text())
        assert index == {"model": model, "folds": ["extra1", "extra2"]}
        for fold in ("extra1", "extra2"):
            recs = pd.read_parquet(p.candidates / "extra" / model / f"{fold}.parquet")
            target_users = set(load_fold(p.split, fold).targets["user_idx"])
            assert len(recs) and set(recs["user_idx"]) <= target_users
            assert (p.models / model / fold / "model.json").exists()
    summary = json.loads((blend_out / "blend.json").read_text())
    for fold in ("extra1", "extra2"):
        frame = pd.read_parquet(blend_out / "blend" / f"{fold}.parquet")
        # the extra folds' hybrid uses the weights searched on the valid fold
        expected = hybrid_score(frame, summary["weights"])
        np.testing.assert_allclose(frame["m_hybrid"], expected, rtol=1e-6)
        assert not (blend_out / "blend" / f"{fold}_recs.parquet").exists()
        assert (p.root / "features" / fold / "users.parquet").exists()


def test_rank_stage_learns_from_every_ranker_fold(ranked: tuple, ranked_extra) -> None:
    _, _, plain = ranked
    p, blend_out, out = ranked_extra
    one = json.loads((plain / "ranker.json").read_text())
    three = json.loads((out / "ranker.json").read_text())
    assert one["train_folds"] == 1 and three["train_folds"] == 3
    # the valid fold is the same in both projects: the extra folds add their own lists
    assert three["lists_trained"] > one["lists_trained"]
    items, _ = load_catalogue(p.prepared)
    folds = ("valid", "extra1", "extra2")
    job = rank.ListsJob(
        p.split,
        blend_out / "blend",
        p.root / "features",
        items,
        FeaturesConfig(),
        RankerConfig(rerank_top=100),
        seed=0,
        folds=folds,
    )
    (df, feats, y, lists, dropped, sampled), test_part = rank.training_lists(job)
    assert test_part is None  # the test fold is described only into a scratch folder
    assert three["train_pairs"] == len(df) and three["train_positives"] == int(y.sum())
    assert three["lists_without_positive"] == dropped > 0
    assert three["train_sampled_folds"] == sampled == 0
    # only lists with a positive are described (the others would be left out by train)
    assert (pd.Series(y).groupby(lists).sum() > 0).all()
    # one list per (fold, user): a user's rows of different folds never share a list
    per_list = pd.DataFrame({"list": lists, "user": df["user_idx"]}).groupby("list")["user"]
    assert (per_list.nunique() == 1).all()
    assert len(np.unique(lists)) > df["user_idx"].nunique()
    # the extra folds' labels do matter: shuffle one fold's and the model changes
    other = p.root / "rank_shuffled_extra"
    assert run_rank(p, shuffled_split(p, "split_shuffled_extra", "extra2"), blend_out, other) == 0
    assert (other / "model" / "model.json").read_bytes() != (
        out / "model" / "model.json"
    ).read_bytes()


def test_the_ranker_learns_and_ranks_the_same_from_the_blends_cut_files(
    ranked_extra: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The blend writes each user's top ``ranker.rerank_top`` pairs only. The ranker keeps
    those of whatever it reads, so from the cut files (training folds and test fold) it
    writes the same bytes as from every pair (the blend run with ``rerank_top`` null). A
    ranker asking for more pairs than the blend kept stops with what to do, and writes
    nothing."""
    p, _, _ = ranked_extra
    for name, top in (("cut", 4), ("whole", None)):
        params = yaml.safe_load(p.params.read_text())
        params["ranker"]["rerank_top"] = top
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(params))
        assert run_blend(p, tmp_path / name, tmp_path / f"{name}.yaml") == 0
    for fold in ("valid", "test", "extra1", "extra2"):
        cut, whole = (
            pd.read_parquet(tmp_path / n / "blend" / f"{fold}.parquet") for n in ("cut", "whole")
        )
        assert cut.groupby("user_idx").size().max() == 4
        assert whole.groupby("user_idx").size().max() > 4
    outputs = {}
    for name in ("cut", "whole"):
        out = tmp_path / name / "ranked"
        assert run_rank(p, p.split, tmp_path / name, out, tmp_path / "cut.yaml") == 0
        outputs[name] = {f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()}
    assert len(outputs["cut"]) > 3
    assert outputs["cut"] == outputs["whole"]
    params = yaml.safe_load(p.params.read_text())
    params["ranker"]["rerank_top"] = 3  # fewer than the blend kept: fine
    (tmp_path / "fewer.yaml").write_text(yaml.safe_dump(params))
    assert run_rank(p, p.split, tmp_path / "cut", tmp_path / "fewer", tmp_path / "fewer.yaml") == 0
    for top in (5, None):
        params = yaml.safe_load(p.params.read_text())
        params["ranker"]["rerank_top"] = top
        (tmp_path / "more.yaml").write_text(yaml.safe_dump(params))
        out = tmp_path / f"more{top}"
        caplog.clear()
        assert run_rank(p, p.split, tmp_path / "cut", out, tmp_path / "more.yaml") == 2
        wanted = "every candidate" if top is None else "the top 5"
        assert "pairs.json: the blend kept each user's top 4 pairs" in caplog.text
        assert f"asks for {wanted}: re-run the blend" in caplog.text
        assert not out.exists()
    # the whole files carry no cut: any rerank_top reads them
    assert json.loads((tmp_path / "whole" / "blend" / "pairs.json").read_text()) == {
        "rerank_top": None
    }


def test_misaligned_ranker_roles_are_a_clear_error(ranked_extra) -> None:
    p, _, _ = ranked_extra
    broken = p.root / "split_misaligned"
    shutil.copytree(p.split, broken)
    roles = pd.read_parquet(broken / "ranker_folds.parquet")
    roles.iloc[:-1].to_parquet(broken / "ranker_folds.parquet")
    with pytest.raises(ValueError, match=r"ranker_folds\.parquet: its rows do not line up"):
        load_fold(broken, "extra1")
    with pytest.raises(ValueError, match="unknown fold 'extra3'"):
        load_fold(p.split, "extra3")


def _lists(n_users: int = 30, per_user: int = 40, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.tile(np.arange(per_user), n_users) + 7 * users
    y = (rng.random(len(users)) < 0.05).astype(np.float32)
    y[users == 3] = 0  # a list without a positive
    return pd.DataFrame({"user_idx": users, "item_idx": items}), y


def test_training_rows_leave_out_lists_without_a_positive() -> None:
    pairs, y = _lists()
    keep, dropped = training_rows(pairs, y, None, seed=0)
    has = pd.Series(y).groupby(pairs["user_idx"]).sum() > 0
    assert dropped == int((~has).sum()) >= 1
    np.testing.assert_array_equal(keep, has.loc[pairs["user_idx"]].to_numpy())


@pytest.mark.parametrize("negatives", [1, 5, 100])
def test_training_rows_keep_every_positive_and_at_most_n_negatives(negatives: int) -> None:
    pairs, y = _lists()
    keep, _ = training_rows(pairs, y, negatives, seed=0)
    full, _ = training_rows(pairs, y, None, seed=0)
    assert (keep <= full).all()
    assert keep[(y > 0)].all()  # every positive
    kept = pd.DataFrame({"u": pairs["user_idx"], "neg": (y == 0) & keep, "all": (y == 0) & full})
    per_list = kept.groupby("u")[["neg", "all"]].sum()
    with_positive = per_list.index[per_list.index != 3]
    expected = np.minimum(per_list.loc[with_positive, "all"], negatives)
    np.testing.assert_array_equal(per_list.loc[with_positive, "neg"], expected)


def test_training_rows_draw_does_not_depend_on_row_order_and_follows_the_seed() -> None:
    pairs, y = _lists()
    keep, _ = training_rows(pairs, y, 5, seed=1)
    order = np.random.default_rng(9).permutation(len(pairs))
    shuffled, _ = training_rows(pairs.iloc[order].reset_index(drop=True), y[order], 5, seed=1)
    np.testing.assert_array_equal(shuffled, keep[order])
    other, _ = training_rows(pairs, y, 5, seed=2)
    assert not np.array_equal(other, keep)


def rank_with(p: Project, blend_out: Path, name: str, **ranker: object) -> Path:
    """Run the rank stage of the project with ``ranker`` settings changed; its output folder."""
    params = yaml.safe_load(p.params.read_text())
    params["ranker"].update(ranker)
    path = p.root / f"params_{name}.yaml"
    path.write_text(yaml.safe_dump(params))
    out = p.root / f"rank_{name}"
    assert run_rank(p, p.split, blend_out, out, path) == 0
    return out


def test_rank_stage_with_sampled_negatives_trains_on_fewer_rows(ranked: tuple) -> None:
    p, blend_out, out = ranked
    sampled = rank_with(p, blend_out, "sampled", train_negatives=3)
    full = json.loads((out / "ranker.json").read_text())
    few = json.loads((sampled / "ranker.json").read_text())
    assert few["lists_trained"] == full["lists_trained"]
    assert few["train_positives"] == full["train_positives"]
    assert few["train_pairs"] <= few["train_positives"] + 3 * few["lists_trained"]
    assert few["train_pairs"] < full["train_pairs"]
    # the same cap reached through a fold's many lists draws the same rows: the same model
    many = rank_with(p, blend_out, "many", train_many_lists=1, train_many_negatives=3)
    files = sorted(f.relative_to(sampled) for f in sampled.rglob("*") if f.is_file())
    assert files == sorted(f.relative_to(many) for f in many.rglob("*") if f.is_file())
    assert any(f.parts[0] == "model" for f in files)
    for f in files:
        assert (many / f).read_bytes() == (sampled / f).read_bytes(), f


def test_negatives_cap_follows_the_row_budget() -> None:
    every = RankerConfig(train_max_rows=None)
    assert negatives_cap(every, lists=100, positives=150, rows=20_000) is None
    budget = RankerConfig(train_max_rows=10_000)
    # 5 folds share 10,000 rows: 2,000 each; 100 lists with 150 positives keep 18 negatives
    assert negatives_cap(budget, lists=100, positives=150, rows=20_000, folds=5) == 18
    assert (
        negatives_cap(budget, lists=100, positives=150, rows=1_900, folds=5) is None
    )  # fits: every row
    assert (
        negatives_cap(
            RankerConfig(train_max_rows=50), lists=100, positives=150, rows=20_000, folds=5
        )
        == 1
    )
    capped = RankerConfig(train_negatives=5, train_max_rows=10_000)
    assert negatives_cap(capped, lists=100, positives=150, rows=1_900, folds=5) == 5
    assert negatives_cap(capped, lists=100, positives=150, rows=20_000, folds=5) == 5


def test_negatives_cap_of_a_fold_with_many_lists() -> None:
    """Past ``train_many_lists`` lists a fold keeps ``train_many_negatives`` a list; a fold
    at the threshold keeps every row; the row budget still binds when it is lower, and an
    explicit ``train_negatives`` takes the many-lists cap's place."""
    cfg = RankerConfig(train_many_lists=100, train_many_negatives=7)
    assert negatives_cap(cfg, lists=100, positives=150, rows=20_000, folds=5) is None
    assert negatives_cap(cfg, lists=101, positives=150, rows=20_000, folds=5) == 7
    tight = RankerConfig(train_many_lists=100, train_many_negatives=7, train_max_rows=5_000)
    # 1,000 rows a fold: (1,000 - 150) // 101 = 8 fit, so the 7 a list bind ...
    assert negatives_cap(tight, lists=101, positives=150, rows=20_000, folds=5) == 7
    # ... and with 200 lists (1,000 - 150) // 200 = 4 fit: the budget binds
    assert negatives_cap(tight, lists=200, positives=150, rows=20_000, folds=5) == 4
    # an explicit train_negatives replaces the many-lists cap, lower or higher
    fixed = RankerConfig(train_many_lists=100, train_many_negatives=7, train_negatives=3)
    assert negatives_cap(fixed, lists=101, positives=150, rows=20_000) == 3
    more = RankerConfig(train_many_lists=100, train_many_negatives=7, train_negatives=50)
    assert negatives_cap(more, lists=101, positives=150, rows=20_000) == 50
    off = RankerConfig(train_many_lists=None, train_max_rows=None)
    assert negatives_cap(off, lists=10**6, positives=10**6, rows=10**9) is None


def test_rank_stage_with_a_row_budget_samples_each_fold(ranked: tuple) -> None:
    p, blend_out, out = ranked
    full = json.loads((out / "ranker.json").read_text())
    budget = full["train_positives"] + 2 * full["lists_trained"]
    bounded = rank_with(p, blend_out, "budget", train_max_rows=budget)
    few = json.loads((bounded / "ranker.json").read_text())
    assert few["lists_trained"] == full["lists_trained"]
    assert few["train_positives"] == full["train_positives"]
    assert few["train_pairs"] <= budget < full["train_pairs"]
    assert few["train_sampled_folds"] == 1 and full["train_sampled_folds"] == 0


def test_rank_stage_in_blocks_of_two_users_writes_the_same_bytes(
    ranked: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streaming test: scoring the test fold two users at a time gives byte-identical
    lists (and the same model) as one block, with the similarity features of all blocks
    computed together, and in groups of a few blocks (a budget of 900 pairs) and one by
    one (a budget of one pair); described after training in the stage's process and
    beside the training folds in a worker, through scratch files. The items' content
    vectors come from the stage, computed once: no fold computes them again."""
    from recpipe.features import pairs as pairs_module

    p, blend_out, out = ranked
    groups = []
    real = pairs_module.pair_similarities

    def counted(*args):
        groups.append(len(args[0]))
        return real(*args)

    def recomputed(items):
        raise AssertionError("a fold computed the items' content vectors again")

    monkeypatch.setattr(pairs_module, "pair_similarities", counted)
    monkeypatch.setattr(pairs_module, "item_vectors", recomputed)
    for budget, n in ((None, "1"), (900, "1"), (1, "1"), (900, "2")):
        if budget is not None:
            monkeypatch.setattr(pairs_module, "SHARED_PAIRS", budget)
        monkeypatch.setenv(WORKERS, n)
        groups.clear()
        blocked = rank_with(p, blend_out, f"blocks{budget}_{n}", block_users=2)
        for name in ("rank/test_recs.parquet", "model/model.json"):
            assert (blocked / name).read_bytes() == (out / name).read_bytes(), (budget, n, name)
        assert not list((blocked / "rank").glob(".*.scratch"))  # the scratch files are gone
        if n == "2":
            assert groups == []  # counted in the worker, not here
        elif budget is None:
            assert len(groups) == 1  # every block's pairs at once
        elif budget == 900:
            assert len(groups) > 1 and max(groups) <= 900
        else:
            assert groups == []  # each block computes its own


@pytest.mark.parametrize(
    ("project", "fold", "n"),
    [("ranked", "test", "1"), ("ranked", "test", "2"), ("ranked_extra", "extra2", "2")],
)
def test_a_fold_with_other_columns_stops_the_rank_stage(
    project: str,
    fold: str,
    n: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fold whose blend lacks a column the ranker learns from (written by another run) is
    refused by file and column: the test fold described after training or beside the
    training folds in a worker, an extra training fold against the valid one. The
    previous outputs stay and no scratch file is left."""
    p, blend_out, out = request.getfixturevalue(project)
    mixed = tmp_path / "mixed"
    shutil.copytree(blend_out / "blend", mixed / "blend")
    frame = pd.read_parquet(mixed / "blend" / f"{fold}.parquet")
    dropped = next(c for c in frame.columns if c.startswith("m_") and c.endswith("_norm"))
    write_parquet(frame.drop(columns=dropped), mixed / "blend" / f"{fold}.parquet")
    before = tmp_path / "before"
    shutil.copytree(out, before)
    monkeypatch.setenv(WORKERS, n)
    caplog.set_level(logging.INFO)
    assert run_rank(p, p.split, mixed, before) == 2
    assert f"fold {fold}: its candidates lack the ranker feature {dropped!r}" in caplog.text
    assert str(mixed / "blend" / f"{fold}.parquet") in caplog.text
    for f in out.rglob("*"):
        if f.is_file():
            assert (before / f.relative_to(out)).read_bytes() == f.read_bytes(), f
    assert not list(before.rglob(".*.scratch"))


@pytest.mark.parametrize("n", ["1", "2"])
def test_a_test_fold_without_a_user_feature_names_its_features_file(
    ranked: tuple,
    n: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user feature missing from the test fold's features (written by another run) is
    refused by the features file and column, before anything is written."""
    p, blend_out, out = ranked
    alt = dataclasses.replace(p, root=tmp_path / "alt")
    shutil.copytree(p.root / "features", alt.root / "features")
    users = pd.read_parquet(alt.root / "features" / "test" / "users.parquet")
    model = json.loads((out / "model" / "scoring.json").read_text())
    dropped = next(c for c in model["features"] if c.startswith("u_"))
    write_parquet(users.drop(columns=dropped), alt.root / "features" / "test" / "users.parquet")
    monkeypatch.setenv(WORKERS, n)
    caplog.set_level(logging.INFO)
    assert run_rank(alt, p.split, blend_out, tmp_path / "out") == 2
    assert f"fold test: its candidates lack the ranker feature {dropped!r}" in caplog.text
    assert str(alt.root / "features" / "test" / "users.parquet") in caplog.text
    assert not (tmp_path / "out" / "rank").exists() or not list(
        (tmp_path / "out" / "rank").iterdir()
    )
    # with workers the test fold is checked before the ranker is trained
    assert ("trained on" in caplog.text) == (n == "1")


@pytest.mark.parametrize(
    ("project", "n"),
    [("ranked_extra", "1"), ("ranked_extra", "2"), ("ranked", "3"), ("ranked_extra", "past")],
)
def test_blend_stage_in_blocks_of_two_users_writes_the_same_bytes(
    project: str,
    n: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The blend's streaming test: every fold (valid, test and the extra ranker folds)
    merged, scored and written two users at a time gives byte-identical files, every
    block in this process (``RECPIPE_WORKERS=1``); four folds two side by side in worker
    processes, their blocks one at a time in each (the valid fold from the candidates and
    models the search loaded, inherited by the workers); two folds (fewer than two a
    worker) one at a time, each fold's blocks three side by side; or, with ``auto`` on
    data past the folds' bound (``engine.PARALLEL_MAX_EVENTS``, here 0 events), the folds
    one at a time and each fold's blocks two side by side."""
    p, blend_out, _ = request.getfixturevalue(project)
    if n == "past":
        monkeypatch.delenv(WORKERS, raising=False)
        monkeypatch.setattr(engine, "PARALLEL_MAX_EVENTS", 0)
        monkeypatch.setattr(engine, "cpus", lambda: 3)
    else:
        monkeypatch.setenv(WORKERS, n)
    # each user's top 3 pairs kept (the fixture's users have fewer than the default 200),
    # so the cut happens where the blocks are built, in the workers too
    params = yaml.safe_load(p.params.read_text())
    params["ranker"]["rerank_top"] = 3
    (p.root / "cut.yaml").write_text(yaml.safe_dump(params))
    whole = p.root / f"blend_cut{n}"
    assert run_blend(p, whole, p.root / "cut.yaml") == 0  # one block a fold
    caplog.set_level(logging.INFO, logger="engine")
    caplog.clear()
    params["blend"]["block_users"] = 2
    (p.root / "blocks.yaml").write_text(yaml.safe_dump(params))
    blocked = p.root / f"blend_blocks{n}"
    assert run_blend(p, blocked, p.root / "blocks.yaml") == 0
    side = [r.getMessage().split(" (")[0] for r in caplog.records]
    side = [m for m in side if "side by side" in m]
    folds = ["valid", "test"] + (["extra1", "extra2"] if project == "ranked_extra" else [])
    if n == "1":
        assert side == []
    elif n == "2":
        assert side == ["4 folds, 2 side by side"]
    else:
        width = 3 if n == "3" else 2
        assert [m.split(" ", 1)[1] for m in side] == [
            f"blocks of {f} users, {width} side by side" for f in folds
        ]
    names = sorted(f.name for f in (whole / "blend").iterdir())
    assert {f"{f}.parquet" for f in folds} | {"test_recs.parquet"} <= set(names)
    assert sorted(f.name for f in (blocked / "blend").iterdir()) == names
    for name in names:
        assert (blocked / "blend" / name).read_bytes() == (whole / "blend" / name).read_bytes(), (
            name
        )
    assert (blocked / "blend.json").read_bytes() == (whole / "blend.json").read_bytes()
    for f in folds:
        cut = pd.read_parquet(blocked / "blend" / f"{f}.parquet")
        assert cut.groupby("user_idx").size().max() == 3
    # the recs come from every candidate, as without the cut
    for f in ("valid_recs.parquet", "test_recs.parquet"):
        assert (blocked / "blend" / f).read_bytes() == (blend_out / "blend" / f).read_bytes()


def test_the_stages_write_the_same_bytes_one_fold_at_a_time_and_side_by_side(
    ranked_extra: tuple, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine's blocks (a model's folds, the
    ranker's training folds and its test fold, the features' folds) run one at a time
    (``RECPIPE_WORKERS=1``) and three side by side in worker processes: every file has
    the same bytes (ALS's candidates included, whose OpenMP runs on one thread in a
    worker)."""
    p, _, _ = ranked_extra
    caplog.set_level(logging.INFO, logger="engine")
    params = yaml.safe_load(p.params.read_text())
    params["candidates"]["als"] = {"n": 20, "factors": 8, "iterations": 3}
    with_als = p.root / "params_als.yaml"
    with_als.write_text(yaml.safe_dump(params))
    runs = {}
    for n in ("1", "3"):
        monkeypatch.setenv(WORKERS, n)
        root = p.root / f"workers{n}"
        for model in ("itemknn", "als"):
            argv = ["--model", model, "--split", str(p.split), "--prepared", str(p.prepared)]
            argv += ["--models-dir", str(root / "models" / model)]
            argv += ["--out", str(root / "candidates"), "--params", str(with_als)]
            assert candidates.main(argv) == 0
        assert run_blend(p, root) == 0
        assert run_rank(p, p.split, root, root / "rank") == 0
        argv = ["--split", str(p.split), "--prepared", str(p.prepared), "--params", str(p.params)]
        assert features.main([*argv, "--out", str(root / "features")]) == 0
        runs[n] = {f.relative_to(root): f.read_bytes() for f in root.rglob("*") if f.is_file()}
        # with 3, every stage ran its folds in workers: a model's 4 folds (itemknn, als),
        # the ranker's 3 training folds and the test fold described beside them, the
        # features' 4 folds; the blend's 4 folds, fewer than two a worker, one at a time,
        # their blocks side by side (one block each here: no worker)
        side = [r.getMessage() for r in caplog.records if "side by side" in r.getMessage()]
        expected = ["4 folds, 3"] * 4
        assert [m.split(" side by side")[0] for m in side] == (expected if n == "3" else [])
        caplog.clear()
    assert sorted(runs["1"]) == sorted(runs["3"])
    assert len([f for f in runs["1"] if f.parts[0] == "candidates"]) == 2 * 4 + 2  # + indexes
    for name, content in runs["1"].items():
        assert runs["3"][name] == content, name


def test_auto_runs_the_fits_side_by_side_past_the_blends_bound(
    ranked_extra: tuple,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With ``RECPIPE_WORKERS`` unset, data past the blend's and the ranker's bound
    (``engine.PARALLEL_MAX_EVENTS``, here 0 events) still has its features and its
    candidate models' folds in two workers, under their own bound
    (``engine.FIT_PARALLEL_MAX_EVENTS``), and the blend's and the ranker's folds one at a
    time."""
    p, _, _ = ranked_extra
    monkeypatch.delenv(WORKERS, raising=False)
    monkeypatch.setattr(engine, "PARALLEL_MAX_EVENTS", 0)
    monkeypatch.setattr(engine, "cpus", lambda: 2)
    caplog.set_level(logging.INFO, logger="engine")
    argv = ["--split", str(p.split), "--prepared", str(p.prepared), "--params", str(p.params)]
    assert features.main([*argv, "--out", str(tmp_path / "features")]) == 0
    model = ["--model", "popularity", "--models-dir", str(tmp_path / "models")]
    assert candidates.main([*argv, *model, "--out", str(tmp_path / "candidates")]) == 0
    assert run_blend(p, tmp_path) == 0
    assert run_rank(p, p.split, tmp_path, tmp_path / "rank") == 0
    side = [r.getMessage() for r in caplog.records if "side by side" in r.getMessage()]
    assert [m.split(" (")[0] for m in side] == ["4 folds, 2 side by side"] * 2


def test_a_fold_failing_in_a_worker_leaves_the_blends_files_as_they_were(
    ranked_extra: tuple,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A fold blended in a worker process stops the stage with its clear error; nothing the
    stage had written (the valid fold, the other folds) replaces the previous outputs, and
    no temporary file is left."""
    p, blend_out, _ = ranked_extra
    broken = dataclasses.replace(p, candidates=tmp_path / "candidates")
    shutil.copytree(p.candidates, broken.candidates)
    for model in MODELS:
        write_parquet(concat_recs([]), candidates_file(broken.candidates, "extra2", model))
    out = tmp_path / "out"
    shutil.copytree(blend_out, out)
    before = {f: f.read_bytes() for f in out.rglob("*") if f.is_file()}
    monkeypatch.setenv(WORKERS, "2")
    caplog.set_level(logging.INFO, logger="engine")
    assert run_blend(broken, out) == 2
    assert "4 folds, 2 side by side" in caplog.text  # the failing fold ran in a worker
    assert "no candidates for the extra2 fold" in caplog.text
    assert {f: f.read_bytes() for f in out.rglob("*") if f.is_file()} == before


def _joined(blend, user_feats, item_feats, pair_feats) -> pd.DataFrame:
    """assemble's frame by pandas' joins, one after the other (what it must equal)."""
    df = blend.sort_values(KEY, kind="stable").reset_index(drop=True)
    df = df.join(user_feats.set_index("user_idx"), on="user_idx")
    df = df.join(item_feats.set_index("item_idx"), on="item_idx")
    return df.join(pair_feats.set_index(KEY), on=KEY)


def test_assemble_equals_the_joins() -> None:
    """Users and items without features (NaN, an int column turned float), pair features in
    the rows' order or not, a one-user block: the joins' frame exactly."""
    rng = np.random.default_rng(7)
    blend = pd.DataFrame(
        {
            "user_idx": np.repeat([3, 1, 4], 5),
            "item_idx": np.tile([9, 2, 6, 0, 5], 3),
            "m_a_norm": rng.random(15).astype(np.float32),
        }
    )
    user_feats = pd.DataFrame(
        {"user_idx": [1, 3, 8], "u_events": [5, 2, 7], "u_attr_x": [0.5, np.nan, 1.0]}
    )
    item_feats = pd.DataFrame(
        {
            "item_idx": np.arange(7),  # item 9 has none
            "i_pop": np.arange(7, dtype=np.int32),
            "i_new": [True, False] * 3 + [True],
        }
    )
    ordered = blend.sort_values(KEY, ignore_index=True)[KEY]
    pair_feats = ordered.assign(p_sim=rng.random(15), p_ratio=rng.random(15).astype(np.float32))
    for pf in (pair_feats, pair_feats.sample(frac=1.0, random_state=1)):
        want = _joined(blend, user_feats, item_feats, pf)
        pd.testing.assert_frame_equal(assemble(blend, user_feats, item_feats, pf), want)
        # the service passes its item table indexed once
        indexed = item_feats.set_index("item_idx")
        pd.testing.assert_frame_equal(assemble(blend, user_feats, indexed, pf), want)
    one = blend[blend["user_idx"] == 4]
    pf_one = pair_feats[pair_feats["user_idx"] == 4]
    pd.testing.assert_frame_equal(
        assemble(one, user_feats, item_feats, pf_one), _joined(one, user_feats, item_feats, pf_one)
    )
    with pytest.raises(ValueError, match="'u_events' comes from two tables"):
        assemble(blend, user_feats, item_feats.assign(u_events=1), pair_feats)
    twice = pd.concat([item_feats, item_feats.iloc[[2]]])
    with pytest.raises(ValueError, match="features: item_idx 2 has two rows"):
        assemble(blend, user_feats, twice, pair_feats)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 300))
def test_best_first_is_the_three_key_sort(seed: int, n: int) -> None:
    """The one-key sort (rows sorted by user and item, float32 scores) gives the three-key
    sort's order, ties, -0.0 against 0.0 and -inf included; other rows fall back to it."""
    rng = np.random.default_rng(seed)
    pairs = np.unique(rng.integers(0, 8, n) * 1000 + rng.integers(0, 40, n))
    users, items = pairs // 1000, pairs % 1000
    score = rng.choice(
        np.float32([-np.inf, -2.5, -0.0, 0.0, 0.25, 0.25, 1.0, 3.0e38]), len(pairs)
    ).astype(np.float64)
    want = np.lexsort((items, -score, users))
    real_lexsort = np.lexsort
    with pytest.MonkeyPatch.context() as mp:  # the fast path must not need the three keys
        if len(pairs) > 1:  # (one row needs no sort)
            mp.setattr(np, "lexsort", lambda *a, **k: pytest.fail("three-key sort used"))
        got = best_first(users, items, score)
    assert np.array_equal(got, want)
    # not sorted by (user, item), or scores float32 cannot hold: the three-key sort
    shuffled = rng.permutation(len(pairs))
    u, i, s = users[shuffled], items[shuffled], score[shuffled]
    assert np.array_equal(best_first(u, i, s), real_lexsort((i, -s, u)))
    fine = score + 1e-12 * rng.random(len(pairs))
    assert np.array_equal(best_first(users, items, fine), real_lexsort((items, -fine, users)))
