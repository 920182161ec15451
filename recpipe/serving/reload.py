"""Hot reload: which :class:`~recpipe.serving.service.Service` answers, and replacing it.

:class:`ServiceHolder` loads and warms a bundle in a background thread, builds a service
on it and swaps the reference in one assignment: a request that already holds the old
service finishes on it, the next one gets the new. A load that fails leaves the old one
serving and keeps the error (``/readyz``, ``/v1/version``). A poller thread looks at the
bundle's ``manifest.json`` every ``reload_interval`` seconds and reloads when it changed
(the bundle stage writes the manifest last). A manifest whose bundle failed to load is
tried again once per interval: a copy (``dvc pull``, rsync) may write the manifest before
the other files, and the bundle becomes loadable without the manifest changing again.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recpipe.log import get_logger

if TYPE_CHECKING:
    from recpipe.serving.bundle import Bundle
    from recpipe.serving.service import Service

log = get_logger("serve")


@dataclass
class ReloadStatus:
    """The last reload's outcome, for /readyz and /v1/version."""

    loaded_at: float | None = None
    load_seconds: float | None = None
    reloads: int = 0
    reloading: bool = False
    last_error: str | None = None
    last_error_at: float | None = None


def manifest_signature(path: Path) -> tuple[str | None, int, int] | None:
    """(bundle id, mtime, size) of ``path/manifest.json``; None while it is missing."""
    manifest = Path(path) / "manifest.json"
    try:
        stat = manifest.stat()
        bundle_id = json.loads(manifest.read_bytes()).get("bundle_id")
    except (OSError, ValueError, AttributeError):
        return None
    return (str(bundle_id) if bundle_id is not None else None, stat.st_mtime_ns, stat.st_size)


def settle_heap() -> None:
    """Take what is alive now (mostly the bundle: some 150,000 objects at MovieLens-1M
    shape) out of the garbage collector's full collections, which otherwise scan all of it
    every few hundred requests: a 60 ms pause in a 23 ms request (in process, 1M shape).
    Objects are still freed when nothing refers to them; a replaced bundle's reference
    cycles are collected at the next load, which first puts everything back in view."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ServiceHolder:
    """The current service and its replacement (see the module's docstring)."""

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], Bundle],
        build: Callable[[Bundle], Service],
        warm: bool = True,
        on_load: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._on_load = on_load or (lambda ok: None)
        self._load = load
        self._build = build
        self.warm = warm
        self.current: Service | None = None
        self.status = ReloadStatus()
        self._signature: tuple | None = None
        self._failed_signature: tuple | None = None
        self._failed_at = 0.0  # time.monotonic() of the last failed load
        self._lock = threading.Lock()  # one reload at a time
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def _load_and_swap(self) -> Service:
        signature = manifest_signature(self.path)
        start = time.perf_counter()
        try:
            bundle = self._load(self.path)
            if self.warm:
                bundle.warm()
            service = self._build(bundle)
        except Exception as exc:  # any failure keeps the old bundle serving
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            self.status.last_error_at = time.time()
            self._failed_signature = signature
            self._failed_at = time.monotonic()
            self._on_load(False)
            log.error("bundle %s not loaded (a loaded one keeps serving): %s", self.path, exc)
            raise
        self.current = service  # the swap: one reference assignment
        self._signature = signature
        self._failed_signature = None
        self.status.loaded_at = time.time()
        self.status.load_seconds = round(time.perf_counter() - start, 3)
        self.status.reloads += 1
        self.status.last_error = None
        self.status.last_error_at = None
        self._on_load(True)
        log.info("bundle %s loaded in %.2f s", bundle.id, self.status.load_seconds)
        # after the status is brought up to date, not between the swap and it: a collection
        # takes tens of milliseconds, in which /readyz showed the new bundle beside the
        # previous load's error
        settle_heap()
        return service

    def load(self) -> Service:
        """Load now, in this thread (at start, and for ``POST /admin/reload?wait=true``)."""
        with self._lock:
            self.status.reloading = True
            try:
                return self._load_and_swap()
            finally:
                self.status.reloading = False

    def reload_in_background(self) -> bool:
        """Start a reload in a thread; False when one is already running."""
        if not self._lock.acquire(blocking=False):
            return False
        self.status.reloading = True

        def run() -> None:
            try:
                self._load_and_swap()
            except Exception:  # recorded in status by _load_and_swap
                pass
            finally:
                self.status.reloading = False
                self._lock.release()

        threading.Thread(target=run, name="bundle-reload", daemon=True).start()
        return True

    def changed_on_disk(self, retry_after: float | None = None) -> bool:
        """Whether the manifest differs from the loaded bundle's. The manifest of the last
        load that failed counts as changed again ``retry_after`` seconds after that
        failure (None: only when the manifest changes)."""
        signature = manifest_signature(self.path)
        if signature is None or signature == self._signature:
            return False
        if signature != self._failed_signature:
            return True
        return retry_after is not None and time.monotonic() - self._failed_at >= retry_after

    def start_polling(self, interval: float) -> None:
        if interval <= 0 or self._poller is not None:
            return

        def poll() -> None:
            while not self._stop.wait(interval):
                if self.changed_on_disk(retry_after=interval) and self.reload_in_background():
                    log.info("bundle %s changed on disk: reloading", self.path)

        self._poller = threading.Thread(target=poll, name="bundle-poll", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None
