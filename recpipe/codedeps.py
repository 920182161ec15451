"""Which of the project's own files each DVC stage runs, fingerprinted.

A stage must re-run when code it runs changes, and only then. ``dvc.yaml`` used to list, for
every stage, each module it imports: about 400 file entries in ``dvc.lock``, which DVC
parses and rewrites whole after every stage it runs (treeverse/dvc#10629; halving the lock
saved about 5 s of the synthetic default's minute). Instead, the ``code`` stage
(``stages/code.py``) depends on the ``recpipe/`` and ``stages/`` folders and writes one
small file per stage listing the sha256 of every project file that stage can run
(:func:`stage_files`); each stage depends on its file alone. The file's bytes change
exactly when one of those files changes, so an edit re-runs the stages that run the edited
file and no other, as the lists did, and a new import needs no edit of ``dvc.yaml``.

What a stage runs is read from the source (no module is imported): the closure of its
import statements at any depth (an import inside a function counts), parent packages
included (an ``__init__.py`` only when it runs code). The model registry imports a model's
module from its name (:data:`recpipe.models.registry.MODELS`, read from the registry's
source): a stage that reaches the registry can load any model, so it depends on every
model's files, except the stages of :data:`PER_MODEL_STAGES`, which run once per model
(``candidates@<model>``), load that model and nothing else through the loaders
(:data:`LOADERS`), and get one file per model, with that model's files only. Other modules
named in strings are followed the same way (``recpipe.artifacts`` imports the rating
model's module by name). An import whose module name is computed anywhere but in the
loaders stops the code stage with the file and line, rather than leave a file out.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

PACKAGES = ("stages", "recpipe")
"""The project's own top-level packages: what their imports reach is fingerprinted."""

REGISTRY = "recpipe.models.registry"
"""The module that imports models by name (its ``MODELS``: name -> ``"module:Class"``)."""

PER_MODEL_STAGES = ("candidates",)
"""Stage modules that ``dvc.yaml`` runs once per registered model, each run loading its own
model and nothing else through :data:`LOADERS`: fingerprinted per model, as
``<stage>/<model>.txt``."""

LOADERS = {
    REGISTRY: "a model's module, from the MODELS literal",
    "recpipe.artifacts": "the rating model's module, from _RATING_CLASS",
    "recpipe.models.base": "third-party modules only (Recommender.preload refuses others)",
}
"""The modules that import a module whose name they compute (``importlib.import_module``
given a variable), with what they load: the names they hold in strings are followed as
their imports. A computed import anywhere else stops the code stage (it could not tell
which files the stage runs)."""


def module_file(root: Path, name: str) -> Path | None:
    """The file of project module ``name`` (``recpipe.x.y``) under ``root``, or None when
    it is not one of the project's."""
    base = root.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):  # a package wins, as in Python
        if path.is_file():
            return path
    return None


def _is_module(root: Path, name: str) -> bool:
    """A project module: a file, or a folder (a package, with or without ``__init__.py``)."""
    return module_file(root, name) is not None or root.joinpath(*name.split(".")).is_dir()


def _project_modules(root: Path, names: set[str]) -> set[str]:
    """Those of ``names`` (with their parent packages) that are project modules."""
    found = set()
    for target in names:
        parts = target.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in found if m.split(".")[0] in PACKAGES and _is_module(root, m)}


def direct_imports(root: Path, name: str, path: Path) -> tuple[set[str], set[str]]:
    """The project modules module ``name`` (file ``path``) imports: those its import
    statements name, at any depth, with their parent packages (``from pkg import sub``
    names ``pkg.sub`` when that is a module); and those it names in a string that is a
    module's whole dotted name, alone or followed by ``:attribute`` (what
    ``importlib.import_module`` is given: the registry's ``"recpipe.models.svd:SVD"``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    stated: set[str] = set()
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            stated.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{parent}.{node.module}" if node.module else parent
            else:
                mod = node.module or ""
            stated.update([mod] + [f"{mod}.{alias.name}" for alias in node.names])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            ref = node.value.partition(":")[0]
            if "." in ref and ref.replace(".", "").replace("_", "").isalnum():
                named.add(ref)
        elif isinstance(node, ast.Call) and _computed_import(node) and name not in LOADERS:
            raise ValueError(
                f"{path}, line {node.lineno}: an import whose module name is computed; the "
                "code stage cannot tell which files it loads: import it with a statement, "
                "or name the module in a string and add this module to "
                "recpipe.codedeps.LOADERS"
            )
    return _project_modules(root, stated), _project_modules(root, named) - {name}


def _computed_import(call: ast.Call) -> bool:
    """``importlib.import_module(x)`` or ``__import__(x)`` with ``x`` not a string literal."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if called not in ("import_module", "__import__") or not call.args:
        return False
    first = call.args[0]
    return not (isinstance(first, ast.Constant) and isinstance(first.value, str))


