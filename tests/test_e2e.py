"""End to end: the real `dvc exp run` / `dvc repro` on a tiny config in a temporary copy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ)
    # Stage commands say `python`: make it this interpreter (the project's venv).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def project_files() -> list[str]:
    """Files git would hand a fresh clone (tracked, plus new files not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("repo")
    for f in project_files():
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    dvc = str(Path(sys.executable).parent / "dvc")
    run(["git", "init", "-q"], dst)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], dst)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"], dst)
    run([dvc, "exp", "run", "-S", "+experiment=tiny"], dst)
    return dst


def dvc(repo: Path, *args: str) -> str:
    return run([str(Path(sys.executable).parent / "dvc"), *args], repo)


def test_pipeline_writes_every_output(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"]["n_events"] == 3000  # the preset was composed into params.yaml
    summary = json.loads((repo / "reports/ingest.json").read_text())
    assert summary["interactions"] == 3000 and summary["users"] == 120
    split = json.loads((repo / "reports/split.json").read_text())
    assert split["test_targets"]["pairs"] > 0 and split["valid_targets"]["pairs"] > 0
    for fold in ("valid", "test"):
        for model in ("popularity", "itemknn", "svd", "als", "tfidf", "ease"):
            recs = pd.read_parquet(repo / f"data/candidates/{fold}/{model}.parquet")
            assert len(recs) > 0, (fold, model)
            assert (repo / f"models/{model}/{fold}/model.pkl").exists()
        assert (repo / f"data/features/{fold}/users.parquet").exists()
        blend = pd.read_parquet(repo / f"data/blend/{fold}.parquet")
        assert {"m_hybrid", "m_als_norm", "m_ease_rank"} <= set(blend.columns)
    ranked = pd.read_parquet(repo / "data/rank/test_recs.parquet")
    assert len(ranked) > 0 and ranked["rank"].min() == 1
    ranker = json.loads((repo / "reports/ranker.json").read_text())
    assert ranker["users_trained"] > 0
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


def repro_with(repo: Path, edit) -> list[str]:
    """Edit params.yaml, `dvc repro`, restore; returns the stages that actually ran."""
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    edit(params)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = dvc(repo, "repro")
    finally:
        params_file.write_text(original)
        dvc(repo, "repro")  # back to the committed state (restored from the run cache)
    return [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]


def test_split_change_reruns_split_and_later_not_ingest(repo: Path) -> None:
    ran = repro_with(repo, lambda p: p["split"].update(n_valid=2))
    assert "split" in ran and "ingest" not in ran
    assert "candidates@als" in ran and "candidates@ease" in ran  # downstream of split


def test_model_change_reruns_only_that_model(repo: Path) -> None:
    ran = repro_with(repo, lambda p: p["candidates"]["als"].update(factors=4))
    assert ran[0] == "candidates@als"
    for other in ("ingest", "split", "features", "candidates@svd", "candidates@ease"):
        assert other not in ran, ran
    assert "blend" in ran and "rank" in ran  # downstream of the ALS candidates


def test_ranker_change_reruns_only_rank(repo: Path) -> None:
    ran = repro_with(repo, lambda p: p["ranker"].update(exclude=["p_*"]))
    assert ran == ["rank", "evaluate"], ran
