"""A serving bundle loaded into memory, and the answers it gives.

:meth:`Bundle.load` reads a folder written by the ``bundle`` stage (layout in
:mod:`recpipe.serving.build`) and checks it; every lookup afterwards is an array index or a
small computation, never a file read:

- :meth:`Bundle.cached`: a known user's precomputed list for a model (``ranker``, ``blend``
  or a candidate model), seen items already excluded;
- :meth:`Bundle.rank_fresh`: one history ranked now (a visitor's session, or a known user
  with events newer than the bundle) by the same models, blend and ranker
  (:class:`recpipe.serving.online.Ranking`);
- :meth:`Bundle.similar`, :meth:`Bundle.popular`, :meth:`Bundle.reasons`.

Nothing here keeps state between requests: recent events and erased users belong to the
service's store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recpipe.artifacts import load_model
from recpipe.features import pairs
from recpipe.features.config import FeaturesConfig
from recpipe.log import get_logger
from recpipe.persist import ArtifactError
from recpipe.serving.build import FORMAT, FORMAT_VERSION, load_ranker, ranking_of
from recpipe.serving.config import ServeConfig
from recpipe.serving.online import HISTORY_COLUMNS, Ranking

log = get_logger("serve")

KINDS = ("auto", "cf", "content")
WINDOWS = ("all", "trending")


class BundleError(Exception):
    """A bundle folder that cannot be served; the message names the file at fault."""


@dataclass(frozen=True)
class Scored:
    """Items with scores, best first; ``contributions`` (fresh ranker lists only): for
    the first :attr:`Bundle.EXPLAIN` items, the ranker's feature contributions to their
    scores."""

    items: np.ndarray
    scores: np.ndarray
    contributions: list[dict[str, float]] | None = None

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class HistoryContext:
    """A history as :meth:`Bundle.reasons` reads it: its items most recent first, and its
    events per category (in the order of :attr:`Bundle.categories`)."""

    recent: list[int]
    category_counts: np.ndarray


def _positions(ids: np.ndarray, path: Path, column: str) -> dict[str, int]:
    """Each id's row, or a :class:`BundleError` naming the first id given twice."""
    pos = {str(x): i for i, x in enumerate(ids)}
    if len(pos) != len(ids):
        dup = str(ids[pd.Index(ids).duplicated()][0])
        raise BundleError(f"{path}: column {column!r} holds {dup!r} more than once")
    return pos


@dataclass(frozen=True)
class Reason:
    """Why an item is recommended: ``similar_to`` (an item of the history), ``category``
    (a category the history favours), ``popular``/``trending``, or ``feature`` (one of the
    ranker's strongest contributions)."""

    kind: str
    text: str
    item_id: str | None = None
    category: str | None = None
    feature: str | None = None
    value: float | None = None


class _Lists:
    """Per-user lists as flat arrays with row offsets (CSR-like): O(1) lookup."""

    def __init__(self, df: pd.DataFrame, n_users: int, path: Path) -> None:
        users = df["user_idx"].to_numpy(np.int64)
        if len(users) and (np.any(np.diff(users) < 0) or users[-1] >= n_users or users[0] < 0):
            raise BundleError(f"{path}: user_idx not sorted or outside the users table")
        self.indptr = np.searchsorted(users, np.arange(n_users + 1))
        self.items = df["item_idx"].to_numpy(np.int64)
        self.scores = df["score"].to_numpy(np.float32)

    def get(self, user: int) -> Scored | None:
        lo, hi = self.indptr[user], self.indptr[user + 1]
        if lo == hi:
            return None
        return Scored(self.items[lo:hi], self.scores[lo:hi])


