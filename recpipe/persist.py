"""Saving fitted objects without pickle: a JSON manifest beside plain array files.

Loading a pickle runs code chosen by whoever wrote the file, so an artefact pulled from a
shared DVC remote (or loaded by the service) must never be a pickle. Instead a fitted
object is written as

- ``<stem>.json``: the manifest: format name and version, the object's type, and its
  state as a tree in which every leaf is either a JSON value or a reference to data below;
- ``<stem>.npz``: every numpy array of the state (sparse matrices as their component
  arrays), read back with ``allow_pickle=False``;
- ``<stem>.<key>.parquet`` for a pandas table and ``<stem>.<key>.xgb.json`` for an XGBoost
  model (its own JSON format), when the state holds one.

Only types that declare themselves persistent can appear in a manifest: subclasses of
:class:`Persistent` and of :class:`recpipe.config.Config` register under ``module:name``
when their module is imported, and loading looks a type up in that table, never imports
what a file names. The state of a :class:`Persistent` object is its ``__dict__`` less its
``transient`` attributes (derived data such as a faiss index, rebuilt on demand); the
manifest records the shape and dtype of every array, and loading checks them, so a
truncated or mismatched file fails with a message naming the file and the key.

Bytes are deterministic: equal states give equal files (the npz members carry a fixed
date), so DVC sees an unchanged output as unchanged.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe.config import Config, config_type
from recpipe.errors import DataError
from recpipe.io import atomic_path, frame_parquet

FORMAT = "recpipe-object"
FORMAT_VERSION = 2
"""Bumped whenever the layout of the manifest or of a persisted class changes; files of
another version are refused with a message that says to rerun the stage."""

_TYPES: dict[str, type] = {}
"""``module:qualname`` -> class, filled as persistent classes are defined."""

_SPARSE = {
    "csr_matrix": sp.csr_matrix,
    "csc_matrix": sp.csc_matrix,
    "csr_array": sp.csr_array,
    "csc_array": sp.csc_array,
}

#: members of an npz carry this date so that equal arrays give equal bytes
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class ArtifactError(DataError):
    """A saved object cannot be read: missing, another format version, or inconsistent."""


def type_key(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class Persistent:
    """Mixin of objects that :func:`save` can write: their ``__dict__`` is their state.

    ``transient`` names attributes that are not saved (derived data); they are set to
    ``None`` on load, so the class must rebuild them on demand. ``_check_state`` runs after
    loading and raises :class:`ArtifactError` when the parts do not fit together.
    """

    transient: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _TYPES[type_key(cls)] = cls

    def _check_state(self) -> None:
        """Raise :class:`ArtifactError` if the loaded state is inconsistent (default: no check)."""


def register(cls: type) -> type:
    """Declare a class (for example a dataclass) persistent without the mixin."""
    _TYPES[type_key(cls)] = cls
    return cls


class _Writer:
    """Collects the arrays and side files of one object while its state is encoded."""

    def __init__(self, stem: Path) -> None:
        self.stem = stem
        self.arrays: dict[str, np.ndarray] = {}
        self.files: dict[Path, bytes] = {}

    def side_file(self, key: str, suffix: str) -> Path:
        """``<stem>.<key><suffix>``, the key without the ``root.`` every key starts with."""
        path = self.stem.with_name(f"{self.stem.name}.{key.removeprefix('root.')}{suffix}")
        if path in self.files:
            raise TypeError(f"{key}: two parts of the state map to {path.name}")
        return path

    def array(self, key: str, value: np.ndarray) -> dict[str, Any]:
        if value.dtype.hasobject:
            raise TypeError(f"{key}: object arrays cannot be saved without pickle")
        if key in self.arrays:
            raise TypeError(f"{key}: two parts of the state map to this key (a '.' in a name?)")
        # (not ascontiguousarray: it turns a 0-d array into a 1-d one)
        self.arrays[key] = value if value.flags.c_contiguous else np.array(value, order="C")
        return {"array": key, "dtype": value.dtype.str, "shape": list(value.shape)}

    def encode(self, value: Any, key: str) -> Any:
        # numpy first: np.float64 is a float and np.bool_ is not a bool
        if isinstance(value, np.ndarray | np.generic):
            return self.array(key, np.asarray(value)) | {"scalar": isinstance(value, np.generic)}
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return {"float": repr(value)}  # exact, and NaN/inf survive strict JSON
        if sp.issparse(value):
            kind = type(value).__name__
            if kind not in _SPARSE:  # coo, lil, dok, bsr: stored as CSR of the same family
                value = (
                    sp.csr_array(value) if isinstance(value, sp.sparray) else sp.csr_matrix(value)
                )
                kind = type(value).__name__
            return {
                "sparse": kind,
                "shape": list(value.shape),
                "data": self.array(f"{key}.data", value.data),
                "indices": self.array(f"{key}.indices", value.indices),
                "indptr": self.array(f"{key}.indptr", value.indptr),
            }
        if isinstance(value, Config):
            return {"config": type_key(type(value)), "value": value.model_dump(mode="json")}
        if isinstance(value, pd.DataFrame):
            path = self.side_file(key, ".parquet")
            buf = io.BytesIO()
            frame_parquet(value, buf, index=None)
            self.files[path] = buf.getvalue()
            return {"table": path.name, "rows": len(value)}
        if _is_xgboost(value):
            path = self.side_file(key, ".xgb.json")
            self.files[path] = bytes(value.get_booster().save_raw(raw_format="json"))
            return {"xgboost": type(value).__name__, "file": path.name}
        if isinstance(value, list | tuple):
            items = [self.encode(v, f"{key}.{i}") for i, v in enumerate(value)]
            return {"tuple" if isinstance(value, tuple) else "list": items}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise TypeError(f"{key}: only dicts with string keys can be saved")
            # pairs, not an object: the manifest's keys are sorted, a dict keeps its order
            return {"dict": [[k, self.encode(v, f"{key}.{k}")] for k, v in value.items()]}
        cls = type(value)
        if _TYPES.get(type_key(cls)) is cls:
            skip = set(getattr(cls, "transient", ()))
            state = {k: v for k, v in vars(value).items() if k not in skip}
            return {
                "object": type_key(cls),
                "state": {k: self.encode(v, f"{key}.{k}") for k, v in state.items()},
            }
        raise TypeError(f"{key}: cannot save a {type_key(cls)} (not declared persistent)")


class _Reader:
    """Decodes a manifest's state tree against its arrays and side files."""

    def __init__(self, manifest: Path, arrays: Any) -> None:
        self.manifest = manifest
        self.arrays = arrays

    def fail(self, key: str, message: str) -> ArtifactError:
        return ArtifactError(f"{self.manifest}: key {key}: {message}")

    def array(self, node: dict[str, Any]) -> np.ndarray:
        key = node["array"]
        if self.arrays is None or key not in self.arrays.files:
            raise self.fail(key, "array missing from the .npz file")
        value = self.arrays[key]
        if list(value.shape) != node["shape"] or value.dtype.str != node["dtype"]:
            raise self.fail(
                key,
                f"array of shape {list(value.shape)} and dtype {value.dtype.str}, the manifest "
                f"says {node['shape']} and {node['dtype']}",
            )
        return value

    def lookup(self, name: str, key: str, config: bool = False) -> type:
        cls = config_type(name) if config else _TYPES.get(name)
        if cls is None:
            raise self.fail(
                key,
                f"unknown type {name!r} (not a persistent recpipe type, or its module is not "
                "imported: load models through recpipe.artifacts.load_model)",
            )
        return cls

    def decode(self, node: Any, key: str) -> Any:
        try:
            return self._decode(node, key)
        except ArtifactError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # a malformed manifest (hand-edited, truncated, or not ours)
            raise self.fail(key, f"unreadable value ({type(exc).__name__}: {exc})") from None

    def _decode(self, node: Any, key: str) -> Any:
        if node is None or isinstance(node, bool | int | str):
            return node
        if not isinstance(node, dict) or not node:
            raise self.fail(key, f"unreadable value {node!r}")
        if "float" in node:
            return float(node["float"])
        if "array" in node:
            value = self.array(node)
            return value[()] if node.get("scalar") else value
        if "sparse" in node:
            cls = _SPARSE.get(node["sparse"])
            if cls is None:
                raise self.fail(key, f"unknown sparse format {node['sparse']!r}")
            data, indices, indptr = (self.array(node[p]) for p in ("data", "indices", "indptr"))
            try:
                m = cls((data, indices, indptr), shape=tuple(node["shape"]))
                m.indices, m.indptr = indices, indptr  # the constructor may narrow them
                # every index within the shape: scipy would read out of bounds otherwise
                m.check_format(full_check=True)
            except (ValueError, TypeError) as exc:
                raise self.fail(key, f"inconsistent sparse matrix ({exc})") from None
            return m
        if "config" in node:
            return self.lookup(node["config"], key, config=True).model_validate(node["value"])
        if "table" in node:
            return pd.read_parquet(self.side_file(node["table"], key))
        if "xgboost" in node:
            return _load_xgboost(node["xgboost"], self.side_file(node["file"], key))
        if "list" in node:
            return [self.decode(v, f"{key}.{i}") for i, v in enumerate(node["list"])]
        if "tuple" in node:
            return tuple(self.decode(v, f"{key}.{i}") for i, v in enumerate(node["tuple"]))
        if "dict" in node:
            return {k: self.decode(v, f"{key}.{k}") for k, v in node["dict"]}
        if "object" in node:
            cls = self.lookup(node["object"], key)
            obj = cls.__new__(cls)
            obj.__dict__.update(dict.fromkeys(getattr(cls, "transient", ())))
            obj.__dict__.update({k: self.decode(v, f"{key}.{k}") for k, v in node["state"].items()})
            if isinstance(obj, Persistent):
                obj._check_state()
            return obj
        raise self.fail(key, f"unreadable value {node!r}")

    def side_file(self, name: str, key: str) -> Path:
        path = self.manifest.with_name(name)
        if not path.is_file():
            raise self.fail(key, f"file {path} missing")
        return path


