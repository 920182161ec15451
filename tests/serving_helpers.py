"""Helpers the serving tests share: a real ``redis-server`` on a free port, a free port,
and building a real bundle from the tiny pipeline (no fake bundle format)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A real redis-server on a free local port (no persistence); yields its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(
            "redis-server is not installed: apt-get install -y redis-server (.ci/run does)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def tiny_bundle(tiny_repo: Path) -> Path:
    """The bundle of the tiny baseline (``dvc exp run -S +experiment=tiny`` runs the
    bundle stage with the rest). ``RECPIPE_TEST_REPO`` may name an already built tiny
    repository instead, to iterate on the serving tests without rebuilding it."""
    bundle = tiny_repo / "models" / "bundle"
    if not (bundle / "manifest.json").is_file():
        raise AssertionError(f"{bundle}: the tiny baseline has no bundle")
    return bundle


def copy_bundle(src: Path, dst: Path, bundle_id: str | None = None) -> Path:
    """A copy of a real bundle; ``bundle_id`` gives the copy another id (a second bundle
    for reload tests, as a rebuild from other inputs would)."""
    import json

    shutil.copytree(src, dst)
    if bundle_id is not None:
        manifest = json.loads((dst / "manifest.json").read_text())
        manifest["bundle_id"] = bundle_id
        (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst
