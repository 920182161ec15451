"""ALS: implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) through implicit.

Every (user, item) cell is a preference ``p = 1`` if the user interacted with the item, else
``0``, with confidence ``c = 1 + alpha * value`` for observed cells and ``1`` for the rest;
ALS minimises ``sum c (p - x_u . y_i)^2 + regularization * (|x_u|^2 + |y_i|^2)``, and
``score(u, i) = x_u . y_i``. ``value`` is the matrix entry: 1 per pair (binary), summed
event weights, or ratings (then every rated pair counts as a positive, more strongly the
higher the rating); values are expected to be non-negative.

implicit multiplies the matrix it is given by its own ``alpha`` and takes the result as the
confidence itself, so the matrix passed is already ``1 + alpha * value`` and implicit's alpha
stays 1.

Reproducibility: the factors start from ``random_state`` (the seed), BLAS is held to one
thread during the fit (implicit's advice: its own threads already parallelise over users),
and each user's (item's) solve reads only the other side's factors, so implicit's thread
count changes speed, not results (checked in the tests).

implicit gives every user and item a vector, also those without any interaction (they are
just noise or zero); such users and items get no score (NaN). Top-n retrieval goes through
faiss (:mod:`recpipe.models.retrieval`), not implicit's ``recommend``.

A history given at request time (``score_history``) is folded in: its confidence row is built
as for the fit's users, and the user's factor solved from the item factors exactly as one
ALS user step does (implicit's ``recalculate_user``: ``(Y^T Y + regularization I + Y^T (C_u
- I) Y) x_u = Y^T C_u p_u``, an exact solve, in float64). For a user of the fit this is close
to the trained factor, not equal: training ends on an item step and, with ``use_cg``, solves
each user step approximately.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import ThreadpoolController, threadpool_limits

from recpipe import engine
from recpipe.models.base import ModelConfig, TrainData
from recpipe.models.retrieval import FactorIndex, FactorRecommender, RetrievalConfig


class ALSConfig(ModelConfig):
    """Settings of :class:`ALS` (``candidates.als``).

    Defaults were tuned on ML-100k (random 75/25 split per user: NDCG@10 about 0.46, against
    0.43 with implicit's own regularisation of 0.01). The penalty is not scaled by the
    number of events, so denser or larger data usually wants a larger ``regularization``;
    much larger values (about 20 and up) flatten models fit on very few events.
    """

    factors: int = Field(32, ge=1, description="latent factors per user and item")
    regularization: float = Field(
        10.0,
        ge=0,
        description="L2 penalty on the factors; scale it with the data (larger for more "
        "events per user and item, or larger confidences)",
    )
    iterations: int = Field(20, ge=1, description="ALS sweeps (users, then items)")
    alpha: float = Field(
        1.0,
        ge=0,
        description="confidence slope: an observed cell has confidence 1 + alpha * value",
    )
    value: Literal["binary", "weight", "rating"] = Field(
        "binary",
        description="matrix entries: binary (1 per pair), weight (summed event weights) or "
        "rating (the pair's latest rating; unrated pairs are left out)",
    )
    use_cg: bool = Field(
        True,
        description="conjugate-gradient solver (fast, approximate) instead of an exact "
        "Cholesky solve per user and item",
    )
    num_threads: int = Field(
        0,
        ge=0,
        description="implicit's training threads (0: every CPU this process may use); one "
        "in a worker process, where OpenMP cannot run more after a fork; results do not "
        "depend on it",
    )
    retrieval: RetrievalConfig = Field(
        default_factory=RetrievalConfig, description="top-n retrieval through faiss"
    )


class ALS(FactorRecommender):
    """Weighted matrix factorisation for implicit feedback, retrieved with faiss."""

    name = "als"
    config_class = ALSConfig
    config: ALSConfig
    supports_history = True
    fit_imports = ("implicit.cpu.als",)
    # Y^T Y of the item factors in float64, built on the first fold-in; not saved
    transient = ("_gram",)
    _gram: np.ndarray | None = None

    def _fit(self, data: TrainData) -> None:
        cfg = self.config
        x = self._values(data)
        self.user_factors, self.item_factors = fit_implicit(
            confidence(x, cfg.alpha), cfg, self.seed
        )
        self.index = FactorIndex(
            self.user_factors,
            self.item_factors,
            known_users=np.diff(x.indptr) > 0,
            known_items=np.bincount(x.indices, minlength=x.shape[1]) > 0,
            config=cfg.retrieval,
            seed=self.seed,
        )

    def _values(self, data: TrainData) -> sp.csr_matrix:
        """The user x item matrix of ``value`` entries the confidences are made of."""
        x = data.matrix(self.config.value)
        x.eliminate_zeros()
        return x

    def fold_in(self, history: pd.DataFrame) -> np.ndarray | None:
        """The factor (float32, ``factors``) of a user whose history is ``history``, solved
        against the fitted item factors as an ALS user step; None when the history holds
        no item the model knows (the batch path's users without interactions)."""
        cfg = self.config
        self._require_fit()
        data = self._history_data(history, self.index.known_items)
        conf = confidence(self._values(data), cfg.alpha)
        if conf.nnz == 0:
            return None
        if self._gram is None:
            with one_blas_thread():  # the same floats on any number of cores
                y = self.item_factors.astype(np.float64)
                self._gram = y.T @ y
        return user_step(conf, self.item_factors, self._gram, cfg.regularization)

    def score_history(self, history: pd.DataFrame, now: int) -> np.ndarray:
        factor = self.fold_in(history)
        if factor is None:
            return np.full(self.n_items, np.nan, dtype=np.float32)
        return self.index.score_vectors(factor[None, :], np.zeros(1, dtype=np.float32))[0]


_CONTROLLER: list = []


def one_blas_thread() -> Any:
    """BLAS on one thread for the block: a controller found once per process (finding the
    loaded libraries costs milliseconds, too much for every request of the service)."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def user_step(
    conf: sp.csr_matrix, item_factors: np.ndarray, gram: np.ndarray, regularization: float
) -> np.ndarray:
    """One user's factor from the confidence row ``conf`` (1 x items): the solution of
    ``(Y^T Y + regularization I + sum_i (c_i - 1) y_i y_i^T) x = sum_i c_i y_i`` over the
    stored cells, as implicit's least-squares user step (``recalculate_user``) solves it.
    ``gram`` is ``Y^T Y`` in float64. A negative confidence, as in implicit, means a
    preference of 0 with confidence ``|c|``."""
    c = conf.data.astype(np.float64)
    y = item_factors[conf.indices].astype(np.float64)
    with one_blas_thread():  # the same floats on any number of cores
        a = gram + regularization * np.eye(gram.shape[0]) + (y.T * (np.abs(c) - 1.0)) @ y
        b = y.T @ np.where(c > 0, c, 0.0)
        return np.linalg.solve(a, b).astype(np.float32)


def confidence(x: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """``1 + alpha * value`` on the stored (observed) cells of ``x``, float32."""
    c = x.astype(np.float32, copy=True)
    c.data = (1.0 + alpha * c.data).astype(np.float32)
    return c


def fit_implicit(conf: sp.csr_matrix, cfg: ALSConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors (float32) of implicit's ALS on the confidence matrix ``conf``."""
    # Imported here: a fitted model keeps plain arrays, so loading one does not need implicit.
    from implicit.cpu.als import AlternatingLeastSquares

    # implicit parallelises over users itself; multithreaded BLAS on top only oversubscribes
    # (implicit checks this when the model is created, so the limit covers construction).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=cfg.factors,
            regularization=cfg.regularization,
            alpha=1.0,  # conf already holds the confidences
            iterations=cfg.iterations,
            use_cg=cfg.use_cg,
            num_threads=engine.omp_threads(cfg.num_threads or engine.threads()),
            random_state=seed,
        )
        model.fit(conf, show_progress=False)
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )
