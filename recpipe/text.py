"""Items as text: one document per catalogue item, for the content model and features.

A document is the item's title, its text and one ``cat_<name>`` token per category, so
that a category is a single term however many words its name has.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

NON_WORD = re.compile(r"\W+")
"""Runs of characters that are not word characters (collapsed to ``_`` inside a token)."""


def item_documents(items: pd.DataFrame) -> list[str]:
    """One document per item row: title, text and ``cat_<name>`` tokens of its categories."""
    n = len(items)

    def column(name: str) -> pd.Series:
        if name not in items.columns:
            return pd.Series([""] * n, index=items.index)
        return items[name].fillna("").astype(str)

    cats = items["categories"] if "categories" in items.columns else pd.Series([None] * n)
    cat_tokens = [_category_tokens(c) for c in cats]
    title, text = column("title").tolist(), column("text").tolist()
    return [f"{t} {x} {c}" for t, x, c in zip(title, text, cat_tokens, strict=True)]


def _category_tokens(cats: object) -> str:
    """``cat_<name>`` tokens, names lower-cased with non-word runs as ``_`` (one token each)."""
    if isinstance(cats, str):
        cats = [cats]
    elif cats is None or np.isscalar(cats) or pd.api.types.is_scalar(cats):
        return ""  # missing (None, NaN, pd.NA)
    names = (NON_WORD.sub("_", str(c).strip().lower()).strip("_") for c in cats)
    return " ".join(f"cat_{n}" for n in names if n)
