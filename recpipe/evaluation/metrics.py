"""Evaluation metrics: top-N accuracy, beyond-accuracy, rating error and bootstrap intervals.

One definition per metric, explained in README's "Evaluation and what every metric means";
every function here is pure and vectorised over users (the only Python loops run over
the few cut-offs K or over fixed-size chunks).

Inputs
------
``recs``
    Recommendations with columns ``user_idx``, ``item_idx`` and ``rank`` (integer, 1 = best;
    per user the ranks are ``1..n`` without gaps or repeats, and no item appears twice in one
    user's list). A user's list may be shorter than K: the missing slots count as misses.
``truth``
    Targets with columns ``user_idx``, ``item_idx`` and ``relevant`` (bool). Only relevant
    rows are hits; rows with ``relevant == False`` are ignored by the top-N metrics, so adding
    them never changes a result. A pair listed more than once counts once, and counts as
    relevant if any of its rows is relevant.

Who is averaged
---------------
Top-N metrics are averaged over the *evaluation users*: exactly the users of ``truth`` with at
least one relevant target. Users whose targets are all non-relevant are excluded (recall, NDCG
and MAP are undefined for them), users of ``recs`` absent from that set are ignored, and an
evaluation user without recommendations scores 0 on every metric instead of being skipped, so
a model cannot raise its score by declining to answer.

Beyond-accuracy metrics (diversity, novelty, popularity) describe the lists themselves, so
they average over the users that have recommendations.

An empty average (no users to average over) is reported as NaN rather than as 0 or an error,
so a segment that happens to be empty (e.g. no cold users) stays visible instead of crashing
the evaluation or looking like a bad model.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe.errors import DataError

TOPN_METRICS: tuple[str, ...] = ("precision", "recall", "ndcg", "map", "mrr", "hitrate")
"""Names of the top-N metrics; columns and keys read ``f"{name}@{k}"``."""

BEYOND_ACCURACY_METRICS: tuple[str, ...] = ("coverage", "diversity", "novelty", "popularity")
"""Names of the beyond-accuracy metrics (keys read ``f"{name}@{k}"``)."""

RATING_METRICS: tuple[str, ...] = ("rmse", "mae")
"""Names of the rating-error metrics."""

REC_COLUMNS: tuple[str, ...] = ("user_idx", "item_idx", "rank")
TRUTH_COLUMNS: tuple[str, ...] = ("user_idx", "item_idx", "relevant")

# Bounds the bootstrap's index matrix (chunk x n_users) to ~32 MB of int64 whatever the number
# of users, so memory stays flat while the work is still done in large numpy blocks.
_BOOTSTRAP_DRAWS_PER_CHUNK = 1 << 22
# Users per block when summing item vectors for diversity: keeps the (users x features) block
# small for dense features while amortising the sparse product over many users.
_DIVERSITY_USERS_PER_CHUNK = 8192


def metric_name(metric: str, k: int) -> str:
    """Column / key name of ``metric`` at cut-off ``k``, e.g. ``metric_name("ndcg", 10)``."""
    return f"{metric}@{k}"


# --------------------------------------------------------------------------- validation


def _require_columns(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    for col in columns:
        if col not in df.columns:
            raise DataError(f"{what} lacks required column (has {list(df.columns)})", column=col)


def _check_ks(ks: Iterable[int]) -> list[int]:
    """Sorted, de-duplicated cut-offs; duplicates would create duplicate columns."""
    out = sorted({int(k) for k in ks})
    if not out:
        raise ValueError("ks is empty: give at least one cut-off K")
    if out[0] < 1:
        raise ValueError(f"cut-offs must be >= 1, got {out[0]}")
    return out


def _top_k(recs: pd.DataFrame, k: int) -> pd.DataFrame:
    """Rows of ``recs`` with ``rank <= k``, validated and sorted by (user, rank).

    Validation runs on the kept rows only: a list that is gap-free up to its end is gap-free
    up to any cut-off, and checking the head is much cheaper on long candidate lists. Sorting
    gives every later sum a fixed order, so results do not depend on the input's row order
    even in the last bit.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _require_columns(recs, REC_COLUMNS, "recs")
    if not pd.api.types.is_integer_dtype(recs["rank"]):
        raise DataError(f"rank must be an integer column, got {recs['rank'].dtype}", column="rank")
    top = recs.loc[recs["rank"] <= k, list(REC_COLUMNS)]
    if (top["rank"] < 1).any():
        raise DataError("ranks must start at 1 (1 = best)", column="rank")
    dup_item = top.duplicated(["user_idx", "item_idx"])
    if dup_item.any():
        row = top.loc[dup_item].iloc[0]
        raise DataError(
            f"item {row['item_idx']} is recommended twice to user {row['user_idx']}",
            column="item_idx",
        )
    dup_rank = top.duplicated(["user_idx", "rank"])
    if dup_rank.any():
        row = top.loc[dup_rank].iloc[0]
        raise DataError(
            f"rank {row['rank']} is used twice for user {row['user_idx']}", column="rank"
        )
    # With ranks unique and >= 1, a gap exists exactly when the largest rank exceeds the count.
    per_user = top.groupby("user_idx")["rank"].agg(["max", "size"])
    gaps = per_user["max"] > per_user["size"]
    if gaps.any():
        raise DataError(
            f"ranks of user {gaps[gaps].index[0]} have gaps (expected 1..n)", column="rank"
        )
    return top.sort_values(["user_idx", "rank"], kind="stable", ignore_index=True)


