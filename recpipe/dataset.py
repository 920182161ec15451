"""The data a model is fit on: one fold's history plus the catalogue, in index space.

Kept apart from the model interface (:mod:`recpipe.models.base`) so that the code assembling
folds does not depend on it: editing the model base class re-runs the model stages, not
the split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass(frozen=True)
class TrainData:
    """One fold's history plus the catalogue, in index space.

    ``interactions`` are canonical rows (``user_idx``, ``item_idx``, ``rating``, ``event``,
    ``weight``, ``timestamp``); ``items``/``users`` are the full id maps with metadata
    (row ``i`` is index ``i``), so a content model can describe items nobody has touched.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    extra: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @cached_property
    def now(self) -> int:
        """The reference time of this fold: the last history event (for recency decays)."""
        return int(self.interactions["timestamp"].max())

    @cached_property
    def seen(self) -> sp.csr_matrix:
        """Binary user x item matrix of everything in the history (to exclude from recs)."""
        m = self.matrix("binary")
        return m

    def matrix(self, value: str = "weight") -> sp.csr_matrix:
        """User x item CSR matrix of the history, duplicates summed.

        ``value``: ``weight`` (summed event weights), ``binary`` (1 per pair), or ``rating``
        (the latest rating of each pair; unrated pairs are absent).
        """
        df = self.interactions
        if value == "rating":
            df = df[df["rating"].notna()].sort_values("timestamp", kind="stable")
            df = df.drop_duplicates(["user_idx", "item_idx"], keep="last")
            data = df["rating"].to_numpy(np.float32)
        elif value == "binary":  # ones, summed below, then set back to one
            data = np.ones(len(df), dtype=np.float32)
        else:
            data = df["weight"].to_numpy(np.float32)
        m = sp.csr_matrix(
            (data, (df["user_idx"].to_numpy(), df["item_idx"].to_numpy())),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        m.sum_duplicates()
        if value == "binary":  # the same matrix as ones on the distinct pairs, no pandas pass
            m.data[:] = 1.0
        return m
