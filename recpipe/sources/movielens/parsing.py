"""Text parsing shared by the MovieLens readers: separated fields, integer ids, CSV text.

Rows are numbered as the file numbers its data rows (from 1, a header not counted), so an
error can name the row where it is in the file.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from recpipe.errors import DataError
from recpipe.schema import check_ids, first_bad_row


def _split_fields(
    text: str, sep: str, names: list[str], file: str, text_col: int | None = None
) -> pd.DataFrame:
    """Split a header-less file into ``names`` columns of strings; row = line number.

    ``text_col`` names the one free-text field that may itself contain ``sep`` (a title or a
    tag): the fields before it are split from the left and those after it from the right.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataError("input is empty: no data rows", file=file)
    s = pd.Series(lines, dtype="str").str.rstrip("\r")
    n = len(names)
    if text_col is None:
        parts = s.str.split(sep, regex=False, expand=True)
    else:
        head = s.str.split(sep, n=text_col, regex=False, expand=True).reindex(
            columns=range(text_col + 1)
        )
        rest = head[text_col].astype("str")
        right = n - text_col - 1
        # n=0 would mean "split everywhere" to pandas; with nothing right of the text, don't.
        tail = rest.str.rsplit(sep, n=right, expand=True) if right else rest.to_frame()
        tail = tail.reindex(columns=range(right + 1))
        parts = pd.concat([head.iloc[:, :text_col], tail], axis=1, ignore_index=True)
    parts = parts.reindex(columns=range(max(n, parts.shape[1])))
    count = parts.notna().sum(axis=1)
    bad = count != n
    if bad.any():
        row = first_bad_row(bad)
        raise DataError(
            f"expected {n} fields separated by {sep!r} ({', '.join(names)}), "
            f"found {int(count.iloc[row - 1])}",
            file=file,
            row=row,
        )
    parts = parts.iloc[:, :n]
    parts.columns = names
    return parts


def _int_ids(raw: pd.DataFrame, column: str, file: str) -> pd.Series:
    """MovieLens ids are integers: check them and return them as int64."""
    ids = check_ids(raw, column, file)
    num = pd.to_numeric(ids, errors="coerce")
    bad = num.isna() | (num != np.floor(num))
    if bad.any():
        row = first_bad_row(bad)
        raise DataError(
            f"id is not an integer: {ids.iloc[row - 1]!r}", file=file, column=column, row=row
        )
    return num.astype("int64")


def _read_csv_text(text: str, file: str) -> pd.DataFrame:
    """A CSV with a header, every cell a string; data rows numbered from 1 after the header."""
    try:
        # header=None then the first row as header: a row longer than the header is then a
        # parse error instead of silently becoming the index.
        raw = pd.read_csv(
            io.StringIO(text),
            header=None,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
        )
    except pd.errors.EmptyDataError:
        raise DataError("input is empty: no header and no data rows", file=file) from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"cannot parse file: {exc}", file=file) from None
    header = [str(c).strip() for c in raw.iloc[0]]
    data = raw.iloc[1:].reset_index(drop=True)
    data.columns = header
    return data
