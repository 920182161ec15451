"""Everything the dashboard reads, and the caches that keep it responsive.

The one module of the dashboard that touches files, ``git`` and ``dvc``. It reads only what
the pipeline wrote (``reports/``, ``data/``, ``models/``, ``params.yaml``, ``dvc exp show``)
and the serving bundle (``models/bundle``); it never fits anything.

Caching: small frames and JSON through ``st.cache_data`` (each caller gets a copy), large
read-only tables (interactions, per-user lists, the embedding) and the bundle through
``st.cache_resource`` (shared, never copied: at MovieLens-1M size a copy of the interactions
per rerun would cost more than the page). Every cached loader takes the file's path and
modification time, so a new ``dvc repro`` shows up on the next rerun without a restart.

A missing output raises :class:`Missing` with the message to show ("run `dvc repro`
first"); pages show it with :func:`section` instead of a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import yaml

from recpipe.dashboard import tables
from recpipe.errors import DataError
from recpipe.persist import ArtifactError

PROJECT_ENV = "RECPIPE_PROJECT"
"""Environment variable naming the project folder (default: the current folder)."""

REPRO = "run `dvc repro` first"
BUNDLE_DIR = "models/bundle"
NO_BUNDLE = (
    "no bundle: the explorer pages need `models/bundle` for reasons and fresh rankings "
    "(run `dvc repro` to build it); the pipeline's own outputs are shown instead"
)
LIST_N = 10
"""Length of the lists the explorers show (and of the rows they load per model)."""
REVIEW_FILES = ("reports/per_user.parquet", "reports/metrics.json")
"""What :func:`review` compares, per revision: the per-user metrics and the metrics."""

NAMED_REPORTS = ("metrics", "intervals", "segments", "ingest", "split", "blend", "ranker")


class Missing(Exception):
    """An output the page needs does not exist; the message says what to run."""


def project() -> Path:
    """The project folder the dashboard reads (``$RECPIPE_PROJECT`` or the current one)."""
    return Path(os.environ.get(PROJECT_ENV) or ".").resolve()


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def need(rel: str, hint: str = REPRO) -> Path:
    """The absolute path of the project file ``rel``; :class:`Missing` when it is absent."""
    path = project() / rel
    if not path.exists():
        raise Missing(f"`{rel}` not found in {project()}: {hint}")
    return path


@contextlib.contextmanager
def section() -> Iterator[None]:
    """Run a part of a page; a missing or unreadable output becomes a message box, and
    the rest of the page still renders."""
    try:
        yield
    except Missing as exc:
        st.info(str(exc), icon="ℹ️")
    except (ArtifactError, DataError, BundleProblem) as exc:
        st.warning(f"cannot read an output: {exc}", icon="⚠️")


class BundleProblem(Exception):
    """The bundle exists but cannot be loaded (its message names the file)."""


# --------------------------------------------------------------------------- small files


@st.cache_data(show_spinner=False, max_entries=64)
def _json(path: str, stamp: int) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc}", file=path) from exc


def report(name: str) -> Any:
    """``reports/<name>.json`` (metrics, intervals, segments, ingest, split, blend, ranker)."""
    path = need(f"reports/{name}.json")
    return _json(str(path), _stamp(path))


def json_file(rel: str, hint: str = REPRO) -> Any:
    path = need(rel, hint)
    return _json(str(path), _stamp(path))


@st.cache_data(show_spinner=False, max_entries=8)
def _yaml(path: str, stamp: int) -> Any:
    return yaml.safe_load(Path(path).read_text()) or {}


def params() -> dict[str, Any]:
    """The run's ``params.yaml``."""
    path = need("params.yaml", "not a recpipe project? (give --project DIR)")
    return _yaml(str(path), _stamp(path))


@st.cache_data(show_spinner=False, max_entries=32)
def _csv(path: str, stamp: int) -> pd.DataFrame:
    return pd.read_csv(path)


def plot_table(name: str) -> pd.DataFrame:
    """``reports/plots/<name>.csv``: the tables behind the DVC plots."""
    path = need(f"reports/plots/{name}.csv")
    return _csv(str(path), _stamp(path))


