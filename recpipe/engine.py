"""Where a stage's blocks run: one after another, or side by side in worker processes.

A stage whose work splits into independent blocks (a candidate model's folds, the features'
folds, the ranker's training folds and test fold) hands them to
:func:`run_blocks` as a module-level function and one picklable argument per block. A
block reads its inputs from files or from its argument and writes its own outputs
(atomically, like every stage output), so where it runs changes the time and the peak
memory, never the bytes: the tests run each stage with one worker and with several and
compare the files. This is also the seam of the distributed engine: a block function and
its argument are what a cluster is handed.

How many processes (:func:`workers`): the environment variable ``RECPIPE_WORKERS``, an
integer (``1`` runs every block in the stage's own process, as before this module), or
``auto`` (the default): the CPUs this process may use, but one when the largest fold's
history holds more events than the stage's bound, because each worker holds its own block
(a fold's history and what is fitted on it), and at 25M events one block already takes
several GiB (``bench/README.md``). The bound is :data:`PARALLEL_MAX_EVENTS` for the
blend's and the ranker's folds, whose blocks grow with users x candidates;
:data:`FIT_PARALLEL_MAX_EVENTS` for the features, the candidate models and the bundle's
refits, whose blocks are one fold's features or one model fit; and
:data:`SHARED_PARALLEL_MAX_EVENTS` for the bundle's and the blend's blocks of users, whose
workers share the models (two workers at most past the first bound for these two). The
setting is not a DVC param: it changes no output, so changing it re-runs nothing.

Blocks that read one large state built in the stage's process (the bundle's models, fitted
on every event one model a block, then its blocks of users; a blend fold's models and
candidates, and the blend's folds once the valid one has been loaded for the weight search)
go to :func:`map_shared` instead: its workers are forked once the state is
built and read it from their copy of the process, so it is not pickled, and the stage
writes their results in block order as they come back. It runs in the stage's process
only: in a worker of either function (the blend's folds side by side, say, whose blocks
of users are themselves handed to it) the blocks run one at a time.

A worker's own threads (numpy blocks, BLAS) are limited to its share of the CPUs
(:func:`threads`), so that two workers on two cores do not each run two threads (which
measured no faster than one process). No output depends on a thread count.

Workers are forked from the stage's process: they start at once and share what it has
loaded. OpenMP (implicit's ALS, faiss, XGBoost) does not survive a fork: in a child of a
process whose OpenMP threads have run, a parallel region of more than one thread waits
forever for them. So a worker runs OpenMP on one thread (:func:`omp_threads`, which code
starting OpenMP regions asks, and which threadpoolctl sets as OpenMP's default for
XGBoost), whatever its share. The fit stages do not run OpenMP before they fork, nor does
the bundle before it forks its fits' workers (it loads the XGBoost ranker after them); it
may run OpenMP in its own process afterwards (ALS, when it fits its models there; faiss,
building the factor models' indexes; XGBoost) before it forks its blocks' workers, which
then score with XGBoost on that one thread (``tests/test_engine.py`` runs XGBoost on two
threads, then in the workers of :func:`map_shared`).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from recpipe.errors import ConfigError
from recpipe.log import get_logger

log = get_logger("engine")

WORKERS = "RECPIPE_WORKERS"
"""Environment variable: worker processes a stage runs its blocks in (``auto`` or an
integer >= 1)."""

PARALLEL_MAX_EVENTS = 12_000_000
"""``auto`` runs blocks side by side up to this many events in the largest fold's history
(:func:`recpipe.folds.history_events`) in the blend and the ranker (the default of
:func:`workers`), whose blocks grow with users x candidates. Measured at 10M events
(``bench/README.md``, "Folds side by side in worker processes"): rank, describing the
test fold beside the valid fold, peaks at 6.1 GiB (4.0 in one process), under the 8 GiB
target. At 25M rank peaks at 8.7 GiB one block at a time (the blend at 10.3-10.8 GiB, with
one fold after the valid one, so no second block); two blocks were not measured there."""

FIT_PARALLEL_MAX_EVENTS = 25_000_000
"""The counterpart of :data:`PARALLEL_MAX_EVENTS` for the stages whose block is one fold's
features or one model fit (the features, the candidate models, and the bundle's models
fitted on every event); between the two bounds ``auto`` runs two workers at most.
Measured at 25M events (24.5M in the largest fold's history; ``bench/README.md``, "Two
workers at 25M events"): with two workers these eight stages peak at 6.5-11.3 GiB (EASE
the largest), under the 16 GiB target, and took 1,506 s against 1,936 s one fold at a
time, alternated in one sitting (item-kNN, whose scoring already runs in threads on both
cores, gained nothing). More workers, or larger data, were not measured: past this bound
the stages run one block at a time."""

SHARED_PARALLEL_MAX_EVENTS = 25_000_000
"""The counterpart of :data:`PARALLEL_MAX_EVENTS` for blocks of users handed to
:func:`map_shared` (the bundle's two passes over every user, the blend's blocks of a fold
it builds in its own process): its workers share the stage's state (the models, a fold's
candidates), so each adds its block's working set, not a copy of the state; between the
two bounds ``auto`` runs two workers at most. Measured at 25M events (``bench/README.md``,
"The bundle's blocks and refits in two workers at 25M events"), one run each in one
sitting: the bundle took 1,555 s with two workers against 1,907 s in one process, peak
12.0 GiB against 12.2; the blend 836 s against 980 s, peak 10.7 GiB against 10.1. More
workers, or larger data, were not measured: past this bound the blocks run one at a time."""

_share: int | None = None
"""In a worker process: the threads it may run (set when it starts); None elsewhere."""

_state: object | None = None
"""What :func:`map_shared`'s blocks share, set while it runs; its workers inherit it."""

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")


def cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads() -> int:
    """Threads this process's own parallel work may use: every CPU in a stage's process, its
    share of them in a worker (of :func:`run_blocks` or :func:`map_shared`)."""
    return _share if _share is not None else cpus()


def omp_threads(requested: int) -> int:
    """OpenMP threads for a parallel region that would run ``requested``: one in a worker
    (of :func:`run_blocks` or :func:`map_shared`; module docstring), ``requested``
    elsewhere."""
    return 1 if _share is not None else requested


def _start_worker(share: int) -> None:
    global _share
    _share = share
    from threadpoolctl import threadpool_limits

    threadpool_limits(share, user_api="blas")
    threadpool_limits(1, user_api="openmp")


def _call(payload: tuple[bytes, bytes]) -> object:
    """In a worker: one block and its function, sent pickled by :func:`run_blocks`."""
    work, block = payload
    return pickle.loads(work)(pickle.loads(block))


def _call_shared(payload: tuple[bytes, bytes]) -> object:
    """In a worker of :func:`map_shared`: one block, its function given the shared state."""
    work, block = payload
    return pickle.loads(work)(_state, pickle.loads(block))


def _pickled(work: Callable, blocks: Sequence) -> list[tuple[bytes, bytes]]:
    """Each block with ``work``, pickled here, not by the pool's feeder thread: an object
    that cannot be pickled then fails at once with its reason, where in the pool (CPython
    3.11) the error can leave the pool's shutdown waiting forever (python/cpython#116685).
    The function (with what a partial binds, such as a stage's job) is pickled once."""
    try:
        sent = pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)
        return [(sent, pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL)) for b in blocks]
    except Exception as exc:  # pickling can raise anything a __reduce__ raises
        raise RuntimeError(
            f"a block cannot be sent to a worker process ({exc}): a block's function must "
            f"be defined at module level and its argument picklable; set {WORKERS}=1 to run "
            "the blocks in this process (needed under a profiler that runs the stage as a "
            "script, such as python -m cProfile)"
        ) from exc


