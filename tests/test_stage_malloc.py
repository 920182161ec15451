"""Stages have glibc's malloc keep freed memory instead of mapping every large block afresh
(``recpipe.stage.keep_freed_memory``, applied by ``stages/__init__.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recpipe.stage import SYSTEM_MALLOC, keep_freed_memory
from tests.conftest import e2e_env

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import ctypes, sys
if sys.argv[1] == "stage":
    import stages
import numpy as np

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = Info
block = np.ones(8 << 20)  # 64 MiB
print(mallinfo2().hblkhd)  # bytes in blocks mapped on their own
"""


def mapped_bytes(kind: str, **env: str) -> int:
    base = {k: v for k, v in e2e_env().items() if k != SYSTEM_MALLOC}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, kind],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_a_stage_process_takes_large_blocks_from_the_heap() -> None:
    assert mapped_bytes("stage") < 8 << 20
    assert mapped_bytes("stage", **{SYSTEM_MALLOC: "1"}) >= 64 << 20
    assert mapped_bytes("plain") >= 64 << 20  # glibc's default, for contrast


def test_keep_freed_memory_is_turned_off_by_the_environment() -> None:
    assert SYSTEM_MALLOC in keep_freed_memory({SYSTEM_MALLOC: "1"})
