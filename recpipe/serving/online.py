"""Ranking users the way the pipeline does, for the bundle (every known user at once) and
for the service (one history at request time), through the same functions.

A :class:`Ranking` holds what ranking one fold's users needs: the candidate models fitted
on the fold's history, the blend's weights, the trained ranker, and the fold's user, item
and pair-feature context. :meth:`Ranking.rank_users` is the batch path (the candidates
stage's ``recommend`` and the blend's :func:`~recpipe.blending.blend_block`, from each
model's held scores of a chunk of users (:meth:`~recpipe.models.base.Recommender.hold`),
and hybrid, then the rank stage's :func:`~recpipe.ranking.describe_block` and
:func:`~recpipe.ranking.rank_described`): built from the test fold, its lists are the
evaluated ones. :meth:`Ranking.rank_history` ranks one history given at request time (a
visitor's session, or a known user with new events): each model scores the history
(``score_history``; a factor model without it uses the user's stored factors when the user
is known), and the user's features are computed from the history against the item
statistics of the whole fold, so a known user's own history ranked this way gives the batch
list item for item.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe.blending import (
    Columns,
    blend_block,
    column,
    hybrid_score,
    rank_by,
    score_columns,
    sorted_by_key,
    union_columns,
)
from recpipe.features.config import FeaturesConfig
from recpipe.features.pairs import (
    PairContext,
    PairSimilarities,
    block_pair_features,
    pair_context,
    pair_feature_columns,
)
from recpipe.features.users import user_feature_columns
from recpipe.models.base import Recommender, concat_recs, shared_histories, top_n
from recpipe.models.retrieval import FactorRecommender
from recpipe.ranking import (
    KEY,
    RankerConfig,
    TrainResult,
    assemble,
    by_key,
    candidate_rows,
    margin,
    top_candidates,
)

if TYPE_CHECKING:
    import xgboost as xgb

HISTORY_COLUMNS = ["item_idx", "timestamp", "event", "weight", "rating"]
"""Columns of a history given to :meth:`Ranking.rank_history` (``event``, ``weight`` and
``rating`` are filled with ``view``, 1 and null when missing)."""

SESSION_USER = 0
"""The user index a fresh history takes in its one-user frames and Columns."""

HELD_CELLS = 1 << 25
"""Scores a model holds at once in :meth:`Ranking.blend_users` (128 MiB of float32): a
chunk of users is this many cells over the catalogue."""


def held_users(n_items: int) -> int:
    """Users per chunk of :meth:`Ranking.blend_users` (all of a 2,000-user block up to
    16,777 items; 537 users at 62,423)."""
    return max(1, HELD_CELLS // max(n_items, 1))


@dataclass
class Lists:
    """Ranked lists of one or more users: the ranker's, the blend's and each model's, as
    ``user_idx, item_idx, score, rank`` frames; ``contributions`` (fresh ranker lists only)
    holds, per row of ``ranker``, the ranker's feature contributions to its score."""

    ranker: pd.DataFrame
    blend: pd.DataFrame
    models: dict[str, pd.DataFrame]
    contributions: list[dict[str, float]] | None = None

    def get(self, model: str) -> pd.DataFrame:
        if model == "ranker":
            return self.ranker
        if model == "blend":
            return self.blend
        return self.models[model]


