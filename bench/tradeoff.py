"""Quality against time for settings that trade one for the other, at one synthetic size.

    python bench/tradeoff.py --size 1m --keep /tmp/tradeoff \\
        --variant defaults \\
        --variant "no refit:ranker.refit=false" \\
        --variant "fewer rows:ranker.train_max_rows=500000,ranker.refit=false"

Every variant runs in one scratch repository, in the order given: params.yaml is rewritten
with the size and the variant's overrides, then every stage goes through ``dvc repro
--single-item`` in DAG order, so only the stages whose params or inputs changed re-run (DVC's
run cache restores a stage another variant already ran with the same inputs). Each stage's
wall time and peak memory are recorded; a stage that did not run shows as "-".

For each variant it prints the stages that ran with their times, their sum, the peak, the
ranker's and the blend's NDCG@10 on the test fold, and the ranker's paired bootstrap
difference against the first variant (the users both scored, 2,000 resamples). Each
variant's ``per_user.parquet`` and ``metrics.json`` are kept under ``--keep`` for
``bench/compare.py``.

One run per variant: the quality numbers are deterministic (the same params give the same
bytes), the times are single timings on a machine that should be otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import SIZES, composed_params, machine  # noqa: E402
from bench.compare import paired  # noqa: E402
from bench.speed import STAGES, fresh_repo, timed  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name:KEY=V,KEY=V"`` (or just ``"name"`` for no override) -> (name, overrides)."""
    name, _, rest = text.partition(":")
    overrides = [o.strip() for o in rest.split(",") if o.strip()]
    for o in overrides:
        if "=" not in o:
            raise SystemExit(f"--variant {text!r}: override {o!r} is not KEY=VALUE")
    return name.strip(), overrides


def run_variant(repo: Path, params: dict, dvc: str) -> dict[str, tuple[float, float] | None]:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out: dict[str, tuple[float, float] | None] = {}
    for stage in STAGES:
        before = (repo / "dvc.lock").read_text() if (repo / "dvc.lock").exists() else ""
        # `dvc status` first: a stage that is up to date costs a second of start-up that
        # would otherwise be counted as the stage's time.
        status = subprocess.run(
            [dvc, "status", "--json", stage],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        if before and json.loads(status or "{}") == {}:
            out[stage] = None
            continue
        out[stage] = timed([dvc, "repro", "--single-item", stage], repo)
        print(f"  {stage}: {out[stage][0]:.1f} s, {out[stage][1]:.0f} MiB", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="1m", choices=list(SIZES))
    ap.add_argument("--variant", action="append", required=True, metavar="NAME[:K=V,...]")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override applied to every variant (repeatable)",
    )
    ap.add_argument("--workdir", default="/tmp/recpipe-bench-tradeoff")
    ap.add_argument("--keep", type=Path, required=True, help="folder for per-variant reports")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="keep the scratch repository of an earlier run (its code, data and run cache) "
        "instead of copying the project again",
    )
    args = ap.parse_args()

    n_events, n_users, n_items = SIZES[args.size]
    size_overrides = [
        f"data.n_events={n_events}",
        f"data.n_users={n_users}",
        f"data.n_items={n_items}",
        *args.set,
    ]
    variants = [parse_variant(v) for v in args.variant]
    dvc = str(Path(sys.executable).parent / "dvc")
    repo = Path(args.workdir)
    if not (args.reuse and (repo / "dvc.yaml").exists()):
        repo = fresh_repo(repo, composed_params(*size_overrides))
    args.keep.mkdir(parents=True, exist_ok=True)

    rows = []
    base_per_user: Path | None = None
    for i, (name, overrides) in enumerate(variants):
        print(f"{args.size}: variant {name!r} {overrides}", file=sys.stderr)
        times = run_variant(repo, composed_params(*size_overrides, *overrides, root=repo), dvc)
        keep = args.keep / f"{i:02d}"
        keep.mkdir(exist_ok=True)
        for f in ("per_user.parquet", "metrics.json", "ranker.json", "blend.json"):
            shutil.copy2(repo / "reports" / f, keep / f)
        (keep / "variant.json").write_text(json.dumps({"name": name, "overrides": overrides}))
        metrics = json.loads((repo / "reports" / "metrics.json").read_text())
        if base_per_user is None:
            base_per_user = keep / "per_user.parquet"
            vs_first = ""
        else:
            r = paired(base_per_user, keep / "per_user.parquet", "ranker", "ndcg@10")
            verdict = "beyond noise" if r["significant"] else "within noise"
            vs_first = f"{r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] {verdict}"
        ran = {s: t for s, t in times.items() if t is not None}
        rows.append(
            (
                name,
                ", ".join(f"{s} {t[0]:.1f}" for s, t in ran.items()),
                sum(t[0] for t in ran.values()),
                max((t[1] for t in ran.values()), default=0.0),
                metrics["ranker"]["ndcg@10"],
                metrics["blend"]["ndcg@10"],
                vs_first,
            )
        )

    print(f"machine: {machine()}; size {args.size}; one run per variant; common {args.set}\n")
    print(
        "| variant | stages run (s) | sum s | peak MiB | ranker NDCG@10 | blend NDCG@10 "
        "| ranker vs first [95%] |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for name, ran, total, peak, rk, bl, vs in rows:
        print(f"| {name} | {ran} | {total:.1f} | {peak:.0f} | {rk:.4f} | {bl:.4f} | {vs} |")


if __name__ == "__main__":
    main()