def _relevant_pairs(truth: pd.DataFrame) -> pd.DataFrame:
    """Distinct relevant (user_idx, item_idx) pairs of ``truth``."""
    _require_columns(truth, TRUTH_COLUMNS, "truth")
    relevant = truth["relevant"]
    if not pd.api.types.is_bool_dtype(relevant):
        raise DataError(f"relevant must be boolean, got {relevant.dtype}", column="relevant")
    if relevant.isna().any():
        raise DataError("relevant has missing values", column="relevant")
    pairs = truth.loc[relevant.to_numpy(dtype=bool), ["user_idx", "item_idx"]]
    return pairs.drop_duplicates(ignore_index=True)


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


# --------------------------------------------------------------------------- top-N accuracy


def topn_per_user(recs: pd.DataFrame, truth: pd.DataFrame, ks: Iterable[int]) -> pd.DataFrame:
    """Top-N accuracy of every evaluation user at every cut-off K.

    For a user with relevant set R (``|R| >= 1``), ranked list L and cut-off K, with
    ``hit(i) = 1`` when the item at rank ``i`` is in R:

    - ``precision@K = sum_{i<=K} hit(i) / K`` (a list shorter than K is not forgiven: the
      divisor is always K);
    - ``recall@K = sum_{i<=K} hit(i) / |R|``;
    - ``ndcg@K = DCG@K / IDCG@K`` with binary gain, ``DCG@K = sum_{i<=K} hit(i) / log2(i+1)``
      and ``IDCG@K = sum_{i=1}^{min(|R|, K)} 1 / log2(i+1)`` (the best DCG any list could
      reach, so a perfect list scores 1 even when ``|R| > K``);
    - ``map@K = sum_{i<=K} hit(i) * precision@i / min(|R|, K)`` (average precision
      normalised by the most hits a K-list could hold, so a perfect list scores 1);
    - ``mrr@K = 1 / i*`` for the rank ``i*`` of the first hit if ``i* <= K``, else 0;
    - ``hitrate@K = 1`` if any of the top K is a hit, else 0.

    Rows are the evaluation users (see the module docstring): users of ``truth`` with at least
    one relevant target, sorted, as the index ``user_idx``; such a user with no
    recommendations gets 0 everywhere. Columns are ``metric_name(m, K)`` for each metric ``m``
    of :data:`TOPN_METRICS` (outer) and each K (inner, ascending, duplicates dropped).
    """
    ks = _check_ks(ks)
    kmax = ks[-1]
    rel = _relevant_pairs(truth)
    n_rel_by_user = rel.groupby("user_idx").size()
    users = n_rel_by_user.index.to_numpy()
    n_rel = n_rel_by_user.to_numpy(dtype=np.int64)
    n_users = len(users)

    # Only hits matter: every metric is a sum over hit positions plus per-user constants, so
    # the work scales with the number of hits, not with users x K.
    top = _top_k(recs, kmax)
    hits = top.merge(rel, on=["user_idx", "item_idx"], how="inner")
    hits = hits.sort_values(["user_idx", "rank"], kind="stable", ignore_index=True)
    pos = np.searchsorted(users, hits["user_idx"].to_numpy())
    rank = hits["rank"].to_numpy(dtype=np.int64)
    # 1-based count of hits at or above this one within its user; hits are grouped by user,
    # so it is the offset from the user's first hit. It equals the hits in the top ``rank``,
    # whatever K is, so precision@rank can be computed once for all cut-offs.
    nth_hit = np.arange(len(pos)) - np.searchsorted(pos, pos, side="left") + 1
    first_rank = np.full(n_users, np.inf)
    first = nth_hit == 1
    first_rank[pos[first]] = rank[first]

    discount = 1.0 / np.log2(np.arange(2, kmax + 2))  # discount[i-1] = 1 / log2(i+1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(discount)])  # ideal_cum[j] = IDCG of j hits

    columns: dict[str, np.ndarray] = {}
    for k in ks:
        within = rank <= k
        p, r = pos[within], rank[within]
        n_hits = np.bincount(p, minlength=n_users).astype(float)
        dcg = np.bincount(p, weights=discount[r - 1], minlength=n_users)
        ap_sum = np.bincount(p, weights=nth_hit[within] / r, minlength=n_users)
        best = np.minimum(n_rel, k)
        columns[metric_name("precision", k)] = n_hits / k
        columns[metric_name("recall", k)] = n_hits / n_rel
        columns[metric_name("ndcg", k)] = dcg / ideal_cum[best]
        columns[metric_name("map", k)] = ap_sum / best
        with np.errstate(divide="ignore"):
            columns[metric_name("mrr", k)] = np.where(first_rank <= k, 1.0 / first_rank, 0.0)
        columns[metric_name("hitrate", k)] = (n_hits > 0).astype(float)

    ordered = [metric_name(m, k) for m in TOPN_METRICS for k in ks]
    index = pd.Index(users, name="user_idx")
    return pd.DataFrame({c: columns[c] for c in ordered}, index=index)


