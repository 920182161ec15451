"""The item embedding map: a factor model's item factors projected to 2-D and clustered.

:func:`item_factors_of` takes the factors out of a fitted model and :func:`embedding_map`
computes the map (PCA and K-means, a function of the factors and the seed);
:func:`recpipe.evaluation.plots.embedding_map` draws it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recpipe.errors import DataError


@dataclass(frozen=True)
class EmbeddingMap:
    """Item factors projected to 2-D and clustered (clusters numbered by size, 1 = largest)."""

    items: np.ndarray
    """``item_idx`` of the mapped items."""
    coords: np.ndarray
    """``(n, 2)`` PCA coordinates."""
    cluster: np.ndarray
    """Cluster 1..C of each item."""
    labels: list[str]
    """Legend text of each cluster: its number, size and dominant categories."""
    explained: tuple[float, float] = field(default=(float("nan"), float("nan")))
    """Share of the variance each principal component explains."""


def item_factors_of(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """A factor model's item factors and which items have real factors.

    Factor models give every catalogue item a row, also items without history (random or
    zero); their retrieval index knows which are real (``index.known_items``). Without an
    index, rows that are all zero or not finite count as unknown.
    """
    factors = getattr(model, "item_factors", None)
    if factors is None:
        raise DataError(f"{type(model).__name__} has no item_factors: not a factor model")
    factors = np.asarray(factors, dtype=np.float64)
    known = np.isfinite(factors).all(axis=1) & (np.abs(factors).sum(axis=1) > 0)
    index = getattr(model, "index", None)
    if index is not None and getattr(index, "known_items", None) is not None:
        known &= np.asarray(index.known_items, dtype=bool)
    return factors, known


def _cluster_label(
    number: int, members: np.ndarray, item_cats: sp.csr_matrix, names: Sequence[str], base
) -> str:
    """``"3: shoes 62%, outdoor 40% (n=57)"``: the cluster's most typical categories.

    Categories are ranked by their share among the cluster's items, keeping only those more
    common in the cluster than among all mapped items (a category every item has says
    nothing about a cluster); with none over-represented the plain most common are shown.
    """
    n = len(members)
    if not len(names):
        return f"{number}: n={n}"
    share = np.asarray(item_cats[members].sum(axis=0)).ravel() / n
    order = np.lexsort((np.arange(len(names)), -share))
    order = order[share[order] > 0]
    over = order[share[order] > base[order]]
    pick = (over if len(over) else order)[:3]
    if not len(pick):
        return f"{number}: no categories (n={n})"
    parts = ", ".join(f"{names[c]} {share[c]:.0%}" for c in pick)
    return f"{number}: {parts} (n={n})"


def embedding_map(
    factors: np.ndarray,
    known: np.ndarray,
    item_cats: sp.csr_matrix,
    category_names: Sequence[str],
    n_clusters: int,
    seed: int,
) -> EmbeddingMap | None:
    """PCA (2-D) and K-means of the known items' factors; None with fewer than 3 such items
    or fewer than 2 factors (nothing to project: e.g. ``candidates.als.factors=1``).

    Factors are scaled to unit length first: the length of an implicit-feedback item vector
    mostly tracks popularity, its direction the taste it serves, and the map is meant to show
    tastes. K-means runs on the full unit vectors (the 2-D view only displays them), with a
    fixed ``n_init`` and ``random_state=seed``; PCA uses the exact solver, so the map is a
    function of the factors and the seed.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    items = np.flatnonzero(known)
    if len(items) < 3 or factors.ndim != 2 or factors.shape[1] < 2:
        return None
    x = factors[items]
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    pca = PCA(n_components=2, svd_solver="full", random_state=seed)
    coords = pca.fit_transform(x)
    # PCA's sign is arbitrary; fix it so the largest-|loading| coordinate is positive.
    flip = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    coords = coords * np.where(flip == 0, 1.0, flip)
    k = min(n_clusters, len(items))
    raw = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)
    # Number clusters by size (largest first, ties by first member) so labels are stable.
    sizes = np.bincount(raw, minlength=k)
    first = np.array([np.flatnonzero(raw == c)[0] for c in range(k)])
    order = np.lexsort((first, -sizes))
    renumber = np.empty(k, dtype=np.int64)
    renumber[order] = np.arange(1, k + 1)
    cluster = renumber[raw]

    cats = sp.csr_matrix(item_cats)[items]
    base = np.asarray(cats.sum(axis=0)).ravel() / len(items)
    labels = [
        _cluster_label(c, np.flatnonzero(cluster == c), cats, category_names, base)
        for c in range(1, k + 1)
    ]
    ratio = pca.explained_variance_ratio_
    return EmbeddingMap(items, coords, cluster, labels, (float(ratio[0]), float(ratio[1])))
