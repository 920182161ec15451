"""Building the serving bundle: everything the service needs, from a pipeline run.

The layout of a bundle folder (read back by :class:`recpipe.serving.bundle.Bundle`):

- ``manifest.json`` (written last): format and version, bundle id (a digest of the
  inputs), git revision, params digest, the evaluation metrics of the run, the models and
  the ranker's features, counts;
- ``serve.json``: the settings applying the models needs (the serve, features and ranker
  scoring settings, the blend's weights and normalisation, candidates per model, the
  history's reference time);
- ``items.parquet`` (the items table, plus ``users`` and ``trending``: distinct users over the
  history and over its last ``serve.trending_days`` days),
  ``users.parquet`` (``user_idx, user_id``), ``history.parquet`` (the history the models
  were fitted on, by user then time);
- ``lists/<name>.parquet`` for ``ranker``, ``blend`` and every model: each known user's top
  ``serve.cache_n`` (``user_idx, item_idx, score, rank``), seen items excluded;
- ``popular.parquet`` (``list, item_idx, score, rank``): ``all``, ``trending``,
  ``all/<category>`` and ``trending/<category>``;
- ``neighbours.parquet`` (``kind, item_idx, neighbour_idx, score, rank``), ``kind`` ``cf``
  (cosine of the items' user sets) or ``content`` (cosine of their TF-IDF documents);
- ``features/users.parquet``, ``features/items.parquet``: the history's user and item
  features (the ranker's inputs);
- ``models/<name>/``: every candidate model refitted on the history, ``ranker/``
  (``model.json``, ``scoring.json``), ``rating/`` (the rating model), all without pickle.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe.artifacts import load_model, save_model
from recpipe.dataset import TrainData
from recpipe.engine import even_cuts, map_shared
from recpipe.errors import ConfigError
from recpipe.features.config import FeaturesConfig
from recpipe.features.history import SECONDS_PER_DAY, history_now
from recpipe.features.items import item_features
from recpipe.features.metadata import item_category_matrix
from recpipe.features.pairs import dense_right, item_similarities, pair_context
from recpipe.features.users import user_features
from recpipe.models.base import BLOCK_THREADS, RECS_COLUMNS, Recommender, in_threads, top_n
from recpipe.ranking import RankerConfig, TrainResult
from recpipe.serving.config import ServeConfig
from recpipe.serving.online import HISTORY_COLUMNS, Ranking

FORMAT = "recpipe-bundle"
FORMAT_VERSION = 1


def _scoring(directory: Path) -> dict:
    return json.loads((directory / "scoring.json").read_text())


def ranker_features(directory: str | Path) -> list[str]:
    """The features the ranker the rank stage saved reads (without loading it)."""
    return list(_scoring(Path(directory))["features"])


def load_ranker(directory: str | Path, threads: int | None = None) -> TrainResult:
    """The ranker the rank stage saved (``model.json`` + ``scoring.json``), ready to score
    on ``threads`` threads (XGBoost's default: every core; the service scores one small
    list per request, and its requests run side by side, so it asks for 1)."""
    import xgboost as xgb

    directory = Path(directory)
    scoring = _scoring(directory)
    cfg = RankerConfig(
        base_margin=scoring["base_margin"],
        base_margin_scale=scoring["base_margin_scale"],
        rerank_top=scoring["rerank_top"],
    )
    model = xgb.XGBRanker(n_jobs=threads)
    model.load_model(directory / "model.json")
    features = list(scoring["features"])
    return TrainResult(model, cfg, features, 0, 0, 0, float("nan"))


def serve_history(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The interactions the bundle's models learn from, in the canonical columns."""
    cols = ["user_idx", *HISTORY_COLUMNS]
    return pd.concat([p[cols] for p in parts], ignore_index=True)


@dataclass(frozen=True)
class _Fits:
    """What every model fit of :func:`fit_models` reads (its workers inherit it)."""

    data: TrainData
    configs: Mapping[str, tuple[type[Recommender], object]]
    seed: int
    out: Path


def _fit_and_save(fits: _Fits, name: str) -> str:
    """One block of :func:`fit_models`: model ``name`` fitted and saved in its folder."""
    cls, cfg = fits.configs[name]
    save_model(cls(cfg, seed=fits.seed).fit(fits.data), fits.out / name)
    return name


