"""Plotly figures of the dashboard: plain functions, frames in, a ``go.Figure`` out.

No Streamlit and no file access here: the pages pass what :mod:`.data` loaded and
:mod:`.tables` shaped, and the tests (``tests/test_dashboard_figures.py``) check the traces.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

HEIGHT = 420
"""Default height in pixels: two figures side by side fit a laptop screen."""

HIGHLIGHT = {"item": "#d62728", "neighbour": "#ff7f0e"}

PALETTE = (
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
    "#7f7f7f",
    "#aec7e8",
    "#98df8a",
)
KNOWN_MODELS = ("popularity", "itemknn", "svd", "als", "tfidf", "ease", "seqknn")
FIXED = {"blend": "#ff7f0e", "ranker": "#d62728", "union": "#000000"}


def model_color(model: str) -> str:
    """One colour per model on every chart: the blend orange, the ranker red, the candidate
    models from a fixed palette (by their place in the registry's order, others by name)."""
    if model in FIXED:
        return FIXED[model]
    if model in KNOWN_MODELS:
        return PALETTE[KNOWN_MODELS.index(model)]
    return PALETTE[len(KNOWN_MODELS) + sum(map(ord, model)) % (len(PALETTE) - len(KNOWN_MODELS))]


def _layout(fig: go.Figure, title: str, x: str, y: str, **kw: Any) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        height=kw.pop("height", HEIGHT),
        margin={"l": 50, "r": 20, "t": 50, "b": 45},
        legend={"orientation": "v"},
        **kw,
    )
    return fig


def metric_vs_k(
    curves: pd.DataFrame, metric: str, models: Sequence[str] | None = None
) -> go.Figure:
    """``metric@K`` against K, one line per model (``reports/plots/metric_vs_k.csv``)."""
    fig = go.Figure()
    names = list(dict.fromkeys(curves["model"])) if models is None else list(models)
    for model in names:
        rows = curves[curves["model"] == model].sort_values("k")
        fig.add_trace(
            go.Scatter(
                x=rows["k"],
                y=rows[metric],
                mode="lines+markers",
                name=model,
                line={"color": model_color(model)},
            )
        )
    return _layout(fig, f"{metric}@K by model", "K (list length)", f"{metric}@K")


def candidate_recall(recall: pd.DataFrame) -> go.Figure:
    """Share of relevant test pairs in each model's top N (and the union), against N."""
    fig = go.Figure()
    for col in [c for c in recall.columns if c != "n"]:
        line = {"color": model_color(col)}
        if col == "union":
            line.update(dash="dash", width=3)
        fig.add_trace(
            go.Scatter(x=recall["n"], y=recall[col], mode="lines+markers", name=col, line=line)
        )
    return _layout(fig, "Candidate recall@N", "N (candidates per user)", "recall@N")


def segments(seg: Mapping[str, Mapping[str, Mapping[str, Any]]], metric: str) -> go.Figure:
    """``metric`` per user segment (all, cold users, heavy users, cold items), one bar group
    per segment and one bar per model (``reports/segments.json``)."""
    fig = go.Figure()
    names = list(dict.fromkeys(m for models in seg.values() for m in models))
    names = [m for m in names if m not in ("blend", "ranker")] + [
        m for m in ("blend", "ranker") if m in names
    ]
    for model in names:
        x, y, users = [], [], []
        for name, models in seg.items():
            row = models.get(model, {})
            x.append(name)
            y.append(row.get(metric, np.nan))
            users.append(row.get("users", ""))
        fig.add_trace(
            go.Bar(
                x=x,
                y=y,
                name=model,
                marker_color=model_color(model),
                customdata=users,
                hovertemplate="%{y} (%{customdata} users)",
            )
        )
    return _layout(fig, f"{metric} by segment", "segment", metric, barmode="group")


