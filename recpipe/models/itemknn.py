"""Item-kNN: item-item cosine similarity on the user x item matrix.

``sim(i, j) = (x_i . x_j) / (|x_i| |x_j| + shrinkage)`` where ``x_i`` is item ``i``'s column
of the user x item matrix. Each target item ``i`` keeps only its ``neighbours`` most similar
items, ``N(i)``, and ``score(u, i) = sum_{j in history(u) & N(i)} R[u, j] * sim(j, i)``: in
matrix form ``R @ S`` with ``S[j, i] = sim(j, i)`` for ``j in N(i)``, else 0, so each column
of ``S`` holds one target's neighbourhood. (Pruning per target rather than per source item
ranks better: on ML-100k, NDCG@10 0.43 against 0.37 at 100-200 neighbours.)

The similarity is computed from sparse products ``X[:, block].T @ X`` one block of items at
a time (``block_threads`` blocks side by side), so peak memory is a few dense ``block x
n_items`` arrays, not ``n_items**2``.

Users with no history and items absent from the history have no score (NaN). A history
given at request time (``score_history``) becomes the user's row of the matrix through the
fit's own ``TrainData.matrix``, items the fit never saw left out.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recpipe.models.base import (
    BLOCK_THREADS,
    ModelConfig,
    Recommender,
    SparseScores,
    TrainData,
    in_threads,
)


class ItemKNNConfig(ModelConfig):
    """Settings of :class:`ItemKNN` (``candidates.itemknn``)."""

    value: Literal["binary", "weight"] = Field(
        "binary",
        description="matrix entries used for similarity and scoring: binary (1 per "
        "user-item pair) or weight (summed event weights)",
    )
    neighbours: int | None = Field(
        200,
        ge=0,
        description="neighbourhood size: each item is scored only from its this many most "
        "similar items (the k of kNN); 0 or null keeps them all",
    )
    shrinkage: float = Field(
        10.0,
        ge=0,
        description="added to the cosine denominator, damping similarities that rest on "
        "few common users: dot / (norm_i * norm_j + shrinkage)",
    )


class ItemKNN(Recommender):
    """Neighbourhood model over item-item cosine similarities."""

    name = "itemknn"
    config_class = ItemKNNConfig
    config: ItemKNNConfig
    #: items per dense block while building the similarity matrix
    sim_block_size: int = 1024

    supports_history = True
    block_threads = BLOCK_THREADS
    holds_scores = True

    def _fit(self, data: TrainData) -> None:
        x = data.matrix(self.config.value)
        self._x = x
        self._known_items = np.asarray((x != 0).sum(axis=0)).ravel() > 0
        self._known_users = np.diff(x.indptr) > 0
        self.similarity = self._similarity(x)

    def _similarity(self, x: sp.csr_matrix) -> sp.csr_matrix:
        """``S``: source x target item similarities, each column pruned to its neighbours."""
        cfg = self.config
        n = x.shape[1]
        xc = x.tocsc()
        norms = np.sqrt(np.asarray(xc.multiply(xc).sum(axis=0)).ravel()).astype(np.float32)
        k = cfg.neighbours if cfg.neighbours else n
        xt = sp.csr_matrix(xc.T)
        # the product's right side as CSR once (scipy would convert a CSC one per block)
        xr = xc.tocsr()

        def block(start: int) -> sp.csr_matrix:
            stop = min(start + self.sim_block_size, n)
            dots = (xt[start:stop] @ xr).toarray()
            denom = norms[start:stop, None] * norms[None, :]
            denom += np.float32(cfg.shrinkage)
            # in place (float32 throughout): a block is n_items wide
            sim = np.divide(dots, denom, out=dots, where=denom > 0)
            sim[denom <= 0] = 0.0
            # An item is not its own neighbour: it would only vouch for itself, and a seen item
            # is never recommended anyway.
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
            return _keep_top_k(sim, k)

        # side by side like recommend's blocks (block_threads), joined in order
        blocks = in_threads(block, range(0, n, self.sim_block_size), self.block_threads)
        if not blocks:
            return sp.csr_matrix((n, n), dtype=np.float32)
        # Rows so far are targets; scoring multiplies histories (sources) from the left.
        return sp.csr_matrix(sp.vstack(blocks, format="csr").T, dtype=np.float32)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.sparse_scores(users).dense()

    def sparse_scores(self, users: np.ndarray) -> SparseScores:
        return self._scores(self._x[users], self._known_users[users])

    def score_history(self, history: pd.DataFrame, now: int) -> np.ndarray:
        self._require_fit()
        x = self._history_data(history, self._known_items).matrix(self.config.value)
        return self._scores(x, np.diff(x.indptr) > 0).dense()[0]

    def _scores(self, x: sp.csr_matrix, known: np.ndarray) -> SparseScores:
        """Scores of the users whose rows of the user x item matrix are ``x`` (``known``:
        which of them have a history)."""
        return SparseScores(x @ self.similarity, known, self._known_items)


def _keep_top_k(sim: np.ndarray, k: int) -> sp.csr_matrix:
    """CSR of the ``k`` largest positive entries of each row of ``sim`` (others dropped).

    Ties at the k-th value go to the lower column index, so the neighbourhoods do not depend
    on the platform's partial-sort order.
    """
    n = sim.shape[1]
    if k >= n:
        keep = sim > 0
    else:
        kth = np.partition(sim, n - k, axis=1)[:, n - k, None]
        above = sim > kth
        tie = sim == kth
        need = k - above.sum(axis=1, keepdims=True)
        keep = above | tie
        # Only rows with more ties than places left need them counted off in column order,
        # and only if the ties are positive (others are dropped below anyway).
        over = np.flatnonzero((kth[:, 0] > 0) & (tie.sum(axis=1) > need[:, 0]))
        if len(over):
            first = np.cumsum(tie[over], axis=1, dtype=np.int32) <= need[over]
            keep[over] = above[over] | (tie[over] & first)
        keep &= sim > 0
    rows, cols = np.nonzero(keep)
    return sp.csr_matrix((sim[rows, cols], (rows, cols)), shape=sim.shape, dtype=np.float32)
