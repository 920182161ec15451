"""Typed, validated configuration blocks read from ``params.yaml``.

Every stage declares in ``dvc.yaml`` the params sections it reads and loads each with
:func:`load_params` into a pydantic model that rejects unknown keys, so a misspelled key fails
loudly with its full dotted name, and the nearest valid key, instead of being silently
ignored.
"""

from __future__ import annotations

import copy
import difflib
import io
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from recpipe.errors import ConfigError

T = TypeVar("T")

PARAMS_FILE = "params.yaml"


class Config(BaseModel):
    """Base of every config block: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CONFIG_TYPES[f"{cls.__module__}:{cls.__qualname__}"] = cls


_CONFIG_TYPES: dict[str, type[Config]] = {}
"""Every config class by ``module:qualname``: saved models name their config's class, and
loading one looks it up here (never importing what a file names)."""


def config_type(name: str) -> type[Config] | None:
    """The config class registered as ``module:qualname``, or None."""
    return _CONFIG_TYPES.get(name)


# libyaml's parser where PyYAML was built with it (its wheels are): the same safe
# constructor and resolver, so the same values, in about a tenth of the time
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_READ: dict[bytes, dict[str, Any]] = {}
"""The params file's last text parsed in this process, and what it gave: a stage loads
several blocks of one file."""


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the whole params file (composed from ``conf/`` by ``dvc exp run``); a copy the
    caller may change."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found (run from the project root)") from None
    data = _READ.get(text)
    if data is None:
        stream = io.BytesIO(text)
        stream.name = str(path)  # (named: an error gives the file, line and column)
        try:
            data = yaml.load(stream, Loader=_LOADER) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        _READ.clear()
        _READ[text] = data
    return copy.deepcopy(data)


_REQUIRED = object()


def section(
    params: dict[str, Any], key: str, source: str = PARAMS_FILE, default: Any = _REQUIRED
) -> Any:
    """Return the value at dotted ``key`` (e.g. ``candidates.als``) or raise naming the key;
    with ``default``, that value where a mapping on the path leaves the key out (a block
    on the path that is no mapping is still an error)."""
    node: Any = params
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            block = ".".join(parts[:i])
            raise ConfigError(f"{source}: params key {block!r} is not a mapping of settings")
        if part not in node:
            if default is not _REQUIRED:
                return default
            missing = ".".join(parts[: i + 1])
            raise ConfigError(f"{source}: missing params key {missing!r}")
        node = node[part]
    return node


def parse(value: Any, model: type[T] | Any, key: str, source: str = PARAMS_FILE) -> T:
    """Validate ``value`` as ``model`` (a pydantic model or any type pydantic can check)."""
    try:
        return TypeAdapter(model).validate_python(value)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(_key_path(value, err["loc"]))
            full = f"{key}.{loc}" if loc else key
            if err["type"] == "extra_forbidden":
                known = _fields_at(model, err["loc"][:-1])
                prefix = full.rpartition(".")[0]
                problems.append(f"{full}: {unknown_key_hint(str(err['loc'][-1]), known, prefix)}")
            else:
                problems.append(f"{full}: {err['msg']}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def unknown_key_hint(key: str, known: Iterable[str], prefix: str = "") -> str:
    """``unknown key`` plus the nearest valid key (a misspelling), else the valid keys.

    Hydra answers ``-S split.n_tset=2`` with advice to write ``+split.n_tset=2``, which adds
    the misspelled key instead of fixing it; this message is where that key ends up.
    """
    known = sorted(set(known) - {key})
    dotted = [f"{prefix}.{k}" if prefix else k for k in known]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if close:
        nearest = f"{prefix}.{close[0]}" if prefix else close[0]
        return f"unknown key (did you mean {nearest}?)"
    if dotted:
        return "unknown key (valid keys: " + ", ".join(dotted) + ")"
    return "unknown key"


def _fields_at(model: Any, loc: tuple[Any, ...]) -> set[str]:
    """The field names pydantic accepts at error location ``loc`` of ``model`` (empty when
    the location cannot be followed through the type), union tags in ``loc`` included."""
    tp = _unwrap(model)
    for part in loc:
        if _is_model(tp):
            field = tp.model_fields.get(part)
            if field is None:
                return set()
            tp = _unwrap(field.annotation)
        elif get_origin(tp) in (Union, types.UnionType):
            members = [m for m in map(_unwrap, get_args(tp)) if _is_model(m)]
            tagged = [m for m in members if part in _tags(m) or part == m.__name__]
            if len(tagged) != 1:
                return set()
            tp = tagged[0]
        elif get_origin(tp) in (dict, Mapping) and len(get_args(tp)) == 2:
            tp = _unwrap(get_args(tp)[1])
        elif get_origin(tp) in (list, tuple) and get_args(tp):
            tp = _unwrap(get_args(tp)[0])
        else:
            return set()
    return set(tp.model_fields) if _is_model(tp) else set()


def _unwrap(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and without ``None`` in an optional."""
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tags(model: type[BaseModel]) -> set[Any]:
    """The values of ``model``'s literal fields (a discriminated union's tag is one)."""
    return {
        value
        for field in model.model_fields.values()
        if get_origin(field.annotation) is Literal
        for value in get_args(field.annotation)
    }


def _key_path(value: Any, loc: tuple[Any, ...]) -> list[str]:
    """The parts of a pydantic error location that are real keys of ``value``.

    pydantic also puts the chosen member of a union (its tag or class name) into locations;
    walking the input tells those apart from keys the user wrote.
    """
    parts: list[str] = []
    node = value
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif i == len(loc) - 1 or not isinstance(node, dict | list | tuple):
            node = None  # the offending key itself (unknown or missing)
        else:
            continue  # a union member's tag, not a key
        parts.append(str(part))
    return parts


def load_params(
    key: str, model: type[T] | Any, path: str | Path = PARAMS_FILE, default: Any = _REQUIRED
) -> T:
    """Load and validate the params block at dotted ``key`` from ``path``; with ``default``,
    that value where the file leaves the key out (a single setting of a block whose keys
    all have defaults, as a block model would fill it; see :func:`section`)."""
    params = read_params(path)
    return parse(section(params, key, str(path), default), model, key, str(path))
