"""The same numbers on every machine: kernels pinned before numpy loads, and the stages whose
floats depend on the CPU giving the same bytes under another machine's dispatch settings.

``bench/cross_machine.py`` runs the whole tiny pipeline twice the same way (about two
minutes); here the stages where the floats diverged are re-run on the e2e baseline.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from recpipe.stage import NATIVE_CPU, NUMPY_ABOVE_AVX2, cpu_flags, pin_numerics
from tests.conftest import e2e_env, reset

ROOT = Path(__file__).resolve().parents[1]
AVX2 = {"avx2", "fma"}

needs_avx2 = pytest.mark.skipif(
    platform.machine() != "x86_64" or not AVX2.issubset(cpu_flags()),
    reason="the kernels are pinned on x86-64 CPUs with AVX2 and FMA only",
)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="pinned on x86-64 only")
def test_pinning_sets_openblas_and_adds_to_the_users_numpy_list() -> None:
    env = {"NPY_DISABLE_CPU_FEATURES": "AVX512_ICL,X86_V3", "OPENBLAS_CORETYPE": "SkylakeX"}
    pin_numerics(env, flags={"sse4_2", "avx2", "fma", "avx512f"})
    assert env["OPENBLAS_CORETYPE"] == "Haswell"
    assert env["NPY_DISABLE_CPU_FEATURES"].split() == [
        "AVX512_ICL",
        "X86_V3",
        "X86_V4",
        "AVX512_SPR",
    ]


@pytest.mark.parametrize(
    ("env", "flags"),
    [
        ({NATIVE_CPU: "1"}, AVX2),  # asked for the machine's own kernels
        ({}, {"sse4_2", "avx"}),  # no AVX2: Haswell kernels would not run
        ({}, set()),  # flags unknown (not Linux)
    ],
)
def test_pinning_leaves_alone_what_it_must(env: dict, flags: set[str]) -> None:
    before = dict(env)
    note = pin_numerics(env, flags=flags)
    assert env == before, note


def test_numpy_refuses_no_name_of_the_pinned_list() -> None:
    """numpy ignores names it does not know: each must be one of its dispatch targets, or a
    new numpy would silently run its AVX-512 loops again."""
    code = "import json, numpy._core._multiarray_umath as m; print(json.dumps(m.__cpu_dispatch__))"
    known = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert set(NUMPY_ABOVE_AVX2) <= set(json.loads(known.stdout)), known.stdout


PROBE = """
import json, stages, numpy
from numpy._core._multiarray_umath import __cpu_features__ as cpu
from threadpoolctl import threadpool_info
blas = sorted({i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"})
print(json.dumps({"pinned": stages.NUMERICS, "blas": blas, "x86_v4": cpu["X86_V4"]}))
"""


@needs_avx2
def test_a_stage_process_pins_before_numpy_loads_whatever_the_environment_says() -> None:
    """`python -m stages.<stage>` imports the package `stages` first: the pin must happen
    there, before numpy and OpenBLAS read the environment."""
    env = {**e2e_env(), "OPENBLAS_CORETYPE": "Prescott"}
    env.pop(NATIVE_CPU, None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True
    )
    seen = json.loads(out.stdout)
    assert seen["blas"] == ["Haswell"] and seen["x86_v4"] is False, seen
    native = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**env, NATIVE_CPU: "1"},
        capture_output=True,
        text=True,
    )
    assert json.loads(native.stdout)["blas"] != ["Haswell"], native.stdout  # Prescott's


SENSITIVE = ("candidates@als", "candidates@ease", "candidates@tfidf", "features")
"""The stages whose bytes moved with the CPU dispatch settings before the kernels were
pinned (OpenBLAS kernels and threads: ALS, EASE; numpy's SIMD loops: TF-IDF, item
features); everything downstream of them moved because they did."""

OTHER_MACHINE = {
    # an AVX2 machine with one core, as far as this one can play it
    "OPENBLAS_CORETYPE": "Prescott",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
SSE_ONLY = {"OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4"}


def digests(repo: Path) -> dict[str, str]:
    out = {}
    for folder in ("data/candidates", "data/features", "models"):
        for path in sorted((repo / folder).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(repo))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def repro_under(repo: Path, env: dict[str, str], *stages: str) -> None:
    cmd = [str(Path(sys.executable).parent / "dvc"), "repro", "--force", "--single-item", *stages]
    proc = subprocess.run(cmd, cwd=repo, env={**e2e_env(), **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.e2e
@needs_avx2
def test_e2e_cpu_dependent_stages_give_the_same_bytes_under_other_dispatch(
    tiny_repo: Path,
) -> None:
    """Regression: on an AVX-512 EPYC the ALS candidates, the features and the ranker of a
    fresh clone differed from the committed dvc.lock. The baseline was built with this
    machine's own settings; the stages re-run as another machine would run them."""
    before = digests(tiny_repo)
    try:
        repro_under(tiny_repo, OTHER_MACHINE, *SENSITIVE)
        pinned = digests(tiny_repo)
        # not a vacuous check: without the pin, the same settings do change the floats
        repro_under(tiny_repo, {**SSE_ONLY, NATIVE_CPU: "1"}, "candidates@als", "candidates@tfidf")
        native = digests(tiny_repo)
    finally:
        reset(tiny_repo)
    assert pinned == before, sorted(f for f in before if pinned.get(f) != before[f])
    moved = {f for f in before if native.get(f) != before[f]}
    assert "data/candidates/test/als.parquet" in moved, sorted(moved)
    assert "data/candidates/test/tfidf.parquet" in moved, sorted(moved)
