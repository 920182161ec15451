"""Blend: union of candidates, per-model scores and normalisation, the hybrid, the weight
search (checked against ``topn_metrics``) and the ``blend`` stage on a tiny project."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from recpipe import blending, engine
from recpipe.artifacts import load_model, model_dir
from recpipe.blending import (
    BlendConfig,
    SearchResult,
    TrialScorer,
    ValidFold,
    blend_block,
    choose_weights,
    describe_pairs,
    fill_with_user_min,
    fold_hybrid,
    hybrid_score,
    normalise_columns,
    normalise_per_user,
    out_of_bag_hybrid,
    rank_by,
    resolve_weights,
    score_columns,
    score_pairs,
    search,
    search_weights,
    union_candidates,
    union_columns,
)
from recpipe.config import parse
from recpipe.errors import ConfigError, DataError
from recpipe.evaluation.metrics import topn_metrics
from recpipe.folds import load_fold
from recpipe.io import write_many
from recpipe.models.base import Recommender, TrainData
from recpipe.models.registry import MODELS
from recpipe.schema import finalize
from recpipe.sources.synthetic import SyntheticConfig, generate
from recpipe.splitting import Relevance, TemporalSplit, split
from stages import blend, candidates
from stages.split import split_files

METHODS = ("zscore", "minmax", "rank")


def cands(rows: list[tuple[int, int]]) -> pd.DataFrame:
    """A model's candidates from (user, item) rows listed best first per user."""
    df = pd.DataFrame(rows, columns=["user_idx", "item_idx"]).astype(np.int64)
    df["score"] = np.float32(1.0)
    df["rank"] = (df.groupby("user_idx").cumcount() + 1).astype(np.int32)
    return df


class TableModel(Recommender):
    """A fake model whose scores are a fixed users x items table (NaN = no score)."""

    name = "table"
    config_class = BlendConfig  # unused: the model is never built from params

    def __init__(self, table: np.ndarray) -> None:
        super().__init__(BlendConfig(search=True))
        self.table = np.asarray(table, dtype=np.float32)
        self.n_users, self.n_items = self.table.shape

    def _fit(self, data: TrainData) -> None:  # pragma: no cover - never fitted
        raise NotImplementedError

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.table[users]


# --------------------------------------------------------------------------- union


def test_union_candidates_merges_sorts_and_counts() -> None:
    a = cands([(1, 5), (1, 2), (0, 7)])
    b = cands([(1, 2), (1, 9), (2, 0)])
    c = cands([])  # a model with no candidates still gets its (all-NaN) rank column
    out = union_candidates({"a": a, "b": b, "c": c})
    assert list(zip(out["user_idx"], out["item_idx"], strict=True)) == [
        (0, 7),
        (1, 2),
        (1, 5),
        (1, 9),
        (2, 0),
    ]
    assert list(out.columns) == ["user_idx", "item_idx", "m_a_rank", "m_b_rank", "m_c_rank"] + [
        "m_n_models"
    ]
    np.testing.assert_array_equal(out["m_a_rank"], [1, 2, 1, np.nan, np.nan])
    np.testing.assert_array_equal(out["m_b_rank"], [np.nan, 1, np.nan, 2, 1])
    assert out["m_c_rank"].isna().all()
    assert out["m_n_models"].tolist() == [1, 2, 1, 1, 1]
    assert out.index.tolist() == list(range(5))


def test_union_candidates_of_nothing_is_empty() -> None:
    out = union_candidates({"a": cands([]), "b": cands([])})
    assert len(out) == 0 and {"user_idx", "item_idx"} <= set(out.columns)


# --------------------------------------------------------------------------- describe


def test_describe_pairs_scores_every_pair_with_every_model() -> None:
    nan = np.nan
    table_a = np.array([[0.1, 0.9, 0.5, 0.3], [2.0, nan, 1.0, 4.0]])
    table_b = np.array([[nan, nan, nan, nan], [7.0, 7.0, 7.0, 7.0]])
    pairs = union_candidates(
        {"a": cands([(0, 1), (0, 2), (1, 3)]), "b": cands([(0, 0), (1, 1), (1, 2)])}
    )
    before = pairs.copy()
    models = {"a": TableModel(table_a), "b": TableModel(table_b)}
    for method in METHODS:
        out = describe_pairs(pairs, models, method)
        pd.testing.assert_frame_equal(pairs, before)  # the input is left alone
        pd.testing.assert_frame_equal(out[before.columns], before)
        u, i = pairs["user_idx"].to_numpy(), pairs["item_idx"].to_numpy()
        # A pair proposed by one model still gets the other's score; NaN where it has none.
        np.testing.assert_array_equal(out["m_a_score"], table_a[u, i].astype(np.float32))
        np.testing.assert_array_equal(out["m_b_score"], table_b[u, i].astype(np.float32))
        for m in models:
            expected = normalise_per_user(u, out[f"m_{m}_score"].to_numpy(), method)
            np.testing.assert_array_equal(out[f"m_{m}_norm"], expected)
            assert out[f"m_{m}_norm"].dtype == np.float32
        assert out.loc[out["user_idx"] == 0, "m_b_norm"].isna().all()
        assert out.loc[(out["user_idx"] == 1) & (out["item_idx"] == 1), "m_a_norm"].isna().all()
    rank = describe_pairs(pairs, models, "rank")
    # user 0 under a: items 0, 1, 2 score 0.1, 0.9, 0.5 -> percentiles 1/3, 1, 2/3
    np.testing.assert_allclose(rank["m_a_norm"][:3], [1 / 3, 1, 2 / 3], rtol=1e-6)
    # user 1 under b: a constant user; every pair shares the top percentile
    np.testing.assert_array_equal(rank["m_b_norm"][3:], [1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- normalise


def test_normalise_hand_cases() -> None:
    nan = np.nan
    users = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3])
    scores = np.array([0.1, 0.1, 0.1, 1.0, nan, 2.0, 3.0, nan, nan, 5.0], dtype=np.float32)
    z = normalise_per_user(users, scores, "zscore")
    s6 = math.sqrt(1.5)  # (x - 2) / sqrt(2/3)
    np.testing.assert_allclose(
        z, [0, 0, 0, -s6, nan, 0, s6, nan, nan, 0], rtol=1e-6, atol=1e-7, equal_nan=True
    )
    m = normalise_per_user(users, scores, "minmax")
    np.testing.assert_allclose(m, [1, 1, 1, 0, nan, 0.5, 1, nan, nan, 1], equal_nan=True)
    r = normalise_per_user(users, scores, "rank")
    np.testing.assert_allclose(
        r, [1, 1, 1, 1 / 3, nan, 2 / 3, 1, nan, nan, 1], rtol=1e-6, equal_nan=True
    )
    for out in (z, m, r):
        assert out.dtype == np.float32
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalise_per_user(users, scores, "softmax")


