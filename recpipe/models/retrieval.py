"""Top-n retrieval for factor models: inner products of user and item vectors through faiss.

A factor model scores ``score(u, i) = offset[u] + bias[i] + p_u . q_i``. :class:`FactorIndex`
folds the item bias into the vectors (user ``[p_u, 1]``, item ``[q_i, bias_i]``), so the
ranking of one user's items is a pure maximum-inner-product search, and adds the per-user
offset (which cannot change the order) after retrieval.

Retrieval steps for a block of users:

1. faiss returns the ``k = n + s + margin`` best items of each user, ``s`` being the largest
   number of seen (indexed) items of any user in the block, so that at least ``n + margin``
   unseen items remain once seen items are removed (``k`` is capped at the number of
   indexed items); users are blocked with others of about as many seen items, so ``s``
   stays near each user's own count;
2. seen items are dropped, and the first ``n + margin`` unseen ones (in faiss's order) are
   scored again with numpy, through the same arithmetic as :meth:`FactorIndex.score`, so
   the scores of ``recommend`` and ``score`` agree and do not depend on faiss's kernels;
3. each user's list is sorted by score, descending, then item index, ascending
   (deterministic ties), and cut at ``n``.

With the exact index (``IndexFlatIP``) the result is that of :func:`base.top_n` on every
item scored as :meth:`FactorIndex.score` scores it: a user whose ``n``-th score ties,
within float32 noise, with the last candidate considered in step 2 (so that an item left
out might tie too) is recomputed from such a full row. Either way a user's list and its
scores do not depend on the other users of its block. The
approximate indexes (``ivf``, ``hnsw``) trade this guarantee for speed: they can miss some of
the true top-n items (and ties at the cut are not settled; hnsw's search width follows
``k``, so its lists also depend on the block); use them for catalogues of
hundreds of thousands of items and more, where the exact search dominates.

Items the model cannot score are left out of the index (NaN scores); users without a vector
get no recommendations (NaN scores).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import faiss
import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recpipe import engine
from recpipe.config import Config
from recpipe.models.base import Recommender, concat_recs, top_n
from recpipe.persist import ArtifactError, Persistent

#: extra items fetched beyond ``n + seen`` so that a near-tie at the cut is detectable
TIE_MARGIN = 8
#: float32 elements per chunk of gathered vectors when pairs are scored (bounds memory)
RESCORE_CHUNK = 1 << 22
#: faiss wants at least this many training points per IVF list (it warns below it)
MIN_POINTS_PER_LIST = 39


class RetrievalConfig(Config):
    """How a factor model finds each user's top-n items (``candidates.<model>.retrieval``)."""

    index: Literal["exact", "ivf", "hnsw"] = Field(
        "exact",
        description="exact: brute-force inner product (IndexFlatIP), same result as scoring "
        "every item; ivf: inverted lists (IndexIVFFlat), hnsw: graph (IndexHNSWFlat), both "
        "approximate (they can miss items) and meant for very large catalogues",
    )
    nlist: int = Field(
        1024,
        ge=1,
        description="ivf: number of k-means lists; capped so each list has at least 39 "
        "training items (about sqrt(items) to 4 * sqrt(items) is usual)",
    )
    nprobe: int = Field(
        32, ge=1, description="ivf: lists searched per user; more is slower and more exact"
    )
    hnsw_m: int = Field(32, ge=2, description="hnsw: graph neighbours per node (M)")
    ef_construction: int = Field(
        200, ge=1, description="hnsw: candidate list size while building the graph"
    )
    ef_search: int = Field(
        256,
        ge=1,
        description="hnsw: candidate list size while searching (raised to the number of "
        "items fetched when that is larger); more is slower and more exact",
    )
    threads: int = Field(
        1,
        ge=1,
        description="faiss OpenMP threads for building and searching; 1 keeps hnsw "
        "construction (which is order-dependent) and k-means reproducible",
    )


