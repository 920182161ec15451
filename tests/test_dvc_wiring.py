"""dvc.yaml declares exactly the params each stage reads, and the Hydra tree composes."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from recpipe.codedeps import PACKAGES, stage_files
from recpipe.models.registry import MODELS
from stages import check, ingest, split
from stages.candidates import params_for

ROOT = Path(__file__).resolve().parents[1]


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
        if name == "check":  # it reads every block: it depends on the whole file
            assert "params" not in stage and "params.yaml" in stage["deps"]
            continue
        assert tuple(stage.get("params", ())) == module.PARAMS, name
    cand = stages["candidates"]
    assert sorted(cand["foreach"]) == sorted(MODELS)
    for name in MODELS:
        declared = tuple(p.replace("${item}", name) for p in cand["do"]["params"])
        assert declared == params_for(name)


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


def test_every_stage_depends_on_its_code_file_and_no_module() -> None:
    """Each stage depends on ``data/code/<stage>.txt`` (``candidates@<model>`` on
    ``data/code/candidates/<model>.txt``), which the code stage writes, and on no project
    file itself: only the code stage reads the two folders."""
    stages = dvc_stages()
    written = stage_files(ROOT)
    for name, stage in stages.items():
        deps = stage["do"]["deps"] if name == "candidates" else stage["deps"]
        if name == "code":
            assert set(deps) == set(PACKAGES)
            continue
        code = (
            "data/code/candidates/${item}.txt" if name == "candidates" else f"data/code/{name}.txt"
        )
        assert code in deps, name
        assert not [d for d in deps if d.endswith(".py") or d in PACKAGES], name
        if name == "candidates":
            assert {f"candidates/{m}" for m in stage["foreach"]} <= set(written)
        else:
            assert name in written


def test_code_stage_lists_every_module_a_stage_imports() -> None:
    """Every project file a stage module loads (as Python loads them into an interpreter
    that has loaded no project module, see LOADED; for each model's candidate stage, after
    the registry has loaded the model) is among the files its code file lists."""
    written = stage_files(ROOT)
    runs = {f"stages.{name}": name for name in dvc_stages() if name != "candidates"}
    runs |= {f"stages.candidates:{m}": f"candidates/{m}" for m in MODELS}
    proc = subprocess.run(
        [sys.executable, "-c", LOADED, *runs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # a child that hangs fails the test instead of stalling make test
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    loaded: dict[str, list[str]] = {target: [] for target in runs}
    for line in out.splitlines():
        target, path = line.split("\t")
        loaded[target].append(path)
    for target, name in runs.items():
        module, _, model = target.partition(":")
        files = loaded[target]
        assert f"{module.replace('.', '/')}.py" in files and "recpipe/stage.py" in files, (
            name,
            files,
        )
        if model:
            assert f"recpipe/models/{model}.py" in files, name
        assert set(files) <= set(written[name]), (name, set(files) - set(written[name]))


# One interpreter per target would pay the third-party imports (about 1.5 s) seventeen
# times. These run once, then each target is imported in a forked child: no project module
# is loaded before the fork (checked), and third-party packages never import one, so each
# child loads the project files a fresh interpreter would. (One difference: numpy is
# loaded when `stages` pins the numeric kernels, so that function returns early; it loads
# no project module either way.)
LOADED = """
import importlib, os, pathlib, sys, traceback
for name in ("numpy", "pandas", "pyarrow.parquet", "scipy.sparse", "scipy.linalg",
             "pydantic", "yaml", "threadpoolctl"):
    importlib.import_module(name)
root = pathlib.Path.cwd().resolve()

def project_files():
    for m in list(sys.modules.values()):
        f = getattr(m, "__file__", None)
        if f and pathlib.Path(f).resolve().is_relative_to(root):
            path = pathlib.Path(f).resolve()
            p = path.relative_to(root).as_posix()
            if p.split("/")[0] in ("recpipe", "stages"):
                yield path, p

early = [p for _, p in project_files()]
if early:
    sys.exit(f"project modules loaded before the fork: {early}")
for target in sys.argv[1:]:
    module, _, model = target.partition(":")
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the child never returns to the loop: its own exit code, whatever happens
        code = 1
        try:
            importlib.import_module(module)
            if model:
                from recpipe.models.registry import model_class
                model_class(model)
            loaded = list(project_files())
            from recpipe.codedeps import runs_code
            for path, p in loaded:
                if path.name != "__init__.py" or runs_code(path):
                    print(f"{target}\t{p}")
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{target}: the child failed (its traceback is above)")
"""


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
    """blend and evaluate load the models: their modules (through the code files) and
    folders must be deps, and every model's list must be evaluated and plotted, or a new
    model leaves them stale."""
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = doc["stages"]
    written = stage_files(ROOT)
    for name in MODELS:
        for stage in ("blend", "evaluate", "bundle", "check"):
            assert f"recpipe/models/{name}.py" in written[stage], (stage, name)
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


def test_each_candidate_stage_runs_its_own_model_only() -> None:
    """Editing one model's module re-runs that model's candidate stage, not the others'."""
    written = stage_files(ROOT)
    for name in MODELS:
        models = {f for f in written[f"candidates/{name}"] if f.startswith("recpipe/models/")}
        assert f"recpipe/models/{name}.py" in models, name
        assert not models & {f"recpipe/models/{m}.py" for m in MODELS if m != name}, name


def test_every_stage_waits_for_the_params_check() -> None:
    """A bad params block must stop the run before any stage deletes its outputs: every
    stage depends on the check's output, and the check reads every block (it depends on
    the whole params file)."""
    stages = dvc_stages()
    assert "params.yaml" in stages["check"]["deps"]
    for name, stage in stages.items():
        if name in ("code", "check"):  # code reads no params, and check runs after it
            continue
        deps = stage["do"]["deps"] if name == "candidates" else stage["deps"]
        assert "reports/params_checked.json" in deps, name
    declared = set(check.PARAMS)
    read = set()
    for name, stage in stages.items():
        for block in stage["do"]["params"] if name == "candidates" else stage.get("params", []):
            read.add(block.split(".")[0])
    assert read <= declared, read - declared