def _is_xgboost(value: Any) -> bool:
    return type(value).__module__.startswith("xgboost.") and hasattr(value, "get_booster")


def _load_xgboost(kind: str, path: Path) -> Any:
    import xgboost

    if kind not in ("XGBRegressor", "XGBRanker", "XGBClassifier"):
        raise ArtifactError(f"{path}: unknown XGBoost model kind {kind!r}")
    model = getattr(xgboost, kind)()
    model.load_model(bytearray(path.read_bytes()))
    return model


def _write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """An ``.npz`` (numpy's zip of ``.npy`` members) streamed into ``path``; its bytes depend
    only on the arrays (fixed dates and attributes), and no second copy is held in memory."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.create_system = 3  # the same bytes on every platform
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arrays[key], allow_pickle=False)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _with(stem: Path, suffix: str) -> Path:
    """``<stem><suffix>``: the stem's own dots are part of its name (``model.v2`` + ``.json``)."""
    return stem.with_name(stem.name + suffix)


def files_of(stem: Path) -> Iterator[Path]:
    """Every file an object saved at ``stem`` consists of (manifest first)."""
    yield _with(stem, ".json")
    yield _with(stem, ".npz")
    pattern = glob.escape(stem.name)
    yield from sorted(stem.parent.glob(f"{pattern}.*.parquet"))
    yield from sorted(stem.parent.glob(f"{pattern}.*.xgb.json"))


