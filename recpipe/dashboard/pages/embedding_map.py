"""Embedding map: the ALS item factors of the test fold in 2-D (PCA), K-means clusters
named by their dominant categories; hover for title, categories and popularity; filter by
cluster or category; search an item to highlight it and its nearest neighbours."""

from __future__ import annotations

import streamlit as st

from recpipe.dashboard import data, figures, tables

MAX_MATCHES = 50


def render() -> None:
    st.title("Embedding map")
    with data.section():
        emb = data.embedding("als")
        frame = emb.frame
        st.caption(
            f"{len(frame):,} items with ALS factors (models/als/test); PCA of the unit-length "
            f"factors explains {emb.explained[0]:.0%} + {emb.explained[1]:.0%} of the variance; "
            "clusters are K-means on the full factors, named by the categories more common in "
            "them than overall."
        )
        c1, c2, c3 = st.columns([3, 2, 3])
        clusters = list(dict.fromkeys(frame["cluster"]))
        picked = c1.multiselect("Clusters", clusters, key="clusters")
        cats = sorted({c for text in frame["categories"] for c in text.split(", ") if c})
        cat = c2.selectbox("Category", ["(all)", *cats], key="category")
        query = c3.text_input("Search an item (id or title)", key="item_query")
        shown = frame
        if picked:
            shown = shown[shown["cluster"].isin(picked)]
        if cat != "(all)":
            shown = shown[shown["categories"].str.split(", ").apply(lambda cs: cat in cs)]
        item, near = None, []
        if query:
            q = query.strip().lower()
            hits = frame[
                frame["title"].str.lower().str.contains(q, regex=False)
                | frame["item_idx"].map(lambda i: str(i)).eq(q)
                | data.items().loc[frame["item_idx"], "item_id"].str.lower().eq(q).to_numpy()
            ].head(MAX_MATCHES)
            if hits.empty:
                st.warning(f"No mapped item matches {query!r}.")
            else:
                labels = [f"{r.title} ({r.item_idx})" for r in hits.itertuples()]
                choice = st.selectbox("Matching items", labels, key="item_pick")
                item = int(hits.iloc[labels.index(choice)]["item_idx"])
                k = st.slider("Neighbours", 1, 30, 10, key="k")
                sims = emb.unit @ emb.unit[item]
                nn = tables.nearest(sims, emb.known, item, k)
                near = nn["item_idx"].tolist()
        st.plotly_chart(figures.embedding_map(shown, near, item), key="map")
        if item is not None:
            cat_table = data.items().set_index("item_idx")
            nn = nn.assign(
                title=cat_table.loc[nn["item_idx"], "title"].to_numpy(),
                categories=cat_table.loc[nn["item_idx"], "categories"].to_numpy(),
                users=cat_table.loc[nn["item_idx"], "users"].to_numpy(),
            )
            st.subheader(f"Nearest to {cat_table.loc[item, 'title']} (cosine of ALS factors)")
            st.dataframe(nn, hide_index=True, key="neighbours")
        sizes = frame.groupby("cluster", sort=False).size().rename("items").reset_index()
        st.dataframe(sizes, hide_index=True, key="clusters_table")


if __name__ == "__main__":
    render()
