"""The one interface every candidate model implements, and the shared machinery.

A model is fit on one fold's history (:class:`TrainData`) and then

- ``score(users, items)`` gives a score for arbitrary (user, item) pairs, NaN where the
  model cannot score the pair (unknown user, or an item it never saw, unless the model can
  score cold items from their content);
- ``recommend(users, n)`` gives each user's top ``n`` items the user has not interacted
  with in the history, as a frame ``user_idx, item_idx, score, rank`` (rank 1 = best).
  Users the model cannot score get no rows.

Subclasses implement ``fit`` and ``score_users`` (a dense block of scores for some users
over the whole catalogue); ``score`` and ``recommend`` come from here, so exclusion of seen
items, tie-breaking and missing values behave the same in every model. Factor models
override ``recommend`` to retrieve through faiss.

Optionally (``supports_history``) a model scores a history given at request time, without
refitting: ``score_history(history, now)`` and ``recommend_history(history, now, n)``, for a
visitor without an account or a known user who just did something new. A model builds the
user's row of its user-side state from that history with the function its fit uses for
every user, so for a user of the fit the result equals ``score_users`` bit for bit (ALS,
whose user factors are learnt, folds the user in instead).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recpipe.config import Config
from recpipe.dataset import TrainData
from recpipe.persist import ArtifactError, Persistent

RECS_COLUMNS = ["user_idx", "item_idx", "score", "rank"]


class ModelConfig(Config):
    """Settings every candidate model has (its own fields come in its subclass)."""

    enabled: bool = Field(True, description="false: the stage writes no candidates")
    n: int = Field(100, ge=1, description="candidates written per user")


class Recommender(Persistent, ABC):
    """Base class of the candidate models. ``name`` is the registry key.

    A fitted model is saved and loaded by :mod:`recpipe.artifacts` (no pickle): its state is
    its attributes, so a subclass keeps what scoring needs in plain arrays, sparse matrices,
    configs and other persistent objects, and lists derived data in ``transient``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[Config]]
    #: users scored per dense block in ``score``/``recommend`` (bounds peak memory)
    block_size: ClassVar[int] = 1024
    #: True in models that implement :meth:`score_history`
    supports_history: ClassVar[bool] = False

    def __init__(self, config: Config, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        self._seen: sp.csr_matrix | None = None
        self.n_users = 0
        self.n_items = 0

    # -- to implement -----------------------------------------------------------------
    @abstractmethod
    def _fit(self, data: TrainData) -> None:
        """Learn from ``data`` (called by :meth:`fit`)."""

    @abstractmethod
    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Dense ``(len(users), n_items)`` float32 scores; NaN where the model has none."""

    def score_history(self, history: pd.DataFrame, now: int) -> np.ndarray:
        """Scores over the whole catalogue (float32, shape ``(n_items,)``, NaN where the model
        has none) for one user whose history is ``history``, seen at ``now``.

        ``history`` holds canonical interaction rows: ``item_idx``, ``weight`` and
        ``timestamp`` are required, ``rating`` (absent: no ratings) and ``event`` optional.
        ``user_idx``, if present, looks up no fitted state; its one use is as the salt of
        seeded tie-breaks (SeqKNN orders same-second events by a hash of user and item), so
        that a user's own rows give that user's batch scores. Items outside
        ``0..n_items-1`` are an error (ValueError naming the column); items the model never
        saw are ignored, as in the batch path; an empty history gives what a user without
        history gets there (NaN, or the global ranking for popularity).

        Implemented by the models whose ``supports_history`` is True.
        """
        raise NotImplementedError(
            f"{self.name}: this model cannot score a history given at request time "
            "(supports_history is False); only the users it was fitted on can be scored, "
            "through score_users/recommend"
        )

    def recommend_history(self, history: pd.DataFrame, now: int, n: int) -> pd.DataFrame:
        """Top-``n`` of :meth:`score_history` with the history's items excluded, as the
        standard ``user_idx, item_idx, score, rank`` frame with ``user_idx`` 0 (ties broken
        as in :meth:`recommend`)."""
        scores = np.array(self.score_history(history, now), dtype=np.float32, ndmin=2)
        items = history_data(history, self.n_items).interactions["item_idx"].to_numpy()
        seen = sp.csr_matrix(
            (np.ones(len(items), dtype=np.float32), (np.zeros(len(items), np.int64), items)),
            shape=(1, self.n_items),
        )
        return concat_recs([top_n(np.zeros(1, dtype=np.int64), scores, seen, n)])

    def _history_data(
        self, history: pd.DataFrame, known_items: np.ndarray | None = None
    ) -> TrainData:
        """:func:`history_data` for this fitted model (items outside ``known_items``
        dropped)."""
        self._require_fit()
        return history_data(history, self.n_items, known_items)

    def _require_fit(self) -> None:
        if self._seen is None:
            raise RuntimeError(f"{self.name}: fit() must be called first")

    # -- shared -----------------------------------------------------------------------
    def fit(self, data: TrainData) -> Self:
        """Fit on one fold's history; remembers what each user has seen."""
        self.n_users, self.n_items = data.n_users, data.n_items
        self._seen = data.seen
        self._fit(data)
        return self

    def _check_state(self) -> None:
        seen = self._seen
        if seen is not None and seen.shape != (self.n_users, self.n_items):
            raise ArtifactError(
                f"{self.name}: seen matrix of shape {seen.shape} for {self.n_users} users "
                f"and {self.n_items} items"
            )

    @property
    def seen(self) -> sp.csr_matrix:
        self._require_fit()
        return self._seen

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of the pairs ``(users[k], items[k])``; NaN where the model has none.

        Indices outside the fitted ranges (ids the fold never saw) are NaN too, never an error.
        """
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        out = np.full(len(users), np.nan, dtype=np.float32)
        ok = (users >= 0) & (users < self.n_users) & (items >= 0) & (items < self.n_items)
        if not ok.any():
            return out
        pos = np.flatnonzero(ok)
        uniq, inv = np.unique(users[pos], return_inverse=True)
        for start in range(0, len(uniq), self.block_size):
            block = uniq[start : start + self.block_size]
            scores = self.score_users(block)
            sel = (inv >= start) & (inv < start + len(block))
            rows = inv[sel] - start
            out[pos[sel]] = scores[rows, items[pos[sel]]]
        return out

    def recommend(self, users: np.ndarray, n: int) -> pd.DataFrame:
        """Top-``n`` unseen items per user (``user_idx, item_idx, score, rank``)."""
        users = np.unique(np.asarray(users, dtype=np.int64))
        users = users[(users >= 0) & (users < self.n_users)]
        parts = []
        for start in range(0, len(users), self.block_size):
            block = users[start : start + self.block_size]
            scores = self.score_users(block).astype(np.float32, copy=True)
            parts.append(top_n(block, scores, self.seen[block], n))
        return concat_recs(parts)


#: columns a history must have (``rating`` and ``event`` are optional)
HISTORY_COLUMNS = ("item_idx", "weight", "timestamp")


def history_data(
    history: pd.DataFrame, n_items: int, known_items: np.ndarray | None = None
) -> TrainData:
    """One user's history as the data of a fold with that one user (``user_idx`` 0) and a
    catalogue of ``n_items``, so a model builds the user's row with the code of its fit.

    Rows whose item is outside ``known_items`` (a boolean mask over the catalogue) are
    dropped; row order is kept (it decides ties, as in the fit). Only the lengths of the
    ``items`` and ``users`` tables are meaningful.
    """
    if not isinstance(history, pd.DataFrame):
        raise TypeError(f"history must be a pandas DataFrame, not {type(history).__name__}")
    for col in HISTORY_COLUMNS:
        if col not in history.columns:
            raise ValueError(f"history: missing column {col!r}")
    items = history["item_idx"]
    if not pd.api.types.is_integer_dtype(items.dtype):
        values = pd.to_numeric(items, errors="coerce")
        if values.isna().any() or not (values % 1 == 0).all():
            raise ValueError("history: column 'item_idx' must hold integer item indices")
        items = values
    items = items.to_numpy(np.int64)
    bad = (items < 0) | (items >= n_items)
    if bad.any():
        raise ValueError(
            f"history: column 'item_idx' has {int(bad.sum())} value(s) outside 0..{n_items - 1} "
            f"(first: {int(items[bad][0])})"
        )
    if history["timestamp"].isna().any():
        raise ValueError("history: column 'timestamp' has missing values")
    inter = pd.DataFrame(
        {
            "user_idx": np.zeros(len(history), dtype=np.int64),
            "item_idx": items,
            "rating": (
                history["rating"].to_numpy()
                if "rating" in history.columns
                else np.full(len(history), np.nan)
            ),
            "event": history["event"].to_numpy() if "event" in history.columns else None,
            "weight": history["weight"].to_numpy(),
            "timestamp": history["timestamp"].to_numpy(np.int64),
        }
    )
    if known_items is not None:
        inter = inter[known_items[items]].reset_index(drop=True)
    return TrainData(
        inter,
        items=pd.DataFrame(index=pd.RangeIndex(n_items)),
        users=pd.DataFrame(index=pd.RangeIndex(1)),
    )


def top_n(users: np.ndarray, scores: np.ndarray, seen: sp.csr_matrix, n: int) -> pd.DataFrame:
    """Top-``n`` per row of a dense score block, seen and unscored (NaN) items excluded.

    Ties are broken by the lower item index, so results do not depend on the platform's
    partial-sort order.
    """
    scores = np.where(np.isnan(scores), -np.inf, scores)
    rows, cols = seen.nonzero()
    scores[rows, cols] = -np.inf
    k = min(n, scores.shape[1])
    if k == 0:
        return pd.DataFrame(columns=RECS_COLUMNS)
    # Sort by (score desc, item asc): lexsort on the full row is exact and still vectorised.
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else None
    if part is None:
        part = np.tile(np.arange(scores.shape[1]), (len(users), 1))
    # Include every item tied with the k-th score so tie-breaking is by index, not by chance.
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1, keepdims=True)
    cand_mask = scores >= kth
    r, c = np.nonzero(cand_mask)
    s = scores[r, c]
    order = np.lexsort((c, -s, r))
    r, c, s = r[order], c[order], s[order]
    rank = rank_within(r)
    keep = (rank <= k) & np.isfinite(s)
    return pd.DataFrame(
        {
            "user_idx": users[r[keep]].astype(np.int64),
            "item_idx": c[keep].astype(np.int64),
            "score": s[keep].astype(np.float32),
            "rank": rank[keep].astype(np.int32),
        }
    )


def rank_within(groups: np.ndarray) -> np.ndarray:
    """1-based position of each element within its run of equal, sorted group keys."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return np.arange(len(groups)) - run_start + 1


def concat_recs(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate recommendation blocks into one frame with the standard columns."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(
            {
                "user_idx": np.zeros(0, np.int64),
                "item_idx": np.zeros(0, np.int64),
                "score": np.zeros(0, np.float32),
                "rank": np.zeros(0, np.int32),
            }
        )
    return pd.concat(parts, ignore_index=True)
