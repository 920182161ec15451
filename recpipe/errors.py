"""Errors that carry enough context for a user to find and fix the bad input."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the file, the column and the row or key at fault."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | str | None = None,
    ) -> None:
        self.file = file
        self.column = column
        self.row = row
        where = []
        if file is not None:
            where.append(f"file {file}")
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}" if isinstance(row, int) else f"key {row}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ConfigError(ValueError):
    """Bad or unknown configuration; the message names the params key at fault."""
