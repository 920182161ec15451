"""EASE: the closed-form linear item-item autoencoder of Steck (2019).

"Embarrassingly Shallow Autoencoders for Sparse Data" (WWW 2019): with ``X`` the user x item
matrix, ``G = X^T X + l2 * I``, ``P = G^-1``, the item-item weights are ``B = -P / diag(P)``
(column-wise) with ``diag(B) = 0``, and ``scores = X B``.

The item axis is compressed to the items that occur in the history (the others could only
get zero weights) and scattered back; items never seen get NaN, as do users with no history.
``G`` and its inverse are dense ``m x m`` (``m`` = items with interactions), so ``max_items``
guards against a size that would not fit in memory.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from pydantic import Field

from recpipe.models.base import ModelConfig, Recommender, TrainData


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
        description="refuse to fit when more items than this have interactions: the dense "
        "item x item matrices need about 12 * items**2 bytes",
    )


class EASE(Recommender):
    """Closed-form item-item regression with a zero diagonal."""

    name = "ease"
    config_class = EASEConfig
    config: EASEConfig

    def _fit(self, data: TrainData) -> None:
        cfg = self.config
        x = data.matrix(cfg.value).tocsc()
        active = np.flatnonzero(np.diff(x.indptr) > 0)
        m = len(active)
        if m > cfg.max_items:
            gib = dense_bytes(m) / 2**30
            raise ValueError(
                f"ease: {m} items have interactions, more than candidates.ease.max_items="
                f"{cfg.max_items}; the dense item x item matrices would need about "
                f"{gib:.1f} GiB. Raise candidates.ease.max_items if the memory is there, or "
                "filter rare items (split.kcore.item)."
            )
        self._active = active
        xa = x[:, active].tocsr()
        self._x = xa
        self._known_users = np.diff(xa.indptr) > 0
        self.weights = ease_weights(xa, cfg.l2)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        scores = np.full((len(users), self.n_items), np.nan, dtype=np.float32)
        if len(self._active) == 0:
            return scores
        block = np.asarray(self._x[users] @ self.weights, dtype=np.float32)
        block[~self._known_users[users]] = np.nan
        scores[:, self._active] = block
        return scores


def dense_bytes(m: int) -> int:
    """Peak bytes of the dense matrices of a fit on ``m`` items (float64 G/P + float32 B)."""
    return 12 * m * m


def ease_weights(x: sp.spmatrix | sp.sparray | np.ndarray, l2: float) -> np.ndarray:
    """``B`` of EASE for the user x item matrix ``x`` (sparse or dense), as float32.

    The Gram matrix is symmetric positive definite (``l2 > 0``), so it is inverted through its
    Cholesky factor, in place: half the work of a general inverse and no second copy.
    """
    g = gram_matrix(x)
    m = g.shape[0]
    if m == 0:
        return np.zeros((0, 0), dtype=np.float32)
    g[np.diag_indices(m)] += l2
    # g is symmetric, so its transpose is the same matrix in Fortran order, which LAPACK can
    # overwrite in place instead of copying.
    c, info = scipy.linalg.lapack.dpotrf(g.T, lower=False, overwrite_a=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: Cholesky factorisation failed (info={info})")
    p, info = scipy.linalg.lapack.dpotri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"ease: inversion failed (info={info})")
    _mirror_upper(p)
    diag = np.diag(p).copy()
    b = np.empty((m, m), dtype=np.float32)
    # Column j of B is -P[:, j] / P[j, j]; converted block-wise so no extra float64 copy.
    step = 2048
    for start in range(0, m, step):
        stop = min(start + step, m)
        b[start:stop] = p[start:stop] / -diag[None, :]
    b[np.diag_indices(m)] = 0.0
    return b


def gram_matrix(x: sp.spmatrix | sp.sparray | np.ndarray, step: int = 2048) -> np.ndarray:
    """Dense float64 ``x.T @ x``, built a block of rows at a time.

    The sparse product of the whole matrix is nearly dense for real data and, with its
    indices, several times the size of the dense result; blocks bound that temporary.
    """
    if not sp.issparse(x):
        x = np.asarray(x, dtype=np.float64)
        return x.T @ x
    xc = sp.csc_matrix(x)
    xt = sp.csr_matrix(xc.T)
    m = xc.shape[1]
    g = np.empty((m, m), dtype=np.float64)
    for start in range(0, m, step):
        stop = min(start + step, m)
        g[start:stop] = (xt[start:stop] @ xc).toarray()
    return g


def _mirror_upper(a: np.ndarray, step: int = 2048) -> None:
    """Copy the upper triangle of square ``a`` onto its lower triangle, in place."""
    m = a.shape[0]
    for start in range(0, m, step):
        stop = min(start + step, m)
        a[start:stop, :start] = a[:start, start:stop].T
        d = a[start:stop, start:stop]
        d[:] = np.triu(d) + np.triu(d, 1).T
