"""The MovieLens ratings file as canonical interactions: one ``rating`` event per rating.

Speed: the large ratings files are read by pandas' C parser with numeric dtypes (``::`` is
first replaced by a tab, because a multi-character separator would force the slow Python
engine). Only when that fast read fails or finds a bad value is the file read again as text,
in chunks, and checked with the schema helpers, so errors still name file, column and row.
"""

from __future__ import annotations

import csv
import io
import re
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recpipe.errors import DataError
from recpipe.schema import (
    check_not_empty,
    check_ratings,
    first_bad_row,
    parse_timestamps,
    require_columns,
)
from recpipe.sources.movielens.files import _Files
from recpipe.sources.movielens.parsing import _int_ids
from recpipe.sources.movielens.variants import _Layout

_CHUNK_ROWS = 1 << 20  # rows per chunk when ratings are checked as text

_RATING_COLUMNS = {
    "100k": ["user_id", "item_id", "rating", "timestamp"],
    "dat": ["UserID", "MovieID", "Rating", "Timestamp"],
    "csv": ["userId", "movieId", "rating", "timestamp"],
}


def _read_ratings(files: _Files, layout: _Layout, lo: float, hi: float) -> pd.DataFrame:
    """Ratings as canonical interactions (weight 1.0); fast path first, checked text if needed."""
    names = _RATING_COLUMNS[layout.family]
    table = _ratings_fast(files, layout, names)
    if table is None or not _ratings_clean(table, lo, hi):
        table = _ratings_checked(files, layout, names, lo, hi)
    user, item, rating, ts = (table[c] for c in names)
    inter = pd.DataFrame(
        {"user_id": user.astype(str), "item_id": item.astype(str), "rating": rating.astype(float)}
    )
    # Constants assigned after construction: broadcasting them inside the constructor is
    # several times slower on 20M rows.
    inter["event"] = "rating"
    inter["weight"] = 1.0
    inter["timestamp"] = ts.to_numpy(dtype="int64")
    return inter


def _ratings_source(files: _Files, layout: _Layout) -> IO[bytes]:
    if layout.family == "dat":
        # All four fields are numbers, so "::" -> tab is safe and keeps the C engine.
        return io.BytesIO(files.read_bytes(layout.ratings).replace(b"::", b"\t"))
    return files.open(layout.ratings)


def _csv_options(layout: _Layout) -> dict[str, object]:
    if layout.family == "csv":
        return {"skip_blank_lines": False}
    return {"sep": "\t", "quoting": csv.QUOTE_NONE, "skip_blank_lines": False}


def _ratings_fast(files: _Files, layout: _Layout, names: list[str]) -> pd.DataFrame | None:
    """Numeric read with the C parser; ``None`` when the file does not parse that way."""
    dtypes = ["int64", "int64", "float64", "int64"]
    header = layout.family == "csv"
    try:
        with _ratings_source(files, layout) as fh:
            df = pd.read_csv(
                fh,
                header=0 if header else None,
                dtype=dict(zip(names, dtypes, strict=True)) if header else dict(enumerate(dtypes)),
                **_csv_options(layout),  # type: ignore[arg-type]
            )
    except DataError:
        raise
    except (ValueError, OverflowError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if df.shape[1] != len(names) or (header and list(df.columns) != names):
        return None
    df.columns = names
    # A row longer than the rest turns leading columns into the index: not a clean file.
    if not df.index.equals(pd.RangeIndex(len(df))):
        return None
    return df


def _ratings_clean(df: pd.DataFrame, lo: float, hi: float) -> bool:
    rating = df.iloc[:, 2]
    return len(df) > 0 and bool(rating.notna().all()) and bool(rating.between(lo, hi).all())


def _ratings_checked(
    files: _Files, layout: _Layout, names: list[str], lo: float, hi: float
) -> pd.DataFrame:
    """Read the ratings as text and check every cell with the schema helpers.

    Reached only when the fast read failed or found a bad value. The file is read in chunks
    (memory stays flat on 20M rows), a chunk whose cells all convert cleanly skips the slower
    helpers, and an error's row is shifted from the chunk's numbering to the file's.
    """
    file = files.label(layout.ratings)
    header = layout.family == "csv"
    positions = list(range(len(names)))
    parts: list[pd.DataFrame] = []
    try:
        with _ratings_source(files, layout) as fh:
            reader = pd.read_csv(
                fh,
                header=None,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                encoding="latin-1",  # any byte decodes; a stray one then shows as a bad value
                chunksize=_CHUNK_ROWS,
                **_csv_options(layout),  # type: ignore[arg-type]
            )
            for chunk in reader:
                if header and int(chunk.index[0]) == 0:
                    found = [str(c).strip() for c in chunk.iloc[0]]
                    require_columns(pd.DataFrame(columns=found), names, file)
                    positions = [found.index(c) for c in names]
                    chunk = chunk.iloc[1:]
                offset = int(chunk.index[0]) - int(header) if len(chunk) else 0
                local = chunk.reset_index(drop=True)
                try:
                    parts.append(
                        _check_ratings_chunk(local, positions, names, file, lo, hi, header)
                    )
                except DataError as err:
                    raise _shifted(err, offset) from None
    except pd.errors.EmptyDataError:
        raise DataError("input is empty: no data rows", file=file) from None
    except pd.errors.ParserError as exc:
        # "Expected 4 fields in line 7, saw 5": a row longer than the first one.
        found_line = re.search(r"line (\d+), saw (\d+)", str(exc))
        if found_line is None:
            raise DataError(f"cannot parse file: {exc}", file=file) from None
        line, saw = (int(x) for x in found_line.groups())
        raise DataError(
            f"expected {len(names)} fields ({', '.join(names)}), found {saw}",
            file=file,
            row=line - int(header),
        ) from None
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=names)
    check_not_empty(table, file)
    return table


