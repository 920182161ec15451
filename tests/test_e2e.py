"""End to end: the real `dvc exp run` / `dvc repro` on a tiny config in a temporary copy."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench.cross_machine import compare, digests
from recpipe.stage import cpu_flags
from tests.conftest import (
    OTHER_MACHINE,
    dvc,
    e2e_env,
    git,
    reset,
    review_md,
    stages_run,
)

ROOT = Path(__file__).resolve().parents[1]
# `make test` runs pytest-xdist with `--dist loadfile`: these tests take turns on one
# worker's copy of the tiny baseline, in file order.
pytestmark = pytest.mark.e2e


@pytest.fixture
def repo(tiny_repo: Path) -> Path:
    return tiny_repo


def test_pipeline_writes_every_output(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"]["n_events"] == 3000  # the preset was composed into params.yaml
    summary = json.loads((repo / "reports/ingest.json").read_text())
    assert summary["interactions"] == 3000 and summary["users"] == 120
    split = json.loads((repo / "reports/split.json").read_text())
    assert split["test_targets"]["pairs"] > 0 and split["valid_targets"]["pairs"] > 0
    for fold in ("valid", "test"):
        for model in ("popularity", "itemknn", "svd", "als", "tfidf", "ease", "seqknn"):
            recs = pd.read_parquet(repo / f"data/candidates/{fold}/{model}.parquet")
            assert len(recs) > 0, (fold, model)
            assert (repo / f"models/{model}/{fold}/model.json").exists()
        assert (repo / f"data/features/{fold}/users.parquet").exists()
        blend = pd.read_parquet(repo / f"data/blend/{fold}.parquet")
        assert {"m_hybrid", "m_als_norm", "m_ease_rank"} <= set(blend.columns)
    ranked = pd.read_parquet(repo / "data/rank/test_recs.parquet")
    assert len(ranked) > 0 and ranked["rank"].min() == 1
    ranker = json.loads((repo / "reports/ranker.json").read_text())
    assert ranker["lists_trained"] > 0
    assert (repo / "models/ranker/model.json").exists()
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert {"ranker", "blend", "als", "ease"} <= set(metrics)
    for name in ("segments.json", "intervals.json", "per_user.parquet", "report.md"):
        assert (repo / "reports" / name).exists(), name
    assert (repo / "reports/plots/embedding_map.png").exists()


def test_second_repro_runs_nothing(repo: Path) -> None:
    out = dvc(repo, "repro")
    assert "up to date" in out.lower(), out
    assert "Running stage" not in out


def repro_with(repo: Path, edit, *targets: str) -> list[str]:
    """Edit params.yaml, `dvc repro [targets]`, restore; returns the stages that ran."""
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    edit(params)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = dvc(repo, "repro", *targets)
        status = dvc(repo, "status")
    finally:
        reset(repo)
    repro_with.status = status  # type: ignore[attr-defined]
    return stages_run(out)


def test_split_change_reruns_split_and_later_not_ingest(repo: Path) -> None:
    # Only `split` (and what it needs) is reproduced; everything after it must then be stale.
    ran = repro_with(repo, lambda p: p["split"].update(n_valid=2), "split")
    assert ran == ["check", "split"], ran
    status = repro_with.status  # type: ignore[attr-defined]
    for stage in ("features:", "candidates@als:", "candidates@ease:"):
        assert stage in status, status
    assert "ingest:" not in status, status


def test_failed_ingest_under_dvc_keeps_the_previous_outputs(repo: Path) -> None:
    """`dvc repro` deletes a stage's outputs before it runs unless they persist: a run that
    stops on bad input must leave the previous prepared tables and summary in place."""
    watched = [
        repo / "data/prepared/interactions.parquet",
        repo / "data/prepared/items.parquet",
        repo / "data/prepared/users.parquet",
        repo / "reports/ingest.json",
    ]
    before = {p: p.read_bytes() for p in watched}
    bad = repo / "data/user/bad.csv"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text("user_id,item_id,stars,timestamp\nu1,i1,4,100\nu2,i2,good,200\n")
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    with open(ROOT / "conf/data/files.yaml") as f:
        files_cfg = yaml.safe_load(f)
    files_cfg.update(interactions="data/user/bad.csv", dep="data/user")
    files_cfg["columns"]["rating"] = "stars"
    params["data"] = files_cfg
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_bin = Path(sys.executable).parent / "dvc"
    try:
        proc = subprocess.run(
            [str(dvc_bin), "repro", "ingest"],
            cwd=repo,
            env=e2e_env(),
            capture_output=True,
            text=True,
        )
        after = {p: p.read_bytes() if p.exists() else None for p in watched}
    finally:
        bad.unlink()
        reset(repo)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "data/user/bad.csv" in message and "'stars'" in message and "row 2" in message, message
    for path in watched:
        assert after[path] == before[path], path


def test_a_bad_params_block_stops_the_run_before_any_output_is_deleted(repo: Path) -> None:
    """Regression: `-S split.n_test=-1` left data/split and reports/split.json deleted (DVC
    removes a stage's outputs before running it, and the stage found the error itself). The
    check stage runs first and stops the run with every output in place."""
    watched = [repo / "data/split/train.parquet", repo / "reports/split.json"]
    before = {p: p.read_bytes() for p in watched}
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["split"]["n_test"] = -1
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_bin = Path(sys.executable).parent / "dvc"
    try:
        proc = subprocess.run(
            [str(dvc_bin), "repro"], cwd=repo, env=e2e_env(), capture_output=True, text=True
        )
        after = {p: p.read_bytes() if p.exists() else None for p in watched}
    finally:
        reset(repo)
    assert proc.returncode != 0
    message = proc.stdout + proc.stderr
    assert "split.n_test" in message and "Running stage 'split'" not in message, message
    for path in watched:
        assert after[path] == before[path], path


def test_e2e_identical_rerun_reviews_as_no_change(repo: Path) -> None:
    """Every stage re-run from scratch writes the same bytes, and the review says so. On a
    CPU whose kernels are pinned (x86-64 with AVX2 and FMA) the re-run plays another
    machine: other dispatch settings and one thread (tests/test_cross_machine.py checks that
    these settings do move the floats without the pin)."""
    committed = {
        f: git(repo, "show", f"HEAD:reports/{f}").encode()
        for f in ("metrics.json", "segments.json", "intervals.json", "report.md")
    }
    # (the bundle's manifest names the commit it was built at: the baseline was built
    # before its commit)
    manifest = "models/bundle/manifest.json"
    before = digests(repo, ("data", "models"))
    pinned = platform.machine() == "x86_64" and {"avx2", "fma"} <= cpu_flags()
    try:
        dvc(repo, "repro", "--force", env=OTHER_MACHINE if pinned else None)
        rerun = {f: (repo / "reports" / f).read_bytes() for f in committed}
        after = digests(repo, ("data", "models"))
        before.pop(manifest), after.pop(manifest)
        out = review_md(repo)
    finally:
        reset(repo)
    # every stage ran again from scratch and wrote the same bytes
    for name, data in committed.items():
        assert rerun[name] == data, name
    assert after == before, compare(before, after)
    assert out.splitlines()[2] == "**No significant changes** (54 comparisons).", out
    assert "No params changed." in out
    # every per-user value is the same: the pipeline is deterministic for a seed
    assert "<summary>9 models identical to the base:" in out, out


def test_files_source_without_data_user_gets_a_hint_not_dvcs_bare_error(repo: Path) -> None:
    """Regression: `-S data=files` with the default data.dep stopped in DVC with "No such
    file or directory: .../data/user" and no word on what to do; the check stage, which DVC
    runs first, now says it, and every output stays in place."""
    shutil.rmtree(repo / "data/user", ignore_errors=True)  # an earlier test's folder
    watched = [repo / "data/prepared/interactions.parquet", repo / "reports/ingest.json"]
    before = {p: p.read_bytes() for p in watched}
    params_file = repo / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["data"] = yaml.safe_load((ROOT / "conf/data/files.yaml").read_text())
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_bin = Path(sys.executable).parent / "dvc"
    try:
        proc = subprocess.run(
            [str(dvc_bin), "repro"], cwd=repo, env=e2e_env(), capture_output=True, text=True
        )
        after = {p: p.read_bytes() for p in watched}
    finally:
        reset(repo)
    message = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "data.dep: 'data/user' does not exist. data=files reads your own files" in message
    assert "No such file or directory" not in message, message
    assert after == before


# Loaded by every Python process of the run below (PYTHONPATH): the ingest stage's process
# kills itself with SIGKILL where it would rename its finished temporary files into
# data/prepared, i.e. after writing them and before replacing the outputs.
KILL_AT_RENAME = """
import os, signal

_replace = os.replace


def replace(src, dst, *args, **kwargs):
    if os.path.basename(os.path.dirname(os.path.abspath(dst))) == "prepared":
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)


