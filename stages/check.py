"""DVC stage ``check``: validate every params block before any other stage runs.

Usage: ``python -m stages.check --out reports/params_checked.json``. Reads params ``data``,
``split``, ``candidates``, ``features``, ``blend``, ``ranker``, ``rating``, ``eval``,
``serve`` and ``seed`` (:data:`PARAMS`), and refuses any other block; ``dvc.yaml`` makes it
depend on the whole ``params.yaml`` file, so that any edit, a new block included, re-runs
it.

DVC deletes a stage's outputs just before it runs it, so a params mistake found by the stage
itself (``-S split.n_test=-1``) would already have cost its previous outputs, some of which
(the uncached reports) cannot be restored. Every other stage depends on this stage's
output, so DVC runs this one first: a bad block stops the run here, naming the key, with
every output in place. The output's bytes depend only on which blocks were checked, so a
params change that passes re-runs nothing downstream through it.

Also caught here, because DVC would meet them first and say little: a block nothing reads
(``+spilt.n_test=2``, named with the nearest valid block), and for ``data=files`` a
``data.dep`` folder or input file that does not exist (DVC's own message for the missing
dependency is "No such file or directory: data/user").
"""

from __future__ import annotations

import argparse
import sys

from recpipe.blending import BlendConfig
from recpipe.config import load_params, parse, read_params, unknown_key_hint
from recpipe.errors import ConfigError
from recpipe.evaluation.scoring import EvalConfig
from recpipe.features.config import FeaturesConfig
from recpipe.io import write_json
from recpipe.log import get_logger
from recpipe.models.registry import MODELS, model_class
from recpipe.ranking import RankerConfig
from recpipe.rating import RatingConfig
from recpipe.serving.config import ServeConfig
from recpipe.sources.config import DataConfig
from recpipe.sources.userfiles import FilesConfig, check_paths
from recpipe.splitting import SplitConfig
from recpipe.stage import run_stage

PARAMS = (
    "data",
    "split",
    "candidates",
    "features",
    "blend",
    "ranker",
    "rating",
    "eval",
    "serve",
    "seed",
)

log = get_logger("check")


def run(args: argparse.Namespace) -> None:
    unknown = sorted(set(read_params(args.params)) - set(PARAMS))
    if unknown:
        # `+spilt.n_test=2` (Hydra's advice for a misspelled key) adds a block nothing reads
        hint = unknown_key_hint(unknown[0], PARAMS)
        raise ConfigError(f"{args.params}: {unknown[0]}: {hint}")
    data = load_params("data", DataConfig, args.params)
    if isinstance(data, FilesConfig):
        for warning in check_paths(data, args.params):
            log.warning("%s", warning)
    load_params("split", SplitConfig, args.params)
    candidates = load_params("candidates", dict, args.params)
    unknown = sorted(set(candidates) - set(MODELS))
    if unknown:
        hint = unknown_key_hint(unknown[0], MODELS, "candidates").replace("key", "model", 1)
        raise ConfigError(f"{args.params}: candidates.{unknown[0]}: {hint}")
    for name in MODELS:
        if name not in candidates:
            raise ConfigError(f"{args.params}: missing params key 'candidates.{name}'")
        parse(candidates[name], model_class(name).config_class, f"candidates.{name}", args.params)
    load_params("features", FeaturesConfig, args.params)
    load_params("blend", BlendConfig, args.params)
    load_params("ranker", RankerConfig, args.params)
    load_params("rating", RatingConfig, args.params)
    load_params("eval", EvalConfig, args.params)
    load_params("serve", ServeConfig, args.params)
    load_params("seed", int, args.params)
    write_json({"checked": list(PARAMS)}, args.out)
    log.info("params blocks valid: %s", ", ".join(PARAMS))


def main(argv: list[str] | None = None) -> int:
    return run_stage(run, argv, name="check", doc=__doc__, paths=("out",))


if __name__ == "__main__":
    sys.exit(main())
