"""Learning to rank: XGBoost on the blend's candidate pairs, grouped by user.

Training data is the ``valid`` fold: its candidate pairs (from models fitted on ``train``)
described by the model columns of the blend, the fold's user and item features and the
pair features, labelled 1 when the pair is a relevant valid target. The trained ranker then
orders the ``test`` fold's candidates, described the same way from the test fold's history.
Model columns enter as per-user ranks and normalised scores by default, because raw scores
change scale between folds (the models are refitted on a longer history).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import xgboost as xgb
from pydantic import Field

from stages.core.config import Config
from stages.core.errors import ConfigError

KEY = ["user_idx", "item_idx"]


class RankerConfig(Config):
    """XGBoost ranker settings and the feature list (``ranker``)."""

    objective: Literal["rank:ndcg", "rank:pairwise", "rank:map"] = Field(
        "rank:ndcg", description="XGBoost learning-to-rank objective"
    )
    n_estimators: int = Field(400, ge=1, description="maximum number of trees")
    learning_rate: float = Field(0.05, gt=0, description="shrinkage per tree")
    max_depth: int = Field(4, ge=1, description="depth of each tree (shallow: less overfit)")
    min_child_weight: float = Field(5.0, ge=0, description="minimum hessian per leaf")
    subsample: float = Field(0.8, gt=0, le=1, description="row share sampled per tree")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="feature share per tree")
    reg_lambda: float = Field(5.0, ge=0, description="L2 penalty on leaf weights")
    reg_alpha: float = Field(0.0, ge=0, description="L1 penalty on leaf weights")
    pair_method: Literal["topk", "mean"] = Field(
        "topk", description="lambdarank_pair_method: how pairs are built per query"
    )
    pairs_per_sample: int = Field(8, ge=1, description="lambdarank_num_pair_per_sample")
    eval_at: int = Field(10, ge=1, description="K of the NDCG@K used for early stopping")
    early_stopping_rounds: int = Field(50, ge=1, description="stop after this many flat rounds")
    holdout_share: float = Field(
        0.2, gt=0, lt=1, description="share of valid users held out for early stopping"
    )
    refit: bool = Field(
        True, description="after early stopping, refit on all valid users with that many trees"
    )
    n_threads: int = Field(2, ge=1, description="XGBoost threads (results do not depend on it)")
    features: list[str] = Field(
        default_factory=lambda: [
            "m_*_rank",
            "m_*_norm",
            "m_n_models",
            "m_hybrid",
            "u_*",
            "i_*",
            "p_*",
        ],
        description="feature columns to use, as glob patterns (ablate with -S ranker.features)",
    )
    exclude: list[str] = Field(
        default_factory=list, description="glob patterns removed from the selected features"
    )
    n: int = Field(100, ge=1, description="length of the ranker's top-N list per user")


def select_features(columns: list[str], cfg: RankerConfig) -> list[str]:
    """Columns matching ``cfg.features`` minus ``cfg.exclude``, in the order of ``columns``.

    A pattern that matches nothing is an error naming it (a typo would silently ablate).
    """
    candidates = [c for c in columns if c not in KEY]
    for pattern in cfg.features + cfg.exclude:
        if not any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            raise ConfigError(
                f"params.yaml: ranker.features: pattern {pattern!r} matches no column"
            )
    chosen = [c for c in candidates if any(fnmatch.fnmatchcase(c, p) for p in cfg.features)]
    chosen = [c for c in chosen if not any(fnmatch.fnmatchcase(c, p) for p in cfg.exclude)]
    if not chosen:
        raise ConfigError("params.yaml: ranker.features/exclude leave no feature")
    return chosen


def assemble(
    blend: pd.DataFrame,
    user_feats: pd.DataFrame,
    item_feats: pd.DataFrame,
    pair_feats: pd.DataFrame,
) -> pd.DataFrame:
    """One row per candidate pair (sorted by user, item): blend columns, user, item and pair
    features side by side."""
    df = blend.sort_values(KEY, kind="stable").reset_index(drop=True)
    df = df.join(user_feats.set_index("user_idx"), on="user_idx")
    df = df.join(item_feats.set_index("item_idx"), on="item_idx")
    pf = pair_feats.set_index(KEY)
    return df.join(pf, on=KEY)


def labels(pairs: pd.DataFrame, targets: pd.DataFrame) -> np.ndarray:
    """1 where the pair is a relevant target of the fold, else 0."""
    rel = targets.loc[targets["relevant"], KEY]
    return (
        pd.MultiIndex.from_frame(pairs[KEY]).isin(pd.MultiIndex.from_frame(rel)).astype(np.float32)
    )


@dataclass
class TrainResult:
    """The fitted ranker and what happened while fitting it."""

    model: xgb.XGBRanker
    features: list[str]
    best_iteration: int
    users_used: int
    users_without_positive: int
    holdout_ndcg: float


def _ranker(cfg: RankerConfig, seed: int, n_estimators: int, early_stop: bool) -> xgb.XGBRanker:
    return xgb.XGBRanker(
        objective=cfg.objective,
        n_estimators=n_estimators,
        learning_rate=cfg.learning_rate,
        max_depth=cfg.max_depth,
        min_child_weight=cfg.min_child_weight,
        subsample=cfg.subsample,
        colsample_bytree=cfg.colsample_bytree,
        reg_lambda=cfg.reg_lambda,
        reg_alpha=cfg.reg_alpha,
        tree_method="hist",
        lambdarank_pair_method=cfg.pair_method,
        lambdarank_num_pair_per_sample=cfg.pairs_per_sample,
        eval_metric=f"ndcg@{cfg.eval_at}",
        early_stopping_rounds=cfg.early_stopping_rounds if early_stop else None,
        random_state=seed,
        n_jobs=cfg.n_threads,
    )


def train(df: pd.DataFrame, y: np.ndarray, cfg: RankerConfig, seed: int) -> TrainResult:
    """Fit the ranker on one fold's pairs ``df`` (sorted by user) with labels ``y``.

    Users whose candidates hold no positive carry no ranking signal: they are left out and
    counted. A seeded share of the remaining users is held out for early stopping; with
    ``refit`` the final model is fitted on all of them with the number of trees found.
    """
    feats = select_features(list(df.columns), cfg)
    users = df["user_idx"].to_numpy()
    pos_per_user = pd.Series(y).groupby(users).sum()
    keep_users = pos_per_user.index[pos_per_user.to_numpy() > 0].to_numpy()
    dropped = int((pos_per_user.to_numpy() == 0).sum())
    if len(keep_users) < 2:
        raise ValueError("fewer than 2 users have a positive among their candidates: cannot train")
    rng = np.random.default_rng(seed)
    n_hold = max(1, int(round(cfg.holdout_share * len(keep_users))))
    hold = np.zeros(len(keep_users), dtype=bool)
    hold[rng.permutation(len(keep_users))[:n_hold]] = True
    in_keep = np.isin(users, keep_users)
    in_hold = np.isin(users, keep_users[hold])
    fit_rows, hold_rows = in_keep & ~in_hold, in_hold
    # A frame (not an array) so the booster keeps the feature names for importances.
    X = df[feats].astype(np.float32)

    model = _ranker(cfg, seed, cfg.n_estimators, early_stop=True)
    model.fit(
        X[fit_rows],
        y[fit_rows],
        qid=users[fit_rows],
        eval_set=[(X[hold_rows], y[hold_rows])],
        eval_qid=[users[hold_rows]],
        verbose=False,
    )
    best = int(model.best_iteration)
    holdout = float(model.evals_result()["validation_0"][f"ndcg@{cfg.eval_at}"][best])
    if cfg.refit:
        model = _ranker(cfg, seed, best + 1, early_stop=False)
        model.fit(X[in_keep], y[in_keep], qid=users[in_keep], verbose=False)
    return TrainResult(model, feats, best + 1, int(len(keep_users)), dropped, holdout)


def predict(result: TrainResult, df: pd.DataFrame) -> np.ndarray:
    """Ranker scores for the pairs of ``df`` (any fold described like the training one)."""
    return result.model.predict(df[result.features].astype(np.float32)).astype(np.float32)


def importance(result: TrainResult) -> dict[str, float]:
    """Total gain per feature (0 for features no split used), rounded, sorted by name."""
    gain = result.model.get_booster().get_score(importance_type="total_gain")
    return {f: round(float(gain.get(f, 0.0)), 4) for f in sorted(result.features)}
