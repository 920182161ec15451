"""One logging setup for every stage: messages to stderr, no timestamps in outputs."""

from __future__ import annotations

import logging


def get_logger(name: str) -> logging.Logger:
    """A logger writing ``stage: message`` lines to stderr."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        # faiss reports which CPU build it loaded at INFO; that is noise in stage logs.
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    return logging.getLogger(name)