def test_rank_normalisation_ties_share_the_highest_percentile() -> None:
    out = normalise_per_user(np.zeros(4, int), np.array([1.0, 2.0, 2.0, 3.0]), "rank")
    np.testing.assert_allclose(out, [0.25, 0.75, 0.75, 1.0])


@st.composite
def grouped_scores(draw: st.DrawFn, separated: bool) -> tuple[np.ndarray, np.ndarray, list]:
    """(users, float32 scores with NaN, a row permutation) for 1-5 users of 1-12 pairs each.

    ``separated``: scores are multiples of a scale with a modest offset, so distinct scores
    are far apart relative to the user's range (strict order must survive float32);
    otherwise any float32 values, where only the weak order can be promised.
    """
    users: list[int] = []
    scores: list[float] = []
    for u in range(draw(st.integers(1, 5))):
        n = draw(st.integers(1, 12))
        if separated:
            scale = draw(st.sampled_from([1e-3, 0.1, 1.0, 37.5, 1e3]))
            offset = draw(st.integers(-100, 100))
            ks = draw(st.lists(st.integers(-1000, 1000), min_size=n, max_size=n))
            vals = [offset + k * scale for k in ks]
        else:
            finite = st.floats(width=32, allow_nan=False, allow_infinity=False)
            vals = draw(st.lists(finite, min_size=n, max_size=n))
        missing = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        users += [u] * n
        scores += [np.nan if gone else v for v, gone in zip(vals, missing, strict=True)]
    perm = draw(st.permutations(range(len(users))))
    return np.array(users), np.array(scores, dtype=np.float32), list(perm)


def check_order(users: np.ndarray, s: np.ndarray, out: np.ndarray, strict: bool) -> None:
    """Within every user: NaN <-> NaN, ties stay ties, increasing stays (strictly) increasing."""
    np.testing.assert_array_equal(np.isnan(out), np.isnan(s))
    for u in np.unique(users):
        sel = (users == u) & ~np.isnan(s)
        a, b = s[sel], out[sel]
        lt = a[:, None] < a[None, :]
        assert (b[:, None] == b[None, :])[a[:, None] == a[None, :]].all(), (a, b)
        if strict:
            assert (b[:, None] < b[None, :])[lt].all(), (a, b)
        else:
            assert (b[:, None] <= b[None, :])[lt].all(), (a, b)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=60, deadline=None)
@given(data=grouped_scores(separated=True))
def test_normalise_keeps_each_users_strict_order(method: str, data: tuple) -> None:
    users, s, _ = data
    check_order(users, s, normalise_per_user(users, s, method), strict=True)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=60, deadline=None)
@given(data=grouped_scores(separated=False))
def test_normalise_never_inverts_order_for_any_float32(method: str, data: tuple) -> None:
    users, s, _ = data
    out = normalise_per_user(users, s, method)
    check_order(users, s, out, strict=False)
    assert np.isfinite(out[~np.isnan(s)]).all()


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=60, deadline=None)
@given(data=st.one_of(grouped_scores(separated=True), grouped_scores(separated=False)))
def test_normalise_is_invariant_to_row_order(method: str, data: tuple) -> None:
    users, s, perm = data
    out = normalise_per_user(users, s, method)
    # Bit for bit: the blend's outputs must not depend on the order candidates arrive in.
    np.testing.assert_array_equal(normalise_per_user(users[perm], s[perm], method), out[perm])


def pandas_normalised(users: np.ndarray, s: np.ndarray, method: str) -> np.ndarray:
    """The grouped normalisation as pandas states it: the reference for numpy's."""
    x = pd.Series(s.astype(np.float64))
    g = x.groupby(users)
    if method == "zscore":
        std = g.transform("std", ddof=0)
        out = ((x - g.transform("mean")) / std.where(std > 0)).where(~(std.eq(0) & x.notna()), 0.0)
    else:
        lo, hi = g.transform("min"), g.transform("max")
        out = ((x - lo) / (hi - lo).where(hi > lo)).where(hi > lo, 1.0).where(x.notna())
    return out.to_numpy(np.float32)


@pytest.mark.parametrize("method", ["zscore", "minmax"])
@settings(max_examples=60, deadline=None)
@given(data=st.one_of(grouped_scores(separated=True), grouped_scores(separated=False)))
def test_normalise_agrees_with_pandas_groupings(method: str, data: tuple) -> None:
    users, s, perm = data
    users, s = users[perm], s[perm]  # users in any order
    np.testing.assert_allclose(
        normalise_per_user(users, s, method),
        pandas_normalised(users, s, method),
        rtol=1e-5,
        atol=1e-6,
        equal_nan=True,
    )


@settings(max_examples=60, deadline=None)
@given(
    a=st.one_of(grouped_scores(separated=True), grouped_scores(separated=False)),
    b=st.one_of(grouped_scores(separated=True), grouped_scores(separated=False)),
)
def test_fill_with_user_min_is_pandas_grouped_min_to_the_bit(a: tuple, b: tuple) -> None:
    users, s, perm = a
    other = np.resize(b[1], len(s))  # a second column, with its own NaN
    values = np.c_[s, other].astype(np.float64)[perm]
    users = users[perm]  # users in any order
    frame = pd.DataFrame(values)
    floor = frame.groupby(users).transform("min").fillna(0.0)
    expected = frame.fillna(floor).to_numpy(np.float64)
    before = values.copy()
    np.testing.assert_array_equal(fill_with_user_min(users, values), expected)
    np.testing.assert_array_equal(values, before)  # the caller's array is left alone


@settings(max_examples=80, deadline=None)
@given(
    a=st.one_of(grouped_scores(separated=True), grouped_scores(separated=False)),
    rows=st.integers(1, 12),
    shuffled=st.booleans(),
)
def test_per_user_reductions_in_chunks_equal_one_chunk_to_the_bit(
    a: tuple, rows: int, shuffled: bool
) -> None:
    """Folds go through normalisation and the fill in chunks of whole users: chunks of a
    few rows (users longer than a chunk included) give the bits of one chunk, with the
    rows in user order (worked on in place) or not."""
    users, s, perm = a
    if shuffled:
        users, s = users[perm], s[perm]
    values = np.c_[s, s[::-1]].astype(np.float64)
    whole = {m: normalise_columns(users, values, m) for m in ("zscore", "minmax")}
    filled = fill_with_user_min(users, values)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blending, "CHUNK_ROWS", rows)
        for method, expected in whole.items():
            np.testing.assert_array_equal(normalise_columns(users, values, method), expected)
        np.testing.assert_array_equal(fill_with_user_min(users, values), filled)