def runs_code(path: Path) -> bool:
    """Whether a file holds more than a docstring (an ``__init__.py`` that runs code, like
    ``stages/__init__.py`` pinning the CPU kernels, shapes every output of its package)."""
    body = ast.parse(path.read_bytes(), filename=str(path)).body
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body
    )


def import_closure(
    root: Path,
    module: str,
    memo: dict[str, tuple[set[str], set[str]]] | None = None,
    names_not_followed: frozenset[str] = frozenset(),
) -> set[str]:
    """Every project module that importing ``module`` can load (itself included),
    following both kinds of :func:`direct_imports`, except the names held by the modules of
    ``names_not_followed``. ``memo`` keeps each module's imports across calls (each file is
    read once)."""
    memo = {} if memo is None else memo
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in memo:
            path = module_file(root, name)
            if path is None and not _is_module(root, name):
                raise ValueError(f"{name}: no such module under {root}")
            # a folder without __init__.py is a package with no code of its own
            memo[name] = (set(), set()) if path is None else direct_imports(root, name, path)
        seen.add(name)
        stated, named = memo[name]
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(stated - seen)
        if name not in names_not_followed:
            todo += sorted(named - seen)
    return seen


def files_of(root: Path, modules: set[str]) -> set[str]:
    """The files (relative to ``root``, ``/``-separated) of ``modules``, leaving out the
    ``__init__.py`` files that run nothing."""
    paths = {module_file(root, m) for m in modules}
    return {
        p.relative_to(root).as_posix()
        for p in paths
        if p is not None and (p.name != "__init__.py" or runs_code(p))
    }


def registered_models(root: Path) -> dict[str, str]:
    """The registry's models, name -> module, read from its ``MODELS`` literal."""
    path = module_file(root, REGISTRY)
    for node in ast.parse(path.read_bytes(), filename=str(path)).body if path else []:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "MODELS" and node.value is not None:
            try:
                models = ast.literal_eval(node.value)
            except ValueError:
                break
            return {name: spec.partition(":")[0] for name, spec in models.items()}
    raise ValueError(f"{path or REGISTRY}: no MODELS literal to read the registered models from")


def stage_modules(root: Path) -> list[str]:
    """The stage modules: every module of ``stages/`` but its ``__init__``."""
    return sorted(
        f"stages.{p.stem}" for p in (root / "stages").glob("*.py") if p.name != "__init__.py"
    )


def stage_files(root: Path) -> dict[str, list[str]]:
    """For each stage (``<stage>``, or ``<stage>/<model>`` for :data:`PER_MODEL_STAGES`), the
    sorted project files it can run."""
    memo: dict[str, tuple[set[str], set[str]]] = {}
    out: dict[str, list[str]] = {}
    for module in stage_modules(root):
        stage = module.rpartition(".")[2]
        reached = import_closure(root, module, memo)
        if stage not in PER_MODEL_STAGES or REGISTRY not in reached:
            out[stage] = sorted(files_of(root, reached))
            continue
        # each run loads its one model through the loaders, and nothing else through them
        skip = frozenset(LOADERS)
        common = import_closure(root, module, memo, skip)
        for model, model_module in registered_models(root).items():
            files = files_of(root, common | import_closure(root, model_module, memo, skip))
            out[f"{stage}/{model}"] = sorted(files)
    return out


def digest_text(root: Path, stage: str, files: list[str]) -> str:
    """What a stage's file holds: one ``sha256  path`` line per file (``sha256sum -c``
    reads it), after a comment naming the stage."""
    lines = [f"# the project files stage {stage} runs (recpipe/codedeps.py)"]
    for name in files:
        lines.append(f"{hashlib.sha256((root / name).read_bytes()).hexdigest()}  {name}")
    return "\n".join(lines) + "\n"


def write_digests(root: Path, out: Path) -> dict[str, list[str]]:
    """Write ``out/<stage>.txt`` for every stage of :func:`stage_files` (the whole folder
    written beside and renamed into place) and return what they list."""
    stages = stage_files(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # as a folder made by mkdir (mkdtemp makes it private)
    try:
        for stage, files in stages.items():
            target = tmp / f"{stage}.txt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(digest_text(root, stage, files))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stages
