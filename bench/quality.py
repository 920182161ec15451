"""Accuracy of the whole pipeline on MovieLens-100k, beside published figures.

    python bench/quality.py --data ../shared/data/ml-100k \\
        [--protocol ms_benchmark temporal] [--json out.json] [--workdir /tmp/recpipe-quality] \\
        [--set ranker.train_negatives=50] [--per-user DIR]

For each protocol it runs the real pipeline through ``dvc exp run`` in a scratch git copy of
the project (the files a fresh clone would get, MovieLens read from ``--data`` and never copied
into the repository):

- ``ms_benchmark``: ``-S +experiment=ms_benchmark``, the per-user random split of Microsoft
  Recommenders' MovieLens benchmark (test-fold models learn from 75% of each user's ratings,
  every test rating is relevant);
- ``temporal``: the project's default split (per user, the last items by time are the test
  targets).

It then reads ``reports/metrics.json`` and ``reports/intervals.json`` and prints, per
protocol, a Markdown table of every candidate model, the blend and the ranker (NDCG@10 with
its 95% bootstrap interval, P@10, Recall@10, MAP@10) followed by the published figures for
the same protocol, marked as such. ``--json`` writes the same numbers.

The scratch-repository helpers here (:func:`fresh_repo`, :func:`run_pipeline`) are also used
by ``bench/peers.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import copy_project  # noqa: E402
from recpipe.evaluation.metrics import paired_bootstrap  # noqa: E402

PROTOCOLS: tuple[str, ...] = ("ms_benchmark", "temporal")
"""Protocol names, in the order they are run by default."""

METRICS: tuple[str, ...] = ("ndcg@10", "precision@10", "recall@10", "map@10")
"""Columns of the tables (keys of ``reports/metrics.json``)."""

HEADERS: dict[str, str] = {
    "ndcg@10": "NDCG@10",
    "precision@10": "P@10",
    "recall@10": "Recall@10",
    "map@10": "MAP@10",
}

MODEL_ORDER: tuple[str, ...] = (
    "popularity",
    "itemknn",
    "svd",
    "als",
    "tfidf",
    "ease",
    "seqknn",
    "blend",
    "ranker",
)
"""Row order of our models; any other model in metrics.json follows, sorted by name."""

PUBLISHED_SOURCE = "Microsoft Recommenders, MovieLens-100k benchmark (random per-user 75/25)"
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "ms_benchmark": {
        "BiVAE": {"ndcg@10": 0.4687, "precision@10": 0.4082},
        "BPR": {"ndcg@10": 0.4450},
        "LightGCN": {"ndcg@10": 0.4164},
        "SAR": {"ndcg@10": 0.3938},
        "NCF": {"ndcg@10": 0.3686},
    },
    "temporal": {},
}
"""Published figures per protocol: model -> metric -> value (absent metric: not given)."""

NO_PUBLISHED: dict[str, str] = {
    "temporal": "No published figure: the per-user temporal split is this project's own "
    "protocol, and no public table uses it on ML-100k.",
}


@dataclass
class ProtocolResult:
    """What one protocol's pipeline run produced."""

    protocol: str
    metrics: dict[str, dict[str, float]]
    """Model -> metric -> value, as in ``reports/metrics.json`` (``candidate_recall`` left out)."""
    intervals: dict[str, dict[str, dict[str, float]]]
    """Model -> metric -> ``{"mean", "low", "high"}``, as in ``reports/intervals.json``."""
    seconds: float
    """Wall time of the ``dvc exp run``."""
    users: int | None = None
    """Evaluation users (users with at least one relevant test target)."""
    published: dict[str, dict[str, float]] = field(default_factory=dict)
    paired: dict[str, dict[str, float | bool]] = field(default_factory=dict)
    """Reference name -> paired bootstrap of the ranker's NDCG@10 minus the reference's."""


# --------------------------------------------------------------------------- scratch repo


