"""One module per dashboard page; each renders when Streamlit runs it as a script."""