@dataclass
class Ranking:
    """Everything ranking one fold's users needs (see the module's docstring)."""

    models: dict[str, Recommender]
    n: dict[str, int]
    weights: dict[str, float]
    normalise: str
    ranker: TrainResult
    features: FeaturesConfig
    items: pd.DataFrame
    user_feats: pd.DataFrame
    item_feats: pd.DataFrame
    context: PairContext
    now: int
    pop_share: np.ndarray
    # the user attribute features as float32 (names, a row per user, row of each user_idx)
    _attrs: tuple[list[str], np.ndarray, dict[int, int]] | None = field(default=None, repr=False)
    _items_by_key: pd.DataFrame | None = field(default=None, repr=False)
    # the ranker's item features as float32, for one user's pairs (_one_user_features)
    _item_table: tuple[dict[str, int], np.ndarray, np.ndarray] | None = field(
        default=None, repr=False
    )

    @property
    def ranker_config(self) -> RankerConfig:
        return self.ranker.config

    # -- batch ------------------------------------------------------------------------
    def prepare(self) -> None:
        """Build now what ranking builds on first use (the item features by key, the factor
        models' retrieval indexes), so that worker processes forked after this share them
        instead of each building its own."""
        self._items_indexed()
        for model in self.models.values():
            if isinstance(model, FactorRecommender):
                model.index.build()

    def rank_users(self, users: np.ndarray, n: int) -> Lists:
        """Every list of ``users`` (known to the fold), each cut at ``n``: exactly the
        pipeline's stages applied to these users (:meth:`blend_users`, then
        :meth:`rank_pairs`)."""
        pairs, lists = self.blend_users(users, n)
        lists.ranker = self.rank_pairs(pairs, n)
        return lists

    def blend_users(
        self, users: np.ndarray, n: int, chunk: int | None = None
    ) -> tuple[pd.DataFrame, Lists]:
        """The first half of :meth:`rank_users`: the pairs the ranker works on (the blend's
        columns, sorted by user and item) and the lists but the ranker's (left empty).

        ``chunk`` users at a time (default :func:`held_users`), each chunk's scores held
        by every model for both its lists and its union's pairs (:meth:`Recommender.hold`;
        the four costly models hold theirs at once, up to about 4 x :data:`HELD_CELLS`).
        Every step is per user, so the result does not depend on the chunks."""
        users = np.unique(np.asarray(users, dtype=np.int64))  # sorted: chunks in user order
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be at least 1 user, not {chunk}")
        step = chunk or held_users(len(self.items))
        starts = range(0, len(users), step)
        parts = [self._blend_chunk(users[s : s + step], n) for s in starts] or [
            self._blend_chunk(users, n)
        ]
        if len(parts) == 1:
            return parts[0]
        empty = concat_recs([])
        pairs = [p for p, _ in parts if len(p)]
        lists = {m: concat_recs([c.models[m] for _, c in parts]) for m in self.models}
        blend = concat_recs([c.blend for _, c in parts])
        return (
            pd.concat(pairs, ignore_index=True) if pairs else empty,
            Lists(empty, blend, lists),
        )

    def _blend_chunk(self, users: np.ndarray, n: int) -> tuple[pd.DataFrame, Lists]:
        """:meth:`blend_users` of one chunk of users."""
        held = {m: model.hold(users) for m, model in self.models.items()}
        cands: dict[str, pd.DataFrame] = {}
        lists: dict[str, pd.DataFrame] = {}
        for m in held:
            # a list's first k items are the list of k (ties go to the lower item index)
            recs = held[m].recommend(max(self.n[m], n))
            lists[m] = _head(recs, n)
            # kept when empty: a block of users a model has nothing for still gets its
            # columns (NaN), so the lists do not depend on the blocks
            cands[m] = _head(recs, self.n[m])
        empty = concat_recs([])
        if not any(len(c) for c in cands.values()):
            return empty, Lists(empty, empty, lists)
        union = blend_block(cands, held, self.normalise)
        del held  # the blocks of scores, before the blend's frames
        blend, pairs = self._blend(union, n)
        return pairs, Lists(empty, blend, lists)

    def rank_pairs(
        self, pairs: pd.DataFrame, n: int, similarities: PairSimilarities | None = None
    ) -> pd.DataFrame:
        """The second half of :meth:`rank_users`: the ranker's lists of ``pairs`` (of
        :meth:`blend_users`), with the similarity features looked up in ``similarities``
        (:func:`~recpipe.features.pairs.pair_similarities` of the fold's pairs) when given."""
        if len(pairs) == 0:
            return concat_recs([])
        pf = block_pair_features(pairs[KEY], self.context, similarities)
        described = assemble(
            pairs, self.user_feats, self._items_indexed(), pd.concat([pairs[KEY], pf], axis=1)
        )
        # numpy, not the frame: the same float32 values, without pandas' conversion cost
        x = described[self.ranker.features].to_numpy(np.float32)
        ranked, _ = self._score(described, x, n, explain=0)
        return ranked

    # -- one fresh history ------------------------------------------------------------
    def rank_history(
        self, history: pd.DataFrame, n: int, user_idx: int | None = None, explain: int = 10
    ) -> Lists:
        """Every list for one user whose history is ``history`` (columns of
        :data:`HISTORY_COLUMNS`; the items must be catalogue indices), ranked now.

        ``user_idx``: the user's index when the bundle knows the user (models that cannot
        score a history then use what they learnt of the user). The lists' ``user_idx`` is
        :data:`SESSION_USER`. ``explain``: the ranker's feature contributions for this many items
        at the top of its list."""
        known = user_idx is not None and 0 <= user_idx < self.context.log.n_users
        session = normalise_history(history, len(self.items))  # as user SESSION_USER
        # a known user's index decides tie order in models that learn from sequences (a
        # seeded hash of user and item), as in the fit; a visitor's ties take those of user
        # SESSION_USER (0), as before there were Columns
        as_user = (
            session.assign(user_idx=int(user_idx))
            if known and user_idx != SESSION_USER
            else session
        )
        times = session["timestamp"].to_numpy()
        now = max(self.now, int(times.max())) if len(times) else self.now
        distinct = np.unique(session["item_idx"].to_numpy())
        seen = sp.csr_matrix(
            (np.ones(len(distinct), np.float32), (np.zeros(len(distinct), np.int64), distinct)),
            shape=(1, len(self.items)),
        )
        scorers: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {}
        cands: dict[str, pd.DataFrame] = {}
        lists: dict[str, pd.DataFrame] = {}
        with shared_histories():  # as_user checked and converted once, not per model
            for m, model in self.models.items():
                k = max(self.n[m], n)
                if known and (isinstance(model, FactorRecommender) or not model.supports_history):
                    # what the model learnt of the user, through the batch path's own calls (a
                    # factor model's fold-in of the history would only approximate it)
                    u = np.array([user_idx], dtype=np.int64)
                    recs = model.recommend(u, k).assign(user_idx=SESSION_USER)
                    scorers[m] = _stored_scorer(model, int(user_idx))
                elif model.supports_history and len(session):
                    dense = model.score_history(as_user, now)
                    recs = top_n(np.array([SESSION_USER]), dense[None, :].copy(), seen, k)
                    scorers[m] = _dense_scorer(dense)
                else:  # the model has nothing to say: its columns stay empty, as in the batch
                    recs = concat_recs([])
                    scorers[m] = _no_scorer
                lists[m] = _first(recs, n)
                cands[m] = _first(recs, self.n[m])
        if not any(len(c) for c in cands.values()):
            empty = concat_recs([])
            return Lists(empty, empty, lists, [])
        # from here on one user's pairs as plain arrays (Columns), not frames: the same
        # functions as the batch, which takes frames, without the cost of one-user frames
        union = union_columns(cands)
        union.update(score_columns(union["user_idx"], union["item_idx"], scorers, self.normalise))
        blend, pairs = self._blend(union, n)
        user = user_feature_columns(
            session,
            np.array([SESSION_USER], dtype=np.int64),
            self.items,
            now,
            self.features,
            self.pop_share,
            self.context.item_cats,
        )
        user.update(self._attributes(user_idx))
        ctx = pair_context(session, self.items, now, self.features, 1, items_from=self.context)
        pu, pi = column(pairs, "user_idx"), column(pairs, "item_idx")
        pf = pair_feature_columns(pu.astype(np.int64), pi.astype(np.int64), ctx)
        ranked, contributions = self._score(
            pairs, self._one_user_features(pairs, user, pf), n, explain
        )
        return Lists(ranked, blend, lists, contributions)

    # -- shared -----------------------------------------------------------------------
    def _blend(
        self, df: pd.DataFrame | dict[str, np.ndarray], n: int
    ) -> tuple[pd.DataFrame, pd.DataFrame | Columns]:
        """The blend's lists of the union ``df`` (which gains ``m_hybrid``), and the pairs
        the ranker works on, sorted by user and item (a frame, or Columns for Columns)."""
        df["m_hybrid"] = hybrid_score(df, self.weights)
        blend = rank_by(df, column(df, "m_hybrid"), n)
        if not isinstance(df, pd.DataFrame):  # union_columns: sorted by user and item
            keep = candidate_rows(df, self.ranker_config)
            return blend, {c: a if keep is None else a[keep] for c, a in df.items()}
        pairs = top_candidates(df, self.ranker_config)  # in df's order, a range index
        if not sorted_by_key(pairs["user_idx"].to_numpy(), pairs["item_idx"].to_numpy()):
            # (the union comes sorted by user and item, and a sorted frame is its own sort)
            pairs = pairs.sort_values(KEY, kind="stable", ignore_index=True)
        return blend, pairs

    def _score(
        self, described: pd.DataFrame | Columns, x: np.ndarray, n: int, explain: int
    ) -> tuple[pd.DataFrame, list[dict[str, float]] | None]:
        """The ranker's lists of the pairs ``described`` (their features ``x``, in the
        ranker's order), and the contributions of the first ``explain`` items of each when
        ``explain``."""
        base = margin(described, self.ranker_config)
        scores = self.ranker.model.predict(x, base_margin=base, output_margin=True)
        ranked = rank_by(described, scores.astype(np.float32), n)
        contributions = None
        if explain:
            contributions = _contributions(
                self.ranker,
                x,
                base,
                column(described, "item_idx"),
                ranked["item_idx"].to_numpy()[:explain],
            )
        return ranked, contributions

    def _one_user_features(
        self, pairs: Columns, user: dict[str, np.ndarray], pf: Columns
    ) -> np.ndarray:
        """The ranker's features of one user's ``pairs`` (sorted by item; ``user`` the
        user's features, each an array of one value, ``pf`` the pair features in the pairs'
        order) as the float32 matrix of :func:`~recpipe.ranking.assemble` and
        ``to_numpy``, put together without the frame: each column converted to float32
        alone, as pandas converts them, the user's values repeated, the item features read
        from a float32 table made once (NaN for an item without features). The known-user
        test checks the lists equal the batch ones."""
        feats = self.ranker.features
        if self._item_table is None:
            table = self._items_indexed()
            cols = [c for c in feats if c in table.columns]
            index = table.index.to_numpy(np.int64)
            row_of = np.full(int(index.max()) + 2 if len(index) else 1, -1, dtype=np.int64)
            row_of[index] = np.arange(len(index))
            self._item_table = (
                {c: j for j, c in enumerate(cols)},
                table[cols].to_numpy(np.float32),
                row_of,
            )
        item_col, item_values, row_of = self._item_table
        items = np.asarray(pairs["item_idx"], dtype=np.int64)
        rows = row_of[np.minimum(items, len(row_of) - 1)]  # the last slot is -1
        x = np.empty((len(items), len(feats)), dtype=np.float32)
        for j, f in enumerate(feats):
            if f in pairs:
                x[:, j] = np.asarray(pairs[f], dtype=np.float32)
            elif f in user:
                x[:, j] = np.asarray(user[f], dtype=np.float32)[0]
            elif f in item_col:
                x[:, j] = np.where(rows >= 0, item_values[rows, item_col[f]], np.nan)
            elif f in pf:
                x[:, j] = np.asarray(pf[f], dtype=np.float32)
            else:
                raise KeyError(f"ranker feature {f!r} is in none of the tables")
        return x

    def _items_indexed(self) -> pd.DataFrame:
        """The item features indexed by ``item_idx``, made once, not at every call."""
        if self._items_by_key is None:
            self._items_by_key = by_key(self.item_feats, "item_idx")
        return self._items_by_key

    def _attributes(self, user_idx: int | None) -> dict[str, np.ndarray]:
        """The user's attribute features (``u_attr_*``) from the fold's table as float32
        arrays of one value, NaN for a visitor: they do not depend on the history, and
        their columns (levels) are the fold's."""
        if self._attrs is None:
            cols = [c for c in self.user_feats.columns if c.startswith("u_attr_")]
            # column by column, as the batch path converts them
            values = np.empty((len(self.user_feats) + 1, len(cols)), dtype=np.float32)
            for j, c in enumerate(cols):
                values[:-1, j] = self.user_feats[c].to_numpy(np.float32)
            values[-1] = np.nan  # a visitor's row
            users = self.user_feats["user_idx"].to_numpy(np.int64).tolist()
            self._attrs = (cols, values, {u: r for r, u in enumerate(users)})
        cols, values, row_of = self._attrs
        row = values[row_of.get(int(user_idx), -1) if user_idx is not None else -1]
        return {c: row[j : j + 1] for j, c in enumerate(cols)}


