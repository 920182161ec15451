"""recpipe.engine: how many worker processes, and blocks run in them as they run at home."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info

from recpipe import engine
from recpipe.engine import (
    FIT_PARALLEL_MAX_EVENTS,
    PARALLEL_MAX_EVENTS,
    WORKERS,
    cpus,
    even_cuts,
    map_shared,
    omp_threads,
    run_blocks,
    threads,
    workers,
)
from recpipe.errors import ConfigError, DataError
from recpipe.models.base import in_threads


def test_workers_auto_uses_the_cpus_until_the_data_is_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "cpus", lambda: 4)
    assert workers(1_000, {}) == 4
    assert workers(PARALLEL_MAX_EVENTS, {WORKERS: "auto"}) == 4
    assert workers(PARALLEL_MAX_EVENTS + 1, {}) == 1
    assert workers(PARALLEL_MAX_EVENTS + 1, {WORKERS: " AUTO "}) == 1
    # an explicit number holds at any size
    assert workers(10**9, {WORKERS: "3"}) == 3
    assert workers(10, {WORKERS: "1"}) == 1


def test_a_stage_can_set_its_own_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the default bound and up to the fit stages' own, two workers at most (what was
    measured at 25M events); past that, one."""
    monkeypatch.setattr(engine, "cpus", lambda: 4)
    assert PARALLEL_MAX_EVENTS < FIT_PARALLEL_MAX_EVENTS
    assert workers(PARALLEL_MAX_EVENTS, {}, FIT_PARALLEL_MAX_EVENTS) == 4
    assert workers(PARALLEL_MAX_EVENTS + 1, {}, FIT_PARALLEL_MAX_EVENTS) == 2
    assert workers(FIT_PARALLEL_MAX_EVENTS, {}, FIT_PARALLEL_MAX_EVENTS) == 2
    assert workers(FIT_PARALLEL_MAX_EVENTS + 1, {}, FIT_PARALLEL_MAX_EVENTS) == 1
    assert workers(1_000, {}, 0) == 1
    monkeypatch.setattr(engine, "cpus", lambda: 1)
    assert workers(PARALLEL_MAX_EVENTS + 1, {}, FIT_PARALLEL_MAX_EVENTS) == 1
    # an explicit number holds whatever the bound
    assert workers(10**9, {WORKERS: "3"}, 10) == 3


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_workers_setting_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"RECPIPE_WORKERS='{value}': expected 'auto'"):
        workers(10, {WORKERS: value})


def _square(x: int) -> int:
    return x * x


