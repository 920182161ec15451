"""Figures of the evaluation report, rendered to PNG bytes with matplotlib's Agg canvas.

Figures are built with the object API (:class:`matplotlib.figure.Figure` on an explicit
:class:`FigureCanvasAgg`), never through ``pyplot``: no global figure state, no GUI backend
picked up from the environment, and nothing left open between calls. PNGs are written
without the ``Software`` text chunk (matplotlib adds no date to PNGs), so the same data gives
the same bytes and ``dvc plots diff`` shows only real changes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from recpipe.evaluation.embedding import EmbeddingMap

PNG_METADATA: dict[str, str | None] = {"Software": None}
"""PNG text chunks: None drops matplotlib's version stamp, so bytes depend on data only."""

DPI = 100

METRIC_LABELS: dict[str, str] = {
    "precision": "Precision",
    "recall": "Recall",
    "ndcg": "NDCG",
    "map": "MAP",
    "mrr": "MRR",
    "hitrate": "HitRate",
}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (deterministic: no software or date metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=PNG_METADATA)
    return buf.getvalue()


def _color(i: int, n: int) -> tuple:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return cmap(i % cmap.N)


def metric_vs_k(curves: Mapping[str, pd.DataFrame], metrics: Sequence[str]) -> Figure:
    """One panel per metric: its mean at each K, one line per model, a shared legend.

    ``curves`` maps a model to a frame indexed by ``k`` with one column per metric.
    """
    fig = _figure(4.6 * len(metrics) + 1.8, 4.4)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    names = list(curves)
    for ax, metric in zip(axes, metrics, strict=True):
        label = METRIC_LABELS.get(metric, metric)
        for i, name in enumerate(names):
            c = curves[name]
            ax.plot(
                c.index.to_numpy(),
                c[metric].to_numpy(),
                marker=_MARKERS[i % len(_MARKERS)],
                markersize=4,
                linewidth=1.6,
                color=_color(i, len(names)),
                label=name,
            )
        ks = curves[names[0]].index.to_numpy() if names else np.array([])
        if len(ks):
            ax.set_xticks(ks)
        ax.set_xlabel("K (length of the recommendation list)")
        ax.set_ylabel(f"{label}@K")
        ax.set_title(f"{label}@K")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    if names:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", title="model", frameon=False)
    fig.suptitle("Test fold: accuracy against list length")
    return fig


def embedding_map(emap: EmbeddingMap, model: str = "ALS") -> Figure:
    """Scatter of the items' 2-D projection, coloured by cluster, legend naming categories."""
    fig = _figure(11.0, 6.4)
    ax = fig.subplots()
    k = len(emap.labels)
    for c in range(1, k + 1):
        sel = emap.cluster == c
        ax.scatter(
            emap.coords[sel, 0],
            emap.coords[sel, 1],
            s=14,
            alpha=0.75,
            linewidths=0,
            color=_color(c - 1, k),
            label=emap.labels[c - 1],
        )
    ev1, ev2 = emap.explained
    ax.set_xlabel(f"principal component 1 ({ev1:.0%} of variance)")
    ax.set_ylabel(f"principal component 2 ({ev2:.0%} of variance)")
    ax.set_title(
        f"{model} item embeddings ({len(emap.items)} items with factors):\n"
        "PCA of unit-length factors, coloured by K-means cluster"
    )
    ax.grid(alpha=0.25)
    # Anchored to the axes (not the figure) so the legend starts below the title.
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        title="cluster: dominant categories (share of its items)",
        frameon=False,
        markerscale=1.8,
        fontsize="small",
        title_fontsize="small",
    )
    return fig


def importance(table: pd.DataFrame, top: int) -> Figure:
    """Horizontal bars of the ``top`` features by total gain, largest at the top."""
    shown = table.head(top).iloc[::-1]
    fig = _figure(8.0, 1.2 + 0.28 * max(len(shown), 1))
    ax = fig.subplots()
    ax.barh(shown["feature"].to_numpy(), shown["gain"].to_numpy(), color=_color(0, 1))
    ax.set_xlabel("total gain (sum of loss reductions of the feature's splits)")
    ax.set_title(f"Ranker feature importance: top {len(shown)} of {len(table)} features")
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="y", labelsize="small")
    return fig


def popularity(table: pd.DataFrame, models: Sequence[str], k: int) -> Figure:
    """Share of each model's top-K slots per popularity bucket, against catalogue and history."""
    fig = _figure(10.0, 5.0)
    ax = fig.subplots()
    x = table["popularity_bucket"].to_numpy()
    bins = len(x)
    ax.plot(x, table["catalogue"], color="grey", linestyle=":", linewidth=2, label="catalogue")
    ax.plot(x, table["history"], color="black", linestyle="--", linewidth=2, label="history")
    shown = [m for m in models if table[m].notna().any()]
    for i, name in enumerate(shown):
        ax.plot(
            x,
            table[name].to_numpy(),
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=4,
            linewidth=1.4,
            color=_color(i, len(shown)),
            label=name,
        )
    ax.set_xticks(x)
    ax.set_xlabel(f"item popularity bucket (1 = most popular 1/{bins} of the catalogue)")
    ax.set_ylabel(f"share of top-{k} recommendations (log scale above 1%)")
    ax.set_title("Popularity bias: where recommendations fall on the catalogue's popularity curve")
    # Most slots go to the head: a linear axis would flatten the tail, where the models
    # differ most. symlog stays linear near 0, so empty buckets still show (at 0).
    ax.set_yscale("symlog", linthresh=0.01, linscale=0.5)
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    return fig