@settings(max_examples=40, deadline=None)
@given(
    a=st.one_of(grouped_scores(separated=True), grouped_scores(separated=False)),
    one_user=st.booleans(),
    n=st.integers(1, 6),
)
def test_columns_give_what_frames_give_to_the_bit(a: tuple, one_user: bool, n: int) -> None:
    """The service's fresh ranking passes one user's pairs as plain arrays (Columns) where
    the batch passes frames: the hybrid and the lists are the same to the bit."""
    users, s, _ = a
    if one_user:
        users = np.zeros_like(users)
    items = np.arange(len(users), dtype=np.int64)
    order = np.argsort(users, kind="stable")
    users = users[order]
    ranks = np.ones(len(users), dtype=np.int32)
    model_cands = {
        "a": pd.DataFrame({"user_idx": users, "item_idx": items, "rank": ranks}),
        "b": pd.DataFrame({"user_idx": users[::2], "item_idx": items[::2], "rank": ranks[::2]}),
        "c": cands([]),
    }
    frame, columns = union_candidates(model_cands), union_columns(model_cands)
    table = {"a": s, "b": s[::-1].copy()}
    scorers = {m: (lambda u, i, t=t: t[order][np.searchsorted(items, i)]) for m, t in table.items()}
    for method in METHODS:
        scored = score_pairs(frame, scorers, method)
        added = score_columns(columns["user_idx"], columns["item_idx"], scorers, method)
        cols = dict(columns) | added
        weights = {"a": 0.3, "b": 0.7, "c": 0.5}
        hybrid = hybrid_score(scored, weights)
        np.testing.assert_array_equal(hybrid_score(cols, weights), hybrid)
        pd.testing.assert_frame_equal(rank_by(cols, hybrid, n), rank_by(scored, hybrid, n))


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=40, deadline=None)
@given(value=st.floats(-1e6, 1e6, width=32), n=st.integers(1, 15))
def test_normalise_constant_user(method: str, value: float, n: int) -> None:
    out = normalise_per_user(np.zeros(n, int), np.full(n, value, np.float32), method)
    expected = {"zscore": 0.0, "minmax": 1.0, "rank": 1.0}[method]
    np.testing.assert_array_equal(out, np.full(n, expected, np.float32))


# --------------------------------------------------------------------------- hybrid


def hybrid_frame() -> pd.DataFrame:
    nan = np.nan
    return pd.DataFrame(
        {
            "user_idx": [0, 0, 0, 1, 1],
            "item_idx": [1, 2, 3, 4, 5],
            "m_a_norm": np.array([1.0, 0.0, -1.0, 0.2, nan], dtype=np.float32),
            "m_b_norm": np.array([0.5, nan, -0.5, nan, nan], dtype=np.float32),
            "m_c_norm": np.array([100.0, 100.0, nan, -5.0, 9.0], dtype=np.float32),
        }
    )


