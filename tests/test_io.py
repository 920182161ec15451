"""Atomic outputs: one writer for every stage, usual file modes, all-or-nothing replacement."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pandas as pd
import pytest

from recpipe.io import atomic_path, write_json, write_many, write_parquet, write_text

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


def test_write_many_replaces_all_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_bytes(b"old a")
    (tmp_path / "b.parquet").write_bytes(b"old b")

    class Broken(pd.DataFrame):
        def to_parquet(self, *args, **kwargs):  # a disk that fills up half-way
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_many({tmp_path / "a.md": b"new a", tmp_path / "b.parquet": Broken({"x": [1]})})
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


def test_a_killed_write_leaves_nothing_the_next_write_keeps(tmp_path: Path) -> None:
    """Regression: `kill -9` during a write left `.NAME.XXXX.parquet.tmp` inside a persisted
    DVC output folder; it then became part of the output in dvc.lock. The next write of the
    same target removes it (and leaves other files alone)."""
    out = tmp_path / "prepared"
    out.mkdir()
    leftovers = [
        out / ".interactions.parquet.k3j9_x.parquet.tmp",  # write_parquet's pattern
        out / ".interactions.parquet.a1b2c3.tmp",  # write_many's
        out / ".items.parquet.zz.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"half a parquet file")
    (out / "notes.txt").write_text("mine")
    (out / ".interactions.parquet.keep").write_text("not a temporary")
    write_many({out / "interactions.parquet": pd.DataFrame({"a": [1]})})
    assert not leftovers[0].exists() and not leftovers[1].exists()
    assert leftovers[2].exists()  # another target's: removed when that target is written
    write_parquet(pd.DataFrame({"b": [2]}), out / "items.parquet")
    assert sorted(p.name for p in out.iterdir()) == [
        ".interactions.parquet.keep",
        "interactions.parquet",
        "items.parquet",
        "notes.txt",
    ]
