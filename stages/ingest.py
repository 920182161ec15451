"""DVC stage ``ingest``: load the configured source, validate it, write the canonical tables.

Usage: ``python -m stages.ingest --out data/prepared --raw-dir data/raw --summary
reports/ingest.json``. Reads params ``data`` and ``seed``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recpipe.config import load_params
from recpipe.io import write_json, write_many
from recpipe.log import get_logger
from recpipe.schema import RawTables, finalize
from recpipe.sources.config import DataConfig
from recpipe.sources.movielens.loader import MovieLensConfig, load_movielens
from recpipe.sources.synthetic import SyntheticConfig, generate
from recpipe.sources.userfiles import FilesConfig, load_files
from recpipe.stage import run_stage

PARAMS = ("data", "seed")


log = get_logger("ingest")


def load_source(cfg: SyntheticConfig | MovieLensConfig | FilesConfig, seed: int, raw_dir: Path):
    """Read the configured source into :class:`RawTables` (no ids mapped yet)."""
    if isinstance(cfg, SyntheticConfig):
        return generate(cfg, seed)
    if isinstance(cfg, MovieLensConfig):
        return load_movielens(cfg, raw_dir)
    return load_files(cfg)


def prepare(raw: RawTables, duplicates: str, missing_items: str = "add"):
    """Validate and map ids; returns ``(interactions, items, users, warnings)``."""
    return finalize(
        raw.interactions,
        raw.items,
        raw.users,
        file=raw.interactions_file,
        items_file=raw.items_file,
        users_file=raw.users_file,
        missing_items=missing_items,
        duplicates=duplicates,
    )


def summary(interactions, items, users, warnings: list[str]) -> dict:
    """Small, deterministic description of the prepared data (a DVC metrics file)."""
    n_u, n_i, n = len(users), len(items), len(interactions)
    return {
        "users": n_u,
        "items": n_i,
        "interactions": n,
        "density": round(n / max(n_u * n_i, 1), 6),
        "rated_share": round(float(interactions["rating"].notna().mean()), 4),
        "events": {
            str(k): int(v) for k, v in interactions["event"].value_counts().sort_index().items()
        },
        "warnings": warnings,
    }


def run(args: argparse.Namespace) -> None:
    cfg = load_params("data", DataConfig, args.params)
    seed = load_params("seed", int, args.params)
    raw = load_source(cfg, seed, Path(args.raw_dir))
    missing = getattr(cfg, "missing_items", "add")
    duplicates = getattr(cfg, "duplicates", "keep_all")
    inter, items, users, warnings = prepare(raw, duplicates, missing)
    for w in warnings:
        log.warning("%s", w)
    out = Path(args.out)
    write_many(
        {
            out / "interactions.parquet": inter,
            out / "items.parquet": items,
            out / "users.parquet": users,
        }
    )
    write_json(summary(inter, items, users, warnings), args.summary)
    log.info("%d users, %d items, %d interactions", len(users), len(items), len(inter))


def configure(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", required=True, help="folder for the prepared tables")
    ap.add_argument("--raw-dir", default="data/raw", help="where downloads are kept")
    ap.add_argument("--summary", required=True, help="JSON summary of the prepared data")


def main(argv: list[str] | None = None) -> int:
    return run_stage(run, argv, name="ingest", doc=__doc__, configure=configure)


if __name__ == "__main__":
    sys.exit(main())
