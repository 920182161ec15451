"""User, item and user-item pair features for the learning-to-rank stage.

Everything here is computed from one fold's *history* only (never its targets), seen from
``now``, the fold's last history timestamp (:func:`history_now`). The functions are pure:
they read the canonical tables (``history`` with ``user_idx``, ``item_idx``, ``rating``,
``weight``, ``timestamp``; the ``items`` and ``users`` id maps with their metadata) and
return frames; nothing is fitted on interactions except counts.

- :func:`user_features`: one row per user of ``users`` (index ``user_idx``).
- :func:`item_features`: one row per catalogue item (index ``item_idx``).
- :func:`pair_features`: one row per candidate ``(user_idx, item_idx)`` pair, in the order
  and with the index of the given frame.

Conventions (each column is described in :data:`FEATURE_DOCS`, see :func:`feature_doc`):

- Counts are 0 for users or items without history; means, shares, recencies and
  similarities are NaN where they are undefined (XGBoost routes NaN by a learned default).
- Times are in days (86,400 s). An event is inside the window of ``w`` days when
  ``now - timestamp < w`` days; recencies are ``(now - timestamp) / 1 day``.
- Category memberships come from the items table (``categories``, a list per item); an
  event counts fully for each category of its item, so a two-category item's event counts
  in both.
- Popularity share of an item = distinct history users who touched it / history users; it
  is fold-size independent, unlike raw counts (the folds' histories differ in length).
- Attributes: numeric columns of ``users``/``items`` become ``u_attr_<col>``/``i_attr_<col>``
  as floats; columns named ``*_ts`` (unix seconds) or of datetime type become
  ``*_days_ago`` (days before ``now``; negative = after ``now``); string, categorical or
  boolean columns with at most ``max_attribute_levels`` distinct values become integer
  codes: the position of the value in the sorted list of the table's distinct values, -1
  when missing. The vocabulary comes from the whole table (not the history), so codes are
  the same in every fold. Other columns (ids, title, text, categories, lists, high
  cardinality strings) are left out. Column names are lower-cased, non-word runs as ``_``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, PositiveInt, field_validator

from recpipe.config import Config
from recpipe.text import NON_WORD, item_documents

SECONDS_PER_DAY = 86_400.0
# Entries of one dense block of item-item similarities (float64): bounds peak memory of
# the content features to ~32 MB per block whatever the catalogue size.
_SIM_BLOCK_ENTRIES = 1 << 22
_METADATA_COLUMNS = {"user_id", "user_idx", "item_id", "item_idx", "title", "text", "categories"}


class FeaturesConfig(Config):
    """Settings of the feature computations (``features``)."""

    windows_days: list[PositiveInt] = Field(
        [7, 30, 90],
        min_length=1,
        description="recent-activity windows in days: u_events_<w>d and i_users_<w>d per "
        "window; i_trend compares the shortest with the longest",
    )
    half_life_days: float = Field(
        30.0,
        gt=0,
        description="half-life of i_pop_decayed: an event this many days before now counts half",
    )
    min_ratings: int = Field(
        1,
        ge=1,
        description="u_mean_rating / i_mean_rating need at least this many rated events, "
        "else they are NaN",
    )
    trend_prior: float = Field(
        5.0,
        gt=0,
        description="pseudo-events added to both sides of i_trend, so items with few events "
        "stay near 1 instead of swinging on noise",
    )
    content_history: int = Field(
        50,
        ge=1,
        description="p_content_*_sim and p_cf_max_sim compare a candidate with at most this "
        "many of the user's most recent distinct (describable) history items",
    )
    recent_items: list[PositiveInt] = Field(
        [1, 3, 10],
        description="p_cf_last<k>_sim per k: mean collaborative cosine between a candidate and "
        "the user's k most recent distinct items (short-term interest)",
    )
    session_gap_hours: float = Field(
        24.0,
        gt=0,
        description="u_last_session_items counts the user's items from the last event back "
        "while consecutive first events are at most this many hours apart",
    )
    max_attribute_levels: int = Field(
        50,
        ge=2,
        description="string/categorical user or item attributes with at most this many "
        "distinct values become integer codes; more are left out",
    )

    @field_validator("windows_days", "recent_items")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"values must be distinct, got {value}")
        return value


FEATURE_DOCS: dict[str, str] = {
    # users
    "u_events": "user's history events (0 without history)",
    "u_items": "distinct items in the user's history (0 without history)",
    "u_events_{w}d": "user's events in the last {w} days before now (0 without history)",
    "u_days_since_last": "days from the user's last history event to now (NaN: no history)",
    "u_days_since_first": "days from the user's first history event to now (NaN: no history)",
    "u_active_days": "days between the user's first and last history events (NaN: no history)",
    "u_mean_rating": "mean rating of the user's rated events (NaN below min_ratings)",
    "u_rated_share": "share of the user's events that carry a rating (NaN: no history)",
    "u_mean_weight": "mean event weight of the user (funnel depth; NaN: no history)",
    "u_n_categories": "distinct item categories in the user's history (breadth; 0: none)",
    "u_category_entropy": "entropy in bits of the user's events over categories (0 when all "
    "in one or none; NaN: no history)",
    "u_mean_item_pop": "mean popularity share of the user's distinct items (mainstreamness; "
    "NaN: no history)",
    "u_gap_last_days": "days between the first events of the user's last two distinct items "
    "(NaN: fewer than two items)",
    "u_last_session_items": "distinct items in the user's last session: back from the latest "
    "item while consecutive first events are at most session_gap_hours apart (0: no history)",
    "u_attr_{name}": "user attribute from the users table (number as is, string as sorted "
    "code, -1 missing)",
    "u_attr_{name}_days_ago": "user timestamp attribute as days before now",
    # items
    "i_users": "distinct users who interacted with the item (0 without history)",
    "i_events": "events on the item (0 without history)",
    "i_pop_share": "i_users / users with any history (fold-size independent popularity)",
    "i_users_{w}d": "distinct users with an event on the item in the last {w} days",
    "i_pop_decayed": "events on the item, each weighted 0.5 ** (age / half_life_days)",
    "i_trend": "(events in the shortest window + prior) / (events expected there at the "
    "longest window's rate + prior); 1 = steady, > 1 rising",
    "i_days_since_last": "days from the item's last event to now (NaN: no history)",
    "i_days_since_first": "days from the item's first event to now (age in the log; NaN: none)",
    "i_mean_rating": "mean rating of the item's rated events (NaN below min_ratings)",
    "i_n_ratings": "rated events on the item",
    "i_n_categories": "number of categories of the item in the catalogue",
    "i_attr_{name}": "item attribute from the items table (number as is, string as sorted "
    "code, -1 missing)",
    "i_attr_{name}_days_ago": "item timestamp attribute (e.g. release_ts) as days before now "
    "(negative: after now)",
    # pairs
    "p_cat_affinity": "share of the user's events in each of the item's categories, averaged "
    "over them (NaN: user without history or item without categories)",
    "p_cat_max_affinity": "largest share of the user's events in one of the item's categories "
    "(NaN as p_cat_affinity)",
    "p_days_since_cat": "days since the user last touched any of the item's categories (NaN: "
    "never)",
    "p_content_max_sim": "max TF-IDF cosine (title, text, categories) between the item and the "
    "user's content_history most recent items (NaN: undescribed item or user)",
    "p_content_mean_sim": "mean of the same cosines (NaN as p_content_max_sim)",
    "p_cf_last{k}_sim": "mean collaborative cosine (binary user sets in the history) between "
    "the item and the user's {k} most recent distinct items (NaN: item or user without "
    "history)",
    "p_cf_max_sim": "max collaborative cosine between the item and any of the user's "
    "content_history most recent items (NaN as p_cf_last<k>_sim)",
    "p_user_item_pop_ratio": "item's popularity / mean popularity of the user's items (NaN: "
    "user without history)",
}

_WINDOW_NAME = re.compile(r"^(?P<stem>[a-z_]+)_(?P<w>\d+)d$")
_RECENT_NAME = re.compile(r"^p_cf_last(?P<k>\d+)_sim$")


def feature_doc(name: str) -> str:
    """The documentation line of a produced column (window and attribute names resolved)."""
    if name in FEATURE_DOCS:
        return FEATURE_DOCS[name]
    for prefix in ("u_attr_", "i_attr_"):
        if name.startswith(prefix) and len(name) > len(prefix):
            attr = name[len(prefix) :]
            if attr.endswith("_days_ago"):
                key = prefix + "{name}_days_ago"
                attr = attr[: -len("_days_ago")]
            else:
                key = prefix + "{name}"
            return FEATURE_DOCS[key].replace("{name}", attr)
    match = _RECENT_NAME.match(name)
    if match:
        return FEATURE_DOCS["p_cf_last{k}_sim"].replace("{k}", match["k"])
    match = _WINDOW_NAME.match(name)
    if match:
        key = f"{match['stem']}_{{w}}d"
        if key in FEATURE_DOCS:
            return FEATURE_DOCS[key].replace("{w}", match["w"])
    raise KeyError(f"undocumented feature {name!r}")


def history_now(history: pd.DataFrame) -> int:
    """The reference time of a fold: its last history timestamp (unix seconds)."""
    if len(history) == 0:
        raise ValueError("history is empty: no reference time")
    return int(history["timestamp"].max())


# -- shared building blocks -------------------------------------------------------------


class _Log:
    """A history as flat numpy arrays plus its distinct (user, item) pairs.

    Pairs are sorted by (user, item), so everything derived from them is independent of the
    history's row order, and a user's pairs are contiguous.
    """

    def __init__(self, history: pd.DataFrame, n_users: int, n_items: int, now: int) -> None:
        self.user = history["user_idx"].to_numpy(np.int64)
        self.item = history["item_idx"].to_numpy(np.int64)
        self.ts = history["timestamp"].to_numpy(np.int64)
        self.rating = history["rating"].to_numpy(np.float64)
        self.weight = history["weight"].to_numpy(np.float64)
        self.now = int(now)
        if len(self.user) and (self.item.min() < 0 or self.item.max() >= n_items):
            raise ValueError("history refers to item_idx outside the items table")
        if len(self.user) and self.user.min() < 0:
            raise ValueError("history has negative user_idx")
        self.n_users = max(n_users, int(self.user.max()) + 1 if len(self.user) else 0)
        self.n_items = n_items
        self.age_days = (self.now - self.ts) / SECONDS_PER_DAY

        # Hashing the (user, item) key and sorting only the distinct pairs is about twice as
        # fast as sorting all events, and the per-pair reductions need no sorted events.
        codes, keys = pd.factorize(self.user * n_items + self.item)
        n_pairs = len(keys)
        events = np.bincount(codes, minlength=n_pairs)
        last = _group_extreme(np.maximum, codes, self.ts, n_pairs)
        first = _group_extreme(np.minimum, codes, self.ts, n_pairs)
        order = np.argsort(keys)
        keys = np.asarray(keys, dtype=np.int64)[order]
        self.pair_user = keys // max(n_items, 1)
        self.pair_item = keys % max(n_items, 1)
        self.pair_events = events[order]
        self.pair_last = last[order]
        self.pair_first = first[order]

    def user_events(self) -> np.ndarray:
        return np.bincount(self.user, minlength=self.n_users)

    def item_users(self) -> np.ndarray:
        return np.bincount(self.pair_item, minlength=self.n_items)

    def pop_share(self) -> np.ndarray:
        """Distinct users per item / users with history (0 for an empty history)."""
        n_active = int(np.count_nonzero(self.user_events()))
        return self.item_users() / max(n_active, 1)


def _group_extreme(
    ufunc: np.ufunc, groups: np.ndarray, values: np.ndarray, n: int, missing: float | None = None
) -> np.ndarray:
    """Per-group max (``np.maximum``) or min (``np.minimum``) of integer ``values``.

    Groups without values get ``missing`` (the result is then float), else the identity
    extreme of int64.
    """
    info = np.iinfo(np.int64)
    out = np.full(n, info.min if ufunc is np.maximum else info.max, dtype=np.int64)
    ufunc.at(out, groups, values)
    if missing is None:
        return out
    empty = np.bincount(groups, minlength=n) == 0
    result = out.astype(np.float64)
    result[empty] = missing
    return result


def _reduceat(ufunc: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``ufunc.reduceat`` that accepts empty input (contiguous, non-empty groups)."""
    if len(starts) == 0:
        return np.array([], dtype=values.dtype)
    return ufunc.reduceat(values, starts)


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Positions where a new run of equal keys begins in a sorted array."""
    if len(sorted_keys) == 0:
        return np.array([], dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den`` is 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _n_items(items: pd.DataFrame) -> int:
    idx = items["item_idx"].to_numpy(np.int64)
    return int(idx.max()) + 1 if len(idx) else 0


def _by_index(items: pd.DataFrame) -> pd.DataFrame:
    """The items table with row ``i`` holding ``item_idx == i`` (the schema's id map)."""
    out = items.sort_values("item_idx", kind="stable").reset_index(drop=True)
    if not np.array_equal(out["item_idx"].to_numpy(), np.arange(len(out))):
        raise ValueError("items.item_idx must be the contiguous indices 0..n-1")
    return out


def item_category_matrix(items: pd.DataFrame) -> tuple[sp.csr_matrix, list[str]]:
    """Binary item x category CSR matrix (row = ``item_idx``) and the sorted category names.

    Each distinct category of an item is one entry; missing or empty lists give empty rows.
    """
    n_items = _n_items(items)
    if "categories" not in items.columns or n_items == 0:
        return sp.csr_matrix((n_items, 0), dtype=np.float64), []
    cats = pd.Series(items["categories"].to_numpy(), index=items["item_idx"].to_numpy())
    # explode handles lists and arrays (parquet gives arrays); a bare string is one category
    long = cats.explode().dropna()
    long = long.astype(str)
    long = long[long != ""]
    pairs = pd.DataFrame({"item": long.index.to_numpy(np.int64), "cat": long.to_numpy()})
    pairs = pairs.drop_duplicates()
    names = sorted(pairs["cat"].unique().tolist())
    codes = pd.Index(names).get_indexer(pairs["cat"])
    m = sp.csr_matrix(
        (np.ones(len(pairs)), (pairs["item"].to_numpy(), codes)), shape=(n_items, len(names))
    )
    m.sort_indices()
    return m, names


class _UserCategories:
    """Per (user, category): events and last timestamp, as sorted keys ``user * C + cat``."""

    def __init__(self, log: _Log, item_cats: sp.csr_matrix) -> None:
        self.n_cats = item_cats.shape[1]
        pos, cat = _expand_rows(item_cats, log.pair_item)
        n_cats = max(self.n_cats, 1)
        key = log.pair_user[pos] * n_cats + cat
        order = np.argsort(key)
        key = key[order]
        starts = _group_starts(key)
        self.key = key[starts]
        self.user = self.key // n_cats
        self.events = _reduceat(np.add, log.pair_events[pos][order], starts)
        self.last = _reduceat(np.maximum, log.pair_last[pos][order], starts)

    def lookup(self, users: np.ndarray, cats: np.ndarray) -> np.ndarray:
        """Row positions of (user, cat) keys, -1 where the user never touched the category."""
        key = users * max(self.n_cats, 1) + cats
        if len(self.key) == 0:
            return np.full(len(key), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.key, key), len(self.key) - 1)
        return np.where(self.key[pos] == key, pos, -1)


