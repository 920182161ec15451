"""The canonical data contract every source is turned into, and its validation.

Tables (``data/prepared/``):

- ``interactions``: ``user_id`` (str), ``item_id`` (str), ``rating`` (float, NaN when the
  event carries no rating), ``event`` (category), ``weight`` (float > 0, the strength implicit
  models use), ``timestamp`` (int64 seconds), plus ``user_idx``/``item_idx`` (int32).
- ``items``: ``item_id``, ``item_idx``, ``title``, ``text``, ``categories`` (list of str), and
  any numeric attributes the source has.
- ``users``: ``user_id``, ``user_idx`` and any attributes the source has.

Ids are kept as the strings the user gave; ``users`` and ``items`` are the id maps: the row
with ``user_idx == i`` holds the user with contiguous index ``i`` (indices follow sorted ids,
so they do not depend on the order of the input rows).

Row numbers in error messages are 1-based data rows of the named file, header not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recpipe.errors import DataError

INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "event", "weight", "timestamp"]
ITEM_COLUMNS = ["item_id", "title", "text", "categories"]
USER_COLUMNS = ["user_id"]

DUPLICATE_POLICIES = ("keep_all", "keep_last", "keep_first", "sum")
MISSING_ITEM_POLICIES = ("add", "drop", "error")


@dataclass(frozen=True)
class RawTables:
    """What a source reader returns, before :func:`finalize` maps ids to indices.

    ``interactions`` has :data:`INTERACTION_COLUMNS` (ids as str, ``rating`` float or NaN,
    ``event`` str, ``weight`` float, ``timestamp`` int64 seconds); ``items`` has at least
    ``item_id`` (``title``, ``text``, ``categories`` filled with defaults when absent);
    ``users`` at least ``user_id``. ``*_file`` name where each table came from, for messages.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None
    interactions_file: str = "interactions"
    items_file: str = "items"
    users_file: str = "users"


def first_bad_row(mask: pd.Series) -> int:
    """1-based data row of the first True in ``mask`` (index = 0-based position in the file)."""
    return int(mask[mask].index[0]) + 1


def require_columns(df: pd.DataFrame, columns: list[str], file: str) -> None:
    """Fail naming the first required column that ``df`` lacks."""
    for col in columns:
        if col not in df.columns:
            raise DataError(
                f"missing required column (found: {', '.join(map(str, df.columns))})",
                file=file,
                column=col,
            )


def check_not_empty(df: pd.DataFrame, file: str) -> None:
    if len(df) == 0:
        raise DataError("input is empty: no data rows", file=file)


def check_ids(df: pd.DataFrame, column: str, file: str) -> pd.Series:
    """Ids must be present; returns them as stripped strings."""
    col = df[column]
    null = col.isna()
    as_str = col.astype("string").str.strip()
    null |= as_str.eq("")
    if null.any():
        raise DataError(
            f"null or empty id ({int(null.sum())} such rows)",
            file=file,
            column=column,
            row=first_bad_row(null),
        )
    return as_str.astype(object).astype(str)


def check_unique(ids: pd.Series, column: str, file: str, what: str) -> None:
    """Ids of an id map (``what``: item or user) must be unique: fail naming the repeated key."""
    dup = ids.duplicated()
    if dup.any():
        key = ids[dup].iloc[0]
        raise DataError(
            f"duplicate {what} id {key!r} (first on row {first_bad_row(ids.eq(key))})",
            file=file,
            column=column,
            row=first_bad_row(dup),
        )


