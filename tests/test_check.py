"""The check stage: every params mistake stops the run before any stage, named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stages import check

ROOT = Path(__file__).resolve().parents[1]


def run_check(tmp_path: Path, edit) -> int:
    """The committed params.yaml, changed by ``edit``, checked in ``tmp_path``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return check.main(["--out", str(tmp_path / "checked.json"), "--params", str(path)])


def files_block(**changes) -> dict:
    block = yaml.safe_load((ROOT / "conf/data/files.yaml").read_text())
    block.update(changes)
    return block


def test_the_committed_params_pass(tmp_path: Path) -> None:
    assert run_check(tmp_path, lambda p: None) == 0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # what Hydra's advice (`+split.n_tset=2`) leads to
        (
            lambda p: p["split"].update(n_tset=2),
            "split.n_tset: unknown key (did you mean split.n_test?)",
        ),
        # `+spilt.n_test=2`: a whole block nothing would read
        (lambda p: p.update(spilt={"n_test": 2}), "spilt: unknown key (did you mean split?)"),
        (
            lambda p: p["candidates"].update(alss=p["candidates"].pop("als")),
            "candidates.alss: unknown model (did you mean candidates.als?)",
        ),
        (
            lambda p: p["candidates"]["ease"].update(l3=1.0),
            "candidates.ease.l3: unknown key (did you mean candidates.ease.l2?)",
        ),
    ],
    ids=["nested key", "top-level block", "model name", "model setting"],
)
def test_a_misspelled_key_is_named_with_the_one_meant(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, edit, message: str
) -> None:
    assert run_check(tmp_path, edit) == 2
    assert f"{tmp_path / 'params.yaml'}: {message}" in caplog.text, caplog.text
    assert not (tmp_path / "checked.json").exists()


def test_files_source_without_its_folder_says_where_to_put_the_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: `-S data=files` with the default data.dep failed in DVC with nothing but
    "No such file or directory: data/user"."""
    monkeypatch.chdir(tmp_path)
    assert run_check(tmp_path, lambda p: p.update(data=files_block())) == 2
    assert (
        "data.dep: 'data/user' does not exist. data=files reads your own files: put them in "
        "data/user/ (data.interactions is 'data/user/interactions.csv'), or point data.dep at "
        "the folder that holds them and data.interactions at the interactions file, e.g. "
        "-S data.dep=shop -S data.interactions=shop/events.csv"
    ) in caplog.text, caplog.text
    (tmp_path / "data/user").mkdir(parents=True)
    caplog.clear()
    assert run_check(tmp_path, lambda p: p.update(data=files_block())) == 2
    assert (
        "data.interactions: file 'data/user/interactions.csv' not found (data.dep is "
        "'data/user')" in caplog.text
    ), caplog.text
    (tmp_path / "data/user/interactions.csv").write_text("user_id,item_id,timestamp\n")
    (tmp_path / "items.csv").write_text("item_id,title\n")
    caplog.clear()
    assert run_check(tmp_path, lambda p: p.update(data=files_block(items="items.csv"))) == 0
    assert (
        "data.items 'items.csv' is outside data.dep 'data/user': DVC will not re-run ingest "
        "when it changes" in caplog.text
    ), caplog.text
