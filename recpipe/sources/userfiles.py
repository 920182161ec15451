"""The ``files`` source: a user's own interactions (and optional items/users) as CSV or Parquet.

A column mapping in config says which of the user's columns hold the user, the item, the
rating, the event type and the timestamp, and how event types map to weights.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from recpipe.config import Config
from recpipe.errors import ConfigError, DataError
from recpipe.schema import (
    EARLIEST,
    LATEST,
    RawTables,
    check_ids,
    check_not_empty,
    check_ratings,
    check_unique,
    map_events,
    parse_timestamps,
    require_columns,
)


class InteractionColumns(Config):
    """Which column of the user's interactions file holds each canonical field."""

    user: str = Field("user_id", description="user id column")
    item: str = Field("item_id", description="item id column")
    rating: str | None = Field(None, description="explicit rating column, if any")
    event: str | None = Field(None, description="event type column, if any")
    timestamp: str = Field("timestamp", description="event time column")


class ItemColumns(Config):
    """Which column of the items file holds each item field."""

    item: str = Field("item_id", description="item id column")
    title: str | None = Field("title", description="title column (the id when absent)")
    text: str | None = Field(None, description="free-text description column")
    categories: str | None = Field(None, description="categories column (separated string)")
    categories_sep: str = Field("|", description="separator inside the categories column")


class FilesConfig(Config):
    """A user's own data. Paths are relative to the project root."""

    source: Literal["files"] = "files"
    dep: str = Field(
        "data/user", description="file or folder DVC tracks as ingest's input (holds the files)"
    )
    interactions: str = Field(description="interactions file (.csv, .tsv or .parquet)")
    items: str | None = Field(None, description="optional items file")
    users: str | None = Field(None, description="optional users file (user id column: `user_id`)")
    columns: InteractionColumns = InteractionColumns()
    item_columns: ItemColumns = ItemColumns()
    user_id_column: str = Field("user_id", description="user id column of the users file")
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "click": 2.0, "cart": 4.0, "purchase": 8.0},
        description="weight of each event type; an event not listed here is an error",
    )
    default_event: str = Field(
        "interaction", description="event name when there is no event column"
    )
    rating_weight: Literal["one", "rating"] = Field(
        "one", description="weight of rows without an event column: 1.0, or the rating"
    )
    min_rating: float | None = Field(None, description="lowest valid rating")
    max_rating: float | None = Field(None, description="highest valid rating")
    timestamp_format: Literal["auto", "unix", "unix_ms", "iso"] = "auto"
    missing_items: Literal["add", "drop", "error"] = Field(
        "add", description="interactions whose item is not in the items file: add/drop/error"
    )
    duplicates: Literal["keep_all", "keep_last", "keep_first", "sum"] = Field(
        "keep_all",
        description="repeated (user, item, event) rows: see schema.apply_duplicate_policy",
    )
    landing: str | None = Field(
        "data/user/events",
        description="folder where `recpipe serve` appends the events it receives "
        "(events-*.jsonl); they are read after the interactions file. A missing folder "
        "holds no events; null reads none",
    )
    deletions: str | None = Field(
        "data/user/deletions.jsonl",
        description="the erased users' list `recpipe serve` appends to (DELETE "
        "/v1/users/{id}): every interaction of a listed user is dropped, and the user from "
        "the users table. A missing file erases nobody; null ignores the list",
    )

    @model_validator(mode="after")
    def _weights_positive(self) -> FilesConfig:
        for name, w in self.event_weights.items():
            if not w > 0:
                raise ValueError(f"event_weights.{name} must be > 0, got {w}")
        return self


def check_paths(cfg: FilesConfig, source: str = "params.yaml") -> list[str]:
    """Refuse a ``files`` block whose paths do not exist, before DVC meets them.

    DVC checks ``data.dep`` (ingest's tracked input) only when it reaches ingest, and then
    says no more than "No such file or directory: data/user". Returns warnings: a file
    outside ``data.dep`` is read, but DVC does not re-run ingest when it changes.
    """
    dep = Path(cfg.dep)
    if not dep.exists():
        raise ConfigError(
            f"{source}: data.dep: {cfg.dep!r} does not exist. data=files reads your own "
            f"files: put them in {cfg.dep}/ (data.interactions is {cfg.interactions!r}), or "
            "point data.dep at the folder that holds them and data.interactions at the "
            "interactions file, e.g. -S data.dep=shop -S data.interactions=shop/events.csv "
            "(README, 'Your own data')"
        )
    warnings = []
    for key in ("interactions", "items", "users"):
        value = getattr(cfg, key)
        if value is None:
            continue
        if not Path(value).is_file():
            raise ConfigError(
                f"{source}: data.{key}: file {value!r} not found (data.dep is {cfg.dep!r})"
            )
        inside = dep.resolve() == Path(value).resolve() or dep.resolve() in (
            Path(value).resolve().parents
        )
        if not inside:
            warnings.append(
                f"data.{key} {value!r} is outside data.dep {cfg.dep!r}: DVC will not re-run "
                "ingest when it changes"
            )
    for key in ("landing", "deletions"):
        value = getattr(cfg, key)
        if value is None:
            continue
        resolved = Path(value).resolve()
        if dep.resolve() != resolved and dep.resolve() not in resolved.parents:
            warnings.append(
                f"data.{key} {value!r} is outside data.dep {cfg.dep!r}: DVC will not re-run "
                "ingest when the service adds to it"
            )
    return warnings


def read_table(path: str | Path) -> pd.DataFrame:
    """Read CSV/TSV (all columns as strings, so ids stay exactly as written) or Parquet."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    # the type by its extension, in any case (events.CSV, Events.Parquet)
    last = path.suffix.lower()
    suffix = "".join(path.suffixes[-2:]).lower() if last == ".gz" else last
    try:
        if suffix in (".parquet", ".pq"):
            # rows are numbered by position in messages: drop any index the file stored
            return pd.read_parquet(path).reset_index(drop=True)
        if suffix in (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt"):
            sep = "\t" if ".tsv" in suffix else ","
            return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except UnicodeDecodeError:
        # pandas reports a byte offset inside one of its read buffers, which finds nothing
        raise not_utf8(path, "\t" if ".tsv" in suffix else ",") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
        if isinstance(exc, pd.errors.EmptyDataError):
            raise DataError("input is empty: no header and no data rows", file=str(path)) from None
        raise DataError(f"cannot parse file: {exc}", file=str(path)) from None
    raise DataError(
        f"unsupported file type {suffix!r} (use .csv, .tsv or .parquet)", file=str(path)
    )


def not_utf8(path: Path, sep: str) -> DataError:
    """The error for a text file that is not UTF-8: the column and data row of the first
    undecodable byte, and its line in the file (they differ when a quoted field spans lines).

    The file is read again as records, undecodable bytes kept as surrogates, so the record
    that holds the first one is found exactly as pandas would split the file.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text, delimiter=sep)
        header: list[str] = []
        first_line = 1
        for number, record in enumerate(reader):
            for col, field in enumerate(record):
                bad = next((i for i, ch in enumerate(field) if "\udc80" <= ch <= "\udcff"), None)
                if bad is None:
                    continue
                before = sep.join(record[:col]) + sep * (col > 0) + field[:bad]
                line = first_line + before.count("\n") + before.count("\r") - before.count("\r\n")
                byte = ord(field[bad]) - 0xDC00
                what = (
                    f"not UTF-8 text: byte 0x{byte:02x} on line {line}; save the file as "
                    "UTF-8 (for example `iconv -f latin1 -t utf-8`)"
                )
                if number == 0:
                    return DataError(f"header: {what}", file=str(path))
                name = header[col] if col < len(header) else f"#{col + 1}"
                return DataError(what, file=str(path), column=name, row=number)
            if number == 0:
                header = record
            first_line = reader.line_num + 1
    return DataError("not UTF-8 text; save the file as UTF-8", file=str(path))


