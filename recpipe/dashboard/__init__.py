"""The dashboard: a Streamlit app over what the pipeline (and the serving bundle) wrote.

``python -m recpipe.dashboard [--project DIR] [--port P]`` (or ``recpipe dashboard``) starts
it. Layout: ``app.py`` routes the pages (``st.navigation``), ``pages/`` holds one module per
page, ``data.py`` is the only module that reads files (and caches them), ``tables.py`` and
``figures.py`` are pure functions of frames (tested without Streamlit). It never retrains:
every number comes from an output of the pipeline.
"""
