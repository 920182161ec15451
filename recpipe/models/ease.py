"""EASE: the closed-form linear item-item autoencoder of Steck (2019).

"Embarrassingly Shallow Autoencoders for Sparse Data" (WWW 2019): with ``X`` the user x item
matrix, ``G = X^T X + l2 * I``, ``P = G^-1``, the item-item weights are ``B = -P / diag(P)``
(column-wise) with ``diag(B) = 0``, and ``scores = X B``.

The item axis is compressed to the items that occur in the history (the others could only
get zero weights) and scattered back; items never seen get NaN, as do users with no history.
``G``, its inverse and ``B`` share one dense float32 ``m x m`` matrix (``m`` = items with
interactions; 4 bytes per entry, about 1.5 GiB at 20,000 items), overwritten in place:
the Gram matrix built in blocks, then LAPACK's single-precision Cholesky factorisation and
inverse (``spotrf``/``spotri``), then the column scaling. Past ``max_items`` items, EASE is
fitted on the ``max_items`` most active ones (most distinct users; ties to the lower index):
the others get no EASE score and are left to the other candidate models, which is where a
catalogue's long tail is better served anyway. A history given at request time
(``score_history``) goes through the same ``TrainData.matrix`` and column selection as the
fit's users, so items outside the fitted set are ignored in it too.

The factorisation and inverse run on one thread: OpenBLAS splits ``spotrf``/``spotri``
differently for each thread count, so their floats (and EASE's lists) would change with
the number of cores of the machine. One thread costs about 0.4 s at 2,000 items and grows
with the cube of the items (a few minutes at the 25,000 of ``max_items``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from recpipe.log import get_logger
from recpipe.models.base import (
    BLOCK_THREADS,
    ModelConfig,
    Recommender,
    TrainData,
    concat_recs,
    in_threads,
    most_counted,
    top_n,
)

log = get_logger("ease")


class EASEConfig(ModelConfig):
    """Settings of :class:`EASE` (``candidates.ease``)."""

    l2: float = Field(
        500.0,
        gt=0,
        description="L2 penalty lambda added to the diagonal of the Gram matrix; larger "
        "values smooth the item-item weights (a few hundred suits ~100k events, more for "
        "denser data)",
    )
    value: Literal["binary", "weight"] = Field(
        "binary",
        description="matrix entries: binary (1 per user-item pair) or weight (summed event "
        "weights)",
    )
    max_items: int = Field(
        25_000,
        ge=1,
        description="fit on at most this many items, the most active ones (most distinct "
        "users); the others get no EASE score. The dense item x item matrix needs 4 * "
        "min(items, max_items)**2 bytes (2.3 GiB at 25,000)",
    )


class EASE(Recommender):
    """Closed-form item-item regression with a zero diagonal."""

    name = "ease"
    config_class = EASEConfig
    config: EASEConfig

    supports_history = True
    holds_scores = True
    block_threads = BLOCK_THREADS

    def _fit(self, data: TrainData) -> None:
        cfg = self.config
        x = data.matrix(cfg.value).tocsc()
        active = most_active_items(x, cfg.max_items)
        self._active = active
        xa = active_columns(x, active)
        self._x = xa
        self._known_users = np.diff(xa.indptr) > 0
        self.weights = ease_weights(xa, cfg.l2)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self._scores(self._x[users], self._known_users[users])

    def score_history(self, history: pd.DataFrame, now: int) -> np.ndarray:
        x = self._history_data(history).matrix(self.config.value).tocsc()
        xa = active_columns(x, self._active)
        return self._scores(xa, np.diff(xa.indptr) > 0)[0]

    # Only the active items have a score: a block holds those columns alone
    # (``users x active``), ranked alone (ascending, so ties still go to the lower item index)
    # and mapped back to the catalogue.
    def _block_scores(self, users: np.ndarray) -> np.ndarray:
        if len(self._active) == 0:
            return np.zeros((len(users), 0), dtype=np.float32)
        return self._active_scores(self._x[users], self._known_users[users])

    def _top_n_of(self, users: np.ndarray, scores: np.ndarray, n: int) -> pd.DataFrame:
        if len(self._active) == 0:
            return concat_recs([])
        recs = top_n(users, scores, self.seen[users][:, self._active], n)
        recs["item_idx"] = self._active[recs["item_idx"].to_numpy(np.int64)]
        return recs

    def _pairs_of(self, scores: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.full(len(rows), np.nan, dtype=np.float32)  # inactive items: no score
        col = np.searchsorted(self._active, items)  # the active items are ascending
        hit = col < len(self._active)
        hit[hit] = self._active[col[hit]] == items[hit]
        out[hit] = scores[rows[hit], col[hit]]
        return out

    def _scores(self, xa: sp.csr_matrix, known: np.ndarray) -> np.ndarray:
        """Scores of the users whose rows of the matrix on the active items are ``xa``
        (``known``: which of them have a history there)."""
        scores = np.full((xa.shape[0], self.n_items), np.nan, dtype=np.float32)
        if len(self._active) == 0:
            return scores
        scores[:, self._active] = self._active_scores(xa, known)
        return scores

    def _active_scores(self, xa: sp.csr_matrix, known: np.ndarray) -> np.ndarray:
        """:meth:`_scores` on the active items' columns only."""
        block = np.asarray(xa @ self.weights, dtype=np.float32)
        block[~known] = np.nan
        return block