def _head(recs: pd.DataFrame, n: int) -> pd.DataFrame:
    """Each user's first ``n`` items of a list sorted by user and rank."""
    return recs[recs["rank"] <= n].reset_index(drop=True)


def _first(recs: pd.DataFrame, n: int) -> pd.DataFrame:
    """:func:`_head` of one user's list (ranks 1, 2, ... in order, a range index): its first
    rows (the list itself when it is no longer: frames are copied on write)."""
    return recs if len(recs) <= n else recs.iloc[:n].reset_index(drop=True)


def normalise_history(history: pd.DataFrame, n_items: int) -> pd.DataFrame:
    """``history`` with every column of :data:`HISTORY_COLUMNS` (defaults filled), then
    ``user_idx`` (:data:`SESSION_USER`), items checked against the catalogue."""
    if "item_idx" not in history or "timestamp" not in history:
        raise ValueError("a history needs the columns item_idx and timestamp")
    out = pd.DataFrame(
        {
            "item_idx": history["item_idx"].to_numpy(np.int64),
            "timestamp": history["timestamp"].to_numpy(np.int64),
            "event": history["event"].astype(str).to_numpy()
            if "event" in history
            else np.full(len(history), "view", dtype=object),
            "weight": history["weight"].to_numpy(np.float32)
            if "weight" in history
            else np.ones(len(history), dtype=np.float32),
            "rating": history["rating"].to_numpy(np.float64)
            if "rating" in history
            else np.full(len(history), np.nan),
            "user_idx": np.full(len(history), SESSION_USER, dtype=np.int64),
        }
    )
    items = out["item_idx"].to_numpy()
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"history: item_idx outside 0..{n_items - 1}")
    return out


