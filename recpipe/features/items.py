"""Item features (``i_*``): one row per catalogue item, from a fold's history seen at ``now``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recpipe.features.arrays import _frame, _group_extreme, _safe_div
from recpipe.features.attributes import _attribute_features, _check_no_clash
from recpipe.features.config import FeaturesConfig
from recpipe.features.history import SECONDS_PER_DAY, _Log
from recpipe.features.metadata import _n_items, item_category_matrix


def item_features(
    history: pd.DataFrame, items: pd.DataFrame, now: int, cfg: FeaturesConfig
) -> pd.DataFrame:
    """Features of every catalogue item from ``history`` seen at ``now``.

    Index ``item_idx`` (in the order of ``items``); columns as in
    :data:`~recpipe.features.docs.FEATURE_DOCS` (``i_*``), windows in the order of
    ``cfg.windows_days``, then item attributes.
    """
    item_idx = items["item_idx"].to_numpy(np.int64)
    n = _n_items(items)
    log = _Log(history, 0, n, now)

    events = np.bincount(log.item, minlength=n)
    users = log.item_users()
    first = _group_extreme(np.minimum, log.pair_item, log.pair_first, n, np.nan)
    last = _group_extreme(np.maximum, log.pair_item, log.pair_last, n, np.nan)
    rated = ~np.isnan(log.rating)
    n_rated = np.bincount(log.item[rated], minlength=n)
    sum_rated = np.bincount(log.item[rated], weights=log.rating[rated], minlength=n)
    decay = np.exp2(-np.maximum(log.age_days, 0.0) / cfg.half_life_days)
    item_cats, _ = item_category_matrix(items)
    pair_age = (now - log.pair_last) / SECONDS_PER_DAY

    cols: dict[str, np.ndarray] = {
        "i_users": users,
        "i_events": events,
        "i_pop_share": log.pop_share(),
    }
    for w in cfg.windows_days:
        cols[f"i_users_{w}d"] = np.bincount(log.pair_item[pair_age < w], minlength=n)
    cols.update(
        {
            "i_pop_decayed": np.bincount(log.item, weights=decay, minlength=n),
            "i_trend": _trend(log, n, cfg),
            "i_days_since_last": (now - last) / SECONDS_PER_DAY,
            "i_days_since_first": (now - first) / SECONDS_PER_DAY,
            "i_mean_rating": np.where(
                n_rated >= cfg.min_ratings, _safe_div(sum_rated, n_rated), np.nan
            ),
            "i_n_ratings": n_rated,
            "i_n_categories": np.diff(item_cats.indptr).astype(np.int64),
        }
    )
    cols = {k: v[item_idx] for k, v in cols.items()}
    attrs = _attribute_features(items, "i_attr_", now, cfg.max_attribute_levels)
    _check_no_clash(cols, attrs)
    return _frame(cols | attrs, item_idx, "item_idx")


def _trend(log: _Log, n_items: int, cfg: FeaturesConfig) -> np.ndarray:
    """Smoothed ratio of the shortest window's events to the longest window's rate.

    Window lengths are capped at the history's span, so a log shorter than the long window
    does not make every item look like it is rising.
    """
    short, long = min(cfg.windows_days), max(cfg.windows_days)
    n_short = np.bincount(log.item[log.age_days < short], minlength=n_items)
    n_long = np.bincount(log.item[log.age_days < long], minlength=n_items)
    span = float(log.age_days.max()) if len(log.age_days) else 0.0
    eff_short, eff_long = min(short, span), min(long, span)
    share = eff_short / eff_long if eff_long > 0 else 1.0
    return (n_short + cfg.trend_prior) / (n_long * share + cfg.trend_prior)
