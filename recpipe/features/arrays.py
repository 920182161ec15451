"""Building blocks on flat numpy arrays, shared by the user, item and pair features.

Per-group extremes and reductions, the starts of runs of equal sorted keys, division with
NaN where the divisor is 0, lookups with a fill for "not found", CSR rows expanded to flat
(row, column) pairs, and the frame that per-user or per-item columns end in.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _group_extreme(
    ufunc: np.ufunc, groups: np.ndarray, values: np.ndarray, n: int, missing: float | None = None
) -> np.ndarray:
    """Per-group max (``np.maximum``) or min (``np.minimum``) of integer ``values``.

    Groups without values get ``missing`` (the result is then float), else the identity
    extreme of int64.
    """
    info = np.iinfo(np.int64)
    out = np.full(n, info.min if ufunc is np.maximum else info.max, dtype=np.int64)
    ufunc.at(out, groups, values)
    if missing is None:
        return out
    empty = np.bincount(groups, minlength=n) == 0
    result = out.astype(np.float64)
    result[empty] = missing
    return result


def _reduceat(ufunc: np.ufunc, values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``ufunc.reduceat`` that accepts empty input (contiguous, non-empty groups)."""
    if len(starts) == 0:
        return np.array([], dtype=values.dtype)
    return ufunc.reduceat(values, starts)


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Positions where a new run of equal keys begins in a sorted array."""
    if len(sorted_keys) == 0:
        return np.array([], dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den`` is 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _take(values: np.ndarray, positions: np.ndarray, fill: float) -> np.ndarray:
    """``values[positions]`` with ``fill`` where a position is -1 (not found)."""
    if len(values) == 0:
        return np.full(len(positions), fill, dtype=np.float64)
    return np.where(positions >= 0, values[np.maximum(positions, 0)], fill)


def _expand_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each ``rows[k]``, its column indices: returns (k repeated, column) flat arrays."""
    lengths = np.diff(matrix.indptr)[rows]
    total = int(lengths.sum())
    pos = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    group_start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    offsets = np.arange(total, dtype=np.int64) - group_start
    cols = matrix.indices[np.repeat(matrix.indptr[rows], lengths) + offsets].astype(np.int64)
    return pos, cols


def _frame(columns: dict, index: np.ndarray, name: str) -> pd.DataFrame:
    return pd.DataFrame(columns, index=pd.Index(index, name=name))
