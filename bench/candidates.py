"""Time every candidate stage on synthetic data of 100k, 1M and 10M events.

    python bench/candidates.py --sizes 100k 1m --repeats 3 [--workdir /tmp/bench-cand]

For each size it generates the synthetic shop at MovieLens-like shapes (1M events: 6,040
users, 3,706 items), runs ingest and split once, then runs each `candidates@<model>` stage
(both folds: fit + recommend + write) as its own process `--repeats` times and prints the
median wall time and peak memory per model, and the total of the six.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import SIZES, composed_params, machine, run_stage, write_params  # noqa: E402

MODELS = ["popularity", "itemknn", "svd", "als", "tfidf", "ease", "seqknn"]


def prepare(size: str, workdir: Path) -> None:
    n_events, n_users, n_items = SIZES[size]
    params = composed_params(
        f"data.n_events={n_events}", f"data.n_users={n_users}", f"data.n_items={n_items}"
    )
    write_params(workdir, params)
    run_stage("stages.ingest", ["--out", "data/prepared", "--summary", "ingest.json"], workdir)
    run_stage(
        "stages.split",
        ["--prepared", "data/prepared", "--out", "data/split", "--summary", "split.json"],
        workdir,
    )


def bench_model(model: str, workdir: Path) -> tuple[float, float]:
    return run_stage(
        "stages.candidates",
        [
            "--model",
            model,
            "--split",
            "data/split",
            "--prepared",
            "data/prepared",
            "--models-dir",
            f"models/{model}",
            "--out",
            "data/candidates",
        ],
        workdir,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", default=["100k", "1m"], choices=list(SIZES))
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/recpipe-bench-candidates")
    args = ap.parse_args()
    print(f"machine: {machine()}; median of {args.repeats} runs\n")
    print("| events | model | wall s (median) | peak MiB |")
    print("|---|---|---:|---:|")
    for size in args.sizes:
        workdir = Path(args.workdir) / size
        prepare(size, workdir)
        total = 0.0
        for model in args.models:
            runs = [bench_model(model, workdir) for _ in range(args.repeats)]
            wall = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            total += wall
            print(f"| {size} | {model} | {wall:.1f} | {peak:.0f} |", flush=True)
        print(f"| {size} | **all {len(MODELS)}, both folds** | **{total:.1f}** | |", flush=True)


if __name__ == "__main__":
    main()
