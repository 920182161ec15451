"""Overview: every model, the blend and the ranker with headline metrics and intervals (best
per column marked), beyond-accuracy and rating error; the run's params digest, git revision
and data source; against a chosen base revision, the review's verdict beside each number."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from recpipe.dashboard import data, tables

BEST_STYLE = "font-weight: bold; background-color: rgba(44, 160, 44, 0.25)"


def styled(frame: pd.DataFrame, numeric: list[str], digits: int = 4) -> pd.io.formats.style.Styler:
    """The frame with its best value per numeric column in bold on green."""
    best = tables.best_models(frame, numeric)

    def mark(col: pd.Series) -> list[str]:
        return [BEST_STYLE if str(m) in best.get(col.name, []) else "" for m in col.index]

    return frame.style.apply(mark, subset=numeric).format(
        {c: f"{{:.{digits}f}}" for c in numeric}, na_rep="–"
    )


def run_facts() -> None:
    p = data.params()
    where = str(data.project())
    cols = st.columns(4)
    cols[0].metric("params digest", tables.params_digest(p), help="sha256 of params.yaml")
    cols[1].metric("git revision", data.git_revision(where))
    cols[2].metric("data source", p.get("data", {}).get("source", "?"))
    with data.section():
        ingest = data.report("ingest")
        cols[3].metric(
            "events",
            f"{ingest.get('interactions', 0):,}",
            help=f"{ingest.get('users', 0):,} users, {ingest.get('items', 0):,} items",
        )
    st.caption(f"Data: {tables.data_source(p)}")
    manifest = data.project() / data.BUNDLE_DIR / "manifest.json"
    if manifest.is_file():
        m = data.json_file(f"{data.BUNDLE_DIR}/manifest.json")
        st.caption(
            f"Serving bundle `{m.get('bundle_id')}`: git {str(m.get('git_revision'))[:12]}, "
            f"params digest {str(m.get('params_digest'))[:12]}, "
            f"{m.get('counts', {}).get('users', 0):,} users, "
            f"lists of {', '.join(m.get('lists', []))}"
        )
    else:
        st.caption("No serving bundle (`models/bundle`): the explorers show less.")


def headline(base: str | None) -> None:
    metrics = data.report("metrics")
    intervals = data.report("intervals")
    heads = list(data.params().get("eval", {}).get("headline", [])) or [
        k for k in intervals.get(next(iter(intervals), ""), {})
    ]
    table = tables.headline_table(metrics, intervals, heads)
    st.subheader("Headline metrics")
    st.caption(
        "Test fold; the interval is the 95% bootstrap over users (reports/intervals.json). "
        "Best value per column in bold on green."
    )
    st.dataframe(styled(table, heads + []), key="headline")
    if base:
        verdicts = data.review(str(data.project()), base, "workspace")
        marks = tables.verdict_marks(verdicts)
        st.subheader(f"Against `{base}`: the review's verdicts")
        st.caption(
            "Paired bootstrap over the users both runs scored (as `python -m stages.review "
            f"--base {base}`): ▲/▼ the 95% interval excludes 0; `~` within noise; `=` identical."
        )
        significant = verdicts[verdicts["verdict"].isin(["better", "worse"])]
        st.write(f"{len(significant)} significant change(s) of {len(verdicts)} comparisons.")
        st.dataframe(marks, key="verdicts")


def beyond() -> None:
    metrics = data.report("metrics")
    st.subheader("Beyond accuracy")
    table = tables.beyond_table(metrics)
    # higher coverage/diversity/novelty is the usual aim; arp is shown, not ranked
    ranked = [c for c in table.columns if not c.startswith("arp")]
    st.dataframe(styled(table, ranked), key="beyond")
    rating = tables.rating_table(metrics)
    st.subheader("Rating error")
    if rating.empty:
        st.info("No model predicts ratings in this run (no rated test pairs, or rating off).")
    else:
        st.dataframe(styled(rating, ["rmse", "mae"]), key="rating")


def render() -> None:
    st.title("Overview")
    with data.section():
        run_facts()
    with st.sidebar:
        revs = data.git_revisions(str(data.project()))
        base = st.selectbox(
            "Compare with base revision",
            ["(none)", *revs, "HEAD"],
            key="base",
            help="The review's verdicts (better / worse / within noise) of the workspace "
            "against this revision's committed reports.",
        )
    with data.section():
        headline(None if base == "(none)" else base)
    with data.section():
        beyond()


if __name__ == "__main__":
    render()
