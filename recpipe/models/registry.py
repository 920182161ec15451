"""Model name -> implementing class, imported lazily.

Lazy imports keep each ``candidates@<name>`` stage depending only on its own module (and on
the shared base), so editing one model's code re-runs only that model's stage.
Adding a model: one module, one ``conf/candidates/<name>.yaml``, one line here.
"""

from __future__ import annotations

import importlib

from recpipe.models.base import Recommender

MODELS: dict[str, str] = {
    "popularity": "recpipe.models.popularity:Popularity",
    "itemknn": "recpipe.models.itemknn:ItemKNN",
    "svd": "recpipe.models.svd:SVD",
    "als": "recpipe.models.als:ALS",
    "tfidf": "recpipe.models.tfidf:TfIdf",
    "ease": "recpipe.models.ease:EASE",
    "seqknn": "recpipe.models.seqknn:SeqKNN",
}


def model_class(name: str) -> type[Recommender]:
    """The class registered under ``name``."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(MODELS)}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)
