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
override ``recommend`` to retrieve through faiss. A model whose scores are sparse products
(item-kNN, sequential kNN, TF-IDF) also gives them as :class:`SparseScores`
(``sparse_scores``); ``recommend`` then ranks each row's stored entries
(:func:`top_n_sparse`, exactly as :func:`top_n` ranks the dense row) wherever that costs
less than the dense users x items block, and ``score`` looks pairs up in the sparse rows
when few entries are stored. ``hold(users)`` gives both for one block of users
(:class:`HeldScores`), from one computation of the block in the models whose block is a
costly product (``holds_scores``).

Optionally (``supports_history``) a model scores a history given at request time, without
refitting: ``score_history(history, now)`` and ``recommend_history(history, now, n)``, for a
visitor without an account or a known user who just did something new. A model builds the
user's row of its user-side state from that history with the function its fit uses for
every user, so for a user of the fit the result equals ``score_users`` bit for bit (ALS,
whose user factors are learnt, folds the user in instead).
"""

from __future__ import annotations

import functools
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recpipe import engine
from recpipe.config import Config
from recpipe.dataset import TrainData
from recpipe.persist import ArtifactError, Persistent

#: threads of the models that rank blocks side by side (``Recommender.block_threads``): the
#: cores this process may use, at most 4 (each thread holds one block of scores)
BLOCK_THREADS = min(4, engine.cpus())


def in_threads(work: Callable[[Any], Any], blocks: Sequence[Any], threads: int) -> list:
    """``[work(b) for b in blocks]``, ``threads`` blocks side by side (in order), at most
    :func:`recpipe.engine.threads` (a worker process's share of the CPUs)."""
    threads = min(threads, engine.threads())
    if threads > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(work, blocks))
    return [work(b) for b in blocks]


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
    #: blocks ``recommend`` ranks (and ``score`` scores) side by side, each in a thread. A
    #: model opts in (sets it to :data:`BLOCK_THREADS`) when its block work is mostly sparse
    #: products and numpy partitions, which release the GIL, and reads its state without
    #: writing it. The results do not depend on it: every block runs the same code, and the
    #: blocks are joined in order (or fill their own pairs). Peak memory grows with it (one
    #: block of scores per thread).
    block_threads: ClassVar[int] = 1
    #: True in models that implement :meth:`score_history`
    supports_history: ClassVar[bool] = False
    #: True in models whose block of scores is a costly product (item-kNN, sequential kNN,
    #: TF-IDF, EASE): :meth:`hold` then computes it once for both a block's top-n and the
    #: scores of its pairs. Other models' :meth:`hold` runs :meth:`recommend` and
    #: :meth:`score`.
    holds_scores: ClassVar[bool] = False
    #: modules ``fit`` imports when it runs (kept out of the stage's start-up): a stage that
    #: forks workers to fit the model imports them first (:meth:`preload`), so that the
    #: workers share them instead of each paying the import (scikit-learn, about 1.3 s)
    fit_imports: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def preload(cls) -> None:
        """Import :attr:`fit_imports` in this process (before it forks its workers). Only
        third-party modules: the code stage must see a project module in an import
        statement (:mod:`recpipe.codedeps`)."""
        for module in cls.fit_imports:
            if module.split(".")[0] in ("recpipe", "stages"):
                raise ValueError(f"{cls.__name__}.fit_imports: {module} is a project module")
            importlib.import_module(module)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls.holds_scores:  # HeldScores ranks and scores through the block's three steps
            own = [
                m
                for m in ("recommend", "_recommend_block", "score")
                if getattr(cls, m) is not getattr(Recommender, m)
            ]
            if own:
                raise TypeError(
                    f"{cls.__name__}: holds_scores with its own {own[0]}, which held "
                    "scores would bypass: override _block_scores, _top_n_of and _pairs_of"
                )
        super().__init_subclass__(**kwargs)  # (registered once accepted)

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

    def sparse_scores(self, users: np.ndarray) -> SparseScores | None:
        """The scores of ``score_users`` as :class:`SparseScores` (``dense()`` of it equals
        ``score_users(users)``), or None for a model without a sparse form (the default)."""
        return None

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

    def share_seen(self, seen: sp.csr_matrix) -> None:
        """Hold ``seen`` instead of this model's own seen matrix, which it must equal (models
        loaded from their folders hold a copy each of what they were fitted with)."""
        own = self.seen
        same = own.shape == seen.shape and all(
            np.array_equal(getattr(own, a), getattr(seen, a)) for a in ("indptr", "indices", "data")
        )
        if not same:
            raise ValueError(f"{self.name}: the seen matrix to share differs from its own")
        self._seen = seen

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of the pairs ``(users[k], items[k])``; NaN where the model has none.

        Indices outside the fitted ranges (ids the fold never saw) are NaN too, never an error.
        """
        users, items, out, pos = self._in_range(users, items)
        if not len(pos):
            return out
        uniq, inv = np.unique(users[pos], return_inverse=True)

        def score_block(start: int) -> None:  # each block fills its own pairs of ``out``
            block = uniq[start : start + self.block_size]
            sel = (inv >= start) & (inv < start + len(block))
            rows, cols = inv[sel] - start, items[pos[sel]]
            out[pos[sel]] = self._pairs_of(self._block_scores(block), rows, cols)

        in_threads(score_block, list(range(0, len(uniq), self.block_size)), self.block_threads)
        return out

    def recommend(self, users: np.ndarray, n: int) -> pd.DataFrame:
        """Top-``n`` unseen items per user (``user_idx, item_idx, score, rank``)."""
        users = self._known(users)
        blocks = [users[s : s + self.block_size] for s in range(0, len(users), self.block_size)]
        work = functools.partial(self._recommend_block, n=n)
        return concat_recs(in_threads(work, blocks, self.block_threads))

    def hold(self, users: np.ndarray) -> HeldScores:
        """The scores of ``users`` for their top-n and their pairs (:class:`HeldScores`):
        computed once when the model holds scores (``holds_scores``). Memory: one block of
        ``users`` x items scores."""
        return HeldScores(self, users)

    def _known(self, users: np.ndarray) -> np.ndarray:
        """The distinct users of ``users`` the model was fitted on, ascending."""
        users = np.unique(np.asarray(users, dtype=np.int64))
        return users[(users >= 0) & (users < self.n_users)]

    def _in_range(
        self, users: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The pairs as int64 arrays, their scores so far (all NaN) and the positions of
        the pairs inside the fitted ranges, which the caller scores."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        out = np.full(len(users), np.nan, dtype=np.float32)
        ok = (users >= 0) & (users < self.n_users) & (items >= 0) & (items < self.n_items)
        return users, items, out, np.flatnonzero(ok)

    def _recommend_block(self, users: np.ndarray, n: int) -> pd.DataFrame:
        """:meth:`recommend` for one block of distinct users in range, ascending."""
        return self._top_n_of(users, self._block_scores(users), n)

    def _block_scores(self, users: np.ndarray) -> Any:
        """The scores of one block of distinct users in range, ascending, as
        :meth:`_top_n_of` and :meth:`_pairs_of` read them: :class:`SparseScores` when the
        model gives them, else the dense float32 block."""
        sparse = self.sparse_scores(users)
        if sparse is None:
            # (top_n leaves its input alone: no copy of a block that may be large)
            return self.score_users(users).astype(np.float32, copy=False)
        return sparse

    def _top_n_of(self, users: np.ndarray, scores: Any, n: int) -> pd.DataFrame:
        """The top-``n`` lists of ``users`` from their :meth:`_block_scores`."""
        if isinstance(scores, SparseScores):
            if scores.sparse_top_n_pays():
                return top_n_sparse(users, scores, self.seen[users], n)
            scores = scores.dense()
        return top_n(users, scores, self.seen[users], n)

    def _pairs_of(self, scores: Any, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The scores of the pairs ``(rows[k], items[k])`` (rows of the block, items in
        range) from a block's :meth:`_block_scores`."""
        if isinstance(scores, SparseScores):
            if scores.is_sparse():
                return scores.pairs(rows, items)
            scores = scores.dense()
        return scores[rows, items]


