"""Metrics: metric vs K per model, candidate recall vs N, segments (cold users, heavy
users, cold items), where recommendations fall on the popularity curve (long tail), the
ranker's feature importance. The same tables as the DVC plots (``reports/plots``)."""

from __future__ import annotations

import streamlit as st

from recpipe.dashboard import data, figures


def render() -> None:
    st.title("Metrics")
    with data.section():
        curves = data.plot_table("metric_vs_k")
        all_models = list(dict.fromkeys(curves["model"]))
        models = st.multiselect("Models", all_models, default=all_models, key="models")
        metric_names = [c for c in curves.columns if c not in ("model", "k")]
        metric = st.selectbox(
            "Metric",
            metric_names,
            index=metric_names.index("ndcg") if "ndcg" in metric_names else 0,
        )
        left, right = st.columns(2)
        left.plotly_chart(figures.metric_vs_k(curves, metric, models), key="metric_vs_k")
        with right, data.section():
            right.plotly_chart(
                figures.candidate_recall(data.plot_table("candidate_recall")),
                key="candidate_recall",
            )
    with data.section():
        seg = data.report("segments")
        st.subheader("Segments")
        names = sorted({m for rows in seg.values() for r in rows.values() for m in r} - {"users"})
        choice = st.selectbox(
            "Segment metric", names, index=names.index("ndcg@10") if "ndcg@10" in names else 0
        )
        users = {s: next(iter(rows.values()), {}).get("users", 0) for s, rows in seg.items()}
        st.caption(", ".join(f"{s}: {n:,} users" for s, n in users.items()))
        st.plotly_chart(figures.segments(seg, choice), key="segments")
    left, right = st.columns(2)
    with left, data.section():
        pop = data.plot_table("popularity")
        st.plotly_chart(figures.popularity_profile(pop), key="popularity")
    with right, data.section():
        imp = data.importance()
        top = st.slider("Features shown", 5, max(5, len(imp)), min(25, max(5, len(imp))), key="top")
        st.plotly_chart(figures.importance(imp, top), key="importance")


if __name__ == "__main__":
    render()
