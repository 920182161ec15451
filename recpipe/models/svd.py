"""SVD: biased matrix factorisation of ratings (Funk SVD), trained by scikit-surprise.

``r_hat(u, i) = mu + b_u + b_i + p_u . q_i`` (``mu`` the global mean rating; without
``biased`` just ``p_u . q_i``), fit by SGD on the observed ratings. Surprise is called once,
to fit (``Dataset.load_from_df`` + ``build_full_trainset`` + ``SVD.fit``); its parameters
are then copied out, mapped from surprise's inner ids back to ``user_idx``/``item_idx``,
and every score is computed with numpy (top-n retrieval through faiss, see
:mod:`recpipe.models.retrieval`), never with surprise's per-pair ``predict``.

Training ratings (``rating_source``):

- ``rating``: the explicit ratings, the latest one of each (user, item) pair; events without
  a rating are not used for training (they still count as seen). If the history holds no
  rating at all (implicit data), the ``weight`` mapping is used instead, with a warning.
- ``weight``: implicit data turned into pseudo-ratings. Each pair's summed event weight
  ``w`` maps to ``min_rating + (max_rating - min_rating) * min(1, log1p(w) / log1p(c))``,
  ``c`` being the ``weight_cap_quantile`` quantile of the pair weights: the log damps
  repeated events, the cap keeps a few very heavy pairs from squashing all others.

The model is also the pipeline's rating predictor: :meth:`SVD.predict_ratings` is the score
clipped to ``[min_rating, max_rating]`` (surprise's own ``predict`` clips the same way).
Users and items without a training rating have no score (NaN), where surprise would fall
back to the global mean.

SVD optimises rating error, not ranking: its top-n lists are known to be weak
(NDCG@10 about 0.08-0.1 on ML-100k, against about 0.46 for ALS).
"""

from __future__ import annotations

from typing import Literal, Self

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from recpipe.log import get_logger
from recpipe.models.base import ModelConfig, TrainData
from recpipe.models.retrieval import FactorIndex, FactorRecommender, RetrievalConfig

log = get_logger("svd")


class SVDConfig(ModelConfig):
    """Settings of :class:`SVD` (``candidates.svd``).

    The defaults are surprise's except a larger learning rate and regularisation (0.03 and 0.1
    instead of 0.005 and 0.02): on ML-100k they lower the test RMSE (0.921 against 0.941 on
    a random 75/25 split) and they let the factors form on small data, where surprise's
    rate leaves them near their random start after a few dozen epochs.
    """

    factors: int = Field(100, ge=1, description="latent factors per user and item")
    epochs: int = Field(20, ge=1, description="SGD passes over the training ratings")
    lr_all: float = Field(0.03, gt=0, description="SGD learning rate of all parameters")
    reg_all: float = Field(0.1, ge=0, description="L2 regularisation of all parameters")
    init_std: float = Field(
        0.1, ge=0, description="standard deviation of the normal initial factors"
    )
    biased: bool = Field(
        True, description="learn global mean and user/item biases (false: p_u . q_i only)"
    )
    rating_source: Literal["rating", "weight"] = Field(
        "rating",
        description="rating: explicit ratings (weights when the data has none); weight: "
        "summed event weights mapped to the rating scale (see the module docstring)",
    )
    min_rating: float = Field(1.0, description="lowest rating of the scale")
    max_rating: float = Field(5.0, description="highest rating of the scale")
    weight_cap_quantile: float = Field(
        0.99,
        gt=0,
        le=1,
        description="weight mapping: pair weights at or above this quantile get max_rating",
    )
    retrieval: RetrievalConfig = Field(
        default_factory=RetrievalConfig, description="top-n retrieval through faiss"
    )

    @model_validator(mode="after")
    def _scale_is_ordered(self) -> Self:
        if self.max_rating <= self.min_rating:
            raise ValueError("max_rating must be greater than min_rating")
        return self


