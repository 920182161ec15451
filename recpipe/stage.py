"""The shared shape of a DVC stage's entry point: arguments, params, exit code.

Every module of ``stages/`` is ``main(argv) -> run_stage(body, argv, ...)``: the folders
and files it works on come as required ``--name`` arguments (their values live in
``dvc.yaml``), ``--params`` names the params file, and ``body(args)`` loads its own params
blocks with :func:`recpipe.config.load_params`, calls the library and writes outputs.
A :class:`ConfigError` or :class:`DataError` (bad params, bad input) ends the stage with
its message and exit code 2 instead of a traceback. Params are loaded first, so a bad
params block stops a stage before it writes anything; every file is replaced atomically.

Same numbers on every machine: :func:`pin_numerics` (called by ``stages/__init__.py``, so
before any stage imports numpy) makes OpenBLAS and numpy run the same kernels on every
x86-64 CPU with AVX2 and FMA, instead of the fastest ones each CPU offers, whose floats
differ in the last bits (README, "Same numbers on every machine").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path

from recpipe.config import PARAMS_FILE
from recpipe.errors import ConfigError, DataError
from recpipe.log import get_logger

EXIT_BAD_INPUT = 2
"""Exit code of a stage stopped by bad params or bad input (a traceback is a bug)."""

NATIVE_CPU = "RECPIPE_NATIVE_CPU"
"""Environment variable: ``1`` leaves OpenBLAS and numpy their fastest kernels for this CPU
(outputs may then differ in the last bits from another machine's)."""

OPENBLAS_KERNELS = "Haswell"
"""The OpenBLAS kernels every AVX2 + FMA CPU runs (AVX-512 ones would pick SkylakeX or
Cooperlake, older ones Sandybridge or Nehalem: each sums in its own order)."""

NUMPY_ABOVE_AVX2 = ("X86_V4", "AVX512_ICL", "AVX512_SPR")
"""numpy 2.4's dispatch targets above AVX2 (x86-64-v3). Disabled, numpy's sums, ``exp``,
``log`` and sorts take the AVX2 loops on every AVX2 CPU; with AVX-512 they reduce in wider
lanes and round transcendental functions differently. Names numpy does not know are
ignored by it, so a future numpy with other names needs this list updated (the
cross-machine test fails)."""

REQUIRED_FLAGS = ("avx2", "fma")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them (empty when unknown)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def pin_numerics(
    environ: MutableMapping[str, str] | None = None, flags: set[str] | None = None
) -> str:
    """Pin OpenBLAS's kernels and numpy's SIMD dispatch to the AVX2 level; says what it did.

    Works only before numpy is loaded (both read the environment when they load), so it is
    called by ``stages/__init__.py``, which ``python -m stages.<stage>`` runs first; in a
    process that has already imported numpy it changes nothing. Applies on x86-64 Linux
    CPUs with AVX2 and FMA (every Intel CPU since Haswell, 2013, and AMD since Zen, 2017).
    ``RECPIPE_NATIVE_CPU=1`` turns it off. Threads are handled where they matter: EASE's
    LAPACK calls run on one thread (``recpipe.models.ease``); every other kernel the
    pipeline uses gave the same bits on one thread as on all cores
    (``bench/cross_machine.py``).
    """
    env = os.environ if environ is None else environ
    if env.get(NATIVE_CPU, "") not in ("", "0"):
        return f"native kernels ({NATIVE_CPU} is set): outputs may differ across CPUs"
    if environ is None and "numpy" in sys.modules:
        return "numpy already loaded: kernels not pinned"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"not pinned on {platform.machine()}: outputs may differ from x86-64 runs"
    have = cpu_flags() if flags is None else flags
    if not set(REQUIRED_FLAGS) <= have:
        return "CPU without AVX2 and FMA (or flags unknown): kernels not pinned"
    env["OPENBLAS_CORETYPE"] = OPENBLAS_KERNELS
    if "NPY_ENABLE_CPU_FEATURES" in env:  # numpy refuses both variables at once
        return f"OpenBLAS {OPENBLAS_KERNELS}; numpy not pinned (NPY_ENABLE_CPU_FEATURES set)"
    disabled = env.get("NPY_DISABLE_CPU_FEATURES", "").replace(",", " ").split()
    disabled += [f for f in NUMPY_ABOVE_AVX2 if f not in disabled]
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(disabled)
    return f"OpenBLAS {OPENBLAS_KERNELS} kernels, numpy dispatch up to AVX2"


def stage_parser(
    doc: str | None,
    paths: Sequence[str] = (),
    optional: Mapping[str, str | None] | None = None,
) -> argparse.ArgumentParser:
    """A parser with one required ``--<path>`` per name of ``paths``, the ``optional`` ones
    with their defaults, and ``--params``."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name in paths:
        ap.add_argument(f"--{name}", required=True)
    for name, default in (optional or {}).items():
        ap.add_argument(f"--{name}", default=default)
    ap.add_argument("--params", default=PARAMS_FILE, help="the params file (params.yaml)")
    return ap


def run_stage(
    body: Callable[[argparse.Namespace], int | None],
    argv: Sequence[str] | None,
    *,
    name: str,
    doc: str | None,
    paths: Sequence[str] = (),
    optional: Mapping[str, str | None] | None = None,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse ``argv``, run ``body(args)`` and turn bad params or input into exit code 2.

    ``configure`` adds arguments of other shapes (repeated, with help) to the parser.
    ``body`` returns None (or 0) on success.
    """
    ap = stage_parser(doc, paths, optional)
    if configure is not None:
        configure(ap)
    args = ap.parse_args(None if argv is None else list(argv))
    try:
        code = body(args)
    except (ConfigError, DataError) as exc:
        get_logger(name).error("%s", exc)
        return EXIT_BAD_INPUT
    return 0 if code is None else code