def topn_metrics(recs: pd.DataFrame, truth: pd.DataFrame, ks: Iterable[int]) -> dict[str, float]:
    """Mean over evaluation users of every column of :func:`topn_per_user`.

    Keys are ``metric_name(m, K)``; values are NaN when there is no evaluation user.
    """
    per_user = topn_per_user(recs, truth, ks)
    return {col: _mean_or_nan(per_user[col].to_numpy()) for col in per_user.columns}


# --------------------------------------------------------------------------- beyond accuracy


def coverage(recs: pd.DataFrame, n_catalogue: int, k: int) -> float:
    """Catalogue coverage@K: share of the ``n_catalogue`` items in at least one user's top K.

    Item indices must lie in ``[0, n_catalogue)``: an index outside means the catalogue size
    and the recommendations come from different id maps, which is raised rather than reported
    as a coverage above 1.
    """
    if n_catalogue < 1:
        raise ValueError(f"n_catalogue must be >= 1, got {n_catalogue}")
    items = _top_k(recs, k)["item_idx"].to_numpy()
    if len(items) and (items.min() < 0 or items.max() >= n_catalogue):
        raise DataError(
            f"item_idx outside the catalogue [0, {n_catalogue}): "
            f"min {items.min()}, max {items.max()}",
            column="item_idx",
        )
    return float(len(np.unique(items)) / n_catalogue)


