"""DVC stage ``check``: validate every params block before any other stage runs.

Usage: ``python -m stages.check --out reports/params_checked.json``. Reads params ``data``,
``split``, ``candidates``, ``features``, ``blend``, ``ranker``, ``rating``, ``eval`` and
``seed``.

DVC deletes a stage's outputs just before it runs it, so a params mistake found by the stage
itself (``-S split.n_test=-1``) would already have cost its previous outputs, some of which
(the uncached reports) cannot be restored. Every other stage depends on this stage's
output, so DVC runs this one first: a bad block stops the run here, naming the key, with
every output in place. The output's bytes depend only on which blocks were checked, so a
params change that passes re-runs nothing downstream through it.
"""

from __future__ import annotations

import argparse
import sys

from recpipe.blending import BlendConfig
from recpipe.config import load_params, parse
from recpipe.errors import ConfigError
from recpipe.evaluation.scoring import EvalConfig
from recpipe.features.config import FeaturesConfig
from recpipe.io import write_json
from recpipe.log import get_logger
from recpipe.models.registry import MODELS, model_class
from recpipe.ranking import RankerConfig
from recpipe.rating import RatingConfig
from recpipe.sources.config import DataConfig
from recpipe.splitting import SplitConfig
from recpipe.stage import run_stage

PARAMS = ("data", "split", "candidates", "features", "blend", "ranker", "rating", "eval", "seed")

log = get_logger("check")


def run(args: argparse.Namespace) -> None:
    load_params("data", DataConfig, args.params)
    load_params("split", SplitConfig, args.params)
    candidates = load_params("candidates", dict, args.params)
    for name in MODELS:
        if name not in candidates:
            raise ConfigError(f"{args.params}: missing params key 'candidates.{name}'")
        parse(candidates[name], model_class(name).config_class, f"candidates.{name}", args.params)
    unknown = sorted(set(candidates) - set(MODELS))
    if unknown:
        raise ConfigError(f"{args.params}: candidates.{unknown[0]}: unknown model")
    load_params("features", FeaturesConfig, args.params)
    load_params("blend", BlendConfig, args.params)
    load_params("ranker", RankerConfig, args.params)
    load_params("rating", RatingConfig, args.params)
    load_params("eval", EvalConfig, args.params)
    load_params("seed", int, args.params)
    write_json({"checked": list(PARAMS)}, args.out)
    log.info("params blocks valid: %s", ", ".join(PARAMS))


def main(argv: list[str] | None = None) -> int:
    return run_stage(run, argv, name="check", doc=__doc__, paths=("out",))


if __name__ == "__main__":
    sys.exit(main())