def load_files(cfg: FilesConfig) -> RawTables:
    """Read and validate the user's files into :class:`RawTables`."""
    f = cfg.interactions
    raw = read_table(f)
    check_not_empty(raw, f)
    c = cfg.columns
    needed = [c.user, c.item, c.timestamp] + [x for x in (c.rating, c.event) if x]
    require_columns(raw, needed, f)

    inter = pd.DataFrame(index=raw.index)
    inter["user_id"] = check_ids(raw, c.user, f)
    inter["item_id"] = check_ids(raw, c.item, f)
    if c.rating:
        inter["rating"] = check_ratings(raw, c.rating, f, cfg.min_rating, cfg.max_rating)
    else:
        inter["rating"] = np.nan
    if c.event:
        inter["event"], inter["weight"] = map_events(raw[c.event], c.event, f, cfg.event_weights)
    else:
        inter["event"] = cfg.default_event
        if cfg.rating_weight == "rating":
            if not c.rating:
                raise DataError("rating_weight=rating needs a rating column", file=f)
            if not (inter["rating"] > 0).all():
                bad = ~(inter["rating"] > 0)
                raise DataError(
                    "rating_weight=rating needs a positive rating on every row",
                    file=f,
                    column=c.rating,
                    row=int(bad[bad].index[0]) + 1,
                )
            inter["weight"] = inter["rating"]
        else:
            inter["weight"] = 1.0
    inter["timestamp"] = parse_timestamps(raw[c.timestamp], c.timestamp, f, cfg.timestamp_format)

    if cfg.landing:
        landed = load_landing(cfg.landing, cfg.event_weights, cfg.min_rating, cfg.max_rating)
        if len(landed):
            # the landing frame carries the canonical columns; the main file's positions
            # (used by its messages) are done with
            inter = pd.concat([inter, landed], ignore_index=True)
    items = _load_items(cfg) if cfg.items else None
    users = _load_users(cfg) if cfg.users else None
    if cfg.deletions:
        erased = load_deletions(cfg.deletions)
        if erased:
            inter = inter[~inter["user_id"].isin(erased)].reset_index(drop=True)
            if users is not None:
                users = users[~users["user_id"].isin(erased)].reset_index(drop=True)
    return RawTables(
        inter,
        items,
        users,
        interactions_file=f,
        items_file=cfg.items or "items",
        users_file=cfg.users or "users",
    )


def _load_items(cfg: FilesConfig) -> pd.DataFrame:
    f = str(cfg.items)
    raw = read_table(f)
    check_not_empty(raw, f)
    ic = cfg.item_columns
    require_columns(raw, [x for x in (ic.item, ic.title, ic.text, ic.categories) if x], f)
    items = pd.DataFrame({"item_id": check_ids(raw, ic.item, f)})
    # Checked here as well as in finalize: only here is the file's own column name known.
    check_unique(items["item_id"], ic.item, f, "item")
    items["title"] = raw[ic.title].fillna("").astype(str) if ic.title else items["item_id"]
    items["text"] = raw[ic.text].fillna("").astype(str) if ic.text else ""
    if ic.categories:
        items["categories"] = [
            [p.strip() for p in str(v).split(ic.categories_sep) if p.strip()] if v == v else []
            for v in raw[ic.categories]
        ]
    else:
        items["categories"] = [[] for _ in range(len(items))]
    used = {ic.item, ic.title, ic.text, ic.categories}
    for col in raw.columns:
        if col not in used and col not in items.columns:
            items[col] = _maybe_numeric(raw[col])
    return items


def _load_users(cfg: FilesConfig) -> pd.DataFrame:
    f = str(cfg.users)
    raw = read_table(f)
    check_not_empty(raw, f)
    require_columns(raw, [cfg.user_id_column], f)
    users = pd.DataFrame({"user_id": check_ids(raw, cfg.user_id_column, f)})
    # Here, not only in finalize: only here is the file's own column name known.
    check_unique(users["user_id"], cfg.user_id_column, f, "user")
    for col in raw.columns:
        if col != cfg.user_id_column and col not in users.columns:
            users[col] = _maybe_numeric(raw[col])
    return users