@st.cache_data(show_spinner=False, max_entries=4)
def _parquet(path: str, stamp: int) -> pd.DataFrame:
    return pd.read_parquet(path)


def per_user() -> pd.DataFrame:
    path = need("reports/per_user.parquet")
    return _parquet(str(path), _stamp(path))


def importance() -> pd.DataFrame:
    """The ranker's feature importance (``models/ranker/importance.json``): feature, gain,
    share, largest first."""
    gains = json_file("models/ranker/importance.json")
    frame = pd.DataFrame({"feature": list(gains), "gain": [float(v) for v in gains.values()]})
    total = frame["gain"].sum()
    frame["share"] = frame["gain"] / total if total > 0 else 0.0
    return frame.sort_values(["gain", "feature"], ascending=[False, True], ignore_index=True)


# --------------------------------------------------------------------------- git and dvc


def _run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        cmd, cwd=project(), capture_output=True, text=True, timeout=timeout, env=env
    )


@st.cache_data(show_spinner=False, ttl=30)
def git_revision(where: str) -> str:
    """``abc1234`` (``+ changes`` when tracked files differ), or a note when not in git."""
    try:
        head = _run(["git", "rev-parse", "--short", "HEAD"], 30)
        if head.returncode != 0:
            return "not a git repository"
        dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"git unavailable ({exc})"
    changes = " + uncommitted changes" if dirty.stdout.strip() else ""
    return head.stdout.strip() + changes


@st.cache_data(show_spinner=False, ttl=30)
def git_revisions(where: str) -> list[str]:
    """Local branches and tags, newest commit first: choices for a base revision."""
    try:
        out = _run(
            ["git", "for-each-ref", "--sort=-committerdate", "--format=%(refname:short)"]
            + ["refs/heads", "refs/tags"],
            30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line for line in out.stdout.splitlines() if line]


def _dvc() -> str:
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.is_file() else "dvc"


def exp_show(where: str) -> list[dict[str, Any]]:
    """``dvc exp show --json`` of the project, rerun when a commit, branch or experiment
    appears or the workspace's reports or params change (``dvc`` takes a second or more)."""
    try:
        refs = _run(["git", "for-each-ref", "--format=%(objectname) %(refname)"], 30).stdout
        head = _run(["git", "rev-parse", "HEAD"], 30).stdout
    except (OSError, subprocess.TimeoutExpired):
        refs = head = ""
    files = [project() / "params.yaml", *sorted((project() / "reports").glob("*.json"))]
    return _exp_show(where, refs + head, tuple(_stamp(f) for f in files))


