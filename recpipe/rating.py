"""Hybrid rating prediction: several rating signals blended by a second-level regressor.

Base signals, each a full rating prediction for a (user, item) pair:

- ``baseline``: ``mu + b_u + b_i``, the global mean plus regularised user and item biases,
  fit by alternating least squares (as surprise's ``baseline_only``: ``reg_item`` and
  ``reg_user`` shrink the biases of items and users with few ratings towards 0);
- ``svd``: :class:`recpipe.models.svd.SVD` (biased Funk SVD through surprise);
- ``knn``: item neighbourhood on baseline residuals (KNNBaseline with the pearson-baseline
  similarity, computed with numpy): ``baseline + sum_j s_ij e_uj / sum_j s_ij`` over the
  ``knn_k`` items ``j`` the user rated that are most similar to ``i`` (positive ``s_ij``
  only), ``e_uj`` the user's residual ``r_uj - baseline(u, j)``, ``s_ij`` the pearson
  correlation of the residuals over the users who rated both, shrunk by
  ``(n_ij - 1) / (n_ij - 1 + knn_shrinkage)``;
- ``content``: ``baseline + a_u(genres of i) + a_u(decade of i)``, ``a_u(g)`` the user's
  mean residual over the rated items of genre (or release decade) ``g``, shrunk towards 0
  by ``content_reg`` pseudo-ratings; needs an item table with ``categories`` and ``year``.

The combiner (ridge or a gradient-boosted model, ``combiner``) learns how to weigh the
signals. It never sees a rating a base model was trained on: the training ratings are split
once more (``holdout`` of them, seeded), the base models are fit on the rest, the combiner on
their predictions for the held-out part, and the base models are then refit on all the
training ratings. Besides the signals the combiner gets the pair's support (log number of
ratings of the user and of the item, and the kNN's sum of neighbour similarities), so it can
trust the collaborative signals more where they have more data (feature-weighted stacking:
the ridge combiner uses signal x support products, the boosted one learns it by itself).

Unknown users and items: an index outside the fitted ranges gets NaN (no score). A user or
item with an index in range but no training rating (cold) cannot be scored by SVD or the
kNN; its pairs get the ``content`` prediction (``baseline`` without an item table), i.e.
the known bias plus, for a cold item and a known user, the user's taste for the item's
genres and decade. Predictions are clipped to ``[min_rating, max_rating]``.

Everything is vectorised: surprise is called once per SVD fit, every prediction is numpy.
The item similarity is a dense float32 ``items x items`` matrix (11 MB for 1,682 items,
0.6 GB for 12,000; it is computed in blocks of rows, so the temporaries stay small). Past
``knn_max_items`` rated items it covers only that many, the most rated (ties: the lower
index): the other items' pairs get no neighbourhood (the ``knn`` signal is then the
baseline, with no support) and they are nobody's neighbour, so its memory is bounded by
``4 * knn_max_items**2`` bytes whatever the catalogue (a 62,423-item catalogue would need
15.6 GB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, model_validator

from recpipe.config import Config
from recpipe.log import get_logger
from recpipe.models.base import TrainData, most_counted
from recpipe.models.svd import SVD, SVDConfig
from recpipe.persist import Persistent, register

log = get_logger("rating")

Signal = Literal["baseline", "svd", "knn", "content"]
SIGNALS: tuple[Signal, ...] = ("baseline", "svd", "knn", "content")
"""Every base signal, in the order of the combiner's feature columns."""

#: pairs per block when the kNN signal is computed (bounds its ``pairs x items`` arrays)
KNN_BLOCK = 2048
#: entries of one block of the kNN similarity computation (float64 temporaries)
KNN_SIM_BLOCK = 1 << 22
#: fewest held-out ratings (of known users and items) the combiner may be fit on
MIN_HOLDOUT = 20
#: width in years of one release-date bucket of the content signal
DECADE = 10