def _check_ratings_chunk(
    chunk: pd.DataFrame,
    positions: list[int],
    names: list[str],
    file: str,
    lo: float,
    hi: float,
    header: bool,
) -> pd.DataFrame:
    """One chunk of text ratings as numbers; rows numbered from 1 within the chunk.

    ``positions`` are the columns holding ``names``. Without a header, a further column is a
    row with too many fields (with one, it is just a column the header names).
    """
    if not header and chunk.shape[1] > len(names):
        more = chunk.iloc[:, len(names) :].notna().any(axis=1)
        if more.any():
            row = first_bad_row(more)
            found = int(chunk.iloc[row - 1].notna().sum())
            raise DataError(
                f"expected {len(names)} fields ({', '.join(names)}), found {found}",
                file=file,
                row=row,
            )
    # Short rows (every row, in a chunk of them) leave columns missing: they read as empty.
    raw = chunk.reindex(columns=positions)
    raw.columns = names
    u, i, r, t = names
    user_n, item_n, ts_n = (_cast(raw[c], pa.int64()) for c in (u, i, t))
    rating_n = _cast(raw[r], pa.float64())
    cast = (user_n, item_n, rating_n, ts_n)
    if all(x is not None for x in cast) and bool(((rating_n >= lo) & (rating_n <= hi)).all()):
        return pd.DataFrame(dict(zip(names, cast, strict=True)))
    user = _int_ids(raw, u, file)
    item = _int_ids(raw, i, file)
    rating = check_ratings(raw, r, file, lo, hi)
    if rating.isna().any():
        raise DataError("missing rating", file=file, column=r, row=first_bad_row(rating.isna()))
    ts = parse_timestamps(raw[t], t, file, fmt="unix")
    return pd.DataFrame({u: user, i: item, r: rating, t: ts})


def _cast(col: pd.Series, kind: pa.DataType) -> np.ndarray | None:
    """The column as numbers if every cell is exactly one, else ``None``.

    pyarrow's cast is some 30 times faster than ``pd.to_numeric`` on text; whatever it
    rejects goes to the schema helpers, which name the bad cell (or accept it, e.g. "5.0").
    """
    try:
        arr = pc.cast(pa.array(col), kind)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    if arr.null_count:
        return None
    return arr.to_numpy(zero_copy_only=False)


def _shifted(err: DataError, offset: int) -> DataError:
    """``err`` with its row moved by ``offset`` rows (helpers number rows within a chunk)."""
    if not isinstance(err.row, int) or offset == 0:
        return err
    prefix = str(DataError("", file=err.file, column=err.column, row=err.row))
    message = str(err)[len(prefix) :]
    return DataError(message, file=err.file, column=err.column, row=err.row + offset)
