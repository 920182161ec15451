"""The built-in synthetic shop: deterministic, well-formed, and shaped like a real shop's log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recpipe.config import parse
from recpipe.errors import ConfigError
from recpipe.schema import INTERACTION_COLUMNS, RawTables, finalize
from recpipe.sources.synthetic import EVENT_WEIGHTS, EVENTS, SyntheticConfig, generate

CONF = Path(__file__).resolve().parents[1] / "conf" / "data" / "synthetic.yaml"
SMALL = SyntheticConfig(n_users=150, n_items=120, n_events=4000)
DAY = 86_400


@pytest.fixture(scope="module")
def shop() -> RawTables:
    """The default shop (1,000 users, 500 items, 40,000 events): big enough for statistics."""
    return generate(SyntheticConfig(), seed=11)


def _with(cfg: SyntheticConfig, **changes: object) -> SyntheticConfig:
    """``cfg`` with some fields changed, validated again."""
    return SyntheticConfig(**(cfg.model_dump() | changes))


def _period_fraction(ts: pd.Series | np.ndarray, cfg: SyntheticConfig) -> np.ndarray:
    return (np.asarray(ts) - cfg.start) / (cfg.days * DAY)


def test_same_seed_gives_identical_tables() -> None:
    a, b = generate(SMALL, seed=3), generate(SMALL, seed=3)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)


def test_different_seed_gives_different_tables() -> None:
    a, b = generate(SMALL, seed=3), generate(SMALL, seed=4)
    assert not a.interactions.equals(b.interactions)
    assert not a.items["text"].equals(b.items["text"])


def test_catalogue_does_not_depend_on_the_event_count() -> None:
    # Each part has its own random stream: more events, same items and users.
    a = generate(SMALL, seed=3)
    b = generate(_with(SMALL, n_events=6000), seed=3)
    pd.testing.assert_frame_equal(a.items, b.items)
    pd.testing.assert_frame_equal(a.users, b.users)
    assert len(b.interactions) == 6000


def test_exact_size_columns_and_dtypes() -> None:
    raw = generate(SMALL, seed=1)
    inter = raw.interactions
    assert list(inter.columns) == INTERACTION_COLUMNS
    assert len(inter) == SMALL.n_events
    for col in ("user_id", "item_id", "event"):
        assert pd.api.types.is_string_dtype(inter[col]), col
    assert inter["rating"].dtype == np.float64
    assert inter["weight"].dtype == np.float64
    assert inter["timestamp"].dtype == np.int64
    assert inter["timestamp"].is_monotonic_increasing
    assert (raw.interactions_file, raw.items_file, raw.users_file) == (
        "synthetic",
        "synthetic items",
        "synthetic users",
    )
    assert list(raw.items.columns) == [
        "item_id", "title", "text", "categories", "price", "release_ts",
    ]  # fmt: skip
    assert list(raw.users.columns) == ["user_id", "age_band", "region"]
    assert raw.items["release_ts"].dtype == np.int64
    assert raw.items["price"].dtype == np.float64 and (raw.items["price"] > 0).all()


def test_ids_are_zero_padded_and_every_reference_exists() -> None:
    raw = generate(SMALL, seed=1)
    assert raw.users["user_id"].tolist() == [f"u{i:03d}" for i in range(1, 151)]
    assert raw.items["item_id"].tolist() == [f"i{i:03d}" for i in range(1, 121)]
    assert raw.interactions["item_id"].isin(raw.items["item_id"]).all()
    assert raw.interactions["user_id"].isin(raw.users["user_id"]).all()
    assert generate(SyntheticConfig(n_users=10, n_items=9, n_events=30), 0).users[
        "user_id"
    ].tolist() == [f"u{i:02d}" for i in range(1, 11)]


def test_items_have_one_to_three_categories_and_text() -> None:
    items = generate(SMALL, seed=1).items
    sizes = items["categories"].map(len)
    assert sizes.between(1, 3).all() and sizes.nunique() == 3
    assert all(isinstance(c, list) and all(isinstance(x, str) for x in c) for c in items.categories)
    assert items["categories"].map(lambda c: len(set(c)) == len(c)).all()
    assert items["title"].str.len().gt(0).all()
    assert items["text"].str.split().map(len).ge(SMALL.text_words).all()


@pytest.mark.parametrize(
    "cfg",
    [
        SMALL,
        # A tiny catalogue with one dominant item: draws repeat, the top-up must step in.
        SyntheticConfig(n_users=60, n_items=4, n_events=180, popularity_skew=5.0),
        SyntheticConfig(n_users=1, n_items=3, n_events=3, n_categories=1, n_factors=1),
    ],
)
def test_every_user_has_three_events_on_three_items(cfg: SyntheticConfig) -> None:
    inter = generate(cfg, seed=2).interactions
    per_user = inter.groupby("user_id")["item_id"]
    assert per_user.size().min() >= 3
    assert per_user.nunique().min() >= 3
    assert inter["user_id"].nunique() == cfg.n_users
    assert len(inter) == cfg.n_events


def test_no_event_before_its_item_release_and_all_within_the_period(shop: RawTables) -> None:
    cfg = SyntheticConfig()
    release = shop.items.set_index("item_id")["release_ts"]
    inter = shop.interactions
    assert (inter["timestamp"].to_numpy() >= release.loc[inter["item_id"]].to_numpy()).all()
    assert inter["timestamp"].min() >= cfg.start
    assert inter["timestamp"].max() < cfg.start + cfg.days * DAY


def test_popularity_and_activity_are_long_tailed(shop: RawTables) -> None:
    inter = shop.interactions
    items = inter["item_id"].value_counts()
    assert items.iloc[: len(shop.items) // 10].sum() > 0.35 * len(inter)
    users = inter["user_id"].value_counts()
    assert users.iloc[: len(shop.users) // 10].sum() > 0.25 * len(inter)
    assert users.max() > 5 * users.median()


def test_late_items_exist_and_appear_only_late(shop: RawTables) -> None:
    cfg = SyntheticConfig()
    released = _period_fraction(shop.items["release_ts"], cfg)
    late = shop.items.loc[released >= 1 - cfg.late_window, "item_id"]
    assert len(late) == round(cfg.late_item_share * cfg.n_items)
    on_late = shop.interactions["item_id"].isin(late)
    assert on_late.sum() > 0.01 * len(shop.interactions)
    assert (_period_fraction(shop.interactions.loc[on_late, "timestamp"], cfg) >= 0.8).all()
    # Most of the catalogue already exists when the period starts.
    assert (released <= 0).mean() > 0.3


def test_recent_releases_draw_more_events_with_a_recency_boost() -> None:
    def fresh_share(cfg: SyntheticConfig) -> float:
        raw = generate(cfg, seed=5)
        release = raw.items.set_index("item_id")["release_ts"]
        age = raw.interactions["timestamp"] - release.loc[raw.interactions["item_id"]].to_numpy()
        return float((age < 14 * DAY).mean())

    default = SyntheticConfig()
    assert fresh_share(default) > 1.3 * fresh_share(_with(default, recency_boost=0))


def test_text_carries_the_category_signal(shop: RawTables) -> None:
    # Descriptions of items sharing a primary category share more of their vocabulary
    # (beyond the common filler words) than random pairs do.
    words = shop.items["text"].str.split(". ", n=1).str[1].str.split()
    counts = pd.Series([w for ws in words for w in ws]).value_counts()
    common = set(counts.index[:40])
    bags = [set(ws) - common for ws in words]
    primary = shop.items["categories"].str[0].to_numpy()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(bags), (2, 4000))
    keep = a != b
    jaccard = np.array(
        [len(bags[i] & bags[j]) / len(bags[i] | bags[j]) for i, j in zip(a, b, strict=True)]
    )
    same = (primary[a] == primary[b]) & keep
    assert jaccard[same].mean() > 1.5 * jaccard[~same & keep].mean()


def test_event_mix_is_a_funnel_with_weights_and_purchase_ratings(shop: RawTables) -> None:
    inter = shop.interactions
    counts = inter["event"].value_counts()
    assert list(counts.index) == list(EVENTS)  # view > click > cart > purchase
    assert (inter["weight"] == inter["event"].map(EVENT_WEIGHTS)).all()
    purchase = inter["event"] == "purchase"
    assert inter.loc[~purchase, "rating"].isna().all()
    ratings = inter.loc[purchase, "rating"]
    assert ratings.notna().all() and ratings.isin([1.0, 2.0, 3.0, 4.0, 5.0]).all()
    assert ratings.nunique() == 5


def test_collaborative_signal_beats_popularity(shop: RawTables) -> None:
    # Leave each user's last new item out: item co-occurrence finds it far more often than
    # popularity does, so a collaborative model has something to learn.
    inter = shop.interactions
    u = inter["user_id"].str[1:].astype(int).to_numpy() - 1
    i = inter["item_id"].str[1:].astype(int).to_numpy() - 1
    first = pd.DataFrame({"u": u, "i": i, "t": inter["timestamp"]}).groupby(["u", "i"]).t.min()
    first = first.reset_index().sort_values(["u", "t"], kind="stable")
    last = first.groupby("u").tail(1)
    target, history = last.set_index("u"), first.drop(last.index)
    seen = np.zeros((len(shop.users), len(shop.items)))
    seen[history["u"], history["i"]] = 1
    co = seen.T @ seen
    np.fill_diagonal(co, 0)
    norm = np.sqrt(np.maximum(seen.sum(0), 1))
    knn = seen @ (co / norm[:, None] / norm[None, :])
    pop = np.tile(seen.sum(0), (len(seen), 1))

    def hit_rate(scores: np.ndarray) -> float:
        scores = np.where(seen > 0, -np.inf, scores)
        top = np.argsort(-scores, axis=1)[:, :10]
        return float((top[target.index] == target["i"].to_numpy()[:, None]).any(axis=1).mean())

    assert hit_rate(knn) > 1.5 * hit_rate(pop)


KNOBS: dict[str, object] = {
    "n_users": 100,
    "n_items": 100,
    "n_events": 3000,
    "n_categories": 5,
    "n_factors": 4,
    "start": 1_600_000_000,
    "days": 30,
    "late_item_share": 0.3,
    "late_window": 0.3,
    "taste_strength": 1.0,
    "popularity_skew": 0.5,
    "activity_skew": 0.3,
    "drift": 0.0,
    "recency_boost": 0.0,
    "recency_days": 3.0,
    "text_signal": 0.2,
    "text_words": 10,
    "event_mix": {"view": 0.4, "click": 0.3, "cart": 0.2, "purchase": 0.1},
}


def test_every_knob_changes_the_data() -> None:
    assert set(KNOBS) == set(SyntheticConfig.model_fields) - {"source", "dep"}
    base = generate(SMALL, seed=8)
    for key, value in KNOBS.items():
        other = generate(_with(SMALL, **{key: value}), seed=8)
        same = (
            other.interactions.equals(base.interactions)
            and other.items.equals(base.items)
            and other.users.equals(base.users)
        )
        assert not same, key


def test_result_passes_finalize_unchanged_in_size() -> None:
    raw = generate(SMALL, seed=1)
    inter, items, users, warnings = finalize(
        raw.interactions, raw.items, raw.users, file=raw.interactions_file
    )
    assert warnings == []
    assert len(inter) == SMALL.n_events
    assert len(items) == SMALL.n_items and len(users) == SMALL.n_users
    assert inter["item_idx"].max() < SMALL.n_items


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"data\.n_user: unknown key"):
        parse({"source": "synthetic", "n_user": 5}, SyntheticConfig, "data")
    with pytest.raises(ConfigError, match=r"data\.event_mix\.buy: unknown key"):
        parse({"event_mix": {"buy": 0.1}}, SyntheticConfig, "data")


@pytest.mark.parametrize(
    ("key", "value"),
    [("n_users", -1), ("n_items", 0), ("n_events", -5), ("days", 0), ("late_item_share", 1.5)],
)
def test_bad_values_are_rejected(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"data\.{key}"):
        parse({key: value}, SyntheticConfig, "data")


def test_too_few_events_per_user_is_rejected() -> None:
    with pytest.raises(ConfigError, match="at least 3 per user"):
        parse({"n_users": 100, "n_events": 250}, SyntheticConfig, "data")


def test_conf_file_holds_the_defaults() -> None:
    assert CONF.read_text().splitlines()[0] == "# Built-in synthetic shop (the default source)"
    values = yaml.safe_load(CONF.read_text())
    assert parse(values, SyntheticConfig, "data") == SyntheticConfig()
    assert set(values) == set(SyntheticConfig.model_fields)
