"""DVC stage ``split``: partition the prepared interactions into train/valid/test and targets.

Usage: ``python -m stages.split --prepared data/prepared --out data/split --summary
reports/split.json``. Reads params ``split`` and ``seed``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from stages.core.config import load_params
from stages.core.errors import ConfigError
from stages.core.io import write_json, write_many
from stages.core.log import get_logger
from stages.core.splitting import SplitConfig, split, split_summary

PARAMS = ("split", "seed")

log = get_logger("split")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prepared", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--summary", required=True)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        cfg = load_params("split", SplitConfig, args.params)
        seed = load_params("seed", int, args.params)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    inter = pd.read_parquet(Path(args.prepared) / "interactions.parquet")
    s = split(inter, cfg, seed)
    out = Path(args.out)
    write_many(
        {
            out / "train.parquet": s.train,
            out / "valid.parquet": s.valid,
            out / "test.parquet": s.test,
            out / "valid_targets.parquet": s.valid_targets,
            out / "test_targets.parquet": s.test_targets,
        }
    )
    summ = split_summary(s)
    write_json(summ, args.summary)
    log.info("%s", summ)
    return 0


if __name__ == "__main__":
    sys.exit(main())
