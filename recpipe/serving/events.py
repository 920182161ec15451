"""The service's durable writes: the event log (JSON lines in a landing folder, one
``fsync`` per event, files rotated by size and age) and the deletion list (erased users).

Both are read back by ``data=files`` ingest (:func:`recpipe.sources.userfiles.load_landing`,
:func:`~recpipe.sources.userfiles.load_deletions`, where their format is defined), so the
next ``dvc repro`` learns from the events and forgets the erased users. Each process writes
its own event files (the pid is in the name), so replicas and workers never interleave
lines; a line is written with a single ``write`` on a file opened for appending.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from recpipe.sources.userfiles import load_deletions


def _fsync_dir(folder: Path) -> None:
    """Make a file's creation durable (its directory entry), not only its bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass(frozen=True)
class EventRecord:
    """One event as the landing files hold it (``recpipe.sources.userfiles.EVENT_FIELDS``)."""

    user_id: str
    item_id: str
    event: str
    timestamp: int
    rating: float | None = None

    def line(self) -> bytes:
        obj = {
            "user_id": self.user_id,
            "item_id": self.item_id,
            "event": self.event,
            "timestamp": self.timestamp,
            "rating": self.rating,
        }
        # json escapes newlines inside strings: one record is always one line
        return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class EventLog:
    """Append-only event files ``events-<UTC time>-<pid>-<n>.jsonl`` in ``folder``.

    A new file starts past ``rotate_bytes`` or ``rotate_seconds``, and when the current one
    was moved or deleted (an operator archiving what ingest has read). Thread-safe.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        rotate_bytes: int = 64 * 2**20,
        rotate_seconds: float = 3600.0,
        fsync: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened = 0.0
        self._size = 0
        self._count = 0

    @property
    def path(self) -> Path | None:
        """The file being written (None before the first event)."""
        return self._path

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = self.folder / f"events-{stamp}-{os.getpid()}-{self._count}.jsonl"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.fsync:
            _fsync_dir(self.folder)
        self._path = path
        self._opened = time.monotonic()
        self._size = os.fstat(self._fd).st_size

    def _needs_new_file(self, extra: int) -> bool:
        if self._fd is None:
            return True
        if self._size and self._size + extra > self.rotate_bytes:
            return True
        if time.monotonic() - self._opened > self.rotate_seconds:
            return True
        try:  # moved away or deleted under us: the name no longer holds our file
            return os.stat(self._path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return True

    def append(self, record: EventRecord) -> None:
        """Write one event; when ``fsync`` it is on disk when this returns."""
        data = record.line()
        with self._lock:
            if self._needs_new_file(len(data)):
                self._close()
                self._open()
            assert self._fd is not None
            _append(self._fd, data)
            if self.fsync:
                os.fsync(self._fd)
            self._size += len(data)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._close()


class DeletionList:
    """The erased users' list: one JSON line per erasure, appended and fsync'd."""

    def __init__(self, path: str | os.PathLike[str], fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()

    def append(self, user_id: str, timestamp: int | None = None) -> None:
        when = int(time.time()) if timestamp is None else timestamp
        line = json.dumps({"user_id": user_id, "timestamp": when}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _append(fd, line.encode())
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if new and self.fsync:
                _fsync_dir(self.path.parent)

    def read(self) -> set[str]:
        """Every user id on the list (none when the file does not exist yet)."""
        return load_deletions(self.path)