def _pool(n: int) -> ProcessPoolExecutor:
    """``n`` worker processes forked from this one, each with its share of the threads."""
    return ProcessPoolExecutor(
        n,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(max(1, threads() // n),),
    )


def _broken(exc: BrokenProcessPool, blocks: int, n: int, what: str = "blocks") -> RuntimeError:
    return RuntimeError(
        f"a worker process failed while running {blocks} {what} {n} at a time "
        f"({exc}; killed for memory, if nothing else is said above); set {WORKERS}=1 "
        "to run them one at a time"
    )


def _say(blocks: int, what: str, n: int) -> None:
    """In the stage's log: how its ``blocks`` (called ``what``) run, ``n`` side by side."""
    log.info("%d %s, %d side by side (%s)", blocks, what, n, WORKERS)


def workers(
    events: int,
    environ: dict[str, str] | None = None,
    max_events: int | None = None,
) -> int:
    """Worker processes for a stage whose largest fold's history holds ``events`` events,
    side by side up to ``max_events`` (:data:`PARALLEL_MAX_EVENTS` if None; module
    docstring)."""
    env = os.environ if environ is None else environ
    value = env.get(WORKERS, "auto").strip().lower() or "auto"
    if value == "auto":
        bound = PARALLEL_MAX_EVENTS if max_events is None else max_events
        if events > bound:
            return 1
        # past the default bound, two workers at most: what was measured to fit
        return cpus() if events <= PARALLEL_MAX_EVENTS else min(cpus(), 2)
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{WORKERS}={env[WORKERS]!r}: expected 'auto' or an integer >= 1")
    return n


def run_blocks(work: Callable[[T], R], blocks: Sequence[T], n_workers: int) -> list[R]:
    """``[work(b) for b in blocks]``, up to ``n_workers`` blocks side by side (in order).

    ``work`` must be a module-level function (or a :func:`functools.partial` of one) and
    each block and result picklable. An error in a block is raised here as it was raised
    there (its traceback attached), after the blocks still queued are cancelled; a worker
    that dies (killed for memory, say) is reported with what to set.
    """
    n = min(n_workers, len(blocks))
    if n <= 1:
        return [work(b) for b in blocks]
    payloads = _pickled(work, blocks)
    pool = _pool(n)
    try:
        return list(pool.map(_call, payloads))
    except BrokenProcessPool as exc:
        raise _broken(exc, len(blocks), n) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def map_shared(
    work: Callable[[S, T], R],
    state: S,
    blocks: Sequence[T],
    n_workers: int,
    what: str = "blocks",
) -> Iterator[R]:
    """``work(state, b)`` for each block, in order, as an iterator, up to ``n_workers``
    blocks side by side (said in the stage's log, the blocks called ``what``).

    For blocks that read one large state built in the stage's process (models fitted on
    every event, say): the workers are forked after it is built and read it from their
    copy of the process (pages the fork shares until written), so it is never pickled; each
    block and each result goes through a pipe. At most ``n_workers`` + 1 blocks are under
    way or waiting to be taken, so results pile up no further while the caller writes them.
    In a worker of either function (or with one worker) the blocks run in this process.
    Otherwise as :func:`run_blocks` (``work`` at module level, blocks and results
    picklable; errors raised here). Not reentrant where it forks: one pool at a time in a
    process (a block run here, with one worker, may start another, as the blend's folds
    run one at a time with their blocks in workers), so a
    caller that may stop taking results (an error while writing them) closes the iterator
    (``contextlib.closing``): the blocks still queued are cancelled and the running ones
    finish before it returns.
    """
    global _state
    n = 1 if _share is not None else min(n_workers, len(blocks))
    if n <= 1:
        for b in blocks:
            yield work(state, b)
        return
    if _state is not None:
        raise RuntimeError("map_shared is already running in this process")
    payloads = _pickled(work, blocks)
    _say(len(blocks), what, n)
    pool = None
    try:
        _state = state  # before the pool forks its workers (at its first submit)
        pool = _pool(n)
        pending: deque = deque()
        queued = iter(payloads)
        for payload in queued:
            pending.append(pool.submit(_call_shared, payload))
            if len(pending) > n:
                break
        while pending:
            result = pending.popleft().result()
            for payload in queued:
                pending.append(pool.submit(_call_shared, payload))
                break
            yield result
    except BrokenProcessPool as exc:
        raise _broken(exc, len(blocks), n, what) from exc
    finally:
        _state = None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def even_cuts(n: int, size: int, n_workers: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` of the blocks ``n`` items are cut into for :func:`map_shared`: at
    most ``size`` items each, and sizes within one of each other. When that takes more
    blocks than the workers that run them side by side (none in a worker, where they run
    one at a time), their number is rounded up to a
    multiple of the workers (so a block keeps at least about half the size). Blocks of a
    fixed size leave a short last one: 6,040 users in blocks of 2,000 run as 2,000 + 2,000
    on one of two workers and 2,000 + 40 on the other, while four blocks of 1,510 keep
    both busy to the end; 5,000 users on two workers take four blocks of 1,250 (2,500
    users a worker) rather than three of 1,667 (3,334 on one of them). Items that fit one
    block stay one block. What a stage writes does not depend on its blocks."""
    if size < 1:
        raise ValueError(f"block size must be >= 1, got {size}")
    if n <= 0:
        return []
    parts = 1 if _share is not None else max(1, n_workers)
    k = -(-n // size)
    if k > parts:
        k = min(n, -(-k // parts) * parts)
    bounds = [i * n // k for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def run_folds(
    work: Callable[[T], R],
    blocks: Sequence[T],
    events: int,
    what: str,
    max_events: int | None = None,
) -> list[R]:
    """:func:`run_blocks` with :func:`workers` for data of ``events`` events (side by side
    up to ``max_events``), saying in the stage's log how the ``what`` (folds, say) run
    when side by side."""
    n = workers(events, max_events=max_events)
    if n > 1 and len(blocks) > 1:
        _say(len(blocks), what, min(n, len(blocks)))
    return run_blocks(work, blocks, n)
