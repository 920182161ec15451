"""Time the whole pipeline on synthetic data: per stage, in total, a no-op `dvc repro`, and the
re-run after one ALS setting changes.

    python bench/speed.py --sizes 1m --repeats 3 [--workdir /tmp/recpipe-bench-speed] \\
        [--set ranker.train_negatives=50]

For each size it copies the project into a scratch git repository, writes params.yaml as
`dvc exp run` would compose it (with the size overrides), times one `dvc repro` of the whole
pipeline (end to end, as a user runs it), then runs each stage again alone with `dvc repro
--force --single-item <stage>` in DAG order, timing its wall clock and peak memory (the
largest resident set of one process of the stage's tree, or the tree's summed proportional
set size where worker processes make that larger; each pays its own DVC start-up). Then it
times `dvc repro` with nothing to do, and `dvc repro` after `candidates.als.factors` changes
(ALS, blend, rank and evaluate re-run). Prints medians over `--repeats` fresh runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import SIZES, composed_params, copy_project, machine, measured  # noqa: E402

STAGES = [
    "code",
    "check",
    "ingest",
    "split",
    "features",
    "candidates@popularity",
    "candidates@itemknn",
    "candidates@svd",
    "candidates@als",
    "candidates@tfidf",
    "candidates@ease",
    "candidates@seqknn",
    "rate",
    "blend",
    "rank",
    "evaluate",
    "bundle",
]


def env() -> dict[str, str]:
    e = dict(os.environ, DVC_NO_ANALYTICS="1")
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak MiB) of one command run under ``dvc`` (:func:`bench._common.measured`,
    ``dvc``'s own process left out of the sum); raises on failure."""
    seconds, peak, code, out = measured(cmd, cwd, env(), count_root=False)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}")
    return seconds, peak


def fresh_repo(workdir: Path, params: dict) -> Path:
    """A scratch copy of the project at ``workdir`` (replaced) with ``params`` as its
    committed params.yaml."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    return copy_project(workdir, params=params)


def one_run(
    size: str, workdir: Path, end_to_end: bool, extra: tuple[str, ...] = ()
) -> dict[str, tuple[float, float]]:
    n_events, n_users, n_items = SIZES[size]
    params = composed_params(
        f"data.n_events={n_events}",
        f"data.n_users={n_users}",
        f"data.n_items={n_items}",
        *extra,
    )
    repo = fresh_repo(workdir, params)
    dvc = str(Path(sys.executable).parent / "dvc")
    out: dict[str, tuple[float, float]] = {}

    def step(name: str, *args: str) -> None:
        out[name] = timed([dvc, "repro", *args], repo)
        # Progress on stderr: a long size is not lost if the run is stopped half-way.
        print(f"{size}: {name}: {out[name][0]:.1f} s, {out[name][1]:.0f} MiB", file=sys.stderr)

    if end_to_end:
        # As a user runs it: one `dvc repro` on a fresh copy.
        step("end to end (one dvc repro)")
    # Each stage on its own, for the breakdown (each pays its own dvc start-up).
    force = ["--force"] if end_to_end else []
    for stage in STAGES:
        step(stage, *force, "--single-item", stage)
    step("no-op dvc repro")
    params["candidates"]["als"]["factors"] = params["candidates"]["als"]["factors"] // 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    step("rerun after an ALS change")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", default=["1m"], choices=list(SIZES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/recpipe-bench-speed")
    ap.add_argument(
        "--no-end-to-end",
        action="store_true",
        help="skip the one-command run (on large data it doubles the time; the stages run "
        "alone add up to about the same)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra params override, as with `dvc exp run -S` (repeatable)",
    )
    args = ap.parse_args()
    print(f"machine: {machine()}; median of {args.repeats} runs; overrides {args.set}\n")
    print("| events | step | wall s | peak MiB |")
    print("|---|---|---:|---:|")
    for size in args.sizes:
        runs = [
            one_run(size, Path(args.workdir) / size, not args.no_end_to_end, tuple(args.set))
            for _ in range(args.repeats)
        ]
        total = 0.0
        for step in runs[0]:
            wall = statistics.median(r[step][0] for r in runs)
            peak = max(r[step][1] for r in runs)
            if step in STAGES:
                total += wall
            print(f"| {size} | {step} | {wall:.1f} | {peak:.0f} |", flush=True)
            if step == STAGES[-1]:
                print(f"| {size} | sum of the stages run alone | {total:.1f} | |", flush=True)


if __name__ == "__main__":
    main()
