"""dvc.yaml declares exactly the params each stage reads, and the Hydra tree composes."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from recpipe.models.registry import MODELS
from stages import check, ingest, split
from stages.candidates import params_for

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "recpipe")
"""The project's own top-level packages: imports of these are dependencies to declare."""


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_declared_params_match_what_stages_read() -> None:
    stages = dvc_stages()
    assert "evaluate" in stages
    assert tuple(stages["ingest"]["params"]) == ingest.PARAMS
    assert tuple(stages["split"]["params"]) == split.PARAMS
    for name, stage in stages.items():
        if name == "candidates":
            continue
        module = importlib.import_module(f"stages.{name}")
        assert tuple(stage.get("params", ())) == module.PARAMS, name
    cand = stages["candidates"]
    assert sorted(cand["foreach"]) == sorted(MODELS)
    for name in MODELS:
        declared = tuple(p.replace("${item}", name) for p in cand["do"]["params"])
        assert declared == params_for(name)


def test_candidate_stages_depend_on_their_own_module_only() -> None:
    deps = dvc_stages()["candidates"]["do"]["deps"]
    models = [d for d in deps if d.startswith("recpipe/models/")]
    assert "recpipe/models/${item}.py" in models
    others = {f"recpipe/models/{m}.py" for m in MODELS}
    assert not others & set(models)


def compose_params(*overrides: str) -> dict:
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=list(overrides))
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def keys(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= keys(v, f"{prefix}{k}.")
    return out


def test_committed_params_have_the_composed_structure() -> None:
    """params.yaml may hold an experiment's values, but never stale or missing keys."""
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())
    data = committed["data"]
    composed = compose_params(f"data={data['source']}")
    assert keys(committed) == keys(composed), "params.yaml is stale: run `dvc exp run`"


def test_presets_compose() -> None:
    ms = compose_params("data=movielens", "+experiment=ms_benchmark")
    assert ms["split"]["method"] == "random"
    assert ms["split"]["ratios"] == [0.6, 0.15, 0.25]
    assert ms["data"]["source"] == "movielens"
    tiny = compose_params("+experiment=tiny")
    assert tiny["data"]["n_events"] < 10_000


