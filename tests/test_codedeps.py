"""The code stage's fingerprints: which project files each stage runs, read from the source."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from recpipe.codedeps import import_closure, stage_files, write_digests
from stages import code

REGISTRY = '''"""Models by name."""
import importlib

MODELS: dict[str, str] = {"one": "recpipe.models.one:One", "two": "recpipe.models.two:Two"}


def model_class(name):
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)
'''

TREE = {
    "stages/__init__.py": "from recpipe.stage import pin\nNUMERICS = pin()\n",
    "stages/top.py": "import numpy\nfrom recpipe.sub import a\n",
    "stages/candidates.py": "from recpipe.models.registry import model_class\n",
    "stages/blend.py": "from recpipe.models import registry\n",
    "stages/plain.py": "from recpipe import stage\n",
    "recpipe/__init__.py": '"""The package: only a docstring."""\n',
    "recpipe/stage.py": "def pin():\n    return 1\n",
    "recpipe/sub/__init__.py": '"""Doc."""\nfrom recpipe.sub import pkg_dep\n',
    "recpipe/sub/pkg_dep.py": "",
    "recpipe/sub/a.py": "from .b import thing\nfrom recpipe.sub.a import helper\n",
    "recpipe/sub/b.py": (
        "def f():\n    from recpipe.lazy import g\n"
        # a module loaded by name, and prose naming a module, which is not followed
        'RATING = "recpipe.named"\nNOTE = "see recpipe.unused for more"\n'
    ),
    "recpipe/lazy.py": "",
    "recpipe/named.py": "",
    "recpipe/unused.py": "",
    "recpipe/models/__init__.py": "",
    "recpipe/models/base.py": "",
    "recpipe/models/registry.py": REGISTRY,
    # a module a model loads by name: followed for its candidate stage too
    "recpipe/models/one.py": 'from recpipe.models.base import x\nPLUGIN = "recpipe.plugin"\n',
    "recpipe/plugin.py": "",
    "recpipe/models/two.py": "from recpipe.models.base import x\nfrom recpipe import lazy\n",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name, text in TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_closure_follows_every_kind_of_import(tree: Path) -> None:
    """Absolute, relative, ``from pkg import module`` and function-level imports, through
    packages, and modules named whole in a string (what ``import_module`` is given);
    third-party modules, names that are not modules and prose are left out."""
    assert import_closure(tree, "stages.top") == {
        "stages",
        "stages.top",
        "recpipe",
        "recpipe.stage",  # through stages/__init__.py
        "recpipe.sub",
        "recpipe.sub.pkg_dep",
        "recpipe.sub.a",
        "recpipe.sub.b",
        "recpipe.lazy",
        "recpipe.named",
    }
    held_by_b = import_closure(tree, "stages.top", names_not_followed=frozenset({"recpipe.sub.b"}))
    assert "recpipe.named" not in held_by_b


def test_each_stage_lists_the_files_it_runs(tree: Path) -> None:
    files = stage_files(tree)
    assert set(files) == {"top", "plain", "blend", "candidates/one", "candidates/two"}
    assert files["top"] == [  # __init__.py files that run nothing are left out
        "recpipe/lazy.py",
        "recpipe/named.py",
        "recpipe/stage.py",
        "recpipe/sub/__init__.py",
        "recpipe/sub/a.py",
        "recpipe/sub/b.py",
        "recpipe/sub/pkg_dep.py",
        "stages/__init__.py",
        "stages/top.py",
    ]
    assert files["plain"] == ["recpipe/stage.py", "stages/__init__.py", "stages/plain.py"]
    # a stage that reaches the registry can load every model by name
    assert {"recpipe/models/one.py", "recpipe/models/two.py"} <= set(files["blend"])
    # a candidate stage runs its own model (and what it imports) and no other
    common = ["recpipe/models/base.py", "recpipe/models/registry.py", "recpipe/stage.py"]
    assert files["candidates/one"] == sorted(
        [
            *common,
            "recpipe/models/one.py",
            "recpipe/plugin.py",
            "stages/__init__.py",
            "stages/candidates.py",
        ]
    )
    assert files["candidates/two"] == sorted(
        [
            *common,
            "recpipe/lazy.py",
            "recpipe/models/two.py",
            "stages/__init__.py",
            "stages/candidates.py",
        ]
    )


def test_an_edit_changes_the_files_of_exactly_the_stages_that_run_it(tree: Path) -> None:
    out = tree / "data" / "code"
    write_digests(tree, out)
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.txt")}
    assert set(before) == {f"{s}.txt" for s in stage_files(tree)}
    # each line: the sha256 of a file and its path, as sha256sum writes them
    lines = before["plain.txt"].decode().splitlines()
    assert lines[0].startswith("#")
    for line in lines[1:]:
        digest, name = line.split("  ")
        assert digest == hashlib.sha256((tree / name).read_bytes()).hexdigest()
    with open(tree / "recpipe/lazy.py", "a") as f:
        f.write("# an edit\n")
    write_digests(tree, out)  # over the previous folder
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.txt")}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"top.txt", "blend.txt", "candidates/two.txt"}
    assert os.listdir(out.parent) == ["code"]  # no temporary folder left beside it


def test_a_computed_import_outside_the_loaders_stops_the_code_stage(tree: Path) -> None:
    """The registry computes its imports (it is one of the loaders); anywhere else the code
    stage cannot tell what would be loaded, so it says where instead of leaving it out."""
    assert stage_files(tree)  # the tree's registry imports by a computed name: allowed
    (tree / "recpipe/sub/b.py").write_text(
        "import importlib\n\ndef f(n):\n    return importlib.import_module(f'recpipe.{n}')\n"
    )
    with pytest.raises(ValueError, match=r"sub/b\.py, line 4: an import whose module name"):
        stage_files(tree)
    (tree / "recpipe/sub/b.py").write_text("def f():\n    return __import__('recpipe.lazy')\n")
    assert "recpipe/lazy.py" in stage_files(tree)["top"]  # a literal name is followed


def test_a_folder_without_init_is_a_package(tree: Path) -> None:
    (tree / "recpipe/ns").mkdir()
    (tree / "recpipe/ns/mod.py").write_text("")
    (tree / "stages/plain.py").write_text("from recpipe import stage\nfrom recpipe.ns import mod\n")
    assert "recpipe/ns/mod.py" in stage_files(tree)["plain"]


def test_a_registry_without_its_models_literal_is_an_error(tree: Path) -> None:
    (tree / "recpipe/models/registry.py").write_text("MODELS = build()\n")
    with pytest.raises(ValueError, match="registry.py"):
        stage_files(tree)


def test_the_code_stage_fingerprints_this_project(tmp_path: Path) -> None:
    assert code.main(["--out", str(tmp_path / "code")]) == 0
    rank = (tmp_path / "code" / "rank.txt").read_text()
    assert "  stages/rank.py\n" in rank and "  recpipe/ranking.py\n" in rank
    listed = (tmp_path / "code" / "candidates" / "ease.txt").read_text()
    assert "  recpipe/models/ease.py\n" in listed and "recpipe/models/als.py" not in listed
