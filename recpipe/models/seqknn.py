"""Sequential item-kNN: items that users take up close together in time, scored from the
user's most recent items.

Each user's history is read as a sequence: distinct items ordered by their first event; items
first seen in the same second are ordered by a hash of (user, item) seeded by the model's
seed (:func:`recpipe.hashing.tie_key`), not by item index, so the order never follows
how item ids sort. Two items ``gap`` places apart in one user's sequence
(``1 <= gap <= window``) add ``gap_decay ** (gap - 1)`` to their co-occurrence ``C[a, b]``;
with ``direction: forward`` only the later item is credited (``a`` then ``b``), with
``both`` the pair counts both ways. The similarity is the cosine-like

    sim(a, b) = C[a, b] / (sqrt(out_a * in_b) + shrinkage),
    out_a = sum_j C[a, j],   in_b = sum_j C[j, b]

(``out = in`` when ``direction: both``)
and each target item keeps its ``neighbours`` most similar source items. A user is scored
from the last ``history`` items of their sequence, the most recent weighted 1, the one
before ``recency_decay``, then ``recency_decay ** 2`` and so on:

    score(u, i) = sum_r recency_decay ** r * sim(item_{last - r}(u), i).

Where item-kNN and EASE see a history as a set, this model sees its order: what a user took
up last says most about what comes next (a session, a series, a season's releases), and it
is cheap: sparse products, one pass per gap, no loop over pairs, and the neighbourhoods are
pruned one block of target items at a time, so memory stays near the size of ``C``.

Users with no history and items absent from the history have no score (NaN). A history
given at request time (``score_history``) is ordered and weighted by the same functions as
the fit's users (:func:`sequences`, :func:`recent_profile`), items the fit never saw left
out; its same-second ties are hashed with its ``user_idx`` when it has one, so a known
user's own rows reproduce that user's batch scores exactly.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recpipe.hashing import tie_key
from recpipe.models.base import (
    BLOCK_THREADS,
    ModelConfig,
    Recommender,
    SparseScores,
    TrainData,
)

#: stored co-occurrences handled at once while pruning (bounds the temporaries)
_PRUNE_BLOCK_ENTRIES = 1 << 22


class SeqKNNConfig(ModelConfig):
    """Settings of :class:`SeqKNN` (``candidates.seqknn``)."""

    window: int = Field(
        10, ge=1, description="items at most this many places apart in a user's sequence co-occur"
    )
    gap_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="a pair gap places apart adds gap_decay ** (gap - 1) to the co-occurrence",
    )
    direction: Literal["both", "forward"] = Field(
        "both",
        description="both: a pair counts for either order; forward: only earlier -> later",
    )
    shrinkage: float = Field(
        10.0, ge=0, description="added to the similarity denominator (damps rare items)"
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


def sequences(
    data: TrainData, seed: int, tie_user: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every user's distinct items in order of first event (ties in time by a seeded hash):
    (user, item, position from the end) arrays sorted by user then position in the sequence;
    position 0 is the latest.

    ``tie_user``: hash every tie as this user's instead of the row's ``user_idx`` (a history
    scored at request time sits in row 0 but breaks ties as its own user did in the fit).
    """
    df = data.interactions
    users = df["user_idx"].to_numpy(np.int64)
    if len(users) and (users == users[0]).all():
        # one user (a history ranked at request time): the groupby below in numpy, the
        # same rows in the same order (items in order of first appearance, earliest time)
        items = df["item_idx"].to_numpy(np.int64)
        by_item = np.argsort(items, kind="stable")
        starts = np.r_[0, np.flatnonzero(np.diff(items[by_item])) + 1]
        appear = np.argsort(by_item[starts], kind="stable")
        item = items[by_item[starts]][appear]
        ts = np.minimum.reduceat(df["timestamp"].to_numpy(np.int64)[by_item], starts)[appear]
        user = np.full(len(item), users[0], dtype=np.int64)
    else:
        first = (
            df.groupby(["user_idx", "item_idx"], sort=False, observed=True)["timestamp"]
            .min()
            .reset_index()
        )
        user = first["user_idx"].to_numpy(np.int64)
        item = first["item_idx"].to_numpy(np.int64)
        ts = first["timestamp"].to_numpy(np.int64)
    salt = user if tie_user is None else np.full_like(user, tie_user)
    order = np.lexsort((tie_key(salt, item, seed), ts, user))
    user, item = user[order], item[order]
    counts = np.bincount(user, minlength=data.n_users)
    ends = np.cumsum(counts)
    from_end = ends[user] - 1 - np.arange(len(user))
    return user, item, from_end


