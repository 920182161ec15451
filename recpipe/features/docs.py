"""What every feature column means: :data:`FEATURE_DOCS` and :func:`feature_doc`.

Conventions every column follows:

- Counts are 0 for users or items without history; means, shares, recencies and
  similarities are NaN where they are undefined (XGBoost routes NaN by a learned default).
- Times are in days (86,400 s). An event is inside the window of ``w`` days when
  ``now - timestamp < w`` days; recencies are ``(now - timestamp) / 1 day``.
- Category memberships come from the items table (``categories``, a list per item); an
  event counts fully for each category of its item, so a two-category item's event counts
  in both.
- Popularity share of an item = distinct history users who touched it / history users; it
  is fold-size independent, unlike raw counts (the folds' histories differ in length).
- Attributes: columns of the ``users``/``items`` tables become ``u_attr_*``/``i_attr_*``
  features; :mod:`recpipe.features.attributes` says which columns and how each is encoded.
"""

from __future__ import annotations

import re

FEATURE_DOCS: dict[str, str] = {
    # users
    "u_events": "user's history events (0 without history)",
    "u_items": "distinct items in the user's history (0 without history)",
    "u_events_{w}d": "user's events in the last {w} days before now (0 without history)",
    "u_days_since_last": "days from the user's last history event to now (NaN: no history)",
    "u_days_since_first": "days from the user's first history event to now (NaN: no history)",
    "u_active_days": "days between the user's first and last history events (NaN: no history)",
    "u_mean_rating": "mean rating of the user's rated events (NaN below min_ratings)",
    "u_rated_share": "share of the user's events that carry a rating (NaN: no history)",
    "u_mean_weight": "mean event weight of the user (funnel depth; NaN: no history)",
    "u_n_categories": "distinct item categories in the user's history (breadth; 0: none)",
    "u_category_entropy": "entropy in bits of the user's events over categories (0 when all "
    "in one or none; NaN: no history)",
    "u_mean_item_pop": "mean popularity share of the user's distinct items (mainstreamness; "
    "NaN: no history)",
    "u_gap_last_days": "days between the first events of the user's last two distinct items "
    "(NaN: fewer than two items)",
    "u_last_session_items": "distinct items in the user's last session: back from the latest "
    "item while consecutive first events are at most session_gap_hours apart (0: no history)",
    "u_attr_{name}": "user attribute from the users table (number as is, string as sorted "
    "code, -1 missing)",
    "u_attr_{name}_days_ago": "user timestamp attribute as days before now",
    # items
    "i_users": "distinct users who interacted with the item (0 without history)",
    "i_events": "events on the item (0 without history)",
    "i_pop_share": "i_users / users with any history (fold-size independent popularity)",
    "i_users_{w}d": "distinct users with an event on the item in the last {w} days",
    "i_pop_decayed": "events on the item, each weighted 0.5 ** (age / half_life_days)",
    "i_trend": "(events in the shortest window + prior) / (events expected there at the "
    "longest window's rate + prior); 1 = steady, > 1 rising",
    "i_days_since_last": "days from the item's last event to now (NaN: no history)",
    "i_days_since_first": "days from the item's first event to now (age in the log; NaN: none)",
    "i_mean_rating": "mean rating of the item's rated events (NaN below min_ratings)",
    "i_n_ratings": "rated events on the item",
    "i_n_categories": "number of categories of the item in the catalogue",
    "i_attr_{name}": "item attribute from the items table (number as is, string as sorted "
    "code, -1 missing)",
    "i_attr_{name}_days_ago": "item timestamp attribute (e.g. release_ts) as days before now "
    "(negative: after now)",
    # pairs
    "p_cat_affinity": "share of the user's events in each of the item's categories, averaged "
    "over them (NaN: user without history or item without categories)",
    "p_cat_max_affinity": "largest share of the user's events in one of the item's categories "
    "(NaN as p_cat_affinity)",
    "p_days_since_cat": "days since the user last touched any of the item's categories (NaN: "
    "never)",
    "p_content_max_sim": "max TF-IDF cosine (title, text, categories) between the item and the "
    "user's content_history most recent items (NaN: undescribed item or user)",
    "p_content_mean_sim": "mean of the same cosines (NaN as p_content_max_sim)",
    "p_cf_last{k}_sim": "mean collaborative cosine (binary user sets in the history) between "
    "the item and the user's {k} most recent distinct items (NaN: item or user without "
    "history)",
    "p_cf_max_sim": "max collaborative cosine between the item and any of the user's "
    "content_history most recent items (NaN as p_cf_last<k>_sim)",
    "p_user_item_pop_ratio": "item's popularity / mean popularity of the user's items (NaN: "
    "user without history)",
}


_WINDOW_NAME = re.compile(r"^(?P<stem>[a-z_]+)_(?P<w>\d+)d$")
_RECENT_NAME = re.compile(r"^p_cf_last(?P<k>\d+)_sim$")


def feature_doc(name: str) -> str:
    """The documentation line of a produced column (window and attribute names resolved)."""
    if name in FEATURE_DOCS:
        return FEATURE_DOCS[name]
    for prefix in ("u_attr_", "i_attr_"):
        if name.startswith(prefix) and len(name) > len(prefix):
            attr = name[len(prefix) :]
            if attr.endswith("_days_ago"):
                key = prefix + "{name}_days_ago"
                attr = attr[: -len("_days_ago")]
            else:
                key = prefix + "{name}"
            return FEATURE_DOCS[key].replace("{name}", attr)
    match = _RECENT_NAME.match(name)
    if match:
        return FEATURE_DOCS["p_cf_last{k}_sim"].replace("{k}", match["k"])
    match = _WINDOW_NAME.match(name)
    if match:
        key = f"{match['stem']}_{{w}}d"
        if key in FEATURE_DOCS:
            return FEATURE_DOCS[key].replace("{w}", match["w"])
    raise KeyError(f"undocumented feature {name!r}")
