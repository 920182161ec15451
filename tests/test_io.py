"""Atomic outputs: one writer for every stage, usual file modes, all-or-nothing replacement."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from recpipe import io as io_module
from recpipe.io import (
    atomic_path,
    scratch_beside,
    staged_files,
    user_blocks_of,
    write_json,
    write_many,
    write_parquet,
    write_text,
)

ROOT = Path(__file__).resolve().parents[1]


def _expected_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def test_every_writer_gives_the_usual_mode(tmp_path: Path) -> None:
    """Regression: evaluate wrote its reports through its own copy of write_many, mode 0600
    (mkstemp's), while every other output was 0644."""
    frame = pd.DataFrame({"a": [1, 2]})
    write_many({tmp_path / "m.parquet": frame, tmp_path / "r.md": b"# report\n"})
    write_parquet(frame, tmp_path / "p.parquet")
    write_json({"x": 1}, tmp_path / "j.json")
    write_text("t", tmp_path / "t.txt")
    with atomic_path(tmp_path / "raw.bin") as tmp:
        tmp.write_bytes(b"\0")
    for name in ("m.parquet", "r.md", "p.parquet", "j.json", "t.txt", "raw.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == _expected_mode(), name
    assert (tmp_path / "r.md").read_bytes() == b"# report\n"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "m.parquet"), frame)