def _dense_scorer(dense: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return dense[np.asarray(items, dtype=np.int64)]

    return score


def _no_scorer(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    return np.full(len(items), np.nan, dtype=np.float32)


def _stored_scorer(model: Recommender, user: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return model.score(np.full(len(items), user, dtype=np.int64), items)

    return score


def _contributions(
    result: TrainResult,
    x: np.ndarray,
    base: np.ndarray | None,
    items: np.ndarray,
    wanted: np.ndarray,
) -> list[dict[str, float]]:
    """For each item of ``wanted`` (among the pairs' ``items``, whose features are the rows
    of ``x``): each feature's contribution to the ranker's score, by the
    trees' path attribution (XGBoost's ``approx_contribs``: the change of the expected
    leaf value at each split on the path; exact SHAP values cost ten times more for the
    same ordering of the strongest features), non-zero ones only, rounded."""
    import xgboost as xgb

    if len(items) and np.all(items[1:] > items[:-1]):  # one user's pairs, sorted by item
        rows = np.searchsorted(items, wanted)
    else:
        rows = pd.Series(np.arange(len(items)), index=items).loc[wanted].to_numpy()
    if len(rows) == 0:
        return []
    booster: xgb.Booster = result.model.get_booster()
    # XGBoost refuses infinite inputs here (prediction reads them as values): a feature
    # that overflowed explains nothing, so it counts as missing
    finite = np.where(np.isfinite(x[rows]), x[rows], np.nan)
    # the columns are the booster's features in its order (x is built so): no names to check
    dm = xgb.DMatrix(finite, base_margin=None if base is None else base[rows])
    contrib = booster.predict(dm, pred_contribs=True, approx_contribs=True, validate_features=False)
    names = result.features
    # the non-zero contributions (the last column is the bias) in row, then feature order
    at, feature = np.nonzero(contrib[:, :-1])
    keys = [names[j] for j in feature.tolist()]
    values = [round(v, 4) for v in contrib[at, feature].astype(np.float64).tolist()]
    ends = np.searchsorted(at, np.arange(len(contrib) + 1)).tolist()
    return [dict(zip(keys[a:b], values[a:b], strict=True)) for a, b in itertools.pairwise(ends)]
