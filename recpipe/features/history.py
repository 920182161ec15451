"""A fold's history as flat numpy arrays, seen from the fold's reference time ``now``.

:func:`history_now` gives ``now``; :class:`_Log` holds the events and the distinct
(user, item) pairs every feature kind starts from, and :class:`_UserCategories` the events
per (user, category).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe.features.arrays import _expand_rows, _group_extreme, _group_starts, _reduceat

SECONDS_PER_DAY = 86_400.0


def history_now(history: pd.DataFrame) -> int:
    """The reference time of a fold: its last history timestamp (unix seconds)."""
    if len(history) == 0:
        raise ValueError("history is empty: no reference time")
    return int(history["timestamp"].max())


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