def dvc_env() -> dict[str, str]:
    """Environment for ``dvc``: stage commands call ``python``, so this interpreter's folder
    (the project's venv) comes first on PATH; no analytics."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def fresh_repo(dst: Path) -> Path:
    """A scratch git copy of the project at ``dst`` (replaced if it exists), without
    ``reports/`` and ``dvc.lock`` (see :func:`bench._common.copy_project`)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    return copy_project(dst)


def overrides(data: Path, protocol: str) -> list[str]:
    """The ``dvc exp run -S`` overrides of one protocol on ML-100k at ``data``."""
    out = ["data=movielens", "data.variant=100k", f"data.path={data.resolve()}"]
    if protocol == "ms_benchmark":
        out.append("+experiment=ms_benchmark")
    elif protocol != "temporal":
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
    return out


def run_pipeline(
    repo: Path, data: Path, protocol: str, extra: tuple[str, ...] = ()
) -> ProtocolResult:
    """``dvc exp run`` the whole pipeline in ``repo`` for ``protocol``; read its reports.

    The results stay in ``repo``'s workspace (``data/split``, ``params.yaml`` ...), so a
    caller can fit further models on exactly the same split.
    """
    dvc = str(Path(sys.executable).parent / "dvc")
    cmd = [dvc, "exp", "run"]
    for o in [*overrides(data, protocol), *extra]:
        cmd += ["-S", o]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=dvc_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {repo}:\n{proc.stdout}\n{proc.stderr}")
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    metrics.pop("candidate_recall", None)
    # Rating-only entries (RMSE, no ranked list) have no row in a top-N table.
    metrics = {m: v for m, v in metrics.items() if "ndcg@10" in v}
    intervals = json.loads((repo / "reports/intervals.json").read_text())
    users = {int(m["users"]) for m in metrics.values() if "users" in m}
    return ProtocolResult(
        protocol=protocol,
        metrics=metrics,
        intervals=intervals,
        seconds=seconds,
        users=users.pop() if len(users) == 1 else None,
        published=PUBLISHED.get(protocol, {}),
        paired=ranker_against_references(repo, metrics),
    )


def ranker_against_references(repo: Path, metrics: dict) -> dict[str, dict[str, float | bool]]:
    """Paired bootstrap (2,000 resamples of the evaluation users, seed 0) of the ranker's
    per-user NDCG@10 minus the best single candidate model's and the blend's, from
    ``reports/per_user.parquet``."""
    per_user = pd.read_parquet(repo / "reports/per_user.parquet")
    wide = per_user.pivot(index="user_idx", columns="model", values="ndcg@10")
    if "ranker" not in wide:
        return {}
    singles = [m for m in metrics if m not in ("blend", "ranker") and m in wide]
    best = max(singles, key=lambda m: metrics[m]["ndcg@10"]) if singles else None
    refs = {f"best single model ({best})": best} if best else {}
    if "blend" in wide:
        refs["blend"] = "blend"
    return {
        label: paired_bootstrap(wide["ranker"].to_numpy(), wide[m].to_numpy(), 2000, 0)
        for label, m in refs.items()
    }


# --------------------------------------------------------------------------- output


