"""Cross-machine check: the tiny pipeline under two CPU dispatch settings, byte for byte.

Usage: ``python bench/cross_machine.py [--native] [--workdir DIR]`` from the project root,
with the project's venv first on PATH (``source .venv/bin/activate``). About two minutes on
two cores.

One machine stands in for two by choosing what each would choose for itself:

- ``A``, an AVX-512 machine with all its cores: OpenBLAS's SkylakeX kernels (Sandybridge
  on a CPU without AVX-512, still not the Haswell ones) and numpy's widest SIMD loops;
- ``B``, an AVX2 machine with one core: OpenBLAS's Haswell kernels, numpy without its
  AVX-512 loops (``NPY_DISABLE_CPU_FEATURES``), one OpenMP and one OpenBLAS thread.

A copy of the project (the files git knows, as a fresh clone has them) runs
``dvc exp run -S +experiment=tiny`` under A, then ``dvc repro --force`` under B, and every
file under ``data/``, ``models/`` and ``reports/`` is compared. The stages pin the kernels
themselves (``recpipe.stage.pin_numerics``), so the two runs must agree: exit code 0 when
every file is identical, 1 otherwise. ``--native`` switches the pinning off in both runs
(``RECPIPE_NATIVE_CPU=1``) to show what differs without it (expected: ALS, EASE and TF-IDF
candidates, item features, and everything downstream of them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import copy_project  # noqa: E402

COMPARED = ("data", "models", "reports")
"""Folders whose every file is compared (inputs, candidates, features, blend, ranker,
models, metrics, plots)."""
METRICS = "reports/metrics.json"


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def settings(native: bool) -> dict[str, dict[str, str | None]]:
    """Environment changes of the two simulated machines (None removes a variable)."""
    wide = "SkylakeX" if "avx512f" in cpu_flags() else "Sandybridge"
    pin = {"RECPIPE_NATIVE_CPU": "1" if native else None}
    return {
        "A": {
            **pin,
            "OPENBLAS_CORETYPE": wide,
            "NPY_DISABLE_CPU_FEATURES": None,
            "OMP_NUM_THREADS": None,
            "OPENBLAS_NUM_THREADS": None,
        },
        "B": {
            **pin,
            "OPENBLAS_CORETYPE": "Haswell",
            "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        },
    }


def environment(changes: dict[str, str | None]) -> dict[str, str]:
    env = dict(os.environ)
    # stage commands call `python`: this interpreter's venv first
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")


def digests(repo: Path, folders: tuple[str, ...] = COMPARED) -> dict[str, str]:
    """sha256 of every file under ``folders`` of ``repo``, by path."""
    out = {}
    for folder in folders:
        for path in sorted((repo / folder).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def compare(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """Files that differ or exist in one run only."""
    return sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))


def metric_changes(a: dict, b: dict) -> list[str]:
    """``model.metric: A -> B`` for every number of reports/metrics.json that moved."""
    out = []
    for model in sorted(set(a) | set(b)):
        old, new = a.get(model, {}), b.get(model, {})
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name) and not isinstance(old.get(name), dict):
                out.append(f"{model}.{name}: {old.get(name)} -> {new.get(name)}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--native", action="store_true", help="RECPIPE_NATIVE_CPU=1 in both runs")
    ap.add_argument("--workdir", help="keep the copy here (default: a temporary folder)")
    args = ap.parse_args(argv)
    dvc = str(Path(sys.executable).parent / "dvc")
    env = settings(args.native)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(args.workdir) if args.workdir else Path(tmp) / "repo"
        repo.mkdir(parents=True, exist_ok=True)
        copy_project(repo, with_outputs=True)
        run([dvc, "exp", "run", "-S", "+experiment=tiny"], repo, environment(env["A"]))
        first = digests(repo)
        first_metrics = json.loads((repo / METRICS).read_text())
        run([dvc, "repro", "--force"], repo, environment(env["B"]))
        second = digests(repo)
        second_metrics = json.loads((repo / METRICS).read_text())
    differ = compare(first, second)
    for name, changes in env.items():
        shown = " ".join(f"{k}={v}" for k, v in changes.items() if v is not None)
        print(f"{name}: {shown or '(this machine as it is)'}")
    print(f"{len(first)} files compared under {', '.join(COMPARED)}/")
    if not differ:
        print("identical: every candidate list, feature, model, metric and plot")
        return 0
    print(f"{len(differ)} differ:")
    for name in differ:
        print(f"  {name}")
    moved = metric_changes(first_metrics, second_metrics)
    if moved:
        print(f"{METRICS}, A -> B:")
        for line in moved:
            print(f"  {line}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
