"""DVC stage ``code``: fingerprint the project files each stage runs.

Usage: ``python -m stages.code --out data/code``. Reads no params.

Writes ``<out>/<stage>.txt`` for every stage module (``<out>/candidates/<model>.txt`` for
each registered model): the sha256 of every project file the stage can run, read from the
import statements (:mod:`recpipe.codedeps`). Each stage in ``dvc.yaml`` depends on its file
instead of on a list of modules, so an edit re-runs exactly the stages that run the edited
file, and ``dvc.lock`` stays small (DVC rewrites it whole after every stage).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recpipe.codedeps import write_digests
from recpipe.log import get_logger
from recpipe.stage import run_stage

PARAMS = ()

log = get_logger("code")

ROOT = Path(__file__).resolve().parents[1]
"""The project whose files are fingerprinted: the one this module belongs to."""


def run(args: argparse.Namespace) -> None:
    stages = write_digests(ROOT, Path(args.out))
    log.info("fingerprinted the files of %d stages into %s", len(stages), args.out)


def main(argv: list[str] | None = None) -> int:
    return run_stage(run, argv, name="code", doc=__doc__, paths=("out",))


if __name__ == "__main__":
    sys.exit(main())
