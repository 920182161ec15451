"""Seeded pseudo-random keys for tie-breaking, the same on every platform.

Logs often stamp several events with one second (a rating page submitted at once). Ordering
such ties by item index would make the order follow how item ids happen to sort, and a
model that learns from order (a sequence model) would learn that artefact. A seeded hash of
(user, item) orders ties at random but reproducibly.
"""

from __future__ import annotations

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def tie_key(users: np.ndarray, items: np.ndarray, seed: int) -> np.ndarray:
    """A uint64 key per (user, item) pair from the splitmix64 finaliser of
    ``(user << 32) ^ item ^ seed``: unrelated to either id's order, fixed for a seed."""
    u = np.asarray(users, dtype=np.uint64)
    i = np.asarray(items, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (
            (u << np.uint64(32))
            ^ i
            ^ (np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15))
        )
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return z ^ (z >> np.uint64(31))