@st.cache_data(show_spinner="dvc exp show ...", max_entries=8)
def _exp_show(where: str, refs: str, stamps: tuple[int, ...]) -> list[dict[str, Any]]:
    try:
        proc = _run([_dvc(), "exp", "show", "--json"], 300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Missing(f"`dvc exp show` could not run: {exc}") from exc
    if proc.returncode != 0:
        raise Missing(f"`dvc exp show` failed: {proc.stderr.strip()[-500:]}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise Missing(f"`dvc exp show --json` gave no JSON: {exc}") from exc


def review(where: str, base: str, head: str, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The review's verdicts (``python -m stages.review``'s comparison) between two
    revisions, or a revision and the workspace (``head="workspace"``), as a frame
    (:func:`tables.verdict_table`). The numbers come from git, as in the command.

    Computed again when a side changes: a name that now points at another commit (a
    branch, an experiment saved again), or the workspace's reports rewritten by a run."""
    from stages.review import InputError, resolve_rev

    repo = project()
    try:
        commits = tuple("" if r == "workspace" else resolve_rev(r, repo) for r in (base, head))
    except InputError as exc:
        raise Missing(f"no review of {base} against {head}: {exc}") from exc
    stamps = tuple(_stamp(repo / f) for f in REVIEW_FILES) if "workspace" in (base, head) else ()
    return _review(where, base, head, n_boot, seed, (commits, stamps))


@st.cache_data(show_spinner="paired bootstrap over users ...", max_entries=16)
def _review(where: str, base: str, head: str, n_boot: int, seed: int, key: tuple) -> pd.DataFrame:
    from recpipe.evaluation.review import compare_runs
    from stages.review import InputError, read_metrics, read_per_user

    repo = project()
    per_user_path, metrics_path = REVIEW_FILES
    try:
        run = compare_runs(
            read_per_user(per_user_path, base, repo),
            read_per_user(per_user_path, head, repo),
            read_metrics(metrics_path, base, repo),
            read_metrics(metrics_path, head, repo),
            n_boot=n_boot,
            seed=seed,
            base_name=f"{per_user_path} ({base})",
            head_name=f"{per_user_path} ({head})",
        )
    except (InputError, DataError) as exc:
        raise Missing(f"no review of {base} against {head}: {exc}") from exc
    return tables.verdict_table(run)


# --------------------------------------------------------------------------- large tables


@dataclass(frozen=True)
class ByUser:
    """A table sorted by ``user_idx`` with the first row of each user: one user's rows in
    O(log n), without scanning or copying the table."""

    rows: pd.DataFrame
    users: np.ndarray
    starts: np.ndarray

    @classmethod
    def of(cls, frame: pd.DataFrame) -> ByUser:
        rows = frame.sort_values("user_idx", kind="stable", ignore_index=True)
        u = rows["user_idx"].to_numpy()
        users, starts = np.unique(u, return_index=True)
        return cls(rows, users, np.append(starts, len(rows)))

    def get(self, user: int) -> pd.DataFrame:
        pos = int(np.searchsorted(self.users, user))
        if pos >= len(self.users) or self.users[pos] != user:
            return self.rows.iloc[0:0]
        return self.rows.iloc[self.starts[pos] : self.starts[pos + 1]]


@st.cache_resource(show_spinner="reading interactions ...", max_entries=2)
def _interactions(path: str, stamp: int) -> pd.DataFrame:
    return pd.read_parquet(
        path, columns=["user_idx", "item_idx", "event", "weight", "rating", "timestamp"]
    )


def interactions() -> pd.DataFrame:
    """``data/prepared/interactions.parquet`` (shared: do not modify)."""
    path = need("data/prepared/interactions.parquet")
    return _interactions(str(path), _stamp(path))


@st.cache_resource(show_spinner="reading the catalogue ...", max_entries=2)
def _items(path: str, stamp: int, inter: str, inter_stamp: int) -> pd.DataFrame:
    items = pd.read_parquet(path)
    items = items.sort_values("item_idx", ignore_index=True)
    pairs = _interactions(inter, inter_stamp)[["user_idx", "item_idx"]].drop_duplicates()
    users = np.bincount(pairs["item_idx"].to_numpy(), minlength=len(items))
    out = pd.DataFrame(
        {
            "item_idx": items["item_idx"].to_numpy(np.int64),
            "item_id": items["item_id"].astype(str).to_numpy(),
            "title": items["title"].astype(str).to_numpy()
            if "title" in items
            else items["item_id"].astype(str).to_numpy(),
            "categories": [
                tables.category_text(c) for c in items.get("categories", [None] * len(items))
            ],
            "users": users[: len(items)],
        }
    )
    return out


def items() -> pd.DataFrame:
    """The catalogue: item_idx, item_id, title, categories (text), users (popularity: users
    with at least one event on the item). Row ``i`` holds ``item_idx`` ``i``."""
    path = need("data/prepared/items.parquet")
    inter = need("data/prepared/interactions.parquet")
    return _items(str(path), _stamp(path), str(inter), _stamp(inter))


@st.cache_data(show_spinner=False, max_entries=2)
def _users(path: str, stamp: int) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values("user_idx", ignore_index=True)


def users() -> pd.DataFrame:
    path = need("data/prepared/users.parquet")
    return _users(str(path), _stamp(path))


@st.cache_resource(show_spinner="reading the split ...", max_entries=2)
def _test_fold(split: str, stamps: tuple[int, ...]) -> tuple[ByUser, ByUser]:
    cols = ["user_idx", "item_idx", "event", "weight", "rating", "timestamp"]
    history = pd.concat(
        [pd.read_parquet(Path(split) / f"{p}.parquet", columns=cols) for p in ("train", "valid")],
        ignore_index=True,
    )
    history = history.sort_values(["user_idx", "timestamp"], kind="stable", ignore_index=True)
    targets = pd.read_parquet(
        Path(split) / "test_targets.parquet", columns=["user_idx", "item_idx", "relevant"]
    )
    return ByUser.of(history), ByUser.of(targets)


def test_fold() -> tuple[ByUser, ByUser]:
    """The test fold: each user's history (train + valid, oldest first) and test targets."""
    split = need("data/split")
    files = [need(f"data/split/{p}.parquet") for p in ("train", "valid", "test_targets")]
    return _test_fold(str(split), tuple(_stamp(f) for f in files))


def list_files() -> dict[str, Path]:
    """Every test-fold list the pipeline wrote: the candidate models (their file names),
    then ``blend`` and ``ranker``."""
    out = {p.stem: p for p in sorted((project() / "data/candidates/test").glob("*.parquet"))}
    for name, rel in (
        ("blend", "data/blend/test_recs.parquet"),
        ("ranker", "data/rank/test_recs.parquet"),
    ):
        if (project() / rel).is_file():
            out[name] = project() / rel
    if not out:
        raise Missing(f"no lists under `data/candidates/test` in {project()}: {REPRO}")
    return out


@st.cache_resource(show_spinner="reading the lists ...", max_entries=32)
def _top_lists(path: str, stamp: int, n: int) -> ByUser:
    frame = pd.read_parquet(
        path, columns=["user_idx", "item_idx", "score", "rank"], filters=[("rank", "<=", n)]
    )
    return ByUser.of(frame.sort_values(["user_idx", "rank"], ignore_index=True))


def top_lists(n: int = LIST_N) -> dict[str, ByUser]:
    """Each test-fold list's top ``n`` rows, by user (only these rows are read)."""
    return {m: _top_lists(str(p), _stamp(p), n) for m, p in list_files().items()}


def evaluation_users() -> np.ndarray:
    """Users the evaluation scored (their test targets exist), sorted."""
    _, targets = test_fold()
    return targets.users


# --------------------------------------------------------------------------- embedding


@dataclass(frozen=True)
class Embedding:
    """The embedding map of the ALS item factors, and what neighbour searches need."""

    frame: pd.DataFrame
    """item_idx, x, y, cluster (label), title, categories, users (mapped items only)."""
    unit: np.ndarray
    """Unit-length item factors, row = item_idx."""
    known: np.ndarray
    """Items with real factors."""
    explained: tuple[float, float]


@st.cache_resource(show_spinner="embedding map (PCA, K-means) ...", max_entries=2)
def _embedding(
    model_dir: str, stamp: int, clusters: int, seed: int, items_key: tuple
) -> Embedding | None:
    import scipy.sparse as sp

    from recpipe.artifacts import load_optional_model
    from recpipe.evaluation.embedding import embedding_map, item_factors_of

    model = load_optional_model(model_dir)
    if model is None:
        return None
    factors, known = item_factors_of(model)
    cat = items()
    names = sorted({c for text in cat["categories"] for c in text.split(", ") if c})
    lookup = {n: i for i, n in enumerate(names)}
    rows, cols = [], []
    for idx, text in zip(cat["item_idx"], cat["categories"], strict=True):
        for c in text.split(", ") if text else []:
            rows.append(idx)
            cols.append(lookup[c])
    cats = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(factors), len(names)))
    emap = embedding_map(factors, known, cats, names, clusters, seed)
    if emap is None:
        return None
    labels = np.asarray(emap.labels, dtype=object)[emap.cluster - 1]
    meta = cat.set_index("item_idx").loc[emap.items]
    frame = pd.DataFrame(
        {
            "item_idx": emap.items.astype(np.int64),
            "x": emap.coords[:, 0],
            "y": emap.coords[:, 1],
            "cluster": labels,
            "cluster_no": emap.cluster,
            "title": meta["title"].to_numpy(),
            "categories": meta["categories"].to_numpy(),
            "users": meta["users"].to_numpy(),
        }
    ).sort_values(["cluster_no", "item_idx"], ignore_index=True)
    return Embedding(frame, tables.unit_rows(factors), known, emap.explained)


