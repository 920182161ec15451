"""Shared fixtures: tiny canonical data sets built in code (never real MovieLens)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stages.core.schema import finalize


def make_interactions(rows: list[tuple], with_rating: bool = False) -> pd.DataFrame:
    """Canonical interactions from (user, item, timestamp[, rating][, event]) tuples."""
    recs = []
    for r in rows:
        u, i, t = r[0], r[1], r[2]
        rating = r[3] if with_rating else np.nan
        event = r[4] if len(r) > 4 else ("rating" if with_rating else "view")
        recs.append((str(u), str(i), float(rating), event, 1.0, int(t)))
    raw = pd.DataFrame(
        recs, columns=["user_id", "item_id", "rating", "event", "weight", "timestamp"]
    )
    inter, _, _, _ = finalize(raw, None, None, file="test")
    return inter


@pytest.fixture
def random_log() -> pd.DataFrame:
    """A random canonical log: 60 users, 40 items, 1,500 events, some repeats."""
    rng = np.random.default_rng(7)
    n = 1500
    raw = pd.DataFrame(
        {
            "user_id": [f"u{u:02d}" for u in rng.integers(0, 60, n)],
            "item_id": [f"i{i:02d}" for i in rng.integers(0, 40, n)],
            "rating": rng.integers(1, 6, n).astype(float),
            "event": rng.choice(["view", "click", "purchase"], n),
            "weight": 1.0,
            "timestamp": rng.integers(1_000_000, 2_000_000, n),
        }
    )
    inter, _, _, _ = finalize(raw, None, None, file="test")
    return inter
