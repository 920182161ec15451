"""Time the ranker's similarity pair features by each route, on one block of users.

    python bench/similarity_routes.py --size 1m [--users 20000] [--candidates 200]

Generates the synthetic shop at ``--size`` (MovieLens shapes, bench/_common.py), takes the
whole log as the history and, for ``--users`` users, ``--candidates`` distinct items drawn by
popularity (as the blend's lists lean to popular items), then times the content and the
collaborative similarities (``recpipe.features.pairs._recent_similarity``, as the rank stage
computes them for one block of users) by the sparse product, by the dense route, and as
the cost model chooses; it checks that the routes give the same floats. Prints one line a
feature, routes and times in seconds (best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import SIZES, machine  # noqa: E402
from recpipe.features import pairs as pairs_module  # noqa: E402
from recpipe.features.config import FeaturesConfig  # noqa: E402
from recpipe.features.history import history_now  # noqa: E402
from recpipe.schema import finalize  # noqa: E402
from recpipe.sources.synthetic import SyntheticConfig, generate  # noqa: E402


def candidate_pairs(
    item_idx: np.ndarray, n_users: int, n_items: int, users: int, per_user: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``per_user`` distinct items for each of ``users`` users, drawn by popularity, sorted
    by user and item."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n_users, size=min(users, n_users), replace=False))
    pop = np.bincount(item_idx, minlength=n_items).astype(float) + 1.0
    pop /= pop.sum()
    per_user = min(per_user, n_items)
    pu, pi = [], []
    for u in chosen:
        items = np.sort(rng.choice(n_items, size=per_user, replace=False, p=pop))
        pu.append(np.full(per_user, u))
        pi.append(items)
    return np.concatenate(pu), np.concatenate(pi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1m", choices=list(SIZES))
    ap.add_argument("--users", type=int, default=20_000, help="users in the block")
    ap.add_argument("--candidates", type=int, default=200, help="candidates per user")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    n_events, n_users, n_items = SIZES[args.size]
    cfg = SyntheticConfig(n_users=n_users, n_items=n_items, n_events=n_events)
    raw = generate(cfg, seed=args.seed)
    inter, items, _, _ = finalize(raw.interactions, raw.items, raw.users, file="synthetic")
    fcfg = FeaturesConfig()
    ctx = pairs_module.pair_context(inter, items, history_now(inter), fcfg, n_users)
    pu, pi = candidate_pairs(
        inter["item_idx"].to_numpy(np.int64), n_users, n_items, args.users, args.candidates, 1
    )
    print(f"# {machine()}")
    print(
        f"# size {args.size}: {len(inter):,} events, block of {len(np.unique(pu)):,} users, "
        f"{len(pu):,} pairs"
    )
    features = {
        "content": (ctx.content, fcfg.content_history, (), ctx.content_recent, ctx.content_t),
        "cf": (ctx.cf, fcfg.content_history, sorted(fcfg.recent_items), ctx.cf_recent, ctx.cf_t),
    }
    chosen: list[bool] = []
    real = pairs_module.dense_right

    def recorded(*a):
        right = real(*a)
        chosen.append(right is not None)
        return right

    pairs_module.dense_right = recorded
    knobs = ("_DENSE_RIGHT_BYTES", "_DENSE_NS_PER_PRODUCT", "_DENSE_NS_PER_RIGHT_CELL")
    defaults = {knob: getattr(pairs_module, knob) for knob in knobs}
    for name, (vectors, k, prefixes, recent, vectors_t) in features.items():
        times, outputs = {}, {}
        for route in ("sparse", "dense", "chosen"):
            settings = dict(defaults)
            if route == "sparse":
                settings["_DENSE_RIGHT_BYTES"] = 0
            elif route == "dense":
                settings["_DENSE_NS_PER_PRODUCT"] = settings["_DENSE_NS_PER_RIGHT_CELL"] = 0.0
            for knob, value in settings.items():
                setattr(pairs_module, knob, value)
            best = float("inf")
            for _ in range(args.repeats):
                chosen.clear()
                start = time.perf_counter()
                out = pairs_module._recent_similarity(
                    pu, pi, ctx.log, vectors, k, prefixes, recent, vectors_t
                )
                best = min(best, time.perf_counter() - start)
            times[route], outputs[route] = best, out
            if route == "dense" and not chosen[-1]:
                times[route] = float("nan")  # over _DENSE_RIGHT_BYTES: the route cannot run
        for knob, value in defaults.items():
            setattr(pairs_module, knob, value)
        same = all(  # bit for bit (NaN where both have it, and -0.0 differs from 0.0)
            np.array_equal(
                outputs["sparse"][key].view(np.int64), outputs[route][key].view(np.int64)
            )
            for route in ("dense", "chosen")
            for key in outputs["sparse"]
        )
        print(
            f"{name}: {vectors.shape[0]:,} items x {vectors.shape[1]:,} dimensions; sparse "
            f"{times['sparse']:.2f} s, dense {times['dense']:.2f} s, cost model chose "
            f"{'dense' if chosen[-1] else 'sparse'} ({times['chosen']:.2f} s); "
            f"identical: {same}"
        )
        if not same:
            raise SystemExit(f"{name}: the routes differ")


if __name__ == "__main__":
    main()
