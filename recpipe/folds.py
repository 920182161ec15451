"""The folds (docs/architecture.md, "Folds"), assembled from the split parts.

- ``valid``: history = ``train``; targets = ``valid_targets``.
- ``test``: history = ``train + valid``; targets = ``test_targets``.

- extra ranker folds ``extra1..extraK`` (``split.ranker_folds``): histories and targets
  carved from the test fold's history like ``valid`` (see ``recpipe.splitting``); models
  and features are computed for them as for ``valid``, and the ranker learns from their
  labels too.

Everything fitted or computed for a fold (models, features, popularity) sees only its
history; only the evaluation of that fold (ranker labels for ``valid``, metrics for
``test``) reads its targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recpipe.dataset import TrainData

FOLDS: tuple[str, ...] = ("valid", "test")
FoldName = Literal["valid", "test"]

RANKER_ROLES = "ranker_folds.parquet"
"""File of the split output giving each ``train``/``valid`` event's role in every extra
ranker fold: column ``part`` (0 train, 1 valid) and one column per fold, 0 history, 1 target
period, 2 hidden (see ``recpipe.splitting.ranker_fold_roles``)."""


def ranker_fold_name(k: int) -> str:
    """Name of extra ranker fold ``k`` (0-based): ``extra1``, ``extra2``, ..."""
    return f"extra{k + 1}"


def ranker_folds(split_dir: str | Path) -> tuple[str, ...]:
    """Names of the extra folds the ranker also learns from (none when the split made none),
    read from the columns of :data:`RANKER_ROLES`."""
    path = Path(split_dir) / RANKER_ROLES
    if not path.exists():
        return ()
    names = pq.read_schema(path).names
    return tuple(n for n in names if n.startswith("extra"))


def fold_names(split_dir: str | Path) -> tuple[str, ...]:
    """Every fold models are fitted on: ``valid``, ``test``, then the extra ranker folds."""
    return FOLDS + ranker_folds(split_dir)


@dataclass(frozen=True)
class Fold:
    """One fold: its name, the history models learn from, and the targets to predict."""

    name: str
    history: pd.DataFrame
    targets: pd.DataFrame

    @property
    def target_users(self) -> pd.Index:
        """Users with at least one target in this fold (sorted)."""
        return pd.Index(sorted(self.targets["user_idx"].unique()))


def load_fold(split_dir: str | Path, name: str) -> Fold:
    """Read fold ``name`` (``valid``, ``test`` or an extra ranker fold) from the split stage's
    output folder. An extra fold's history is the test fold's history (``train`` then
    ``valid``) restricted to the events whose role in that fold is 0."""
    split_dir = Path(split_dir)
    extra = ranker_folds(split_dir)
    if name not in FOLDS + extra:
        raise ValueError(f"unknown fold {name!r}; folds are {FOLDS + extra}")
    parts = ["train"] if name == "valid" else ["train", "valid"]
    frames = [pd.read_parquet(split_dir / f"{p}.parquet") for p in parts]
    history = pd.concat(frames, ignore_index=True)
    if name in extra:
        roles = pd.read_parquet(split_dir / RANKER_ROLES, columns=["part", name])
        expected = np.repeat([0, 1], [len(f) for f in frames])
        if len(roles) != len(history) or not np.array_equal(roles["part"].to_numpy(), expected):
            raise ValueError(
                f"{split_dir / RANKER_ROLES}: its rows do not line up with train.parquet and "
                "valid.parquet (written by another split run?); rerun the split stage"
            )
        history = history[roles[name].to_numpy() == 0].reset_index(drop=True)
    targets = pd.read_parquet(split_dir / f"{name}_targets.parquet")
    return Fold(name, history, targets)


def history_events(split_dir: str | Path) -> int:
    """Events in the largest fold's history (``train`` and ``valid``, the test fold's), read
    from the Parquet footers: what one block of a stage that works fold by fold holds."""
    split_dir = Path(split_dir)
    return sum(pq.read_metadata(split_dir / f"{p}.parquet").num_rows for p in ("train", "valid"))


def load_catalogue(prepared_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The items and users tables (the id maps with their metadata)."""
    prepared_dir = Path(prepared_dir)
    return (
        pd.read_parquet(prepared_dir / "items.parquet"),
        pd.read_parquet(prepared_dir / "users.parquet"),
    )


def train_data(fold: Fold, items: pd.DataFrame, users: pd.DataFrame) -> TrainData:
    """What a model is fitted on for this fold: its history and the full catalogue."""
    return TrainData(fold.history, items, users)
