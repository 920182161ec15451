"""Shared fixtures: tiny canonical data sets built in code (never real MovieLens)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.core.schema import finalize


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


def sh(cwd: Path, *cmd: str, timeout: float = 600) -> str:
    """Run a command, fail the test with its output if it fails; returns stdout + stderr."""
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=e2e_env(), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def dvc(repo: Path, *args: str) -> str:
    return sh(repo, str(Path(sys.executable).parent / "dvc"), *args)


def dvc_json(repo: Path, *args: str) -> dict:
    """A `dvc ... --json` command's answer (stdout only: warnings go to stderr)."""
    cmd = [str(Path(sys.executable).parent / "dvc"), *args, "--json"]
    proc = subprocess.run(cmd, cwd=repo, env=e2e_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)


def git(repo: Path, *args: str) -> str:
    return sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", *args)


def reset(repo: Path) -> None:
    """Back to the committed baseline: tracked files from git, outputs from DVC's cache."""
    git(repo, "checkout", "--", ".")
    dvc(repo, "checkout", "--force")


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary git copy of the project (the files a fresh clone would get) with a
    committed `dvc exp run -S +experiment=tiny` baseline; shared by the end-to-end tests,
    each of which leaves it as it found it."""
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    git(dst, "init", "-q")
    git(dst, "add", "-A")
    git(dst, "commit", "-qm", "copy")
    dvc(dst, "exp", "run", "-S", "+experiment=tiny")
    git(dst, "add", "-A")
    git(dst, "commit", "-qm", "baseline: tiny run")
    return dst
