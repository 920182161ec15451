"""Where each artefact of the pipeline lives, and how fitted models are saved and loaded.

Layout (the folders come from ``dvc.yaml``; the names inside them are fixed here):

- candidates: ``<candidates>/<fold>/<model>.parquet`` for ``valid`` and ``test``,
  ``<candidates>/extra/<model>/<fold>.parquet`` for the extra ranker folds;
- fitted candidate models: ``<models>/<model>/<fold>/model.json`` + ``model.npz``, with the
  stage's ``meta.json`` beside them (``"enabled": false`` when the model was switched off
  and nothing was fitted);
- the rating model: ``<rating dir>/model.json`` + ``model.npz`` (+ side files), ``meta.json``.

Models are written through :mod:`recpipe.persist` (JSON manifest and plain arrays, never
pickle), so pulling a model from a shared remote and loading it cannot run code.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from recpipe.folds import FOLDS
from recpipe.models.base import Recommender
from recpipe.models.registry import model_class
from recpipe.persist import ArtifactError, files_of, load, read_manifest, save

EXTRA_DIR = "extra"
"""Where, under the candidates folder, the extra ranker folds' candidates go:
``extra/<model>/<fold>.parquet``, one folder per model, so that each ``candidates@<model>``
stage owns its own folder whatever the number of folds (a DVC output cannot depend on it)."""

MODEL_STEM = "model"
"""File stem of a saved model inside its folder (``model.json``, ``model.npz``)."""

RATING_KIND = "rating"
_RATING_CLASS = "recpipe.rating"
"""Module that defines the rating model (imported before one is loaded)."""


def candidates_file(out: str | Path, fold: str, model: str) -> Path:
    """The candidates of ``model`` for ``fold``: ``<out>/<fold>/<model>.parquet`` for
    ``valid`` and ``test``, ``<out>/extra/<model>/<fold>.parquet`` for an extra ranker fold."""
    if fold in FOLDS:
        return Path(out) / fold / f"{model}.parquet"
    return Path(out) / EXTRA_DIR / model / f"{fold}.parquet"


def model_dir(models: str | Path, model: str, fold: str) -> Path:
    """The folder of ``model`` fitted on ``fold``: ``<models>/<model>/<fold>``."""
    return Path(models) / model / fold


def save_model(model: Any, directory: str | Path) -> None:
    """Save a fitted candidate model or rating model into ``directory`` (no pickle)."""
    kind = f"model:{model.name}" if isinstance(model, Recommender) else RATING_KIND
    save(model, Path(directory) / MODEL_STEM, kind)


def has_model(directory: str | Path) -> bool:
    return (Path(directory) / f"{MODEL_STEM}.json").is_file()


def remove_model(directory: str | Path) -> None:
    """Delete the saved model in ``directory`` (its ``meta.json`` stays), if there is one."""
    for path in files_of(Path(directory) / MODEL_STEM):
        path.unlink(missing_ok=True)


def load_model(directory: str | Path) -> Any:
    """Load the model saved in ``directory``: a candidate model (its class found through the
    model registry) or the rating model; :class:`ArtifactError` naming the file otherwise."""
    stem = Path(directory) / MODEL_STEM
    kind = read_manifest(stem).get("kind")
    expected: type
    if isinstance(kind, str) and kind.startswith("model:"):
        try:
            expected = model_class(kind.removeprefix("model:"))  # imports its module
        except KeyError as exc:
            raise ArtifactError(f"{stem}.json: {exc.args[0]}") from None
    elif kind == RATING_KIND:
        expected = importlib.import_module(_RATING_CLASS).HybridRating
    else:
        raise ArtifactError(f"{stem}.json: unknown kind of model {kind!r}")
    model = load(stem, kind)
    if type(model) is not expected:
        raise ArtifactError(
            f"{stem}.json: holds a {type(model).__name__}, its kind {kind!r} says "
            f"{expected.__name__}"
        )
    return model


def model_enabled(directory: str | Path) -> bool:
    """Whether the stage that wrote ``directory`` ran with its model enabled (its
    ``meta.json``); a folder without one counts as enabled."""
    meta = Path(directory) / "meta.json"
    return not (meta.exists() and json.loads(meta.read_text()).get("enabled") is False)


def load_optional_model(directory: str | Path) -> Any | None:
    """A fitted model, or None when its stage ran with the model disabled.

    Stages write ``meta.json`` beside every model; only a model whose ``meta.json`` says
    ``"enabled": false`` may be missing, anything else missing is an error.
    """
    directory = Path(directory)
    if has_model(directory):
        return load_model(directory)
    if not model_enabled(directory):
        return None
    raise ArtifactError(
        f"{directory / MODEL_STEM}.json: model file not found (and its meta.json does not say "
        "disabled)"
    )
