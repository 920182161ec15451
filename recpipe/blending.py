"""Blend: the union of every model's candidates, each pair described by every model, and a
weighted hybrid score.

For each fold, the candidate pairs are the union of the enabled models' top-N lists. Every
pair gets, for every model ``m``:

- ``m_<m>_score``: the model's own score (from ``score``, so a pair proposed by ALS still gets
  its SVD and TF-IDF scores); NaN where the model cannot score it;
- ``m_<m>_rank``: its rank in ``m``'s own top-N list, NaN when ``m`` did not propose it;
- ``m_<m>_norm``: the score normalised within the user's candidates (``zscore``, ``minmax``
  or ``rank``), because raw scores change scale between models and between folds.

``m_n_models`` counts the models that proposed the pair, and ``m_hybrid`` is the weighted
hybrid ``sum_m w_m * norm_m`` where a model's missing score counts as the lowest normalised
value that user has for that model (a missing score is evidence against the pair, not a
neutral zero). The hybrid's top-N is a model in its own right (``blend``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from recpipe.config import Config
from recpipe.engine import even_cuts, map_shared
from recpipe.errors import ConfigError, DataError
from recpipe.log import get_logger
from recpipe.models.base import HeldScores, Recommender, rank_within

log = get_logger("blend")


WEIGHTS_FILE = "weights.json"
"""In the blend stage's output folder: the weights applied to the test fold (unrounded) and
the normalisation, as ``{"normalise": ..., "weights": {model: weight}}``."""


CUT_FILE = "pairs.json"
"""In the blend stage's output folder: ``{"rerank_top": n}``, each user's pairs its fold
files keep (the top ``n`` by the hybrid; null: every candidate); see :func:`check_cut`."""


def check_cut(blend_dir: Path, rerank_top: int | None) -> None:
    """Raise :class:`ConfigError` if the blend's fold files in ``blend_dir`` were cut to
    fewer pairs a user than a ranker with ``rerank_top`` reads: it would learn from and
    rank shorter lists without a word. (A folder without :data:`CUT_FILE` was written
    whole, by the blend before it cut its files, or by hand; :class:`DataError` if the
    file is not what the blend writes.)"""
    path = blend_dir / CUT_FILE
    if not path.exists():
        return
    try:
        kept = json.loads(path.read_text())["rerank_top"]
        if kept is not None and (isinstance(kept, bool) or not isinstance(kept, int)):
            raise TypeError(kept)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f'{path}: expected {{"rerank_top": <an integer or null>}} as the blend writes '
            f"it ({exc!r}); re-run the blend",
            file=str(path),
        ) from None
    if kept is not None and (rerank_top is None or rerank_top > kept):
        wanted = "every candidate" if rerank_top is None else f"the top {rerank_top}"
        raise ConfigError(
            f"{path}: the blend kept each user's top {kept} pairs, and ranker.rerank_top "
            f"asks for {wanted}: re-run the blend with the same params (dvc repro does, as "
            "the blend depends on ranker.rerank_top)"
        )


class BlendConfig(Config):
    """How candidates are merged, normalised and weighted into the hybrid."""

    normalise: str = Field(
        "zscore", description="per-user score normalisation: zscore, minmax or rank"
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="hybrid weight per model (models not listed weigh 0); normalised to sum 1",
    )
    search: bool = Field(
        False, description="pick the weights by random search on the valid fold (its labels)"
    )
    search_trials: int = Field(
        300, ge=1, description="random weight vectors tried by search (in every bag)"
    )
    search_bags: int = Field(
        1,
        ge=1,
        description="with more than 1: search on this many seeded halves of the valid users "
        "and average the winning weights (steadier on a new fold than one noisy argmax)",
    )
    search_users: int = Field(
        1000,
        ge=1,
        description="with bags: users per bag at most (half the valid users when fewer); "
        "bounds the search's cost on large data",
    )
    search_metric: str = Field("ndcg@10", description="valid-fold metric the search maximises")
    n: int = Field(100, ge=1, description="length of the hybrid's top-N list")
    block_users: int = Field(
        2_000,
        ge=1,
        description="users whose candidates are merged and scored together: every fold is "
        "built and written one block at a time (the valid fold's weight search builds only "
        "its bags' users), so memory is bounded by this, not by the data; outputs do not "
        "depend on it (smaller blocks were faster too at 1M events: 2,000 against 20,000)",
    )

    @model_validator(mode="after")
    def _check(self) -> BlendConfig:
        if self.normalise not in ("zscore", "minmax", "rank"):
            raise ValueError(f"normalise must be zscore, minmax or rank, got {self.normalise!r}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("weights must be >= 0")
        if not self.search and not any(w > 0 for w in self.weights.values()):
            raise ValueError("give at least one positive weight, or set search: true")
        metric, _, k = self.search_metric.partition("@")
        if metric not in TrialScorer.METRICS or not k.isdigit() or int(k) < 1:
            raise ValueError(
                f"search_metric must be <metric>@<K> with metric in {TrialScorer.METRICS} and "
                f"K >= 1, got {self.search_metric!r}"
            )
        return self


Columns = Mapping[str, np.ndarray]
"""A table as plain arrays by column name. The service's fresh ranking passes one user's
pairs this way where the batch passes frames: building and reading a one-user frame costs
more than the work done on it. Functions that take ``pd.DataFrame | Columns`` read only
columns (:func:`column`), so both give the same values."""


def column(table: pd.DataFrame | Columns, name: str) -> np.ndarray:
    """The column ``name`` of a frame or of :data:`Columns`, as an array."""
    values = table[name]
    return values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)


def union_candidates(cands: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Distinct (user_idx, item_idx) pairs proposed by any model, sorted, with every model's
    rank (NaN where that model did not propose the pair) and ``m_n_models``."""
    return pd.DataFrame(union_columns(cands))


