"""Sequential item-kNN: items that users take up close together in time, scored from the
user's most recent items.

Each user's history is read as a sequence: distinct items ordered by their first event (ties
by item index, so the order does not depend on row order). Two items ``gap`` places apart in
one user's sequence (``1 <= gap <= window``) add ``gap_decay ** (gap - 1)`` to their
co-occurrence ``C[a, b]``; with ``direction: forward`` only the later item is credited
(``a`` then ``b``), with ``both`` the pair counts both ways. The similarity is the cosine-like

    sim(a, b) = C[a, b] / (sqrt(d_a * d_b) + shrinkage),   d_a = sum_b C[a, b]

and each target item keeps its ``neighbours`` most similar source items. A user is scored
from the last ``history`` items of their sequence, the most recent weighted 1, the one
before ``recency_decay``, then ``recency_decay ** 2`` and so on:

    score(u, i) = sum_r recency_decay ** r * sim(item_{last - r}(u), i).

Where item-kNN and EASE see a history as a set, this model sees its order: what a user took
up last says most about what comes next (a session, a series, a season's releases), and it
is cheap: sparse products, one pass per gap, no loop over pairs.

Users with no history and items absent from the history have no score (NaN).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from stages.core.models.base import ModelConfig, Recommender, TrainData


class SeqKNNConfig(ModelConfig):
    """Settings of :class:`SeqKNN` (``candidates.seqknn``)."""

    window: int = Field(
        10, ge=1, description="items at most this many places apart in a user's sequence co-occur"
    )
    gap_decay: float = Field(
        0.8,
        gt=0,
        le=1,
        description="a pair gap places apart adds gap_decay ** (gap - 1) to the co-occurrence",
    )
    direction: Literal["both", "forward"] = Field(
        "both",
        description="both: a pair counts for either order; forward: only earlier -> later",
    )
    shrinkage: float = Field(
        1.0, ge=0, description="added to the similarity denominator (damps rare items)"
    )
    neighbours: int | None = Field(
        200, ge=0, description="source items kept per target item; 0 or null keeps all"
    )
    history: int = Field(
        20, ge=1, description="the user's most recent items the score is built from"
    )
    recency_decay: float = Field(
        0.7,
        gt=0,
        le=1,
        description="weight of the r-th most recent history item is recency_decay ** r",
    )


def sequences(data: TrainData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every user's distinct items in order of first event: (user, item, position from the
    end) arrays sorted by user then position in the sequence; position 0 is the latest."""
    df = data.interactions
    first = (
        df.groupby(["user_idx", "item_idx"], sort=False, observed=True)["timestamp"]
        .min()
        .reset_index()
    )
    user = first["user_idx"].to_numpy(np.int64)
    item = first["item_idx"].to_numpy(np.int64)
    ts = first["timestamp"].to_numpy(np.int64)
    order = np.lexsort((item, ts, user))
    user, item = user[order], item[order]
    counts = np.bincount(user, minlength=data.n_users)
    ends = np.cumsum(counts)
    from_end = ends[user] - 1 - np.arange(len(user))
    return user, item, from_end


class SeqKNN(Recommender):
    """Neighbourhood model over co-occurrence within a short window of users' sequences."""

    name = "seqknn"
    config_class = SeqKNNConfig
    config: SeqKNNConfig

    def _fit(self, data: TrainData) -> None:
        cfg = self.config
        n = data.n_items
        user, item, from_end = sequences(data)
        rows, cols, vals = [], [], []
        for gap in range(1, cfg.window + 1):
            same = user[gap:] == user[:-gap]
            a, b = item[:-gap][same], item[gap:][same]
            w = np.full(len(a), cfg.gap_decay ** (gap - 1), dtype=np.float64)
            rows.append(a)
            cols.append(b)
            vals.append(w)
            if cfg.direction == "both":
                rows.append(b)
                cols.append(a)
                vals.append(w)
        co = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
        )
        co.sum_duplicates()
        self.similarity = self._similarity(co)
        recent = from_end < cfg.history
        weights = cfg.recency_decay ** from_end[recent].astype(np.float64)
        self._profile = sp.csr_matrix(
            (weights.astype(np.float32), (user[recent], item[recent])),
            shape=(data.n_users, n),
            dtype=np.float32,
        )
        self._known_items = np.bincount(item, minlength=n) > 0
        self._known_users = np.bincount(user, minlength=data.n_users) > 0

    def _similarity(self, co: sp.csr_matrix) -> sp.csr_matrix:
        """Source x target similarities, each target column pruned to its neighbours."""
        cfg = self.config
        n = co.shape[0]
        out_deg = np.asarray(co.sum(axis=1)).ravel()
        in_deg = np.asarray(co.sum(axis=0)).ravel()
        c = co.tocoo()
        sim = c.data / (np.sqrt(out_deg[c.row] * in_deg[c.col]) + cfg.shrinkage)
        k = cfg.neighbours if cfg.neighbours else n
        keep = top_k_per_group(c.col, sim, c.row, k)
        return sp.csr_matrix(
            (sim[keep].astype(np.float32), (c.row[keep], c.col[keep])),
            shape=(n, n),
            dtype=np.float32,
        )

    def score_users(self, users: np.ndarray) -> np.ndarray:
        scores = (self._profile[users] @ self.similarity).toarray().astype(np.float32, copy=False)
        scores[:, ~self._known_items] = np.nan
        scores[~self._known_users[users]] = np.nan
        return scores


def top_k_per_group(group: np.ndarray, value: np.ndarray, tie: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` largest positive ``value`` entries within each ``group``; ties go to
    the lower ``tie`` key, so the result does not depend on the entries' order."""
    order = np.lexsort((tie, -value, group))
    g = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(g)) + 1] if len(g) else np.zeros(0, np.int64)
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    rank = np.arange(len(g)) - run_start
    keep = np.zeros(len(group), dtype=bool)
    keep[order] = (rank < k) & (value[order] > 0)
    return keep
