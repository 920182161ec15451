"""Review a change: which metric differences against a git revision are bigger than noise.

Usage: ``python -m stages.review --base REV [--head workspace|REV] [--n-boot 2000] [--seed 0]
[--level 0.95]``, run from the repository root after ``dvc repro`` (or ``dvc exp run``).
Prints Markdown to stdout: a one-line summary, the params that changed (``dvc params diff``,
or a diff of ``params.yaml`` when dvc is unavailable), and per model the headline metrics
before and after with a paired bootstrap verdict over the users both runs scored.

The base run's files are read from git (``git show REV:reports/...``): the evaluate stage's
reports are committed (``cache: false``), so any commit holds its own numbers and nothing
has to be pulled. Outputs that only DVC holds are read through ``dvc.api`` as a fallback.
Those numbers were computed on whichever machine committed them; ``--base-dir DIR`` reads
the base run's files from ``DIR`` instead, a checkout of ``--base`` where the pipeline was
run on this machine (what CI does: ``.github/workflows/review.yml``), so that both sides
come from one machine. Params are still compared with ``--base``'s ``params.yaml``.

Not a DVC stage: it compares two runs instead of producing one. Exit code 0 whatever the
verdicts; 1 when an input (a file, a revision) is missing, with a message naming it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from recpipe.errors import DataError
from recpipe.evaluation.review import compare_runs, diff_params, render_params_table, render_review
from recpipe.log import get_logger

WORKSPACE = "workspace"
"""``--head`` value meaning the files on disk rather than a commit."""

log = get_logger("review")


class InputError(Exception):
    """A file or revision the review needs is missing; the message names it."""


def _git(args: list[str], repo: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=120)
    except OSError as exc:  # git itself is missing
        raise InputError(f"cannot run git: {exc}") from exc


def resolve_rev(rev: str, repo: Path) -> str:
    """The commit ``rev`` names (full sha); InputError naming ``rev`` when there is none."""
    proc = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], repo)
    if proc.returncode != 0:
        raise InputError(
            f"unknown git revision {rev!r} in {repo.resolve()} "
            "(in CI, check out with fetch-depth: 0 so the base branch is present)"
        )
    return proc.stdout.decode().strip()


def read_bytes(path: str, rev: str, repo: Path) -> bytes:
    """Contents of ``path`` (relative to ``repo``) in the workspace or in revision ``rev``."""
    if rev == WORKSPACE:
        file = repo / path
        if not file.is_file():
            raise InputError(f"{path} not found in the workspace: run `dvc repro` first")
        return file.read_bytes()
    proc = _git(["show", f"{rev}:./{path}"], repo)
    if proc.returncode == 0:
        return proc.stdout
    try:
        # An output DVC caches is not in git; its cache may still hold this revision's copy.
        import dvc.api

        return dvc.api.read(path, repo=str(repo), rev=rev, mode="rb")
    except Exception as exc:  # dvc raises many types; each means "not available"
        log.debug("dvc.api.read(%s, rev=%s) failed: %s", path, rev, exc)
    raise InputError(
        f"{path} is not in revision {rev!r}: was the pipeline run and its reports committed "
        "there? (the evaluate stage's reports are committed with the code)"
    )


def read_metrics(path: str, rev: str, repo: Path) -> dict[str, Any]:
    """Parsed ``metrics.json`` of a revision or the workspace."""
    where = f"{path} ({rev})"
    try:
        data = json.loads(read_bytes(path, rev, repo))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc}", file=where) from exc
    if not isinstance(data, dict):
        raise DataError("expected an object {model: {metric: value}}", file=where)
    return data


def read_per_user(path: str, rev: str, repo: Path) -> pd.DataFrame:
    """``per_user.parquet`` of a revision or the workspace, read in memory."""
    try:
        return pd.read_parquet(io.BytesIO(read_bytes(path, rev, repo)))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read parquet: {exc}", file=f"{path} ({rev})") from exc


def _dvc_executable() -> str | None:
    # The dvc installed beside this interpreter matches the project's pinned version; a dvc
    # on PATH is the next best thing.
    local = Path(sys.executable).parent / "dvc"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("dvc")


def params_diff(base: str, head: str, params_path: str, repo: Path) -> tuple[str, str]:
    """Markdown of the params that changed, and a note saying where it came from.

    ``dvc params diff`` knows which params the stages track; when it is unavailable or
    fails, the flattened keys of ``params.yaml`` of both sides are diffed instead.
    """
    dvc = _dvc_executable()
    reason = "dvc not found"
    if dvc:
        cmd = [dvc, "params", "diff", base, *([] if head == WORKSPACE else [head]), "--md"]
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        try:
            proc = subprocess.run(
                cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"dvc params diff could not run: {exc}"
        else:
            if proc.returncode == 0:
                return proc.stdout.strip(), "Params: `dvc params diff`."
            reason = f"dvc params diff failed: {proc.stderr.strip()}"
    log.warning("%s; diffing %s instead", reason, params_path)
    old = yaml.safe_load(read_bytes(params_path, base, repo)) or {}
    new = yaml.safe_load(read_bytes(params_path, head, repo)) or {}
    note = f"Params: diff of `{params_path}` (`dvc params diff` was unavailable)."
    return render_params_table(diff_params(old, new)), note


def review(args: argparse.Namespace) -> str:
    """The review Markdown for parsed arguments; raises InputError/DataError on bad inputs."""
    repo = Path(args.repo)
    base_sha = resolve_rev(args.base, repo)
    head_sha = None if args.head == WORKSPACE else resolve_rev(args.head, repo)
    base_label = f"`{args.base}` ({base_sha[:7]})"
    head_label = "the workspace" if head_sha is None else f"`{args.head}` ({head_sha[:7]})"
    # the base run's numbers: rerun here (a folder), or as committed (another machine's?)
    base_rev, base_repo = args.base, repo
    if args.base_dir is not None:
        base_rev, base_repo = WORKSPACE, Path(args.base_dir)
        base_label += " rerun here"
        checked_out = resolve_rev("HEAD", base_repo)
        if checked_out != base_sha:
            raise InputError(
                f"--base-dir {args.base_dir} has {checked_out[:7]} checked out, not "
                f"{args.base} ({base_sha[:7]})"
            )
        for path in (args.per_user, args.metrics):
            if not (base_repo / path).is_file():
                raise InputError(
                    f"{path} not found in --base-dir {args.base_dir}: run the pipeline there"
                )

    head_per_user = read_per_user(args.per_user, args.head, repo)
    head_metrics = read_metrics(args.metrics, args.head, repo)
    base_per_user = read_per_user(args.per_user, base_rev, base_repo)
    base_metrics = read_metrics(args.metrics, base_rev, base_repo)
    params_md, params_source = params_diff(args.base, args.head, args.params, repo)

    run = compare_runs(
        base_per_user,
        head_per_user,
        base_metrics,
        head_metrics,
        n_boot=args.n_boot,
        seed=args.seed,
        level=args.level,
        base_name=f"{args.per_user} ({args.base_dir or args.base})",
        head_name=f"{args.per_user} ({args.head})",
    )
    return render_review(
        run,
        params_md,
        base_label=base_label,
        head_label=head_label,
        params_source=params_source,
    )


def _level(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m stages.review",
        description="Compare the workspace (or --head) with a git revision: params that "
        "changed, headline metrics per model, and paired bootstrap verdicts. Prints Markdown.",
    )
    ap.add_argument("--base", required=True, help="git revision to compare with (e.g. main)")
    ap.add_argument(
        "--head", default=WORKSPACE, help="'workspace' (default: the files on disk) or a revision"
    )
    ap.add_argument(
        "--base-dir",
        default=None,
        help="read the base run's reports from this checkout of --base, where the pipeline "
        "ran on this machine, instead of the numbers committed in --base",
    )
    ap.add_argument("--n-boot", type=_positive, default=2000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    ap.add_argument("--level", type=_level, default=0.95, help="confidence level")
    ap.add_argument("--metrics", default="reports/metrics.json", help="metrics file (both runs)")
    ap.add_argument("--per-user", default="reports/per_user.parquet", help="per-user metrics")
    ap.add_argument("--params", default="params.yaml", help="params file (fallback diff)")
    ap.add_argument("--repo", default=".", help="repository root (default: current folder)")
    args = ap.parse_args(argv)
    try:
        text = review(args)
    except (InputError, DataError) as exc:
        log.error("error: %s", exc)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