class HeldScores:
    """Some users' scores held for both their lists and their pairs (:meth:`Recommender.hold`):
    :meth:`recommend` and :meth:`score` give exactly what the model's ``recommend`` and
    ``score`` give for these users. A model that holds scores computes them here, in the
    blocks (``block_size``) and threads (``block_threads``) of its ``recommend``, and keeps
    them; the others' methods run as they are. A blend asks each model for its candidates,
    then every model for the scores of their union: without this, the costly models
    computed each block of scores twice."""

    def __init__(self, model: Recommender, users: np.ndarray) -> None:
        self.model = model
        self.users = model._known(users)
        self._blocks: list[Any] = []
        self._dense: list[np.ndarray | None] = []
        if model.holds_scores:
            size = model.block_size
            parts = [self.users[s : s + size] for s in range(0, len(self.users), size)]
            self._blocks = in_threads(model._block_scores, parts, model.block_threads)
            self._dense = [None] * len(parts)

    def recommend(self, n: int) -> pd.DataFrame:
        """``model.recommend(users, n)``."""
        model = self.model
        if not model.holds_scores:
            return model.recommend(self.users, n)
        size = model.block_size

        def top(k: int) -> pd.DataFrame:
            users = self.users[k * size : (k + 1) * size]
            scores = self._blocks[k]
            dense = isinstance(scores, SparseScores) and not scores.sparse_top_n_pays()
            return model._top_n_of(users, self._form(k, dense), n)

        return concat_recs(in_threads(top, range(len(self._blocks)), model.block_threads))

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``model.score(users, items)``; a pair of a user the model knows but this block
        does not hold is an error (ValueError)."""
        model = self.model
        if not model.holds_scores:
            return model.score(users, items)
        users, items, out, pos = model._in_range(users, items)
        rows = np.searchsorted(self.users, users[pos])
        held = rows < len(self.users)
        held[held] = self.users[rows[held]] == users[pos][held]
        if not held.all():
            missing = users[pos][~held][0]
            raise ValueError(f"{model.name}: user {missing} is not among the held users")
        size = model.block_size
        block = rows // size

        def fill(k: int) -> None:  # each block fills its own pairs of ``out``
            sel = block == k
            scores = self._blocks[k]
            dense = isinstance(scores, SparseScores) and not scores.is_sparse()
            here = model._pairs_of(self._form(k, dense), rows[sel] - k * size, items[pos[sel]])
            out[pos[sel]] = here

        in_threads(fill, np.unique(block).tolist(), model.block_threads)
        return out

    def _form(self, k: int, dense: bool) -> Any:
        """Block ``k``'s scores as the model reads them; with ``dense``, sparse scores'
        dense block, built once for the lists and the pairs."""
        scores = self._blocks[k]
        if not (dense and isinstance(scores, SparseScores)):
            return scores
        if self._dense[k] is None:
            self._dense[k] = scores.dense()
        return self._dense[k]


@dataclass
class SparseScores:
    """Scores of some users (rows) over the catalogue held sparsely: a stored entry of
    ``matrix`` is its pair's score, a missing one scores 0, except in the rows of users the
    model cannot score (``users_ok`` False) and the columns of items it cannot score
    (``items_ok`` False), which are NaN. No pair may be stored twice (a sparse product
    never does that); rows may be unsorted."""

    matrix: sp.csr_matrix
    users_ok: np.ndarray
    items_ok: np.ndarray

    #: stored share of the block up to which looking pairs up beats the dense block
    max_density: ClassVar[float] = 0.02

    def is_sparse(self) -> bool:
        """Whether few enough entries are stored for pair look-ups (:meth:`pairs`) to pay."""
        rows, cols = self.matrix.shape
        return self.matrix.nnz <= self.max_density * rows * cols

    def sparse_top_n_pays(self) -> bool:
        """Whether :func:`top_n_sparse` beats :func:`top_n` of :meth:`dense` here. Measured
        on 2 cores: the sparse one costs about 50 us a row plus 8 ns a stored entry, the
        dense one about 18 ns a cell (so from about 3,000 items up it pays even for rows
        that store a fifth of the catalogue). Both give the same lists."""
        rows, cols = self.matrix.shape
        return 50_000 * rows + 8 * self.matrix.nnz < 18 * rows * cols

    def dense(self) -> np.ndarray:
        """The dense float32 block these scores stand for."""
        scores = self.matrix.toarray().astype(np.float32, copy=False)
        scores[:, ~self.items_ok] = np.nan
        scores[~self.users_ok] = np.nan
        return scores

    def pairs(self, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of the pairs ``(rows[k], items[k])``: ``dense()[rows, items]`` without the
        dense block."""
        rows = np.asarray(rows, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float32)
        m = self.matrix
        if not m.has_sorted_indices:
            # scipy looks a pair up by bisection in sorted rows, by a scan otherwise
            m = m.sorted_indices()
        out = np.asarray(m[rows, items], dtype=np.float32).ravel()
        out[~self.items_ok[items] | ~self.users_ok[rows]] = np.nan
        return out