class SVD(FactorRecommender):
    """Funk SVD through surprise, scored with numpy and retrieved with faiss."""

    name = "svd"
    config_class = SVDConfig
    config: SVDConfig
    fit_imports = ("surprise",)

    def _fit(self, data: TrainData) -> None:
        cfg = self.config
        ratings = training_ratings(data, cfg)
        k = cfg.factors
        self.user_factors = np.zeros((self.n_users, k), dtype=np.float32)
        self.item_factors = np.zeros((self.n_items, k), dtype=np.float32)
        self.user_bias = np.zeros(self.n_users, dtype=np.float32)
        self.item_bias = np.zeros(self.n_items, dtype=np.float32)
        self.global_mean = 0.0
        known_users = np.zeros(self.n_users, dtype=bool)
        known_items = np.zeros(self.n_items, dtype=bool)
        if len(ratings):
            algo, trainset = fit_surprise(ratings, cfg, self.seed)
            # Inner ids are surprise's order of first appearance; raw ids are our indices.
            u = np.array([trainset.to_raw_uid(i) for i in range(trainset.n_users)], np.int64)
            i = np.array([trainset.to_raw_iid(j) for j in range(trainset.n_items)], np.int64)
            self.user_factors[u] = algo.pu
            self.item_factors[i] = algo.qi
            known_users[u] = True
            known_items[i] = True
            if cfg.biased:
                self.user_bias[u] = algo.bu
                self.item_bias[i] = algo.bi
                self.global_mean = float(trainset.global_mean)
        self.index = FactorIndex(
            self.user_factors,
            self.item_factors,
            user_offset=(self.global_mean + self.user_bias) if cfg.biased else None,
            item_bias=self.item_bias if cfg.biased else None,
            known_users=known_users,
            known_items=known_items,
            config=cfg.retrieval,
            seed=self.seed,
        )

    def predict_ratings(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings of the pairs, clipped to the rating scale; NaN where unknown."""
        return np.clip(self.score(users, items), self.config.min_rating, self.config.max_rating)


def training_ratings(data: TrainData, cfg: SVDConfig) -> pd.DataFrame:
    """The ``user_idx, item_idx, rating`` triples SVD trains on (see ``rating_source``)."""
    source = cfg.rating_source
    if source == "rating" and not data.interactions["rating"].notna().any():
        log.warning("no ratings in the history: training on weights mapped to ratings")
        source = "weight"
    m = data.matrix(source).tocoo()
    values = m.data.astype(np.float64)
    if source == "weight":
        values = weights_to_ratings(values, cfg)
    return pd.DataFrame(
        {"user_idx": m.row.astype(np.int64), "item_idx": m.col.astype(np.int64), "rating": values}
    )


def weights_to_ratings(weights: np.ndarray, cfg: SVDConfig) -> np.ndarray:
    """Summed pair weights -> ratings on ``[min_rating, max_rating]``, log-scaled and capped."""
    strength = np.log1p(np.clip(weights, 0.0, None))
    if len(strength) == 0:
        return strength
    cap = float(np.quantile(strength, cfg.weight_cap_quantile))
    share = np.clip(strength / cap, 0.0, 1.0) if cap > 0 else np.ones_like(strength)
    return cfg.min_rating + (cfg.max_rating - cfg.min_rating) * share


def fit_surprise(ratings: pd.DataFrame, cfg: SVDConfig, seed: int) -> tuple:
    """Fit surprise's SVD on ``user_idx, item_idx, rating``; returns ``(algo, trainset)``.

    The one place surprise is called (imported here so that loading a fitted model does not
    need it).
    """
    from surprise import SVD as SurpriseSVD
    from surprise import Dataset, Reader

    reader = Reader(rating_scale=(cfg.min_rating, cfg.max_rating))
    trainset = Dataset.load_from_df(
        ratings[["user_idx", "item_idx", "rating"]], reader
    ).build_full_trainset()
    algo = SurpriseSVD(
        n_factors=cfg.factors,
        n_epochs=cfg.epochs,
        biased=cfg.biased,
        init_std_dev=cfg.init_std,
        lr_all=cfg.lr_all,
        reg_all=cfg.reg_all,
        random_state=seed,
    )
    algo.fit(trainset)
    return algo, trainset
