"""Paired comparison of two runs' per-user metrics (the ``per_user.parquet`` of evaluate).

    python bench/compare.py BASE.parquet HEAD.parquet [--model ranker] [--metric ndcg@10]

Prints the two means, their difference and its 95% paired bootstrap interval over the users
both runs scored (2,000 resamples, seed 0), and whether the difference is beyond noise: the
check behind every "quality kept" claim in ``bench/README.md`` (``bench/quality.py
--per-user DIR`` keeps each run's file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recpipe.evaluation.metrics import paired_bootstrap  # noqa: E402


def paired(base: Path, head: Path, model: str, metric: str) -> dict[str, float | bool]:
    """The paired bootstrap of ``head - base`` for ``model``'s ``metric``."""
    frames = []
    for path in (base, head):
        df = pd.read_parquet(path)
        df = df[df["model"] == model]
        if df.empty:
            raise SystemExit(f"{path}: no rows for model {model!r}")
        frames.append(df.set_index("user_idx")[metric])
    a, b = frames
    users = a.index.intersection(b.index)
    return paired_bootstrap(b.loc[users].to_numpy(), a.loc[users].to_numpy(), 2000, 0) | {
        "users": len(users)
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("base", type=Path)
    ap.add_argument("head", type=Path)
    ap.add_argument("--model", default="ranker")
    ap.add_argument("--metric", default="ndcg@10")
    args = ap.parse_args(argv)
    r = paired(args.base, args.head, args.model, args.metric)
    verdict = "beyond noise" if r["significant"] else "within noise"
    print(
        f"{args.model} {args.metric}: base {r['mean_b']:.4f}, head {r['mean_a']:.4f}, "
        f"head - base {r['diff']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] over "
        f"{r['users']} users: {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