def _where(_: int) -> dict:
    """Seen from a block: its process, its thread share, whether in_threads ran every block
    in the calling thread, BLAS's threads and the OpenMP threads a region asking 4 gets."""
    idents: set[int] = set()
    lock = threading.Lock()

    def note(_: int) -> None:
        with lock:
            idents.add(threading.get_ident())

    in_threads(note, list(range(8)), 4)
    blas = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    return {
        "pid": os.getpid(),
        "share": threads(),
        "inline": idents == {threading.get_ident()},
        "blas": blas,
        "omp": omp_threads(4),
    }


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
    share = max(1, cpus() // 2)
    for where in seen:
        assert where["pid"] != os.getpid()
        assert where["share"] == share and where["blas"] <= {share}
        assert where["omp"] == 1  # OpenMP on one thread in a forked worker, always
        if share == 1:  # the models' block threads stay within the share
            assert where["inline"]
    # at home: every CPU, and one block runs where it is called
    assert threads() == cpus() and omp_threads(4) == 4
    [home] = run_blocks(_where, [0], 4)
    assert (home["pid"], home["share"], home["omp"]) == (os.getpid(), cpus(), 4)
    assert home["inline"] == (cpus() == 1)


#: A process that has run OpenMP on two threads (implicit's ALS), then forks workers that
#: fit ALS asking four: a parallel region of more than one thread in such a child waits
#: forever for threads that were not forked.
AFTER_OPENMP = """
import numpy as np, scipy.sparse as sp
from recpipe import engine
from recpipe.models.als import ALSConfig, fit_implicit

conf = sp.random(500, 200, density=0.05, format="csr", random_state=1, dtype=np.float32)
conf.data += 1

def fit(threads):
    u, _ = fit_implicit(conf, ALSConfig(factors=4, iterations=2, num_threads=threads), 0)
    return float(u.sum())

home = fit(2)
print(engine.run_blocks(fit, [4, 4, 4], 2) == [home] * 3)
"""


def _prints_true(script: str) -> None:
    """Run ``script`` in a fresh interpreter (a hang fails after 60 s); it must print True."""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_workers_forked_after_openmp_ran_do_not_hang() -> None:
    _prints_true(AFTER_OPENMP)


def test_an_error_in_a_block_is_raised_with_its_type_and_message() -> None:
    with pytest.raises(DataError, match=r"file blocks\.parquet, row 3: bad block"):
        run_blocks(_fail, list(range(6)), 2)


def test_a_worker_that_dies_is_reported_with_what_to_set() -> None:
    with pytest.raises(RuntimeError, match="RECPIPE_WORKERS=1") as err:
        run_blocks(_die, list(range(4)), 2)
    assert "a worker process failed" in str(err.value) and "killed for memory" in str(err.value)
    # the stage's own process is unharmed: the next pool works
    assert run_blocks(_square, [1, 2, 3], 2) == [1, 4, 9]


def _identity(x: object) -> object:
    return x


def _local_function() -> object:
    def inner(x: object) -> object:
        return x

    return inner


@pytest.mark.parametrize(
    ("work", "blocks"),
    [
        (lambda b: b, [1, 2]),
        (_local_function(), [1, 2]),
        (_identity, [threading.Lock(), threading.Lock()]),
    ],
    ids=["lambda", "local function", "argument"],
)
def test_a_block_that_cannot_be_pickled_fails_before_a_worker_starts(
    work, blocks, monkeypatch
) -> None:
    # in the pool's feeder thread the same error could leave the pool's shutdown waiting
    # forever (CPython 3.11); it is raised before any pool exists
    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for blocks that cannot be pickled")

    monkeypatch.setattr(engine, "ProcessPoolExecutor", no_pool)
    with pytest.raises(RuntimeError, match="cannot be sent to a worker process") as err:
        run_blocks(work, blocks, 2)
    assert "RECPIPE_WORKERS=1" in str(err.value)
    # one block runs in this process, where nothing is pickled
    assert run_blocks(work, blocks[:1], 2) == [blocks[0]]


# -- blocks sharing a state built before the fork -------------------------------------------
class _Unpicklable:
    """A state that cannot be pickled: map_shared's workers must inherit it."""

    def __init__(self, offset: int, log: Path | None = None) -> None:
        self.offset, self.log = offset, log

    def __reduce__(self):
        raise TypeError("this state is not to be pickled")


def _shifted(state: _Unpicklable, x: int) -> tuple[int, int]:
    if state.log is not None:  # one file per block started
        (state.log / str(x)).touch()
    if x == 5 and state.offset < 0:
        raise DataError("bad block", file="blocks.parquet", row=x)
    return x + state.offset, os.getpid()


def _inner_pids(_: int) -> bool:
    """From a worker of run_blocks: whether map_shared ran every block in this worker."""
    pids = {pid for _, pid in map_shared(_shifted, _Unpicklable(0), list(range(4)), 4)}
    return pids == {os.getpid()}


def _where_shared(state: object, b: int) -> dict:
    return _where(b)


def test_shared_blocks_read_the_state_from_the_fork_and_come_back_in_order() -> None:
    state = _Unpicklable(100)
    got = list(map_shared(_shifted, state, list(range(17)), 3))
    assert [v for v, _ in got] == [b + 100 for b in range(17)]
    pids = {pid for _, pid in got}
    assert os.getpid() not in pids and 1 <= len(pids) <= 3
    # one worker: every block here, in order
    got = list(map_shared(_shifted, state, list(range(5)), 1))
    assert got == [(b + 100, os.getpid()) for b in range(5)]
    assert list(map_shared(_shifted, state, [], 3)) == []
    # a second run in the same process starts from a clean slate
    assert [v for v, _ in map_shared(_shifted, _Unpicklable(1), [0, 1, 2], 2)] == [1, 2, 3]


def test_shared_blocks_wait_for_the_caller_to_take_their_results(tmp_path: Path) -> None:
    """With two workers, at most three blocks are under way or waiting while the caller
    holds the first result, whatever the blocks' speed; the rest start as results are taken."""
    results = map_shared(_shifted, _Unpicklable(0, tmp_path), list(range(12)), 2)
    first = next(results)
    assert first[0] == 0
    assert len(list(tmp_path.iterdir())) <= 4  # the first, and three more at most
    assert [v for v, _ in results] == list(range(1, 12))
    assert len(list(tmp_path.iterdir())) == 12


def test_shared_blocks_raise_a_blocks_error_and_run_inline_in_a_worker() -> None:
    with pytest.raises(DataError, match=r"file blocks\.parquet, row 5: bad block"):
        list(map_shared(_shifted, _Unpicklable(-1), list(range(9)), 2))
    assert engine._state is None  # the next run can start
    # a worker of run_blocks does not fork workers of its own: its blocks run in it
    assert run_blocks(_inner_pids, [0, 1], 2) == [True, True]


def test_shared_blocks_stop_when_the_caller_closes_them(tmp_path: Path) -> None:
    results = map_shared(_shifted, _Unpicklable(0, tmp_path), list(range(40)), 2)
    assert next(results)[0] == 0
    results.close()  # as contextlib.closing does when the caller's writing fails
    assert engine._state is None
    assert len(list(tmp_path.iterdir())) <= 4  # nothing queued ran after the close
    assert [v for v, _ in map_shared(_shifted, _Unpicklable(2), [0, 1, 2], 2)] == [2, 3, 4]


def test_shared_blocks_run_in_workers_with_a_share_of_the_threads() -> None:
    seen = list(map_shared(_where_shared, None, list(range(4)), 2))
    share = max(1, cpus() // 2)
    for where in seen:
        assert where["pid"] != os.getpid()
        assert where["share"] == share and where["blas"] <= {share}
        assert where["omp"] == 1


#: A process that has run XGBoost on two OpenMP threads, then forks map_shared's workers
#: that predict with the same model: XGBoost's OpenMP regions there run on one thread,
#: where a region of two would wait forever for the parent's threads.
AFTER_XGBOOST = """
import numpy as np, xgboost as xgb
from recpipe import engine

rng = np.random.default_rng(0)
x = rng.random((2000, 6)).astype(np.float32)
labels, lists = rng.integers(0, 2, 2000), np.repeat(np.arange(200), 10)
model = xgb.XGBRanker(n_estimators=5, n_jobs=2).fit(x, labels, qid=lists)

def predict(model, rows):
    return model.predict(x[rows]).tolist()

home = [predict(model, slice(k, k + 500)) for k in (0, 500, 1000, 1500)]
blocks = [slice(k, k + 500) for k in (0, 500, 1000, 1500)]
print(list(engine.map_shared(predict, model, blocks, 2)) == home)
"""


def test_shared_workers_forked_after_xgboost_ran_do_not_hang() -> None:
    _prints_true(AFTER_XGBOOST)


@pytest.mark.parametrize(
    ("n", "size", "n_workers", "blocks"),
    [
        (6040, 2000, 2, 4),  # four blocks of 1,510, not three of 2,000 and one of 40
        (1000, 2000, 2, 1),  # one block stays one block
        (5000, 2000, 2, 4),  # three needed, four for two workers
        (5000, 2000, 3, 3),
        (2001, 2000, 64, 2),  # fewer blocks than workers: not rounded up to 64
        (7, 2, 1, 4),
        (3, 2, 4, 2),
        (3, 1, 2, 3),  # four would be more blocks than items
    ],
)
def test_even_cuts_cover_every_item_in_blocks_for_the_workers(
    n: int, size: int, n_workers: int, blocks: int
) -> None:
    cuts = even_cuts(n, size, n_workers)
    assert len(cuts) == blocks
    assert cuts[0][0] == 0 and cuts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:], strict=False))
    sizes = [stop - start for start, stop in cuts]
    assert max(sizes) <= size and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_even_cuts_of_6040_users_keep_two_workers_busy() -> None:
    assert even_cuts(6040, 2000, 2) == [(0, 1510), (1510, 3020), (3020, 4530), (4530, 6040)]
    assert even_cuts(0, 10, 2) == []
    with pytest.raises(ValueError, match="block size"):
        even_cuts(5, 0)