def _take(values: np.ndarray, positions: np.ndarray, fill: float) -> np.ndarray:
    """``values[positions]`` with ``fill`` where a position is -1 (not found)."""
    if len(values) == 0:
        return np.full(len(positions), fill, dtype=np.float64)
    return np.where(positions >= 0, values[np.maximum(positions, 0)], fill)


def _expand_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each ``rows[k]``, its column indices: returns (k repeated, column) flat arrays."""
    lengths = np.diff(matrix.indptr)[rows]
    total = int(lengths.sum())
    pos = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    group_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    offsets = np.arange(total, dtype=np.int64) - group_start
    cols = matrix.indices[np.repeat(matrix.indptr[rows], lengths) + offsets].astype(np.int64)
    return pos, cols


def _attribute_features(table: pd.DataFrame, prefix: str, now: int, max_levels: int) -> dict:
    """Encoded attribute columns of a users/items table (see the module docstring)."""
    out: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}

    def put(name: str, col: str, values: np.ndarray) -> None:
        if name in out:
            raise ValueError(f"attribute columns {sources[name]!r} and {col!r} give one name")
        out[name], sources[name] = values, col

    for col in table.columns:
        if col in _METADATA_COLUMNS:
            continue
        values = table[col]
        base = prefix + NON_WORD.sub("_", str(col).strip().lower()).strip("_")
        if pd.api.types.is_bool_dtype(values):
            codes = values.astype("boolean").astype("Int8").fillna(-1)
            put(base, col, codes.to_numpy(np.int64))
        elif pd.api.types.is_datetime64_any_dtype(values):
            secs = values.astype("datetime64[s, UTC]" if values.dt.tz else "datetime64[s]")
            secs = secs.astype("int64").to_numpy(np.float64)
            secs[values.isna().to_numpy()] = np.nan
            put(base + "_days_ago", col, (now - secs) / SECONDS_PER_DAY)
        elif pd.api.types.is_numeric_dtype(values):
            numbers = values.to_numpy(np.float64, na_value=np.nan)
            if base.endswith("_ts"):
                put(base[:-3] + "_days_ago", col, (now - numbers) / SECONDS_PER_DAY)
            else:
                put(base, col, numbers)
        elif isinstance(values.dtype, pd.CategoricalDtype) or pd.api.types.infer_dtype(
            values, skipna=True
        ) in ("string", "boolean"):
            present = values.dropna().astype(str)
            vocab = sorted(present.unique().tolist())
            if not 0 < len(vocab) <= max_levels:
                continue  # high-cardinality text (names, ids) is no attribute a tree can use
            codes = np.full(len(values), -1, dtype=np.int64)
            codes[values.notna().to_numpy()] = pd.Index(vocab).get_indexer(present)
            put(base, col, codes)
    return out


def _frame(columns: dict, index: np.ndarray, name: str) -> pd.DataFrame:
    return pd.DataFrame(columns, index=pd.Index(index, name=name))


def _check_no_clash(columns: dict, attrs: dict) -> None:
    clash = set(columns) & set(attrs)
    if clash:
        raise ValueError(f"attribute columns clash with feature names: {sorted(clash)}")


# -- users --------------------------------------------------------------------------------


def user_features(
    history: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    now: int,
    cfg: FeaturesConfig,
) -> pd.DataFrame:
    """Features of every user of ``users`` from ``history`` seen at ``now``.

    Index ``user_idx`` (in the order of ``users``); columns as in :data:`FEATURE_DOCS`
    (``u_*``), windows in the order of ``cfg.windows_days``, then user attributes. History
    rows of users absent from ``users`` only count towards item popularity.
    """
    user_idx = users["user_idx"].to_numpy(np.int64)
    n_users = int(user_idx.max()) + 1 if len(user_idx) else 0
    log = _Log(history, n_users, _n_items(items), now)
    n = log.n_users

    events = log.user_events()
    n_items_u = np.bincount(log.pair_user, minlength=n)
    first = _group_extreme(np.minimum, log.pair_user, log.pair_first, n, np.nan)
    last = _group_extreme(np.maximum, log.pair_user, log.pair_last, n, np.nan)
    rated = ~np.isnan(log.rating)
    n_rated = np.bincount(log.user[rated], minlength=n)
    sum_rated = np.bincount(log.user[rated], weights=log.rating[rated], minlength=n)
    pop = log.pop_share()
    sum_pop = np.bincount(log.pair_user, weights=pop[log.pair_item], minlength=n)

    item_cats, _ = item_category_matrix(items)
    uc = _UserCategories(log, item_cats)
    n_cats_u = np.bincount(uc.user, minlength=n)
    # Entropy of p_c = events in c / sum over the user's categories (in bits).
    total = np.bincount(uc.user, weights=uc.events, minlength=n)
    p = uc.events / total[uc.user] if len(uc.user) else np.array([])
    entropy = np.bincount(uc.user, weights=-p * np.log2(p), minlength=n)
    has = events > 0

    cols: dict[str, np.ndarray] = {
        "u_events": events,
        "u_items": n_items_u,
    }
    for w in cfg.windows_days:
        recent = log.age_days < w
        cols[f"u_events_{w}d"] = np.bincount(log.user[recent], minlength=n)
    cols.update(
        {
            "u_days_since_last": (now - last) / SECONDS_PER_DAY,
            "u_days_since_first": (now - first) / SECONDS_PER_DAY,
            "u_active_days": (last - first) / SECONDS_PER_DAY,
            "u_mean_rating": np.where(
                n_rated >= cfg.min_ratings, _safe_div(sum_rated, n_rated), np.nan
            ),
            "u_rated_share": _safe_div(n_rated, events),
            "u_mean_weight": _safe_div(
                np.bincount(log.user, weights=log.weight, minlength=n), events
            ),
            "u_n_categories": n_cats_u,
            "u_category_entropy": np.where(has, np.abs(entropy), np.nan),
            "u_mean_item_pop": _safe_div(sum_pop, n_items_u),
        }
    )
    cols.update(_session_features(log, cfg.session_gap_hours))
    cols = {k: v[user_idx] for k, v in cols.items()}
    attrs = _attribute_features(users, "u_attr_", now, cfg.max_attribute_levels)
    _check_no_clash(cols, attrs)
    return _frame(cols | attrs, user_idx, "user_idx")


def _session_features(log: _Log, gap_hours: float) -> dict[str, np.ndarray]:
    """``u_gap_last_days`` and ``u_last_session_items`` from the users' distinct items in
    order of first event (ties by item_idx)."""
    n = log.n_users
    order = np.lexsort((log.pair_item, log.pair_first, log.pair_user))
    user, first = log.pair_user[order], log.pair_first[order]
    gap = np.full(n, np.nan)
    session = np.zeros(n, dtype=np.int64)
    if len(user) == 0:
        return {"u_gap_last_days": gap, "u_last_session_items": session}
    new_user = np.r_[True, user[1:] != user[:-1]]
    step = np.r_[0, np.diff(first)]
    # A session starts at a user's first item or after a pause longer than gap_hours.
    starts = new_user | (step > gap_hours * 3600.0)
    pos = np.arange(len(user))
    last_start = _group_extreme(np.maximum, user, np.where(starts, pos, -1), n)
    count = np.bincount(user, minlength=n)
    end = np.cumsum(count)  # one past each user's last row
    has = count > 0
    session[has] = end[has] - last_start[has]
    two = count >= 2
    gap[two] = step[end[two] - 1] / SECONDS_PER_DAY
    return {"u_gap_last_days": gap, "u_last_session_items": session}


# -- items --------------------------------------------------------------------------------


def item_features(
    history: pd.DataFrame, items: pd.DataFrame, now: int, cfg: FeaturesConfig
) -> pd.DataFrame:
    """Features of every catalogue item from ``history`` seen at ``now``.

    Index ``item_idx`` (in the order of ``items``); columns as in :data:`FEATURE_DOCS`
    (``i_*``), windows in the order of ``cfg.windows_days``, then item attributes.
    """
    item_idx = items["item_idx"].to_numpy(np.int64)
    n = _n_items(items)
    log = _Log(history, 0, n, now)

    events = np.bincount(log.item, minlength=n)
    users = log.item_users()
    first = _group_extreme(np.minimum, log.pair_item, log.pair_first, n, np.nan)
    last = _group_extreme(np.maximum, log.pair_item, log.pair_last, n, np.nan)
    rated = ~np.isnan(log.rating)
    n_rated = np.bincount(log.item[rated], minlength=n)
    sum_rated = np.bincount(log.item[rated], weights=log.rating[rated], minlength=n)
    decay = np.exp2(-np.maximum(log.age_days, 0.0) / cfg.half_life_days)
    item_cats, _ = item_category_matrix(items)
    pair_age = (now - log.pair_last) / SECONDS_PER_DAY

    cols: dict[str, np.ndarray] = {
        "i_users": users,
        "i_events": events,
        "i_pop_share": log.pop_share(),
    }
    for w in cfg.windows_days:
        cols[f"i_users_{w}d"] = np.bincount(log.pair_item[pair_age < w], minlength=n)
    cols.update(
        {
            "i_pop_decayed": np.bincount(log.item, weights=decay, minlength=n),
            "i_trend": _trend(log, n, cfg),
            "i_days_since_last": (now - last) / SECONDS_PER_DAY,
            "i_days_since_first": (now - first) / SECONDS_PER_DAY,
            "i_mean_rating": np.where(
                n_rated >= cfg.min_ratings, _safe_div(sum_rated, n_rated), np.nan
            ),
            "i_n_ratings": n_rated,
            "i_n_categories": np.diff(item_cats.indptr).astype(np.int64),
        }
    )
    cols = {k: v[item_idx] for k, v in cols.items()}
    attrs = _attribute_features(items, "i_attr_", now, cfg.max_attribute_levels)
    _check_no_clash(cols, attrs)
    return _frame(cols | attrs, item_idx, "item_idx")


def _trend(log: _Log, n_items: int, cfg: FeaturesConfig) -> np.ndarray:
    """Smoothed ratio of the shortest window's events to the longest window's rate.

    Window lengths are capped at the history's span, so a log shorter than the long window
    does not make every item look like it is rising.
    """
    short, long = min(cfg.windows_days), max(cfg.windows_days)
    n_short = np.bincount(log.item[log.age_days < short], minlength=n_items)
    n_long = np.bincount(log.item[log.age_days < long], minlength=n_items)
    span = float(log.age_days.max()) if len(log.age_days) else 0.0
    eff_short, eff_long = min(short, span), min(long, span)
    share = eff_short / eff_long if eff_long > 0 else 1.0
    return (n_short + cfg.trend_prior) / (n_long * share + cfg.trend_prior)


# -- pairs --------------------------------------------------------------------------------


def pair_features(
    pairs: pd.DataFrame,
    history: pd.DataFrame,
    items: pd.DataFrame,
    now: int,
    cfg: FeaturesConfig,
) -> pd.DataFrame:
    """Features of candidate ``(user_idx, item_idx)`` pairs from ``history`` seen at ``now``.

    Same row order and index as ``pairs``; columns ``p_*`` of :data:`FEATURE_DOCS`. Items
    must be catalogue items; users without history get NaN.
    """
    items = _by_index(items)
    n_items = len(items)
    pu = pairs["user_idx"].to_numpy(np.int64)
    pi = pairs["item_idx"].to_numpy(np.int64)
    if len(pi) and (pi.min() < 0 or pi.max() >= n_items):
        raise ValueError("pairs refer to item_idx outside the items table")
    n_users = int(pu.max()) + 1 if len(pu) else 0
    log = _Log(history, n_users, n_items, now)
    n = len(pairs)

    events = log.user_events()
    item_cats, _ = item_category_matrix(items)
    uc = _UserCategories(log, item_cats)
    pos, cat = _expand_rows(item_cats, pi)
    hit = uc.lookup(pu[pos], cat)
    share = _take(uc.events, hit, 0) / np.maximum(events[pu[pos]], 1)
    # Last touch stored as seconds after the log's start + 1, so 0 means "never".
    t0 = int(log.ts.min()) if len(log.ts) else now
    touched = np.where(hit >= 0, _take(uc.last, hit, 0) - t0 + 1, 0)
    n_cats = np.diff(item_cats.indptr)[pi]
    starts = np.cumsum(n_cats) - n_cats
    with_cats = n_cats > 0
    cat_ok = with_cats & (events[pu] > 0)

    aff = np.full(n, np.nan)
    aff_max = np.full(n, np.nan)
    last_touch = np.zeros(n)
    if len(share):
        sums = np.bincount(pos, weights=share, minlength=n)
        aff[cat_ok] = sums[cat_ok] / n_cats[cat_ok]
        aff_max[cat_ok] = np.maximum.reduceat(share, starts[with_cats])[cat_ok[with_cats]]
        last_touch[with_cats] = np.maximum.reduceat(touched, starts[with_cats])
    days_cat = np.where(last_touch > 0, (now - (last_touch + t0 - 1)) / SECONDS_PER_DAY, np.nan)

    content = _recent_similarity(pu, pi, log, item_vectors(items), cfg.content_history)
    recent = sorted(cfg.recent_items)
    cf = _recent_similarity(pu, pi, log, interaction_vectors(log), cfg.content_history, recent)

    pop = log.item_users().astype(np.float64)
    n_items_u = np.bincount(log.pair_user, minlength=log.n_users)
    mean_pop_u = _safe_div(
        np.bincount(log.pair_user, weights=pop[log.pair_item], minlength=log.n_users), n_items_u
    )
    return pd.DataFrame(
        {
            "p_cat_affinity": aff,
            "p_cat_max_affinity": aff_max,
            "p_days_since_cat": days_cat,
            "p_content_max_sim": content["max"],
            "p_content_mean_sim": content["mean"],
            **{f"p_cf_last{j}_sim": cf[f"mean{j}"] for j in cfg.recent_items},
            "p_cf_max_sim": cf["max"],
            "p_user_item_pop_ratio": _safe_div(pop[pi], mean_pop_u[pu]),
        },
        index=pairs.index,
    )


def item_vectors(items: pd.DataFrame) -> sp.csr_matrix:
    """L2-normalised TF-IDF vectors (float64) of the item documents, row = ``item_idx``.

    Documents are those of the TF-IDF candidate model (title, text, ``cat_<name>`` tokens),
    fitted on item metadata only. An empty vocabulary gives a matrix with no columns.
    """
    # imported here: scikit-learn costs ~1 s to import, and the features stage never needs it
    from sklearn.feature_extraction.text import TfidfVectorizer

    items = _by_index(items)
    vectorizer = TfidfVectorizer(sublinear_tf=True, norm="l2", dtype=np.float64)
    try:
        vectors = vectorizer.fit_transform(item_documents(items))
    except ValueError:
        # no item has any token: nothing to compare, every similarity is undefined
        return sp.csr_matrix((len(items), 0), dtype=np.float64)
    return sp.csr_matrix(vectors, dtype=np.float64)


def _recency_order(
    user: np.ndarray, item: np.ndarray, last: np.ndarray, n_items: int
) -> np.ndarray:
    """Order of pairs by user, then most recent first, then item_idx.

    One int64 key sorts several times faster than ``np.lexsort`` on three keys; the key is
    (user, rank of -last, item) in mixed radix, used when it cannot overflow.
    """
    if len(user) == 0:
        return np.array([], dtype=np.int64)
    times, rank = np.unique(-last, return_inverse=True)
    n_users = int(user.max()) + 1
    if n_users * len(times) * max(n_items, 1) < np.iinfo(np.int64).max // 2:
        return np.argsort((user * len(times) + rank) * max(n_items, 1) + item)
    return np.lexsort((item, rank, user))


def _recent_items(log: _Log, described: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``k`` most recent distinct described items, as (lengths, padded matrix).

    Row ``u`` of the ``(n_users, <= k)`` matrix holds the user's items, most recent first,
    padded with 0 after ``lengths[u]`` entries. Recency = the pair's last event; ties go to
    the smaller item_idx, so the result does not depend on the row order of the history.
    """
    keep = described[log.pair_item]
    user, item, last = log.pair_user[keep], log.pair_item[keep], log.pair_last[keep]
    order = _recency_order(user, item, last, log.n_items)
    user, item = user[order], item[order]
    starts = _group_starts(user)
    rank = np.arange(len(user)) - np.repeat(starts, np.diff(np.r_[starts, len(user)]))
    top = rank < k
    lengths = np.bincount(user[top], minlength=log.n_users)
    padded = np.zeros((log.n_users, int(lengths.max(initial=0))), dtype=np.int64)
    padded[user[top], rank[top]] = item[top]
    return lengths, padded