def test_write_many_replaces_all_or_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.md").write_bytes(b"old a")
    (tmp_path / "b.parquet").write_bytes(b"old b")

    def disk_full(table: object, dest: str | os.PathLike[str], **kwargs: object) -> None:
        Path(dest).write_bytes(b"PAR1 half a file")  # a disk that fills up half-way
        raise OSError("No space left on device")

    monkeypatch.setattr(io_module.pq, "write_table", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_many({tmp_path / "a.md": b"new a", tmp_path / "b.parquet": pd.DataFrame({"x": [1]})})
    assert (tmp_path / "a.md").read_bytes() == b"old a"
    assert (tmp_path / "b.parquet").read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md", "b.parquet"]  # no temp left


def test_stages_write_only_through_recpipe_io() -> None:
    """One writer for all outputs: no stage makes its own temporary files or renames."""
    for path in sorted((ROOT / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert "tempfile" not in names, path.name
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) not in {("os", "replace"), ("os", "rename")}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: no process has this id now
    return proc.pid


def test_a_killed_write_leaves_nothing_the_next_write_keeps(tmp_path: Path) -> None:
    """Regression: `kill -9` during a write left `.NAME.XXXX.parquet.tmp` inside a persisted
    DVC output folder; it then became part of the output in dvc.lock. The next write of the
    same target removes a dead writer's temporaries, and nothing else."""
    out = tmp_path / "prepared"
    out.mkdir()
    dead, alive = _dead_pid(), os.getppid()
    stale = [
        out / f".interactions.parquet.{dead}.k3j9_x.parquet.tmp",  # write_parquet's shape
        out / f".interactions.parquet.{dead}.a1b2c3.tmp",  # write_many's
    ]
    kept = [
        out / f".interactions.parquet.{alive}.zz.tmp",  # a live writer's: never touched
        out / f".items.parquet.{dead}.zz.tmp",  # another target's: removed with that one
        out / f".interactions.parquet.bak.{dead}.q.tmp",  # target interactions.parquet.bak
        out / ".interactions.parquet.keep",
        out / "notes.txt",
    ]
    for path in stale + kept:
        path.write_bytes(b"half a parquet file")
    write_many({out / "interactions.parquet": pd.DataFrame({"a": [1]})})
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    write_parquet(pd.DataFrame({"b": [2]}), out / "items.parquet")
    assert not kept[1].exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [p.name for p in kept if p != kept[1]] + ["interactions.parquet", "items.parquet"]
    )


def test_concurrent_writes_of_one_target_do_not_break_each_other(tmp_path: Path) -> None:
    """Regression (review): the second writer removed the first one's temporary file."""
    target = tmp_path / "t.json"
    with atomic_path(target) as first:
        first.write_text("1")
        with atomic_path(target) as second:
            second.write_text("2")
        assert first.exists()
    assert target.read_text() == "1"


# ------------------------------------------------------------------- streamed Parquet


def _users_frame(n_users: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_user = rng.integers(1, 7, size=n_users)
    users = np.repeat(np.arange(n_users) * 3, per_user)
    return pd.DataFrame(
        {
            "user_idx": users.astype(np.int64),
            "item_idx": rng.integers(0, 50, size=len(users)).astype(np.int64),
            "score": rng.random(len(users)).astype(np.float32),
        }
    )


@pytest.mark.parametrize("block", [1, 2, 7, 10_000])
def test_a_file_streamed_in_blocks_is_the_file_written_at_once(
    tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small row groups so that blocks straddle them.
    monkeypatch.setattr(io_module, "ROW_GROUP", 16)
    df = _users_frame(40)
    whole = tmp_path / "whole.parquet"
    with staged_files() as staged:
        staged.stream(whole).write(df)
    pieces = tmp_path / "pieces.parquet"
    with staged_files() as staged:
        rows = staged.stream(pieces)
        for start in range(0, len(df), block):
            rows.write(df.iloc[start : start + block])
    assert pieces.read_bytes() == whole.read_bytes()
    assert pq.ParquetFile(whole).metadata.num_row_groups == -(-len(df) // 16)
    # At pyarrow's default row group, the streamed file is frame_parquet's, byte for byte.
    monkeypatch.setattr(io_module, "ROW_GROUP", 1024 * 1024)
    with staged_files() as staged:
        staged.stream(pieces).write(df)
    io_module.frame_parquet(df, tmp_path / "at_once.parquet")
    assert pieces.read_bytes() == (tmp_path / "at_once.parquet").read_bytes()


def test_parquet_outputs_dictionary_encode_all_but_floats(tmp_path: Path) -> None:
    df = _users_frame(40).assign(
        event=lambda d: np.where(d["item_idx"] % 2 == 0, "view", "buy"),
        rank=lambda d: d["item_idx"].astype(np.float64),
    )
    streamed, at_once = tmp_path / "streamed.parquet", tmp_path / "at_once.parquet"
    with staged_files() as staged:
        staged.stream(streamed).write(df)
    io_module.frame_parquet(df, at_once)
    for path in (streamed, at_once):
        group = pq.ParquetFile(path).metadata.row_group(0)
        encodings = {
            group.column(j).path_in_schema: group.column(j).encodings
            for j in range(group.num_columns)
        }
        for col in ("user_idx", "item_idx", "event"):
            assert "RLE_DICTIONARY" in encodings[col], col
        for col in ("score", "rank"):
            assert "RLE_DICTIONARY" not in encodings[col], col
        pd.testing.assert_frame_equal(pd.read_parquet(path), df)


def test_staged_files_put_nothing_in_place_when_the_block_fails(tmp_path: Path) -> None:
    old = tmp_path / "a.parquet"
    pd.DataFrame({"user_idx": [9]}).to_parquet(old, index=False)
    before = old.read_bytes()
    with pytest.raises(RuntimeError), staged_files() as staged:
        staged.stream(old).write(_users_frame(3))
        staged.add(tmp_path / "b.md", b"b")
        raise RuntimeError("the stage failed half-way")
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet"]


def test_a_stream_refuses_a_block_with_other_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="differ from the first block"), staged_files() as s:
        rows = s.stream(tmp_path / "x.parquet")
        rows.write(_users_frame(2))
        rows.write(_users_frame(2).astype({"score": np.float64}))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("users", [1, 3, 1000])
def test_user_blocks_keep_every_user_whole_across_row_groups(tmp_path: Path, users: int) -> None:
    df = _users_frame(30, seed=1)
    path = tmp_path / "f.parquet"
    df.to_parquet(path, index=False, row_group_size=5)
    blocks = list(user_blocks_of(path, users))
    pd.testing.assert_frame_equal(pd.concat(blocks, ignore_index=True), df)
    sizes = [b["user_idx"].nunique() for b in blocks]
    assert all(s == users for s in sizes[:-1]) and 0 < sizes[-1] <= users
    seen = [set(b["user_idx"]) for b in blocks]
    assert all(a.isdisjoint(b) for i, a in enumerate(seen) for b in seen[i + 1 :])
    # only some columns: the same blocks of those columns
    narrow = list(user_blocks_of(path, users, ["user_idx", "score"]))
    assert len(narrow) == len(blocks)
    for a, b in zip(narrow, blocks, strict=True):
        pd.testing.assert_frame_equal(a, b[["user_idx", "score"]])


def test_user_blocks_of_an_empty_file_give_its_columns(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    _users_frame(2).iloc[:0].to_parquet(path, index=False)
    (block,) = list(user_blocks_of(path, 4))
    assert block.empty and list(block.columns) == ["user_idx", "item_idx", "score"]
    (block,) = list(user_blocks_of(path, 4, ["user_idx", "score"]))
    assert block.empty and list(block.columns) == ["user_idx", "score"]


def test_a_scratch_folder_goes_away_on_exit_and_after_a_killed_run(tmp_path: Path) -> None:
    """The bundle's scratch folder: removed with its files when the block ends, normally or
    by an error; one a killed run left (its process gone) is removed by the next, a live
    run's and another target's are not."""
    target = tmp_path / "bundle"
    with scratch_beside(target) as scratch:
        assert scratch.parent == tmp_path and scratch.name.startswith(f".bundle.{os.getpid()}.")
        (scratch / "0.parquet").write_bytes(b"pairs")
    assert not scratch.exists()
    with pytest.raises(RuntimeError, match="ranker failed"), scratch_beside(target) as scratch:
        (scratch / "0.parquet").write_bytes(b"pairs")
        raise RuntimeError("ranker failed")
    assert not scratch.exists()
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".bundle.{dead}.x1.scratch"
    kept = [tmp_path / f".bundle.{alive}.x2.scratch", tmp_path / f".other.{dead}.x3.scratch"]
    for folder in [stale, *kept]:
        folder.mkdir()
        (folder / "0.parquet").write_bytes(b"pairs")
    with scratch_beside(target):
        assert not stale.exists()
    assert all(folder.exists() for folder in kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)


def test_user_blocks_of_refuses_columns_it_cannot_cut_by(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    _users_frame(6).to_parquet(path, index=False)
    with pytest.raises(ValueError, match="f.parquet: the blocks need the user_idx column"):
        list(user_blocks_of(path, 2, ["item_idx"]))
    with pytest.raises(ValueError, match="f.parquet: no column 'rating'"):
        list(user_blocks_of(path, 2, ["user_idx", "rating"]))