os.replace = replace
"""


def test_a_stage_killed_mid_write_leaves_no_trace_in_the_next_lock(
    repo: Path, tmp_path: Path
) -> None:
    """Regression: `kill -9` during ingest's write left `.interactions.parquet.*.tmp` in the
    persisted data/prepared; the next `dvc repro` recorded it as part of the output (four
    files instead of three) and re-ran everything downstream."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_AT_RENAME)
    prepared = repo / "data/prepared"
    before = {p.name: p.read_bytes() for p in prepared.iterdir()}
    lock_before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["ingest"]
    dvc_bin = Path(sys.executable).parent / "dvc"
    env = {**e2e_env(), "PYTHONPATH": str(hook)}
    try:
        killed = subprocess.run(
            [str(dvc_bin), "repro", "--force", "--single-item", "ingest"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
        )
        left = sorted(p.name for p in prepared.iterdir() if p.name.endswith(".tmp"))
        out = dvc(repo, "repro")
        after = {p.name: p.read_bytes() for p in prepared.iterdir()}
        lock_after = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["ingest"]
        status = dvc(repo, "status")
    finally:
        reset(repo)
    # the kill came between writing and renaming: three finished temporaries, old outputs
    assert killed.returncode != 0, killed.stdout + killed.stderr
    assert len(left) == 3 and all(name.startswith(".") for name in left), left
    # the next run re-ran ingest only, removed them, and recorded the same output as before
    assert stages_run(out) == ["ingest"], out
    assert after == before
    assert lock_after == lock_before
    assert lock_after["outs"][0]["nfiles"] == 3
    assert "up to date" in status.lower(), status
