"""User features (``u_*``): one row per user, from a fold's history seen at ``now``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe.features.arrays import _frame, _group_extreme, _safe_div
from recpipe.features.attributes import _attribute_features, _check_no_clash
from recpipe.features.config import FeaturesConfig
from recpipe.features.history import SECONDS_PER_DAY, _Log, _UserCategories
from recpipe.features.metadata import _n_items, item_category_matrix


def user_features(
    history: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
    now: int,
    cfg: FeaturesConfig,
    pop_share: np.ndarray | None = None,
    item_cats: sp.csr_matrix | None = None,
) -> pd.DataFrame:
    """Features of every user of ``users`` from ``history`` seen at ``now``.

    Index ``user_idx`` (in the order of ``users``); columns as in
    :data:`~recpipe.features.docs.FEATURE_DOCS` (``u_*``), windows in the order of
    ``cfg.windows_days``, then user attributes. History rows of users absent from ``users``
    only count towards item popularity. ``pop_share`` (distinct users per item over users
    with history) replaces the item popularity ``history`` gives: the service describes one
    user's fresh history against the popularity of the whole bundle's history, which gives
    the user the same features as the batch computation over that history.
    """
    user_idx = users["user_idx"].to_numpy(np.int64)
    cols = user_feature_columns(history, user_idx, items, now, cfg, pop_share, item_cats)
    attrs = _attribute_features(users, "u_attr_", now, cfg.max_attribute_levels)
    _check_no_clash(cols, attrs)
    return _frame(cols | attrs, user_idx, "user_idx")


def user_feature_columns(
    history: pd.DataFrame,
    user_idx: np.ndarray,
    items: pd.DataFrame,
    now: int,
    cfg: FeaturesConfig,
    pop_share: np.ndarray | None = None,
    item_cats: sp.csr_matrix | None = None,
) -> dict[str, np.ndarray]:
    """The columns of :func:`user_features` but the attributes, for the users ``user_idx``
    (int64, in that order)."""
    n_users = int(user_idx.max()) + 1 if len(user_idx) else 0
    log = _Log(history, n_users, _n_items(items), now)
    n = log.n_users

    events = log.user_events()
    n_items_u = np.bincount(log.pair_user, minlength=n)
    first = _group_extreme(np.minimum, log.pair_user, log.pair_first, n, np.nan)
    last = _group_extreme(np.maximum, log.pair_user, log.pair_last, n, np.nan)
    rated = ~np.isnan(log.rating)
    n_rated = np.bincount(log.user[rated], minlength=n)
    sum_rated = np.bincount(log.user[rated], weights=log.rating[rated], minlength=n)
    pop = log.pop_share() if pop_share is None else pop_share
    sum_pop = np.bincount(log.pair_user, weights=pop[log.pair_item], minlength=n)

    if item_cats is None:
        item_cats, _ = item_category_matrix(items)
    uc = _UserCategories(log, item_cats)
    n_cats_u = np.bincount(uc.user, minlength=n)
    # Entropy of p_c = events in c / sum over the user's categories (in bits).
    total = np.bincount(uc.user, weights=uc.events, minlength=n)
    p = uc.events / total[uc.user] if len(uc.user) else np.array([])
    entropy = np.bincount(uc.user, weights=-p * np.log2(p), minlength=n)
    has = events > 0

    cols: dict[str, np.ndarray] = {
        "u_events": events,
        "u_items": n_items_u,
    }
    for w in cfg.windows_days:
        recent = log.age_days < w
        cols[f"u_events_{w}d"] = np.bincount(log.user[recent], minlength=n)
    cols.update(
        {
            "u_days_since_last": (now - last) / SECONDS_PER_DAY,
            "u_days_since_first": (now - first) / SECONDS_PER_DAY,
            "u_active_days": (last - first) / SECONDS_PER_DAY,
            "u_mean_rating": np.where(
                n_rated >= cfg.min_ratings, _safe_div(sum_rated, n_rated), np.nan
            ),
            "u_rated_share": _safe_div(n_rated, events),
            "u_mean_weight": _safe_div(
                np.bincount(log.user, weights=log.weight, minlength=n), events
            ),
            "u_n_categories": n_cats_u,
            "u_category_entropy": np.where(has, np.abs(entropy), np.nan),
            "u_mean_item_pop": _safe_div(sum_pop, n_items_u),
        }
    )
    cols.update(_session_features(log, cfg.session_gap_hours))
    return {k: v[user_idx] for k, v in cols.items()}


def _session_features(log: _Log, gap_hours: float) -> dict[str, np.ndarray]:
    """``u_gap_last_days`` and ``u_last_session_items`` from the users' distinct items in
    order of first event (ties by item_idx)."""
    n = log.n_users
    order = np.lexsort((log.pair_item, log.pair_first, log.pair_user))
    user, first = log.pair_user[order], log.pair_first[order]
    gap = np.full(n, np.nan)
    session = np.zeros(n, dtype=np.int64)
    if len(user) == 0:
        return {"u_gap_last_days": gap, "u_last_session_items": session}
    new_user = np.r_[True, user[1:] != user[:-1]]
    step = np.r_[0, np.diff(first)]
    # A session starts at a user's first item or after a pause longer than gap_hours.
    starts = new_user | (step > gap_hours * 3600.0)
    pos = np.arange(len(user))
    last_start = _group_extreme(np.maximum, user, np.where(starts, pos, -1), n)
    count = np.bincount(user, minlength=n)
    end = np.cumsum(count)  # one past each user's last row
    has = count > 0
    session[has] = end[has] - last_start[has]
    two = count >= 2
    gap[two] = step[end[two] - 1] / SECONDS_PER_DAY
    return {"u_gap_last_days": gap, "u_last_session_items": session}