def save(obj: Any, stem: str | os.PathLike[str], kind: str) -> None:
    """Write ``obj`` as ``<stem>.json`` + ``<stem>.npz`` (+ side files), atomically each.

    ``kind`` names what the object is (``model:als``, ``rating``); :func:`load` checks it.
    The manifest is written last and records the sha256 of every other file, so a reader
    never takes a manifest together with another save's data (a save killed half-way, or a
    race): :func:`load` refuses the mix. Side files of an earlier save at the same stem
    that this one does not write are removed.
    """
    stem = Path(stem)
    writer = _Writer(stem)
    state = writer.encode(obj, "root")
    digests: dict[str, str] = {}
    for path, data in writer.files.items():
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        digests[path.name] = hashlib.sha256(data).hexdigest()
    npz = _with(stem, ".npz")
    with atomic_path(npz) as tmp:
        _write_npz(writer.arrays, tmp)
        digests[npz.name] = _digest(tmp)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "files": digests,
        "root": state,
    }
    text = json.dumps(manifest, indent=1, sort_keys=True, allow_nan=False) + "\n"
    with atomic_path(_with(stem, ".json")) as tmp:
        tmp.write_text(text)
    for path in set(files_of(stem)) - {_with(stem, ".json"), npz, *writer.files}:
        path.unlink(missing_ok=True)


def read_manifest(stem: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an object saved at ``stem``, its format and version checked;
    :class:`ArtifactError` naming the file when it is missing or of another version."""
    path = _with(Path(stem), ".json")
    if not path.is_file():
        raise ArtifactError(f"{path}: saved model not found")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format version {version}, this recpipe reads version {FORMAT_VERSION}; "
            "rerun the stage that wrote it (dvc repro)"
        )
    return manifest


def load(stem: str | os.PathLike[str], kind: str | None = None) -> Any:
    """Read an object written by :func:`save`; :class:`ArtifactError` naming the file if the
    manifest is missing, of another format version or kind, or disagrees with its files.

    The types the manifest names must already be registered (their modules imported)."""
    stem = Path(stem)
    manifest = read_manifest(stem)
    path = _with(stem, ".json")
    if kind is not None and manifest.get("kind") != kind:
        raise ArtifactError(f"{path}: holds {manifest.get('kind')!r}, expected {kind!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or "root" not in manifest:
        raise ArtifactError(f"{path}: incomplete manifest (no file list or no state)")
    for name, digest in files.items():
        part = path.with_name(str(name))
        if part.parent != path.parent or not part.is_file():
            raise ArtifactError(f"{path}: file {part} missing")
        if _digest(part) != digest:
            raise ArtifactError(
                f"{path}: {part} is not the file this manifest was saved with (another "
                "save's, or a save that stopped half-way): rerun the stage that wrote it"
            )
    npz = _with(stem, ".npz")
    with ExitStack() as stack:
        arrays = stack.enter_context(np.load(npz, allow_pickle=False)) if npz.is_file() else None
        return _Reader(path, arrays).decode(manifest["root"], "root")