def fit_models(
    history: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    configs: Mapping[str, tuple[type[Recommender], object]],
    seed: int,
    out: str | Path,
    n_workers: int = 1,
) -> dict[str, Recommender]:
    """Every model of ``configs`` (name -> (class, config)) fitted on ``history``, as the
    candidates stage fits it on a fold, saved in ``out/<name>`` and loaded back from there.

    Up to ``n_workers`` models are fitted side by side, in workers forked with the history
    (:func:`recpipe.engine.map_shared`) and with the modules the fits import
    (:meth:`~recpipe.models.base.Recommender.preload`). Every model is used as loaded,
    whichever process fitted it, so that what the bundle ranks with is what the service
    loads.
    """
    data = TrainData(history, items, users)
    fits = _Fits(data, configs, seed, Path(out))
    for cls, _ in configs.values():
        cls.preload()  # once here, not once in each worker that fits one
    with closing(map_shared(_fit_and_save, fits, list(configs), n_workers, "models")) as done:
        models = {name: load_model(fits.out / name) for name in done}
    # fitted, every model held the history's one seen matrix; loaded, each has its own copy
    # (some 200 MB at 25M events): back to one
    for model in models.values():
        model.share_seen(data.seen)
    return models


def check_ranker_models(features: list[str], models: list[str], all_models: list[str]) -> None:
    """Refuse a bundle whose ranker reads a model column no bundled model gives."""
    missing = [
        m for m in all_models if m not in models and any(f.startswith(f"m_{m}_") for f in features)
    ]
    if missing:
        raise ConfigError(
            f"params.yaml: serve.models leaves out {', '.join(missing)}, whose columns the "
            "ranker uses (keep them, or leave serve.models null)"
        )


def ranking_of(
    models: dict[str, Recommender],
    n: dict[str, int],
    blend: Mapping,
    ranker: TrainResult,
    fcfg: FeaturesConfig,
    history: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    user_feats: pd.DataFrame | None = None,
    item_feats: pd.DataFrame | None = None,
) -> Ranking:
    """The :class:`Ranking` of ``history`` (features computed unless given): the bundle
    stage builds it to rank every user, :class:`recpipe.serving.bundle.Bundle` to rank
    fresh histories."""
    now = history_now(history)
    context = pair_context(history, items, now, fcfg, len(users))
    if user_feats is None:
        user_feats = user_features(history, users, items, now, fcfg).reset_index()
    if item_feats is None:
        item_feats = item_features(history, items, now, fcfg).reset_index()
    return Ranking(
        models=models,
        n=n,
        weights=dict(blend["weights"]),
        normalise=str(blend["normalise"]),
        ranker=ranker,
        features=fcfg,
        items=items,
        user_feats=user_feats,
        item_feats=item_feats,
        context=context,
        now=now,
        # the user features' item popularity, from the context's log of the same history
        pop_share=context.log.pop_share(),
    )


def user_blocks(history: pd.DataFrame, size: int, n_workers: int = 1) -> Iterator[np.ndarray]:
    """The users with history, sorted, at most ``size`` at a time, in blocks of even sizes
    for ``n_workers`` side by side (:func:`~recpipe.engine.even_cuts`)."""
    users = np.unique(history["user_idx"].to_numpy(np.int64))
    for start, stop in even_cuts(len(users), size, n_workers):
        yield users[start:stop]


# -- popularity ---------------------------------------------------------------------------
def item_popularity(history: pd.DataFrame, n_items: int, trending_days: float) -> pd.DataFrame:
    """Per item: distinct users over the whole history (``users``) and in its last
    ``trending_days`` days (``trending``)."""
    pairs = history[["user_idx", "item_idx"]].drop_duplicates()
    users = np.bincount(pairs["item_idx"].to_numpy(), minlength=n_items)
    now = history_now(history)
    recent = history[history["timestamp"] > now - trending_days * SECONDS_PER_DAY]
    rpairs = recent[["user_idx", "item_idx"]].drop_duplicates()
    trending = np.bincount(rpairs["item_idx"].to_numpy(), minlength=n_items)
    return pd.DataFrame({"users": users.astype(np.int64), "trending": trending.astype(np.int64)})


def popular_lists(items: pd.DataFrame, pop: pd.DataFrame, n: int) -> pd.DataFrame:
    """The popularity lists (``list, item_idx, score, rank``): ``all`` and ``trending``
    overall and within each category (``all/<category>``); only items with a positive
    count, ties to the lower item index."""
    cats, names = item_category_matrix(items)
    frames = []
    for window in ("all", "trending"):
        score = pop["users" if window == "all" else "trending"].to_numpy(np.float64)
        scopes: list[tuple[str, np.ndarray]] = [(window, np.arange(len(score)))]
        csc = sp.csc_matrix(cats)
        for j, name in enumerate(names):
            members = csc.indices[csc.indptr[j] : csc.indptr[j + 1]]
            scopes.append((f"{window}/{name}", np.sort(members)))
        for label, members in scopes:
            s = score[members]
            keep = s > 0
            members, s = members[keep], s[keep]
            order = np.lexsort((members, -s))[:n]
            frames.append(
                pd.DataFrame(
                    {
                        "list": label,
                        "item_idx": members[order].astype(np.int64),
                        "score": s[order].astype(np.float32),
                        "rank": np.arange(1, len(order) + 1, dtype=np.int32),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


# -- neighbours ---------------------------------------------------------------------------
def nearest_items(
    vectors: sp.csr_matrix, k: int, block: int = 512, threads: int = BLOCK_THREADS
) -> pd.DataFrame:
    """Each item's ``k`` nearest items by the cosine of L2-normalised ``vectors`` rows
    (``item_idx, neighbour_idx, score, rank``): itself and items with an empty row left
    out, only positive similarities, ties to the lower index; computed ``block`` items at a
    time (memory ~ block x items), ``threads`` blocks side by side. The similarities take
    the features' dense route where its cost model says so (:func:`dense_right`: the same
    floats)."""
    n = vectors.shape[0]
    described = np.diff(vectors.indptr) > 0
    vt = sp.csr_matrix(vectors.T)
    right = dense_right(vectors, None, vt, np.arange(n))

    def part(start: int) -> pd.DataFrame:
        rows = np.arange(start, min(start + block, n))
        sims = item_similarities(vectors, rows, vt, right).astype(np.float32)
        sims[:, ~described] = np.nan
        sims[sims <= 0] = np.nan
        itself = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (np.arange(len(rows)), rows)),
            shape=(len(rows), n),
        )
        return top_n(rows, sims, itself, k)

    parts = in_threads(part, list(range(0, n, block)), threads)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=RECS_COLUMNS)
    return out.rename(columns={"user_idx": "item_idx", "item_idx": "neighbour_idx"})


def neighbours(ranking: Ranking, k: int) -> pd.DataFrame:
    """Collaborative (``cf``) and content neighbours of every item, in one frame."""
    frames = []
    for kind, vectors in (("cf", ranking.context.cf), ("content", ranking.context.content)):
        df = nearest_items(sp.csr_matrix(vectors), k)
        df.insert(0, "kind", kind)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


# -- manifest -----------------------------------------------------------------------------
def digest_files(paths: list[Path]) -> str:
    """sha256 over the files (and every file under the folders) of ``paths``, by path."""
    h = hashlib.sha256()
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p])
    for f in files:
        h.update(str(f).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def git_revision(cwd: str | Path = ".") -> str | None:
    """The checked-out commit (with ``-dirty`` when tracked files changed), None outside
    a git repository."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def params_digest(blocks: Mapping[str, object]) -> str:
    """sha256 of the params blocks the bundle depends on, as sorted JSON."""
    return hashlib.sha256(json.dumps(blocks, sort_keys=True, default=str).encode()).hexdigest()


def serve_settings(
    cfg: ServeConfig,
    fcfg: FeaturesConfig,
    ranker: TrainResult,
    blend: Mapping,
    n: Mapping[str, int],
    now: int,
) -> dict:
    """``serve.json``: what applying the bundle's models needs besides their files."""
    rcfg = ranker.config
    return {
        "serve": cfg.model_dump(mode="json"),
        "features": fcfg.model_dump(mode="json"),
        "ranker": {
            "features": ranker.features,
            "base_margin": rcfg.base_margin,
            "base_margin_scale": rcfg.base_margin_scale,
            "rerank_top": rcfg.rerank_top,
        },
        "blend": {"normalise": blend["normalise"], "weights": dict(blend["weights"])},
        "candidates_n": dict(n),
        "now": int(now),
    }
