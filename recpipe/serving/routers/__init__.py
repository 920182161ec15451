"""One router per resource of the HTTP API (FastAPI's "Bigger Applications" layout)."""