def ordered_models(names: list[str] | set[str]) -> list[str]:
    """Our model names in table order (:data:`MODEL_ORDER` first, then the rest sorted)."""
    known = [m for m in MODEL_ORDER if m in names]
    return known + sorted(set(names) - set(known))


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def render(result: ProtocolResult) -> str:
    """The Markdown table of one protocol: our models, then the published reference rows."""
    head = ["model", "source"] + [HEADERS[m] for m in METRICS]
    lines = [
        f"### Protocol `{result.protocol}`",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * len(METRICS),
    ]
    for model in ordered_models(list(result.metrics)):
        values = result.metrics[model]
        cells = []
        for m in METRICS:
            cell = _fmt(values.get(m))
            iv = result.intervals.get(model, {}).get(m)
            if m == "ndcg@10" and iv:
                cell += f" ({iv['low']:.4f}–{iv['high']:.4f})"
            cells.append(cell)
        lines.append(f"| {model} | ours | " + " | ".join(cells) + " |")
    for model, values in result.published.items():
        cells = [_fmt(values.get(m)) for m in METRICS]
        lines.append(f"| {model} | **published** | " + " | ".join(cells) + " |")
    lines.append("")
    for label, p in result.paired.items():
        verdict = "beyond noise" if p["significant"] else "within noise"
        lines.append(
            f"- ranker − {label}: {p['diff']:+.4f} NDCG@10, 95% paired interval "
            f"[{p['low']:+.4f}, {p['high']:+.4f}]: {verdict}"
        )
    if result.paired:
        lines.append("")
    users = f"{result.users} evaluation users; " if result.users else ""
    lines.append(
        f"{users}NDCG@10 of ours with its 95% bootstrap interval over users; "
        f"`dvc exp run` took {result.seconds:.0f} s."
    )
    if result.published:
        lines.append(f"Published rows: {PUBLISHED_SOURCE}; – = not given.")
    elif result.protocol in NO_PUBLISHED:
        lines.append(NO_PUBLISHED[result.protocol])
    return "\n".join(lines)


def as_json(results: list[ProtocolResult]) -> dict:
    """The numbers of every table, for ``--json``."""
    out: dict = {}
    for r in results:
        ours = {}
        for model in ordered_models(list(r.metrics)):
            row = {m: r.metrics[model].get(m) for m in METRICS}
            iv = r.intervals.get(model, {}).get("ndcg@10")
            if iv:
                row["ndcg@10_low"], row["ndcg@10_high"] = iv["low"], iv["high"]
            ours[model] = row
        out[r.protocol] = {
            "ours": ours,
            "published": r.published,
            "published_source": PUBLISHED_SOURCE if r.published else None,
            "note": NO_PUBLISHED.get(r.protocol) if not r.published else None,
            "users": r.users,
            "dvc_exp_run_seconds": round(r.seconds, 1),
            "ranker_paired_ndcg@10": r.paired,
        }
    return out


def machine() -> str:
    """Cores, RAM and Python version of this machine."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {sys.version.split()[0]}"


def check_data(path: Path) -> Path:
    """``path`` resolved; it must be a local ML-100k copy (folder with u.data, or the zip)."""
    path = path.expanduser().resolve()
    ok = (path / "u.data").is_file() if path.is_dir() else path.suffix == ".zip"
    if not path.exists() or not ok:
        raise SystemExit(f"--data {path}: not a MovieLens-100k folder (u.data) or zip")
    return path


def scratch_dir(workdir: str | None, prefix: str) -> tuple[Path, bool]:
    """(folder for the scratch repository, whether to delete it afterwards)."""
    if workdir:
        return Path(workdir).expanduser().resolve() / "repo", False
    return Path(tempfile.mkdtemp(prefix=prefix)) / "repo", True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True, type=Path, help="local ML-100k folder or zip")
    ap.add_argument("--protocol", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--workdir", help="keep the scratch repository under this folder")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra `dvc exp run -S` override, e.g. ranker.train_negatives=50 (repeatable)",
    )
    ap.add_argument(
        "--per-user",
        type=Path,
        help="folder to copy each protocol's reports/per_user.parquet into "
        "(<protocol>.parquet), for paired comparisons between settings",
    )
    args = ap.parse_args(argv)
    data = check_data(args.data)
    repo, cleanup = scratch_dir(args.workdir, "recpipe-quality-")
    print(f"machine: {machine()}; scratch repository: {repo}\n", flush=True)
    try:
        fresh_repo(repo)
        results = []
        for protocol in args.protocol:
            result = run_pipeline(repo, data, protocol, tuple(args.set))
            results.append(result)
            if args.per_user:
                args.per_user.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(
                    repo / "reports/per_user.parquet", args.per_user / f"{protocol}.parquet"
                )
            print(render(result) + "\n", flush=True)
    finally:
        if cleanup:
            shutil.rmtree(repo.parent, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(as_json(results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
