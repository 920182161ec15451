"""recpipe.engine: how many worker processes, and blocks run in them as they run at home."""

from __future__ import annotations

import os
import threading

import pytest

from recpipe import engine
from recpipe.engine import PARALLEL_MAX_EVENTS, WORKERS, cpus, run_blocks, threads, workers
from recpipe.errors import ConfigError, DataError
from recpipe.models.base import in_threads


def test_workers_auto_uses_the_cpus_until_the_data_is_large() -> None:
    assert workers(1_000, {}) == cpus()
    assert workers(PARALLEL_MAX_EVENTS, {WORKERS: "auto"}) == cpus()
    assert workers(PARALLEL_MAX_EVENTS + 1, {}) == 1
    assert workers(PARALLEL_MAX_EVENTS + 1, {WORKERS: " AUTO "}) == 1
    # an explicit number holds at any size
    assert workers(10**9, {WORKERS: "3"}) == 3
    assert workers(10, {WORKERS: "1"}) == 1


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_workers_setting_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"RECPIPE_WORKERS='{value}': expected 'auto'"):
        workers(10, {WORKERS: value})


def _square(x: int) -> int:
    return x * x


def _where(_: int) -> tuple[int, int, int]:
    """The process, the thread share and the threads in_threads used, seen from a block."""
    idents: set[int] = set()
    lock = threading.Lock()

    def note(_: int) -> None:
        with lock:
            idents.add(threading.get_ident())

    in_threads(note, list(range(8)), 4)
    return os.getpid(), threads(), len(idents)


def _fail(x: int) -> int:
    if x == 3:
        raise DataError("bad block", file="blocks.parquet", row=x)
    return x


def _die(x: int) -> int:
    if x == 1:
        os._exit(9)  # as the kernel's out-of-memory killer would end it
    return x


def test_blocks_come_back_in_order_from_worker_processes() -> None:
    blocks = list(range(23))
    assert run_blocks(_square, blocks, 3) == [b * b for b in blocks]
    assert run_blocks(_square, blocks, 1) == [b * b for b in blocks]
    assert run_blocks(_square, [], 4) == []


def test_workers_are_other_processes_with_a_share_of_the_threads() -> None:
    seen = run_blocks(_where, list(range(4)), 2)
    assert all(pid != os.getpid() for pid, _, _ in seen)
    share = max(1, cpus() // 2)
    assert {t for _, t, _ in seen} == {share}
    # the models' block threads stay within a worker's share
    assert all(used <= share for _, _, used in seen)
    # at home: every CPU, and one block runs where it is called
    assert threads() == cpus()
    [(pid, share, used)] = run_blocks(_where, [0], 4)
    assert (pid, share) == (os.getpid(), cpus()) and used <= min(cpus(), 4)


def test_an_error_in_a_block_is_raised_with_its_type_and_message() -> None:
    with pytest.raises(DataError, match=r"file blocks\.parquet, row 3: bad block"):
        run_blocks(_fail, list(range(6)), 2)


def test_a_worker_that_dies_is_reported_with_what_to_set() -> None:
    with pytest.raises(RuntimeError, match="RECPIPE_WORKERS=1") as err:
        run_blocks(_die, list(range(4)), 2)
    assert "out of memory" in str(err.value)
    # the stage's own process is unharmed: the next pool works
    assert run_blocks(_square, [1, 2, 3], 2) == [1, 4, 9]
    assert engine._share is None