class FactorIndex(Persistent):
    """Scores and top-n retrieval for ``offset[u] + bias[i] + users[u] . items[i]``.

    ``user_vectors`` (``n_users x d``) and ``item_vectors`` (``n_items x d``) are indexed by
    ``user_idx``/``item_idx``; ``known_users``/``known_items`` (boolean masks, default all)
    say which rows the model can score, the others get NaN and are never recommended.
    ``item_bias`` (per item) and ``user_offset`` (per user) are optional additive terms.
    ``seed`` seeds faiss's k-means for the ivf index.
    """

    #: users per faiss search (bounds the ``users x k`` result arrays)
    block_size: int = 1024

    def __init__(
        self,
        user_vectors: np.ndarray,
        item_vectors: np.ndarray,
        *,
        user_offset: np.ndarray | None = None,
        item_bias: np.ndarray | None = None,
        known_users: np.ndarray | None = None,
        known_items: np.ndarray | None = None,
        config: RetrievalConfig | None = None,
        seed: int = 0,
    ) -> None:
        users = np.asarray(user_vectors, dtype=np.float32)
        items = np.asarray(item_vectors, dtype=np.float32)
        if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
            raise ValueError(
                f"factor shapes do not match: users {users.shape}, items {items.shape}"
            )
        self.n_users, self.n_items = users.shape[0], items.shape[0]
        if item_bias is not None:
            # [p_u, 1] . [q_i, b_i] = p_u . q_i + b_i: the bias rides along in the search.
            bias = np.asarray(item_bias, dtype=np.float32).reshape(-1, 1)
            users = np.hstack([users, np.ones((self.n_users, 1), dtype=np.float32)])
            items = np.hstack([items, bias])
        self.user_vectors = np.ascontiguousarray(users)
        self.item_vectors = np.ascontiguousarray(items)
        self.user_offset = (
            np.zeros(self.n_users, dtype=np.float32)
            if user_offset is None
            else np.asarray(user_offset, dtype=np.float32)
        )
        self.known_users = _mask(known_users, self.n_users)
        self.known_items = _mask(known_items, self.n_items)
        #: item_idx of each row of the faiss index
        self.indexed = np.flatnonzero(self.known_items)
        self.config = config if config is not None else RetrievalConfig()
        self.seed = seed
        self._index: Any = None

    # faiss indexes are rebuilt on demand rather than saved with the model: they are
    # derived data, and the stored model stays small and independent of faiss's format.
    transient = ("_index",)

    def _check_state(self) -> None:
        users, items = self.user_vectors.shape, self.item_vectors.shape
        if (
            users[1] != items[1]
            or self.known_users.shape != (users[0],)
            or (self.known_items.shape != (items[0],) or self.user_offset.shape != (users[0],))
        ):
            raise ArtifactError(
                f"factor index: user vectors {users}, item vectors {items}, known users "
                f"{self.known_users.shape}, known items {self.known_items.shape}, user "
                f"offsets {self.user_offset.shape} do not fit together"
            )

    # -- scoring ----------------------------------------------------------------------
    def score_users(self, users: np.ndarray) -> np.ndarray:
        """Dense ``(len(users), n_items)`` float32 scores; NaN for unknown users/items."""
        users = np.asarray(users, dtype=np.int64)
        out = np.full((len(users), self.n_items), np.nan, dtype=np.float32)
        rows = np.flatnonzero(self.known_users[users])
        if len(rows) == 0 or len(self.indexed) == 0:
            return out
        u = users[rows]
        out[rows] = self.score_vectors(self.user_vectors[u], self.user_offset[u])
        return out

    def score_vectors(self, vectors: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Dense scores of users given by their vectors (``m x d``, in the index's space: with
        the trailing 1 when the index has item biases) and offsets (``m``); NaN for unknown
        items. The arithmetic of :meth:`score_users`, which calls it."""
        block = vectors @ self.item_vectors.T
        block += offsets[:, None]
        block[:, ~self.known_items] = np.nan
        return block

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of the pairs ``(users[k], items[k])``; NaN where out of range or unknown."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        out = np.full(len(users), np.nan, dtype=np.float32)
        ok = (users >= 0) & (users < self.n_users) & (items >= 0) & (items < self.n_items)
        ok[ok] = self.known_users[users[ok]] & self.known_items[items[ok]]
        out[ok] = self._pair_scores(users[ok], items[ok])
        return out

    # -- retrieval --------------------------------------------------------------------
    def recommend(self, users: np.ndarray, n: int, seen: sp.csr_matrix) -> pd.DataFrame:
        """Top-``n`` items per user, items in ``seen`` (user x item, nonzero) excluded.

        Returns ``user_idx, item_idx, score, rank`` (rank 1 = best), like ``base.top_n``;
        users out of range or without a vector get no rows.
        """
        users = np.unique(np.asarray(users, dtype=np.int64))
        users = users[(users >= 0) & (users < self.n_users)]
        users = users[self.known_users[users]]
        if len(users) == 0 or len(self.indexed) == 0 or n < 1:
            return concat_recs([])
        seen = sp.csr_matrix(seen)
        # Blocks of users with about as many seen items: a block fetches n + its largest
        # seen count + margin items for every user (step 1), so one heavy user among light
        # ones would make each of them fetch, and filter, most of the catalogue. Each
        # user's list does not depend on its block (the module docstring's steps).
        by_seen = users[np.argsort(np.diff(seen.indptr)[users], kind="stable")]
        with faiss_threads(self.config.threads):
            index = self._faiss_index()
            parts = [
                self._recommend_block(index, np.sort(by_seen[s : s + self.block_size]), n, seen)
                for s in range(0, len(users), self.block_size)
            ]
        recs = concat_recs(parts)
        if len(parts) > 1:  # back to user order (each user's rows together, in rank order)
            recs = recs.take(np.argsort(recs["user_idx"].to_numpy(), kind="stable"))
            recs = recs.reset_index(drop=True)
        return recs

    def _recommend_block(
        self, index: Any, users: np.ndarray, n: int, seen: sp.csr_matrix
    ) -> pd.DataFrame:
        """Top-``n`` of one block of known users (see the module docstring for the steps)."""
        n_indexed = len(self.indexed)
        # Seen items in index space (only indexed items can come back from faiss): the
        # block's rows of ``seen`` gathered from its arrays, each nonzero entry of an
        # indexed item as (row, position in the index); scipy's row and column selections
        # cost more than a one-user search
        position = np.full(max(self.n_items, seen.shape[1]), -1, dtype=np.int64)
        position[self.indexed] = np.arange(n_indexed)
        starts, lengths = seen.indptr[users], np.diff(seen.indptr)[users]
        entries = np.arange(int(lengths.sum())) + np.repeat(
            starts - np.cumsum(lengths) + lengths, lengths
        )
        rows = np.arange(len(users))
        entry_row, entry_pos = np.repeat(rows, lengths), position[seen.indices[entries]]
        real = (entry_pos >= 0) & (seen.data[entries] != 0)
        n_seen = np.bincount(entry_row[real], minlength=len(users))
        k = min(n + int(n_seen.max(initial=0)) + TIE_MARGIN, n_indexed)
        found_scores, found = index.search(
            self.user_vectors[users], k, params=self._search_params(k)
        )
        seen_keys = entry_row[real] * n_indexed + entry_pos[real]
        fresh = (found >= 0) & ~np.isin(rows[:, None] * n_indexed + found, seen_keys)
        # Faiss's order is good enough to pick the n + margin best unseen items of each
        # user; only those are scored exactly and sorted with the deterministic tie-break.
        count = np.cumsum(fresh, axis=1)
        wanted = n + TIE_MARGIN
        r, c = np.nonzero(fresh & (count <= wanted))
        item = self.indexed[found[r, c]]
        score = self._pair_scores(users[r], item)
        order = np.lexsort((item, -score, r))
        r, item, score = r[order], item[order], score[order]
        rank = np.arange(len(r)) - np.searchsorted(r, r, side="left") + 1
        keep = rank <= n
        r, rank, score = r[keep], rank[keep].astype(np.int32), score[keep].astype(np.float32)
        recs = pd.DataFrame(
            {
                "user_idx": users[r].astype(np.int64),
                "item_idx": item[keep].astype(np.int64),
                "score": score,
                "rank": rank,
            },
            copy=False,  # fresh arrays, in the order of RECS_COLUMNS
        )
        if self.config.index != "exact" or k >= n_indexed:
            return recs
        # Every item left out scores (in faiss's arithmetic) at most the last one considered:
        # the wanted-th unseen item, or the last one fetched for users with fewer.
        last = np.where(count[:, -1] >= wanted, np.argmax(count >= wanted, axis=1), k - 1)
        floor = found_scores[rows, last]
        at_n = rank == n
        redo = self._ties_at_cut(users, r[at_n], score[at_n], floor)
        if not redo.any():
            return recs
        # Rare: an item left out may tie with the n-th; settle these users on the full row.
        again = users[redo]
        dense = top_n(again, self._exact_rows(again), seen[again], n)
        return concat_recs([recs[~np.isin(recs["user_idx"], again)], dense]).sort_values(
            ["user_idx", "rank"], ignore_index=True, kind="stable"
        )

    def _exact_rows(self, users: np.ndarray) -> np.ndarray:
        """:meth:`score_users` of known ``users`` through :meth:`_pair_scores`: the floats of
        :meth:`score`, whatever other users come along (a matrix product's last bits
        depend on the block's shape, and so on which users need their full row)."""
        items = np.flatnonzero(self.known_items)
        out = np.full((len(users), self.n_items), np.nan, dtype=np.float32)
        step = max(1, RESCORE_CHUNK // max(1, len(items)))  # users whose pairs are listed at once
        for s in range(0, len(users), step):
            some = users[s : s + step]
            pairs = self._pair_scores(np.repeat(some, len(items)), np.tile(items, len(some)))
            out[s : s + step, items] = pairs.reshape(len(some), len(items))
        return out

    def _ties_at_cut(
        self, users: np.ndarray, rows_at_n: np.ndarray, scores_at_n: np.ndarray, floor: np.ndarray
    ) -> np.ndarray:
        """Users whose ``n``-th score is not clearly above ``floor`` (or who got fewer), from
        the ``n``-th items' rows (positions in ``users``) and scores."""
        nth = np.full(len(users), -np.inf, dtype=np.float64)
        nth[rows_at_n] = scores_at_n
        nth -= self.user_offset[users]  # back to the search's scale, where floor lives
        tol = 1e-4 * (1.0 + np.abs(floor))
        return nth <= floor + tol

    def _pair_scores(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``offset + <user, item>`` of known pairs, in chunks that bound the gathered rows.

        Both :meth:`score` and :meth:`recommend` score through here, so they agree exactly.
        """
        out = np.empty(len(users), dtype=np.float32)
        step = max(1, RESCORE_CHUNK // max(1, self.item_vectors.shape[1]))
        for s in range(0, len(users), step):
            u, i = users[s : s + step], items[s : s + step]
            out[s : s + step] = _rowwise_dot(self.user_vectors[u], self.item_vectors[i])
            out[s : s + step] += self.user_offset[u]
        return out

    def _search_params(self, k: int) -> Any:
        cfg = self.config
        if cfg.index == "ivf":
            return faiss.SearchParametersIVF(nprobe=min(cfg.nprobe, self._index.nlist))
        if cfg.index == "hnsw":
            # HNSW cannot return more items than its candidate list holds.
            return faiss.SearchParametersHNSW(efSearch=max(cfg.ef_search, k))
        return None

    def build(self) -> None:
        """Build the faiss index now rather than on first use: a process that forks
        workers after this shares one index with them instead of each building its own."""
        with faiss_threads(self.config.threads):
            self._faiss_index()

    def _faiss_index(self) -> Any:
        """The faiss index over the indexed items' vectors (built once, on first use)."""
        if self._index is not None:
            return self._index
        cfg = self.config
        x = np.ascontiguousarray(self.item_vectors[self.indexed])
        d = x.shape[1]
        if cfg.index == "exact":
            index = faiss.IndexFlatIP(d)
        elif cfg.index == "ivf":
            nlist = max(1, min(cfg.nlist, len(x) // MIN_POINTS_PER_LIST))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = self.seed
            index.train(x)
        else:
            index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.ef_construction
        index.add(x)
        self._index = index
        return index


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """Run faiss with ``n`` OpenMP threads, restoring the previous setting afterwards."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(engine.omp_threads(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _rowwise_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum(a[k] * b[k])`` for every row ``k``, vectorised."""
    return np.einsum("nd,nd->n", a, b)


def _mask(mask: np.ndarray | None, size: int) -> np.ndarray:
    if mask is None:
        return np.ones(size, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (size,):
        raise ValueError(f"mask of shape {mask.shape}, expected ({size},)")
    return mask


class FactorRecommender(Recommender):
    """A model whose scores are inner products of factor vectors: ``_fit`` sets ``self.index``
    (a :class:`FactorIndex`), and scoring and retrieval go through it."""

    index: FactorIndex

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.index.score_users(users)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Row-wise inner products (plus biases/offsets); NaN for unknown users or items."""
        return self.index.score(users, items)

    def recommend(self, users: np.ndarray, n: int) -> pd.DataFrame:
        return self.index.recommend(users, n, self.seen)
