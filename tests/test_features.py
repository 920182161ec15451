"""Ranker features: hand-computed values on a tiny log, no leakage, documentation, knobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recpipe.config import parse
from recpipe.errors import ConfigError
from recpipe.features.config import FeaturesConfig
from recpipe.features.docs import FEATURE_DOCS, feature_doc
from recpipe.features.history import history_now
from recpipe.features.items import item_features
from recpipe.features.metadata import item_vectors
from recpipe.features.pairs import (
    block_pair_features,
    pair_arrays,
    pair_context,
    pair_features,
    pair_similarities,
    similarities_by_block,
)
from recpipe.features.users import user_features
from recpipe.folds import Fold
from recpipe.schema import finalize
from recpipe.sources.synthetic import SyntheticConfig, generate
from recpipe.splitting import Split, TemporalSplit, split

DAY = 86_400
T0 = 1_000 * DAY
ROOT = Path(__file__).resolve().parents[1]


def _items() -> pd.DataFrame:
    """Five items; ``i3`` is a copy of ``i0`` (content similarity 1), ``i4`` has no
    categories and nobody touched ``i3`` or ``i4``."""
    return pd.DataFrame(
        {
            "item_id": ["i0", "i1", "i2", "i3", "i4"],
            "item_idx": np.arange(5, dtype=np.int32),
            "title": ["red apple", "green pear", "hammer", "red apple", "mystery"],
            "text": ["fresh fruit", "fresh fruit", "steel tool", "fresh fruit", ""],
            "categories": [["fruit", "food"], ["fruit"], ["tools"], ["fruit", "food"], []],
            "price": [1.0, 2.0, 3.0, np.nan, 5.0],
            "release_ts": [T0, T0, T0, T0 + 20 * DAY, T0],
            "brand": ["zeta", "alpha", None, "zeta", "alpha"],
        }
    )


def _users() -> pd.DataFrame:
    """Three users; ``u2`` has no history."""
    return pd.DataFrame(
        {
            "user_id": ["u0", "u1", "u2"],
            "user_idx": np.arange(3, dtype=np.int32),
            "age_band": ["25-34", "18-24", None],
            "score": [0.5, 1.5, np.nan],
        }
    )


def _history() -> pd.DataFrame:
    """u0: i0 at days 0 (rated 4) and 3, i1 at day 8, i2 at day 9 (rated 2); u1: i1 at day 10
    (rated 5). now = day 10; the day-3 event is exactly 7 days old (outside the 7-day window)."""
    rows = [
        (0, 0, 0, 4.0, 1.0),
        (0, 0, 3, np.nan, 2.0),
        (0, 1, 8, np.nan, 1.0),
        (0, 2, 9, 2.0, 4.0),
        (1, 1, 10, 5.0, 1.0),
    ]
    df = pd.DataFrame(rows, columns=["user_idx", "item_idx", "day", "rating", "weight"])
    df["timestamp"] = (T0 + df.pop("day") * DAY).astype("int64")
    df["event"] = "view"
    return df.astype({"user_idx": "int32", "item_idx": "int32"})


NOW = T0 + 10 * DAY
CFG = FeaturesConfig()


def _pairs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_idx": [0, 0, 1, 2, 1, 0],
            "item_idx": [3, 2, 2, 0, 4, 1],
        },
        index=[10, 11, 12, 13, 14, 15],
    )


def test_history_now_is_last_event() -> None:
    assert history_now(_history()) == NOW
    with pytest.raises(ValueError):
        history_now(_history().iloc[:0])


def test_user_features_by_hand() -> None:
    uf = user_features(_history(), _users(), _items(), NOW, CFG)
    assert list(uf.index) == [0, 1, 2]
    u0, u1, u2 = uf.loc[0], uf.loc[1], uf.loc[2]
    assert (u0["u_events"], u0["u_items"]) == (4, 3)
    assert (u0["u_events_7d"], u0["u_events_30d"], u0["u_events_90d"]) == (2, 4, 4)
    assert u0["u_days_since_last"] == 1.0
    assert u0["u_days_since_first"] == 10.0
    assert u0["u_active_days"] == 9.0
    assert u0["u_mean_rating"] == 3.0
    assert u0["u_rated_share"] == 0.5
    assert u0["u_mean_weight"] == 2.0
    # fruit: i0 twice + i1, food: i0 twice, tools: i2 -> p = 3/6, 2/6, 1/6
    assert u0["u_n_categories"] == 3
    p = np.array([3, 2, 1]) / 6
    assert u0["u_category_entropy"] == pytest.approx(-(p * np.log2(p)).sum())
    # two history users: i0 and i2 have share 1/2, i1 share 1
    assert u0["u_mean_item_pop"] == pytest.approx(2 / 3)
    assert (u1["u_events"], u1["u_events_7d"], u1["u_days_since_last"]) == (1, 1, 0.0)
    assert (u1["u_n_categories"], u1["u_category_entropy"]) == (1, 0.0)
    assert u1["u_mean_rating"] == 5.0 and u1["u_mean_item_pop"] == 1.0
    # no history: counts 0, everything else NaN
    assert (u2["u_events"], u2["u_items"], u2["u_events_7d"], u2["u_n_categories"]) == (0, 0, 0, 0)
    for col in ("u_days_since_last", "u_active_days", "u_mean_rating", "u_rated_share"):
        assert np.isnan(u2[col]), col
    assert np.isnan(u2["u_category_entropy"]) and np.isnan(u2["u_mean_item_pop"])
    # attributes: numbers as is, strings as codes in the sorted vocabulary, -1 when missing
    assert list(uf["u_attr_age_band"]) == [1, 0, -1]
    assert uf["u_attr_score"].tolist()[:2] == [0.5, 1.5]


def test_min_ratings() -> None:
    uf = user_features(_history(), _users(), _items(), NOW, FeaturesConfig(min_ratings=2))
    assert uf.loc[0, "u_mean_rating"] == 3.0
    assert np.isnan(uf.loc[1, "u_mean_rating"])
    itf = item_features(_history(), _items(), NOW, FeaturesConfig(min_ratings=2))
    assert itf["i_mean_rating"].isna().all()


def test_item_features_by_hand() -> None:
    itf = item_features(_history(), _items(), NOW, CFG)
    assert list(itf.index) == [0, 1, 2, 3, 4]
    assert itf["i_users"].tolist() == [1, 2, 1, 0, 0]
    assert itf["i_events"].tolist() == [2, 2, 1, 0, 0]
    assert itf["i_pop_share"].tolist() == [0.5, 1.0, 0.5, 0.0, 0.0]
    # i0's last event is exactly 7 days old: outside the 7-day window
    assert itf["i_users_7d"].tolist() == [0, 2, 1, 0, 0]
    assert itf["i_users_30d"].tolist() == [1, 2, 1, 0, 0]
    assert itf.loc[0, "i_pop_decayed"] == pytest.approx(2 ** (-10 / 30) + 2 ** (-7 / 30))
    assert itf.loc[3, "i_pop_decayed"] == 0.0
    # the log spans 10 days, so the 90-day window's rate is over 10 days: expected 7-day
    # events = n_90 * 0.7; i0: (0 + 5) / (2 * 0.7 + 5), i1: (2 + 5) / (2 * 0.7 + 5)
    assert itf.loc[0, "i_trend"] == pytest.approx(5 / 6.4)
    assert itf.loc[1, "i_trend"] == pytest.approx(7 / 6.4)
    assert itf.loc[3, "i_trend"] == 1.0
    assert itf["i_days_since_last"].tolist()[:3] == [7.0, 0.0, 1.0]
    assert itf["i_days_since_first"].tolist()[:3] == [10.0, 2.0, 1.0]
    assert itf[["i_days_since_last", "i_days_since_first"]].iloc[3:].isna().all().all()
    assert itf.loc[0, "i_mean_rating"] == 4.0 and np.isnan(itf.loc[3, "i_mean_rating"])
    assert itf["i_n_ratings"].tolist() == [1, 1, 1, 0, 0]
    assert itf["i_n_categories"].tolist() == [2, 1, 1, 2, 0]
    assert itf["i_attr_price"].tolist()[:3] == [1.0, 2.0, 3.0]
    assert itf["i_attr_release_days_ago"].tolist() == [10.0, 10.0, 10.0, -10.0, 10.0]
    assert itf["i_attr_brand"].tolist() == [1, 0, -1, 1, 0]


def test_pair_features_by_hand() -> None:
    pairs = _pairs()
    pf = pair_features(pairs, _history(), _items(), NOW, CFG)
    assert pf.index.equals(pairs.index)
    a, b, c, d, e, f = (pf.loc[k] for k in pairs.index)
    # (u0, i3): fruit 3/4 and food 2/4 of u0's events; fruit last touched day 8
    assert a["p_cat_affinity"] == pytest.approx(0.625)
    assert a["p_cat_max_affinity"] == pytest.approx(0.75)
    assert a["p_days_since_cat"] == 2.0
    # i3 is a copy of i0, which u0 had: cosine 1; i2 shares no word with it
    vec = item_vectors(_items())
    sim_01 = float((vec[0] @ vec[1].T).toarray()[0, 0])
    assert a["p_content_max_sim"] == pytest.approx(1.0)
    assert a["p_content_mean_sim"] == pytest.approx((1.0 + sim_01 + 0.0) / 3)
    assert a["p_user_item_pop_ratio"] == 0.0
    # (u0, i2): tools 1/4, touched 1 day ago
    assert (b["p_cat_affinity"], b["p_cat_max_affinity"], b["p_days_since_cat"]) == (
        0.25,
        0.25,
        1.0,
    )
    # (u1, i2): never touched tools
    assert (c["p_cat_affinity"], c["p_cat_max_affinity"]) == (0.0, 0.0)
    assert np.isnan(c["p_days_since_cat"])
    assert c["p_content_max_sim"] == 0.0
    # (u2, i0): user without history -> NaN everywhere
    assert d.isna().all()
    # (u1, i4): item without categories; its text shares nothing with i1
    assert np.isnan(e["p_cat_affinity"]) and np.isnan(e["p_days_since_cat"])
    assert (e["p_content_max_sim"], e["p_content_mean_sim"]) == (0.0, 0.0)
    # (u0, i1): i1 has 2 users, u0's items on average (1 + 2 + 1) / 3
    assert f["p_user_item_pop_ratio"] == pytest.approx(1.5)


def test_collaborative_recent_similarity_by_hand() -> None:
    # Binary user sets: i0 {u0}, i1 {u0, u1}, i2 {u0}: cos(i0, i1) = cos(i1, i2) = 1/sqrt(2),
    # cos(i0, i2) = 1. u0's items by recency: i2 (day 9), i1 (day 8), i0 (day 3).
    pf = pair_features(_pairs(), _history(), _items(), NOW, CFG)
    r = 1 / np.sqrt(2)
    assert np.isnan(pf.loc[10, "p_cf_last1_sim"])  # i3: no history, no collaborative vector
    assert pf.loc[11, ["p_cf_last1_sim", "p_cf_last3_sim", "p_cf_last10_sim"]].tolist() == (
        pytest.approx([1.0, (1 + r + 1) / 3, (1 + r + 1) / 3])
    )
    assert pf.loc[12, ["p_cf_last1_sim", "p_cf_max_sim"]].tolist() == pytest.approx([r, r])
    assert pf.loc[13].filter(like="p_cf").isna().all()  # u2: no history
    assert pf.loc[15, ["p_cf_last1_sim", "p_cf_last3_sim", "p_cf_max_sim"]].tolist() == (
        pytest.approx([r, (r + 1 + r) / 3, 1.0])
    )
    short = pair_features(_pairs(), _history(), _items(), NOW, FeaturesConfig(recent_items=[2]))
    assert list(short.filter(like="p_cf_last").columns) == ["p_cf_last2_sim"]
    assert short.loc[15, "p_cf_last2_sim"] == pytest.approx((r + 1) / 2)


def test_session_features_by_hand() -> None:
    # u0's items start at days 0, 8 and 9; u1 has one item; u2 none.
    uf = user_features(_history(), _users(), _items(), NOW, CFG)
    assert uf.loc[0, "u_gap_last_days"] == 1.0
    assert np.isnan(uf.loc[1, "u_gap_last_days"]) and np.isnan(uf.loc[2, "u_gap_last_days"])
    # a 24-hour pause is still one session (i1, i2); at 12 hours i2 stands alone
    assert uf["u_last_session_items"].tolist() == [2, 1, 0]
    short = user_features(_history(), _users(), _items(), NOW, FeaturesConfig(session_gap_hours=12))
    assert short["u_last_session_items"].tolist() == [1, 1, 0]


def test_content_history_limits_to_most_recent_items() -> None:
    pairs = _pairs()
    pf = pair_features(pairs, _history(), _items(), NOW, FeaturesConfig(content_history=1))
    # u0's most recent item is i2 (day 9), which shares nothing with i3
    assert pf.loc[10, "p_content_max_sim"] == 0.0
    full = pair_features(pairs, _history(), _items(), NOW, CFG)
    assert full.loc[10, "p_content_max_sim"] == pytest.approx(1.0)


def test_every_knob_changes_the_output() -> None:
    h, users, items = _history(), _users(), _items()
    base_i = item_features(h, items, NOW, CFG)
    half = item_features(h, items, NOW, FeaturesConfig(half_life_days=5.0))
    assert not np.allclose(base_i["i_pop_decayed"], half["i_pop_decayed"])
    prior = item_features(h, items, NOW, FeaturesConfig(trend_prior=1.0))
    assert not np.allclose(base_i["i_trend"], prior["i_trend"])
    windows = user_features(h, users, items, NOW, FeaturesConfig(windows_days=[2, 14]))
    assert {"u_events_2d", "u_events_14d"} <= set(windows) and "u_events_7d" not in windows
    levels = user_features(h, users, items, NOW, FeaturesConfig(max_attribute_levels=2))
    assert "u_attr_age_band" in levels
    items3 = items.assign(brand=["a", "b", "c", "d", "e"])
    assert "i_attr_brand" not in item_features(
        h, items3, NOW, FeaturesConfig(max_attribute_levels=4)
    )


def _all_columns() -> list[str]:
    h, users, items = _history(), _users(), _items()
    return [
        *user_features(h, users, items, NOW, CFG).columns,
        *item_features(h, items, NOW, CFG).columns,
        *pair_features(_pairs(), h, items, NOW, CFG).columns,
    ]


def test_every_column_is_documented() -> None:
    columns = _all_columns()
    for col in columns:
        assert feature_doc(col), col
    assert feature_doc("u_events_7d") == FEATURE_DOCS["u_events_{w}d"].replace("{w}", "7")
    assert feature_doc("p_cf_last3_sim") == FEATURE_DOCS["p_cf_last{k}_sim"].replace("{k}", "3")
    with pytest.raises(KeyError):
        feature_doc("u_made_up")
    # every documented template is produced by the tiny data set (no stale docs)
    produced = {col.replace("_7d", "_{w}d").replace("_last3_", "_last{k}_") for col in columns}
    produced |= {"u_attr_{name}", "i_attr_{name}", "i_attr_{name}_days_ago"}
    assert set(FEATURE_DOCS) - produced == {"u_attr_{name}_days_ago"}


def test_without_history_no_exceptions() -> None:
    empty = _history().iloc[:0]
    uf = user_features(empty, _users(), _items(), NOW, CFG)
    assert (uf["u_events"] == 0).all() and uf["u_days_since_last"].isna().all()
    itf = item_features(empty, _items(), NOW, CFG)
    assert (itf["i_users"] == 0).all() and (itf["i_trend"] == 1.0).all()
    pf = pair_features(_pairs(), empty, _items(), NOW, CFG)
    assert pf.isna().all().all()
    none = pair_features(_pairs().iloc[:0], _history(), _items(), NOW, CFG)
    assert len(none) == 0 and list(none.columns) == list(pf.columns)


def _log() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    raw = generate(SyntheticConfig(n_users=80, n_items=60, n_events=2_500), seed=3)
    inter, items, users, _ = finalize(raw.interactions, raw.items, raw.users, file="synthetic")
    return inter.assign(row_id=np.arange(len(inter))), items, users


def _fold_features(fold: Fold, items: pd.DataFrame, users: pd.DataFrame, pairs: pd.DataFrame):
    now = history_now(fold.history)
    return (
        user_features(fold.history, users, items, now, CFG),
        item_features(fold.history, items, now, CFG),
        pair_features(pairs, fold.history, items, now, CFG),
    )


def _history_and_targets(s: Split, fold_name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if fold_name == "valid":
        return s.train, s.valid_targets
    hist = pd.concat([s.train, s.valid], ignore_index=True)
    if fold_name == "test":
        return hist, s.test_targets
    k = int(fold_name.removeprefix("extra")) - 1  # an extra ranker fold
    return hist[s.ranker_roles[:, k] == 0], s.ranker_targets[k]


@pytest.mark.parametrize("fold_name", ["valid", "test", "extra1", "extra2"])
def test_no_leakage_from_targets(fold_name: str) -> None:
    inter, items, users = _log()
    cfg = TemporalSplit(n_valid=2, n_test=2, ranker_folds=2)
    hist, targets = _history_and_targets(split(inter, cfg, seed=0), fold_name)
    # Move every event after the fold's history a month later and change its rating.
    later = ~inter["row_id"].isin(hist["row_id"])
    mutated = inter.copy()
    mutated.loc[later, "timestamp"] += 30 * DAY
    mutated.loc[later, "rating"] = np.where(mutated.loc[later, "rating"].isna(), 5.0, 1.0)
    hist2, targets2 = _history_and_targets(split(mutated, cfg, seed=0), fold_name)
    assert len(targets) and not targets["timestamp"].equals(targets2["timestamp"])
    pairs = targets[["user_idx", "item_idx"]]
    one = _fold_features(Fold(fold_name, hist, targets), items, users, pairs)
    two = _fold_features(Fold(fold_name, hist2, targets2), items, users, pairs)
    for a, b in zip(one, two, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_deterministic_and_row_order_free() -> None:
    inter, items, users = _log()
    pairs = inter[["user_idx", "item_idx"]].sample(300, random_state=1)
    now = history_now(inter)
    one = (
        user_features(inter, users, items, now, CFG),
        item_features(inter, items, now, CFG),
        pair_features(pairs, inter, items, now, CFG),
    )
    again = (
        user_features(inter, users, items, now, CFG),
        item_features(inter, items, now, CFG),
        pair_features(pairs, inter, items, now, CFG),
    )
    shuffled = inter.sample(frac=1.0, random_state=2)
    reordered = (
        user_features(shuffled, users, items, now, CFG),
        item_features(shuffled, items, now, CFG),
        pair_features(pairs, shuffled, items, now, CFG),
    )
    for a, b, c in zip(one, again, reordered, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        pd.testing.assert_frame_equal(a, c, check_exact=False, rtol=1e-12)
    assert {"u_attr_age_band", "u_attr_region", "i_attr_price"} <= set(one[0]) | set(one[1])


def test_config_yaml_matches_defaults_and_rejects_unknown_keys() -> None:
    path = ROOT / "conf" / "features" / "default.yaml"
    assert path.read_text().startswith("#")
    data = yaml.safe_load(path.read_text())
    assert parse(data, FeaturesConfig, "features") == FeaturesConfig()
    with pytest.raises(ConfigError, match="features.window: unknown key"):
        parse({"window": [7]}, FeaturesConfig, "features")
    with pytest.raises(ConfigError):
        parse({"windows_days": [7, 7]}, FeaturesConfig, "features")
    with pytest.raises(ConfigError):
        parse({"windows_days": [0]}, FeaturesConfig, "features")


def _random_pairs(n_users: int, n_items: int, n: int, seed: int) -> pd.DataFrame:
    """``n`` random (user, item) pairs, sorted by user and item (repeats possible)."""
    rng = np.random.default_rng(seed)
    pairs = pd.DataFrame(
        {"user_idx": rng.integers(0, n_users, n), "item_idx": rng.integers(0, n_items, n)}
    )
    return pairs.sort_values(["user_idx", "item_idx"], ignore_index=True)


def test_pair_features_in_blocks_of_users_equal_the_whole() -> None:
    """Streaming: pairs described a few users at a time from one PairContext give exactly
    the frame of describing them all at once (cold users beyond the history included)."""
    inter, items, users = _log()
    pairs = _random_pairs(len(users), len(items), 600, seed=4)
    history = inter[inter["user_idx"] < len(users) - 5]  # the last users are cold
    now = history_now(history)
    whole = pair_features(pairs, history, items, now, CFG)
    ctx = pair_context(history, items, now, CFG, len(users))
    for size in (1, 3, 50):
        edges = np.searchsorted(pairs["user_idx"], np.arange(0, len(users) + size, size))
        parts = [
            block_pair_features(pairs.iloc[a:b], ctx)
            for a, b in zip(edges[:-1], edges[1:], strict=True)
            if b > a
        ]
        pd.testing.assert_frame_equal(pd.concat(parts), whole, check_exact=True)
    with pytest.raises(ValueError, match="outside the users the context was made for"):
        block_pair_features(pd.DataFrame({"user_idx": [len(users)], "item_idx": [0]}), ctx)


def test_similarity_routes_give_the_same_floats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The content and collaborative similarities by the sparse product and by the dense
    route (dense column chunks of the other items) are the same floats, bit for bit, for the
    whole frame (every item a column) and for one user at a time (only the user's history
    items as columns), with chunks that do not divide the catalogue."""
    from recpipe.features import pairs as pairs_module

    inter, items, users = _log()
    pairs = _random_pairs(len(users), len(items), 900, seed=5)
    now = history_now(inter)
    routes = []
    real = pairs_module.dense_right

    restricted = []

    def counted(*args):
        right = real(*args)
        routes.append(right is not None)
        restricted.append(args[1] is not None)
        return right

    monkeypatch.setattr(pairs_module, "dense_right", counted)

    def describe() -> list[pd.DataFrame]:
        ctx = pair_context(inter, items, now, CFG, len(users))
        one_user = [block_pair_features(part, ctx) for _, part in pairs.groupby("user_idx")]
        return [pair_features(pairs, inter, items, now, CFG), pd.concat(one_user)]

    monkeypatch.setattr(pairs_module, "_DENSE_RIGHT_BYTES", 0)
    sparse = describe()
    assert routes and not any(routes)
    routes.clear()
    restricted.clear()
    monkeypatch.setattr(pairs_module, "_DENSE_RIGHT_BYTES", 1 << 30)
    monkeypatch.setattr(pairs_module, "_DENSE_NS_PER_PRODUCT", 0.0)
    monkeypatch.setattr(pairs_module, "_DENSE_NS_PER_RIGHT_CELL", 0.0)
    monkeypatch.setattr(pairs_module, "_DENSE_CHUNK_COLUMNS", 7)
    dense = describe()
    assert routes and all(routes)
    assert any(restricted) and not all(restricted)
    for a, b in zip(sparse, dense, strict=True):
        assert a["p_content_max_sim"].notna().mean() > 0.5
        assert a["p_cf_max_sim"].notna().mean() > 0.5
        _assert_same_bits(a, b)