#: columns a history must have (``rating`` and ``event`` are optional)
HISTORY_COLUMNS = ("item_idx", "weight", "timestamp")


_SHARED_HISTORIES: ContextVar[dict[int, tuple[pd.DataFrame, int, dict, dict]] | None] = ContextVar(
    "recpipe_shared_histories", default=None
)


@contextmanager
def shared_histories() -> Iterator[None]:
    """Within this block (in this thread or task), :func:`history_data` checks and converts
    each history frame once, however many models ask for it: a fresh ranking passes one
    history to every model. Models that keep every item of it get one shared
    :class:`TrainData` (no model writes to its data). The frames must not change inside
    the block."""
    token = _SHARED_HISTORIES.set({})
    try:
        yield
    finally:
        _SHARED_HISTORIES.reset(token)


def history_data(
    history: pd.DataFrame, n_items: int, known_items: np.ndarray | None = None
) -> TrainData:
    """One user's history as the data of a fold with that one user (``user_idx`` 0) and a
    catalogue of ``n_items``, so a model builds the user's row with the code of its fit.

    Rows whose item is outside ``known_items`` (a boolean mask over the catalogue) are
    dropped; row order is kept (it decides ties, as in the fit). Only the lengths of the
    ``items`` and ``users`` tables are meaningful.
    """
    shared = _SHARED_HISTORIES.get()
    held = None if shared is None else shared.get(id(history))
    if held is not None and held[0] is history and held[1] == n_items:
        columns, whole = held[2], held[3]
    else:
        columns, whole = _history_columns(history, n_items), {}
        if shared is not None:  # the frame is held too, so its id is not reused meanwhile
            shared[id(history)] = (history, n_items, columns, whole)
    if known_items is None and whole:
        return whole["data"]
    # the kept rows picked from each column before the frame is built (one frame, not a
    # frame and its filtered copy: a fresh ranking builds one per model)
    keep = slice(None) if known_items is None else known_items[columns["item_idx"]]
    inter = pd.DataFrame(
        {name: None if values is None else values[keep] for name, values in columns.items()}
    )
    data = TrainData(inter, items=_rows_only(n_items), users=_rows_only(1))
    if known_items is None and shared is not None:
        whole["data"] = data
    return data