def union_columns(cands: Mapping[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    """:func:`union_candidates` as :data:`Columns`."""
    frames = {name: c for name, c in cands.items() if len(c)}
    if not frames:
        return {"user_idx": np.zeros(0, np.int64), "item_idx": np.zeros(0, np.int64)}

    def key(c: pd.DataFrame) -> np.ndarray:
        # One sortable int64 per pair: user in the high half, item in the low one.
        return (c["user_idx"].to_numpy(np.int64) << 32) | c["item_idx"].to_numpy(np.int64)

    keys = {name: key(c) for name, c in frames.items()}
    union = np.sort(np.concatenate(list(keys.values())))
    union = union[np.r_[True, union[1:] != union[:-1]]]  # np.unique hashes: slower here
    # every column first, then one frame: inserting columns one by one costs more than the
    # work in small frames (so in score_pairs and assemble too)
    columns: dict[str, np.ndarray] = {"user_idx": union >> 32, "item_idx": union & 0xFFFFFFFF}
    n_models = np.zeros(len(union), dtype=np.int16)
    for name, c in cands.items():
        col = np.full(len(union), np.nan, dtype=np.float32)
        if len(c):
            col[np.searchsorted(union, keys[name])] = c["rank"].to_numpy(np.float32)
        columns[f"m_{name}_rank"] = col
        n_models += ~np.isnan(col)
    columns["m_n_models"] = n_models
    return columns


CHUNK_ROWS = 32_768
"""Rows (whole users) per chunk of the per-user reductions (:meth:`UserRuns.chunks`): small
enough that numpy's temporaries are reused from malloc's heap instead of mapped afresh,
large enough that numpy's per-call overhead does not count (8k to 32k rows measured
alike)."""


def normalise_per_user(users: np.ndarray, scores: np.ndarray, method: str) -> np.ndarray:
    """Normalise ``scores`` within each user's group; NaN stays NaN. Order within a user is
    preserved (ties stay ties) for every method.

    - ``zscore``: (s - mean) / std over the user's scored pairs (std 0 -> 0);
    - ``minmax``: (s - min) / (max - min) (a constant user -> 1);
    - ``rank``: percentile of the score among the user's scored pairs, in (0, 1], ties share
      the highest percentile of their group.
    """
    return normalise_columns(users, np.asarray(scores)[:, None], method)[:, 0]


def normalise_columns(users: np.ndarray, scores: np.ndarray, method: str) -> np.ndarray:
    """:func:`normalise_per_user` of every column of ``scores`` (pairs x models), grouped
    once; a column's result is the one it would have alone.

    ``zscore`` and ``minmax`` reduce each user's consecutive rows with numpy (rows are put in
    user order first when they are not in it), the variance about the mean in a second pass.
    Against pandas' grouped ``mean`` and ``std`` on the score columns of four of the 1M
    blend's folds (about 60M values), all but one value were equal to the bit (that one
    4e-9 apart), at 0.05 ms instead of 1.4 ms for one user's 300 candidates, the service's
    case. ``rank`` is pandas' grouped rank.

    A fold's pairs go through in chunks of whole users (:meth:`UserRuns.chunks`): each user's
    arithmetic is the same, so the result is too, but the temporaries stay a few MB. Whole
    fold arrays (2.3M x 7 at 1M) made every temporary a fresh mapping of the kernel's, and
    the page faults cost more than the arithmetic: 0.46 s a fold against 0.14 s chunked."""
    scores = np.asarray(scores)
    if method == "rank":
        df = pd.DataFrame(scores.astype(np.float64))
        # an Index, not the bare array: pandas would first try the array as a column label
        # and format it into an error message (a millisecond per call in the service)
        return df.groupby(pd.Index(users)).rank(method="max", pct=True).to_numpy(np.float32)
    if method not in ("zscore", "minmax"):
        raise ValueError(f"unknown normalisation {method!r}")
    if len(users) == 0:
        return np.zeros(np.shape(scores), dtype=np.float32)
    runs = UserRuns(users)
    x = runs.in_order(scores)
    out = np.empty(x.shape, dtype=np.float32)
    for rows, starts, sizes in runs.chunks(CHUNK_ROWS):
        out[rows] = _normalise_runs(x[rows], starts, sizes, method)
    return runs.back(out)


def _normalise_runs(
    x: np.ndarray, starts: np.ndarray, sizes: np.ndarray, method: str
) -> np.ndarray:
    """:func:`normalise_columns` of rows ``x`` in user order, whose users' runs start at
    ``starts`` (first 0) and hold ``sizes`` rows."""
    x = x.astype(np.float64)
    valid = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "zscore":
            count = np.add.reduceat(valid, starts, axis=0)
            mean = np.add.reduceat(np.where(valid, x, 0.0), starts, axis=0) / count
            dev = x - np.repeat(mean, sizes, axis=0)
            var = np.add.reduceat(np.where(valid, dev * dev, 0.0), starts, axis=0) / count
            std = np.repeat(np.sqrt(var), sizes, axis=0)
            # a user's constant column -> 0; NaN stays NaN
            out = np.where(std > 0, dev / std, np.where(valid, 0.0, np.nan))
        else:
            lo = np.repeat(np.fmin.reduceat(x, starts, axis=0), sizes, axis=0)
            span = np.repeat(np.fmax.reduceat(x, starts, axis=0), sizes, axis=0) - lo
            # a constant user -> 1; NaN stays NaN
            out = np.where(span > 0, (x - lo) / span, np.where(valid, 1.0, np.nan))
    return out.astype(np.float32)


class UserRuns:
    """The rows of ``users`` as runs of one user each, for numpy reductions per user: rows
    not in user order are put in it first (a stable sort), and results put back."""

    def __init__(self, users: np.ndarray) -> None:
        users = np.asarray(users)
        self.order: np.ndarray | None = None
        if np.any(users[1:] < users[:-1]):
            self.order = np.argsort(users, kind="stable")
            users = users[self.order]
        self.starts = np.r_[0, np.flatnonzero(users[1:] != users[:-1]) + 1]
        self.sizes = np.diff(np.r_[self.starts, len(users)])

    def chunks(self, rows: int) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """Consecutive whole users as ``(rows in user order, run starts within the chunk, run
        sizes)``: a chunk starts at the first user starting at or after a multiple of
        ``rows``, so it holds up to ``rows - 1`` rows plus its last user's."""
        n = int(self.sizes.sum())
        if n <= rows:  # one chunk (the service's one user): no cutting
            yield slice(0, n), self.starts, self.sizes
            return
        # each chunk opens at the first user starting at or after a multiple of ``rows``
        cuts = np.unique(np.searchsorted(self.starts, np.arange(0, n, max(rows, 1))))
        cuts = np.r_[cuts[cuts < len(self.starts)], len(self.starts)]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            lo = int(self.starts[a])
            hi = int(self.starts[b]) if b < len(self.starts) else n
            yield slice(lo, hi), self.starts[a:b] - lo, self.sizes[a:b]

    def in_order(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values) if self.order is None else np.asarray(values)[self.order]

    def back(self, values: np.ndarray) -> np.ndarray:
        if self.order is None:
            return values
        out = np.empty_like(values)
        out[self.order] = values
        return out


def fill_with_user_min(users: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (rows x columns) as float64, each NaN replaced by its user's lowest value
    in its column (0 when the user has none): a missing score is evidence against the pair,
    not a neutral zero. Exact: a minimum does not depend on the order it is taken in."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isnan(values).any():
        return values
    runs = UserRuns(users)
    x = runs.in_order(values)  # a copy when the rows are not in user order
    if x is values:  # filled in place below: never the caller's array
        x = values.copy()
    for rows, starts, sizes in runs.chunks(CHUNK_ROWS):  # see normalise_columns
        block = x[rows]
        low = np.fmin.reduceat(block, starts, axis=0)  # NaN: the user has none
        floor = np.repeat(np.where(np.isnan(low), 0.0, low), sizes, axis=0)
        np.copyto(block, floor, where=np.isnan(block))
    return runs.back(x)


def describe_pairs(
    pairs: pd.DataFrame, models: Mapping[str, Recommender | HeldScores], method: str
) -> pd.DataFrame:
    """Add every model's score and normalised score to the union ``pairs`` (each model's
    ``score``, or its held scores' for a block of users held by the bundle)."""
    return score_pairs(pairs, {name: model.score for name, model in models.items()}, method)


def score_pairs(
    pairs: pd.DataFrame,
    scorers: Mapping[str, Callable[[np.ndarray, np.ndarray], np.ndarray]],
    method: str,
) -> pd.DataFrame:
    """:func:`describe_pairs` with each model's scores given by a function of (users,
    items): the service scores a fresh history this way, with the same columns."""
    added = score_columns(
        pairs["user_idx"].to_numpy(), pairs["item_idx"].to_numpy(), scorers, method
    )
    if any(c in pairs.columns for c in added):  # scored again: replaced in place
        out = pairs.copy()
        for c, values in added.items():
            out[c] = values
        return out
    # one frame of the new columns beside ``pairs`` (see union_candidates)
    return pd.concat([pairs, pd.DataFrame(added, index=pairs.index)], axis=1)


def score_columns(
    users: np.ndarray,
    items: np.ndarray,
    scorers: Mapping[str, Callable[[np.ndarray, np.ndarray], np.ndarray]],
    method: str,
) -> dict[str, np.ndarray]:
    """The columns :func:`score_pairs` adds for the pairs ``(users[k], items[k])``."""
    names = list(scorers)
    raw = np.empty((len(users), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        raw[:, j] = np.asarray(scorers[name](users, items), dtype=np.float32)
    norm = normalise_columns(users, raw, method) if names else raw
    added: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        added[f"m_{name}_score"] = raw[:, j]
        added[f"m_{name}_norm"] = norm[:, j]
    return added


def blend_block(
    cands: Mapping[str, pd.DataFrame],
    models: Mapping[str, Recommender | HeldScores],
    method: str,
) -> pd.DataFrame:
    """One block of users: the union of every model's candidates (:func:`union_candidates`)
    with every model's score and normalised score (:func:`describe_pairs`). All of it is per
    user, so a fold's frame is the concatenation of its blocks' in user order."""
    return describe_pairs(union_candidates(cands), models, method)


def candidate_ranges(
    cands: Mapping[str, pd.DataFrame], users: int
) -> list[dict[str, tuple[int, int]]]:
    """Where every model's candidates (each sorted by ``user_idx``) are cut into blocks of
    at most ``users`` consecutive users of their union, of even sizes
    (:func:`~recpipe.engine.even_cuts`): for each block, each model's row range
    (:func:`candidate_block` takes it). Not rounded up to the workers: the valid fold's
    search metric is added up block by block with a BLAS product whose rounding depends
    on the block's shape, and no output may depend on the number of workers."""
    keys = {m: c["user_idx"].to_numpy() for m, c in cands.items()}
    all_users = np.unique(np.concatenate([k for k in keys.values()] or [np.zeros(0, np.int64)]))
    for m, k in keys.items():
        if len(k) and np.any(np.diff(k) < 0):
            raise ValueError(f"{m}: candidates are not sorted by user_idx")
    if len(all_users) == 0:
        return [{m: (0, 0) for m in cands}]
    out = []
    for start, stop in even_cuts(len(all_users), users):
        lo, hi = all_users[start], all_users[stop - 1]
        out.append(
            {
                m: (int(np.searchsorted(k, lo, "left")), int(np.searchsorted(k, hi, "right")))
                for m, k in keys.items()
            }
        )
    return out


def candidate_block(
    cands: Mapping[str, pd.DataFrame], ranges: Mapping[str, tuple[int, int]]
) -> dict[str, pd.DataFrame]:
    """One block of every model's candidates, by its row ranges (:func:`candidate_ranges`)."""
    return {m: cands[m].iloc[a:b] for m, (a, b) in ranges.items()}


def fill_by_user(values: pd.Series | np.ndarray, users: pd.Series | np.ndarray) -> np.ndarray:
    """:func:`fill_with_user_min` of one column."""
    column = np.asarray(values, dtype=np.float64)[:, None]
    return fill_with_user_min(np.asarray(users), column)[:, 0]


def hybrid_score(
    df: pd.DataFrame | Columns,
    weights: Mapping[str, float],
    filled: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """``sum_m w_m * norm_m`` with weights scaled to sum 1; a missing norm counts as the
    user's lowest normalised value for that model (0 if the user has none). ``filled``
    caches each model's filled column across calls on the same ``df``."""
    filled = {} if filled is None else filled
    total = sum(w for w in weights.values() if w > 0)
    used = [m for m, w in weights.items() if w > 0 and f"m_{m}_norm" in df]
    todo = [m for m in used if m not in filled]
    if todo:  # one pass over every column (each column is reduced on its own)
        cols = [f"m_{m}_norm" for m in todo]
        if isinstance(df, pd.DataFrame):  # one read of a fold's columns: 4x faster at 1M
            block = df[cols].to_numpy(np.float64)
        else:
            block = np.column_stack([np.asarray(df[c], dtype=np.float64) for c in cols])
        values = fill_with_user_min(column(df, "user_idx"), block)
        filled.update({m: values[:, j] for j, m in enumerate(todo)})
    out = np.zeros(len(column(df, "user_idx")), dtype=np.float64)
    for name in used:
        out += (weights[name] / total) * filled[name]
    return out.astype(np.float32)


def rank_by(df: pd.DataFrame | Columns, score: np.ndarray, n: int) -> pd.DataFrame:
    """Each user's top-``n`` pairs by ``score`` (ties: lower item index first) as a
    ``user_idx, item_idx, score, rank`` frame."""
    users, items = column(df, "user_idx"), column(df, "item_idx")
    score = np.asarray(score, dtype=np.float32)
    if len(users) and users[0] == users[-1] and (users == users[0]).all():
        # one user (the service's fresh ranking): the same order without pandas' sort and
        # grouping (score descending, then item ascending; items are distinct), one frame
        rows = np.flatnonzero(np.isfinite(score))
        rows = rows[np.lexsort((items[rows], -score[rows]))][:n]
        return pd.DataFrame(
            {
                "user_idx": users[rows],
                "item_idx": items[rows],
                "score": score[rows],
                "rank": np.arange(1, len(rows) + 1, dtype=np.int32),
            },
            copy=False,  # fresh arrays
        )
    recs = pd.DataFrame({"user_idx": users, "item_idx": items, "score": score})
    recs = recs[np.isfinite(recs["score"])]
    recs = recs.sort_values(
        ["user_idx", "score", "item_idx"], ascending=[True, False, True], kind="stable"
    )
    recs["rank"] = recs.groupby("user_idx").cumcount().astype(np.int32) + 1
    return recs[recs["rank"] <= n].reset_index(drop=True)


TopPairs = Annotated[int, Field(ge=1)] | None
"""The type of ``ranker.rerank_top``: how many of each user's pairs, best by the hybrid
first, the ranker works on (None: all of them). The blend writes only those pairs of a
fold, since nothing else reads the rest (:func:`top_rows`)."""

RERANK_TOP = 200
"""The default of ``ranker.rerank_top``."""


def sorted_by_key(users: np.ndarray, items: np.ndarray) -> bool:
    """Whether the pairs ``(users[k], items[k])`` come in (user, item) order, no pair twice."""
    du, di = np.diff(users), np.diff(items)
    return bool(np.all((du > 0) | ((du == 0) & (di > 0))))


def best_first(users: np.ndarray, items: np.ndarray, score: np.ndarray) -> np.ndarray:
    """``np.lexsort((items, -score, users))``: rows by user, then score descending, then
    item; ``score`` without NaN.

    Rows already sorted by (user, item), as the blend writes them, with scores that are
    float32 values (the blend's) and user indices below 2^31, sort as one uint64 key (user,
    then the score's float32 bits made to sort as numbers, -0 as 0) in a stable sort, which
    keeps the item order within ties: about six times faster than the three-key sort on a
    25M-event fold's blocks. Other rows take the three-key sort."""
    n = len(users)
    if n > 1 and users.min() >= 0 and users.max() < 2**31:
        negated = (-score).astype(np.float32) + np.float32(0.0)  # -0.0 + 0.0 is +0.0
        if sorted_by_key(users, items) and np.array_equal(negated, -score):
            bits = negated.view(np.uint32)
            # negative floats: all bits flipped; others: the sign bit set
            ordered = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
            key = (users.astype(np.uint64) << np.uint64(32)) | ordered.astype(np.uint64)
            return np.argsort(key, kind="stable")
    return np.lexsort((items, -score, users))


def top_rows(users: np.ndarray, items: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """The rows of each user's ``n`` best pairs by ``score``, as a mask in the rows' order:
    NaN below every number, ties to the lower item index (:func:`best_first`)."""
    score = np.array(score, dtype=np.float64)  # a copy: NaN are replaced below
    score[np.isnan(score)] = -np.inf
    order = best_first(users, items, score)
    keep = np.zeros(len(users), dtype=bool)
    keep[order] = rank_within(users[order]) <= n
    return keep


class TrialScorer:
    """Scores many hybrid weight vectors on one fold quickly.

    The per-model normalised scores (missing filled as in :func:`hybrid_score`) are laid out
    once as dense users x candidates planes, one per model, so a trial is one weighted sum of
    planes and finding the places of the relevant items (:meth:`hits`). Metric definitions
    are those of :mod:`recpipe.evaluation.metrics`, ties broken by item index as there (a
    test checks they agree with ``topn_metrics``).
    """

    METRICS = ("ndcg", "precision", "recall", "hitrate", "mrr")

    # Empty slots of the grid: below any real score once weights (>= 0, sum 1) mix them.
    PAD = np.float32(-1e30)
    #: relevant slots per user up to which :meth:`hits` counts each one's place directly
    direct_places: ClassVar[float] = 2.0
    #: (rows, slots) of the relevant candidates, found at the first trial
    _relevant: tuple[np.ndarray, np.ndarray] | None = None

    def __init__(self, df: pd.DataFrame, truth: pd.DataFrame, names: list[str], k: int) -> None:
        self.k = k
        users = df["user_idx"].to_numpy()
        # A pair listed twice is one relevant item, as in metrics.topn_metrics.
        rel = relevant_pairs(truth)
        n_rel = rel.groupby("user_idx").size()
        # Averages run over every user with a relevant target, candidates or not.
        self.n_eval = len(n_rel)
        uniq, row = np.unique(users, return_inverse=True)
        self.users, self.n_rows = uniq, len(uniq)
        order = np.lexsort((df["item_idx"].to_numpy(), row))
        pos = np.empty(len(row), dtype=np.int64)
        counts = np.bincount(row, minlength=len(uniq))
        pos[order] = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
        self.counts, self.width = counts, int(counts.max()) if len(counts) else 0
        # models x users x candidates, laid out once: a trial is then one weighted sum of
        # contiguous planes, not a scatter of every pair.
        self.grid3 = np.full((len(names), self.n_rows, self.width), self.PAD, dtype=np.float32)
        for j, name in enumerate(names):
            self.grid3[j, row, pos] = fill_by_user(df[f"m_{name}_norm"], df["user_idx"])
        key = pd.MultiIndex.from_frame(df[["user_idx", "item_idx"]])
        rel_key = pd.MultiIndex.from_frame(rel[["user_idx", "item_idx"]])
        self.label = np.zeros((self.n_rows, self.width), dtype=bool)
        self.label[row, pos] = key.isin(rel_key)
        self.row_rel = n_rel.reindex(uniq).fillna(0).to_numpy()
        discounts = 1.0 / np.log2(np.arange(2, k + 2))
        self.discounts = discounts
        self.idcg = np.concatenate([[np.inf], np.cumsum(discounts)])[
            np.minimum(self.row_rel, k).astype(int)
        ]

    def hits(self, grid: np.ndarray, k: int) -> np.ndarray:
        """``(rows, k)`` booleans: whether the item at each place of each row's top ``k`` of
        ``grid`` is relevant. Places are by score descending, ties by candidate slot (item
        index), as the evaluation's metrics break them, so the result does not depend on
        the platform's partial sort. With few relevant slots (a fold with one target per
        user) each one's place is counted directly, one comparison pass per slot; with
        many, each row's top ``k`` is sorted out. Both give the same places."""
        if self._relevant is None:  # the same for every trial
            self._relevant = np.nonzero(self.label)
        rows, slots = self._relevant
        if len(rows) <= self.direct_places * len(grid):
            own = grid[rows]
            value = grid[rows, slots][:, None]
            before = np.arange(grid.shape[1]) < slots[:, None]
            place = ((own > value) | ((own == value) & before)).sum(axis=1)
        else:
            if k < grid.shape[1]:
                neg = np.negative(grid)
                neg.partition(k - 1, axis=1)
                r, c = np.divmod(np.flatnonzero(grid >= -neg[:, k - 1 : k]), grid.shape[1])
            else:
                r, c = np.divmod(np.arange(grid.size), grid.shape[1])
            order = np.lexsort((c, -grid[r, c], r))
            r, c = r[order], c[order]
            at = rank_within(r) - 1
            relevant = (at < k) & self.label[r, c]
            hit = np.zeros((len(grid), k), dtype=bool)
            hit[r[relevant], at[relevant]] = True
            return hit
        hit = np.zeros((len(grid), k), dtype=bool)
        inside = place < k
        hit[rows[inside], place[inside]] = True
        return hit

    def subset(self, rows: np.ndarray) -> TrialScorer:
        """A scorer of only the candidate users at sorted positions ``rows`` (in ``user_idx``
        order); its mean runs over those of them with a relevant target."""
        rows = np.asarray(rows, dtype=np.int64)
        sub = object.__new__(TrialScorer)
        sub.k, sub.discounts = self.k, self.discounts
        sub.n_rows, sub.counts = len(rows), self.counts[rows]
        sub.width = int(sub.counts.max()) if len(rows) else 0
        sub.grid3 = np.ascontiguousarray(self.grid3[:, rows, : sub.width])
        sub.label = self.label[rows, : sub.width]
        sub.row_rel, sub.idcg = self.row_rel[rows], self.idcg[rows]
        sub.users = self.users[rows]
        sub.n_eval = int((sub.row_rel > 0).sum())
        return sub

    def value(self, weights: np.ndarray, metric: str, rows: np.ndarray | None = None) -> float:
        """Mean ``metric@k`` over users with relevant targets for the hybrid of ``weights``.

        ``rows``: optional sorted positions of the candidate users (in ``user_idx`` order) to
        score alone, as :meth:`subset` (which is faster when one subset is scored often).
        """
        if rows is not None:
            return self.subset(rows).value(weights, metric)
        if self.n_eval == 0:
            if metric not in self.METRICS:
                raise ValueError(f"search_metric must be one of {self.METRICS} at some K")
            return float("nan")
        return float(self.per_user(weights, metric).sum() / self.n_eval)

    def per_user(self, weights: np.ndarray, metric: str) -> np.ndarray:
        """``metric@k`` of every candidate user (0 for users without a relevant target), in
        ``user_idx`` order: a fold's mean is their sum over all its users divided by the
        users with a relevant target, whatever blocks the users were scored in."""
        if metric not in self.METRICS:
            raise ValueError(f"search_metric must be one of {self.METRICS} at some K")
        weights = np.asarray(weights, dtype=np.float64)
        if (weights < 0).any() or not weights.sum() > 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
        if self.n_rows == 0:
            return np.zeros(0)
        grid = np.tensordot((weights / weights.sum()).astype(np.float32), self.grid3, axes=1)
        row_rel, idcg = self.row_rel, self.idcg
        hit = self.hits(grid, min(self.k, self.width))
        n_hit = hit.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            if metric == "ndcg":
                per_row = (hit * self.discounts[: hit.shape[1]]).sum(axis=1) / idcg
            elif metric == "precision":
                per_row = n_hit / self.k
            elif metric == "recall":
                per_row = n_hit / row_rel
            elif metric == "hitrate":
                per_row = (n_hit > 0).astype(float)
            else:
                first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.inf)
                per_row = 1.0 / first
        return np.where(row_rel > 0, per_row, 0.0)


@dataclass(frozen=True)
class SearchResult:
    """The chosen weights, their value on the whole fold, and each bag's users and winner."""

    weights: dict[str, float]
    value: float
    bags: list[tuple[np.ndarray, dict[str, float]]] = field(default_factory=list)


def search_weights(
    df: pd.DataFrame,
    truth: pd.DataFrame,
    names: list[str],
    cfg: BlendConfig,
    seed: int,
) -> tuple[dict[str, float], float]:
    """:func:`search` as ``(weights, value on the whole fold)``."""
    result = search(df, truth, names, cfg, seed)
    return result.weights, result.value


class FoldUsers:
    """What the weight search needs from a fold: its candidate users (sorted), how many
    relevant targets each has, and scorers (:class:`TrialScorer`) of any sorted subset of
    them. This one holds the whole fold's pairs in memory; :class:`StreamedFold` builds
    only the users asked for."""

    def __init__(self, df: pd.DataFrame, truth: pd.DataFrame, names: list[str], k: int) -> None:
        self._scorer = TrialScorer(df, truth, names, k)
        self.users, self.row_rel = self._scorer.users, self._scorer.row_rel

    def scorer(self, rows: np.ndarray) -> TrialScorer:
        """A scorer of the users at sorted positions ``rows`` of :attr:`users`."""
        return self._scorer.subset(rows)

    def whole(self) -> TrialScorer:
        return self._scorer


def relevant_pairs(truth: pd.DataFrame) -> pd.DataFrame:
    """The distinct relevant (user_idx, item_idx) target pairs of ``truth``."""
    return truth.loc[truth["relevant"], ["user_idx", "item_idx"]].drop_duplicates()


def relevant_counts(truth: pd.DataFrame) -> pd.Series:
    """Distinct relevant target items per user (a pair listed twice counts once)."""
    return relevant_pairs(truth).groupby("user_idx").size()


class StreamedFold:
    """:class:`FoldUsers` of a fold given as every model's candidates, built block by block
    on demand (:func:`blend_block`), so only the users a search asks for are held."""

    def __init__(
        self,
        cands: Mapping[str, pd.DataFrame],
        models: Mapping[str, Recommender],
        normalise: str,
        truth: pd.DataFrame,
        k: int,
    ) -> None:
        self.cands, self.models, self.normalise, self.truth, self.k = (
            cands,
            models,
            normalise,
            truth,
            k,
        )
        self.users = np.unique(
            np.concatenate([c["user_idx"].to_numpy(np.int64) for c in cands.values()])
        )
        self.row_rel = relevant_counts(truth).reindex(self.users).fillna(0).to_numpy()

    def scorer(self, rows: np.ndarray) -> TrialScorer:
        users = self.users[np.asarray(rows, dtype=np.int64)]
        part = {m: c[np.isin(c["user_idx"].to_numpy(), users)] for m, c in self.cands.items()}
        df = blend_block(part, self.models, self.normalise)
        truth = self.truth[self.truth["user_idx"].isin(users)]
        return TrialScorer(df, truth, list(self.models), self.k)

    def whole(self) -> TrialScorer:
        return self.scorer(np.arange(len(self.users)))


def search(
    df: pd.DataFrame,
    truth: pd.DataFrame,
    names: list[str],
    cfg: BlendConfig,
    seed: int,
) -> SearchResult:
    """:func:`search_fold` on a fold whose pairs ``df`` are all in memory."""
    return search_fold(FoldUsers(df, truth, names, search_k(cfg)), names, cfg, seed)


def search_k(cfg: BlendConfig) -> int:
    return int(cfg.search_metric.split("@")[1])


def search_fold(
    fold: FoldUsers | StreamedFold, names: list[str], cfg: BlendConfig, seed: int
) -> SearchResult:
    """Random search over the weight simplex, maximising ``cfg.search_metric`` on the valid
    fold. The configured weights, each single model and the uniform mix are always tried, so
    with one bag the result is never worse on the valid fold than any of them. With
    ``cfg.search_bags`` > 1 the search runs on that many seeded halves of the users with a
    relevant target among their candidates (at most ``cfg.search_users`` each), and the
    winning weights are averaged; each bag's users and winner are kept (see
    :func:`out_of_bag_hybrid`). The result's ``value`` (the chosen weights on the whole
    fold) is NaN when ``fold`` is streamed: the caller adds it up block by block
    (:meth:`TrialScorer.per_user`, see :class:`ValidFold`)."""
    metric = cfg.search_metric.split("@")[0]
    rng = np.random.default_rng(seed)
    trials: list[np.ndarray] = []
    if cfg.weights:
        trials.append(np.array([cfg.weights.get(m, 0.0) for m in names], dtype=float))
    trials += list(np.eye(len(names)))
    trials.append(np.full(len(names), 1.0 / len(names)))
    # Sparse Dirichlet draws: good blends usually rest on a few models.
    trials += list(rng.dirichlet(np.full(len(names), 0.5), size=cfg.search_trials))
    trials = [w / w.sum() for w in trials if w.sum() > 0]

    def best_of(part: TrialScorer) -> np.ndarray:
        best_w, best_v = trials[0], -np.inf
        for w in trials:
            value = part.value(w, metric)
            if value > best_v + 1e-12:
                best_w, best_v = w, value
        return best_w

    def as_dict(w: np.ndarray) -> dict[str, float]:
        return {m: round(float(x), 4) for m, x in zip(names, w, strict=True)}

    bags: list[tuple[np.ndarray, dict[str, float]]] = []
    # A bag of users without a relevant target scores NaN for every trial: draw from the rest.
    eligible = np.flatnonzero(fold.row_rel > 0)
    whole: TrialScorer | None = None
    if cfg.search_bags == 1 or len(eligible) < 2:
        whole = fold.whole()
        chosen = best_of(whole)
    else:
        half = max(1, min(len(eligible) // 2, cfg.search_users))
        draws = [np.sort(rng.permutation(eligible)[:half]) for _ in range(cfg.search_bags)]
        # a streamed fold builds one scorer of every bag's users (each bag a subset of it);
        # an in-memory one takes each bag straight from the whole fold's scorer
        union = np.unique(np.concatenate(draws))
        bag_scorer = fold.scorer(union) if isinstance(fold, StreamedFold) else None
        winners = []
        for rows in draws:
            part = (
                fold.scorer(rows)
                if bag_scorer is None
                else bag_scorer.subset(np.searchsorted(union, rows))
            )
            winners.append(best_of(part))
            bags.append((part.users, as_dict(winners[-1])))
        chosen = np.mean(winners, axis=0)
    weights = as_dict(chosen)
    if isinstance(fold, StreamedFold) and whole is None:
        return SearchResult(weights, float("nan"), bags)
    rounded = np.array([weights[m] for m in names])
    scorer = whole if whole is not None else fold.whole()
    return SearchResult(weights, scorer.value(rounded / rounded.sum(), metric), bags)


def out_of_bag_hybrid(df: pd.DataFrame, result: SearchResult) -> np.ndarray:
    """The hybrid of the fold the weights were searched on, each user's pairs scored with
    the mean of the winners of the bags that did not contain the user, so a user's own
    labels never shaped the weights of their hybrid (a ranker trained on this fold's labels
    then starts from an honest score). Users in every bag, or a search without bags, get
    ``result.weights``."""
    if not result.bags:
        return hybrid_score(df, result.weights)
    users = df["user_idx"].to_numpy()
    total = np.zeros(len(df), dtype=np.float64)
    count = np.zeros(len(df), dtype=np.int64)
    # A user's pairs are all inside a bag or all outside, so the per-user fill of a missing
    # score is the same on the whole fold: score it whole, keep the outside rows.
    filled: dict[str, np.ndarray] = {}
    for bag_users, weights in result.bags:
        outside = ~np.isin(users, bag_users)
        total[outside] += hybrid_score(df, weights, filled)[outside]
        count[outside] += 1
    out = hybrid_score(df, result.weights, filled).astype(np.float64)
    has = count > 0
    out[has] = total[has] / count[has]
    return out.astype(np.float32)


def resolve_weights(weights: Mapping[str, float], enabled: Sequence[str]) -> dict[str, float]:
    """The weights the blend applies: one per enabled model (0 for a model the weights do
    not name), scaled to sum 1. Weights of models that are off or unknown are ignored with a
    warning; :class:`ConfigError` when no enabled model keeps a positive weight (the blend
    would otherwise fall back, silently, to a meaningless uniform mix)."""
    unknown = sorted(set(weights) - set(enabled))
    if unknown:
        log.warning(
            "blend.weights: weights for models that are off or unknown are ignored: %s",
            ", ".join(unknown),
        )
    # Every enabled model is reported, with weight 0 where the blend ignores it.
    chosen = {m: float(weights.get(m, 0.0)) for m in enabled}
    if not any(w > 0 for w in chosen.values()):
        raise ConfigError(
            "blend.weights: no positive weight on an enabled model (enabled: "
            f"{', '.join(enabled)}; weighted: {', '.join(sorted(weights)) or 'none'})"
        )
    total = sum(chosen.values())
    return {m: w / total for m, w in chosen.items()}


def choose_weights(
    df: pd.DataFrame,
    enabled: Sequence[str],
    cfg: BlendConfig,
    seed: int,
    truth: pd.DataFrame | None = None,
) -> tuple[dict[str, float], SearchResult | None]:
    """The blend's weights, fixed on the valid fold's pairs ``df``: searched against its
    ``truth`` when ``cfg.search`` (which then needs it), the configured ones otherwise;
    then :func:`resolve_weights`. Also returns the search (None without one).
    (:class:`ValidFold` does the same without holding the fold.)"""
    searched = None
    weights: Mapping[str, float] = cfg.weights
    if cfg.search:
        if truth is None:
            raise ValueError("blend.search needs the valid fold's targets")
        searched = search(df, truth, list(enabled), cfg, seed)
        weights = searched.weights
    return resolve_weights(weights, enabled), searched


class ValidFold:
    """The valid fold, one block of users at a time: its weights are chosen first (the
    search builds only its bags' users, see :class:`StreamedFold`), then :meth:`blocks`
    gives every block with its (out-of-bag) hybrid, and :attr:`value` is the chosen
    weights' search metric over the whole fold, added up from the blocks."""

    def __init__(
        self,
        cands: Mapping[str, pd.DataFrame],
        models: Mapping[str, Recommender],
        cfg: BlendConfig,
        seed: int,
        truth: pd.DataFrame | None,
    ) -> None:
        self.cands, self.models, self.cfg, self.truth = cands, models, cfg, truth
        self.searched: SearchResult | None = None
        weights: Mapping[str, float] = cfg.weights
        if cfg.search:
            if truth is None:
                raise ValueError("blend.search needs the valid fold's targets")
            fold = StreamedFold(cands, models, cfg.normalise, truth, search_k(cfg))
            self.searched = search_fold(fold, list(cands), cfg, seed)
            weights = self.searched.weights
        self.weights = resolve_weights(weights, list(cands))
        self._per_user: list[np.ndarray] = []

    def blocks(
        self, n_workers: int = 1, finish: Callable[[pd.DataFrame], Any] | None = None
    ) -> Iterator[Any]:
        """Every block with its hybrid, in user order, up to ``n_workers`` side by side
        (:func:`~recpipe.engine.map_shared`: the fold's candidates and models are not
        sent); with ``finish`` (a module-level function, or a partial of one), what it
        makes of each block, computed where the block is (so in the workers too)."""
        ranges = candidate_ranges(self.cands, self.cfg.block_users)
        work = partial(_valid_block, finish=finish)
        with closing(map_shared(work, self, ranges, n_workers, "blocks of valid users")) as results:
            for block, per_user in results:
                if per_user is not None:
                    self._per_user.append(per_user)
                yield block

    @property
    def value(self) -> float | None:
        """The search metric of the chosen weights on the whole fold (after :meth:`blocks`
        ran); None without a search."""
        if self.searched is None or self.truth is None:
            return None
        n_eval = len(relevant_counts(self.truth))
        if n_eval == 0:
            return float("nan")
        return float(np.concatenate(self._per_user or [np.zeros(0)]).sum() / n_eval)


def _valid_block(
    fold: ValidFold,
    ranges: Mapping[str, tuple[int, int]],
    finish: Callable[[pd.DataFrame], Any] | None = None,
) -> tuple[Any, np.ndarray | None]:
    """One block of the valid fold (:meth:`ValidFold.blocks`): its pairs with the hybrid
    (or what ``finish`` makes of them), and each user's search metric of the chosen
    weights (None without a search)."""
    df = blend_block(candidate_block(fold.cands, ranges), fold.models, fold.cfg.normalise)
    searched, truth, per_user = fold.searched, fold.truth, None
    if searched is not None and truth is not None:
        names = list(fold.cands)
        metric = fold.cfg.search_metric.split("@")[0]
        w = np.array([searched.weights[m] for m in names])
        users = df["user_idx"].unique()
        scorer = TrialScorer(df, truth[truth["user_idx"].isin(users)], names, search_k(fold.cfg))
        per_user = scorer.per_user(w / w.sum(), metric)
    df["m_hybrid"] = fold_hybrid(df, fold.weights, searched)
    return (df if finish is None else finish(df)), per_user


def fold_hybrid(
    df: pd.DataFrame, weights: Mapping[str, float], searched: SearchResult | None = None
) -> np.ndarray:
    """The hybrid score of a fold's pairs. On the fold the weights were searched on (pass
    its ``searched``), with bags, each user's comes from the bags that did not see the user:
    the ranker learns from that fold's labels, so they must not have shaped its input."""
    if searched is not None and searched.bags:
        return out_of_bag_hybrid(df, searched)
    return hybrid_score(df, weights)
