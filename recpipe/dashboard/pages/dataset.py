"""Data: events over time, user activity and item popularity distributions (log scale),
the split's sizes per part and fold, ingest's summary and warnings."""

from __future__ import annotations

import streamlit as st

from recpipe.dashboard import data, figures, tables


def render() -> None:
    st.title("Data")
    with data.section():
        ingest = data.report("ingest")
        cols = st.columns(4)
        cols[0].metric("events", f"{ingest.get('interactions', 0):,}")
        cols[1].metric("users", f"{ingest.get('users', 0):,}")
        cols[2].metric("items", f"{ingest.get('items', 0):,}")
        cols[3].metric("density", f"{ingest.get('density', 0):.4f}")
        warnings = ingest.get("warnings") or []
        if warnings:
            for w in warnings:
                st.warning(f"ingest: {w}")
        else:
            st.success("ingest: no warnings")
    with data.section():
        freq = st.radio("Period", ["D", "W", "M"], index=1, horizontal=True, key="freq")
        st.plotly_chart(figures.events_over_time(data.events_over_time(freq)), key="events")
    with data.section():
        per_user, per_item = data.activity()
        left, right = st.columns(2)
        left.plotly_chart(figures.count_distribution(per_user, "events", "users"), key="users")
        right.plotly_chart(figures.count_distribution(per_item, "events", "items"), key="items")
    with data.section():
        sizes = tables.split_sizes(data.report("split"))
        st.subheader("Split")
        what = st.radio(
            "Count", list(dict.fromkeys(sizes["what"])), horizontal=True, key="split_what"
        )
        st.plotly_chart(figures.split_sizes(sizes, what), key="split")
        st.dataframe(sizes.pivot(index="part", columns="what", values="count"), key="split_table")


if __name__ == "__main__":
    render()
