"""Atomic file output: write to a temporary file beside the target, then rename.

A run that fails half-way therefore never leaves a half-written file, and the previous
output stays in place until the new one is complete. A run killed outright (``kill -9``)
can leave its temporary file behind, inside what may be a DVC-tracked output folder: the
next write of the same target removes such leftovers first, so they never reach the next
``dvc.lock``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd


def _default_mode(path: Path) -> None:
    """mkstemp creates files readable by the owner only; outputs get the usual mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def temp_beside(target: Path, suffix: str = "") -> Path:
    """A new temporary file next to ``target`` (same folder, so the rename is atomic), with
    the usual mode, named ``.<name>.<pid>.<random><suffix>.tmp``; first removes the
    temporaries of ``target`` that a killed earlier write left (those whose process is gone,
    so a concurrent writer's file is never touched)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    for stale in glob.glob(glob.escape(str(target.parent / prefix)) + "*.tmp"):
        pid = Path(stale).name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and Path(stale).is_file():
            Path(stale).unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{prefix}{os.getpid()}.", suffix=suffix + ".tmp", dir=target.parent
    )
    os.close(fd)
    _default_mode(Path(tmp))
    return Path(tmp)


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (ours included)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or not a pid at all: leave its file alone
    return True


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success."""
    tmp_path = temp_beside(Path(target), suffix)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pd.DataFrame, target: str | os.PathLike[str]) -> None:
    """Write ``df`` to parquet atomically (no index, deterministic bytes for equal frames)."""
    with atomic_path(target, ".parquet") as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj: Any, target: str | os.PathLike[str]) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically."""
    with atomic_path(target, ".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(text: str, target: str | os.PathLike[str]) -> None:
    """Write text atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_many(files: Mapping[str | os.PathLike[str], pd.DataFrame | bytes]) -> None:
    """Write several files so that either all are replaced or none is.

    A frame is written as parquet, bytes as they are. Every file is first written to its
    own temporary beside the target; only when all writes succeed are they renamed into
    place (renames are atomic and do not fail for space or encoding).
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for target, content in files.items():
            target = Path(target)
            tmp = temp_beside(target)
            staged.append((tmp, target))
            if isinstance(content, bytes):
                tmp.write_bytes(content)
            else:
                content.to_parquet(tmp, index=False)
        for tmp, target in staged:
            os.replace(tmp, target)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()