def _history_columns(history: pd.DataFrame, n_items: int) -> dict[str, Any]:
    """The checked columns of :func:`history_data`'s frame, before rows are dropped; the
    event column as it is (no model reads it, and converting text again costs more than
    the rest)."""
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
    return {
        "user_idx": np.zeros(len(items), dtype=np.int64),
        "item_idx": items,
        "rating": (
            history["rating"].to_numpy()
            if "rating" in history.columns
            else np.full(len(history), np.nan)
        ),
        "event": history["event"].array if "event" in history.columns else None,
        "weight": history["weight"].to_numpy(),
        "timestamp": history["timestamp"].to_numpy(np.int64),
    }


@functools.lru_cache(maxsize=16)
def _rows_only(n: int) -> pd.DataFrame:
    """A table of ``n`` rows and no columns, made once per size: every model asks for the
    same ones at each fresh ranking, and building them was a third of :func:`history_data`.
    Shared, so never written to (no column is ever added to a history's tables)."""
    return pd.DataFrame(index=pd.RangeIndex(n))


def top_n(users: np.ndarray, scores: np.ndarray, seen: sp.csr_matrix, n: int) -> pd.DataFrame:
    """Top-``n`` per row of a dense score block, seen and unscored (NaN) items excluded
    (and infinite scores, which no model gives).

    Ties are broken by the lower item index, so results do not depend on the platform's
    partial-sort order.
    """
    # Work on negated scores (a new array; the caller's is left alone), so that the best
    # come first in ascending order; unscored (NaN, or infinite) and seen items go last.
    neg = np.negative(scores, dtype=np.float32)
    neg[~np.isfinite(neg)] = np.inf
    one_row = neg.shape[0] == 1  # a fresh ranking: its seen items and ranks read directly
    if one_row and seen.format == "csr" and seen.shape[0] == 1:
        neg[0, seen.indices[seen.data != 0]] = np.inf
    else:
        rows, cols = seen.nonzero()
        neg[rows, cols] = np.inf
    k = min(n, neg.shape[1])
    if k == 0:
        return pd.DataFrame(columns=RECS_COLUMNS)
    # The k-th best value of each row (a partition of the values, not of their indices),
    # then every item at least as good: all ties with the k-th come along, so the order
    # below breaks them by item index, not by the partition's chance order.
    kth = np.partition(neg, k - 1, axis=1)[:, k - 1 : k]
    r, c = np.nonzero(neg <= kth)
    s = -neg[r, c]
    order = np.lexsort((c, -s, r))
    r, c, s = r[order], c[order], s[order]
    rank = np.arange(1, len(r) + 1) if one_row else rank_within(r)
    keep = (rank <= k) & np.isfinite(s)
    return pd.DataFrame(
        {
            "user_idx": users[r[keep]].astype(np.int64),
            "item_idx": c[keep].astype(np.int64),
            "score": s[keep].astype(np.float32),
            "rank": rank[keep].astype(np.int32),
        },
        copy=False,  # fresh arrays
    )