class HybridRatingConfig(Config):
    """Settings of :class:`HybridRating`."""

    signals: tuple[Signal, ...] = Field(
        SIGNALS, min_length=1, description="base signals the combiner blends"
    )
    combiner: Literal["ridge", "gbm"] = Field(
        "ridge", description="ridge: linear (signal x support) blend; gbm: XGBoost trees"
    )
    holdout: float = Field(
        0.2,
        gt=0,
        lt=0.5,
        description="share of the training ratings held out to fit the combiner on",
    )
    min_rating: float = Field(1.0, description="lowest rating of the scale")
    max_rating: float = Field(5.0, description="highest rating of the scale")
    reg_user: float = Field(15.0, ge=0, description="baseline: regularisation of user biases")
    reg_item: float = Field(10.0, ge=0, description="baseline: regularisation of item biases")
    baseline_epochs: int = Field(10, ge=1, description="baseline: alternating least squares passes")
    svd: SVDConfig = Field(default_factory=SVDConfig, description="the svd signal's model")
    knn_k: int = Field(40, ge=1, description="knn: neighbours per prediction")
    knn_shrinkage: float = Field(
        100.0, ge=0, description="knn: similarity shrinkage towards 0 for few co-raters"
    )
    knn_max_items: int = Field(
        20_000,
        ge=1,
        description="knn: the similarity covers at most this many items, the most rated "
        "(4 * knn_max_items**2 bytes: 1.5 GiB at 20,000); the others get no neighbourhood",
    )
    content_reg: float = Field(
        5.0, ge=0, description="content: pseudo-ratings shrinking a user's genre/decade taste"
    )
    ridge_alpha: float = Field(
        1.0, ge=0, description="ridge: L2 penalty on the standardised features"
    )
    gbm_trees: int = Field(300, ge=1, description="gbm: boosting rounds")
    gbm_depth: int = Field(4, ge=1, description="gbm: maximum tree depth")
    gbm_learning_rate: float = Field(0.05, gt=0, le=1, description="gbm: shrinkage per round")
    gbm_threads: int = Field(2, ge=1, description="gbm: XGBoost threads")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.max_rating <= self.min_rating:
            raise ValueError("max_rating must be greater than min_rating")
        if len(set(self.signals)) != len(self.signals):
            raise ValueError(f"signals repeat a name: {list(self.signals)}")
        return self


class RatingConfig(HybridRatingConfig):
    """The rating predictor of the pipeline (params block ``rating``)."""

    enabled: bool = Field(True, description="false: no rating model is fitted or scored")

    def hybrid_config(self) -> HybridRatingConfig:
        """The model's own settings (without the stage switch)."""
        return HybridRatingConfig(**self.model_dump(exclude={"enabled"}))


def fit_on_history(
    history: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    cfg: HybridRatingConfig,
    seed: int,
) -> tuple[HybridRating | None, int, str | None]:
    """Fit the rating model on the latest rating of every rated pair of ``history``.

    Returns ``(model, rated pairs, reason)``: ``model`` is None, with the ``reason``, when
    the history holds too few ratings to fit one (implicit data, or nearly).
    """
    rated = TrainData(history, items, users).matrix("rating").tocoo()
    table = items.sort_values("item_idx", kind="stable").reset_index(drop=True)
    model = HybridRating(cfg, seed)
    try:
        model.fit(
            rated.row.astype(np.int64),
            rated.col.astype(np.int64),
            rated.data.astype(np.float64),
            n_users=len(users),
            n_items=len(items),
            item_table=table,
        )
    except ValueError as exc:
        if rated.nnz and "held-out ratings" not in str(exc):
            raise
        return None, int(rated.nnz), f"{rated.nnz} rated pairs: too few to fit ({exc})"
    return model, int(rated.nnz), None


# --------------------------------------------------------------------------- base signals


@register
@dataclass
class Baseline:
    """``mu + b_u + b_i`` with regularised biases (alternating least squares)."""

    mu: float
    user_bias: np.ndarray
    item_bias: np.ndarray

    @classmethod
    def fit(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        n_users: int,
        n_items: int,
        cfg: HybridRatingConfig,
    ) -> Baseline:
        mu = float(ratings.mean())
        n_u = np.bincount(users, minlength=n_users)
        n_i = np.bincount(items, minlength=n_items)
        bu = np.zeros(n_users)
        bi = np.zeros(n_items)
        for _ in range(cfg.baseline_epochs):
            bi = np.bincount(items, ratings - mu - bu[users], n_items) / (cfg.reg_item + n_i)
            bu = np.bincount(users, ratings - mu - bi[items], n_users) / (cfg.reg_user + n_u)
        return cls(mu, bu, bi)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.mu + self.user_bias[users] + self.item_bias[items]