def popularity_profile(pop: pd.DataFrame, models: Sequence[str] | None = None) -> go.Figure:
    """Where recommendations fall in the catalogue's popularity buckets (1 = most popular
    decile) against the catalogue and the history: the long tail."""
    fig = go.Figure()
    cols = [c for c in pop.columns if c != "popularity_bucket"]
    keep = cols if models is None else [c for c in cols if c in {"catalogue", "history", *models}]
    for col in keep:
        ref = col in ("catalogue", "history")
        fig.add_trace(
            go.Scatter(
                x=pop["popularity_bucket"],
                y=pop[col],
                mode="lines+markers",
                name=col,
                line={"dash": "dot", "color": "grey" if col == "catalogue" else "black"}
                if ref
                else {"color": model_color(col)},
            )
        )
    return _layout(
        fig,
        "Share of recommendations per popularity bucket",
        "popularity bucket (1 = most popular items)",
        "share",
    )


def importance(table: pd.DataFrame, top: int = 25) -> go.Figure:
    """The ranker's features by gain, the largest on top."""
    rows = table.sort_values("gain", ascending=False).head(top).iloc[::-1]
    fig = go.Figure(go.Bar(x=rows["gain"], y=rows["feature"], orientation="h"))
    return _layout(
        fig, f"Ranker feature importance (top {len(rows)} by gain)", "gain", "", height=560
    )


def embedding_map(
    frame: pd.DataFrame, highlight: Sequence[int] = (), item: int | None = None
) -> go.Figure:
    """The item map: one trace per cluster (``x``, ``y``, ``cluster`` label, ``title``,
    ``categories``, ``users``); ``item`` and its ``highlight`` neighbours drawn on top."""
    fig = go.Figure()
    hover = (
        "%{customdata[0]}<br>%{customdata[1]}<br>%{customdata[2]} users"
        "<extra>%{fullData.name}</extra>"
    )
    for label, rows in frame.groupby("cluster", sort=False):
        fig.add_trace(
            go.Scattergl(
                x=rows["x"],
                y=rows["y"],
                mode="markers",
                name=str(label),
                marker={"size": 6, "opacity": 0.75},
                customdata=rows[["title", "categories", "users"]].to_numpy(),
                hovertemplate=hover,
            )
        )
    on = frame.set_index("item_idx")
    for role, ids in (("neighbour", [h for h in highlight if h in on.index]), ("item", [item])):
        ids = [i for i in ids if i is not None and i in on.index]
        if not ids:
            continue
        rows = on.loc[ids]
        fig.add_trace(
            go.Scatter(
                x=rows["x"],
                y=rows["y"],
                mode="markers+text" if role == "item" else "markers",
                name="selected item" if role == "item" else "neighbours",
                text=rows["title"] if role == "item" else None,
                textposition="top center",
                marker={
                    "size": 14 if role == "item" else 10,
                    "color": HIGHLIGHT[role],
                    "line": {"width": 1, "color": "black"},
                    "symbol": "star" if role == "item" else "circle",
                },
                customdata=rows[["title", "categories", "users"]].to_numpy(),
                hovertemplate=hover,
            )
        )
    return _layout(fig, "Item embedding map", "PC 1", "PC 2", height=600)


def param_scatter(runs: pd.DataFrame, param: str, metric: str) -> go.Figure:
    """One point per run: a parameter against a metric, labelled by run name."""
    fig = go.Figure(
        go.Scatter(
            x=runs[param],
            y=runs[metric],
            mode="markers+text",
            text=runs["run"],
            textposition="top center",
            marker={"size": 10},
        )
    )
    return _layout(fig, f"{metric} against {param}", param, metric)


def parallel_coordinates(runs: pd.DataFrame, columns: Sequence[str], color: str) -> go.Figure:
    """Runs as lines across parameter and metric axes, coloured by ``color``. Text columns
    become categorical axes (their values numbered, the labels kept)."""
    dims = []
    for col in columns:
        values = pd.to_numeric(runs[col], errors="coerce")
        if values.notna().all():
            dims.append({"label": _short(col), "values": values})
        else:
            codes, labels = pd.factorize(runs[col].astype(str), sort=True)
            dims.append(
                {
                    "label": _short(col),
                    "values": codes,
                    "tickvals": list(range(len(labels))),
                    "ticktext": list(labels),
                }
            )
    line_color = pd.to_numeric(runs[color], errors="coerce").fillna(0)
    fig = go.Figure(
        go.Parcoords(
            line={"color": line_color, "colorscale": "Viridis", "showscale": True},
            dimensions=dims,
        )
    )
    return _layout(fig, f"Runs across settings, coloured by {_short(color)}", "", "")


