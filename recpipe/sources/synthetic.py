"""The built-in synthetic shop: a seeded, fully vectorised generator of users, items and events.

The world behind the data (every random choice comes from ``numpy.random.default_rng(seed)``
and the child generators it spawns, one per part, so changing the number of events does not
change the catalogue):

- ``n_categories`` categories, each a centre in an ``n_factors``-dimensional taste space and
  each with its own vocabulary and brands; every taste direction has two vocabularies, one
  per sign.
- items: a primary category (the item's taste vector lies near its centre), 1-3 categories
  in all (the extra ones are those nearest the vector), Zipf popularity, a popularity trend,
  a release time (back catalogue from before the period, releases during it, and a
  ``late_item_share`` released only in the period's last ``late_window``: cold items), a
  price, a title and a description whose words come partly from the item's category and
  taste vocabularies (so a content model can recover part of the taste signal) and partly
  from filler words.
- users: a favourite category, an age band and a region which, with noise, make up their
  taste vector; a drift direction for that taste; heavy-tailed activity; an active window.
- events: user ``u`` at time ``t`` (fraction of the period) picks item ``i`` with probability
  proportional to ``exp(taste_strength * u(t).v_i / sqrt(n_factors) + log_pop_i(t) +
  recency_i(t))`` among the items released by ``t``, where ``u(t)`` drifts along the user's
  drift direction and ``log_pop_i(t)`` along the item's trend. The event kind is a funnel
  step (view, click, cart, purchase, weights 1, 2, 4, 8) that goes deeper the higher the
  user-item affinity; purchases carry a 1-5 rating that follows the affinity.

Sampling the choice exactly would need the full users x items score matrix at every point
in time. Instead each user gets a candidate pool: draws from a cheap proposal (popularity
ranks, and categories by the user's affinity with their centres, all O(1) per draw with
known probabilities), weighted by target / proposal at mid-period and systematically
resampled into equally likely entries. Each event then draws a few candidates from that
pool with one uniform index each and keeps one by the Gumbel-max trick on the
time-dependent part of the logit (drift, trend, recency, release). Both steps are
sampling-importance-resampling, so the events follow the softmax above closely while the
cost stays linear in the number of events (about 40 s and 3 GiB for 20 million events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from recpipe.config import Config
from recpipe.schema import RawTables

EVENTS = ("view", "click", "cart", "purchase")
EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0}

CATEGORY_NAMES = (
    "electronics", "books", "home", "kitchen", "garden", "toys", "sports", "beauty",
    "fashion", "grocery", "music", "movies", "games", "pets", "office", "automotive",
    "health", "baby", "tools", "outdoors", "jewelry", "shoes", "crafts", "travel",
)  # fmt: skip
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
AGE_SHARES = (0.16, 0.30, 0.25, 0.17, 0.12)
REGIONS = ("north", "south", "east", "west", "central")
REGION_SHARES = (0.22, 0.24, 0.18, 0.21, 0.15)
FILLER_WORDS = (
    "the", "with", "and", "for", "new", "quality", "design", "great", "classic", "everyday",
    "premium", "set", "pack", "edition", "durable", "easy", "use", "perfect", "gift", "ideal",
    "made", "from", "size", "style", "light", "strong", "simple", "modern", "best", "value",
    "original", "comfort", "daily", "compact", "features", "includes", "model", "version",
)  # fmt: skip

# Items: share of all items per number of categories (1, 2, 3).
_N_CATEGORY_SHARES = (0.5, 0.35, 0.15)
# How close an item's (and a user's) taste vector is to its category centre (0..1).
_CATEGORY_PULL = 0.8
# Share of the non-late items that are back catalogue (released before the period).
_BACK_CATALOGUE = 0.6
# Vocabulary sizes: words per category, words per taste direction and sign, brands per
# category.
_CATEGORY_WORDS = 15
_FACTOR_WORDS = 10
_BRANDS = 4
# Users: share of users active until the end of the period (the rest churn earlier).
_STAYING = 0.8
# Choice sampling: pool size per user is clip(_POOL_PER_EVENT * events, min, max); the
# proposal mixes global popularity (this share) with category affinity; each event keeps
# one of _CANDIDATES pool draws; events whose draws are all unreleased retry this often.
_POOL_PER_EVENT = 4
_POOL_MIN = 200
_POOL_MAX = 1024
_POPULAR_SHARE = 0.2
_CANDIDATES = 8
_RETRIES = 4
# Funnel depth grows by this much per standard deviation of affinity (plus logistic noise).
_FUNNEL_AFFINITY = 1.0
# Events handled at once and pool users handled at once, to bound memory.
_EVENT_CHUNK = 1 << 14
_USER_CHUNK = 1 << 10
_SECONDS_PER_DAY = 86_400


class EventMix(Config):
    """Share of each event kind (normalised to sum to 1); deeper steps go to closer items."""

    view: float = Field(0.60, gt=0, description="share of view events (weight 1)")
    click: float = Field(0.22, gt=0, description="share of click events (weight 2)")
    cart: float = Field(0.11, gt=0, description="share of add-to-cart events (weight 4)")
    purchase: float = Field(0.07, gt=0, description="share of purchases (weight 8, rated 1-5)")

    def shares(self) -> np.ndarray:
        """Shares in funnel order (:data:`EVENTS`), summing to 1."""
        raw = np.array([self.view, self.click, self.cart, self.purchase], dtype=float)
        return raw / raw.sum()


class SyntheticConfig(Config):
    """The built-in synthetic shop (the default data source)."""

    source: Literal["synthetic"] = Field("synthetic", description="selects this source")
    dep: str = Field(
        "recpipe/sources/synthetic.py", description="path DVC tracks as ingest's input (the code)"
    )
    n_users: int = Field(1000, ge=1, description="number of users")
    n_items: int = Field(500, ge=3, description="number of items in the catalogue")
    n_events: int = Field(40000, ge=3, description="number of events (at least 3 per user)")
    n_categories: int = Field(
        12, ge=1, le=1000, description="number of item categories (at most 1000)"
    )
    n_factors: int = Field(
        8, ge=1, le=256, description="dimensions of the latent taste space (at most 256)"
    )
    start: int = Field(1672531200, ge=0, description="start of the period, unix seconds")
    days: int = Field(180, ge=1, description="length of the period in days")
    late_item_share: float = Field(
        0.15, ge=0, le=0.9, description="share of items released only late in the period"
    )
    late_window: float = Field(
        0.15, gt=0, le=0.5, description="final share of the period in which late items appear"
    )
    taste_strength: float = Field(
        2.5, ge=0, description="weight of user-item affinity in a choice (0: popularity only)"
    )
    popularity_skew: float = Field(
        1.0, ge=0, description="Zipf exponent of item popularity (0: all items equally popular)"
    )
    activity_skew: float = Field(
        1.0, ge=0, description="sigma of the log-normal user activity (0: equally active users)"
    )
    drift: float = Field(
        0.5, ge=0, description="how far tastes and item popularity move over the period"
    )
    recency_boost: float = Field(
        1.5, ge=0, description="extra choice logit of a just-released item (decays with age)"
    )
    recency_days: float = Field(14.0, gt=0, description="decay time of the recency boost, days")
    text_signal: float = Field(
        0.6,
        ge=0,
        le=1,
        description="share of description words from category and taste vocabularies",
    )
    text_words: int = Field(30, ge=1, le=500, description="words per item description")
    event_mix: EventMix = Field(default_factory=EventMix, description="share of each event")

    @model_validator(mode="after")
    def _enough_events(self) -> SyntheticConfig:
        if self.n_events < 3 * self.n_users:
            raise ValueError(
                f"n_events ({self.n_events}) must be at least 3 per user "
                f"(3 * n_users = {3 * self.n_users})"
            )
        return self


@dataclass(frozen=True)
class _World:
    """What users and items share: category centres, attribute tastes, vocabularies."""

    centres: np.ndarray  # (C, K) category centres in taste space
    category_share: np.ndarray  # (C,) how common each category is
    age_taste: np.ndarray  # (len(AGE_BANDS), K)
    region_taste: np.ndarray  # (len(REGIONS), K)
    category_names: list[str]
    vocab: np.ndarray  # object array of all words: filler, category words, factor words
    filler_p: np.ndarray  # Zipf weights of the filler words
    category_word0: int  # first category word in vocab (category c: c * _CATEGORY_WORDS on)
    factor_word0: int  # first factor word (factor k, sign s: (2k + s) * _FACTOR_WORDS on)
    brands: np.ndarray  # (C, _BRANDS) brand names
    price_mu: np.ndarray  # (C,) log mean price per category


@dataclass(frozen=True)
class _Items:
    vec: np.ndarray  # (I, K) float32 taste vectors
    primary: np.ndarray  # (I,) primary category
    categories: np.ndarray  # (I, 3) categories, -1 padded
    n_categories: np.ndarray  # (I,)
    log_pop: np.ndarray  # (I,) base log-popularity
    trend: np.ndarray  # (I,) popularity drift direction
    release: np.ndarray  # (I,) release time, fraction of the period (may be < 0)
    price: np.ndarray  # (I,)


@dataclass(frozen=True)
class _Users:
    vec: np.ndarray  # (U, K) float32 taste at mid-period
    drift: np.ndarray  # (U, K) float32 taste drift direction
    age: np.ndarray  # (U,) index into AGE_BANDS
    region: np.ndarray  # (U,) index into REGIONS
    begin: np.ndarray  # (U,) start of the active window (fraction of the period)
    end: np.ndarray  # (U,) end of the active window
    activity: np.ndarray  # (U,) relative activity per unit of time


def generate(cfg: SyntheticConfig, seed: int) -> RawTables:
    """Generate the synthetic shop: ``n_events`` events of ``n_users`` users on ``n_items``.

    Pure and deterministic in ``(cfg, seed)``. Returns interactions (the canonical columns,
    in time order), items (``item_id``, ``title``, ``text``, ``categories``, ``price``,
    ``release_ts``) and users (``user_id``, ``age_band``, ``region``). Every user has at
    least 3 events on at least 3 distinct items; every event's item exists and was
    released before the event.
    """
    world_rng, item_rng, user_rng, event_rng, text_rng = np.random.default_rng(seed).spawn(5)
    world = _make_world(cfg, world_rng)
    items = _make_items(cfg, world, item_rng)
    users = _make_users(cfg, world, user_rng)
    ev_user, ev_t, ev_item, ev_aff = _make_events(cfg, world.centres, items, users, event_rng)
    kind, rating = _funnel(cfg, ev_aff, event_rng)

    span = cfg.days * _SECONDS_PER_DAY
    ts = cfg.start + np.floor(ev_t * span).astype(np.int64)
    order = np.argsort(ts, kind="stable")  # a log in time order, like a real export
    user_ids = _ids("u", cfg.n_users)
    item_ids = _ids("i", cfg.n_items)
    interactions = pd.DataFrame(
        {
            "user_id": _take_str(user_ids, ev_user[order]),
            "item_id": _take_str(item_ids, ev_item[order]),
            "rating": rating[order],
            "event": _take_str(list(EVENTS), kind[order]),
            "weight": np.array([EVENT_WEIGHTS[e] for e in EVENTS])[kind[order]],
            "timestamp": ts[order],
        }
    )
    titles, texts = _make_text(cfg, world, items, text_rng)
    names = np.array(world.category_names, dtype=object)
    items_df = pd.DataFrame(
        {
            "item_id": pd.Series(item_ids, dtype="str"),
            "title": pd.Series(titles, dtype="str"),
            "text": pd.Series(texts, dtype="str"),
            "categories": [
                names[row[:n]].tolist()
                for row, n in zip(items.categories, items.n_categories, strict=True)
            ],
            "price": items.price,
            "release_ts": cfg.start + np.floor(items.release * span).astype(np.int64),
        }
    )
    users_df = pd.DataFrame(
        {
            "user_id": pd.Series(user_ids, dtype="str"),
            "age_band": _take_str(list(AGE_BANDS), users.age),
            "region": _take_str(list(REGIONS), users.region),
        }
    )
    return RawTables(
        interactions,
        items_df,
        users_df,
        interactions_file="synthetic",
        items_file="synthetic items",
        users_file="synthetic users",
    )


def _ids(prefix: str, n: int) -> list[str]:
    """``prefix`` + 1-based number zero-padded to the width ``n`` needs (u0001 ... u1000)."""
    width = len(str(n))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def _take_str(values: list[str], codes: np.ndarray) -> pd.Series:
    """``values[codes]`` as a string column, built without one Python object per row."""
    return pd.Series(values, dtype="str").take(codes).reset_index(drop=True)


def _power_law_rank(rng: np.random.Generator, n: np.ndarray | int, skew: float) -> np.ndarray:
    """0-based ranks below ``n`` with P(k) ~ (k + 1) ** -skew, in O(1) each.

    Inverse CDF of the continuous power law on [1, n + 1), floored: the exact probabilities
    are :func:`_power_law_pmf`, which the importance weights use.
    """
    n = np.asarray(n, dtype=np.float64)
    u = rng.random(n.shape)
    one = 1.0 - skew
    if abs(one) < 1e-9:
        x = np.exp(u * np.log(n + 1))
    else:
        x = (1 + u * ((n + 1) ** one - 1)) ** (1 / one)
    return np.minimum(np.floor(x).astype(np.int64) - 1, n.astype(np.int64) - 1)


def _power_law_pmf(k: np.ndarray, n: np.ndarray | int, skew: float) -> np.ndarray:
    """Probability that :func:`_power_law_rank` with the same ``n`` and ``skew`` returns ``k``."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    one = 1.0 - skew
    if abs(one) < 1e-9:
        return (np.log(k + 2) - np.log(k + 1)) / np.log(n + 1)
    return ((k + 2) ** one - (k + 1) ** one) / ((n + 1) ** one - 1)