def embedding(model: str = "als") -> Embedding:
    """The embedding map of ``models/<model>/test`` (clusters and seed from params.yaml);
    :class:`Missing` when that model was not fitted or has too few items to map."""
    directory = need(f"models/{model}/test")
    p = params()
    clusters = int(p.get("eval", {}).get("embedding_clusters", 8))
    seed = int(p.get("seed", 0))
    manifest = directory / "model.json"
    item_path = need("data/prepared/items.parquet")
    emb = _embedding(
        str(directory), _stamp(manifest), clusters, seed, (str(item_path), _stamp(item_path))
    )
    if emb is None:
        raise Missing(f"no embedding map: `models/{model}/test` holds no factors to map")
    return emb


@st.cache_resource(show_spinner="item texts (TF-IDF) ...", max_entries=2)
def _content(path: str, stamp: int) -> tuple[Any, np.ndarray]:
    from recpipe.features.metadata import item_vectors

    cat = pd.read_parquet(path).sort_values("item_idx", ignore_index=True)
    vectors = item_vectors(cat).tocsr()
    known = np.asarray(vectors.getnnz(axis=1) > 0)
    return vectors, known


def content_similarity(item: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of ``item``'s TF-IDF document (title, text, categories) to every
    item's, and which items have a document."""
    path = need("data/prepared/items.parquet")
    vectors, known = _content(str(path), _stamp(path))
    sims = np.asarray((vectors @ vectors[item].T).todense()).ravel()
    return sims, known


# --------------------------------------------------------------------------- data page


@st.cache_data(show_spinner=False, max_entries=4)
def _events_over_time(path: str, stamp: int, freq: str) -> pd.DataFrame:
    return tables.events_over_time(_interactions(path, stamp), freq)


def events_over_time(freq: str = "W") -> pd.DataFrame:
    path = need("data/prepared/interactions.parquet")
    return _events_over_time(str(path), _stamp(path), freq)


@st.cache_data(show_spinner=False, max_entries=4)
def _activity(path: str, stamp: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    inter = _interactions(path, stamp)
    per_user = np.bincount(inter["user_idx"].to_numpy())
    per_item = np.bincount(inter["item_idx"].to_numpy())
    return tables.count_distribution(per_user), tables.count_distribution(per_item)


def activity() -> tuple[pd.DataFrame, pd.DataFrame]:
    """How many users have each number of events, how many items each number of events."""
    path = need("data/prepared/interactions.parquet")
    return _activity(str(path), _stamp(path))


@st.cache_resource(show_spinner=False, max_entries=2)
def _by_item(path: str, stamp: int) -> tuple[np.ndarray, np.ndarray]:
    inter = _interactions(path, stamp)
    order = np.argsort(inter["item_idx"].to_numpy(), kind="stable")
    bounds = np.searchsorted(
        inter["item_idx"].to_numpy()[order], np.arange(inter["item_idx"].max() + 2)
    )
    return order, bounds


def item_events(item: int) -> pd.DataFrame:
    """Every event on ``item`` (user_idx, event, timestamp...), from the prepared log."""
    path = need("data/prepared/interactions.parquet")
    order, bounds = _by_item(str(path), _stamp(path))
    if item + 1 >= len(bounds):
        return _interactions(str(path), _stamp(path)).iloc[0:0]
    rows = order[bounds[item] : bounds[item + 1]]
    return _interactions(str(path), _stamp(path)).iloc[rows]


# --------------------------------------------------------------------------- bundle


def bundle() -> Any:
    """The serving bundle (``models/bundle``): a ``recpipe.serving.bundle.Bundle``;
    :class:`Missing` when it is absent (or the serving code is not installed),
    :class:`BundleProblem` when it cannot be loaded."""
    directory = project() / BUNDLE_DIR
    manifest = directory / "manifest.json"
    if not directory.is_dir():
        raise Missing(NO_BUNDLE)
    return _bundle(str(directory), _stamp(manifest))


@st.cache_resource(show_spinner="loading the bundle ...", max_entries=2)
def _bundle(directory: str, stamp: int) -> Any:
    try:
        from recpipe.serving.bundle import Bundle, BundleError
    except ImportError as exc:
        raise Missing(f"{NO_BUNDLE} (the serving code is not installed: {exc})") from exc
    try:
        return Bundle.load(directory)
    except BundleError as exc:
        raise BundleProblem(str(exc)) from exc
