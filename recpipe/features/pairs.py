"""Pair features (``p_*``) of candidate ``(user_idx, item_idx)`` pairs, from a fold's history.

Category affinity and recency, content (TF-IDF) and collaborative similarity between the
candidate and the user's recent items, and the item's popularity relative to the user's
items. They depend on the candidates, so the rank stage computes them (the features stage
writes the user and item features).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe.features.arrays import _expand_rows, _group_starts, _safe_div, _take
from recpipe.features.config import FeaturesConfig
from recpipe.features.history import SECONDS_PER_DAY, _Log, _UserCategories
from recpipe.features.metadata import _by_index, item_category_matrix, item_vectors
from recpipe.models.base import BLOCK_THREADS, in_threads

# Entries of one dense block of item-item similarities (float64): bounds peak memory of
# the content features to ~32 MB per block whatever the catalogue size, and about 200 MB
# with the gathers and summaries of its pairs (as many entries each); up to
# models.base.BLOCK_THREADS blocks are computed side by side, one a thread.
_SIM_BLOCK_ENTRIES = 1 << 22

SHARED_PAIRS = 1 << 25
"""Most pairs whose similarity features :func:`similarities_by_block` computes together
(about 200 bytes a pair while they are computed, 56 held after: some 7 GB and 1.9 GB at
this bound, whatever the size of the data; a 25M-event test fold's 32.5M pairs fit)."""

# The similarity's dense route (:func:`dense_right`): the right-hand side of the item-item
# product laid out as dense column chunks of _DENSE_CHUNK_COLUMNS (narrow chunks were faster
# than one wide matrix: 0.84 against 2.15 ms an item at 25M), used while it takes at most
# _DENSE_RIGHT_BYTES and the cost model below says it is cheaper. Costs in ns, measured on
# the 25M synthetic catalogue's content vectors (62,423 items x 1,350 terms, 30 terms an
# item, a term in 1,400 items; 2 cores, 2026-12-06): scipy's sparse product paid 8.2 per
# multiply-add and 17.8 per entry of its result made dense; the dense route 0.45 per (stored
# entry of a left row x column) and up to 17 per cell of the right side it lays out.
_DENSE_CHUNK_COLUMNS = 1024
_DENSE_RIGHT_BYTES = 1 << 30
_SPARSE_NS_PER_PRODUCT = 8.2
_SPARSE_NS_PER_ENTRY = 17.8
_DENSE_NS_PER_PRODUCT = 0.45
_DENSE_NS_PER_RIGHT_CELL = 17.0


@dataclass
class PairContext:
    """Everything pair features read from a fold's history and the catalogue, computed
    once: the features of any block of pairs are then a function of the block alone, so
    scoring a fold's candidates one block of users at a time gives the same numbers."""

    log: _Log
    now: int
    events: np.ndarray
    item_cats: sp.csr_matrix
    user_cats: _UserCategories
    t0: int
    content: sp.csr_matrix
    content_t: sp.csr_matrix
    content_recent: tuple[np.ndarray, np.ndarray]
    cf: sp.csr_matrix
    cf_t: sp.csr_matrix
    cf_recent: tuple[np.ndarray, np.ndarray]
    pop: np.ndarray
    mean_pop_u: np.ndarray
    cfg: FeaturesConfig
    # every item pair's content and collaborative similarity (item x item, float64), when
    # made by :func:`with_similarity_tables`: a similarity is then read, not computed
    content_table: np.ndarray | None = None
    cf_table: np.ndarray | None = None


def similarity_tables_bytes(ctx: PairContext) -> int:
    """What :func:`with_similarity_tables` would hold: two float64 item x item tables."""
    return 2 * 8 * ctx.content.shape[0] ** 2


def with_similarity_tables(ctx: PairContext) -> PairContext:
    """``ctx`` with every item pair's similarities laid out (:func:`similarity_tables_bytes`),
    for a service that describes many small sets of pairs against one catalogue: a
    one-user request then gathers its similarities (at MovieLens-1M shape, 2.5 ms of a
    20 ms fresh ranking went into computing them).

    Each table is the item x item product made dense: its entries are the floats the
    per-pairs products give, bit for bit (a product's row sums its left row's terms in that
    row's stored order, whatever the right-hand side's other columns), and the features
    read from it are the same (a test checks it)."""
    return replace(
        ctx,
        content_table=_dense_products(ctx.content, ctx.content_t),
        cf_table=_dense_products(ctx.cf, ctx.cf_t),
    )


def _dense_products(vectors: sp.csr_matrix, vectors_t: sp.csr_matrix) -> np.ndarray:
    """``vectors @ vectors_t`` as a dense array, a block of rows at a time (the sparse
    product of a block is at most :data:`_SIM_BLOCK_ENTRIES` entries beside the array)."""
    out = np.empty((vectors.shape[0], vectors_t.shape[1]))
    step = max(1, _SIM_BLOCK_ENTRIES // max(vectors_t.shape[1], 1))
    for start in range(0, vectors.shape[0], step):
        rows = np.arange(start, min(start + step, vectors.shape[0]))
        out[rows] = item_similarities(vectors, rows, vectors_t, None)
    return out


def pair_context(
    history: pd.DataFrame,
    items: pd.DataFrame,
    now: int,
    cfg: FeaturesConfig,
    n_users: int,
    items_from: PairContext | None = None,
    content: sp.csr_matrix | None = None,
) -> PairContext:
    """The :class:`PairContext` of ``history`` seen at ``now``, for pairs of users below
    ``n_users`` and items of ``items``. ``content`` is :func:`item_vectors` of ``items``,
    when the caller has it already (it depends on the items only: a stage describing several
    folds computes it once).

    With ``items_from``, everything about items (categories, content vectors, collaborative
    vectors, popularity) comes from that context instead of ``history``: the service
    describes one user's fresh history against the whole bundle's items, which gives the
    user's pairs the same features as a context of the whole history would."""
    if content is not None and (items_from is not None or content.shape[0] != len(items)):
        raise ValueError(
            f"content vectors of {content.shape[0]} items for {len(items)} items"
            + (" (given with items_from, which holds its own)" if items_from is not None else "")
        )
    log = _Log(history, n_users, len(items), now)
    tables = (None, None) if items_from is None else (items_from.content_table, items_from.cf_table)
    if items_from is None:
        items = _by_index(items)  # (with items_from, items is only counted)
        item_cats, _ = item_category_matrix(items)
        content = item_vectors(items) if content is None else content
        cf = interaction_vectors(log)
        pop = log.item_users().astype(np.float64)
    else:
        item_cats, content = items_from.item_cats, items_from.content
        cf, pop = items_from.cf, items_from.pop
    # transposed once here, not once per block of pairs
    content_t = sp.csr_matrix(content.T) if items_from is None else items_from.content_t
    cf_t = sp.csr_matrix(cf.T) if items_from is None else items_from.cf_t
    depth = max([cfg.content_history, *cfg.recent_items])
    n_items_u = np.bincount(log.pair_user, minlength=log.n_users)
    mean_pop_u = _safe_div(
        np.bincount(log.pair_user, weights=pop[log.pair_item], minlength=log.n_users), n_items_u
    )
    return PairContext(
        log=log,
        now=int(now),
        events=log.user_events(),
        item_cats=item_cats,
        user_cats=_UserCategories(log, item_cats),
        # Last touch stored as seconds after the log's start + 1, so 0 means "never".
        t0=int(log.ts.min()) if len(log.ts) else int(now),
        content=content,
        content_t=content_t,
        content_recent=_recent_items(log, np.diff(content.indptr) > 0, cfg.content_history),
        cf=cf,
        cf_t=cf_t,
        cf_recent=_recent_items(log, np.diff(cf.indptr) > 0, depth),
        pop=pop,
        mean_pop_u=mean_pop_u,
        cfg=cfg,
        content_table=tables[0],
        cf_table=tables[1],
    )


def pair_features(
    pairs: pd.DataFrame,
    history: pd.DataFrame,
    items: pd.DataFrame,
    now: int,
    cfg: FeaturesConfig,
    content: sp.csr_matrix | None = None,
) -> pd.DataFrame:
    """Features of candidate ``(user_idx, item_idx)`` pairs from ``history`` seen at ``now``.

    Same row order and index as ``pairs``; columns ``p_*`` of
    :data:`~recpipe.features.docs.FEATURE_DOCS`. Items must be catalogue items; users without
    history get NaN. (:func:`pair_context` + :func:`block_pair_features` compute the same
    one block of pairs at a time.) ``content``: as in :func:`pair_context`.
    """
    pu = pairs["user_idx"].to_numpy(np.int64)
    n_users = int(pu.max()) + 1 if len(pu) else 0
    ctx = pair_context(history, items, now, cfg, n_users, content=content)
    return block_pair_features(pairs, ctx)


def block_pair_features(
    pairs: pd.DataFrame, ctx: PairContext, similarities: PairSimilarities | None = None
) -> pd.DataFrame:
    """:func:`pair_features` of ``pairs`` from a :class:`PairContext`; the similarity
    columns looked up in ``similarities`` (:func:`pair_similarities` of a superset of the
    pairs, from the same context) when given."""
    return pd.DataFrame(
        pair_feature_columns(
            pairs["user_idx"].to_numpy(np.int64),
            pairs["item_idx"].to_numpy(np.int64),
            ctx,
            similarities,
        ),
        index=pairs.index,
    )


def pair_feature_columns(
    pu: np.ndarray, pi: np.ndarray, ctx: PairContext, similarities: PairSimilarities | None = None
) -> dict[str, np.ndarray]:
    """The columns of :func:`block_pair_features` for the pairs ``(pu[k], pi[k])`` (int64)."""
    log, now = ctx.log, ctx.now
    _check_pairs(pu, pi, log)
    n = len(pu)

    events, item_cats, uc, t0 = ctx.events, ctx.item_cats, ctx.user_cats, ctx.t0
    pos, cat = _expand_rows(item_cats, pi)
    hit = uc.lookup(pu[pos], cat)
    share = _take(uc.events, hit, 0) / np.maximum(events[pu[pos]], 1)
    touched = np.where(hit >= 0, _take(uc.last, hit, 0) - t0 + 1, 0)
    n_cats = np.diff(item_cats.indptr)[pi]
    starts = np.cumsum(n_cats) - n_cats
    with_cats = n_cats > 0
    cat_ok = with_cats & (events[pu] > 0)

    aff = np.full(n, np.nan)
    aff_max = np.full(n, np.nan)
    last_touch = np.zeros(n)
    if len(share):
        sums = np.bincount(pos, weights=share, minlength=n)
        aff[cat_ok] = sums[cat_ok] / n_cats[cat_ok]
        aff_max[cat_ok] = np.maximum.reduceat(share, starts[with_cats])[cat_ok[with_cats]]
        last_touch[with_cats] = np.maximum.reduceat(touched, starts[with_cats])
    days_cat = np.where(last_touch > 0, (now - (last_touch + t0 - 1)) / SECONDS_PER_DAY, np.nan)

    sims = _similarity_columns(pu, pi, ctx) if similarities is None else similarities.lookup(pu, pi)
    return {
        "p_cat_affinity": aff,
        "p_cat_max_affinity": aff_max,
        "p_days_since_cat": days_cat,
        **sims,
        "p_user_item_pop_ratio": _safe_div(ctx.pop[pi], ctx.mean_pop_u[pu]),
    }


def _check_pairs(pu: np.ndarray, pi: np.ndarray, log: _Log) -> None:
    """Refuse pairs outside the context's items or users."""
    if len(pi) and (pi.min() < 0 or pi.max() >= log.n_items):
        raise ValueError("pairs refer to item_idx outside the items table")
    if len(pu) and (pu.min() < 0 or pu.max() >= log.n_users):
        raise ValueError("pairs refer to user_idx outside the users the context was made for")


def _similarity_columns(pu: np.ndarray, pi: np.ndarray, ctx: PairContext) -> dict[str, np.ndarray]:
    """The content and collaborative similarity features of the pairs ``(pu, pi)``, by
    name, in the order of :func:`block_pair_features`'s columns."""
    cfg = ctx.cfg
    content = _recent_similarity(
        pu,
        pi,
        ctx.log,
        ctx.content,
        cfg.content_history,
        (),
        ctx.content_recent,
        ctx.content_t,
        ctx.content_table,
    )
    recent = sorted(cfg.recent_items)
    cf = _recent_similarity(
        pu, pi, ctx.log, ctx.cf, cfg.content_history, recent, ctx.cf_recent, ctx.cf_t, ctx.cf_table
    )
    return {
        "p_content_max_sim": content["max"],
        "p_content_mean_sim": content["mean"],
        **{f"p_cf_last{j}_sim": cf[f"mean{j}"] for j in cfg.recent_items},
        "p_cf_max_sim": cf["max"],
    }


@dataclass
class PairSimilarities:
    """The similarity features of a set of pairs, computed together by
    :func:`pair_similarities`; :func:`block_pair_features` looks a block's pairs up here
    instead of computing them."""

    n_items: int
    keys: np.ndarray  # sorted user_idx * n_items + item_idx
    columns: dict[str, np.ndarray]  # in the order of keys

    def lookup(self, pu: np.ndarray, pi: np.ndarray) -> dict[str, np.ndarray]:
        """The columns at the pairs ``(pu, pi)``, each of which must be here."""
        wanted = np.asarray(pu, dtype=np.int64) * self.n_items + np.asarray(pi, dtype=np.int64)
        if len(wanted) and not len(self.keys):
            missing = np.arange(len(wanted))
        else:
            pos = np.minimum(np.searchsorted(self.keys, wanted), max(len(self.keys) - 1, 0))
            missing = np.flatnonzero(self.keys[pos] != wanted)
        if len(missing):
            u, i = pu[missing[0]], pi[missing[0]]
            raise ValueError(
                f"pair (user_idx {u}, item_idx {i}) is not among the precomputed similarities"
            )
        return {name: values[pos] for name, values in self.columns.items()}


def pair_similarities(pu: np.ndarray, pi: np.ndarray, ctx: PairContext) -> PairSimilarities:
    """The similarity features of the distinct pairs ``(pu, pi)``, computed in one pass.

    Each similarity is a sum over an item-item product; :func:`_recent_similarity` computes
    those products one block of candidate items at a time, against every item a user of the
    call has in the history. When a fold's candidates are described one block of users at a
    time, every block of a large fold holds nearly every item and every history item, so each
    block repeats nearly the whole item x item product. Computed here once for all of the
    fold's pairs, and looked up per block: the same floats (a pair's features depend on the
    pair and the context alone, whatever else is in the call).
    """
    pu = np.asarray(pu, dtype=np.int64)
    pi = np.asarray(pi, dtype=np.int64)
    _check_pairs(pu, pi, ctx.log)
    n_items = ctx.log.n_items
    keys = np.unique(pu * n_items + pi)
    users, items = np.divmod(keys, n_items)
    return PairSimilarities(n_items, keys, _similarity_columns(users, items, ctx))


def pair_arrays(pairs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``pairs``' ``user_idx`` and ``item_idx`` as int32 arrays (half the memory of int64:
    a large fold's keys are held while its blocks are described)."""
    out = []
    for column in ("user_idx", "item_idx"):
        values = pairs[column].to_numpy()
        if len(values) and values.max() > np.iinfo(np.int32).max:
            out.append(values.astype(np.int64))
        else:
            out.append(values.astype(np.int32))
    return out[0], out[1]


def similarity_groups(sizes: Sequence[int], budget: int | None = None) -> list[list[int]]:
    """The blocks of pairs (by their numbers of pairs ``sizes``, in the order they will be
    described) whose similarity features are computed together: consecutive blocks while
    their pairs total at most ``budget`` (:data:`SHARED_PAIRS` when None)."""
    budget = SHARED_PAIRS if budget is None else budget
    groups: list[list[int]] = []
    total = 0
    for k, size in enumerate(sizes):
        if not groups or total + size > budget:
            groups.append([])
            total = 0
        groups[-1].append(k)
        total += size
    return groups


def group_similarities(
    blocks: Sequence[tuple[np.ndarray, np.ndarray]], ctx: PairContext
) -> PairSimilarities | None:
    """The similarity features of a group of blocks of pairs (their ``(user_idx,
    item_idx)`` arrays), or None for a group of one block: the block computes its own, the
    same work."""
    if len(blocks) <= 1:
        return None
    return pair_similarities(
        np.concatenate([users for users, _ in blocks]),
        np.concatenate([items for _, items in blocks]),
        ctx,
    )


def similarities_by_block(
    blocks: Sequence[tuple[np.ndarray, np.ndarray]],
    ctx: PairContext,
    budget: int | None = None,
) -> Iterator[PairSimilarities | None]:
    """For each block of pairs (its ``(user_idx, item_idx)`` arrays, in the order the blocks
    will be described), where :func:`block_pair_features` should look its similarity features
    up: the blocks are grouped (:func:`similarity_groups`), and a group's are computed once
    (:func:`group_similarities`) when its first block comes."""
    for group in similarity_groups([len(users) for users, _ in blocks], budget):
        shared = group_similarities([blocks[k] for k in group], ctx)
        for _ in group:
            yield shared
        del shared


def _recency_order(
    user: np.ndarray, item: np.ndarray, last: np.ndarray, n_items: int
) -> np.ndarray:
    """Order of pairs by user, then most recent first, then item_idx.

    One int64 key sorts several times faster than ``np.lexsort`` on three keys; the key is
    (user, rank of -last, item) in mixed radix, used when it cannot overflow.
    """
    if len(user) == 0:
        return np.array([], dtype=np.int64)
    times, rank = np.unique(-last, return_inverse=True)
    n_users = int(user.max()) + 1
    if n_users * len(times) * max(n_items, 1) < np.iinfo(np.int64).max // 2:
        return np.argsort((user * len(times) + rank) * max(n_items, 1) + item)
    return np.lexsort((item, rank, user))


def _recent_items(log: _Log, described: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's ``k`` most recent distinct described items, as (lengths, padded matrix).

    Row ``u`` of the ``(n_users, <= k)`` matrix holds the user's items, most recent first,
    padded with 0 after ``lengths[u]`` entries. Recency = the pair's last event; ties go to
    the smaller item_idx, so the result does not depend on the row order of the history.
    """
    keep = described[log.pair_item]
    user, item, last = log.pair_user[keep], log.pair_item[keep], log.pair_last[keep]
    order = _recency_order(user, item, last, log.n_items)
    user, item = user[order], item[order]
    starts = _group_starts(user)
    rank = np.arange(len(user)) - np.repeat(starts, np.diff(np.r_[starts, len(user)]))
    top = rank < k
    lengths = np.bincount(user[top], minlength=log.n_users)
    padded = np.zeros((log.n_users, int(lengths.max(initial=0))), dtype=np.int64)
    padded[user[top], rank[top]] = item[top]
    return lengths, padded


def interaction_vectors(log: _Log) -> sp.csr_matrix:
    """L2-normalised binary item x user vectors of the history, row = ``item_idx`` (items
    without history get empty rows): their dot products are collaborative cosines."""
    m = sp.csr_matrix(
        (np.ones(len(log.pair_item)), (log.pair_item, log.pair_user)),
        shape=(log.n_items, log.n_users),
        dtype=np.float64,
    )
    counts = np.asarray(m.sum(axis=1)).ravel()
    inverse = np.zeros(len(counts))
    inverse[counts > 0] = 1.0 / np.sqrt(counts[counts > 0])
    return sp.csr_matrix(sp.diags(inverse) @ m)


def _recent_similarity(
    pu: np.ndarray,
    pi: np.ndarray,
    log: _Log,
    vectors: sp.csr_matrix,
    k: int,
    prefixes: Sequence[int] = (),
    recent: tuple[np.ndarray, np.ndarray] | None = None,
    vectors_t: sp.csr_matrix | None = None,
    table: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Cosines between each pair's item and the user's ``k`` most recent history items.

    ``vectors`` are L2-normalised item rows (row = ``item_idx``); items with an empty row
    are undescribed. Returns ``max`` and ``mean`` over the (up to) ``k`` items and, for each
    ``j`` of ``prefixes``, ``mean<j>``: the mean over the ``j`` most recent of them (NaN
    where the item or the user's history is undescribed).

    Item-item similarities are computed in blocks of candidate items (a sparse product made
    dense, or, where the cost model of :func:`dense_right` says so, the candidates' sparse
    rows times dense chunks of the other items: the same floats), and each pair gathers its
    row's entries at the user's (padded) history items: one item-item block per chunk of
    the catalogue and dense gathers, no per-pair loop; the blocks run side by side in
    threads (:func:`~recpipe.models.base.in_threads`). With ``table`` (every item pair's
    similarity, :func:`with_similarity_tables`) the pairs gather their entries from it.
    """
    n = len(pu)
    names = ["max", "mean", *(f"mean{j}" for j in prefixes)]
    out = {name: np.full(n, np.nan) for name in names}
    if n == 0 or vectors.shape[1] == 0 or len(log.pair_user) == 0:
        return out
    described = np.diff(vectors.indptr) > 0
    # each user's recent described items: given (computed once per fold) or computed here
    if recent is None:
        recent = _recent_items(log, described, max([k, *prefixes]))
    hist_len, hist = recent
    cand = np.flatnonzero(described[pi] & (hist_len[pu] > 0))
    if len(cand) == 0:
        return out
    # pairs gathered at once: bounds the (pairs x history) temporaries like the blocks below
    step = max(1, _SIM_BLOCK_ENTRIES // max(hist.shape[1], 1))
    if table is not None:
        for r in range(0, len(cand), step):
            rows = cand[r : r + step]
            values = table[pi[rows][:, None], hist[pu[rows]]]
            _summarise(out, rows, values, hist_len[pu[rows]], k, prefixes)
        return out
    # Only the users' history items are ever gathered: when they are few (one user's
    # session in the service), the products are taken against those columns alone. Each
    # similarity is the same sum in the same order either way (a sparse product adds up
    # along the left row), so the features do not depend on which path ran.
    users = np.unique(pu[cand])
    columns = np.unique(hist[users][np.arange(hist.shape[1]) < hist_len[users][:, None]])
    n_all = vectors.shape[0]
    restricted = len(columns) * 4 < n_all
    if restricted:
        vectors_t = sp.csr_matrix(vectors[columns].T)
        to_column = np.zeros(n_all, dtype=np.int64)
        to_column[columns] = np.arange(len(columns))
        hist = to_column[hist]
    elif vectors_t is None:
        vectors_t = sp.csr_matrix(vectors.T)
    cand = cand[np.argsort(pi[cand], kind="stable")]
    cand_items = pi[cand]
    distinct = np.unique(cand_items)
    n_items = vectors_t.shape[1]
    block = max(1, _SIM_BLOCK_ENTRIES // n_items)
    right = dense_right(vectors, columns if restricted else None, vectors_t, distinct)

    def one_block(b: int) -> None:
        # each block fills its own rows of ``out``: blocks run in any order, side by side
        block_items = distinct[b : b + block]
        lo, hi = np.searchsorted(cand_items, [block_items[0], block_items[-1] + 1])
        sims = item_similarities(vectors, block_items, vectors_t, right).ravel()
        for r in range(lo, hi, step):
            rows = cand[r : min(r + step, hi)]
            local = np.searchsorted(block_items, pi[rows])
            values = sims[(local * n_items)[:, None] + hist[pu[rows]]]
            _summarise(out, rows, values, hist_len[pu[rows]], k, prefixes)

    # the products and gathers release the interpreter lock: the blocks share the cores
    in_threads(one_block, list(range(0, len(distinct), block)), BLOCK_THREADS)
    return out


def _summarise(
    out: dict[str, np.ndarray],
    rows: np.ndarray,
    values: np.ndarray,
    lengths: np.ndarray,
    k: int,
    prefixes: Sequence[int],
) -> None:
    """Fill ``out``'s ``rows`` from ``values``, each row's similarities with its user's
    recent items (most recent first, padded after ``lengths``): the max and mean over the
    first ``k``, and the mean over the first ``j`` for each of ``prefixes``."""
    slots = np.arange(values.shape[1])
    used = np.minimum(lengths, k)
    inside = slots < used[:, None]
    out["max"][rows] = np.where(inside, values, -np.inf).max(axis=1)
    out["mean"][rows] = np.where(inside, values, 0.0).sum(axis=1) / used
    for j in prefixes:
        used_j = np.minimum(lengths, j)
        inside_j = slots < used_j[:, None]
        out[f"mean{j}"][rows] = np.where(inside_j, values, 0.0).sum(axis=1) / used_j


def item_similarities(
    vectors: sp.csr_matrix,
    items: np.ndarray,
    vectors_t: sp.csr_matrix,
    right: list[tuple[int, np.ndarray]] | None,
) -> np.ndarray:
    """The similarities of the ``items`` rows of ``vectors`` with every column of
    ``vectors_t``, dense (items x columns): the sparse product made dense, or with ``right``
    (:func:`dense_right`'s chunks) the rows' sparse vectors times the dense chunks, the same
    floats."""
    if right is None:
        return (vectors[items] @ vectors_t).toarray()
    left = vectors[items]
    dense = np.empty((len(items), vectors_t.shape[1]))
    for start, chunk in right:
        dense[:, start : start + chunk.shape[1]] = left @ chunk
    return dense


def dense_right(
    vectors: sp.csr_matrix,
    columns: np.ndarray | None,
    vectors_t: sp.csr_matrix,
    rows: np.ndarray,
) -> list[tuple[int, np.ndarray]] | None:
    """The right-hand side ``vectors_t`` of the similarities of ``vectors[rows]`` as dense
    column chunks ``(first column, terms x columns array)``, or None where the sparse
    product is the cheaper route by the cost model above or the chunks would pass
    :data:`_DENSE_RIGHT_BYTES`.

    ``vectors_t`` is ``vectors.T`` or, with ``columns``, ``vectors[columns].T``; column
    ``c`` of the chunks is the same vector. For canonical, finite vectors (no duplicate
    entries, as the pipeline's are) both routes give the same floats, bit for bit:
    scipy's sparse product and its sparse-times-dense product both add a left row's products
    in the row's stored order, starting from +0; a term the right column lacks adds an exact
    0 here (adding a zero never changes a sum that is not -0, and a sum from +0 is never -0),
    and a similarity the sparse product does not store is 0 either way.
    """
    n_terms, n_columns = vectors_t.shape
    if n_terms * n_columns * 8 > _DENSE_RIGHT_BYTES:
        return None
    left = vectors[rows]
    products = float(np.diff(vectors_t.indptr)[left.indices].sum())
    entries = min(products, float(len(rows)) * n_columns)
    sparse = _SPARSE_NS_PER_PRODUCT * products + _SPARSE_NS_PER_ENTRY * entries
    dense = (
        _DENSE_NS_PER_PRODUCT * float(left.nnz) * n_columns
        + _DENSE_NS_PER_RIGHT_CELL * float(n_terms) * n_columns
    )
    if dense >= sparse:
        return None
    source = vectors if columns is None else vectors[columns]
    return [
        (start, np.ascontiguousarray(source[start : start + _DENSE_CHUNK_COLUMNS].toarray().T))
        for start in range(0, n_columns, _DENSE_CHUNK_COLUMNS)
    ]