def _maybe_numeric(col: pd.Series) -> pd.Series:
    """Attribute columns read as text become numbers when every value parses as one."""
    num = pd.to_numeric(col, errors="coerce")
    return num if num.notna().sum() == col.notna().sum() else col.astype("string")


# The service's event log and deletion list (``recpipe.serving.events`` writes them; this is
# the one definition of their format). Both are JSON lines, one object a line, UTF-8.
LANDING_PATTERN = "events-*.jsonl"
"""Event files in the landing folder; read in name order (names start with the UTC time)."""
EVENT_FIELDS = ("user_id", "item_id", "event", "timestamp", "rating")
"""Keys of an event line; ``rating`` may be null or absent, other keys are ignored."""
DELETION_FIELDS = ("user_id", "timestamp")
"""Keys of a deletion line: the erased user and when the erasure was asked for."""


def _json_lines(path: Path):
    """``(line number, object)`` for every non-blank line; a line that is not a JSON
    object is an error naming the file and the line."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}, line {number}"
            try:
                obj = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                cut = "" if raw.endswith(b"\n") else " (the last line, cut short: delete it)"
                raise DataError(f"not a JSON object: {exc}{cut}", file=where) from None
            if not isinstance(obj, dict):
                raise DataError("not a JSON object", file=where)
            yield number, where, obj


def _text_id(obj: dict, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"null or empty id: {value!r}", file=where, column=key)
    return value.strip()


def load_landing(
    folder: str | Path,
    event_weights: dict[str, float],
    min_rating: float | None = None,
    max_rating: float | None = None,
) -> pd.DataFrame:
    """The events the service wrote to ``folder`` as canonical interaction rows
    (``user_id, item_id, rating, event, weight, timestamp``), files in name order, lines in
    file order. No folder, no events. A bad line is an error naming its file and line."""
    folder = Path(folder)
    rows: list[tuple] = []
    files = sorted(folder.glob(LANDING_PATTERN)) if folder.is_dir() else []
    for path in files:
        for _, where, obj in _json_lines(path):
            user = _text_id(obj, "user_id", where)
            item = _text_id(obj, "item_id", where)
            event = obj.get("event")
            if event not in event_weights:
                raise DataError(
                    f"unknown event type {event!r} (known: {', '.join(event_weights)})",
                    file=where,
                    column="event",
                )
            ts = obj.get("timestamp")
            if isinstance(ts, bool) or not isinstance(ts, int) or not EARLIEST <= ts < LATEST:
                raise DataError(
                    f"timestamp {ts!r} is not unix seconds between 1900 and 2300",
                    file=where,
                    column="timestamp",
                )
            rating = obj.get("rating")
            if rating is not None:
                ok = isinstance(rating, int | float) and not isinstance(rating, bool)
                ok = ok and math.isfinite(rating)
                ok = ok and (min_rating is None or rating >= min_rating)
                ok = ok and (max_rating is None or rating <= max_rating)
                if not ok:
                    raise DataError(
                        f"rating {rating!r} is not a number in [{min_rating}, {max_rating}]",
                        file=where,
                        column="rating",
                    )
            rows.append(
                (
                    user,
                    item,
                    np.nan if rating is None else float(rating),
                    event,
                    float(event_weights[event]),
                    ts,
                )
            )
    frame = pd.DataFrame(
        rows, columns=["user_id", "item_id", "rating", "event", "weight", "timestamp"]
    )
    return frame.astype({"rating": "float64", "weight": "float64", "timestamp": "int64"})


def load_deletions(path: str | Path) -> set[str]:
    """The user ids of the deletion list (none when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return set()
    return {_text_id(obj, "user_id", where) for _, where, obj in _json_lines(path)}