class Bundle:
    """A loaded bundle (see the module docstring). Build one with :meth:`load`."""

    EXPLAIN = 20
    """Items at the top of a fresh ranker list that get the ranker's feature
    contributions (``Scored.contributions`` is that long)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, similarity_tables_bytes: int = 0) -> Bundle:
        """Read and check the bundle in ``path``; :class:`BundleError` naming the file
        when something is missing, of another format version, or inconsistent.

        When every item pair's content and collaborative similarities fit in
        ``similarity_tables_bytes`` (:func:`~recpipe.features.pairs.similarity_tables_bytes`),
        they are laid out once here and fresh rankings read them instead of computing them:
        the same features, faster (a service's choice; 0 never)."""
        b = cls(Path(path))
        try:
            b._load()
            context = b.ranking.context
            if similarity_tables_bytes > 0 and (
                similarity_tables_bytes >= pairs.similarity_tables_bytes(context)
            ):
                try:
                    b.ranking.context = pairs.with_similarity_tables(context)
                except MemoryError:  # slower, not wrong: the features are computed instead
                    log.warning("%s: no memory for the similarity tables; serving without", path)
        except BundleError:
            raise
        except (OSError, ValueError, KeyError, TypeError, ArtifactError) as exc:
            raise BundleError(f"{b.path}: cannot load the bundle: {exc}") from exc
        return b

    @property
    def similarity_tables(self) -> bool:
        """Whether fresh rankings read laid-out similarity tables (see :meth:`load`)."""
        return self.ranking.context.cf_table is not None

    def _json(self, name: str) -> dict:
        f = self.path / name
        if not f.is_file():
            last = name == "manifest.json"
            hint = " (unfinished: the bundle stage writes it last)" if last else ""
            raise BundleError(f"{f}: missing{hint}; build one with `dvc repro bundle`")
        try:
            return json.loads(f.read_text())
        except ValueError as exc:
            raise BundleError(f"{f}: not valid JSON ({exc})") from None

    def _parquet(self, name: str) -> pd.DataFrame:
        f = self.path / name
        if not f.is_file():
            raise BundleError(f"{f}: missing; rebuild the bundle (`dvc repro bundle`)")
        return pd.read_parquet(f)

    def _load(self) -> None:
        if not self.path.is_dir():
            raise BundleError(f"{self.path}: no such bundle folder; build one with `dvc repro`")
        m = self._json("manifest.json")
        if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{self.path / 'manifest.json'}: format {m.get('format')!r} version "
                f"{m.get('format_version')!r}, this service reads {FORMAT!r} version "
                f"{FORMAT_VERSION}: rebuild the bundle with this version"
            )
        self._check_manifest(m)
        self.manifest = m
        self.id = str(m["bundle_id"])
        s = self._json("serve.json")
        self.settings = s
        self.config = ServeConfig.model_validate(s["serve"])
        self.items = self._parquet("items.parquet")
        self.users = self._parquet("users.parquet")
        self.n_items, self.n_users = len(self.items), len(self.users)
        if not np.array_equal(self.items["item_idx"].to_numpy(), np.arange(self.n_items)):
            raise BundleError(f"{self.path / 'items.parquet'}: item_idx is not 0..n-1")
        if not np.array_equal(self.users["user_idx"].to_numpy(), np.arange(self.n_users)):
            raise BundleError(f"{self.path / 'users.parquet'}: user_idx is not 0..n-1")
        self._item_id_arr = self.items["item_id"].astype(str).to_numpy()
        # dicts, not pandas indexes: a request looks one id up, and a dict answers in well
        # under a microsecond where get_indexer first builds an index of the one id
        self._item_pos = _positions(self._item_id_arr, self.path / "items.parquet", "item_id")
        self._user_pos = _positions(
            self.users["user_id"].astype(str).to_numpy(), self.path / "users.parquet", "user_id"
        )
        self._categories = [tuple(str(c) for c in cats) for cats in self.items["categories"]]
        self.categories = tuple(sorted({c for cats in self._categories for c in cats}))
        code = {c: j for j, c in enumerate(self.categories)}
        self._cat_codes = [
            np.array(sorted({code[c] for c in cats}), dtype=np.int64) for cats in self._categories
        ]
        # item x category membership, dense: a history's counts are one gather and a sum
        self._cat_member = np.zeros((self.n_items, len(self.categories)), dtype=np.bool_)
        for i, codes in enumerate(self._cat_codes):
            self._cat_member[i, codes] = True

        self.model_names = tuple(m["lists"])
        self._lists = {
            name: _Lists(self._parquet(f"lists/{name}.parquet"), self.n_users, self.path)
            for name in self.model_names
        }
        hist = self._parquet("history.parquet")
        self._history = hist[["user_idx", *HISTORY_COLUMNS]]
        self._hist_ptr = np.searchsorted(
            hist["user_idx"].to_numpy(np.int64), np.arange(self.n_users + 1)
        )
        self._check_counts()
        rated = self._history["rating"].dropna()
        # the scale of the ratings the models learnt from (None: the data has none)
        self.rating_range: tuple[float, float] | None = (
            (float(rated.min()), float(rated.max())) if len(rated) else None
        )
        self._hist_items = self._history["item_idx"].to_numpy(np.int64)
        self._titles = self.items["title"].astype(str).to_numpy()
        self._item_users = self.items["users"].to_numpy(np.int64)
        # 1 + the number of items more users touched
        ascending = np.sort(self._item_users)
        self._pop_rank = len(ascending) - np.searchsorted(ascending, self._item_users, "right") + 1
        self._popular = self._popular_lists(self._parquet("popular.parquet"))
        self._neighbours = self._neighbour_lists(self._parquet("neighbours.parquet"))
        self.ranking = self._ranking()

    def _check_manifest(self, m: object) -> None:
        """The manifest's fields this class reads, with their types."""
        where = self.path / "manifest.json"
        if not isinstance(m, dict):
            raise BundleError(f"{where}: not a JSON object")
        for key, kind in (
            ("bundle_id", str),
            ("models", list),
            ("lists", list),
            ("counts", dict),
        ):
            if not isinstance(m.get(key), kind):
                raise BundleError(f"{where}: key {key!r} missing or not a {kind.__name__}")

    def _check_counts(self) -> None:
        """The tables hold as many rows as the manifest says (files of one build)."""
        counts = self.manifest["counts"]
        files = {"users": "users.parquet", "items": "items.parquet", "events": "history.parquet"}
        got = {"users": self.n_users, "items": self.n_items, "events": len(self._history)}
        for key, n in got.items():
            if counts.get(key) != n:
                raise BundleError(
                    f"{self.path / files[key]}: {n} rows, the manifest's counts.{key} says "
                    f"{counts.get(key)} (files of different builds?); rebuild the bundle"
                )

    def _popular_lists(self, df: pd.DataFrame) -> dict[str, Scored]:
        out = {}
        for name, g in df.groupby("list", sort=True):
            g = g.sort_values("rank")
            items, scores = g["item_idx"].to_numpy(np.int64), g["score"].to_numpy(np.float32)
            out[str(name)] = Scored(items, scores)
        return out

    def _neighbour_lists(self, df: pd.DataFrame) -> dict[str, _Lists]:
        out = {}
        for kind in ("cf", "content"):
            g = df[df["kind"] == kind].rename(columns={"item_idx": "user_idx"})
            g = g.rename(columns={"neighbour_idx": "item_idx"}).sort_values(
                ["user_idx", "rank"], kind="stable"
            )
            out[kind] = _Lists(g, self.n_items, self.path / "neighbours.parquet")
        return out

    def _ranking(self) -> Ranking:
        import faiss
        from threadpoolctl import threadpool_limits

        # One OpenMP thread for faiss in a process that loads a bundle to serve it: a known user's
        # factor models retrieve through faiss one user at a time, from many request
        # threads at once, and its default pool (every core, per call) makes them queue
        # behind each other's spinning threads. Retrieval results do not depend on it.
        faiss.omp_set_num_threads(1)
        # BLAS likewise (ALS's fold-in), for the process: a limit set and restored around
        # each call would race between request threads
        threadpool_limits(1, "blas")

        s = self.settings
        models = {name: load_model(self.path / "models" / name) for name in self.manifest["models"]}
        return ranking_of(
            models,
            {k: int(v) for k, v in s["candidates_n"].items()},
            s["blend"],
            load_ranker(self.path / "ranker", threads=1),
            FeaturesConfig.model_validate(s["features"]),
            self._history,
            self._catalogue_for_features(),
            self.users,
            user_feats=self._parquet("features/users.parquet"),
            item_feats=self._parquet("features/items.parquet"),
        )

    def _catalogue_for_features(self) -> pd.DataFrame:
        """The items table as the pipeline had it (the bundle adds popularity columns)."""
        return self.items.drop(columns=["users", "trending"])

    def warm(self) -> None:
        """Run one fresh ranking, so the first request does not pay for lazy set-up."""
        for user in range(self.n_users):
            h = self.history(user)
            if len(h):
                self.rank_fresh(h.tail(5), None)
                return

    # -- ids --------------------------------------------------------------------------
    def user_index(self, user_id: str) -> int | None:
        return self._user_pos.get(str(user_id))

    def item_index(self, item_id: str) -> int | None:
        return self._item_pos.get(str(item_id))

    def item_id(self, item_idx: int) -> str:
        return str(self._item_id_arr[item_idx])

    def item_categories(self, item_idx: int) -> tuple[str, ...]:
        return self._categories[item_idx]

    # -- answers ----------------------------------------------------------------------
    def history(self, user_idx: int) -> pd.DataFrame:
        """The user's events the bundle was built from, oldest first."""
        lo, hi = self._hist_ptr[user_idx], self._hist_ptr[user_idx + 1]
        return self._history.iloc[lo:hi][HISTORY_COLUMNS].reset_index(drop=True)

    def history_items(self, user_idx: int) -> np.ndarray:
        """The items of the user's events, oldest first (repeats kept); no frame built."""
        return self._hist_items[self._hist_ptr[user_idx] : self._hist_ptr[user_idx + 1]]

    def seen(self, user_idx: int) -> np.ndarray:
        """The distinct items the user touched, sorted."""
        return np.unique(self.history_items(user_idx))

    def _check_model(self, model: str) -> None:
        if model not in self._lists:
            raise KeyError(f"unknown model {model!r}; available: {', '.join(self.model_names)}")

    def cached(self, user_idx: int, model: str = "ranker") -> Scored | None:
        """The user's precomputed list for ``model`` (top ``serve.cache_n``, seen items
        excluded), None when the bundle has none for the user."""
        self._check_model(model)
        if not 0 <= user_idx < self.n_users:
            return None
        return self._lists[model].get(user_idx)

    def rank_fresh(
        self,
        history: pd.DataFrame,
        user_idx: int | None = None,
        model: str = "ranker",
        n: int | None = None,
    ) -> Scored:
        """``history`` (item_idx, timestamp; event, weight, rating optional) ranked now,
        top ``n`` (default ``serve.cache_n``), the history's items excluded."""
        self._check_model(model)
        n = self.config.cache_n if n is None else n
        import xgboost as xgb

        explain = self.EXPLAIN if model == "ranker" else 0
        # one thread: XGBoost's default thread pool costs ~30 ms per small matrix when the
        # cores are busy, more than the whole ranking (and requests run side by side)
        with xgb.config_context(nthread=1):
            lists = self.ranking.rank_history(history, n, user_idx, explain=explain)
        if model == "ranker":
            df = lists.ranker
            return Scored(
                df["item_idx"].to_numpy(np.int64),
                df["score"].to_numpy(np.float32),
                lists.contributions,
            )
        df = lists.blend if model == "blend" else lists.models.get(model)
        if df is None:
            return Scored(np.zeros(0, np.int64), np.zeros(0, np.float32))
        return Scored(df["item_idx"].to_numpy(np.int64), df["score"].to_numpy(np.float32))

    def similar(self, item_idx: int, kind: str = "auto", n: int = 10) -> tuple[str, Scored]:
        """The item's nearest items: ``cf`` (users in common), ``content`` (its
        document), or ``auto``: content for an item fewer than ``serve.cold_item_users``
        users touched (or without collaborative neighbours), collaborative otherwise."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if kind == "auto":
            users = int(self._item_users[item_idx])
            cf = self._neighbours["cf"].get(item_idx)
            kind = "cf" if users >= self.config.cold_item_users and cf is not None else "content"
        got = self._neighbours[kind].get(item_idx)
        if got is None:
            return kind, Scored(np.zeros(0, np.int64), np.zeros(0, np.float32))
        return kind, Scored(got.items[:n], got.scores[:n])

    def popular(self, n: int = 10, category: str | None = None, window: str = "all") -> Scored:
        """The most popular items (distinct users) over the whole history (``all``) or
        its last ``serve.trending_days`` days (``trending``), within ``category``."""
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
        key = window if category is None else f"{window}/{category}"
        got = self._popular.get(key)
        if got is None:
            return Scored(np.zeros(0, np.int64), np.zeros(0, np.float32))
        return Scored(got.items[:n], got.scores[:n])

    def history_context(self, history_items: np.ndarray) -> HistoryContext:
        """What :meth:`reasons` needs of a history (most recent last), for every item of a
        page at once."""
        hist = np.asarray(history_items, dtype=np.int64)
        return HistoryContext(hist[::-1].tolist(), self._cat_member[hist].sum(axis=0))

    def reasons(
        self,
        history_items: np.ndarray,
        item_idx: int,
        contributions: dict[str, float] | None = None,
        context: HistoryContext | None = None,
    ) -> list[Reason]:
        """Why ``item_idx`` suits a user whose history is ``history_items`` (most recent
        last): the most recent history item among its collaborative neighbours (else its
        content neighbours), the history's most frequent category it belongs to, its
        popularity, and with ``contributions`` the ranker's two strongest features.
        ``context``: :meth:`history_context` of ``history_items`` when the caller has it."""
        out: list[Reason] = []
        ctx = self.history_context(history_items) if context is None else context
        for kind, verb in (("cf", "people who liked"), ("content", "it resembles")):
            got = self._neighbours[kind].get(item_idx)
            if got is None or not ctx.recent:
                continue
            near = set(got.items.tolist())
            j = next((h for h in ctx.recent if h in near), None)
            if j is not None:
                title = str(self._titles[j])
                text = (
                    f"because {verb} {title} also liked it"
                    if kind == "cf"
                    else f"because {verb} {title}"
                )
                out.append(Reason("similar_to", text, item_id=self.item_id(j)))
                break
        codes = self._cat_codes[item_idx]
        if len(codes) and ctx.recent:
            # the history's events per category, of the item's categories only
            counts = ctx.category_counts[codes]
            best = int(codes[np.lexsort((codes, -counts))[0]])
            if counts.max() > 0:
                name = self.categories[best]
                out.append(Reason("category", f"you often choose {name}", category=name))
        users = int(self._item_users[item_idx])
        rank = int(self._pop_rank[item_idx])
        if users and rank <= max(10, self.n_items // 10):
            out.append(Reason("popular", f"popular: #{rank} of {self.n_items}", value=users))
        if contributions:
            top = sorted(contributions.items(), key=lambda kv: -kv[1])[:2]
            for feature, value in top:
                if value > 0:
                    text = f"ranker: {feature} +{value:.3f}"
                    out.append(Reason("feature", text, feature=feature, value=value))
        return out
