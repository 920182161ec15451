"""Entry point of the dashboard (``streamlit run recpipe/dashboard/app.py``): page config
and routing only. Each page is one module of ``pages/``; see the package docstring."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from recpipe.dashboard import data

HERE = Path(__file__).resolve().parent

# (file under pages/, title, icon), in menu order; the first is the default page. (A comment,
# not a docstring: Streamlit's "magic" would print a bare string of the script on the page.)
PAGES: tuple[tuple[str, str, str], ...] = (
    ("overview.py", "Overview", ":material/dashboard:"),
    ("experiments.py", "Experiments", ":material/science:"),
    ("metrics.py", "Metrics", ":material/monitoring:"),
    ("embedding_map.py", "Embedding map", ":material/scatter_plot:"),
    ("user_explorer.py", "User explorer", ":material/person_search:"),
    ("item_explorer.py", "Item explorer", ":material/inventory_2:"),
    ("dataset.py", "Data", ":material/database:"),
)


def main() -> None:
    st.set_page_config(page_title="recpipe dashboard", page_icon="📊", layout="wide")
    pages = [
        st.Page(HERE / "pages" / file, title=title, icon=icon, default=i == 0)
        for i, (file, title, icon) in enumerate(PAGES)
    ]
    page = st.navigation(pages)
    st.sidebar.caption(f"project: `{data.project()}`")
    page.run()


if __name__ == "__main__":
    main()