@register
@dataclass
class ItemKNN:
    """Item neighbourhood on baseline residuals (KNNBaseline, pearson-baseline similarity)."""

    sim: np.ndarray  # kept x kept items, float32, zero diagonal
    residuals: sp.csr_matrix  # users x kept items, residual of each training rating
    rated: sp.csr_matrix  # users x kept items, 1 where the user rated the item
    k: int
    kept: np.ndarray | None = None  # the items covered (ascending), None: every item

    @classmethod
    def fit(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        residuals: np.ndarray,
        n_users: int,
        n_items: int,
        cfg: HybridRatingConfig,
    ) -> ItemKNN:
        kept = _most_rated(items, n_items, cfg.knn_max_items)
        if kept is not None:
            pos = np.full(n_items, -1, dtype=np.int64)
            pos[kept] = np.arange(len(kept))
            sel = pos[items] >= 0
            users, items, residuals = users[sel], pos[items[sel]], residuals[sel]
            n_items = len(kept)
        shape = (n_users, n_items)
        e = sp.csr_matrix((residuals, (users, items)), shape=shape, dtype=np.float64)
        b = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=shape, dtype=np.float64)
        sq = e.multiply(e).tocsr()
        e_t, b_t, sq_t = (sp.csr_matrix(m.T) for m in (e, b, sq))
        # One block of item rows at a time: the float64 temporaries are block x items, only
        # the float32 result is items x items.
        sim = np.zeros((n_items, n_items), dtype=np.float32)
        step = max(1, KNN_SIM_BLOCK // max(n_items, 1))
        for start in range(0, n_items, step):
            rows = slice(start, min(start + step, n_items))
            num = (e_t[rows] @ e).toarray()
            # den[i, j] = sum of e_ui^2 over the users who rated both i and j; den.T[i, j]
            # is the same with e_uj^2.
            den = (sq_t[rows] @ b).toarray()
            den_t = (b_t[rows] @ sq).toarray()
            n_co = (b_t[rows] @ b).toarray()
            with np.errstate(divide="ignore", invalid="ignore"):
                corr = num / np.sqrt(den * den_t)
                shrink = (n_co - 1.0) / (n_co - 1.0 + cfg.knn_shrinkage)
                ok = (n_co >= 2) & (den > 0) & (den_t > 0)
                sim[rows] = np.where(ok, corr * shrink, 0.0)
        np.fill_diagonal(sim, 0.0)
        return cls(sim, e, b.astype(np.float32).tocsr(), cfg.knn_k, kept)

    def predict(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(offset, support)`` per pair: the weighted mean neighbour residual (0 without a
        positive neighbour) and the sum of the neighbours' positive similarities; 0 and 0
        for an item the similarity does not cover."""
        if self.kept is None:
            return self._predict(users, items)
        offset = np.zeros(len(users))
        support = np.zeros(len(users))
        pos = np.minimum(np.searchsorted(self.kept, items), len(self.kept) - 1)
        hit = self.kept[pos] == items
        offset[hit], support[hit] = self._predict(users[hit], pos[hit])
        return offset, support

    def _predict(self, users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict` with ``items`` as positions among the covered items."""
        offset = np.zeros(len(users))
        support = np.zeros(len(users))
        n_items = self.sim.shape[0]
        k = min(self.k, n_items)
        for start in range(0, len(users), KNN_BLOCK):
            u = users[start : start + KNN_BLOCK]
            i = items[start : start + KNN_BLOCK]
            rated = self.rated[u].toarray() > 0
            sims = np.where(rated, self.sim[i], 0.0)
            if k < n_items:
                top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(n_items), sims.shape)
            s = np.take_along_axis(sims, top, axis=1)
            s = np.where(s > 0, s, 0.0)
            e = np.take_along_axis(self.residuals[u].toarray(), top, axis=1)
            total = s.sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                offset[start : start + len(u)] = np.where(
                    total > 0, (s * e).sum(axis=1) / total, 0.0
                )
            support[start : start + len(u)] = total
        return offset, support


def _most_rated(items: np.ndarray, n_items: int, max_items: int) -> np.ndarray | None:
    """None when at most ``max_items`` items have a rating, else the ``max_items`` with the
    most ratings (ties: the lower index), ascending, with a warning naming the setting."""
    counts = np.bincount(items, minlength=n_items)
    rated, kept = most_counted(counts, max_items)
    if len(kept) == len(rated):
        return None
    log.warning(
        "rating knn: %d items are rated; the similarity covers the %d most rated "
        "(rating.knn_max_items, %.1f GiB), the other %d (%.1f%% of the ratings) get no "
        "neighbourhood",
        len(rated),
        max_items,
        4 * max_items**2 / 2**30,
        len(rated) - max_items,
        100.0 * (1.0 - counts[kept].sum() / counts.sum()),
    )
    return kept


@register
@dataclass
class ContentTaste:
    """Each user's shrunk mean residual per item genre and per release decade."""

    genre_taste: np.ndarray  # users x genres
    decade_taste: np.ndarray  # users x decades
    item_genres: sp.csr_matrix  # items x genres, rows sum to 1 (or 0: no genre)
    item_decades: sp.csr_matrix  # items x decades, one-hot (or 0: no year)

    @classmethod
    def fit(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        residuals: np.ndarray,
        n_users: int,
        item_table: pd.DataFrame,
        cfg: HybridRatingConfig,
    ) -> ContentTaste:
        genres, decades = item_content(item_table)
        n_items = genres.shape[0]
        shape = (n_users, n_items)
        e = sp.csr_matrix((residuals, (users, items)), shape=shape, dtype=np.float64)
        b = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=shape, dtype=np.float64)
        tastes = []
        for member in (genres, decades):
            binary = (member > 0).astype(np.float64)
            total = (e @ binary).toarray()
            count = (b @ binary).toarray()
            tastes.append(total / (count + cfg.content_reg + 1e-12))
        norm = sp.diags(1.0 / np.maximum(np.asarray(genres.sum(axis=1)).ravel(), 1.0))
        return cls(tastes[0], tastes[1], (norm @ genres).tocsr(), decades)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The content offset ``a_u(genres of i) + a_u(decade of i)`` per pair."""
        g = np.asarray(self.item_genres[items].multiply(self.genre_taste[users]).sum(axis=1))
        d = np.asarray(self.item_decades[items].multiply(self.decade_taste[users]).sum(axis=1))
        return (g + d).ravel()


def item_content(item_table: pd.DataFrame) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Items x genres and items x decades indicator matrices of an item table.

    Row ``i`` of ``item_table`` is ``item_idx`` ``i``; ``categories`` holds lists of genre
    names, ``year`` a float (NaN: unknown). Items without a genre or a year get empty rows.
    """
    n_items = len(item_table)
    raw = item_table["categories"] if "categories" in item_table else [None] * n_items
    cats = [list(c) if isinstance(c, list | tuple | np.ndarray) else [] for c in raw]
    names = sorted({g for c in cats for g in c})
    col = {g: j for j, g in enumerate(names)}
    rows = np.repeat(np.arange(n_items), [len(c) for c in cats])
    cols = np.array([col[g] for c in cats for g in c], dtype=np.int64)
    genres = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_items, max(len(names), 1)))
    genres.data[:] = 1.0  # a genre listed twice still counts once
    year = (
        item_table["year"].to_numpy(dtype=float)
        if "year" in item_table
        else np.full(n_items, np.nan)
    )
    known = np.isfinite(year)
    bucket = np.zeros(n_items, dtype=np.int64)
    n_buckets = 1
    if known.any():
        dec = np.floor(year[known] / DECADE).astype(np.int64)
        bucket[known] = dec - dec.min()
        n_buckets = int(bucket.max()) + 1
    decades = sp.csr_matrix(
        (np.ones(int(known.sum())), (np.flatnonzero(known), bucket[known])),
        shape=(n_items, n_buckets),
    )
    return genres, decades