def top_n_sparse(
    users: np.ndarray, scores: SparseScores, seen: sp.csr_matrix, n: int
) -> pd.DataFrame:
    """:func:`top_n` of ``scores.dense()`` without the dense block: the same rows, in the same
    order, with the same values.

    The dense ranking of a row is its positive stored scores (score descending, then item),
    then every scorable unseen item scoring 0 (stored or not) by item index, then its
    negative scores. A row's best ``n`` unseen positives are among its best ``n + seen``
    positives (ties at that value included), picked by one partition of its stored values;
    only rows with fewer than ``n`` positives need the zeros. So the cost is the stored
    entries plus a little per row, not users x items.
    """
    n_items = scores.matrix.shape[1]
    k = min(n, n_items)
    rows_ok = np.flatnonzero(scores.users_ok)
    if k == 0 or len(rows_ok) == 0:
        return pd.DataFrame(columns=RECS_COLUMNS)
    # Rows need not be sorted (a product's are not, and sorting them would cost more than
    # the ranking); entries must be distinct, as a product's are.
    all_ok = len(rows_ok) == scores.matrix.shape[0]
    m = sp.csr_matrix(scores.matrix if all_ok else scores.matrix[rows_ok])
    seen = sp.csr_matrix(seen if all_ok else seen[rows_ok])
    seen.eliminate_zeros()
    values = m.data.astype(np.float32, copy=False)
    usable = scores.items_ok[m.indices] & np.isfinite(values)
    ok_items = np.flatnonzero(scores.items_ok)
    out_r, out_c, out_v = [], [], []
    for row in range(len(rows_ok)):
        lo, hi = m.indptr[row], m.indptr[row + 1]
        u = usable[lo:hi]
        v, c = values[lo:hi][u], m.indices[lo:hi][u].astype(np.int64)
        held = seen.indices[seen.indptr[row] : seen.indptr[row + 1]]
        pos = v > 0
        pv, pc = v[pos], c[pos]
        take = k + len(held)
        if len(pv) > take:
            cut = np.partition(pv, len(pv) - take)[len(pv) - take]
            best = pv >= cut
            pv, pc = pv[best], pc[best]
        if len(held):
            fresh = ~np.isin(pc, held)
            pv, pc = pv[fresh], pc[fresh]
        order = np.lexsort((pc, -pv))[:k]
        rv, rc = pv[order], pc[order]
        if len(rc) < k:
            fv, fc = _fill_short_row(v, c, held, k - len(rc), ok_items)
            rv, rc = np.concatenate([rv, fv]), np.concatenate([rc, fc])
        out_r.append(np.full(len(rc), row, dtype=np.int64))
        out_c.append(rc)
        out_v.append(rv)
    rr = np.concatenate(out_r)
    return pd.DataFrame(
        {
            "user_idx": users[rows_ok[rr]].astype(np.int64),
            "item_idx": np.concatenate(out_c).astype(np.int64),
            "score": np.concatenate(out_v).astype(np.float32),
            "rank": rank_within(rr).astype(np.int32),
        }
    )