@pytest.mark.parametrize(
    "overrides",
    [
        ("data=files", "+experiment=tiny"),
        ("+experiment=tiny", "data=files"),
        ("data=movielens", "+experiment=tiny"),
        ("+experiment=tiny", "data=movielens", "data.variant=1m"),
        ("+experiment=tiny", "data.n_users=50"),
    ],
)
def test_the_tiny_preset_combines_with_every_data_source(
    overrides: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: `+experiment=tiny` set data.n_users, n_items and n_events itself, which
    the files and MovieLens blocks refuse. It now chooses the data option `tiny` (the
    synthetic shop at the tiny size), which a data choice on the command line replaces."""
    params = compose_params(*overrides)
    tiny = compose_params("+experiment=tiny")
    source = next((o.split("=")[1] for o in overrides if o.startswith("data=")), "synthetic")
    assert params["data"]["source"] == source
    for block in ("candidates", "blend", "ranker", "eval"):  # the preset's model settings
        assert params[block] == tiny[block], block
    assert params["split"]["ranker_folds"] == 1
    if source == "synthetic":
        assert params["data"]["n_users"] == 50 and params["data"]["n_events"] == 3000
    if source == "movielens":
        assert params["data"]["variant"] == ("1m" if "data.variant=1m" in overrides else "100k")
    if source == "files":  # the check stage needs the files to exist
        monkeypatch.chdir(tmp_path)
        (tmp_path / "data/user").mkdir(parents=True)
        (tmp_path / "data/user/interactions.csv").write_text("user_id,item_id,timestamp\n")
    # every block as the stages will read it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    argv = ["--out", str(tmp_path / "checked.json"), "--params", str(tmp_path / "params.yaml")]
    assert check.main(argv) == 0


def test_the_tiny_preset_alone_composes_what_it_did_before() -> None:
    """The e2e baseline: the synthetic shop at 120 users, 80 items, 3,000 events, keys in
    the order of conf/data/synthetic.yaml (params.yaml's bytes did not change)."""
    data = compose_params("+experiment=tiny")["data"]
    synthetic = yaml.safe_load((ROOT / "conf/data/synthetic.yaml").read_text())
    assert list(data) == list(synthetic)
    assert data == {**synthetic, "n_users": 120, "n_items": 80, "n_events": 3000}


def _load_params_keys(module_file: Path) -> set[str]:
    """The params blocks a stage module passes to ``load_params`` (string literals)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(module_file.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "load_params":
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
    return found


def test_params_constants_are_what_the_code_loads() -> None:
    """Guards the PARAMS constants above: a new load_params call must be declared too."""
    for name in dvc_stages():
        if name == "candidates":
            continue
        module = importlib.import_module(f"stages.{name}")
        loaded = _load_params_keys(ROOT / "stages" / f"{name}.py")
        assert loaded == set(module.PARAMS), name


def _module_file(name: str) -> Path | None:
    """The project file of module ``name`` (``recpipe.x.y``), or None if it is not ours."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _direct_imports(name: str, path: Path) -> set[str]:
    """Project modules named by any import statement of one file, at any depth (an import
    inside a function is a dependency too); parent packages included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{parent}.{node.module}" if node.module else parent
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            targets = [mod] + [f"{mod}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in found if m.split(".")[0] in PACKAGES and _module_file(m)}


def _runs_code(path: Path) -> bool:
    """Whether a file holds more than a docstring (an ``__init__.py`` that runs code, like
    ``stages/__init__.py`` pinning the CPU kernels, shapes every output of its package)."""
    body = ast.parse(path.read_text()).body
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body
    )


def _imported_modules(modules: list[str]) -> dict[str, set[str]]:
    """For each module, the project files that importing it can load: the closure of its
    import statements, read from the source (``__init__.py`` files only when they run
    code)."""
    out = {}
    for root in modules:
        seen: set[str] = set()
        todo = [root]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            parts = name.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts))]
            todo += sorted(_direct_imports(name, _module_file(name)) - seen)
        paths = {_module_file(m) for m in seen}
        out[root] = {
            p.relative_to(ROOT).as_posix()
            for p in paths
            if p.name != "__init__.py" or _runs_code(p)
        }
    return out


def test_import_closure_follows_every_kind_of_import(tmp_path: Path, monkeypatch) -> None:
    """The closure the dependency check uses: absolute, relative, `from pkg import module`
    and function-level imports, through packages; third-party modules and names that are
    not modules are left out."""
    files = {
        "stages/__init__.py": "",
        "stages/top.py": "import numpy\nfrom recpipe.sub import a\n",
        "recpipe/__init__.py": "",
        "recpipe/sub/__init__.py": '"""Doc."""\nfrom recpipe.sub import pkg_dep\n',
        "recpipe/sub/pkg_dep.py": "",
        "recpipe/sub/a.py": "from .b import thing\nfrom recpipe.sub.a import helper\n",
        "recpipe/sub/b.py": "def f():\n    from recpipe.lazy import g\n",
        "recpipe/lazy.py": "",
        "recpipe/unused.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = _imported_modules(["stages.top"])["stages.top"]
    assert found == {
        "stages/top.py",
        "recpipe/sub/__init__.py",  # it runs code; the empty ones are left out
        "recpipe/sub/a.py",
        "recpipe/sub/b.py",
        "recpipe/lazy.py",
        "recpipe/sub/pkg_dep.py",
    }


def test_stages_depend_on_every_module_they_import() -> None:
    stages = dvc_stages()
    imported = _imported_modules([f"stages.{name}" for name in stages])
    for name, stage in stages.items():
        if name == "candidates":
            for model in MODELS:
                deps = {d.replace("${item}", model) for d in stage["do"]["deps"]}
                missing = imported["stages.candidates"] - deps
                assert not missing, (name, model, missing)
            continue
        missing = imported[f"stages.{name}"] - set(stage["deps"])
        assert not missing, (name, missing)


def _config_fields(cls) -> set[str]:
    return set(cls.model_fields)


def test_every_conf_file_sets_exactly_its_config_fields() -> None:
    """A field missing from conf/ cannot be overridden with `-S group.key=...` (Hydra wants
    `+key`) and is absent from params.yaml; an extra key would fail validation."""
    from recpipe.blending import BlendConfig
    from recpipe.evaluation.scoring import EvalConfig
    from recpipe.features.config import FeaturesConfig
    from recpipe.models.registry import model_class
    from recpipe.ranking import RankerConfig
    from recpipe.rating import RatingConfig

    groups = {
        "features": FeaturesConfig,
        "blend": BlendConfig,
        "ranker": RankerConfig,
        "rating": RatingConfig,
        "eval": EvalConfig,
    }
    checked = 0
    for group, cls in groups.items():
        for path in sorted((ROOT / "conf" / group).glob("*.yaml")):
            keys = set(yaml.safe_load(path.read_text()) or {})
            assert keys == _config_fields(cls), (path.name, keys ^ _config_fields(cls))
            checked += 1
    for name in MODELS:
        path = ROOT / "conf/candidates" / f"{name}.yaml"
        keys = set(yaml.safe_load(path.read_text()))
        assert keys == _config_fields(model_class(name).config_class), (name, keys)
        checked += 1
    assert checked >= len(groups) + len(MODELS)


def test_every_registered_model_is_wired_into_blend_and_evaluate() -> None:
    """blend and evaluate unpickle the models: their modules and folders must be deps, and
    every model's list must be evaluated and plotted, or a new model leaves them stale."""
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = doc["stages"]
    for name in MODELS:
        assert f"recpipe/models/{name}.py" in stages["blend"]["deps"], name
        assert f"models/{name}" in stages["blend"]["deps"], name
        assert f"--recs {name}=data/candidates/test/{name}.parquet" in stages["evaluate"]["cmd"]
    plotted = {}
    for plot in doc["plots"]:
        if isinstance(plot, dict):
            (spec,) = plot.values()
            for columns in spec["y"].values():
                plotted.setdefault(tuple(spec["y"]), set()).update(
                    columns if isinstance(columns, list) else [columns]
                )
    model_plots = [cols for cols in plotted.values() if "ease" in cols]
    assert model_plots
    for cols in model_plots:
        assert set(MODELS) <= cols, set(MODELS) - cols


LOADED_BY_NAME = {
    "check": [f"recpipe.models.{m}" for m in MODELS],
    "candidates": ["recpipe.models.${item}"],
    "blend": [f"recpipe.models.{m}" for m in MODELS],
    "evaluate": ["recpipe.models.svd", "recpipe.models.als", "recpipe.rating"],
    "bundle": [f"recpipe.models.{m}" for m in MODELS],
}
"""Modules a stage imports by name rather than with an import statement (the model
registry, the rating model behind ``recpipe.artifacts.load_model``)."""


def test_stages_declare_no_module_they_do_not_use() -> None:
    """The other half of exact dependencies: a declared module that the stage neither
    imports nor loads by name would re-run the stage for nothing when it changes."""
    stages = dvc_stages()
    for name, stage in stages.items():
        deps = stage["do"]["deps"] if name == "candidates" else stage["deps"]
        declared = {d for d in deps if d.endswith(".py")}
        used = set(_imported_modules([f"stages.{name}"])[f"stages.{name}"])
        for module in LOADED_BY_NAME.get(name, []):
            if "${item}" in module:
                # each model's stage: its own module and whatever model modules import
                used.add("recpipe/models/${item}.py")
                for model in MODELS:
                    closure = _imported_modules([f"recpipe.models.{model}"])
                    used |= closure[f"recpipe.models.{model}"] - {f"recpipe/models/{model}.py"}
            else:
                used |= _imported_modules([module])[module]
        assert declared <= used, (name, declared - used)


def test_every_stage_waits_for_the_params_check() -> None:
    """A bad params block must stop the run before any stage deletes its outputs: every
    stage depends on the check's output, and the check reads every block."""
    stages = dvc_stages()
    for name, stage in stages.items():
        if name == "check":
            continue
        deps = stage["do"]["deps"] if name == "candidates" else stage["deps"]
        assert "reports/params_checked.json" in deps, name
    declared = set(stages["check"]["params"])
    read = set()
    for name, stage in stages.items():
        for block in stage["do"]["params"] if name == "candidates" else stage.get("params", []):
            read.add(block.split(".")[0])
    assert read <= declared, read - declared
