"""Experiments: ``dvc exp show`` as a table (the params that vary between runs and the
metrics), filtered and sorted; a parameter against a metric or every run across settings
(parallel coordinates); two runs picked for the paired review between them."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from recpipe.dashboard import data, figures, tables

DEFAULT_METRIC = "metric:ranker.ndcg@10"


def runs_table() -> pd.DataFrame:
    frame = tables.experiments_frame(data.exp_show(str(data.project())))
    if frame.empty:
        raise data.Missing("`dvc exp show` lists no runs: run `dvc exp run` first")
    return frame


def render() -> None:
    st.title("Experiments")
    with data.section():
        frame = runs_table()
        params = tables.varying(frame, "param:")
        metrics = [c for c in frame.columns if c.startswith("metric:")]
        c1, c2, c3 = st.columns([2, 2, 3])
        text = c1.text_input("Filter runs by name", key="exp_filter")
        kinds = c2.multiselect(
            "Kinds",
            ["workspace", "commit", "experiment"],
            default=["workspace", "commit", "experiment"],
            key="exp_kinds",
        )
        headline = [c for c in metrics if c.endswith("@10")] or metrics
        default = [DEFAULT_METRIC] if DEFAULT_METRIC in metrics else headline[:1]
        shown = c3.multiselect("Metrics", metrics, default=default, key="exp_metrics")
        runs = tables.filter_runs(frame, text, kinds)
        st.caption(
            f"{len(runs)} of {len(frame)} runs; {len(params)} params vary between runs "
            "(the others are the same in every run). Click a column header to sort."
        )
        table = runs[["run", "kind", "created", *params, *shown]].rename(
            columns=lambda c: c.split(":", 1)[-1]
        )
        st.dataframe(table, hide_index=True, key="runs")

        st.subheader("Settings against results")
        if len(runs) < 2:
            st.info("One run only: queue a sweep (`dvc exp run --queue -S ...`) to compare.")
        else:
            axes = params or [c for c in frame.columns if c.startswith("param:")][:1]
            view = st.radio(
                "View", ["scatter", "parallel coordinates"], horizontal=True, key="exp_view"
            )
            metric = st.selectbox(
                "Metric", metrics, index=metrics.index(default[0]) if default else 0
            )
            if view == "scatter" and axes:
                param = st.selectbox("Parameter", axes, key="exp_param")
                st.plotly_chart(figures.param_scatter(runs, param, metric), key="exp_scatter")
            else:
                st.plotly_chart(
                    figures.parallel_coordinates(runs, [*axes[:8], metric], metric),
                    key="exp_parcoords",
                )

        st.subheader("Paired review of two runs")
        names = list(frame["run"])
        c1, c2 = st.columns(2)
        base = c1.selectbox("Base run", names, index=min(1, len(names) - 1), key="exp_base")
        head = c2.selectbox("Head run", names, index=0, key="exp_head")
        if base == head:
            st.info("Pick two different runs.")
            return
        rev = dict(zip(frame["run"], frame["rev"], strict=True))
        verdicts = data.review(str(data.project()), rev[base], rev[head])
        significant = verdicts[verdicts["verdict"].isin(["better", "worse"])]
        st.write(
            f"**{len(significant)} significant change(s)** of {len(verdicts)} comparisons "
            f"({head} against {base}; paired bootstrap over users, 95%)."
        )
        st.dataframe(verdicts, hide_index=True, key="review")
        st.plotly_chart(figures.review_intervals(verdicts), key="review_chart")


if __name__ == "__main__":
    render()