def recent_profile(
    user: np.ndarray,
    item: np.ndarray,
    from_end: np.ndarray,
    shape: tuple[int, int],
    cfg: SeqKNNConfig,
) -> sp.csr_matrix:
    """User x item weights of each user's last ``cfg.history`` items, the latest weighted 1,
    the one before ``cfg.recency_decay`` and so on (arrays as :func:`sequences` gives them)."""
    recent = from_end < cfg.history
    weights = cfg.recency_decay ** from_end[recent].astype(np.float64)
    return sp.csr_matrix(
        (weights.astype(np.float32), (user[recent], item[recent])),
        shape=shape,
        dtype=np.float32,
    )


def history_user(history: pd.DataFrame) -> int:
    """The user a history scored at request time breaks same-second ties as: its
    ``user_idx`` when it holds one non-negative index (a known user's own rows), else 0."""
    if "user_idx" not in history.columns or len(history) == 0:
        return 0
    users = pd.unique(history["user_idx"])
    if len(users) != 1 or pd.isna(users[0]):
        return 0
    u = float(users[0])
    return int(u) if u >= 0 and u.is_integer() else 0


class SeqKNN(Recommender):
    """Neighbourhood model over co-occurrence within a short window of users' sequences."""

    name = "seqknn"
    config_class = SeqKNNConfig
    config: SeqKNNConfig
    supports_history = True
    block_threads = BLOCK_THREADS
    holds_scores = True

    def _fit(self, data: TrainData) -> None:
        cfg = self.config
        n = data.n_items
        user, item, from_end = sequences(data, self.seed)
        # One gap at a time, summed into the matrix: the pairs of all gaps at once would
        # take window x 2 x (distinct pairs) entries.
        co = sp.csr_matrix((n, n), dtype=np.float32)
        item32 = item.astype(np.int32)
        for gap in range(1, cfg.window + 1):
            same = user[gap:] == user[:-gap]
            a, b = item32[:-gap][same], item32[gap:][same]
            w = np.full(len(a), cfg.gap_decay ** (gap - 1), dtype=np.float32)
            co = co + sp.csr_matrix((w, (a, b)), shape=(n, n), dtype=np.float32)
            if cfg.direction == "both":
                co = co + sp.csr_matrix((w, (b, a)), shape=(n, n), dtype=np.float32)
        self.similarity = self._similarity(co)
        self._profile = recent_profile(user, item, from_end, (data.n_users, n), cfg)
        self._known_items = np.bincount(item, minlength=n) > 0
        self._known_users = np.bincount(user, minlength=data.n_users) > 0

    def _similarity(self, co: sp.csr_matrix) -> sp.csr_matrix:
        """Source x target similarities, each target column pruned to its neighbours."""
        cfg = self.config
        n = co.shape[0]
        out_deg = np.asarray(co.sum(axis=1), dtype=np.float64).ravel()
        in_deg = np.asarray(co.sum(axis=0), dtype=np.float64).ravel()
        k = cfg.neighbours if cfg.neighbours else n
        by_target = sp.csc_matrix(co)
        del co
        rows, cols, vals = [], [], []
        start = 0
        while start < n:
            # as many target columns as keep the block near _PRUNE_BLOCK_ENTRIES entries
            limit = by_target.indptr[start] + _PRUNE_BLOCK_ENTRIES
            stop = max(start + 1, int(np.searchsorted(by_target.indptr, limit, "right")) - 1)
            stop = min(stop, n)
            lo, hi = by_target.indptr[start], by_target.indptr[stop]
            src = by_target.indices[lo:hi].astype(np.int64)
            tgt = np.repeat(np.arange(start, stop), np.diff(by_target.indptr[start : stop + 1]))
            sim = by_target.data[lo:hi] / (np.sqrt(out_deg[src] * in_deg[tgt]) + cfg.shrinkage)
            keep = top_k_per_group(tgt, sim, src, k)
            rows.append(src[keep])
            cols.append(tgt[keep])
            vals.append(sim[keep].astype(np.float32))
            start = stop
        if not rows:
            return sp.csr_matrix((n, n), dtype=np.float32)
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n, n),
            dtype=np.float32,
        )

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.sparse_scores(users).dense()

    def sparse_scores(self, users: np.ndarray) -> SparseScores:
        return self._scores(self._profile[users], self._known_users[users])

    def score_history(self, history: pd.DataFrame, now: int) -> np.ndarray:
        self._require_fit()
        data = self._history_data(history, self._known_items)
        user, item, from_end = sequences(data, self.seed, tie_user=history_user(history))
        profile = recent_profile(user, item, from_end, (1, self.n_items), self.config)
        return self._scores(profile, np.array([len(user) > 0])).dense()[0]

    def _scores(self, profile: sp.csr_matrix, known: np.ndarray) -> SparseScores:
        """Scores of the users whose recency-weighted profiles are the rows of ``profile``
        (``known``: which of them have a history)."""
        return SparseScores(profile @ self.similarity, known, self._known_items)


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
