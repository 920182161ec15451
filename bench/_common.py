"""Helpers the benchmark scripts share: a scratch project folder with its own params.yaml,
running a stage as a subprocess and measuring its wall time and peak memory."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]

# MovieLens-shaped synthetic sizes: events -> (users, items).
SIZES = {
    "default": (40_000, 1_000, 500),  # conf/data/synthetic.yaml as shipped
    "100k": (100_000, 943, 1_682),
    "1m": (1_000_000, 6_040, 3_706),
    "10m": (10_000_000, 69_878, 10_677),
    "25m": (25_000_000, 162_541, 62_423),
}


def copy_project(dst: Path, with_outputs: bool = False, params: dict | None = None) -> Path:
    """Copy into ``dst`` what a fresh clone plus the working tree's new files hold (git
    tracked and untracked-but-not-ignored files), without ``reports/`` and ``dvc.lock``
    (so every stage runs) unless ``with_outputs``; ``params`` (if given) replaces
    params.yaml; then ``git init`` and one commit, as ``dvc exp run`` needs a
    repository."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for f in files:
        src = ROOT / f
        outputs = f.startswith("reports/") or f == "dvc.lock"
        if src.is_file() and (with_outputs or not outputs):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    if params is not None:
        write_params(dst, params)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench: scratch copy"]):
        subprocess.run(git + cmd, cwd=dst, check=True, capture_output=True)
    return dst


def composed_params(*overrides: str, root: Path = ROOT) -> dict:
    """params.yaml as `dvc exp run -S ...` would compose it from ``root``'s conf/."""
    with initialize_config_dir(str(root / "conf"), version_base=None):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def write_params(workdir: Path, params: dict) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run_stage(module: str, args: list[str], workdir: Path) -> tuple[float, float]:
    """Run ``python -m <module> <args>`` in ``workdir``; return (seconds, peak RSS in MiB).

    Each stage runs in its own process, so its peak memory is its own (ru_maxrss of the
    waited-for child, read with wait4).
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    out, err = proc.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{module} failed:\n{out}\n{err}")
    # Linux reports ru_maxrss in KiB.
    return seconds, usage.ru_maxrss / 1024.0


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpus} cores, {mem:.0f} GiB RAM, Python {sys.version.split()[0]}"


def peak_self_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
