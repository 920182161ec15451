"""End to end: the real `dvc exp run` / `dvc repro` on a tiny config in a temporary copy."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import dvc

ROOT = Path(__file__).resolve().parents[1]
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