def _softmax_rows(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _pseudo_words(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct pronounceable made-up words of three syllables."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    s = len(syllables)
    codes = rng.choice(s**3, size=n, replace=False)
    syl = np.array(syllables, dtype=object)
    return syl[codes // (s * s)] + syl[(codes // s) % s] + syl[codes % s]


def _make_world(cfg: SyntheticConfig, rng: np.random.Generator) -> _World:
    c, k = cfg.n_categories, cfg.n_factors
    centres = rng.standard_normal((c, k))
    names = [
        CATEGORY_NAMES[j % len(CATEGORY_NAMES)]
        + (f"-{j // len(CATEGORY_NAMES) + 1}" if j >= len(CATEGORY_NAMES) else "")
        for j in range(c)
    ]
    n_cat_words = c * _CATEGORY_WORDS
    n_factor_words = 2 * k * _FACTOR_WORDS
    made_up = _pseudo_words(rng, n_cat_words + n_factor_words + c * _BRANDS)
    vocab = np.concatenate([np.array(FILLER_WORDS, dtype=object), made_up])
    filler_p = 1.0 / np.arange(1, len(FILLER_WORDS) + 1)
    brands = np.array([w.capitalize() for w in made_up[n_cat_words + n_factor_words :]])
    return _World(
        centres=centres,
        category_share=rng.dirichlet(np.full(c, 3.0)),
        age_taste=rng.standard_normal((len(AGE_BANDS), k)),
        region_taste=rng.standard_normal((len(REGIONS), k)),
        category_names=names,
        vocab=vocab,
        filler_p=filler_p / filler_p.sum(),
        category_word0=len(FILLER_WORDS),
        factor_word0=len(FILLER_WORDS) + n_cat_words,
        brands=brands.reshape(c, _BRANDS),
        price_mu=rng.uniform(np.log(5.0), np.log(300.0), c),
    )


def _make_items(cfg: SyntheticConfig, world: _World, rng: np.random.Generator) -> _Items:
    n, c, k = cfg.n_items, cfg.n_categories, cfg.n_factors
    primary = rng.choice(c, size=n, p=world.category_share)
    noise = rng.standard_normal((n, k))
    vec = _CATEGORY_PULL * world.centres[primary] + np.sqrt(1 - _CATEGORY_PULL**2) * noise

    # Extra categories are those whose centre is nearest the item's taste (Gumbel-top-k).
    n_cat = np.minimum(rng.choice(3, size=n, p=_N_CATEGORY_SHARES) + 1, c)
    logits = 1.5 * (vec @ world.centres.T) / np.sqrt(k) + rng.gumbel(size=(n, c))
    logits[np.arange(n), primary] = np.inf
    top = np.argsort(-logits, axis=1, kind="stable")[:, :3]
    categories = np.full((n, 3), -1, dtype=np.int64)
    categories[:, : top.shape[1]] = top
    categories[np.arange(3)[None, :] >= n_cat[:, None]] = -1

    rank = rng.permutation(n) + 1
    log_pop = -cfg.popularity_skew * np.log(rank)

    # Release times: late items in the final window (not in its very last part, so that
    # they still collect events); of the rest, a back catalogue before the period and new
    # releases spread over it.
    n_late = min(int(round(cfg.late_item_share * n)), n - 3)
    late = np.zeros(n, dtype=bool)
    late[rng.choice(n, size=n_late, replace=False)] = True
    w = cfg.late_window
    back = (rng.random(n) < _BACK_CATALOGUE) & ~late
    # At least three items exist from the start: events early in the period, and users who
    # need three distinct items, always have something to choose.
    back[np.flatnonzero(~late)[:3]] = True
    release = np.where(
        late,
        rng.uniform(1 - w, 1 - w / 4, n),
        np.where(back, -rng.uniform(0.0, 2.0, n), rng.uniform(0.0, 1 - w, n)),
    )
    price = np.round(np.exp(world.price_mu[primary] + 0.5 * rng.standard_normal(n)), 2)
    return _Items(
        vec=vec.astype(np.float32),
        primary=primary,
        categories=categories,
        n_categories=n_cat,
        log_pop=log_pop,
        trend=rng.standard_normal(n),
        release=release,
        price=price,
    )


def _make_users(cfg: SyntheticConfig, world: _World, rng: np.random.Generator) -> _Users:
    n, k = cfg.n_users, cfg.n_factors
    favourite = rng.choice(cfg.n_categories, size=n, p=world.category_share)
    age = rng.choice(len(AGE_BANDS), size=n, p=AGE_SHARES)
    region = rng.choice(len(REGIONS), size=n, p=REGION_SHARES)
    # Favourite category, age and region explain most of the taste; the rest is personal.
    vec = (
        0.7 * world.centres[favourite]
        + 0.35 * world.age_taste[age]
        + 0.25 * world.region_taste[region]
        + 0.55 * rng.standard_normal((n, k))
    )
    # Users join over the period (a quarter are there from the start); most stay until the
    # end, the others churn some time after joining.
    begin = np.maximum(rng.uniform(-0.3, 0.9, n), 0.0)
    stays = rng.random(n) < _STAYING
    end = np.where(stays, 1.0, begin + (1 - begin) * rng.uniform(0.3, 1.0, n))
    activity = np.exp(cfg.activity_skew * rng.standard_normal(n))
    return _Users(
        vec=vec.astype(np.float32),
        drift=rng.standard_normal((n, k)).astype(np.float32),
        age=age,
        region=region,
        begin=begin,
        end=end,
        activity=activity,
    )


@dataclass(frozen=True)
class _Pool:
    """Per-user candidate pools, concatenated in user order, all entries equally likely."""

    start: np.ndarray  # (U + 1,) offsets
    item: np.ndarray  # (P,) candidate item
    uv: np.ndarray  # (P,) user taste . item taste (mid-period)
    dv: np.ndarray  # (P,) user drift direction . item taste


def _make_pool(
    cfg: SyntheticConfig,
    centres: np.ndarray,
    items: _Items,
    users: _Users,
    counts: np.ndarray,
    rng: np.random.Generator,
) -> _Pool:
    """Each user's mid-period choice distribution as a pool of equally likely entries.

    Draws from a cheap proposal (a power law over popularity ranks, or a category by the
    user's affinity with its centre and then a power law over the category's ranks; every
    step O(1) per draw with known probabilities) are weighted by target / proposal, then
    systematically resampled into as many equally likely entries, so that an event draws
    a candidate with one uniform index.
    """
    n_users, n_items, c = cfg.n_users, cfg.n_items, cfg.n_categories
    skew = cfg.popularity_skew
    scale = cfg.taste_strength / np.sqrt(cfg.n_factors)
    sizes = np.clip(_POOL_PER_EVENT * counts, _POOL_MIN, _POOL_MAX)
    start = np.concatenate([[0], np.cumsum(sizes)])

    # Popularity ranks, overall and within each primary category (0 = most popular).
    by_rank = np.argsort(-items.log_pop, kind="stable")
    rank = np.empty(n_items, dtype=np.int64)
    rank[by_rank] = np.arange(n_items)
    by_cat = np.lexsort((rank, items.primary))
    cat_size = np.bincount(items.primary, minlength=c)
    cat_start = np.concatenate([[0], np.cumsum(cat_size)[:-1]])
    cat_rank = np.empty(n_items, dtype=np.int64)
    cat_rank[by_cat] = np.arange(n_items) - cat_start[items.primary[by_cat]]
    q_pop = _power_law_pmf(rank, n_items, skew)
    q_cat = _power_law_pmf(cat_rank, cat_size[items.primary], skew)
    # The category step: each category's share of a user's softmax mass (item tastes lie
    # around their category centre, pulled by _CATEGORY_PULL).
    cat_mass = np.bincount(items.primary, weights=np.exp(items.log_pop), minlength=c)
    log_cat_mass = np.where(cat_size > 0, np.log(np.maximum(cat_mass, 1e-300)), -np.inf)

    item = np.empty(int(start[-1]), dtype=np.int32)
    uv = np.empty(int(start[-1]), dtype=np.float32)
    dv = np.empty(int(start[-1]), dtype=np.float32)
    for lo in range(0, n_users, _USER_CHUNK):
        hi = min(lo + _USER_CHUNK, n_users)
        a, b = int(start[lo]), int(start[hi])
        size = sizes[lo:hi]
        p_cat = _softmax_rows(
            log_cat_mass + _CATEGORY_PULL * scale * (users.vec[lo:hi] @ centres.T)
        )
        # Slots per user and proposal component: popularity first, then each category.
        n_pop = rng.binomial(size, _POPULAR_SHARE)
        n_by_cat = rng.multinomial(size - n_pop, p_cat)
        per_part = np.column_stack([n_pop, n_by_cat]).ravel()
        part = np.repeat(np.tile(np.arange(-1, c), hi - lo), per_part)
        local_user = np.repeat(np.arange(hi - lo), size)
        from_pop = part < 0
        cat = part[~from_pop]
        drawn = np.empty(b - a, dtype=np.int64)
        drawn[from_pop] = by_rank[_power_law_rank(rng, np.full(int(from_pop.sum()), n_items), skew)]
        drawn[~from_pop] = by_cat[cat_start[cat] + _power_law_rank(rng, cat_size[cat], skew)]
        q = _POPULAR_SHARE * q_pop[drawn] + (1 - _POPULAR_SHARE) * (
            p_cat[local_user, items.primary[drawn]] * q_cat[drawn]
        )
        user = local_user + lo
        taste = np.einsum("ij,ij->i", users.vec[user], items.vec[drawn])
        log_w = scale * taste + items.log_pop[drawn] - np.log(q)
        seg_start = start[lo:hi] - a
        w = np.exp(log_w - np.repeat(np.maximum.reduceat(log_w, seg_start), size))
        # Systematic resampling: entry j gets floor(C_j * n + o) - floor(C_(j-1) * n + o)
        # copies (C: the segment's cumulative weight, n its size, o one uniform per user).
        cum = np.cumsum(w)
        before = np.repeat(cum[seg_start] - w[seg_start], size)
        total = np.repeat(cum[seg_start + size - 1], size) - before
        marks = np.floor(
            (cum - before) / total * size[local_user] + rng.random(hi - lo)[local_user]
        )
        marks = marks.astype(np.int64)
        copies = np.diff(marks, prepend=0)
        copies[seg_start] = marks[seg_start]  # floor(o) = 0 before each segment
        picked = np.repeat(np.arange(b - a), copies)
        item[a:b] = drawn[picked]
        uv[a:b] = taste[picked]
        dv[a:b] = np.einsum("ij,ij->i", users.drift[user], items.vec[drawn[picked]])
    return _Pool(start=start, item=item, uv=uv, dv=dv)


def _make_events(
    cfg: SyntheticConfig,
    centres: np.ndarray,
    items: _Items,
    users: _Users,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events in user order: (user, time as fraction of the period, item, affinity)."""
    n_users = cfg.n_users
    share = users.activity * (users.end - users.begin)
    counts = 3 + rng.multinomial(cfg.n_events - 3 * n_users, share / share.sum())
    ev_user = np.repeat(np.arange(n_users, dtype=np.int32), counts)
    ev_t = users.begin[ev_user] + (users.end - users.begin)[ev_user] * rng.random(len(ev_user))
    ev_t = np.minimum(ev_t, np.nextafter(1.0, 0.0))

    pool = _make_pool(cfg, centres, items, users, counts, rng)
    back = np.flatnonzero(items.release <= 0)
    back_cdf = np.cumsum(np.exp(items.log_pop[back] - items.log_pop[back].max()))
    back_cdf /= back_cdf[-1]
    scale = cfg.taste_strength / np.sqrt(cfg.n_factors)

    ev_item = np.empty(len(ev_user), dtype=np.int32)
    ev_aff = np.empty(len(ev_user), dtype=np.float32)
    for lo in range(0, len(ev_user), _EVENT_CHUNK):
        hi = min(lo + _EVENT_CHUNK, len(ev_user))
        u, t = ev_user[lo:hi], ev_t[lo:hi]
        pos = np.full(hi - lo, -1, dtype=np.int64)
        todo = np.arange(hi - lo)
        for _ in range(_RETRIES):
            picked = _pick(cfg, pool, items, u[todo], t[todo], scale, rng)
            pos[todo] = picked
            todo = todo[picked < 0]
            if len(todo) == 0:
                break
        chosen = np.where(pos >= 0, pool.item[np.maximum(pos, 0)], 0)
        if len(todo):
            # Rare: every draw was still unreleased; fall back to the back catalogue.
            fb = np.searchsorted(back_cdf, rng.random(len(todo)), side="right")
            chosen[todo] = back[np.minimum(fb, len(back) - 1)]
        ev_item[lo:hi] = chosen
        ev_aff[lo:hi] = _affinity(users, items, u, t, chosen, cfg.drift)
    _ensure_three_items(cfg, items, users, counts, ev_user, ev_item, ev_aff, ev_t, scale, rng)
    return ev_user, ev_t, ev_item, ev_aff


def _pick(
    cfg: SyntheticConfig,
    pool: _Pool,
    items: _Items,
    u: np.ndarray,
    t: np.ndarray,
    scale: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """One pool position per event (-1 if every candidate drawn was not yet released).

    Candidates are uniform draws from the user's pool (which follows the mid-period choice
    distribution); the Gumbel-max over the time-dependent part of the logit (taste drift,
    popularity trend, recency, release) turns them into a draw at time ``t``.
    """
    n, m = len(u), _CANDIDATES
    size = (pool.start[u + 1] - pool.start[u])[:, None]
    pos = pool.start[u][:, None] + (rng.random((n, m)) * size).astype(np.int64)
    item = pool.item[pos]
    dt = t[:, None] - 0.5
    logit = dt * (cfg.drift * scale * pool.dv[pos] + 2 * cfg.drift * items.trend[item])
    age_days = (t[:, None] - items.release[item]) * cfg.days
    released = age_days >= 0
    logit += cfg.recency_boost * np.exp(-np.maximum(age_days, 0) / cfg.recency_days)
    logit = np.where(released, logit + rng.gumbel(size=(n, m)), -np.inf)
    best = np.argmax(logit, axis=1)
    ok = released[np.arange(n), best]
    return np.where(ok, pos[np.arange(n), best], -1)


def _affinity(
    users: _Users, items: _Items, u: np.ndarray, t: np.ndarray, item: np.ndarray, drift: float
) -> np.ndarray:
    """User taste at time ``t`` dot item taste, scaled to about unit variance."""
    taste = users.vec[u] + (drift * (t - 0.5))[:, None].astype(np.float32) * users.drift[u]
    return np.einsum("ij,ij->i", taste, items.vec[item]) / np.sqrt(items.vec.shape[1])


def _ensure_three_items(
    cfg: SyntheticConfig,
    items: _Items,
    users: _Users,
    counts: np.ndarray,
    ev_user: np.ndarray,
    ev_item: np.ndarray,
    ev_aff: np.ndarray,
    ev_t: np.ndarray,
    scale: float,
    rng: np.random.Generator,
) -> None:
    """Give users with fewer than 3 distinct items 3 distinct back-catalogue items (in place).

    A split needs at least a history item, a valid and a test target per user. Users whose
    few draws repeated (about 4% of the default shop, mostly users with 3-5 events; more
    with tiny catalogues or very peaked tastes) get their first three events replaced by a
    draw without replacement from the always-available back catalogue, still by taste and
    popularity.
    """
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    short = np.flatnonzero(~_has_three_items(ev_user, ev_item, first))
    if len(short) == 0:
        return
    back = np.flatnonzero(items.release <= 0)
    chunk = max(1, (1 << 22) // len(back))
    for lo in range(0, len(short), chunk):
        who = short[lo : lo + chunk]
        logits = scale * (users.vec[who] @ items.vec[back].T) + items.log_pop[back]
        logits = logits + rng.gumbel(size=logits.shape)
        top3 = back[np.argsort(-logits, axis=1, kind="stable")[:, :3]]
        rows = (first[who][:, None] + np.arange(3)).ravel()
        ev_item[rows] = top3.ravel()
        ev_aff[rows] = _affinity(
            users, items, np.repeat(who, 3), ev_t[rows], top3.ravel(), cfg.drift
        )


def _has_three_items(ev_user: np.ndarray, ev_item: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per user (events grouped by user from offsets ``first``): 3 distinct items or more?"""
    users = np.arange(len(first))
    other = ev_item != ev_item[first][ev_user]  # not the user's first item
    at = np.flatnonzero(other)
    if len(at) == 0:
        return np.zeros(len(first), dtype=bool)
    k = at[np.minimum(np.searchsorted(at, first), len(at) - 1)]
    second = np.where(ev_user[k] == users, ev_item[k], -1)  # the user's next item, if any
    return np.logical_or.reduceat(other & (ev_item != second[ev_user]), first)


def _funnel(
    cfg: SyntheticConfig, affinity: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Event kind (index into :data:`EVENTS`) and rating (NaN unless a purchase).

    Depth = affinity (standardised) + logistic noise; kinds are cut at the quantiles of the
    configured mix, so the shares are exact and deeper steps go to closer items.
    """
    z = (affinity - affinity.mean()) / max(float(affinity.std()), 1e-9)
    depth = _FUNNEL_AFFINITY * z + rng.logistic(size=len(z))
    cuts = np.quantile(depth, np.cumsum(cfg.event_mix.shares())[:-1])
    kind = np.searchsorted(cuts, depth, side="right").astype(np.int8)
    purchase = kind == EVENTS.index("purchase")
    stars = np.clip(np.rint(3.0 + z + 0.8 * rng.standard_normal(len(z))), 1, 5)
    rating = np.where(purchase, stars, np.nan)
    return kind, rating


def _make_text(
    cfg: SyntheticConfig, world: _World, items: _Items, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Titles and descriptions whose words partly reveal categories and taste directions.

    Each description word is, with probability ``text_signal``, half the time a word of one
    of the item's categories and half the time a word of a taste direction (chosen in
    proportion to the item's squared coordinate, the vocabulary by its sign); otherwise a
    filler word.
    """
    n, k, words = cfg.n_items, cfg.n_factors, cfg.text_words
    vec = items.vec.astype(np.float64)

    which = np.minimum((rng.random((n, words)) * items.n_categories[:, None]).astype(int), 2)
    cat = items.categories[np.arange(n)[:, None], which]
    cat_word = (
        world.category_word0 + cat * _CATEGORY_WORDS + rng.integers(0, _CATEGORY_WORDS, (n, words))
    )
    factor_p = np.cumsum(vec**2, axis=1)
    factor_p /= factor_p[:, -1:]
    factor = (rng.random((n, words, 1)) >= factor_p[:, None, :]).sum(axis=2)
    factor = np.minimum(factor, k - 1)
    sign = (vec[np.arange(n)[:, None], factor] < 0).astype(int)
    factor_word = (
        world.factor_word0
        + (2 * factor + sign) * _FACTOR_WORDS
        + rng.integers(0, _FACTOR_WORDS, (n, words))
    )
    filler = rng.choice(len(FILLER_WORDS), size=(n, words), p=world.filler_p)
    source = rng.random((n, words))
    signal = cfg.text_signal
    word = np.where(source < signal / 2, cat_word, np.where(source < signal, factor_word, filler))
    text_words = world.vocab[word]

    # Title: a brand of the primary category, the word of the item's strongest taste
    # direction, a word of its primary category and a model number.
    top = np.argmax(np.abs(vec), axis=1)
    top_word = world.factor_word0 + (2 * top + (vec[np.arange(n), top] < 0)) * _FACTOR_WORDS
    top_word = top_word + rng.integers(0, _FACTOR_WORDS, n)
    # Title nouns: the first few words of the category (a product type, not an adjective).
    noun = world.category_word0 + items.primary * _CATEGORY_WORDS + rng.integers(0, 5, n)
    brand = world.brands[items.primary, rng.integers(0, _BRANDS, n)]
    number = rng.integers(100, 1000, n)
    names = world.category_names
    titles = [
        f"{b} {world.vocab[w].capitalize()} {world.vocab[s]} {num}"
        for b, w, s, num in zip(brand, top_word, noun, number, strict=True)
    ]
    texts = [
        " / ".join(names[c] for c in cats[:nc]) + ". " + " ".join(row)
        for cats, nc, row in zip(items.categories, items.n_categories, text_words, strict=True)
    ]
    return titles, texts
