"""DVC stage ``split``: partition the prepared interactions into train/valid/test and targets.

Usage: ``python -m stages.split --prepared data/prepared --out data/split --summary
reports/split.json``. Reads params ``split`` and ``seed``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recpipe.config import load_params
from recpipe.folds import RANKER_ROLES, ranker_fold_name
from recpipe.io import write_json, write_many
from recpipe.log import get_logger
from recpipe.splitting import Split, SplitConfig, check_targets, split, split_summary
from recpipe.stage import run_stage

PARAMS = ("split", "seed")

log = get_logger("split")


def ranker_roles_frame(s: Split) -> pd.DataFrame:
    """The extra ranker folds' roles as a table aligned with ``train`` then ``valid``: column
    ``part`` (0 train, 1 valid, to check the alignment) and one int8 column per fold."""
    part = np.r_[np.zeros(len(s.train), np.int8), np.ones(len(s.valid), np.int8)]
    cols = {"part": part}
    for k in range(s.ranker_roles.shape[1]):
        cols[ranker_fold_name(k)] = s.ranker_roles[:, k]
    return pd.DataFrame(cols)


def split_files(s: Split, out: Path) -> dict[Path, pd.DataFrame]:
    """Every file of the split output folder ``out`` and its table."""
    frames = {
        out / "train.parquet": s.train,
        out / "valid.parquet": s.valid,
        out / "test.parquet": s.test,
        out / "valid_targets.parquet": s.valid_targets,
        out / "test_targets.parquet": s.test_targets,
        out / RANKER_ROLES: ranker_roles_frame(s),
    }
    for k, t in enumerate(s.ranker_targets):
        frames[out / f"{ranker_fold_name(k)}_targets.parquet"] = t
    return frames


def run(args: argparse.Namespace) -> None:
    cfg = load_params("split", SplitConfig, args.params)
    seed = load_params("seed", int, args.params)
    source = Path(args.prepared) / "interactions.parquet"
    s = split(pd.read_parquet(source), cfg, seed)
    check_targets(s, str(source))
    out = Path(args.out)
    frames = split_files(s, out)
    stale = set(out.glob("extra*_targets.parquet")) - set(frames)
    write_many(frames)
    for p in stale:  # a smaller ranker_folds than last time: no fold may outlive its roles
        p.unlink()
    summ = split_summary(s)
    write_json(summ, args.summary)
    log.info("%s", summ)


def main(argv: list[str] | None = None) -> int:
    return run_stage(run, argv, name="split", doc=__doc__, paths=("prepared", "out", "summary"))


if __name__ == "__main__":
    sys.exit(main())