def interaction_vectors(log: _Log) -> sp.csr_matrix:
    """L2-normalised binary item x user vectors of the history, row = ``item_idx`` (items
    without history get empty rows): their dot products are collaborative cosines."""
    m = sp.csr_matrix(
        (np.ones(len(log.pair_item)), (log.pair_item, log.pair_user)),
        shape=(log.n_items, log.n_users),
        dtype=np.float64,
    )
    counts = np.asarray(m.sum(axis=1)).ravel()
    inverse = np.zeros(len(counts))
    inverse[counts > 0] = 1.0 / np.sqrt(counts[counts > 0])
    return sp.csr_matrix(sp.diags(inverse) @ m)


def _recent_similarity(
    pu: np.ndarray,
    pi: np.ndarray,
    log: _Log,
    vectors: sp.csr_matrix,
    k: int,
    prefixes: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """Cosines between each pair's item and the user's ``k`` most recent history items.

    ``vectors`` are L2-normalised item rows (row = ``item_idx``); items with an empty row
    are undescribed. Returns ``max`` and ``mean`` over the (up to) ``k`` items and, for each
    ``j`` of ``prefixes``, ``mean<j>``: the mean over the ``j`` most recent of them (NaN
    where the item or the user's history is undescribed).

    Item-item similarities are computed in blocks of candidate items (sparse product, then
    dense), and each pair gathers its row's entries at the user's (padded) history items:
    one item-item block per chunk of the catalogue and dense gathers, no per-pair loop.
    """
    n = len(pu)
    names = ["max", "mean", *(f"mean{j}" for j in prefixes)]
    out = {name: np.full(n, np.nan) for name in names}
    if n == 0 or vectors.shape[1] == 0 or len(log.pair_user) == 0:
        return out
    described = np.diff(vectors.indptr) > 0
    hist_len, hist = _recent_items(log, described, max([k, *prefixes]))
    cand = np.flatnonzero(described[pi] & (hist_len[pu] > 0))
    if len(cand) == 0:
        return out
    vectors_t = sp.csr_matrix(vectors.T)
    cand = cand[np.argsort(pi[cand], kind="stable")]
    cand_items = pi[cand]
    distinct = np.unique(cand_items)
    n_items = vectors.shape[0]
    block = max(1, _SIM_BLOCK_ENTRIES // n_items)
    slots = np.arange(hist.shape[1])
    # pairs gathered at once: bounds the (pairs x history) temporaries like the block above
    step = max(1, _SIM_BLOCK_ENTRIES // max(hist.shape[1], 1))
    for b in range(0, len(distinct), block):
        block_items = distinct[b : b + block]
        lo, hi = np.searchsorted(cand_items, [block_items[0], block_items[-1] + 1])
        sims = (vectors[block_items] @ vectors_t).toarray().ravel()
        for r in range(lo, hi, step):
            rows = cand[r : min(r + step, hi)]
            local = np.searchsorted(block_items, pi[rows])
            lengths = hist_len[pu[rows]]
            values = sims[(local * n_items)[:, None] + hist[pu[rows]]]
            used = np.minimum(lengths, k)
            inside = slots < used[:, None]
            out["max"][rows] = np.where(inside, values, -np.inf).max(axis=1)
            out["mean"][rows] = np.where(inside, values, 0.0).sum(axis=1) / used
            for j in prefixes:
                used_j = np.minimum(lengths, j)
                inside_j = slots < used_j[:, None]
                out[f"mean{j}"][rows] = np.where(inside_j, values, 0.0).sum(axis=1) / used_j
    return out