def test_hybrid_score_by_hand() -> None:
    df = hybrid_frame()
    out = hybrid_score(df, {"a": 2.0, "b": 1.0, "c": 0.0})
    # weights 2/3 and 1/3; a missing b counts as the user's lowest b (user 0: -0.5; user 1
    # has no b at all: 0); a missing a counts as user 1's lowest a (0.2); c weighs nothing.
    expected = [
        2 / 3 * 1.0 + 1 / 3 * 0.5,
        2 / 3 * 0.0 + 1 / 3 * -0.5,
        2 / 3 * -1.0 + 1 / 3 * -0.5,
        2 / 3 * 0.2 + 0.0,
        2 / 3 * 0.2 + 0.0,
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert out.dtype == np.float32
    # Only the ratios of the weights matter.
    np.testing.assert_allclose(hybrid_score(df, {"a": 0.4, "b": 0.2}), out, rtol=1e-6)
    np.testing.assert_allclose(hybrid_score(df, {"b": 1.0}), [0.5, -0.5, -0.5, 0, 0])


def test_hybrid_score_floor_is_per_user_and_per_model() -> None:
    df = hybrid_frame()
    only_a = hybrid_score(df, {"a": 1.0})
    np.testing.assert_allclose(only_a, [1.0, 0.0, -1.0, 0.2, 0.2], rtol=1e-6)
    # A missing score never beats a present one of the same user.
    df.loc[4, "m_a_norm"] = np.nan
    df.loc[3, "m_a_norm"] = -3.0
    assert hybrid_score(df, {"a": 1.0})[4] <= hybrid_score(df, {"a": 1.0})[3]


# --------------------------------------------------------------------------- rank_by


def test_rank_by_orders_breaks_ties_by_item_and_drops_nan() -> None:
    df = pd.DataFrame({"user_idx": [2, 2, 2, 2, 0, 0, 0, 5], "item_idx": [9, 3, 7, 1, 4, 8, 2, 6]})
    score = np.array([0.5, 0.5, np.nan, 0.9, 1.0, 1.0, 1.0, np.nan])
    recs = rank_by(df, score, n=2)
    assert list(recs.columns) == ["user_idx", "item_idx", "score", "rank"]
    assert list(zip(recs["user_idx"], recs["item_idx"], recs["rank"], strict=True)) == [
        (0, 2, 1),
        (0, 4, 2),
        (2, 1, 1),
        (2, 3, 2),
    ]
    assert recs["rank"].dtype == np.int32
    full = rank_by(df, score, n=10)
    assert full.groupby("user_idx")["rank"].apply(list).to_dict() == {0: [1, 2, 3], 2: [1, 2, 3]}
    assert full[full["user_idx"] == 2]["item_idx"].tolist() == [1, 3, 9]
    assert 5 not in set(full["user_idx"])  # a user with only NaN scores gets no list
    assert full.index.tolist() == list(range(len(full)))
    # one user (the service's path) gives that user's rows of the general path
    for user in (0, 2, 5):
        mine = df["user_idx"].to_numpy() == user
        for n in (2, 10):
            alone = rank_by(df[mine], score[mine], n=n)
            general = rank_by(df, score, n=n)
            pd.testing.assert_frame_equal(
                alone, general[general["user_idx"] == user].reset_index(drop=True)
            )


# --------------------------------------------------------------------------- config


def test_blend_config_validation() -> None:
    assert BlendConfig(weights={"als": 1.0}).normalise == "zscore"
    assert BlendConfig(search=True).weights == {}
    with pytest.raises(ValueError, match="normalise must be"):
        BlendConfig(normalise="softmax", weights={"als": 1.0})
    with pytest.raises(ValueError, match="weights must be >= 0"):
        BlendConfig(weights={"als": 1.0, "svd": -0.1})
    with pytest.raises(ValueError, match="at least one positive weight"):
        BlendConfig(weights={"als": 0.0})
    with pytest.raises(ValueError, match="at least one positive weight"):
        BlendConfig()
    assert BlendConfig(weights={"als": 0.0}, search=True).search
    with pytest.raises(ConfigError, match="blend.wieghts: unknown key"):
        parse({"wieghts": {"als": 1.0}, "search": True}, BlendConfig, "blend")


@pytest.mark.parametrize("metric", ["map@10", "ndcg", "ndcg@0", "NDCG@10", "ndcg@x"])
def test_blend_config_rejects_unsupported_search_metric(metric: str) -> None:
    with pytest.raises(ValueError, match="search_metric"):
        BlendConfig(search=True, search_metric=metric)


# --------------------------------------------------------------------------- search


def random_fold(
    seed: int, max_cands: int = 25, names: tuple[str, ...] = ("a", "b", "c")
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random candidates (continuous scores, some missing) and targets for ~40 users.

    Users 0-39 have 1-``max_cands`` candidates; targets cover users 0-49, so some users with
    relevant targets have no candidates, and some candidate users have no relevant target.
    Model ``c`` has missing scores (filled with the user's lowest ``c`` in the hybrid).
    """
    rng = np.random.default_rng(seed)
    rows = [
        (u, int(i))
        for u in range(40)
        for i in rng.choice(60, rng.integers(1, max_cands + 1), replace=False)
    ]
    df = pd.DataFrame(rows, columns=["user_idx", "item_idx"])
    df = df.sort_values(["user_idx", "item_idx"], ignore_index=True)
    users = df["user_idx"].to_numpy()
    for m in names:
        s = rng.normal(size=len(df)).astype(np.float32)
        if m == "c":
            # Only c misses scores: filled with the user's floor they would tie, so every
            # hybrid below gives a or b a positive weight (no ties at the cut-off).
            s[rng.random(len(df)) < 0.2] = np.nan
        df[f"m_{m}_norm"] = normalise_per_user(users, s, "zscore")
    # Bias the targets towards candidates so that there are hits at all.
    picks = df.sample(frac=0.3, random_state=seed)[["user_idx", "item_idx"]]
    extra = pd.DataFrame(
        {"user_idx": rng.integers(0, 50, 150), "item_idx": rng.integers(0, 60, 150)}
    )
    truth = pd.concat([picks, extra], ignore_index=True).drop_duplicates(ignore_index=True)
    truth["relevant"] = rng.random(len(truth)) < 0.6
    truth.loc[truth["user_idx"] == 3, "relevant"] = False  # a candidate user, no relevant
    return df, truth


@pytest.mark.parametrize("seed,max_cands", [(0, 25), (1, 25), (2, 12), (3, 40), (4, 8)])
def test_trial_scorer_agrees_with_topn_metrics(seed: int, max_cands: int) -> None:
    df, truth = random_fold(seed, max_cands)
    rel_users = set(truth.loc[truth["relevant"], "user_idx"])
    assert rel_users - set(df["user_idx"])  # evaluation users without candidates
    assert set(df["user_idx"]) - rel_users  # candidate users without relevant targets
    names = ["a", "b", "c"]
    scorer = TrialScorer(df, truth, names, k=10)
    rng = np.random.default_rng(seed)
    trials = [np.array([1.0, 0, 0]), np.array([0, 0.4, 0.6]), np.array([0.2, 0.5, 0.3])]
    for w in [*trials, rng.dirichlet(np.ones(3))]:
        recs = rank_by(df, hybrid_score(df, dict(zip(names, w, strict=True))), n=10)
        expected = topn_metrics(recs, truth, [10])
        for metric in TrialScorer.METRICS:
            got = scorer.value(w, metric)
            assert got == pytest.approx(expected[f"{metric}@10"], rel=1e-9, abs=1e-12), metric


@pytest.mark.parametrize("direct_places", [0.0, 1e9])
@pytest.mark.parametrize("seed", range(6))
def test_trial_scorer_breaks_ties_by_item_like_topn_metrics(
    seed: int, direct_places: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scores from a few values: ties everywhere, at the cut-off too. Both ways of finding the
    # relevant items' places (counted directly, or the sorted top k) must break them by item
    # index, as the evaluation does.
    monkeypatch.setattr(TrialScorer, "direct_places", direct_places)
    df, truth = random_fold(seed, 30)
    rng = np.random.default_rng(seed)
    names = ["a", "b", "c"]
    for m in names:
        df[f"m_{m}_norm"] = rng.choice([0.0, 0.5, 1.0], len(df)).astype(np.float32)
    df.loc[rng.random(len(df)) < 0.2, "m_c_norm"] = np.nan
    if seed % 2:  # one relevant target per user, the case of a temporal split
        truth = truth.drop_duplicates("user_idx", ignore_index=True)
        truth["relevant"] = True
    scorer = TrialScorer(df, truth, names, k=10)
    for w in [np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.array([0.5, 0.5, 0])]:
        recs = rank_by(df, hybrid_score(df, dict(zip(names, w, strict=True))), n=10)
        expected = topn_metrics(recs, truth, [10])
        for metric in TrialScorer.METRICS:
            got = scorer.value(w, metric)
            assert got == pytest.approx(expected[f"{metric}@10"], rel=1e-9, abs=1e-12), metric


def test_trial_scorer_counts_a_repeated_relevant_pair_once() -> None:
    df, truth = random_fold(0)
    twice = pd.concat([truth, truth[truth["relevant"]]], ignore_index=True)
    names = ["a", "b", "c"]
    w = np.array([0.2, 0.5, 0.3])
    recs = rank_by(df, hybrid_score(df, dict(zip(names, w, strict=True))), n=10)
    expected = topn_metrics(recs, twice, [10])
    assert expected == topn_metrics(recs, truth, [10])
    scorer = TrialScorer(df, twice, names, k=10)
    for metric in TrialScorer.METRICS:
        assert scorer.value(w, metric) == pytest.approx(expected[f"{metric}@10"]), metric


def test_trial_scorer_scores_a_subset_of_users_like_topn_metrics() -> None:
    df, truth = random_fold(2, 25)
    names = ["a", "b", "c"]
    scorer = TrialScorer(df, truth, names, k=10)
    rows = np.array([0, 3, 4, 9, 17, 30])
    users = np.unique(df["user_idx"])[rows]
    w = np.array([0.2, 0.5, 0.3])
    recs = rank_by(df, hybrid_score(df, dict(zip(names, w, strict=True))), n=10)
    sub_truth = truth[truth["user_idx"].isin(users)]
    expected = topn_metrics(recs[recs["user_idx"].isin(users)], sub_truth, [10])
    for metric in TrialScorer.METRICS:
        got = scorer.value(w, metric, rows)
        assert got == pytest.approx(expected[f"{metric}@10"], rel=1e-9), metric


def test_search_bags_average_the_winners_of_halves() -> None:
    df, truth = random_fold(7)
    names = ["a", "b", "c"]
    one = BlendConfig(search=True, search_trials=40)
    bagged = one.model_copy(update={"search_bags": 6})
    w1, _ = search_weights(df, truth, names, one, seed=3)
    wb, vb = search_weights(df, truth, names, bagged, seed=3)
    assert wb != w1 and sum(wb.values()) == pytest.approx(1.0, abs=1e-3)
    # an average of several winners spreads weight over more models than one argmax
    assert sum(v > 0.01 for v in wb.values()) >= sum(v > 0.01 for v in w1.values())
    assert search_weights(df, truth, names, bagged, seed=3) == (wb, vb)
    assert search_weights(df, truth, names, bagged, seed=4) != (wb, vb)
    w = np.array([wb[m] for m in names])
    assert TrialScorer(df, truth, names, 10).value(w / w.sum(), "ndcg") == pytest.approx(vb)


def test_search_users_caps_each_bag(monkeypatch: pytest.MonkeyPatch) -> None:
    df, truth = random_fold(7)
    names = ["a", "b", "c"]
    sizes: list[int] = []
    original = TrialScorer.subset

    def spy(self, rows):  # noqa: ANN001
        sizes.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(TrialScorer, "subset", spy)
    cfg = BlendConfig(search=True, search_trials=5, search_bags=3, search_users=7)
    search_weights(df, truth, names, cfg, seed=0)
    assert sizes and set(sizes) == {7}
    sizes.clear()
    search_weights(df, truth, names, cfg.model_copy(update={"search_users": 1000}), seed=0)
    # half of the users with a relevant target among their candidates
    eligible = int((TrialScorer(df, truth, names, 10).row_rel > 0).sum())
    assert set(sizes) == {eligible // 2}


def test_out_of_bag_hybrid_uses_only_the_bags_without_the_user() -> None:
    df, _ = random_fold(7)
    wa, wb = {"a": 1.0, "b": 0.0, "c": 0.0}, {"a": 0.0, "b": 1.0, "c": 0.0}
    mean = {"a": 0.5, "b": 0.5, "c": 0.0}
    result = SearchResult(mean, 0.0, [(np.array([0, 1]), wa), (np.array([1, 2]), wb)])
    got = out_of_bag_hybrid(df, result)
    users = df["user_idx"].to_numpy()
    for user, weights in [(0, wb), (2, wa), (1, mean), (5, mean)]:
        # user 0 was only in the first bag: scored by the second's winner; user 1 was in
        # both: the overall weights; user 5 in none: the mean of both winners (= overall)
        rows = users == user
        np.testing.assert_allclose(got[rows], hybrid_score(df[rows], weights), rtol=1e-6)
    assert np.array_equal(out_of_bag_hybrid(df, SearchResult(mean, 0.0)), hybrid_score(df, mean))


def test_search_keeps_each_bag_and_its_users() -> None:
    df, truth = random_fold(7)
    cfg = BlendConfig(search=True, search_trials=10, search_bags=4)
    result = search(df, truth, ["a", "b", "c"], cfg, seed=1)
    assert len(result.bags) == 4
    relevant = set(truth.loc[truth["relevant"], "user_idx"])
    for users, weights in result.bags:
        assert set(users) <= relevant and len(users) == len(set(users))
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    mean = np.mean([[w[m] for m in "abc"] for _, w in result.bags], axis=0)
    np.testing.assert_allclose([result.weights[m] for m in "abc"], mean, atol=1e-4)


def test_trial_scorer_rejects_unknown_metric() -> None:
    df, truth = random_fold(0)
    with pytest.raises(ValueError, match="search_metric"):
        TrialScorer(df, truth, ["a", "b", "c"], k=10).value(np.ones(3) / 3, "map")


@pytest.mark.parametrize("metric", ["ndcg@10", "recall@5", "mrr@10"])
def test_search_weights_beats_every_single_model_and_the_configured_mix(metric: str) -> None:
    df, truth = random_fold(7)
    names = ["a", "b", "c"]
    cfg = BlendConfig(
        weights={"a": 0.1, "b": 0.9}, search=True, search_trials=60, search_metric=metric
    )
    weights, value = search_weights(df, truth, names, cfg, seed=3)
    assert list(weights) == names
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3)
    assert all(w >= 0 for w in weights.values())
    name, k = metric.split("@")
    scorer = TrialScorer(df, truth, names, int(k))
    singles = [scorer.value(w, name) for w in np.eye(3)]
    configured = scorer.value(np.array([0.1, 0.9, 0.0]), name)
    assert value >= max(singles) and value >= configured
    # The reported value is that of the returned (rounded) weights.
    w = np.array([weights[m] for m in names])
    assert scorer.value(w / w.sum(), name) == pytest.approx(value, abs=1e-9)
    assert search_weights(df, truth, names, cfg, seed=3) == (weights, value)


def test_search_weights_finds_the_informative_model() -> None:
    """Known answer: model ``good`` is the label plus noise, ``bad`` is pure noise."""
    df, truth = random_fold(11, names=("bad",))
    rel = pd.MultiIndex.from_frame(truth.loc[truth["relevant"], ["user_idx", "item_idx"]])
    label = pd.MultiIndex.from_frame(df[["user_idx", "item_idx"]]).isin(rel)
    noise = np.random.default_rng(0).normal(0, 0.3, len(df))
    good = (label + noise).astype(np.float32)
    df["m_good_norm"] = normalise_per_user(df["user_idx"].to_numpy(), good, "zscore")
    cfg = BlendConfig(search=True, search_trials=50)
    weights, value = search_weights(df, truth, ["bad", "good"], cfg, seed=0)
    assert weights["good"] > 0.5
    bad = TrialScorer(df, truth, ["bad", "good"], 10).value(np.array([1.0, 0.0]), "ndcg")
    assert value > bad + 0.2


# --------------------------------------------------------------------------- the stage

ENABLED = ("popularity", "itemknn", "ease", "seqknn")
SEARCH_TRIALS = 40


@dataclass(frozen=True)
class Project:
    """A tiny project: prepared tables, split, candidates and fitted models, params."""

    root: Path
    prepared: Path
    split: Path
    candidates: Path
    models: Path
    params: Path


def write_params(path: Path, blend_block: dict | None = None) -> Path:
    """A params file with small settings; svd, als and tfidf are disabled."""
    params = {
        "seed": 5,
        "candidates": {
            "popularity": {"n": 20},
            "itemknn": {"n": 20, "neighbours": 30},
            "ease": {"n": 20, "l2": 50.0},
            "svd": {"enabled": False},
            "als": {"enabled": False},
            "tfidf": {"enabled": False},
            "seqknn": {"n": 20},
        },
        "blend": blend_block
        or {
            "normalise": "zscore",
            # als is disabled: its weight must be ignored
            "weights": {"ease": 0.5, "itemknn": 0.3, "als": 0.2},
            "search": True,
            "search_trials": SEARCH_TRIALS,
            "n": 15,
        },
        "features": {},
        "ranker": {"n_estimators": 40, "early_stopping_rounds": 10, "n": 15, "n_threads": 1},
    }
    path.write_text(yaml.safe_dump(params))
    return path


def build_project(root: Path, ranker_folds: int = 0) -> Project:
    """Synthetic data -> temporal split (views are not relevant; with ``ranker_folds`` extra
    ranker folds, written as the split stage writes them) -> every model's candidates."""
    raw = generate(SyntheticConfig(n_users=150, n_items=80, n_events=4000), seed=3)
    inter, items, users, _ = finalize(raw.interactions, raw.items, raw.users, file="synthetic")
    p = Project(
        root,
        root / "prepared",
        root / "split",
        root / "candidates",
        root / "models",
        write_params(root / "params.yaml"),
    )
    write_many(
        {
            p.prepared / "interactions.parquet": inter,
            p.prepared / "items.parquet": items,
            p.prepared / "users.parquet": users,
        }
    )
    cfg = TemporalSplit(
        relevance=Relevance(events=["click", "cart", "purchase"]), ranker_folds=ranker_folds
    )
    write_many(split_files(split(inter, cfg, seed=5), p.split))
    for model in MODELS:
        argv = ["--model", model, "--split", str(p.split), "--prepared", str(p.prepared)]
        argv += ["--models-dir", str(p.models / model), "--out", str(p.candidates)]
        assert candidates.main([*argv, "--params", str(p.params)]) == 0
    return p


def blind_split(p: Project) -> Path:
    """A copy of the split folder without the test targets."""
    blind = p.root / "split_blind"
    if not blind.exists():
        shutil.copytree(p.split, blind)
        (blind / "test_targets.parquet").unlink()
    return blind


def run_blend(p: Project, out: Path, params: Path | None = None) -> int:
    """Run the blend stage on the project (always without the test targets)."""
    return blend.main(
        [
            "--split",
            str(blind_split(p)),
            "--candidates",
            str(p.candidates),
            "--models",
            str(p.models),
            "--out",
            str(out / "blend"),
            "--summary",
            str(out / "blend.json"),
            "--params",
            str(params or p.params),
        ]
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return build_project(tmp_path_factory.mktemp("blend_project"))


@pytest.fixture(scope="module")
def blended(project: Project) -> Path:
    out = project.root / "run"
    assert run_blend(project, out) == 0
    return out


def test_blend_stage_writes_well_formed_outputs(project: Project, blended: Path) -> None:
    summary = json.loads((blended / "blend.json").read_text())
    assert set(summary["weights"]) == set(ENABLED)
    assert sum(summary["weights"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "valid_ndcg@10" in summary
    for fold in ("valid", "test"):
        df = pd.read_parquet(blended / "blend" / f"{fold}.parquet")
        recs = pd.read_parquet(blended / "blend" / f"{fold}_recs.parquet")
        for m in ENABLED:
            assert {f"m_{m}_rank", f"m_{m}_score", f"m_{m}_norm"} <= set(df.columns)
        assert not any(c.startswith(("m_svd", "m_als", "m_tfidf")) for c in df.columns)
        assert df[["user_idx", "item_idx"]].duplicated().sum() == 0
        assert df["m_n_models"].between(1, len(ENABLED)).all()
        n_models = df[[f"m_{m}_rank" for m in ENABLED]].notna().sum(axis=1)
        assert (df["m_n_models"] == n_models).all()
        assert df["m_hybrid"].notna().all()
        # Every enabled model's candidates are in the union (here every pair is written:
        # the fixture's users have fewer than rerank_top, 200; see the test below).
        for m in ENABLED:
            c = pd.read_parquet(project.candidates / fold / f"{m}.parquet")
            key = pd.MultiIndex.from_frame(df[["user_idx", "item_idx"]])
            assert pd.MultiIndex.from_frame(c[["user_idx", "item_idx"]]).isin(key).all()
        # The recs are the hybrid's top 15 of each user's candidates.
        assert list(recs.columns) == ["user_idx", "item_idx", "score", "rank"]
        assert not recs[["user_idx", "item_idx"]].duplicated().any()
        assert (
            recs.groupby("user_idx")["rank"]
            .apply(lambda r: r.tolist() == list(range(1, len(r) + 1)))
            .all()
        )
        assert recs.groupby("user_idx").size().max() == 15
        expected = rank_by(df, df["m_hybrid"].to_numpy(), 15)
        pd.testing.assert_frame_equal(recs, expected)
        assert summary[fold]["pairs"] == len(df)


def test_blend_stage_writes_each_users_top_pairs_to_rank(
    project: Project, blended: Path, tmp_path: Path
) -> None:
    """With ``ranker.rerank_top`` a fold's pairs are each user's top that many by the
    hybrid (ties to the lower item), their columns as over all the user's candidates: the
    rows of the uncut file. The recs come from every candidate, and the summary counts the
    pairs before and after the cut."""
    params = yaml.safe_load(project.params.read_text())
    assert "rerank_top" not in params["ranker"]  # the fixture's run: the default, 200
    params["ranker"]["rerank_top"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_blend(project, tmp_path, tmp_path / "params.yaml") == 0
    whole_summary = json.loads((blended / "blend.json").read_text())
    cut_summary = json.loads((tmp_path / "blend.json").read_text())
    for fold in ("valid", "test"):
        whole = pd.read_parquet(blended / "blend" / f"{fold}.parquet")
        cut = pd.read_parquet(tmp_path / "blend" / f"{fold}.parquet")
        assert whole.groupby("user_idx").size().max() < 200  # the default cut nothing
        best = whole.sort_values(
            ["user_idx", "m_hybrid", "item_idx"], ascending=[True, False, True], kind="stable"
        )
        expected = best.groupby("user_idx").head(3).sort_index().reset_index(drop=True)
        pd.testing.assert_frame_equal(cut, expected)
        assert whole.groupby("user_idx").size().max() > 3 == cut.groupby("user_idx").size().max()
        recs = f"{fold}_recs.parquet"
        assert (tmp_path / "blend" / recs).read_bytes() == (blended / "blend" / recs).read_bytes()
        assert cut_summary[fold]["pairs"] == whole_summary[fold]["pairs"] == len(whole)
        assert whole_summary[fold]["pairs_to_rank"] == len(whole)
        assert cut_summary[fold]["pairs_to_rank"] == len(cut)


@pytest.mark.parametrize(
    ("folds", "cpus", "events", "expected"),
    [
        (4, 2, 10, 2),  # the 1M default: two rounds of two folds
        (6, 2, 10, 2),
        (5, 2, 10, 2),
        (3, 2, 10, 1),  # fewer than two a worker: one fold at a time, blocks side by side
        (2, 2, 10, 1),  # 10M: two folds
        (4, 4, 10, 1),
        (8, 4, 10, 4),
        (4, 2, engine.PARALLEL_MAX_EVENTS + 1, 1),  # past the folds' bound
    ],
)
def test_blend_folds_side_by_side_only_with_two_folds_a_worker(
    monkeypatch: pytest.MonkeyPatch, folds: int, cpus: int, events: int, expected: int
) -> None:
    monkeypatch.delenv(engine.WORKERS, raising=False)
    monkeypatch.setattr(engine, "cpus", lambda: cpus)
    assert blend.fold_workers(folds, events) == expected


def test_check_cut_reads_what_the_blend_writes(tmp_path: Path) -> None:
    """The ranker's check of the blend's cut: no file (a blend from before the cut) passes
    anything; a cut passes as many pairs or fewer; a file that is not the blend's is a
    clear error naming it."""
    blending.check_cut(tmp_path, None)  # no pairs.json
    cut = tmp_path / blending.CUT_FILE
    cut.write_text(json.dumps({"rerank_top": 4}))
    for fine in (1, 4):
        blending.check_cut(tmp_path, fine)
    for more in (5, None):
        with pytest.raises(ConfigError, match="kept each user's top 4 pairs"):
            blending.check_cut(tmp_path, more)
    cut.write_text(json.dumps({"rerank_top": None}))
    blending.check_cut(tmp_path, None)
    for broken in ("{", "[]", "{}", '{"rerank_top": "4"}', '{"rerank_top": true}'):
        cut.write_text(broken)
        with pytest.raises(DataError, match=r"pairs\.json: expected"):
            blending.check_cut(tmp_path, 3)


def test_blend_stage_applies_the_searched_weights(blended: Path) -> None:
    summary = json.loads((blended / "blend.json").read_text())
    for fold in ("valid", "test"):
        df = pd.read_parquet(blended / "blend" / f"{fold}.parquet")
        expected = hybrid_score(df, summary["weights"])
        np.testing.assert_allclose(df["m_hybrid"], expected, rtol=1e-5, atol=1e-6)


def test_blend_stage_never_reads_test_targets(project: Project, blended: Path) -> None:
    # The fixture ran blend on a split folder without test_targets.parquet and it succeeded.
    assert not (blind_split(project) / "test_targets.parquet").exists()
    assert (blended / "blend" / "test_recs.parquet").exists()


def test_blend_stage_fixed_weights_skip_disabled_models(project: Project, tmp_path: Path) -> None:
    block = {"normalise": "rank", "weights": {"ease": 2.0, "als": 5.0, "itemknn": 2.0}, "n": 10}
    params = write_params(tmp_path / "params.yaml", block)
    assert run_blend(project, tmp_path, params) == 0
    df = pd.read_parquet(tmp_path / "blend" / "test.parquet")
    expected = hybrid_score(df, {"ease": 0.5, "itemknn": 0.5})
    np.testing.assert_allclose(df["m_hybrid"], expected, rtol=1e-6)
    assert not any(c.startswith("m_als") for c in df.columns)


def test_blend_stage_refuses_weights_only_on_disabled_models(
    project: Project, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: weights naming only disabled models must not fall back to a silent
    uniform blend; the stage stops, names the key and writes nothing."""
    block = {"weights": {"als": 1.0, "svd": 1.0}, "n": 10}
    params = write_params(tmp_path / "params.yaml", block)
    assert run_blend(project, tmp_path, params) == 2
    assert "blend.weights: no positive weight on an enabled model" in caplog.text
    assert not (tmp_path / "blend").exists()
    assert not (tmp_path / "blend.json").exists()


def test_resolve_weights_keeps_enabled_models_and_scales_to_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    got = resolve_weights({"ease": 3.0, "als": 5.0, "itemknn": 1.0}, ["itemknn", "ease", "pop"])
    assert got == {"itemknn": 0.25, "ease": 0.75, "pop": 0.0}
    assert list(got) == ["itemknn", "ease", "pop"]  # the enabled models' order
    assert "ignored: als" in caplog.text


@pytest.mark.parametrize("weights", [{}, {"als": 1.0}, {"ease": 0.0, "als": 2.0}])
def test_resolve_weights_without_a_positive_enabled_weight_is_a_config_error(
    weights: dict[str, float],
) -> None:
    with pytest.raises(ConfigError, match="blend.weights: no positive weight.*enabled: ease"):
        resolve_weights(weights, ["ease", "itemknn"])


def test_choose_weights_searches_on_valid_or_takes_the_configured_ones() -> None:
    df, truth = random_fold(3)
    names = ["a", "b", "c"]
    fixed = parse({"weights": {"a": 1.0, "c": 3.0}}, BlendConfig, "blend")
    weights, searched = choose_weights(df, names, fixed, seed=0)
    assert searched is None and weights == {"a": 0.25, "b": 0.0, "c": 0.75}
    cfg = parse({"search": True, "search_trials": 20}, BlendConfig, "blend")
    with pytest.raises(ValueError, match="needs the valid fold's targets"):
        choose_weights(df, names, cfg, seed=0)
    weights, searched = choose_weights(df, names, cfg, seed=0, truth=truth)
    assert searched is not None
    total = sum(searched.weights.values())
    assert weights == pytest.approx({m: w / total for m, w in searched.weights.items()})
    # the searched blend is at least as good on valid as any single model
    scorer = TrialScorer(df, truth, names, k=10)
    best_single = max(scorer.value(np.eye(3)[j], "ndcg") for j in range(3))
    assert scorer.value(np.array([weights[m] for m in names]), "ndcg") >= best_single - 1e-3


def test_fold_hybrid_is_out_of_bag_only_with_bags() -> None:
    df, truth = random_fold(4)
    names = ["a", "b", "c"]
    bagged = parse({"search": True, "search_trials": 10, "search_bags": 4}, BlendConfig, "blend")
    weights, searched = choose_weights(df, names, bagged, seed=1, truth=truth)
    assert searched is not None and searched.bags
    np.testing.assert_array_equal(
        fold_hybrid(df, weights, searched), out_of_bag_hybrid(df, searched)
    )
    assert not np.array_equal(fold_hybrid(df, weights, searched), hybrid_score(df, weights))
    np.testing.assert_array_equal(fold_hybrid(df, weights), hybrid_score(df, weights))


def test_blend_stage_without_candidates_names_the_enabled_models(
    project: Project, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: with every list empty (a fold without target users) blend said "no
    enabled candidate model: enable at least one" although the models were enabled."""
    cands = tmp_path / "candidates"
    shutil.copytree(project.candidates, cands)
    for path in (cands / "valid").glob("*.parquet"):
        pd.read_parquet(path).iloc[:0].to_parquet(path)
    empty = dataclasses.replace(project, candidates=cands)
    assert run_blend(empty, tmp_path) == 2
    assert (
        f"file {cands}: no candidates for the valid fold: the enabled models "
        "(popularity, itemknn, ease, seqknn) recommended nothing"
    ) in caplog.text
    assert not (tmp_path / "blend").exists()


def test_blend_stage_rejects_bad_params(project: Project, tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", {"normalise": "softmax", "search": True})
    assert run_blend(project, tmp_path, params) == 2
    assert not (tmp_path / "blend").exists()


@pytest.mark.parametrize("w", [[-0.2, 0.6, 0.6], [0.0, 0.0, 0.0]])
def test_trial_scorer_refuses_weights_off_the_simplex(w: list[float]) -> None:
    # Padding slots are only guaranteed to sort last under weights >= 0 with a positive sum.
    df, truth = random_fold(0)
    scorer = TrialScorer(df, truth, ["a", "b", "c"], k=10)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        scorer.value(np.array(w), "ndcg")


@pytest.mark.parametrize(("bags", "n_workers"), [(1, 1), (4, 1), (4, 3)])
def test_the_valid_fold_streamed_is_the_valid_fold_whole(
    project: Project, bags: int, n_workers: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The search on only its bags' users, and the fold built 7 users at a time (here, or
    three blocks side by side in worker processes), give the weights, bags, hybrid and
    whole-fold value of the search on the whole fold in memory."""
    cands = blend.enabled_candidates(project.candidates, "valid")
    models = {m: load_model(model_dir(project.models, m, "valid")) for m in cands}
    truth = load_fold(project.split, "valid").targets
    cfg = BlendConfig(
        normalise="zscore",
        search=True,
        search_trials=25,
        search_bags=bags,
        search_users=30,
        block_users=7,
    )
    whole = blend_block(cands, models, cfg.normalise)
    weights, searched = choose_weights(whole, list(cands), cfg, 5, truth)
    assert searched is not None
    expected = whole.assign(m_hybrid=fold_hybrid(whole, weights, searched))

    streamed = ValidFold(cands, models, cfg, 5, truth)
    caplog.set_level(logging.INFO, logger="engine")
    got = pd.concat(list(streamed.blocks(n_workers)), ignore_index=True)
    side = "blocks of valid users, 3 side by side"
    assert (side in caplog.text) == (n_workers == 3), caplog.text
    assert streamed.weights == weights
    assert streamed.searched is not None
    assert len(streamed.searched.bags) == len(searched.bags) == (0 if bags == 1 else bags)
    for (u1, w1), (u2, w2) in zip(streamed.searched.bags, searched.bags, strict=True):
        assert np.array_equal(u1, u2) and w1 == w2
    pd.testing.assert_frame_equal(got, expected)
    assert streamed.value == searched.value


def test_one_users_hybrid_and_ranking_equal_the_grouped_computation() -> None:
    """The one-user shortcuts of hybrid_score and rank_by (the service's fresh ranking)
    give exactly what the grouped computation gives that user among others."""
    rng = np.random.default_rng(3)
    n = 300
    one = pd.DataFrame(
        {
            "user_idx": np.full(n, 7, dtype=np.int64),
            "item_idx": rng.permutation(1000)[:n].astype(np.int64),
            "m_a_norm": rng.normal(size=n).astype(np.float32),
            "m_b_norm": rng.normal(size=n).astype(np.float32),
            "m_c_norm": np.full(n, np.nan, dtype=np.float32),  # a model with nothing
        }
    )
    one.loc[rng.random(n) < 0.4, "m_a_norm"] = np.nan
    one.loc[:20, "m_b_norm"] = 0.5  # ties
    other = one.assign(user_idx=3, m_a_norm=rng.normal(size=n).astype(np.float32))
    both = pd.concat([other, one], ignore_index=True)
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    alone = hybrid_score(one, weights)
    grouped = hybrid_score(both, weights)[n:]
    np.testing.assert_array_equal(alone, grouped)
    score = np.round(alone, 2)  # coarse: many ties, broken by item index
    got = rank_by(one, score, 50)
    want = rank_by(both, np.r_[np.zeros(n, np.float32), score], 50)
    want = want[want["user_idx"] == 7].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)


def test_score_pairs_adds_each_models_columns_and_replaces_them_when_scored_again() -> None:
    pairs = pd.DataFrame(
        {"user_idx": [0, 0, 1], "item_idx": [2, 5, 2], "m_a_rank": np.float32([1, 2, 1])}
    )
    scorers = {
        "a": lambda u, i: (u + i).astype(np.float32),
        "b": lambda u, i: np.float32([1.0, np.nan, 2.0]),
    }
    once = score_pairs(pairs, scorers, "minmax")
    assert list(once.columns) == [
        "user_idx",
        "item_idx",
        "m_a_rank",
        "m_a_score",
        "m_a_norm",
        "m_b_score",
        "m_b_norm",
    ]
    assert once["m_a_score"].tolist() == [2.0, 5.0, 3.0]
    assert once["m_a_norm"].tolist() == [0.0, 1.0, 1.0]  # per user; a lone pair scores 1
    assert once["m_b_norm"].isna().tolist() == [False, True, False]
    assert all(once[c].dtype == np.float32 for c in once.columns if c.startswith("m_"))
    assert "m_a_score" not in pairs  # the input is left alone
    again = score_pairs(once, {"a": lambda u, i: np.float32([7, 8, 9])}, "minmax")
    assert list(again.columns) == list(once.columns)
    assert again["m_a_score"].tolist() == [7.0, 8.0, 9.0]
    assert again["m_b_score"].equals(once["m_b_score"])
