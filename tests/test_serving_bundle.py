"""The serving bundle: what the bundle stage writes, and what recpipe.serving.Bundle answers.

The end-to-end tests read the tiny baseline repository (its `dvc exp run` built
`models/bundle`) and run the bundle stage again into temporary folders with other settings.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from recpipe.engine import WORKERS
from recpipe.serving.build import item_popularity, nearest_items, popular_lists
from recpipe.serving.bundle import Bundle, BundleError
from tests.conftest import e2e_env

MODELS = ("popularity", "itemknn", "svd", "als", "tfidf", "ease", "seqknn")


# -- pure parts ---------------------------------------------------------------------------
@pytest.mark.parametrize(("route", "threads"), [("sparse", 1), ("dense", 2), ("sparse", 3)])
def test_nearest_items_are_the_brute_force_cosine_neighbours(
    route: str, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recpipe.features import pairs as pairs_module

    if route == "sparse":
        monkeypatch.setattr(pairs_module, "_DENSE_RIGHT_BYTES", 0)
    else:  # the dense route whatever the cost, in chunks that do not divide the catalogue
        monkeypatch.setattr(pairs_module, "_DENSE_NS_PER_PRODUCT", 0.0)
        monkeypatch.setattr(pairs_module, "_DENSE_NS_PER_RIGHT_CELL", 0.0)
        monkeypatch.setattr(pairs_module, "_DENSE_CHUNK_COLUMNS", 7)
    rng = np.random.default_rng(0)
    dense = rng.random((30, 12)) * (rng.random((30, 12)) < 0.4)
    dense[7] = 0.0  # an item without a vector has no neighbours and is nobody's
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    unit = np.divide(dense, norms, out=np.zeros_like(dense), where=norms > 0)
    got = nearest_items(sp.csr_matrix(unit), k=4, block=8, threads=threads)
    one = nearest_items(sp.csr_matrix(unit), k=4, block=30, threads=1)
    pd.testing.assert_frame_equal(got, one, check_exact=True)  # same bits, any blocks
    sims = (unit @ unit.T).astype(np.float32)
    for i in range(30):
        mine = got[got["item_idx"] == i].sort_values("rank")
        if i == 7:
            assert mine.empty
            continue
        s = sims[i].copy()
        s[i] = -np.inf
        s[7] = -np.inf
        s[s <= 0] = -np.inf
        order = np.lexsort((np.arange(30), -s))
        want = [j for j in order if np.isfinite(s[j])][:4]
        assert mine["neighbour_idx"].tolist() == want, i
        assert 7 not in mine["neighbour_idx"].tolist()


def test_popular_lists_count_distinct_users_overall_recent_and_per_category() -> None:
    day = 86_400
    history = pd.DataFrame(
        {
            "user_idx": [0, 0, 1, 2, 2, 3, 3],
            "item_idx": [0, 0, 0, 1, 2, 2, 1],
            "timestamp": [0, 1, 2 * day, 20 * day, 29 * day, 30 * day, 30 * day],
        }
    )
    pop = item_popularity(history, 4, trending_days=7)
    assert pop["users"].tolist() == [2, 2, 2, 0]
    assert pop["trending"].tolist() == [0, 1, 2, 0]  # within 7 days of day 30
    items = pd.DataFrame(
        {"item_idx": [0, 1, 2, 3], "categories": [["a"], ["a", "b"], ["b"], ["b"]]}
    )
    lists = popular_lists(items, pop, n=10)
    by = {k: g.sort_values("rank")["item_idx"].tolist() for k, g in lists.groupby("list")}
    assert by["all"] == [0, 1, 2]  # ties to the lower index; item 3 has nobody
    assert by["trending"] == [2, 1]
    assert by["all/a"] == [0, 1] and by["all/b"] == [1, 2]
    assert by["trending/b"] == [2, 1] and by["trending/a"] == [1]


# -- end to end on the tiny pipeline ------------------------------------------------------


def bundle_stage(
    repo: Path, out: Path, env: dict[str, str] | None = None, **serve: object
) -> subprocess.CompletedProcess:
    """Run the bundle stage in ``repo`` into ``out`` with ``serve`` settings changed (and
    ``env`` added to the environment)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["serve"].update(serve)
    pfile = out.parent / f"{out.name}-params.yaml"
    pfile.write_text(yaml.safe_dump(params))
    cmd = [
        sys.executable,
        "-m",
        "stages.bundle",
        "--split",
        "data/split",
        "--prepared",
        "data/prepared",
        "--blend",
        "data/blend",
        "--ranker",
        "models/ranker",
        "--rating",
        "models/rating",
        "--metrics",
        "reports/metrics.json",
        "--out",
        str(out),
        "--params",
        str(pfile),
    ]
    # (a timeout: a stage that hangs fails the test instead of stalling CI)
    return subprocess.run(
        cmd, cwd=repo, env=e2e_env() | (env or {}), capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def served(tiny_repo: Path) -> Bundle:
    return Bundle.load(tiny_repo / "models/bundle")


@pytest.mark.e2e
def test_a_bundle_of_the_test_fold_serves_the_evaluated_lists(
    tiny_repo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    proc = bundle_stage(tiny_repo, out, fold="test")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["fold"] == "test"
    evaluated = {
        "ranker": tiny_repo / "data/rank/test_recs.parquet",
        "blend": tiny_repo / "data/blend/test_recs.parquet",
        **{m: tiny_repo / f"data/candidates/test/{m}.parquet" for m in MODELS},
    }
    for name, path in evaluated.items():
        want = pd.read_parquet(path)
        got = pd.read_parquet(out / "lists" / f"{name}.parquet")
        # the bundle keeps serve.cache_n items; the pipeline's lists may be shorter
        got = got[got["user_idx"].isin(want["user_idx"].unique())]
        got = got[got["rank"] <= want["rank"].max()].reset_index(drop=True)
        assert len(want) > 0, name
        pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=name)
    # and what the service answers for a test user is that list, item for item
    b = Bundle.load(out)
    want = pd.read_parquet(evaluated["ranker"])
    user = int(want["user_idx"].iloc[0])
    cached = b.cached(user)
    assert cached is not None
    assert cached.items.tolist() == want[want["user_idx"] == user]["item_idx"].tolist()


@pytest.mark.e2e
@pytest.mark.parametrize("n_workers", ["1", "3"])
def test_the_bundle_does_not_depend_on_its_block_size(
    tiny_repo: Path, tmp_path: Path, n_workers: str
) -> None:
    """Blocks of 7 users, ranked in this process or three at a time in worker processes
    forked after the models were fitted (themselves three at a time in workers, then
    loaded back): the same bytes as one block. (That XGBoost's OpenMP does not hang in
    such workers is checked in tests/test_engine.py: here ALS's OpenMP comes from another
    runtime than XGBoost's.)"""
    out = tmp_path / "bundle"
    proc = bundle_stage(tiny_repo, out, env={WORKERS: n_workers}, block_users=7)
    assert proc.returncode == 0, proc.stderr
    side_by_side = n_workers == "3"
    assert bool(re.search(r"\d+ models, 3 side by side", proc.stderr)) == side_by_side
    assert bool(re.search(r"\d+ blocks of users, 3 side by side", proc.stderr)) == side_by_side
    # blocks of 7 users rank in two passes through a scratch folder beside the bundle,
    # which is gone afterwards
    assert not list(tmp_path.glob(".bundle.*.scratch"))
    base = tiny_repo / "models/bundle"
    for f in sorted((base / "lists").iterdir()):
        assert (out / "lists" / f.name).read_bytes() == f.read_bytes(), f.name
    for name in ("popular.parquet", "neighbours.parquet", "history.parquet", "items.parquet"):
        assert (out / name).read_bytes() == (base / name).read_bytes(), name
    # the models, fitted in this process or in workers, are saved alike
    saved = sorted(f.relative_to(base) for f in (base / "models").rglob("*") if f.is_file())
    assert saved and saved == sorted(
        f.relative_to(out) for f in (out / "models").rglob("*") if f.is_file()
    )
    for f in saved:
        assert (out / f).read_bytes() == (base / f).read_bytes(), f
    a = json.loads((base / "manifest.json").read_text())
    b = json.loads((out / "manifest.json").read_text())
    assert a["counts"] == b["counts"] and a["bundle_id"] != b["bundle_id"]  # params differ


@pytest.mark.e2e
def test_the_blend_pass_does_not_depend_on_its_chunks_of_held_scores(served: Bundle) -> None:
    """Ranking.blend_users holds every model's scores a chunk of users at a time (at most
    HELD_CELLS per model): chunks of 2 and 5 users give the frames of one chunk."""
    ranking = served.ranking
    users = np.arange(-1, served.n_users + 2)  # out of range at both ends: no lists
    pairs, lists = ranking.blend_users(users, 20, chunk=len(users))
    assert len(pairs) > 0 and len(lists.blend) > 0
    for chunk in (2, 5):
        got_pairs, got = ranking.blend_users(users, 20, chunk=chunk)
        pd.testing.assert_frame_equal(got_pairs, pairs, check_exact=True)
        pd.testing.assert_frame_equal(got.blend, lists.blend, check_exact=True)
        assert set(got.models) == set(lists.models) == set(ranking.models)
        for m in ranking.models:
            pd.testing.assert_frame_equal(got.models[m], lists.models[m], check_exact=True)
    empty_pairs, empty = ranking.blend_users(np.zeros(0, np.int64), 20, chunk=2)
    assert len(empty_pairs) == 0 and set(empty.models) == set(ranking.models)
    with pytest.raises(ValueError, match="chunk must be at least 1 user, not 0"):
        ranking.blend_users(users, 20, chunk=0)


@pytest.mark.e2e
def test_a_known_users_own_history_ranked_fresh_gives_the_cached_lists(served: Bundle) -> None:
    # every model on a dozen users (each fresh ranking runs every model, blend and ranker)
    for user in range(0, served.n_users, max(1, served.n_users // 12)):
        history = served.history(user)
        if history.empty:
            assert served.cached(user) is None
            continue
        for model in served.model_names:
            cached = served.cached(user, model)
            fresh = served.rank_fresh(history, user, model)
            if cached is None:
                assert len(fresh) == 0, (user, model)
                continue
            assert np.array_equal(cached.items, fresh.items), (user, model)
            assert np.array_equal(cached.scores, fresh.scores), (user, model)


@pytest.mark.e2e
def test_similarity_tables_rank_fresh_histories_the_same(tiny_repo: Path, served: Bundle) -> None:
    """A service that lays out the similarity tables answers every fresh ranking (a known
    user with a new event, a visitor's session) with the same items, scores and
    contributions; a budget one byte short of the tables lays out nothing."""
    from recpipe.features.pairs import similarity_tables_bytes

    need = similarity_tables_bytes(served.ranking.context)
    assert not served.similarity_tables
    assert not Bundle.load(tiny_repo / "models/bundle", need - 1).similarity_tables
    tabled = Bundle.load(tiny_repo / "models/bundle", need)
    assert tabled.similarity_tables
    checked = 0
    for user in range(0, served.n_users, max(1, served.n_users // 15)):
        history = served.history(user)
        if history.empty:
            continue
        new = history.tail(1).assign(item_idx=(history["item_idx"].iloc[-1] + 7) % served.n_items)
        for h, u in ((pd.concat([history, new], ignore_index=True), user), (history.tail(3), None)):
            want, got = served.rank_fresh(h, u), tabled.rank_fresh(h, u)
            assert np.array_equal(want.items, got.items) and len(got) > 0, user
            assert np.array_equal(want.scores, got.scores), user
            assert want.contributions == got.contributions, user
            checked += 1
    assert checked >= 10


@pytest.mark.e2e
def test_a_visitors_session_is_ranked_with_reasons(served: Bundle) -> None:
    assert served.model_names[:2] == ("ranker", "blend")
    session = served.history(3).tail(4)[["item_idx", "timestamp"]]
    got = served.rank_fresh(session)
    assert 0 < len(got) <= served.config.cache_n
    assert not set(got.items) & set(session["item_idx"])  # the session's items excluded
    assert np.all(np.diff(got.scores) <= 0)
    assert got.contributions is not None
    assert len(got.contributions) == min(len(got), Bundle.EXPLAIN)
    again = served.rank_fresh(session)
    assert np.array_equal(got.items, again.items) and np.array_equal(got.scores, again.scores)
    # a new event changes the ranking and its item is no longer recommended
    first = int(got.items[0])
    later = pd.concat(
        [session, pd.DataFrame({"item_idx": [first], "timestamp": [served.ranking.now + 60]})]
    )
    moved = served.rank_fresh(later)
    assert first not in moved.items
    reasons = served.reasons(
        later["item_idx"].to_numpy(), int(moved.items[0]), moved.contributions[0]
    )
    assert reasons and {r.kind for r in reasons} <= {
        "similar_to",
        "category",
        "popular",
        "trending",
        "feature",
    }
    assert any(r.kind == "feature" for r in reasons)
    for model in served.model_names:
        got = served.rank_fresh(session, model=model)
        # svd learns users by SGD on their ratings: nothing for a visitor
        assert (len(got) > 0) == (model != "svd"), model


@pytest.mark.e2e
def test_similar_and_popular(served: Bundle) -> None:
    item = int(served.items["users"].to_numpy().argmax())
    kind, got = served.similar(item, "auto", n=5)
    assert kind == "cf" and 0 < len(got) <= 5 and item not in got.items
    kind, content = served.similar(item, "content", n=5)
    assert kind == "content" and len(content) == 5
    cold = np.flatnonzero(served.items["users"].to_numpy() < served.config.cold_item_users)
    if len(cold):
        assert served.similar(int(cold[0]), "auto")[0] == "content"
    with pytest.raises(ValueError, match="kind"):
        served.similar(item, "nope")
    top = served.popular(10)
    users = served.items["users"].to_numpy()
    assert users[top.items].tolist() == sorted(users, reverse=True)[:10]
    cat = served.categories[0]
    in_cat = served.popular(5, category=cat)
    assert all(cat in served.item_categories(int(i)) for i in in_cat.items)
    assert len(served.popular(5, category="no such category")) == 0
    trending = served.popular(5, window="trending")
    assert np.all(np.diff(trending.scores) <= 0)
    with pytest.raises(ValueError, match="window"):
        served.popular(5, window="weekly")


@pytest.mark.e2e
def test_a_bundle_that_cannot_be_served_is_refused_naming_the_file(
    tiny_repo: Path, tmp_path: Path, served: Bundle
) -> None:
    with pytest.raises(KeyError, match="available: ranker, blend"):
        served.cached(0, "nope")
    copy = tmp_path / "b"
    shutil.copytree(tiny_repo / "models/bundle", copy)
    (copy / "manifest.json").rename(copy / "manifest.bak")
    with pytest.raises(BundleError, match="manifest.json: missing .*unfinished"):
        Bundle.load(copy)
    m = json.loads((copy / "manifest.bak").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="version 99"):
        Bundle.load(copy)
    (copy / "manifest.bak").rename(copy / "manifest.json")
    users = pd.read_parquet(copy / "users.parquet")
    good = users.copy()
    users.loc[1, "user_id"] = users.loc[0, "user_id"]
    users.to_parquet(copy / "users.parquet")
    dup = str(users.loc[0, "user_id"])
    with pytest.raises(BundleError, match=rf"users.parquet: column 'user_id' holds '{dup}' more"):
        Bundle.load(copy)
    good.to_parquet(copy / "users.parquet")
    (copy / "lists/ranker.parquet").write_bytes(b"not parquet")
    with pytest.raises(BundleError, match="cannot load"):
        Bundle.load(copy)
    with pytest.raises(BundleError, match="no such bundle folder"):
        Bundle.load(tmp_path / "nothing")


@pytest.mark.e2e
def test_serve_models_without_a_model_the_ranker_reads_is_refused(
    tiny_repo: Path, tmp_path: Path
) -> None:
    proc = bundle_stage(tiny_repo, tmp_path / "bundle", models=["ease", "als"])
    assert proc.returncode == 2
    assert "serve.models leaves out popularity" in proc.stderr
    proc = bundle_stage(tiny_repo, tmp_path / "bundle", models=["ease", "nope"])
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr
