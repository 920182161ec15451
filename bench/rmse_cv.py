"""Rating accuracy on Surprise's own benchmark protocol: 5-fold CV on MovieLens-100k.

Protocol (as Surprise's benchmark table): the full ML-100k rating set, read by us from a local
copy (never downloaded) and loaded with ``Dataset.load_from_df``, split by
``surprise.model_selection.KFold(n_splits=5, random_state=0)``; per model the mean RMSE and
MAE over the five test folds. Every model is fit on the training folds only; whatever a model
tunes or stacks, it does on an inner split of the training fold, never on the test fold.

Rows:

- ``surprise SVD (defaults)``: the published reference, run here through surprise's API;
- ``SVD (pipeline defaults)``: :class:`recpipe.models.svd.SVD` with ``SVDConfig()``;
- ``SVD (tuned on inner split)``: a small grid of factors, epochs, learning rate and
  regularisation, each fit on 80% of the training fold and scored on the other 20%; the best
  is refit on the whole training fold;
- ``surprise KNNBaseline``: item-based, pearson-baseline similarity, fit by surprise and
  scored with numpy from its baselines and similarity matrix (checked on the first fold
  against surprise's own ``predict``);
- ``hybrid``: :class:`recpipe.rating.HybridRating` (signals blended by a combiner fit on
  an inner held-out split), its base signals alone, and ablations (combiner refit on fewer
  signals, sharing the fitted base models, so their fit time is the combiner's only).

Pairs a model cannot score (an item whose only ratings are in the test fold) are left out of
its RMSE and counted in ``missing``; surprise's own models predict the global-mean fallback
there instead.

    .venv/bin/python bench/rmse_cv.py --data ../shared/data/ml-100k --json rmse_cv.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine  # noqa: E402
from recpipe.evaluation.metrics import rating_errors  # noqa: E402
from recpipe.models.svd import SVD, SVDConfig  # noqa: E402
from recpipe.rating import (  # noqa: E402
    SIGNALS,
    HybridRating,
    HybridRatingConfig,
    ItemKNN,
    ratings_train_data,
)
from recpipe.schema import finalize  # noqa: E402
from recpipe.sources.movielens.loader import MovieLensConfig, load_movielens  # noqa: E402

#: Surprise's published ML-100k RMSE (5-fold CV, default settings), for the table.
PUBLISHED = {"surprise SVD (defaults)": 0.934, "surprise KNNBaseline": 0.931, "SVD++": 0.919}

#: The tuned SVD's grid: factors x (learning rate, epochs) x regularisation.
GRID_FACTORS = (50, 150)
GRID_LR_EPOCHS = ((0.005, 40), (0.01, 30), (0.03, 20))
GRID_REG = (0.05, 0.1)
INNER_HOLDOUT = 0.2


@dataclass
class Fold:
    """One outer fold as index arrays (raw ids of the surprise data set are our indices)."""

    train: tuple[np.ndarray, np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray, np.ndarray]
    trainset: object  # surprise Trainset
    testset: list


@dataclass
class Result:
    """Per-fold errors and fit times of one row."""

    rmse: list[float] = field(default_factory=list)
    mae: list[float] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    note: str = ""


def load_ratings(path: str) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """ML-100k ratings (``user_idx, item_idx, rating``, in u.data's row order) and items."""
    raw = load_movielens(MovieLensConfig(path=path, variant="100k"), raw_dir=path)
    inter, items, users, _ = finalize(
        raw.interactions, raw.items, raw.users, file=raw.interactions_file, duplicates="keep_all"
    )
    # finalize may reorder rows; map the file's rows to indices so KFold shuffles the same
    # sequence as surprise's built-in loader (u.data order).
    uid = dict(zip(users["user_id"], users["user_idx"], strict=True))
    iid = dict(zip(items["item_id"], items["item_idx"], strict=True))
    ri = raw.interactions
    ratings = pd.DataFrame(
        {
            "user_idx": ri["user_id"].map(uid).to_numpy(np.int64),
            "item_idx": ri["item_id"].map(iid).to_numpy(np.int64),
            "rating": ri["rating"].to_numpy(np.float64),
        }
    )
    assert len(ratings) == len(inter)
    return ratings, items, len(users), len(items)


def make_folds(ratings: pd.DataFrame, n_splits: int, seed: int) -> list[Fold]:
    from surprise import Dataset, Reader
    from surprise.model_selection import KFold

    data = Dataset.load_from_df(ratings, Reader(rating_scale=(1, 5)))
    folds = []
    for trainset, testset in KFold(n_splits=n_splits, random_state=seed).split(data):
        tr = np.array(
            [
                (trainset.to_raw_uid(u), trainset.to_raw_iid(i), r)
                for u, i, r in trainset.all_ratings()
            ],
            dtype=np.float64,
        )
        te = np.array(testset, dtype=np.float64)
        folds.append(
            Fold(
                (tr[:, 0].astype(np.int64), tr[:, 1].astype(np.int64), tr[:, 2]),
                (te[:, 0].astype(np.int64), te[:, 1].astype(np.int64), te[:, 2]),
                trainset,
                testset,
            )
        )
    return folds


def record(res: Result, pred: np.ndarray, actual: np.ndarray, seconds: float) -> None:
    err = rating_errors(pred, actual)
    res.rmse.append(err["rmse"])
    res.mae.append(err["mae"])
    res.missing.append(err["n_missing"])
    res.seconds.append(seconds)


def surprise_row(algo, fold: Fold) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    algo.fit(fold.trainset)
    seconds = time.perf_counter() - start
    return np.array([p.est for p in algo.test(fold.testset)]), seconds


def knnbaseline_numpy(algo, fold: Fold, n_u: int, n_i: int) -> np.ndarray:
    """Surprise's fitted KNNBaseline scored with numpy (its baselines and item similarity).

    Same rule as its ``predict``: ``mu + b_u + b_i`` plus the similarity-weighted mean
    residual of the user's ``k`` most similar rated items (positive similarities only);
    users or items unknown to the training fold keep the baseline part that is known.
    """
    ts = fold.trainset
    raw_u = np.array([ts.to_raw_uid(x) for x in range(ts.n_users)], dtype=np.int64)
    raw_i = np.array([ts.to_raw_iid(x) for x in range(ts.n_items)], dtype=np.int64)
    inner_bu, inner_bi = algo.compute_baselines()
    bu, bi = np.zeros(n_u), np.zeros(n_i)
    bu[raw_u], bi[raw_i] = inner_bu, inner_bi
    sim = np.zeros((n_i, n_i), dtype=np.float32)
    sim[np.ix_(raw_i, raw_i)] = algo.sim
    np.fill_diagonal(sim, 0.0)
    u, i, r = fold.train
    residual = r - (ts.global_mean + bu[u] + bi[i])
    shape = (n_u, n_i)
    knn = ItemKNN(
        sim,
        sp.csr_matrix((residual, (u, i)), shape=shape),
        sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=shape),
        algo.k,
    )
    tu, ti, _ = fold.test
    pred = ts.global_mean + bu[tu] + bi[ti]
    known = np.isin(tu, raw_u) & np.isin(ti, raw_i)
    offset, _ = knn.predict(tu[known], ti[known])
    pred[known] += offset
    return np.clip(pred, 1.0, 5.0)


def tune_svd(fold: Fold, n_u: int, n_i: int, seed: int) -> tuple[SVDConfig, float]:
    """Best grid config by RMSE on an inner 20% split of the training fold (test untouched)."""
    u, i, r = fold.train
    held = np.random.default_rng(seed).random(len(r)) < INNER_HOLDOUT
    data = ratings_train_data(u[~held], i[~held], r[~held], n_u, n_i)
    best: tuple[float, SVDConfig] | None = None
    for factors, (lr, epochs), reg in itertools.product(GRID_FACTORS, GRID_LR_EPOCHS, GRID_REG):
        cfg = SVDConfig(factors=factors, epochs=epochs, lr_all=lr, reg_all=reg)
        pred = SVD(cfg, seed=seed).fit(data).predict_ratings(u[held], i[held])
        score = rating_errors(pred, r[held])["rmse"]
        if best is None or score < best[0]:
            best = (score, cfg)
    assert best is not None
    return best[1], best[0]


def run(folds: list[Fold], items: pd.DataFrame, n_u: int, n_i: int, seed: int) -> dict:
    from surprise import SVD as SurpriseSVD
    from surprise import KNNBaseline

    rows: dict[str, Result] = defaultdict(Result)
    chosen: list[dict] = []
    for k, fold in enumerate(folds):
        tu, ti, tr = fold.test
        u, i, r = fold.train
        print(f"fold {k + 1}/{len(folds)}", file=sys.stderr, flush=True)

        pred, s = surprise_row(SurpriseSVD(random_state=seed), fold)
        record(rows["surprise SVD (defaults)"], pred, tr, s)

        start = time.perf_counter()
        svd = SVD(SVDConfig(), seed=seed).fit(ratings_train_data(u, i, r, n_u, n_i))
        s = time.perf_counter() - start
        record(rows["SVD (pipeline defaults)"], svd.predict_ratings(tu, ti), tr, s)

        start = time.perf_counter()
        cfg, inner_rmse = tune_svd(fold, n_u, n_i, seed)
        svd = SVD(cfg, seed=seed).fit(ratings_train_data(u, i, r, n_u, n_i))
        s = time.perf_counter() - start
        record(rows["SVD (tuned on inner split)"], svd.predict_ratings(tu, ti), tr, s)
        chosen.append(
            {
                "factors": cfg.factors,
                "epochs": cfg.epochs,
                "lr_all": cfg.lr_all,
                "reg_all": cfg.reg_all,
                "inner_rmse": inner_rmse,
            }
        )

        knn = KNNBaseline(
            k=40,
            sim_options={"name": "pearson_baseline", "user_based": False},
            verbose=False,
        )
        start = time.perf_counter()
        knn.fit(fold.trainset)
        s = time.perf_counter() - start
        pred = knnbaseline_numpy(knn, fold, n_u, n_i)
        if k == 0:  # the numpy scoring must reproduce surprise's own predict
            ref = np.array([p.est for p in knn.test(fold.testset)])
            gap = float(np.abs(pred - ref).max())
            print(f"KNNBaseline numpy vs surprise predict: max |diff| {gap:.2e}", file=sys.stderr)
            assert gap < 1e-4, gap
        record(rows["surprise KNNBaseline (item, pearson_baseline)"], pred, tr, s)

        start = time.perf_counter()
        hybrid = HybridRating(HybridRatingConfig(), seed=seed).fit(
            u, i, r, n_users=n_u, n_items=n_i, item_table=items
        )
        s = time.perf_counter() - start
        record(rows["**hybrid** (ridge, all signals)"], hybrid.predict(tu, ti), tr, s)

        base = hybrid.base_predictions(tu, ti)
        for name in SIGNALS:
            record(rows[f"hybrid signal alone: {name}"], base[name].to_numpy(), tr, float("nan"))

        ablations = {
            "hybrid without knn": {"signals": ("baseline", "svd", "content")},
            "hybrid without content": {"signals": ("baseline", "svd", "knn")},
            "hybrid without svd": {"signals": ("baseline", "knn", "content")},
            "hybrid: baseline + svd only": {"signals": ("baseline", "svd")},
            "hybrid, gbm combiner (XGBoost)": {"combiner": "gbm"},
        }
        for name, changes in ablations.items():
            start = time.perf_counter()
            variant = hybrid.with_combiner(**changes)
            s = time.perf_counter() - start
            record(rows[name], variant.predict(tu, ti), tr, s)
            rows[name].note = "combiner refit only"
    return {"rows": rows, "tuned_svd": chosen}


def summarise(rows: dict[str, Result]) -> list[dict]:
    out = []
    for name, res in rows.items():
        out.append(
            {
                "model": name,
                "rmse": float(np.mean(res.rmse)),
                "rmse_std": float(np.std(res.rmse)),
                "mae": float(np.mean(res.mae)),
                "missing": int(np.sum(res.missing)),
                "fit_seconds_per_fold": float(np.mean(res.seconds)),
                "published_rmse": PUBLISHED.get(name.replace(" (item, pearson_baseline)", "")),
                "note": res.note,
            }
        )
    return out


def markdown(table: list[dict]) -> str:
    lines = [
        "| model | RMSE | MAE | missing | fit s/fold | published RMSE |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        secs = row["fit_seconds_per_fold"]
        secs_txt = "-" if np.isnan(secs) else f"{secs:.2f}"
        if row["note"]:
            secs_txt += f" ({row['note']})"
        pub = row["published_rmse"]
        lines.append(
            f"| {row['model']} | {row['rmse']:.4f} ± {row['rmse_std']:.4f} | {row['mae']:.4f} "
            f"| {row['missing']} | {secs_txt} | {'' if pub is None else f'{pub:.3f}'} |"
        )
    lines.append(f"| SVD++ (not run: minutes per fold) | | | | | {PUBLISHED['SVD++']:.3f} |")
    lines.append(
        "\nPublished figures: surprise's table, default settings (its KNNBaseline default is "
        "user-based with the msd similarity, not the item-based pearson_baseline run here)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="unzipped ml-100k folder (or its zip)")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    ratings, items, n_u, n_i = load_ratings(args.data)
    folds = make_folds(ratings, args.folds, args.seed)
    out = run(folds, items, n_u, n_i, args.seed)
    table = summarise(out["rows"])
    total = time.perf_counter() - start
    print(markdown(table))
    print(
        f"\n{args.folds}-fold CV on ML-100k ({len(ratings):,} ratings); {machine()}; "
        f"total {total:.0f} s"
    )
    print("tuned SVD per fold:", out["tuned_svd"])
    if args.json:
        payload = {
            "protocol": f"surprise KFold(n_splits={args.folds}, random_state={args.seed}), ML-100k",
            "rows": table,
            "tuned_svd": out["tuned_svd"],
            "total_seconds": total,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