def active_columns(x: sp.csc_matrix, active: np.ndarray) -> sp.csr_matrix:
    """The user x item matrix ``x`` on the items EASE is fitted on, as CSR."""
    return x[:, active].tocsr()


def dense_bytes(m: int) -> int:
    """Peak bytes of the dense matrix of a fit on ``m`` items (one float32 ``m x m``)."""
    return 4 * m * m


def most_active_items(x: sp.csc_matrix, max_items: int) -> np.ndarray:
    """The items (columns of ``x``) EASE is fitted on, ascending: every item with an
    interaction, or the ``max_items`` with the most users (ties: lower index) when there are
    more, with a log line that says what was left out and what to set."""
    users = np.diff(x.indptr)
    active, keep = most_counted(users, max_items)
    if len(keep) == len(active):
        return active
    left = len(active) - max_items
    log.warning(
        "ease: %d items have interactions; fitting on the %d most active "
        "(candidates.ease.max_items), the other %d (%.1f%% of the user-item pairs) get no EASE "
        "score. "
        "Raise max_items if %.1f GiB per %d items fits in memory.",
        len(active),
        max_items,
        left,
        100.0 * (1.0 - users[keep].sum() / max(users.sum(), 1)),
        dense_bytes(len(active)) / 2**30,
        len(active),
    )
    return keep


def ease_weights(x: sp.spmatrix | sp.sparray | np.ndarray, l2: float) -> np.ndarray:
    """``B`` of EASE for the user x item matrix ``x`` (sparse or dense), as float32.

    The Gram matrix is symmetric positive definite (``l2 > 0``), so it is inverted through its
    Cholesky factor: half the work of a general inverse. Everything happens in one float32
    matrix, in place (``numpy.linalg.inv`` would compute in float64 and copy).
    """
    g = gram_matrix(x)
    m = g.shape[0]
    if m == 0:
        return np.zeros((0, 0), dtype=np.float32)
    g[np.diag_indices(m)] += np.float32(l2)
    # g is symmetric, so its transpose is the same matrix in Fortran order, which LAPACK can
    # overwrite in place instead of copying.
    with threadpool_limits(1, "blas"):  # the same floats on any number of cores
        c, info = scipy.linalg.lapack.spotrf(g.T, lower=False, overwrite_a=True)
        if info != 0:
            # float32 lost positive definiteness (ill-conditioned Gram matrix, small l2):
            # solve this one in float64, at three times the memory
            log.warning("ease: float32 Cholesky failed (info=%d); solving in float64", info)
            return _ease_weights_float64(x, l2)
        p, info = scipy.linalg.lapack.spotri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: inversion failed (info={info})")
    _mirror_upper(p)  # LAPACK filled the upper triangle only
    b = p.T  # the same symmetric matrix, in C order again for the row blocks below
    scale = (-1.0 / np.diag(b)).astype(np.float32)
    # Column j of B is -P[:, j] / P[j, j], scaled a block of rows at a time, in place.
    step = 2048
    for start in range(0, m, step):
        b[start : start + step] *= scale[None, :]
    b[np.diag_indices(m)] = 0.0
    return b


def _ease_weights_float64(x: sp.spmatrix | sp.sparray | np.ndarray, l2: float) -> np.ndarray:
    """:func:`ease_weights` in float64 (the fallback when float32 cannot factorise)."""
    dense = x.toarray() if sp.issparse(x) else np.asarray(x)
    g = dense.astype(np.float64).T @ dense.astype(np.float64)
    g[np.diag_indices(g.shape[0])] += l2
    p = scipy.linalg.cho_solve(scipy.linalg.cho_factor(g), np.eye(g.shape[0]))
    b = (p / -np.diag(p)[None, :]).astype(np.float32)
    b[np.diag_indices(g.shape[0])] = 0.0
    return b


def gram_matrix(
    x: sp.spmatrix | sp.sparray | np.ndarray, step: int = 2048, threads: int = BLOCK_THREADS
) -> np.ndarray:
    """Dense float32 ``x.T @ x``, built a block of rows at a time (``threads`` blocks side by
    side; the matrix does not depend on it).

    The sparse product of the whole matrix is nearly dense for real data and, with its
    indices, several times the size of the dense result; blocks bound that temporary. Each
    block is summed in float64 and stored in float32 (counts are exact up to 2**24).
    """
    if not sp.issparse(x):
        x = np.asarray(x, dtype=np.float64)
        return (x.T @ x).astype(np.float32)
    xc = sp.csc_matrix(x, dtype=np.float64)
    xt = sp.csr_matrix(xc.T)
    xr = xc.tocsr()  # the product's right side as CSR once (scipy converts a CSC one per call)
    m = xc.shape[1]
    g = np.empty((m, m), dtype=np.float32)

    def rows(start: int) -> None:
        stop = min(start + step, m)
        g[start:stop] = (xt[start:stop] @ xr).toarray()

    # blocks side by side (sparse products release the GIL), each writing its own rows
    in_threads(rows, range(0, m, step), threads)
    return g


def _mirror_upper(a: np.ndarray, step: int = 2048) -> None:
    """Copy the upper triangle of square ``a`` onto its lower triangle, in place."""
    m = a.shape[0]
    for start in range(0, m, step):
        stop = min(start + step, m)
        a[start:stop, :start] = a[:start, start:stop].T
        d = a[start:stop, start:stop]
        d[:] = np.triu(d) + np.triu(d, 1).T
