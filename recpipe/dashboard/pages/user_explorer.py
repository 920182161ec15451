"""User explorer: pick a user; their history as a timeline, each model's top 10 of the test
fold side by side with the test-fold hits marked (from the pipeline's lists), and from the
serving bundle the ranker's list with its reasons and a "what if" box that adds items to
the session and ranks afresh."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from recpipe.dashboard import data, figures, tables

# users offered in the picker at once: a search narrows the rest (never every user); a
# comment, since Streamlit's "magic" prints a bare string of a page script
MAX_OPTIONS = 200


def pick_user(users: pd.DataFrame, evaluated: np.ndarray) -> int | None:
    query = st.sidebar.text_input("Search a user id", key="user_query")
    only_eval = st.sidebar.checkbox("Only users with a test target", value=True, key="only_eval")
    pool = users[users["user_idx"].isin(evaluated)] if only_eval else users
    if query:
        pool = pool[
            pool["user_id"].astype(str).str.contains(query.strip(), case=False, regex=False)
        ]
    st.sidebar.caption(f"{len(pool):,} users match; the first {MAX_OPTIONS} are listed.")
    options = pool.head(MAX_OPTIONS)
    if options.empty:
        st.warning(f"No user matches {query!r}.")
        return None
    ids = options["user_id"].astype(str).tolist()
    choice = st.sidebar.selectbox("User", ids, key="user")
    return int(options["user_idx"].to_numpy()[ids.index(choice)])


def history_section(user: int, catalogue: pd.DataFrame) -> pd.DataFrame:
    history, _ = data.test_fold()
    rows = history.get(user)
    rows = rows.assign(
        title=catalogue["title"].to_numpy()[rows["item_idx"].to_numpy()],
        categories=catalogue["categories"].to_numpy()[rows["item_idx"].to_numpy()],
    )
    st.subheader(f"History ({len(rows):,} events before the test fold)")
    if rows.empty:
        st.info("No history: a cold user.")
    else:
        st.plotly_chart(figures.user_timeline(rows.tail(300)), key="timeline")
    return rows


def lists_section(user: int, catalogue: pd.DataFrame) -> None:
    _, targets = data.test_fold()
    hits = set(targets.get(user).query("relevant")["item_idx"].astype(int))
    lists = {m: by.get(user) for m, by in data.top_lists().items()}
    st.subheader("Top 10 of every model (test fold), ✓ = a test-fold hit")
    counts = tables.hit_counts(lists, hits)
    st.caption(
        f"{len(hits)} relevant test item(s): "
        + ", ".join(catalogue["title"].to_numpy()[sorted(hits)][:10])
        + " · hits in top 10: "
        + ", ".join(f"{m} {c}" for m, c in counts.items())
    )
    st.dataframe(tables.top_lists(lists, catalogue, hits), key="top_lists")


def bundle_section(user_id: str, history: pd.DataFrame, catalogue: pd.DataFrame) -> None:
    b = data.bundle()
    st.subheader("The service's ranked list, with reasons (serving bundle)")
    idx = b.user_index(user_id)
    if idx is None:
        st.info(
            f"User {user_id} is not in the bundle: the service would answer with popular items."
        )
        return
    scored = b.cached(idx, model="ranker")
    recent = b.history(idx)
    hist_items = recent["item_idx"].to_numpy(np.int64)
    if scored is None:
        scored = b.rank_fresh(recent, user_idx=idx)
    st.dataframe(scored_table(b, scored, hist_items), hide_index=True, key="served")

    st.subheader("What if: add items to the session and rank afresh")
    query = st.text_input("Find items to add (title or id)", key="whatif_query")
    pool = b.items
    if query:
        q = query.strip().lower()
        pool = pool[
            pool["title"].astype(str).str.lower().str.contains(q, regex=False)
            | pool["item_id"].astype(str).str.lower().eq(q)
        ]
    labels = [f"{r.title} ({r.item_id})" for r in pool.head(MAX_OPTIONS).itertuples()]
    added = st.multiselect("Items added to the session (most recent last)", labels, key="added")
    if added:
        picked = pool.head(MAX_OPTIONS).iloc[[labels.index(a) for a in added]]["item_idx"]
        start = int(recent["timestamp"].max()) + 1 if len(recent) else 0
        fresh = pd.DataFrame(
            {"item_idx": picked.to_numpy(np.int64), "timestamp": start + np.arange(len(picked))}
        )
        session = pd.concat([recent[["item_idx", "timestamp"]], fresh], ignore_index=True)
        new = b.rank_fresh(session, user_idx=idx)
        st.dataframe(
            scored_table(b, new, session["item_idx"].to_numpy(np.int64)),
            hide_index=True,
            key="whatif",
        )


def scored_table(b, scored, hist_items: np.ndarray, n: int = 10) -> pd.DataFrame:
    """Rank, title, score and the service's reasons of the top ``n`` of a ``Scored``."""
    items = b.items.set_index("item_idx")
    rows = []
    for pos, (item, score) in enumerate(zip(scored.items[:n], scored.scores[:n], strict=True)):
        # the bundle explains only its first Bundle.EXPLAIN items of a fresh list
        explained = scored.contributions or []
        contrib = explained[pos] if pos < len(explained) else None
        reasons = b.reasons(hist_items, int(item), contrib)
        rows.append(
            {
                "rank": pos + 1,
                "title": items.loc[int(item), "title"],
                "score": float(score),
                "reasons": "; ".join(r.text for r in reasons),
            }
        )
    return pd.DataFrame(rows)


def render() -> None:
    st.title("User explorer")
    with data.section():
        users = data.users()
        catalogue = data.items()
        user = pick_user(users, data.evaluation_users())
        if user is None:
            return
        user_id = str(users["user_id"].to_numpy()[user])
        st.markdown(f"### User `{user_id}` (index {user})")
        history = pd.DataFrame()
        with data.section():
            history = history_section(user, catalogue)
        with data.section():
            lists_section(user, catalogue)
        with data.section():
            bundle_section(user_id, history, catalogue)


if __name__ == "__main__":
    render()