def _fill_short_row(
    v: np.ndarray, c: np.ndarray, seen: np.ndarray, need: int, ok_items: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What follows a row's positive scores in :func:`top_n_sparse`: up to ``need`` scorable
    unseen items scoring 0 by item index (``v``, ``c``: the row's stored scorable entries),
    then its negative scores, best first."""
    nonzero = np.union1d(seen, c[v != 0])
    # The first `need` scorable items outside `nonzero` lie within this prefix.
    prefix = ok_items[: need + len(nonzero)]
    zc = prefix[~np.isin(prefix, nonzero)][:need]
    zv = np.zeros(len(zc), dtype=np.float32)
    stored = np.isin(c, zc) & (v == 0)  # a stored zero keeps its own value (its sign)
    zv[np.searchsorted(zc, c[stored])] = v[stored]
    neg = (v < 0) & ~np.isin(c, seen)
    order = np.lexsort((c[neg], -v[neg]))[: need - len(zc)]
    return np.concatenate([zv, v[neg][order]]), np.concatenate([zc, c[neg][order]])


def top_n_ordered(
    users: np.ndarray, order: np.ndarray, values: np.ndarray, seen: sp.csr_matrix, n: int
) -> pd.DataFrame:
    """:func:`top_n` for scores that are the same for every user: ``order`` holds the items
    with a score, best first (ties by item index), ``values`` their scores. Each user gets
    the first ``n`` items of ``order`` not in their row of ``seen``, so the cost is users x
    ``n`` plus the seen entries, not users x items."""
    users = np.asarray(users, dtype=np.int64)
    seen = sp.csr_matrix(seen)
    seen.eliminate_zeros()
    n_items = seen.shape[1]
    if min(n, n_items) == 0 or len(order) == 0 or len(users) == 0:
        return pd.DataFrame(columns=RECS_COLUMNS)
    where = np.full(n_items, -1, dtype=np.int64)
    where[order] = np.arange(len(order))
    # Positions in ``order`` of each row's seen items (items without a score drop out).
    seen_pos = where[seen.indices]
    seen_row = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(seen.indptr))
    scored = seen_pos >= 0
    seen_pos, seen_row = seen_pos[scored], seen_row[scored]
    # A row's answer lies within the first n + (its seen scored items) positions.
    length = np.minimum(n + np.bincount(seen_row, minlength=len(users)), len(order))
    row = np.repeat(np.arange(len(users), dtype=np.int64), length)
    starts = np.r_[0, np.cumsum(length)[:-1]]
    position = np.arange(len(row)) - np.repeat(starts, length)
    fresh = ~np.isin(row * len(order) + position, seen_row * len(order) + seen_pos)
    row, position = row[fresh], position[fresh]
    rank = rank_within(row)
    first = rank <= n
    row, position, rank = row[first], position[first], rank[first]
    items = order[position]
    return pd.DataFrame(
        {
            "user_idx": users[row],
            "item_idx": items.astype(np.int64),
            "score": values[position].astype(np.float32),
            "rank": rank.astype(np.int32),
        }
    )


def most_counted(counts: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """``(active, kept)``: the indices whose count is positive, and of those the ``limit``
    with the highest counts (ties: the lower index), ascending; ``kept`` is ``active``
    when they all fit. How a model bounded to its most active items picks them."""
    active = np.flatnonzero(counts > 0)
    if len(active) <= limit:
        return active, active
    return active, np.sort(active[np.lexsort((active, -counts[active]))[:limit]])


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
    if len(parts) == 1 and parts[0].index.equals(pd.RangeIndex(len(parts[0]))):
        return parts[0]  # (what concat would copy; frames are copied on write)
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
