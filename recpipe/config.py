"""Typed, validated configuration blocks read from ``params.yaml``.

Every stage declares in ``dvc.yaml`` the params sections it reads and loads each with
:func:`load_params` into a pydantic model that rejects unknown keys, so a misspelled key fails
loudly with its full dotted name instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

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


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the whole params file (composed from ``conf/`` by ``dvc exp run``)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found (run from the project root)")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def section(params: dict[str, Any], key: str, source: str = PARAMS_FILE) -> Any:
    """Return the value at dotted ``key`` (e.g. ``candidates.als``) or raise naming the key."""
    node: Any = params
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            missing = ".".join(key.split(".")[: i + 1])
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
                problems.append(f"{full}: unknown key")
            else:
                problems.append(f"{full}: {err['msg']}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


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


def load_params(key: str, model: type[T] | Any, path: str | Path = PARAMS_FILE) -> T:
    """Load and validate the params block at dotted ``key`` from ``path``."""
    params = read_params(path)
    return parse(section(params, key, str(path)), model, key, str(path))