def _assert_same_bits(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal frames, float columns bit for bit (0.0 and -0.0 differ here)."""
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for column in a.columns:
        x, y = a[column].to_numpy(), b[column].to_numpy()
        if x.dtype.kind == "f":
            assert np.array_equal(x.view(np.int64), y.view(np.int64)), column


def test_similarity_blocks_side_by_side_give_the_same_floats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The item-item similarities of a fold's pairs, three candidate items a block with the
    blocks in four threads, are the floats of one thread and of one block, bit for bit."""
    from recpipe import engine
    from recpipe.features import pairs as pairs_module

    inter, items, users = _log()
    pairs = _random_pairs(len(users), len(items), 900, seed=9)
    ctx = pair_context(inter, items, history_now(inter), CFG, len(users))
    pu, pi = pairs["user_idx"].to_numpy(), pairs["item_idx"].to_numpy()
    whole = pair_similarities(pu, pi, ctx).columns
    monkeypatch.setattr(engine, "cpus", lambda: 4)
    monkeypatch.setattr(pairs_module, "_SIM_BLOCK_ENTRIES", 3 * len(items))
    threads = []
    real = pairs_module.in_threads

    def counted(work, blocks, n):
        threads.append((len(blocks), n))
        return real(work, blocks, n)

    monkeypatch.setattr(pairs_module, "in_threads", counted)
    for n in (1, 4):
        monkeypatch.setattr(pairs_module, "BLOCK_THREADS", n)
        got = pair_similarities(pu, pi, ctx).columns
        assert list(got) == list(whole)
        assert not np.isnan(got["p_cf_max_sim"]).all()
        for name, values in whole.items():
            assert np.array_equal(got[name].view(np.int64), values.view(np.int64)), (n, name)
    # the content and the collaborative similarities, many blocks each, in 1 then 4 threads
    assert [n for _, n in threads] == [1, 1, 4, 4] and min(b for b, _ in threads) > 10


def test_similarity_tables_give_the_same_floats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item pair's similarity laid out once (what the service does) gives the features
    the products give, bit for bit: for the whole frame, for one user at a time (only the
    user's history items as columns) and for one user's fresh context built on the tabled
    one (the service's path); and with the tables no similarity is computed."""
    from recpipe.features import pairs as pairs_module
    from recpipe.features.pairs import similarity_tables_bytes, with_similarity_tables

    inter, items, users = _log()
    pairs = _random_pairs(len(users), len(items), 900, seed=8)
    now = history_now(inter)
    ctx = pair_context(inter, items, now, CFG, len(users))
    # rows a block at a time, as for a large catalogue
    monkeypatch.setattr(pairs_module, "_SIM_BLOCK_ENTRIES", 3 * len(items))
    tabled = with_similarity_tables(ctx)
    assert ctx.cf_table is None and tabled.cf_table is not None
    assert similarity_tables_bytes(ctx) == tabled.cf_table.nbytes + tabled.content_table.nbytes
    np.testing.assert_array_equal(tabled.cf_table, (ctx.cf @ ctx.cf_t).toarray())
    cases = [(pairs, ctx, tabled)]
    for u, part in pairs.groupby("user_idx"):
        cases.append((part, ctx, tabled))
        session = inter[inter["user_idx"] == u].assign(user_idx=0)
        fresh = pair_context(session, items, now, CFG, 1, items_from=ctx)
        fresh_tabled = pair_context(session, items, now, CFG, 1, items_from=tabled)
        assert fresh_tabled.cf_table is tabled.cf_table  # shared, not copied
        cases.append((part.assign(user_idx=0), fresh, fresh_tabled))
    computed = [block_pair_features(p, c) for p, c, _ in cases]
    assert computed[0]["p_cf_max_sim"].notna().mean() > 0.5
    assert computed[0]["p_content_max_sim"].notna().mean() > 0.5

    def refuse(*args: object) -> None:
        raise AssertionError("a similarity computed where the tables hold it")

    monkeypatch.setattr(pairs_module, "item_similarities", refuse)
    for want, (p, _, t) in zip(computed, cases, strict=True):
        _assert_same_bits(block_pair_features(p, t), want)


def test_similarities_computed_once_for_a_fold_equal_each_blocks_own() -> None:
    """The similarity features of all pairs computed together and looked up per block give
    the same frames as each block computing its own; a pair outside the set is refused."""
    inter, items, users = _log()
    pairs = _random_pairs(len(users), len(items), 700, seed=6)
    history = inter[inter["user_idx"] < len(users) - 5]  # cold users too
    ctx = pair_context(history, items, history_now(history), CFG, len(users))
    # duplicates and any order: the pairs are made distinct and sorted
    shared = pair_similarities(
        pairs["user_idx"].to_numpy()[::-1], pairs["item_idx"].to_numpy()[::-1], ctx
    )
    assert len(shared.keys) == len(pairs.drop_duplicates())
    edges = np.searchsorted(pairs["user_idx"], np.arange(0, len(users) + 3, 3))
    blocks = [pairs.iloc[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    own = [block_pair_features(block, ctx) for block in blocks]
    for block, want in zip(blocks, own, strict=True):
        _assert_same_bits(block_pair_features(block, ctx, shared), want)
    # grouped: blocks of at most 60 pairs together, a block over the budget alone (None)
    keys = [pair_arrays(block) for block in blocks]
    grouped = list(similarities_by_block(keys, ctx, budget=60))
    assert len(grouped) == len(blocks)
    assert any(g is None for g in grouped) and any(g is not None for g in grouped)
    for block, want, g in zip(blocks, own, grouped, strict=True):
        if g is not None:
            assert len(g.keys) <= 60
        _assert_same_bits(block_pair_features(block, ctx, g), want)
    assert keys[0][0].dtype == np.int32
    unseen = next(
        (u, i)
        for u in range(len(users))
        for i in range(len(items))
        if not ((pairs["user_idx"] == u) & (pairs["item_idx"] == i)).any()
    )
    with pytest.raises(ValueError, match=rf"user_idx {unseen[0]}, item_idx {unseen[1]}\) is not"):
        block_pair_features(
            pd.DataFrame({"user_idx": [unseen[0]], "item_idx": [unseen[1]]}), ctx, shared
        )
    empty = pair_similarities(np.zeros(0, np.int64), np.zeros(0, np.int64), ctx)
    with pytest.raises(ValueError, match="not among the precomputed"):
        block_pair_features(pairs.iloc[:1], ctx, empty)
    assert len(block_pair_features(pairs.iloc[:0], ctx, empty)) == 0
    with pytest.raises(ValueError, match="outside the items table"):
        pair_similarities(np.array([0]), np.array([len(items)]), ctx)


def test_content_vectors_given_must_be_those_of_the_items() -> None:
    items = _items()
    given = item_vectors(items)
    pd.testing.assert_frame_equal(
        pair_features(_pairs(), _history(), items, NOW, CFG, given),
        pair_features(_pairs(), _history(), items, NOW, CFG),
    )
    with pytest.raises(ValueError, match=r"content vectors of \d+ items for \d+ items"):
        pair_context(_history(), items, NOW, CFG, 10, content=given[:-1])
    ctx = pair_context(_history(), items, NOW, CFG, 10)
    with pytest.raises(ValueError, match="given with items_from"):
        pair_context(_history(), items, NOW, CFG, 1, items_from=ctx, content=given)
