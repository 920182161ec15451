"""Learning to rank: XGBoost on the blend's candidate pairs, grouped by user.

Training data is the ``valid`` fold, and the extra ranker folds shaped like it when the
split makes them (each user's candidates in one fold are one list): its candidate pairs
(from models fitted on ``train``) described by the model columns of the blend, the fold's
user and item features and the pair features, labelled 1 when the pair is a relevant
target of that fold. The trained ranker then orders the ``test`` fold's candidates,
described the same way from the test fold's history.
Model columns enter as per-user ranks and normalised scores by default, because raw scores
change scale between folds (the models are refitted on a longer history).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from recpipe.blending import RERANK_TOP, Columns, TopPairs, column, fill_by_user, rank_by, top_rows
from recpipe.config import Config
from recpipe.errors import ConfigError
from recpipe.features.pairs import PairContext, PairSimilarities, block_pair_features
from recpipe.hashing import tie_key
from recpipe.models.base import rank_within

if TYPE_CHECKING:
    import xgboost as xgb

KEY = ["user_idx", "item_idx"]


class RankerConfig(Config):
    """XGBoost ranker settings and the feature list (``ranker``)."""

    objective: Literal["rank:ndcg", "rank:pairwise", "rank:map"] = Field(
        "rank:ndcg", description="XGBoost learning-to-rank objective"
    )
    n_estimators: int = Field(200, ge=1, description="maximum number of trees")
    learning_rate: float = Field(0.1, gt=0, description="shrinkage per tree")
    max_depth: int = Field(4, ge=1, description="depth of each tree (shallow: less overfit)")
    min_child_weight: float = Field(5.0, ge=0, description="minimum hessian per leaf")
    subsample: float = Field(0.8, gt=0, le=1, description="row share sampled per tree")
    colsample_bytree: float = Field(0.8, gt=0, le=1, description="feature share per tree")
    reg_lambda: float = Field(5.0, ge=0, description="L2 penalty on leaf weights")
    reg_alpha: float = Field(0.0, ge=0, description="L1 penalty on leaf weights")
    pair_method: Literal["topk", "mean"] = Field(
        "mean",
        description="lambdarank_pair_method: topk pairs every item with the top "
        "pairs_per_sample; mean samples pairs_per_sample pairs per item",
    )
    pairs_per_sample: int = Field(4, ge=1, description="lambdarank_num_pair_per_sample")
    eval_at: int = Field(10, ge=1, description="K of the NDCG@K used for early stopping")
    early_stopping_rounds: int = Field(25, ge=1, description="stop after this many flat rounds")
    cv_folds: int = Field(
        5,
        ge=1,
        description="users with a positive are split into this many folds; a ranker is "
        "trained with each fold held out, and the number of trees is where the holdout "
        "NDCG averaged over folds peaks (steadier than one holdout); 1: a single holdout "
        "of holdout_share",
    )
    cv_max_users: int = Field(
        2000,
        ge=2,
        description="with more users with a positive than this, one holdout of "
        "holdout_share replaces the folds: it is then large enough to be steady, and the "
        "folds would multiply the training time",
    )
    holdout_share: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="share of valid users held out when one holdout is used (cv_folds 1, or "
        "more than cv_max_users users)",
    )
    refit: bool = Field(
        True,
        description="refit on all lists with the number of trees found (always done with "
        "cv_folds > 1); false with one holdout (cv_folds 1, or more lists than "
        "cv_max_users): keep the early-stopped model, cut to its best round (one fit "
        "instead of two, from the lists outside the holdout). See refit_max_lists",
    )
    refit_max_lists: int | None = Field(
        10_000,
        ge=1,
        description="with one holdout, refit only while there are at most this many lists "
        "with a positive: on small data the holdout's share of the lists is worth a second "
        "fit; on large data it adds little (measured at 1M events) and the second fit "
        "doubles the boosting time. null: no limit",
    )
    base_margin: str | None = Field(
        "m_hybrid",
        description="column every pair's score starts from, so the trees learn corrections "
        "to it (the blend's hybrid by default); null: start from 0",
    )
    base_margin_scale: float = Field(
        1.0, gt=0, description="the base_margin column is multiplied by this"
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
    rerank_top: TopPairs = Field(
        RERANK_TOP,
        description="only each user's top this many candidates by the blend's m_hybrid are "
        "ranked (trained on and re-ordered); the rest are dropped, so the ranker's list is at "
        "most this long: a cascade, faster and trained where the top of the list is decided; "
        "null: every candidate",
    )
    train_negatives: int | None = Field(
        None,
        ge=1,
        description="learn from every positive of a training list and at most this many of "
        "its negatives (drawn by a seeded hash of user and item), in every fold (it replaces "
        "train_many_negatives); null: no fixed cap (see train_many_lists and "
        "train_max_rows)",
    )
    train_max_rows: int | None = Field(
        1_000_000,
        ge=1,
        description="each training fold may hold train_max_rows / folds rows: a fold with "
        "more keeps every positive and an equal number of negatives per list so that it "
        "fits (memory and time bounded as the data grows); the early-stopping holdout then "
        "scores sampled lists too, so its NDCG reads higher than on full lists. A fold within "
        "its share keeps every row. null: no row budget (train_negatives and "
        "train_many_lists still apply)",
    )
    train_many_lists: int | None = Field(
        2_000,
        ge=1,
        description="a training fold with more lists (with a positive) than this keeps at "
        "most train_many_negatives negatives a list (within train_max_rows too): with many "
        "lists, more negatives a list were measured to add nothing (1M events, 3,700 lists a "
        "fold: 40 within noise of 88); on ML-100k (940 lists a fold) half the negatives left "
        "the ranker's lead over the blend within noise, so small folds stay whole. The cap "
        "is a step (a fold just past the threshold keeps about a fifth of its rows at "
        "rerank_top 200), decided fold by fold; null: off",
    )
    train_many_negatives: int = Field(
        40,
        ge=1,
        description="negatives kept per list in a fold past train_many_lists lists",
    )
    n: int = Field(100, ge=1, description="length of the ranker's top-N list per user")
    block_users: int = Field(
        2_000,
        ge=1,
        description="users whose candidates are described and scored together: bounds the "
        "memory of scoring a fold (about block_users x rerank_top x features x 8 bytes, "
        "beside the similarity features that groups of blocks share, at most "
        "recpipe.features.pairs.SHARED_PAIRS pairs at a time); the output does not depend "
        "on it",
    )


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


def learning_columns(df: pd.DataFrame, features: list[str], cfg: RankerConfig) -> pd.DataFrame:
    """What :func:`train` reads of a described frame ``df``: the key, the ``features`` as
    the float32 the booster is given, and the base-margin column as it is (when it is a
    feature too it stays as it is; :func:`train` casts it the same). A training fold's frame
    held this way is about half as wide, and the booster sees the same values."""
    columns: dict[str, np.ndarray] = {c: df[c].to_numpy() for c in KEY}
    for c in features:
        columns[c] = df[c].to_numpy(np.float32)
    if cfg.base_margin is not None and cfg.base_margin in df.columns:  # (in its place if a feature)
        columns[cfg.base_margin] = df[cfg.base_margin].to_numpy()
    return pd.DataFrame(columns)


def assemble(
    blend: pd.DataFrame,
    user_feats: pd.DataFrame,
    item_feats: pd.DataFrame,
    pair_feats: pd.DataFrame,
) -> pd.DataFrame:
    """One row per candidate pair (sorted by user, item): blend columns, user, item and pair
    features side by side (left joins: NaN where a user or item has no features).

    The same frame as joining them one after the other, put together once: each feature
    table is looked up at the rows' keys, and pair features that come in the rows' order
    (as :func:`~recpipe.features.pairs.block_pair_features` gives them) are taken as they
    are (pandas' joins cost more than the work on a one-user frame in the service)."""
    df = blend.sort_values(KEY, kind="stable").reset_index(drop=True)
    users, items = (
        _unique_keys(by_key(feats, key)).reindex(df[key].to_numpy())
        for feats, key in ((user_feats, "user_idx"), (item_feats, "item_idx"))
    )
    aligned = len(pair_feats) == len(df) and all(
        np.array_equal(pair_feats[k].to_numpy(), df[k].to_numpy()) for k in KEY
    )
    if aligned:
        pairs = pair_feats.drop(columns=KEY)
    else:
        pairs = df[KEY].join(pair_feats.set_index(KEY), on=KEY).drop(columns=KEY)
    parts = [df, *(p.set_axis(df.index) for p in (users, items, pairs))]
    seen: set[str] = set()
    for part in parts:
        clash = seen.intersection(part.columns)
        if clash:
            raise ValueError(f"feature column {sorted(clash)[0]!r} comes from two tables")
        seen.update(part.columns)
    return pd.concat(parts, axis=1)


def _unique_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame``, refused when a key of its index appears twice."""
    if not frame.index.is_unique:
        twice = frame.index[frame.index.duplicated()][0]
        raise ValueError(f"features: {frame.index.name} {twice} has two rows")
    return frame


def by_key(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """``frame`` indexed by ``key`` (as it is when the caller indexed it once for many
    calls, as the service does with the item features)."""
    if frame.index.name == key and key not in frame.columns:
        return frame
    return frame.set_index(key)


def top_candidates(df: pd.DataFrame, cfg: RankerConfig) -> pd.DataFrame:
    """The pairs the ranker works on: each user's ``cfg.rerank_top`` best by ``m_hybrid``
    (ties: lower item index), in the order of ``df``; all of them when it is null."""
    keep = candidate_rows(df, cfg)
    return df if keep is None else df[keep].reset_index(drop=True)


def candidate_rows(df: pd.DataFrame | Columns, cfg: RankerConfig) -> np.ndarray | None:
    """The rows :func:`top_candidates` keeps (a boolean mask), None for all of them."""
    if cfg.rerank_top is None:
        return None
    if "m_hybrid" not in df:
        raise ConfigError("params.yaml: ranker.rerank_top needs the blend's m_hybrid column")
    users, items = column(df, "user_idx"), column(df, "item_idx")
    return top_rows(users, items, column(df, "m_hybrid"), cfg.rerank_top)


def training_rows(
    pairs: pd.DataFrame, y: np.ndarray, negatives: int | None, seed: int
) -> tuple[np.ndarray, int]:
    """The rows of one training fold's ``pairs`` (labels ``y``) the ranker learns from, as a
    mask, and the number of lists (users) left out for having no positive.

    A list without a positive carries no ranking signal and is left out whole. Of the other
    lists every positive is kept and, with ``negatives``, that many negatives per list: those
    with the smallest seeded hash of (user, item), so the draw is the same whatever the
    order or the blocks the pairs come in.
    """
    users = pairs["user_idx"].to_numpy(np.int64)
    y = np.asarray(y)
    if len(users) == 0:
        return np.zeros(0, dtype=bool), 0
    uniq, inv = np.unique(users, return_inverse=True)
    positives = np.bincount(inv, weights=(y > 0).astype(np.float64), minlength=len(uniq))
    keep = positives[inv] > 0
    dropped = int((positives == 0).sum())
    if negatives is None:
        return keep, dropped
    negative = keep & (y <= 0)
    rows = np.flatnonzero(negative)
    key = tie_key(users[rows], pairs["item_idx"].to_numpy(np.int64)[rows], seed)
    order = rows[np.lexsort((key, users[rows]))]
    # 1-based position of each negative within its list, in hash order
    keep[order[rank_within(users[order]) > negatives]] = False
    return keep, dropped


def negatives_cap(
    cfg: RankerConfig, *, lists: int, positives: int, rows: int, folds: int = 1
) -> int | None:
    """Negatives kept per training list of a fold with ``lists`` lists (with a positive),
    ``positives`` positives and ``rows`` rows, one of ``folds`` training folds: the
    ``train_negatives`` cap when it is set, else ``train_many_negatives`` in a fold of more
    than ``train_many_lists`` lists; lowered so the fold fits ``train_max_rows / folds``
    rows when it holds more (at least one negative a list); None keeps every negative."""
    cap = cfg.train_negatives
    if cap is None and cfg.train_many_lists is not None and lists > cfg.train_many_lists:
        cap = cfg.train_many_negatives
    if cfg.train_max_rows is not None:
        share = cfg.train_max_rows // max(folds, 1)
        if rows > share:
            fit = max(1, (share - positives) // max(lists, 1))
            cap = fit if cap is None else min(cap, fit)
    return cap


def labels(pairs: pd.DataFrame, targets: pd.DataFrame) -> np.ndarray:
    """1 where the pair is a relevant target of the fold, else 0."""
    rel = targets.loc[targets["relevant"], KEY]
    return (
        pd.MultiIndex.from_frame(pairs[KEY]).isin(pd.MultiIndex.from_frame(rel)).astype(np.float32)
    )


def margin(
    df: pd.DataFrame | Columns, cfg: RankerConfig, queries: np.ndarray | None = None
) -> np.ndarray | None:
    """The starting score of each pair (``cfg.base_margin`` times its scale), or None.

    A pair without a value starts at the lowest one of its list (its user's, or its
    ``queries`` group: a user in one training fold), 0 when the list has none: the same
    reading of "missing" as in the blend, no evidence for the pair.
    """
    if cfg.base_margin is None:
        return None
    if cfg.base_margin not in df:
        raise ConfigError(
            f"params.yaml: ranker.base_margin: no column {cfg.base_margin!r} among the features"
        )
    groups = column(df, "user_idx") if queries is None else np.asarray(queries)
    return cfg.base_margin_scale * fill_by_user(column(df, cfg.base_margin), groups)


@dataclass
class TrainResult:
    """The fitted ranker and what happened while fitting it."""

    model: xgb.XGBRanker
    config: RankerConfig
    features: list[str]
    best_iteration: int
    lists_used: int  # a list: one user's candidates in one training fold
    lists_without_positive: int
    holdout_ndcg: float


def _ranker(cfg: RankerConfig, seed: int, n_estimators: int, early_stop: bool) -> xgb.XGBRanker:
    import xgboost as xgb  # here: the stages that only validate params need not load it

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


def _cut(model: xgb.XGBRanker, cfg: RankerConfig, seed: int, n_trees: int) -> xgb.XGBRanker:
    """``model`` with only its first ``n_trees`` trees."""
    cut = _ranker(cfg, seed, n_trees, early_stop=False)
    cut.load_model(bytearray(model.get_booster()[:n_trees].save_raw(raw_format="json")))
    return cut


def fit_rounds(
    X: pd.DataFrame,
    y: np.ndarray,
    qid: np.ndarray,
    base: np.ndarray | None,
    cfg: RankerConfig,
    seed: int,
    rows: np.ndarray,
    n_trees: int,
    hold: np.ndarray | None,
) -> tuple[xgb.XGBRanker, list[float]]:
    """A ranker of up to ``n_trees`` trees fitted on the ``rows`` of ``X`` (labels ``y``,
    lists ``qid``, starting scores ``base``), and with ``hold`` the holdout NDCG of each
    round (the fit then stops early on it).

    What ``XGBRanker.fit`` does, but with the holdout in a plain ``DMatrix``: the booster
    predicts each round's tree for it from the raw values, where from the bins of the
    quantile matrix that ``fit`` builds it costs about six times as much (on the synthetic
    default's 150k held-out rows, 5 against 31 ms a round). The predictions, and so the
    curve and the trees, are the same: a test checks it against ``fit``."""
    import xgboost as xgb

    def part(index: np.ndarray) -> np.ndarray | None:
        return None if base is None else base[index]

    model = _ranker(cfg, seed, n_trees, early_stop=hold is not None)
    # what fit builds: its max_bin and missing, the booster's threads
    common = {"missing": model.missing, "nthread": cfg.n_threads}
    train_m = xgb.QuantileDMatrix(
        X[rows], y[rows], qid=qid[rows], base_margin=part(rows), max_bin=model.max_bin, **common
    )
    evals, curves = [], {}
    if hold is not None:
        # (8 bytes a cell against the quantile matrix's 1: the holdout is a fifth of at
        # most ranker.train_max_rows rows)
        held_m = xgb.DMatrix(X[hold], y[hold], qid=qid[hold], base_margin=part(hold), **common)
        evals = [(held_m, "holdout")]
    booster = xgb.train(
        model.get_xgb_params(),
        train_m,
        num_boost_round=n_trees,
        evals=evals,
        early_stopping_rounds=model.early_stopping_rounds,
        evals_result=curves,
        verbose_eval=False,
    )
    model.load_model(bytearray(booster.save_raw(raw_format="json")))
    return model, list(curves["holdout"][f"ndcg@{cfg.eval_at}"]) if hold is not None else []


def train(
    df: pd.DataFrame,
    y: np.ndarray,
    cfg: RankerConfig,
    seed: int,
    queries: np.ndarray | None = None,
    features: list[str] | None = None,
) -> TrainResult:
    """Fit the ranker on the pairs ``df`` with labels ``y``, from the columns ``features``
    (by default :func:`select_features` of ``df``'s).

    Each list the ranker learns to order is one user's candidates in one fold: ``queries``
    gives every row's list (rows sorted by it), by default its ``user_idx`` (one fold).
    Lists holding no positive carry no ranking signal: they are left out and counted. The
    users of the remaining lists are split (seeded) into ``cfg.cv_folds`` folds, so all the
    lists of one user (from several training folds) fall on the same side; a ranker is
    trained with each fold held out for early stopping, and the number of trees is where
    the holdout NDCG averaged over the folds peaks. With one fold, or more than
    ``cfg.cv_max_users`` lists, a single seeded ``holdout_share`` of the users is held out
    instead. The final model is refit on all lists with that many trees (or, with one
    holdout and ``refit`` false or more lists than ``refit_max_lists``, the early-stopped
    model cut to that many trees). Every fit starts from the
    ``cfg.base_margin`` column (see :func:`margin`).
    """
    feats = select_features(list(df.columns), cfg) if features is None else list(features)
    users = df["user_idx"].to_numpy()
    qid = users if queries is None else np.asarray(queries)
    if len(qid) != len(df) or (len(qid) and np.any(np.diff(qid) < 0)):
        raise ValueError("queries must give one list id per row, in ascending order")
    # XGBoost keeps query ids in 32 bits: renumber the lists 0, 1, ... (order kept).
    qid = np.unique(qid, return_inverse=True)[1].astype(np.int64)
    pos_per_list = pd.Series(y).groupby(qid).sum()
    keep_lists = pos_per_list.index[pos_per_list.to_numpy() > 0].to_numpy()
    dropped = int((pos_per_list.to_numpy() == 0).sum())
    if len(keep_lists) < 2:
        raise ValueError("fewer than 2 users have a positive among their candidates: cannot train")
    in_keep = np.isin(qid, keep_lists)
    keep_users = np.unique(users[in_keep])
    rng = np.random.default_rng(seed)
    n_folds = cfg.cv_folds if len(keep_lists) <= cfg.cv_max_users else 1
    # Fold of every kept user: 0..n_folds-1, or with one fold 1 = the holdout, 0 = fitting.
    if n_folds > 1:
        if len(keep_users) < cfg.cv_folds:
            raise ValueError(
                f"{len(keep_users)} users with a positive cannot fill ranker.cv_folds = "
                f"{cfg.cv_folds}: lower it"
            )
        fold_of = rng.permutation(len(keep_users)) % n_folds
    else:
        n_hold = max(1, int(round(cfg.holdout_share * len(keep_users))))
        fold_of = np.zeros(len(keep_users), dtype=np.int64)
        fold_of[rng.permutation(len(keep_users))[:n_hold]] = 1
    row_fold = np.where(
        in_keep, fold_of[np.searchsorted(keep_users, users).clip(0, len(keep_users) - 1)], -1
    )
    # A frame (not an array) so the booster keeps the feature names for importances.
    X = df[feats].astype(np.float32)
    base = margin(df, cfg, qid)

    # The holdout NDCG of each round, averaged over folds; a fold that stopped early keeps
    # its last value for the rounds it did not grow (it was past its best).
    held_out = [1] if n_folds == 1 else range(n_folds)
    curves = np.zeros((len(held_out), cfg.n_estimators))
    for k, f in enumerate(held_out):
        fitting, held = in_keep & (row_fold != f), in_keep & (row_fold == f)
        model, rounds = fit_rounds(X, y, qid, base, cfg, seed, fitting, cfg.n_estimators, held)
        curve = np.asarray(rounds)
        curves[k] = np.r_[curve, np.full(cfg.n_estimators - len(curve), curve[-1])]
    mean_curve = curves.mean(axis=0)
    best = int(np.argmax(mean_curve))
    refit = cfg.refit and (cfg.refit_max_lists is None or len(keep_lists) <= cfg.refit_max_lists)
    if refit or n_folds > 1:
        model = fit_rounds(X, y, qid, base, cfg, seed, in_keep, best + 1, None)[0]
    else:
        # The holdout model cut to its best round: the same trees, byte for byte, as a
        # refit of best + 1 rounds on the same rows (a test checks it), for no second fit.
        model = _cut(model, cfg, seed, best + 1)
    return TrainResult(
        model, cfg, feats, best + 1, int(len(keep_lists)), dropped, float(mean_curve[best])
    )


def predict(result: TrainResult, df: pd.DataFrame) -> np.ndarray:
    """Ranker scores for the pairs of ``df`` (any fold described like the training one)."""
    return result.model.predict(
        df[result.features].astype(np.float32),
        base_margin=margin(df, result.config),
        output_margin=True,
    ).astype(np.float32)


def importance(result: TrainResult) -> dict[str, float]:
    """Total gain per feature (0 for features no split used), rounded, sorted by name."""
    gain = result.model.get_booster().get_score(importance_type="total_gain")
    return {f: round(float(gain.get(f, 0.0)), 4) for f in sorted(result.features)}


def describe_block(
    pairs: pd.DataFrame,
    user_feats: pd.DataFrame,
    item_feats: pd.DataFrame,
    context: PairContext,
    similarities: PairSimilarities | None = None,
) -> pd.DataFrame:
    """One block of users' candidate ``pairs`` (blend columns) with every feature: pair
    features from the fold's :class:`PairContext` (the similarity features looked up in
    ``similarities`` when given), user and item features joined (:func:`assemble`). A pure
    function of the block, so a fold described block by block gives the same rows."""
    pf = block_pair_features(pairs[KEY], context, similarities)
    return assemble(pairs, user_feats, item_feats, pd.concat([pairs[KEY], pf], axis=1))


def rank_described(df: pd.DataFrame, result: TrainResult, n: int) -> pd.DataFrame:
    """The ranker's top-``n`` of each user of a described block ``df`` (of
    :func:`describe_block`, or its :func:`learning_columns`): scores, ranks. A fold's
    lists are the concatenation of its blocks' in user order."""
    return rank_by(df, predict(result, df), n)