def _short(col: str) -> str:
    return col.split(":", 1)[-1]


def review_intervals(verdicts: pd.DataFrame) -> go.Figure:
    """Paired Δ (head - base) with its interval, one row per model and metric, coloured by
    the verdict."""
    colors = {"better": "#2ca02c", "worse": "#d62728"}
    rows = verdicts.iloc[::-1]
    labels = rows["model"] + " " + rows["metric"]
    fig = go.Figure(
        go.Scatter(
            x=rows["paired Δ"],
            y=labels,
            mode="markers",
            marker={"color": [colors.get(v, "grey") for v in rows["verdict"]], "size": 9},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": rows["high"] - rows["paired Δ"],
                "arrayminus": rows["paired Δ"] - rows["low"],
            },
            customdata=rows["verdict"],
            hovertemplate="%{y}: %{x:+.4f} (%{customdata})<extra></extra>",
        )
    )
    fig.add_vline(x=0, line_dash="dot")
    return _layout(
        fig,
        "Paired difference (head - base) and interval",
        "Δ",
        "",
        height=max(300, 18 * len(rows)),
    )


def events_over_time(events: pd.DataFrame) -> go.Figure:
    """Events per period stacked by event type (``period``, ``event``, ``events``)."""
    fig = go.Figure()
    for event, rows in events.groupby("event", sort=True):
        fig.add_trace(go.Bar(x=rows["period"], y=rows["events"], name=str(event)))
    return _layout(fig, "Events over time", "date", "events", barmode="stack")


def count_distribution(dist: pd.DataFrame, what: str, of: str) -> go.Figure:
    """How many ``of`` (users, items) have each count of ``what``, on log-log axes."""
    fig = go.Figure(go.Scatter(x=dist["count"], y=dist["entities"], mode="markers"))
    fig = _layout(fig, f"{of.capitalize()} by number of {what}", f"{what} (log)", f"{of} (log)")
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


def split_sizes(sizes: pd.DataFrame, what: str) -> go.Figure:
    """One bar per part of the split for the count ``what`` (events, users, pairs...)."""
    rows = sizes[sizes["what"] == what]
    fig = go.Figure(go.Bar(x=rows["part"], y=rows["count"], text=rows["count"]))
    return _layout(fig, f"Split: {what} per part", "part", what)


def user_timeline(history: pd.DataFrame) -> go.Figure:
    """A user's events in time (``timestamp``, ``title``, ``event``, ``categories``), one
    trace per event type; the y axis lists the items."""
    fig = go.Figure()
    when = pd.to_datetime(history["timestamp"], unit="s")
    for event in sorted(history["event"].astype(str).unique()):
        mask = (history["event"].astype(str) == event).to_numpy()
        fig.add_trace(
            go.Scatter(
                x=when[mask],
                y=history["title"][mask],
                mode="markers",
                name=event,
                marker={"size": 9},
                customdata=history["categories"][mask],
                hovertemplate="%{x}<br>%{y}<br>%{customdata}<extra>%{fullData.name}</extra>",
            )
        )
    height = min(480, max(300, 16 * history["title"].nunique()))
    return _layout(fig, "History", "time", "", height=height)


def item_trend(trend: pd.DataFrame, title: str) -> go.Figure:
    """Events and distinct users per period for one item."""
    fig = go.Figure()
    fig.add_trace(go.Bar(x=trend["period"], y=trend["events"], name="events", opacity=0.6))
    fig.add_trace(go.Scatter(x=trend["period"], y=trend["users"], name="users", mode="lines"))
    return _layout(fig, f"Who interacts with {title} over time", "week", "count")