def check_ratings(
    df: pd.DataFrame, column: str, file: str, min_rating: float | None, max_rating: float | None
) -> pd.Series:
    """Ratings are numbers within [min_rating, max_rating]; empty cells mean 'no rating'."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna() & raw.notna() & raw.astype("string").str.strip().ne("")
    if bad.any():
        row = first_bad_row(bad)
        raise DataError(
            f"rating is not a number: {raw.iloc[row - 1]!r}", file=file, column=column, row=row
        )
    values = values.astype(float)
    out = pd.Series(False, index=values.index)
    if min_rating is not None:
        out |= values < min_rating
    if max_rating is not None:
        out |= values > max_rating
    if out.any():
        row = first_bad_row(out)
        raise DataError(
            f"rating {values.iloc[row - 1]} outside the allowed range [{min_rating}, {max_rating}]",
            file=file,
            column=column,
            row=row,
        )
    if not np.isfinite(values.dropna()).all():
        row = first_bad_row(values.isin([np.inf, -np.inf]))
        raise DataError("rating is not finite", file=file, column=column, row=row)
    return values


EARLIEST = -2_208_988_800
"""1900-01-01 00:00 UTC in unix seconds: the earliest timestamp accepted."""
LATEST = 10_413_792_000
"""2300-01-01 00:00 UTC in unix seconds: the latest timestamp accepted (a millisecond epoch
of today, read as seconds, is far beyond it)."""


def parse_timestamps(raw: pd.Series, column: str, file: str, fmt: str = "auto") -> pd.Series:
    """Parse timestamps to int64 seconds since the epoch (UTC).

    ``fmt``: ``unix`` (seconds), ``unix_ms`` (milliseconds), ``iso`` (any date/time string
    pandas parses), or ``auto`` (numbers are seconds, anything else is parsed as a date). A
    column that already holds datetimes (Parquet timestamps, any unit, with or without a
    time zone; naive ones are taken as UTC) is read as such whatever ``fmt`` says. Every
    timestamp must fall between 1900 and 2300: a number beyond that (a millisecond epoch
    read as seconds, a value that would overflow int64) is an error naming its row.
    """
    if raw.isna().any():
        raise DataError(
            "missing timestamp", file=file, column=column, row=first_bad_row(raw.isna())
        )
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        stamps = raw if getattr(raw.dt, "tz", None) is not None else raw.dt.tz_localize("UTC")
        seconds = stamps.dt.tz_convert("UTC").astype("datetime64[s, UTC]").astype("int64")
        seconds = _in_range(seconds.astype(np.float64), raw, column, file, fmt, numeric=False)
        return seconds.astype("int64")
    numeric = pd.to_numeric(raw, errors="coerce")
    if fmt in ("unix", "unix_ms"):
        bad = numeric.isna() | ~np.isfinite(numeric.fillna(0))
        if bad.any():
            row = first_bad_row(bad)
            raise DataError(
                f"unparsable timestamp {raw.iloc[row - 1]!r} (expected {fmt} seconds)",
                file=file,
                column=column,
                row=row,
            )
        seconds = numeric.astype(np.float64) / (1000.0 if fmt == "unix_ms" else 1.0)
        return np.floor(_in_range(seconds, raw, column, file, fmt)).astype("int64")
    # iso, or auto: in auto, numbers are unix seconds and every other value is a date.
    out = pd.Series(np.zeros(len(raw), dtype=np.int64), index=raw.index)
    as_number = pd.Series(False, index=raw.index)
    if fmt == "auto":
        as_number = numeric.notna() & np.isfinite(numeric.fillna(0))
        seconds = _in_range(numeric[as_number].astype(np.float64), raw, column, file, fmt)
        out[as_number] = np.floor(seconds).astype("int64")
    as_date = ~as_number
    if as_date.any():
        parsed = pd.to_datetime(
            raw[as_date].astype("string"), errors="coerce", utc=True, format="mixed"
        )
        bad = parsed.isna().reindex(raw.index, fill_value=False)
        if bad.any():
            row = first_bad_row(bad)
            raise DataError(
                f"unparsable timestamp {raw.iloc[row - 1]!r}", file=file, column=column, row=row
            )
        seconds = parsed.astype("datetime64[s, UTC]").astype("int64")
        out[as_date] = _in_range(
            seconds.astype(np.float64), raw, column, file, fmt, numeric=False
        ).to_numpy()
    return out.astype("int64")


def _in_range(
    seconds: pd.Series, raw: pd.Series, column: str, file: str, fmt: str, numeric: bool = True
) -> pd.Series:
    """``seconds`` unchanged, or a DataError naming the first row outside 1900-2300."""
    outside = (seconds < EARLIEST) | (seconds >= LATEST)
    if not outside.any():
        return seconds
    row = first_bad_row(outside.reindex(raw.index, fill_value=False))
    value = raw.iloc[row - 1]
    value = value.item() if isinstance(value, np.generic) else value  # 5, not np.int64(5)
    first = float(seconds.loc[outside].iloc[0])
    hint = ""
    if numeric and fmt in ("auto", "unix") and LATEST <= first < LATEST * 1000:
        hint = "; it looks like milliseconds: set timestamp_format: unix_ms"
    how = f"as {fmt} time" if numeric else "as a date"
    raise DataError(
        f"timestamp {value!r} is outside 1900-2300 {how}{hint}",
        file=file,
        column=column,
        row=row,
    )


def map_events(
    raw: pd.Series, column: str, file: str, weights: Mapping[str, float]
) -> tuple[pd.Series, pd.Series]:
    """Map event names to their configured weights; unknown events are errors."""
    names = raw.astype("string").str.strip()
    unknown = ~names.isin(list(weights)) | names.isna()
    if unknown.any():
        row = first_bad_row(unknown)
        raise DataError(
            f"unknown event type {raw.iloc[row - 1]!r} (known: {', '.join(weights)})",
            file=file,
            column=column,
            row=row,
        )
    weight = names.map({k: float(v) for k, v in weights.items()}).astype(float)
    return names.astype(str), weight


def apply_duplicate_policy(interactions: pd.DataFrame, policy: str) -> pd.DataFrame:
    """Resolve repeated (user, item, event) rows.

    - ``keep_all``: every event stays (repeat views are signal).
    - ``keep_last``/``keep_first``: one row per (user, item, event), the latest/earliest.
    - ``sum``: one row per (user, item, event) at its latest time, weights summed, rating of
      the latest row.
    """
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(f"unknown duplicate policy {policy!r}; choose from {DUPLICATE_POLICIES}")
    if policy == "keep_all":
        return interactions
    keys = ["user_id", "item_id", "event"]
    ordered = interactions.sort_values(keys + ["timestamp"], kind="stable")
    if policy in ("keep_last", "keep_first"):
        keep = "last" if policy == "keep_last" else "first"
        return ordered.drop_duplicates(keys, keep=keep)
    grouped = ordered.groupby(keys, sort=False, observed=True)
    last = grouped.tail(1).set_index(keys)
    last["weight"] = grouped["weight"].sum()
    return last.reset_index()[interactions.columns]


def finalize(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    *,
    file: str,
    items_file: str = "items",
    users_file: str = "users",
    missing_items: str = "add",
    duplicates: str = "keep_all",
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    """Turn validated source tables into the canonical tables with contiguous indices.

    Returns ``(interactions, items, users, warnings)``. ``missing_items`` decides what
    happens to interactions whose item is absent from a given items table: ``add`` a bare
    item row (title = id), ``drop`` those interactions, or ``error``. ``file``, ``items_file``
    and ``users_file`` name the tables' sources in error messages.
    """
    warnings: list[str] = []
    inter = interactions[INTERACTION_COLUMNS].copy()
    check_not_empty(inter, file)
    if missing_items not in MISSING_ITEM_POLICIES:
        raise ValueError(f"unknown missing-items policy {missing_items!r}")

    if items is None:
        items = pd.DataFrame({"item_id": np.sort(inter["item_id"].unique())})
    items = items.copy()
    for col, default in (("title", None), ("text", ""), ("categories", None)):
        if col not in items.columns:
            items[col] = default
    items["title"] = items["title"].where(items["title"].notna(), items["item_id"]).astype(str)
    items["text"] = items["text"].fillna("").astype(str)
    items["categories"] = [
        list(c) if isinstance(c, list | tuple | np.ndarray) else [] for c in items["categories"]
    ]
    check_unique(items["item_id"], "item_id", items_file, "item")

    known = inter["item_id"].isin(items["item_id"])
    if not known.all():
        missing = inter.loc[~known, "item_id"]
        n_items, n_rows = missing.nunique(), int((~known).sum())
        msg = (
            f"{n_items} item ids used in {file} are missing from {items_file} "
            f"({n_rows} interactions; first: {missing.iloc[0]!r})"
        )
        if missing_items == "error":
            raise DataError(msg, file=file, column="item_id", row=first_bad_row(~known))
        if missing_items == "drop":
            if not known.any():
                raise DataError(
                    f"none of the {len(known)} interactions has an item id of {items_file} "
                    f"(first: {missing.iloc[0]!r}), so missing_items=drop would drop them "
                    "all: check that both files use the same item ids",
                    file=file,
                    column="item_id",
                )
            inter = inter[known]
            warnings.append(msg + "; dropped those interactions (missing_items=drop)")
        else:
            extra = pd.DataFrame({"item_id": np.sort(missing.unique())})
            extra["title"] = extra["item_id"]
            extra["text"] = ""
            extra["categories"] = [[] for _ in range(len(extra))]
            items = pd.concat([items, extra], ignore_index=True)
            warnings.append(msg + "; added bare item rows (missing_items=add)")

    inter = apply_duplicate_policy(inter, duplicates)

    if users is None:
        users = pd.DataFrame({"user_id": inter["user_id"].unique()})
    users = users.copy()
    check_unique(users["user_id"], "user_id", users_file, "user")
    absent = ~inter["user_id"].isin(users["user_id"])
    if absent.any():
        users = pd.concat(
            [users, pd.DataFrame({"user_id": inter.loc[absent, "user_id"].unique()})],
            ignore_index=True,
        )

    users = users.sort_values("user_id", kind="stable").reset_index(drop=True)
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    users.insert(1, "user_idx", np.arange(len(users), dtype=np.int32))
    items.insert(1, "item_idx", np.arange(len(items), dtype=np.int32))

    inter["user_idx"] = inter["user_id"].map(pd.Series(users["user_idx"].values, users["user_id"]))
    inter["item_idx"] = inter["item_id"].map(pd.Series(items["item_idx"].values, items["item_id"]))
    inter = inter.astype(
        {
            "user_id": str,
            "item_id": str,
            "rating": float,
            "weight": float,
            "timestamp": "int64",
            "user_idx": "int32",
            "item_idx": "int32",
        }
    )
    inter["event"] = inter["event"].astype("category")
    inter = inter.sort_values(["timestamp", "user_idx", "item_idx"], kind="stable")
    return inter.reset_index(drop=True), items, users, warnings