def _l2_normalise(vectors: np.ndarray | sp.spmatrix | sp.sparray) -> np.ndarray | sp.csr_array:
    """Rows scaled to unit length; zero rows stay zero (there is no direction to keep)."""
    if sp.issparse(vectors):
        m = sp.csr_array(vectors, dtype=np.float64)
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        return sp.csr_array(sp.diags_array(scale) @ m)
    m = np.asarray(vectors, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"item_vectors must be 2-D (items x features), got shape {m.shape}")
    norms = np.linalg.norm(m, axis=1)
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return m * scale[:, None]


def _row_sq_norms(m: np.ndarray | sp.sparray | sp.spmatrix) -> np.ndarray:
    if sp.issparse(m):
        return np.asarray(m.multiply(m).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", m, m)


def intra_list_diversity(
    recs: pd.DataFrame, item_vectors: np.ndarray | sp.spmatrix | sp.sparray, k: int
) -> float:
    """Intra-list diversity@K: mean over users of the mean pairwise cosine distance in top K.

    For a user whose top K holds n >= 2 items with feature rows ``x_1..x_n`` (row
    ``item_idx`` of ``item_vectors``, dense or scipy sparse, e.g. category one-hot or TF-IDF):
    ``ILD = 1 / (n (n-1)) * sum_{i != j} (1 - cos(x_i, x_j))``. Users with fewer than 2 items
    have no pair and are skipped; NaN if no user has a pair.

    Computed without forming pairs: with unit rows ``v_i`` and ``s = sum_i v_i``,
    ``sum_{i != j} cos = ||s||^2 - sum_i ||v_i||^2``.

    An item whose feature row is all zeros (no category, empty text) has no direction; as in
    ``sklearn.metrics.pairwise.cosine_similarity`` its similarity to every item is taken as 0,
    i.e. distance 1. Such items therefore count as maximally different from the rest of the
    list; run the metric on items with features if that is not wanted.

    The result lies in ``[0, 1]`` for non-negative features and in ``[0, 2]`` otherwise.
    """
    top = _top_k(recs, k)
    n_items = item_vectors.shape[0]
    items = top["item_idx"].to_numpy()
    if len(items) and (items.min() < 0 or items.max() >= n_items):
        raise DataError(
            f"item_idx {items.max()} has no row in item_vectors ({n_items} rows)",
            column="item_idx",
        )
    unit = _l2_normalise(item_vectors)
    has_direction = _row_sq_norms(unit) > 0.5  # 1 for unit rows, 0 for zero rows

    users, pos = np.unique(top["user_idx"].to_numpy(), return_inverse=True)
    list_len = np.bincount(pos, minlength=len(users)).astype(float)
    self_sim = np.bincount(pos, weights=has_direction[items].astype(float), minlength=len(users))
    # User x item indicator: one sparse product sums each user's unit vectors at once.
    indicator = sp.csr_array(
        (np.ones(len(items)), (pos, items)), shape=(len(users), n_items), dtype=np.float64
    )
    sum_sq = np.empty(len(users))
    for start in range(0, len(users), _DIVERSITY_USERS_PER_CHUNK):
        stop = min(start + _DIVERSITY_USERS_PER_CHUNK, len(users))
        sum_sq[start:stop] = _row_sq_norms(indicator[start:stop] @ unit)

    keep = list_len >= 2
    n = list_len[keep]
    mean_sim = (sum_sq[keep] - self_sim[keep]) / (n * (n - 1))
    return _mean_or_nan(1.0 - mean_sim)


def _popularity_of(item_popularity: pd.Series | np.ndarray, items: np.ndarray) -> np.ndarray:
    """Training popularity of ``items``.

    A Series is looked up by its index (``item_idx``), items it lacks have count 0 (they were
    never seen in training); an array is looked up by position and must cover every item, as a
    short array more likely means a mismatched id map than unseen items.
    """
    if isinstance(item_popularity, pd.Series):
        counts = item_popularity.reindex(items).fillna(0).to_numpy(dtype=np.float64)
    else:
        arr = np.asarray(item_popularity, dtype=np.float64)
        if len(items) and (items.min() < 0 or items.max() >= len(arr)):
            raise DataError(
                f"item_idx {items.max()} has no entry in item_popularity ({len(arr)} entries)",
                column="item_idx",
            )
        counts = arr[items]
    if np.isnan(counts).any() or (counts < 0).any():
        raise ValueError("item_popularity must hold non-negative counts")
    return counts


def _mean_of_user_means(top: pd.DataFrame, values: np.ndarray) -> float:
    """Mean over users of the mean of ``values`` (one per row of ``top``) within each user."""
    _, pos = np.unique(top["user_idx"].to_numpy(), return_inverse=True)
    sizes = np.bincount(pos)
    if not len(sizes):
        return float("nan")
    return float(np.mean(np.bincount(pos, weights=values) / sizes))


def novelty(
    recs: pd.DataFrame,
    item_popularity: pd.Series | np.ndarray,
    n_users_train: int,
    k: int,
) -> float:
    """Novelty@K: mean over users of the mean self-information of their top-K items.

    ``novelty(i) = -log2(p_i)`` with ``p_i = max(c_i, 1) / n_users_train`` and ``c_i`` the
    number of training users who interacted with item ``i`` (``item_popularity``, a Series
    indexed by ``item_idx`` with missing items read as 0, or an array indexed by ``item_idx``).
    The floor of one user keeps items never seen in training finite: they score
    ``log2(n_users_train)``, the same as an item seen by a single user, the rarest observable.
    Averaged over users with at least one recommendation; NaN if there is none.
    """
    if n_users_train < 1:
        raise ValueError(f"n_users_train must be >= 1, got {n_users_train}")
    top = _top_k(recs, k)
    counts = _popularity_of(item_popularity, top["item_idx"].to_numpy())
    if (counts > n_users_train).any():
        raise ValueError(
            f"item_popularity exceeds n_users_train ({n_users_train}); "
            "it must count distinct training users per item"
        )
    info = np.log2(n_users_train) - np.log2(np.maximum(counts, 1.0))
    return _mean_of_user_means(top, info)


def average_popularity(
    recs: pd.DataFrame, item_popularity: pd.Series | np.ndarray, k: int
) -> float:
    """Average recommendation popularity (ARP@K).

    Mean over users of the mean training popularity of their top-K items, with
    ``item_popularity`` as in :func:`novelty` (usually the number of training users who
    interacted with each item); items never seen in training count 0, without the floor
    novelty needs. Averaged over users with at least one recommendation; NaN if there is none.
    """
    top = _top_k(recs, k)
    counts = _popularity_of(item_popularity, top["item_idx"].to_numpy())
    return _mean_of_user_means(top, counts)


# --------------------------------------------------------------------------- rating error


def _aligned(pred: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    a = np.asarray(actual, dtype=np.float64).ravel()
    if p.shape != a.shape:
        raise ValueError(f"pred and actual differ in length: {p.shape[0]} vs {a.shape[0]}")
    if not np.isfinite(a).all():
        raise ValueError("actual ratings must all be finite")
    return p, a


def rmse(pred: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error ``sqrt(mean((pred - actual)^2))`` of aligned arrays.

    Every prediction must be present: a NaN is an error here rather than silently dropped; use
    :func:`rating_errors` to score only predicted pairs and count the rest.
    """
    p, a = _aligned(pred, actual)
    if np.isnan(p).any():
        raise ValueError("pred has NaN; use rating_errors() to score partial predictions")
    return float(np.sqrt(np.mean((p - a) ** 2))) if len(p) else float("nan")


def mae(pred: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute error ``mean(|pred - actual|)`` of aligned arrays (NaN in pred: error)."""
    p, a = _aligned(pred, actual)
    if np.isnan(p).any():
        raise ValueError("pred has NaN; use rating_errors() to score partial predictions")
    return float(np.mean(np.abs(p - a))) if len(p) else float("nan")


def rating_errors(pred: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """RMSE and MAE over the predicted pairs, plus how many pairs were predicted and not.

    A model that cannot score a pair (unknown user or item) returns NaN for it; those pairs
    are left out of ``rmse``/``mae`` but counted in ``n_missing``, so a model cannot look
    accurate by abstaining unnoticed. Returns ``{"rmse", "mae", "n", "n_missing"}`` with ``n``
    the number of predicted pairs; the errors are NaN when ``n == 0``.
    """
    p, a = _aligned(pred, actual)
    predicted = ~np.isnan(p)
    p, a = p[predicted], a[predicted]
    return {
        "rmse": rmse(p, a),
        "mae": mae(p, a),
        "n": int(predicted.sum()),
        "n_missing": int((~predicted).sum()),
    }


# --------------------------------------------------------------------------- bootstrap


def _check_sample(values: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    if not len(v):
        raise ValueError(f"{name} is empty: nothing to bootstrap")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return v


def _check_boot(n_boot: int, level: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` resamples (with replacement) of ``values``.

    Resamples are drawn in chunks whose size depends only on ``len(values)``, so the result is
    a function of (values, n_boot, seed) alone.
    """
    rng = np.random.default_rng(seed)
    n = len(values)
    chunk = max(1, _BOOTSTRAP_DRAWS_PER_CHUNK // n)
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[idx].mean(axis=1)
    return means


def _percentile_interval(means: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_interval(
    values: np.ndarray, n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-user ``values``.

    Users are resampled with replacement ``n_boot`` times with
    ``np.random.default_rng(seed)``; the interval is the ``(1-level)/2`` and
    ``(1+level)/2`` quantiles of the resampled means. Deterministic for a seed.
    """
    _check_boot(n_boot, level)
    v = _check_sample(values, "values")
    return _percentile_interval(_bootstrap_means(v, n_boot, seed), level)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n_boot: int, seed: int, level: float = 0.95
) -> dict[str, float | bool]:
    """Paired bootstrap of ``mean(a) - mean(b)`` for per-user values of two runs.

    ``a[u]`` and ``b[u]`` must belong to the same user ``u``. Users are resampled together
    (the same resample for both runs), which removes the between-user variance both runs
    share and makes the test far sharper than comparing two separate intervals.

    Returns:
        ``mean_a``, ``mean_b``, ``diff`` (``mean_a - mean_b``), ``low``/``high`` (percentile
        interval of the diff at ``level``), ``p_value`` (twice the share of resampled diffs
        on the other side of 0 from ``diff``, zero included, capped at 1; 1 when ``diff`` is
        0) and ``significant`` (the interval excludes 0).
    """
    _check_boot(n_boot, level)
    va = _check_sample(a, "a")
    vb = _check_sample(b, "b")
    if va.shape != vb.shape:
        raise ValueError(f"a and b differ in length: {va.shape[0]} vs {vb.shape[0]}")
    d = va - vb
    diff = float(d.mean())
    # Resampling users of d is the same as resampling users of (a, b) jointly.
    means = _bootstrap_means(d, n_boot, seed)
    low, high = _percentile_interval(means, level)
    if diff > 0:
        share = float(np.mean(means <= 0))
    elif diff < 0:
        share = float(np.mean(means >= 0))
    else:
        share = 0.5  # no direction to test: report p = 1
    return {
        "mean_a": float(va.mean()),
        "mean_b": float(vb.mean()),
        "diff": diff,
        "low": low,
        "high": high,
        "p_value": min(1.0, 2.0 * share),
        "significant": bool(low > 0 or high < 0),
    }