def test_even_cuts_in_a_worker_run_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a worker of run_blocks the blocks run in that process: nothing to round up to."""
    monkeypatch.setattr(engine, "_share", 1)
    assert even_cuts(5000, 2000, 2) == [(0, 1666), (1666, 3333), (3333, 5000)]


def test_the_bundle_cuts_its_users_for_its_workers_and_the_blend_evenly() -> None:
    """5,000 users in blocks of at most 2,000: the bundle takes four blocks for two
    workers and three for one; the blend three of even sizes whatever the workers (its
    valid fold's search metric is summed by blocks: no output may depend on the workers)."""
    import numpy as np
    import pandas as pd

    from recpipe.blending import candidate_ranges
    from recpipe.serving.build import user_blocks

    users = np.repeat(np.arange(5000, dtype=np.int64), 3)
    cands = {"a": pd.DataFrame({"user_idx": users}), "b": pd.DataFrame({"user_idx": users[::3]})}
    ranges = candidate_ranges(cands, 2000)
    assert [r["a"] for r in ranges] == [(0, 4998), (4998, 9999), (9999, 15000)]
    assert [r["b"] for r in ranges] == [(0, 1666), (1666, 3333), (3333, 5000)]
    history = pd.DataFrame({"user_idx": users})
    for n_workers, blocks in ((2, 4), (1, 3)):
        sizes = [len(b) for b in user_blocks(history, 2000, n_workers)]
        assert len(sizes) == blocks and sum(sizes) == 5000 and max(sizes) - min(sizes) <= 1
