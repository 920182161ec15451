"""The same numbers on every machine: kernels pinned before numpy loads. The stages whose
floats depend on the CPU give the same bytes under another machine's dispatch settings
(tests/test_e2e.py re-runs every stage so); here, that without the pin they would not.
``bench/cross_machine.py`` runs the whole tiny pipeline twice the same way (about two
minutes)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cross_machine import digests
from recpipe.stage import NATIVE_CPU, NUMPY_ABOVE_AVX2, cpu_flags, pin_numerics
from tests.conftest import dvc, e2e_env, reset

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


SSE_ONLY = {"OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4"}


@pytest.mark.e2e
@needs_avx2
def test_e2e_without_the_pin_other_dispatch_moves_the_floats(tiny_repo: Path) -> None:
    """Regression: on an AVX-512 EPYC the ALS candidates, the features and the ranker of a
    fresh clone differed from the committed dvc.lock. tests/test_e2e.py re-runs every stage
    of the baseline under another machine's settings (OTHER_MACHINE) and finds the same
    bytes. That check is not vacuous: without the pin, such settings do change the floats
    of ALS (OpenBLAS) and TF-IDF (numpy's loops)."""
    before = digests(tiny_repo, ("data/candidates",))
    stages = ("candidates@als", "candidates@tfidf")
    native_sse = {**SSE_ONLY, NATIVE_CPU: "1"}
    try:
        dvc(tiny_repo, "repro", "--force", "--single-item", *stages, env=native_sse)
        native = digests(tiny_repo, ("data/candidates",))
    finally:
        reset(tiny_repo)
    moved = {f for f in before if native.get(f) != before[f]}
    assert "data/candidates/test/als.parquet" in moved, sorted(moved)
    assert "data/candidates/test/tfidf.parquet" in moved, sorted(moved)
