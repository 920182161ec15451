"""The two folds of DESIGN.md, assembled from the split parts.

- ``valid``: history = ``train``; targets = ``valid_targets``.
- ``test``: history = ``train + valid``; targets = ``test_targets``.

Everything fitted or computed for a fold (models, features, popularity) sees only its
history; only the evaluation of that fold (ranker labels for ``valid``, metrics for
``test``) reads its targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from stages.core.models.base import TrainData

FOLDS: tuple[str, ...] = ("valid", "test")
FoldName = Literal["valid", "test"]


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
    """Read fold ``name`` (``valid`` or ``test``) from the split stage's output folder."""
    split_dir = Path(split_dir)
    if name not in FOLDS:
        raise ValueError(f"unknown fold {name!r}; folds are {FOLDS}")
    parts = ["train"] if name == "valid" else ["train", "valid"]
    history = pd.concat(
        [pd.read_parquet(split_dir / f"{p}.parquet") for p in parts], ignore_index=True
    )
    targets = pd.read_parquet(split_dir / f"{name}_targets.parquet")
    return Fold(name, history, targets)


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