# --------------------------------------------------------------------------- the hybrid


@register
@dataclass
class _Bases:
    """The base models fit on one set of ratings, and what they need to predict."""

    baseline: Baseline
    svd: SVD | None
    knn: ItemKNN | None
    content: ContentTaste | None
    n_user_ratings: np.ndarray
    n_item_ratings: np.ndarray


class HybridRating(Persistent):
    """Blends baseline, SVD, item-kNN and content rating predictions (see the module doc).

    ``fit(users, items, ratings, ...)`` on index arrays, then ``predict(users, items)``.
    """

    def __init__(self, config: HybridRatingConfig | None = None, seed: int = 0) -> None:
        self.config = config if config is not None else HybridRatingConfig()
        self.seed = seed
        self.n_users = 0
        self.n_items = 0
        self._item_table: pd.DataFrame | None = None
        self._bases: _Bases | None = None
        self._combiner: _Combiner | None = None
        #: held-out signal features and ratings the combiner was fit on (for ablations)
        self.holdout_features: pd.DataFrame | None = None
        self.holdout_ratings: np.ndarray | None = None

    # -- fit ------------------------------------------------------------------------------
    def fit(
        self,
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        *,
        n_users: int,
        n_items: int,
        item_table: pd.DataFrame | None = None,
    ) -> Self:
        """Fit on ``ratings[k]`` of pairs ``(users[k], items[k])`` (indices).

        ``item_table`` (row ``i`` = item ``i``, columns ``categories`` and ``year``) is
        required by the ``content`` signal.
        """
        cfg = self.config
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        ratings = np.asarray(ratings, dtype=np.float64)
        if not (len(users) == len(items) == len(ratings)) or len(ratings) == 0:
            raise ValueError("users, items and ratings must be non-empty and of equal length")
        if users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items:
            raise ValueError("user or item index outside [0, n_users) / [0, n_items)")
        if "content" in cfg.signals and item_table is None:
            raise ValueError("the content signal needs item_table (categories, year)")
        if item_table is not None and len(item_table) != n_items:
            raise ValueError(f"item_table has {len(item_table)} rows, expected {n_items}")
        self.n_users, self.n_items = n_users, n_items
        self._item_table = item_table

        rng = np.random.default_rng(self.seed)
        held = rng.random(len(ratings)) < cfg.holdout
        inner = self._fit_bases(users[~held], items[~held], ratings[~held])
        hu, hi, hr = users[held], items[held], ratings[held]
        # Pairs cold in the inner fit are scored by the fallback, not the combiner.
        warm = (inner.n_user_ratings[hu] > 0) & (inner.n_item_ratings[hi] > 0)
        if warm.sum() < MIN_HOLDOUT:
            raise ValueError(
                f"only {int(warm.sum())} held-out ratings to fit the combiner on "
                f"(need {MIN_HOLDOUT}): give more ratings or a larger holdout"
            )
        feats = self._features(inner, hu[warm], hi[warm])
        self.holdout_features = feats
        self.holdout_ratings = hr[warm]
        self._combiner = _Combiner.fit(feats, hr[warm], cfg, self.seed)
        del inner  # its items x items similarity: free it before the final fit builds one
        self._bases = self._fit_bases(users, items, ratings)
        return self

    #: config fields that only the combiner reads (see :meth:`with_combiner`)
    COMBINER_FIELDS = frozenset(
        {
            "signals",
            "combiner",
            "ridge_alpha",
            "gbm_trees",
            "gbm_depth",
            "gbm_learning_rate",
            "gbm_threads",
        }
    )

    def with_combiner(self, **changes: object) -> HybridRating:
        """A copy with other combiner settings (e.g. ``signals``), sharing the base models.

        Only the combiner is refit, on the stored held-out features; as the base models and
        the inner split do not depend on these fields, the result equals fitting a new model
        with the changed config and the same seed (with fewer ``signals``, a new fit would
        merely skip the unused base models). Used for ablations.
        """
        if self._bases is None or self.holdout_features is None:
            raise RuntimeError("HybridRating: fit() must be called first")
        unknown = set(changes) - self.COMBINER_FIELDS
        if unknown:
            raise ValueError(f"not combiner settings: {sorted(unknown)}")
        cfg = HybridRatingConfig.model_validate({**self.config.model_dump(), **changes})
        missing = set(cfg.signals) - set(self.holdout_features.columns)
        if missing:
            raise ValueError(f"signals not fitted by this model: {sorted(missing)}")
        other = HybridRating(cfg, self.seed)
        other.n_users, other.n_items = self.n_users, self.n_items
        other._item_table = self._item_table
        other._bases = self._bases
        other.holdout_features = self.holdout_features
        other.holdout_ratings = self.holdout_ratings
        assert self.holdout_ratings is not None
        other._combiner = _Combiner.fit(self.holdout_features, self.holdout_ratings, cfg, self.seed)
        return other

    def _fit_bases(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> _Bases:
        cfg = self.config
        base = Baseline.fit(users, items, ratings, self.n_users, self.n_items, cfg)
        residuals = ratings - base.predict(users, items)
        svd = knn = content = None
        if "svd" in cfg.signals:
            svd = SVD(cfg.svd, seed=self.seed).fit(
                ratings_train_data(users, items, ratings, self.n_users, self.n_items)
            )
        if "knn" in cfg.signals:
            knn = ItemKNN.fit(users, items, residuals, self.n_users, self.n_items, cfg)
        if self._item_table is not None:
            content = ContentTaste.fit(users, items, residuals, self.n_users, self._item_table, cfg)
        return _Bases(
            base,
            svd,
            knn,
            content,
            np.bincount(users, minlength=self.n_users),
            np.bincount(items, minlength=self.n_items),
        )

    # -- predict --------------------------------------------------------------------------
    def base_predictions(self, users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
        """Every fitted base signal's clipped prediction per pair (NaN where it has none)."""
        bases = self._require_fit()
        users, items, ok = self._in_range(users, items)
        feats = self._features(bases, users[ok], items[ok])
        warm = self._warm(bases, users[ok], items[ok])
        out = pd.DataFrame(index=range(len(users)))
        for s in SIGNALS:
            if s in feats:
                col = np.full(len(users), np.nan)
                vals = feats[s].to_numpy()
                if s in ("svd", "knn"):
                    vals = np.where(warm, vals, np.nan)
                col[ok] = vals
                out[s] = self._clip(col)
        return out

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Blended ratings, clipped to the scale; NaN for indices outside the fitted ranges.

        Cold pairs (user or item without a training rating) get the content (else baseline)
        prediction instead of the blend.
        """
        bases = self._require_fit()
        assert self._combiner is not None
        users, items, ok = self._in_range(users, items)
        out = np.full(len(users), np.nan)
        u, i = users[ok], items[ok]
        feats = self._features(bases, u, i)
        warm = self._warm(bases, u, i)
        fallback = (feats["content"] if "content" in feats else feats["baseline"]).to_numpy()
        blend = fallback.copy()
        if warm.any():
            blend[warm] = self._combiner.predict(feats[warm])
        out[ok] = blend
        return self._clip(out)

    def predict_ratings(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """:meth:`predict` under the name the evaluation asks rating models for."""
        return self.predict(users, items)

    # -- helpers --------------------------------------------------------------------------
    def _features(self, bases: _Bases, users: np.ndarray, items: np.ndarray) -> pd.DataFrame:
        """Every available signal (not only the configured ones) plus the support columns."""
        base = bases.baseline.predict(users, items)
        cols: dict[str, np.ndarray] = {"baseline": base}
        if bases.svd is not None:
            svd = bases.svd.score(users, items).astype(np.float64)
            cols["svd"] = np.where(np.isnan(svd), base, svd)
        support = np.zeros(len(users))
        if bases.knn is not None:
            offset, support = bases.knn.predict(users, items)
            cols["knn"] = base + offset
        if bases.content is not None:
            cols["content"] = base + bases.content.predict(users, items)
        cols["log_user_ratings"] = np.log1p(bases.n_user_ratings[users])
        cols["log_item_ratings"] = np.log1p(bases.n_item_ratings[items])
        cols["knn_support"] = support
        return pd.DataFrame(cols)

    @staticmethod
    def _warm(bases: _Bases, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return (bases.n_user_ratings[users] > 0) & (bases.n_item_ratings[items] > 0)

    def _in_range(
        self, users: np.ndarray, items: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        if users.shape != items.shape:
            raise ValueError(f"users and items differ in length: {users.shape} vs {items.shape}")
        ok = (users >= 0) & (users < self.n_users) & (items >= 0) & (items < self.n_items)
        return users, items, ok

    def _clip(self, values: np.ndarray) -> np.ndarray:
        return np.clip(values, self.config.min_rating, self.config.max_rating)

    def _require_fit(self) -> _Bases:
        if self._bases is None:
            raise RuntimeError("HybridRating: fit() must be called first")
        return self._bases


SUPPORT_COLUMNS: tuple[str, ...] = ("log_user_ratings", "log_item_ratings", "knn_support")
"""Columns the combiner gets besides the signals (how much data each prediction rests on)."""


@register
@dataclass
class _Combiner:
    """The second-level regressor over signal (and support) columns."""

    signals: tuple[str, ...]
    kind: str
    model: object
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    @classmethod
    def fit(
        cls, feats: pd.DataFrame, ratings: np.ndarray, cfg: HybridRatingConfig, seed: int
    ) -> _Combiner:
        signals = tuple(s for s in SIGNALS if s in cfg.signals)
        support = [c for c in SUPPORT_COLUMNS if c != "knn_support" or "knn" in signals]
        if cfg.combiner == "gbm":
            from xgboost import XGBRegressor

            model = XGBRegressor(
                n_estimators=cfg.gbm_trees,
                max_depth=cfg.gbm_depth,
                learning_rate=cfg.gbm_learning_rate,
                subsample=0.8,
                min_child_weight=20,
                tree_method="hist",
                n_jobs=cfg.gbm_threads,
                random_state=seed,
            )
            x = feats[list(signals) + support].to_numpy(np.float32)
            model.fit(x, ratings)
            return cls(signals + tuple(support), "gbm", model)
        x = _ridge_design(feats, signals, support)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale == 0] = 1.0
        z = (x - mean) / scale
        y_mean = float(ratings.mean())
        gram = z.T @ z + cfg.ridge_alpha * np.eye(z.shape[1])
        coef = np.linalg.solve(gram, z.T @ (ratings - y_mean))
        return cls(signals + tuple(support), "ridge", (coef, y_mean), mean, scale)

    def predict(self, feats: pd.DataFrame) -> np.ndarray:
        if self.kind == "gbm":
            x = feats[list(self.signals)].to_numpy(np.float32)
            return self.model.predict(x).astype(np.float64)  # type: ignore[attr-defined]
        signals = tuple(s for s in self.signals if s in SIGNALS)
        support = [c for c in self.signals if c in SUPPORT_COLUMNS]
        x = _ridge_design(feats, signals, support)
        coef, y_mean = self.model  # type: ignore[misc]
        return y_mean + ((x - self.mean) / self.scale) @ coef


def _ridge_design(feats: pd.DataFrame, signals: tuple[str, ...], support: list[str]) -> np.ndarray:
    """Signals, and each signal's offset from the baseline times each support column."""
    sig = feats[list(signals)].to_numpy(np.float64)
    sup = feats[support].to_numpy(np.float64)
    base = feats["baseline"].to_numpy(np.float64)[:, None]
    offsets = sig - base
    inter = (offsets[:, :, None] * sup[:, None, :]).reshape(len(feats), -1)
    return np.hstack([sig, inter])


def ratings_train_data(
    users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int, n_items: int
) -> TrainData:
    """Explicit ratings as the minimal :class:`TrainData` :class:`SVD` trains on."""
    inter = pd.DataFrame(
        {
            "user_idx": users,
            "item_idx": items,
            "rating": ratings,
            "event": "rating",
            "weight": 1.0,
            "timestamp": np.zeros(len(users), dtype=np.int64),
        }
    )
    return TrainData(
        inter,
        pd.DataFrame({"item_idx": np.arange(n_items)}),
        pd.DataFrame({"user_idx": np.arange(n_users)}),
    )
