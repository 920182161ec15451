"""The shared shape of a DVC stage's entry point: arguments, params, exit code.

Every module of ``stages/`` is ``main(argv) -> run_stage(body, argv, ...)``: the folders
and files it works on come as required ``--name`` arguments (their values live in
``dvc.yaml``), ``--params`` names the params file, and ``body(args)`` loads its own params
blocks with :func:`recpipe.config.load_params`, calls the library and writes outputs.
A :class:`ConfigError` or :class:`DataError` (bad params, bad input) ends the stage with
its message and exit code 2 instead of a traceback. Params are loaded first, so a bad
params block stops a stage before it writes anything; every file is replaced atomically.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence

from recpipe.config import PARAMS_FILE
from recpipe.errors import ConfigError, DataError
from recpipe.log import get_logger

EXIT_BAD_INPUT = 2
"""Exit code of a stage stopped by bad params or bad input (a traceback is a bug)."""


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
