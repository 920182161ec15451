"""Popularity: the non-personalised baseline and the fallback for users with no history.

An item's popularity is the number of distinct users who interacted with it (or the sum of
its event weights), optionally decayed exponentially with the age of each event so that
recent interest counts more ("trending"). With ``per_category`` the global ranking is tilted
towards the categories a user already consumes.

Items with no interaction in the history have no score (NaN). Every user in range is scored,
including users with no history: they get the global ranking, which is what makes this
model the cold-user fallback. A history given at request time (``score_history``) keeps the
fold's popularities and moves only the category tilt, computed as for the fold's users.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recpipe.models.base import ModelConfig, Recommender, TrainData, top_n_ordered

SECONDS_PER_DAY = 86_400.0


class PopularityConfig(ModelConfig):
    """Settings of :class:`Popularity` (``candidates.popularity``)."""

    count: Literal["users", "weight"] = Field(
        "users",
        description="users: distinct users per item (each user counted once, at their "
        "latest event with the item); weight: sum of the item's event weights",
    )
    half_life_days: float | None = Field(
        None,
        gt=0,
        description="exponential time decay: an event half_life_days older than the fold's "
        "last event counts half; null = no decay (all-time popularity)",
    )
    per_category: bool = Field(
        False,
        description="tilt towards the user's categories: score = pop * (1 + category_beta * "
        "share), share = mean over the item's categories of the fraction of the user's "
        "distinct history items carrying that category (0 for users with no history and "
        "items with no category)",
    )
    category_beta: float = Field(
        1.0,
        ge=0,
        description="strength of the per_category tilt (ignored unless per_category): a "
        "fully matching item scores up to (1 + category_beta) times its popularity",
    )


def time_decay(timestamps: np.ndarray, now: int, half_life_days: float | None) -> np.ndarray:
    """Weight ``0.5 ** (age / half_life)`` of events at ``timestamps`` seen from ``now``."""
    if half_life_days is None:
        return np.ones(len(timestamps), dtype=np.float64)
    age = np.maximum(now - np.asarray(timestamps, dtype=np.float64), 0.0)
    return np.exp2(-age / (half_life_days * SECONDS_PER_DAY))


def item_categories(items: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    """Binary item x category CSR matrix from the ``categories`` lists (row ``i`` = item ``i``).

    Missing or empty lists give an empty row.
    """
    if "categories" not in items.columns or n_items == 0:
        return sp.csr_matrix((n_items, 0), dtype=np.float32)
    cats = items["categories"].reset_index(drop=True)
    # A bare string would explode into itself rather than into characters; treat it as one
    # category so sloppy inputs still mean what they say.
    cats = cats.map(lambda c: [c] if isinstance(c, str) else c)
    flat = cats.explode().dropna()
    flat = flat[flat.astype(str).str.len() > 0].astype(str)
    codes, names = pd.factorize(flat, sort=True)
    m = sp.csr_matrix(
        (np.ones(len(codes), dtype=np.float32), (flat.index.to_numpy(), codes)),
        shape=(n_items, len(names)),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


class Popularity(Recommender):
    """Global (optionally recent, optionally category-tilted) item popularity."""

    name = "popularity"
    config_class = PopularityConfig
    config: PopularityConfig
    supports_history = True
    # rebuilt from _item_cats when a history is scored; absent from saved models
    transient = ("_cats",)
    _cats: sp.csr_matrix | None = None

    def _fit(self, data: TrainData) -> None:
        cfg = self.config
        inter = data.interactions
        self._pop = np.full(data.n_items, np.nan, dtype=np.float32)
        self._share: sp.csr_matrix | None = None
        self._item_cats: sp.csr_matrix | None = None
        if len(inter) == 0:
            return
        if cfg.count == "users":
            # One vote per (user, item): the latest event carries the decay, so a user's
            # renewed interest in an old favourite counts as recent.
            last = inter.groupby(["user_idx", "item_idx"], sort=False)["timestamp"].max()
            items = last.index.get_level_values("item_idx").to_numpy()
            votes = time_decay(last.to_numpy(), data.now, cfg.half_life_days)
        else:
            items = inter["item_idx"].to_numpy()
            decay = time_decay(inter["timestamp"].to_numpy(), data.now, cfg.half_life_days)
            votes = inter["weight"].to_numpy(np.float64) * decay
        pop = np.bincount(items, weights=votes, minlength=data.n_items)
        touched = np.bincount(items, minlength=data.n_items) > 0
        self._pop[touched] = pop[touched]
        if cfg.per_category:
            self._fit_categories(data)

    def _fit_categories(self, data: TrainData) -> None:
        cats = item_categories(data.items, data.n_items)
        if cats.shape[1] == 0:
            return
        self._share = category_share(data.seen, cats)
        n_cats = np.asarray(cats.sum(axis=1)).ravel()
        # item x category scaled by 1/#categories, so share @ this.T is a mean over categories
        self._item_cats = sp.csr_matrix(
            sp.diags(1.0 / np.maximum(n_cats, 1.0)).astype(np.float32) @ cats
        )

    def score_users(self, users: np.ndarray) -> np.ndarray:
        share = None if self._share is None else self._share[users]
        return self._scores(share, len(users))

    def score_history(self, history: pd.DataFrame, now: int) -> np.ndarray:
        # the popularities are the fold's; a history only moves the category tilt
        data = self._history_data(history)
        share = None
        if self._share is not None and self._item_cats is not None:
            share = category_share(data.seen, self._categories())
        return self._scores(share, 1)[0]

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if self._tilted():
            return super().score(users, items)
        # Without the tilt a pair's score is its item's popularity.
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        out = np.full(len(users), np.nan, dtype=np.float32)
        ok = (users >= 0) & (users < self.n_users) & (items >= 0) & (items < self.n_items)
        out[ok] = self._pop[items[ok]]
        return out

    def _recommend_block(self, users: np.ndarray, n: int) -> pd.DataFrame:
        if self._tilted():
            return super()._recommend_block(users, n)
        # One order for everyone: walk it per user, skipping what the user has seen.
        scored = np.flatnonzero(~np.isnan(self._pop))
        order = scored[np.lexsort((scored, -self._pop[scored]))]
        return top_n_ordered(users, order, self._pop[order], self.seen[users], n)

    def _tilted(self) -> bool:
        return self._share is not None and self._item_cats is not None

    def _scores(self, share: sp.csr_matrix | None, n_users: int) -> np.ndarray:
        """Scores of ``n_users`` users whose category shares are the rows of ``share``."""
        scores = np.tile(self._pop, (n_users, 1))
        if share is not None and self._item_cats is not None:
            tilt = (share @ self._item_cats.T).toarray()
            scores *= 1.0 + self.config.category_beta * tilt.astype(np.float32)
        return scores

    def _categories(self) -> sp.csr_matrix:
        """The fit's binary item x category matrix, rebuilt from ``_item_cats`` (the same
        entries; indices sorted, as :func:`item_categories` leaves them)."""
        if self._cats is None:
            cats = sp.csr_matrix(self._item_cats, dtype=np.float32, copy=True)
            cats.sort_indices()
            cats.data[:] = 1.0
            self._cats = cats
        return self._cats


def category_share(seen: sp.csr_matrix, cats: sp.csr_matrix) -> sp.csr_matrix:
    """User x category: the fraction of each user's distinct history items (rows of the
    binary ``seen``) that carry each category (``cats``, binary item x category)."""
    n_hist = np.asarray(seen.sum(axis=1)).ravel()
    share = sp.diags(1.0 / np.maximum(n_hist, 1.0)).astype(np.float32) @ (seen @ cats)
    return sp.csr_matrix(share)
