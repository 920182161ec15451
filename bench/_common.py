"""Helpers the benchmark scripts share: a scratch project folder with its own params.yaml,
running a stage as a subprocess and measuring its wall time and peak memory."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import threading
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


def tree_pss_mib(root: int, count_root: bool = True) -> float:
    """The proportional set size of ``root`` (unless ``count_root`` is false) and its
    descendants, MiB (Linux): pages that forked workers share with their parent are counted
    once, split between them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    kib, todo = 0, [root] if count_root else list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                kib += int(line.split()[1])
                break
    return kib / 1024.0


def measured(
    cmd: list[str], cwd: Path, env: dict[str, str], count_root: bool = True
) -> tuple[float, float, int, str]:
    """Run ``cmd``: (seconds, peak MiB, exit code, stdout and stderr).

    The peak is the larger of the largest single process's resident set (``ru_maxrss`` of
    the waited-for child, which covers its reaped descendants: what a stage run in one
    process is measured by) and the tree's summed proportional set size (:func:`tree_pss_mib`)
    sampled every 0.2 s: what a stage with worker processes holds at once (the sampling can
    miss a spike shorter than that). ``count_root=False`` leaves the command's own process
    out of the sum (``dvc``, when it runs the stage)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    sampled = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            sampled[0] = max(sampled[0], tree_pss_mib(proc.pid, count_root))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # Read the output while waiting: a stage that logs more than a pipe holds must not block.
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    # Linux reports ru_maxrss in KiB.
    return (
        seconds,
        max(usage.ru_maxrss / 1024.0, sampled[0]),
        os.waitstatus_to_exitcode(status),
        out,
    )


def run_stage(module: str, args: list[str], workdir: Path) -> tuple[float, float]:
    """Run ``python -m <module> <args>`` in ``workdir``; return (seconds, peak MiB of the
    stage and its worker processes, :func:`measured`)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    seconds, peak, code, out = measured([sys.executable, "-m", module, *args], workdir, env)
    if code != 0:
        raise RuntimeError(f"{module} failed:\n{out}")
    return seconds, peak


def machine() -> str:
    cpus = os.cpu_count()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpus} cores, {mem:.0f} GiB RAM, Python {sys.version.split()[0]}"


def peak_self_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
