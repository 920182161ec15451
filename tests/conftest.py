"""Shared fixtures: tiny canonical data sets built in code (never real MovieLens)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from filelock import FileLock

from bench._common import copy_project
from recpipe.schema import finalize


def make_interactions(rows: list[tuple], with_rating: bool = False) -> pd.DataFrame:
    """Canonical interactions from (user, item, timestamp[, rating][, event]) tuples."""
    recs = []
    for r in rows:
        u, i, t = r[0], r[1], r[2]
        rating = r[3] if with_rating else np.nan
        event = r[4] if len(r) > 4 else ("rating" if with_rating else "view")
        recs.append((str(u), str(i), float(rating), event, 1.0, int(t)))
    raw = pd.DataFrame(
        recs, columns=["user_id", "item_id", "rating", "event", "weight", "timestamp"]
    )
    inter, _, _, _ = finalize(raw, None, None, file="test")
    return inter


@pytest.fixture
def random_log() -> pd.DataFrame:
    """A random canonical log: 60 users, 40 items, 1,500 events, some repeats."""
    rng = np.random.default_rng(7)
    n = 1500
    raw = pd.DataFrame(
        {
            "user_id": [f"u{u:02d}" for u in rng.integers(0, 60, n)],
            "item_id": [f"i{i:02d}" for i in rng.integers(0, 40, n)],
            "rating": rng.integers(1, 6, n).astype(float),
            "event": rng.choice(["view", "click", "purchase"], n),
            "weight": 1.0,
            "timestamp": rng.integers(1_000_000, 2_000_000, n),
        }
    )
    inter, _, _, _ = finalize(raw, None, None, file="test")
    return inter


ROOT = Path(__file__).resolve().parents[1]


def e2e_env() -> dict[str, str]:
    """Environment for real `dvc` runs: stage commands say `python`, so this interpreter's
    folder (the project's venv) comes first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def sh(cwd: Path, *cmd: str, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """Run a command (``env`` added to :func:`e2e_env`), fail the test with its output if it
    fails; returns stdout + stderr."""
    proc = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=e2e_env() | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def dvc(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return sh(repo, str(Path(sys.executable).parent / "dvc"), *args, env=env)


OTHER_MACHINE = {
    # an AVX2 machine with one core, as far as this one can play it
    "OPENBLAS_CORETYPE": "Prescott",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
"""Another machine's dispatch settings (tests/test_cross_machine.py, tests/test_e2e.py)."""


def dvc_json(repo: Path, *args: str) -> dict:
    """A `dvc ... --json` command's answer (stdout only: warnings go to stderr)."""
    cmd = [str(Path(sys.executable).parent / "dvc"), *args, "--json"]
    proc = subprocess.run(cmd, cwd=repo, env=e2e_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)


def stages_run(out: str) -> list[str]:
    """The stages a `dvc repro` / `dvc exp run` ran, in order, from its output."""
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def review_md(repo: Path, *args: str) -> str:
    """`python -m stages.review --base HEAD` in `repo`: the markdown a pull request gets."""
    return sh(repo, sys.executable, "-m", "stages.review", "--base", "HEAD", *args)


def git(repo: Path, *args: str) -> str:
    return sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", *args)


def reset(repo: Path) -> None:
    """Back to the committed baseline: tracked files from git, outputs from DVC's cache.

    From HEAD, not the index: DVC stages the dvc.lock it rewrites (`autostage`), and a
    checkout from the index kept that lock, whose outputs `dvc checkout` then restored."""
    git(repo, "reset", "-q", "--hard")
    dvc(repo, "checkout", "--force")


def build_tiny_repo(dst: Path) -> None:
    """A git copy of the project (the files a fresh clone would get) at `dst` with a
    committed `+experiment=tiny` baseline: params.yaml composed by the call `dvc exp run -S
    +experiment=tiny` makes (DVC's Hydra composition, with the project's `[hydra]`
    settings), then `dvc repro`. A workspace `dvc exp run` would also record an experiment,
    several seconds more of DVC; tests/test_review.py's queued sweep runs `dvc exp run`."""
    from dvc.utils.hydra import compose_and_dump

    copy_project(dst, with_outputs=True)
    overrides = ["+experiment=tiny"]
    compose_and_dump(dst / "params.yaml", str(dst / "conf"), None, "config", str(dst), overrides)
    dvc(dst, "repro")
    git(dst, "add", "-A")
    git(dst, "commit", "-qm", "baseline: tiny run")


E2E_ID = "test_e2e"
"""Every end-to-end test's node id holds this (tests/test_e2e.py, test_review.py's
`test_e2e_*`): how the xdist controller, which sees only ids, knows that some will run."""


def ensure_tiny_baseline(shared: Path) -> None:
    """Build the baseline at `shared` unless a finished build is there; one builder at a
    time across processes (a file lock), and a half-built folder is started over."""
    done = shared / ".built"
    with FileLock(str(shared) + ".lock"):
        if not done.exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir(parents=True)
            build_tiny_repo(shared)
            done.touch()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Test files that hold end-to-end tests run last (order otherwise kept). With
    `make test`'s `--dist loadfile --no-loadscope-reorder` the workers first share the unit
    tests while the baseline builds in the background, then take one end-to-end file each."""
    e2e_files = {item.path for item in items if item.get_closest_marker("e2e")}
    items.sort(key=lambda item: item.path in e2e_files)  # a stable sort


_prebuild: threading.Thread | None = None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """xdist controller: as soon as a worker has collected an end-to-end test, start the
    shared baseline in a background thread, so that the build overlaps the unit tests
    instead of holding up the first worker that reaches an end-to-end file. A failed build
    is left to the workers' `tiny_repo` fixture, which retries it and reports the error."""
    global _prebuild
    if _prebuild is not None or not any(E2E_ID in i for i in ids):
        return
    # the controller's base temp folder is the parent of every worker's (xdist itself
    # hands each worker a sub-folder of it the same way)
    shared = node.config._tmp_path_factory.getbasetemp() / "tiny-baseline"

    def build() -> None:
        # on failure the fixture retries and fails the tests with the message
        with contextlib.suppress(Exception):
            ensure_tiny_baseline(shared)

    _prebuild = threading.Thread(target=build, name="tiny-baseline", daemon=True)
    _prebuild.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _prebuild is not None:  # never leave a dvc run behind a finished session
        _prebuild.join()


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny baseline repository, shared by the end-to-end tests, each of which leaves
    it as it found it.

    Under pytest-xdist (`make test`; its flags are in the Makefile) each test file runs on
    one worker, so the end-to-end tests of test_e2e.py and test_review.py may run at the
    same time. The baseline is built once per run (the controller starts it in the
    background, see above; a worker that needs it sooner waits on the lock), and every
    worker works in its own copy (git history, DVC cache and run cache included), so two
    files never touch each other's repository."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # plain pytest: no workers to share with
        dst = tmp_path_factory.mktemp("repo")
        build_tiny_repo(dst)
        return dst
    shared = tmp_path_factory.getbasetemp().parent / "tiny-baseline"
    ensure_tiny_baseline(shared)
    dst = tmp_path_factory.mktemp("repo") / "tiny"
    shutil.copytree(shared, dst, symlinks=True, ignore=shutil.ignore_patterns(".built"))
    return dst


@pytest.fixture(scope="session")
def serving_repo(request: pytest.FixtureRequest) -> Path:
    """The repository whose bundle the serving tests use: the tiny baseline, or
    ``RECPIPE_TEST_REPO`` (an already built tiny repository, to iterate on those tests
    without rebuilding it)."""
    given = os.environ.get("RECPIPE_TEST_REPO")
    if given:
        return Path(given)
    return request.getfixturevalue("tiny_repo")
