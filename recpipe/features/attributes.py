"""User and item attributes: the users and items tables' own columns, encoded as features.

Numeric columns of ``users``/``items`` become ``u_attr_<col>``/``i_attr_<col>`` as floats;
columns named ``*_ts`` (unix seconds) or of datetime type become ``*_days_ago`` (days before
``now``; negative = after ``now``); string, categorical or boolean columns with at most
``max_attribute_levels`` distinct values become integer codes: the position of the value in
the sorted list of the table's distinct values, -1 when missing. The vocabulary comes from
the whole table (not the history), so codes are the same in every fold. Other columns (ids,
title, text, categories, lists, high cardinality strings) are left out. Column names are
lower-cased, non-word runs as ``_``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recpipe.features.history import SECONDS_PER_DAY
from recpipe.text import NON_WORD

_METADATA_COLUMNS = {"user_id", "user_idx", "item_id", "item_idx", "title", "text", "categories"}


def _attribute_features(table: pd.DataFrame, prefix: str, now: int, max_levels: int) -> dict:
    """Encoded attribute columns of a users/items table (see the module docstring)."""
    out: dict[str, np.ndarray] = {}
    sources: dict[str, str] = {}

    def put(name: str, col: str, values: np.ndarray) -> None:
        if name in out:
            raise ValueError(f"attribute columns {sources[name]!r} and {col!r} give one name")
        out[name], sources[name] = values, col

    for col in table.columns:
        if col in _METADATA_COLUMNS:
            continue
        values = table[col]
        base = prefix + NON_WORD.sub("_", str(col).strip().lower()).strip("_")
        if pd.api.types.is_bool_dtype(values):
            codes = values.astype("boolean").astype("Int8").fillna(-1)
            put(base, col, codes.to_numpy(np.int64))
        elif pd.api.types.is_datetime64_any_dtype(values):
            secs = values.astype("datetime64[s, UTC]" if values.dt.tz else "datetime64[s]")
            secs = secs.astype("int64").to_numpy(np.float64)
            secs[values.isna().to_numpy()] = np.nan
            put(base + "_days_ago", col, (now - secs) / SECONDS_PER_DAY)
        elif pd.api.types.is_numeric_dtype(values):
            numbers = values.to_numpy(np.float64, na_value=np.nan)
            if base.endswith("_ts"):
                put(base[:-3] + "_days_ago", col, (now - numbers) / SECONDS_PER_DAY)
            else:
                put(base, col, numbers)
        elif isinstance(values.dtype, pd.CategoricalDtype) or pd.api.types.infer_dtype(
            values, skipna=True
        ) in ("string", "boolean"):
            present = values.dropna().astype(str)
            vocab = sorted(present.unique().tolist())
            if not 0 < len(vocab) <= max_levels:
                continue  # high-cardinality text (names, ids) is no attribute a tree can use
            codes = np.full(len(values), -1, dtype=np.int64)
            codes[values.notna().to_numpy()] = pd.Index(vocab).get_indexer(present)
            put(base, col, codes)
    return out


def _check_no_clash(columns: dict, attrs: dict) -> None:
    clash = set(columns) & set(attrs)
    if clash:
        raise ValueError(f"attribute columns clash with feature names: {sorted(clash)}")
