"""Item explorer: pick an item; its collaborative neighbours (ALS factors) and content
neighbours (TF-IDF of title, text and categories) side by side, who interacts with it over
time, and its popularity trend. With the serving bundle, its neighbour lists are the ones
the service answers with."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from recpipe.dashboard import data, figures, tables

MAX_OPTIONS = 200
N = 10


def pick_item(catalogue: pd.DataFrame) -> int | None:
    query = st.sidebar.text_input("Search an item (title or id)", key="item_query")
    pool = catalogue.sort_values(["users", "item_idx"], ascending=[False, True])
    if query:
        q = query.strip().lower()
        pool = pool[
            pool["title"].str.lower().str.contains(q, regex=False)
            | pool["item_id"].str.lower().eq(q)
        ]
    st.sidebar.caption(f"{len(pool):,} items match (most popular first); {MAX_OPTIONS} listed.")
    options = pool.head(MAX_OPTIONS)
    if options.empty:
        st.warning(f"No item matches {query!r}.")
        return None
    labels = [f"{r.title} ({r.item_id})" for r in options.itertuples()]
    choice = st.sidebar.selectbox("Item", labels, key="item")
    return int(options["item_idx"].to_numpy()[labels.index(choice)])


def named(frame: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    idx = frame["item_idx"].to_numpy()
    return pd.DataFrame(
        {
            "title": catalogue["title"].to_numpy()[idx],
            "categories": catalogue["categories"].to_numpy()[idx],
            "similarity": frame["similarity"].to_numpy(),
            "users": catalogue["users"].to_numpy()[idx],
        }
    )


def neighbours_from_bundle(item_id: str, catalogue: pd.DataFrame) -> dict[str, pd.DataFrame]:
    b = data.bundle()
    idx = b.item_index(item_id)
    if idx is None:
        raise data.Missing(f"item {item_id} is not in the bundle")
    out = {}
    for kind in ("cf", "content"):
        used, scored = b.similar(idx, kind=kind, n=N)
        ids = b.items.set_index("item_idx").loc[scored.items, "item_id"].astype(str)
        local = catalogue.set_index("item_id").loc[ids, "item_idx"].to_numpy()
        out[used] = pd.DataFrame({"item_idx": local, "similarity": scored.scores})
    return out


def render() -> None:
    st.title("Item explorer")
    with data.section():
        catalogue = data.items()
        item = pick_item(catalogue)
        if item is None:
            return
        row = catalogue.iloc[item]
        st.markdown(f"### {row['title']} (`{row['item_id']}`)")
        st.caption(f"categories: {row['categories'] or '–'} · {row['users']:,} users")
        source = st.radio(
            "Neighbours from",
            ["pipeline outputs", "serving bundle"],
            horizontal=True,
            key="neighbour_source",
        )
        left, right = st.columns(2)
        if source == "serving bundle":
            with data.section():
                found = neighbours_from_bundle(str(row["item_id"]), catalogue)
                for col, (kind, frame) in zip((left, right), found.items(), strict=False):
                    col.subheader(f"{kind} neighbours (bundle)")
                    col.dataframe(named(frame, catalogue), hide_index=True, key=f"b_{kind}")
        else:
            with left, data.section():
                st.subheader("Collaborative neighbours (ALS)")
                emb = data.embedding("als")
                nn = tables.nearest(emb.unit @ emb.unit[item], emb.known, item, N)
                if nn.empty:
                    st.info("No ALS factors for this item (no history in the training fold).")
                else:
                    st.dataframe(named(nn, catalogue), hide_index=True, key="cf")
            with right, data.section():
                st.subheader("Content neighbours (TF-IDF)")
                sims, known = data.content_similarity(item)
                nn = tables.nearest(sims, known, item, N)
                st.dataframe(named(nn, catalogue), hide_index=True, key="content")
        with data.section():
            events = data.item_events(item)
            st.subheader("Who interacts with it")
            trend = tables.popularity_trend(events)
            st.plotly_chart(figures.item_trend(trend, str(row["title"])), key="trend")
            mix = events["event"].astype(str).value_counts().rename("events")
            st.dataframe(mix, key="event_mix")


if __name__ == "__main__":
    render()
