"""The HTTP API through FastAPI's TestClient over a real bundle (the tiny pipeline's):
every endpoint, every error and its JSON shape, events, erasure, the API key, reload."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recpipe.serving.app import create_app
from recpipe.serving.bundle import Bundle, BundleError, Scored
from recpipe.serving.events import DeletionList, EventLog
from recpipe.serving.routers.convert import recommendations_out
from recpipe.serving.service import Filters, Service, ServiceError, SessionEvent
from recpipe.serving.settings import Settings
from recpipe.serving.store import MemoryStore
from recpipe.sources.userfiles import load_deletions, load_landing
from tests.serving_helpers import copy_bundle, redis_server, tiny_bundle

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def bundle_path(serving_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_bundle(tiny_bundle(serving_repo), tmp_path_factory.mktemp("b") / "bundle")


@pytest.fixture(scope="module")
def bundle(bundle_path: Path) -> Bundle:
    return Bundle.load(bundle_path)


def make_settings(tmp_path: Path, bundle_path: Path, **kw) -> Settings:
    return Settings(
        bundle=bundle_path,
        landing=tmp_path / "landing",
        deletions=tmp_path / "deletions.jsonl",
        reload_interval=0,
        warm=False,
        **kw,
    )


@pytest.fixture
def client(tmp_path: Path, bundle_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path, bundle_path))) as c:
        yield c


def known_user(bundle: Bundle, k: int = 0) -> tuple[str, int]:
    """The k-th user that has a ranker list."""
    users = [u for u in range(bundle.n_users) if bundle.cached(u) is not None]
    u = users[k]
    return bundle.users["user_id"].iat[u], u


def ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def assert_error(r, status: int, field: str | None = None, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and err["message"]
    if field is not None:
        assert err["field"] == field, err
    if code is not None:
        assert err["code"] == code
    return err


# -- health -------------------------------------------------------------------------------
def test_health_ready_version(client: TestClient, bundle: Bundle) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] and ready.json()["store"]
    assert ready.json()["bundle_id"] == bundle.id
    v = client.get("/v1/version").json()
    assert v["bundle_id"] == bundle.id and v["models"] == list(bundle.model_names)
    assert v["params_digest"] == bundle.manifest["params_digest"]
    assert v["metrics"]["ranker"]["ndcg@10"] == bundle.manifest["metrics"]["ranker"]["ndcg@10"]
    assert v["reload"]["reloads"] == 1 and v["reload"]["last_error"] is None


def test_openapi_documents_every_endpoint_and_field(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path, method in [
        ("/v1/users/{user_id}/recommendations", "get"),
        ("/v1/users/{user_id}", "delete"),
        ("/v1/recommendations", "post"),
        ("/v1/items/{item_id}/similar", "get"),
        ("/v1/popular", "get"),
        ("/v1/events", "post"),
        ("/admin/reload", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/v1/version", "get"),
    ]:
        assert method in paths[path], path
    item = doc["components"]["schemas"]["ItemOut"]["properties"]
    assert {"item_id", "score", "rank", "title", "categories", "reasons"} <= set(item)
    assert "ErrorOut" in doc["components"]["schemas"]
    assert "APIKeyHeader" in doc["components"]["securitySchemes"]


# -- users --------------------------------------------------------------------------------
def test_known_user_gets_the_cached_list_without_seen_items(
    client: TestClient, bundle: Bundle
) -> None:
    uid, u = known_user(bundle)
    r = client.get(f"/v1/users/{uid}/recommendations", params={"n": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    cached = bundle.cached(u)
    assert ids(body) == [bundle.item_id(int(i)) for i in cached.items[:5]]
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
    assert body["fallback"] is None and body["known_user"] and not body["fresh"]
    assert body["bundle_id"] == bundle.id
    seen = {bundle.item_id(int(i)) for i in bundle.seen(u)}
    assert not seen & set(ids(body))
    first = body["items"][0]
    idx = bundle.item_index(first["item_id"])
    assert first["title"] == bundle.items["title"].iat[idx]
    assert first["categories"] == list(bundle.item_categories(idx))
    assert any(i["reasons"] for i in body["items"])
    assert {r["kind"] for i in body["items"] for r in i["reasons"]} <= {
        "similar_to",
        "category",
        "popular",
        "feature",
    }
    no_reasons = client.get(f"/v1/users/{uid}/recommendations", params={"reasons": False})
    assert all(i["reasons"] == [] for i in no_reasons.json()["items"])


def test_pagination_continues_the_list(client: TestClient, bundle: Bundle) -> None:
    uid, u = known_user(bundle)
    first = client.get(f"/v1/users/{uid}/recommendations", params={"n": 3}).json()
    second = client.get(f"/v1/users/{uid}/recommendations", params={"n": 3, "offset": 3}).json()
    both = client.get(f"/v1/users/{uid}/recommendations", params={"n": 6}).json()
    assert ids(first) + ids(second) == ids(both)
    assert [i["rank"] for i in second["items"]] == [4, 5, 6]


def test_other_models_and_unknown_model(client: TestClient, bundle: Bundle) -> None:
    uid, u = known_user(bundle)
    for model in ("blend", "popularity", "itemknn"):
        body = client.get(
            f"/v1/users/{uid}/recommendations", params={"n": 4, "model": model}
        ).json()
        assert body["model"] == model
        assert ids(body) == [bundle.item_id(int(i)) for i in bundle.cached(u, model).items[:4]]
    err = assert_error(
        client.get(f"/v1/users/{uid}/recommendations", params={"model": "nope"}),
        422,
        "model",
    )
    for name in bundle.model_names:
        assert name in err["message"]


def test_category_and_exclude_filters(client: TestClient, bundle: Bundle) -> None:
    uid, _ = known_user(bundle)
    plain = client.get(f"/v1/users/{uid}/recommendations", params={"n": 5}).json()
    top = plain["items"][0]
    cat = top["categories"][0]
    body = client.get(f"/v1/users/{uid}/recommendations", params={"n": 5, "category": cat}).json()
    assert body["items"] and all(cat in i["categories"] for i in body["items"])
    other = [c for c in bundle.categories if c != cat][0]
    two = client.get(
        f"/v1/users/{uid}/recommendations", params={"n": 8, "category": [cat, other]}
    ).json()
    assert all({cat, other} & set(i["categories"]) for i in two["items"])
    excl = client.get(
        f"/v1/users/{uid}/recommendations",
        params={"n": 5, "exclude": [top["item_id"], "no-such-item"]},
    ).json()
    assert top["item_id"] not in ids(excl) and ids(excl)[:4] == ids(plain)[1:5]
    err = assert_error(
        client.get(f"/v1/users/{uid}/recommendations", params={"category": "zzz"}),
        422,
        "category",
    )
    assert cat in err["message"]


def test_a_filter_that_empties_the_cached_list_still_fills_the_page(
    client: TestClient, bundle: Bundle
) -> None:
    """Every cached item excluded: the page comes from popular items (source popular),
    still without seen items."""
    uid, u = known_user(bundle)
    cached = [bundle.item_id(int(i)) for i in bundle.cached(u).items]
    body = client.get(
        f"/v1/users/{uid}/recommendations",
        params={"n": 3, "exclude": cached, "model": "ranker"},
    ).json()
    seen = {bundle.item_id(int(i)) for i in bundle.seen(u)}
    assert len(body["items"]) == 3 or body["items"] == []
    assert not (set(ids(body)) & (set(cached) | seen))


def test_stranger_gets_popular_items_flagged(client: TestClient, bundle: Bundle) -> None:
    body = client.get("/v1/users/never-seen-42/recommendations", params={"n": 4}).json()
    assert body["fallback"] == "popular" and not body["known_user"]
    assert ids(body) == [bundle.item_id(int(i)) for i in bundle.popular(4).items]
    assert all(i["source"] == "popular" for i in body["items"])
    cat = bundle.categories[0]
    in_cat = client.get(
        "/v1/users/never-seen-42/recommendations", params={"n": 3, "category": cat}
    ).json()
    assert ids(in_cat) == [bundle.item_id(int(i)) for i in bundle.popular(3, cat).items]
    metrics = client.get("/metrics").text
    assert 'recpipe_fallbacks_total{endpoint="/v1/users/{user_id}/recommendations"' in metrics


# -- sessions -----------------------------------------------------------------------------
def test_session_is_ranked_fresh_without_its_items(client: TestClient, bundle: Bundle) -> None:
    session = [bundle.item_id(int(i)) for i in bundle.popular(3).items]
    r = client.post("/v1/recommendations", json={"items": session, "n": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fresh"] and body["fallback"] is None and body["user_id"] is None
    assert len(body["items"]) == 5 and not set(session) & set(ids(body))
    objects = [{"item_id": session[0], "event": "purchase", "timestamp": 1_700_000_000}]
    r = client.post("/v1/recommendations", json={"items": objects, "model": "blend", "n": 3})
    assert r.status_code == 200 and r.json()["model"] == "blend"


@pytest.mark.parametrize("limit", [1, 3])
def test_fresh_rankings_run_at_most_the_set_number_at_once(
    tmp_path: Path, bundle_path: Path, bundle: Bundle, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Sessions and users with new events are ranked ``fresh_concurrency`` at a time in a
    process, however many requests arrive together; every request is answered."""
    running, most = 0, 0
    lock = threading.Lock()
    rank_fresh = Bundle.rank_fresh

    def counted(self, *args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.2)  # long enough for the others to arrive
            return rank_fresh(self, *args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(Bundle, "rank_fresh", counted)
    uid, _ = known_user(bundle)
    other, _ = known_user(bundle, 1)
    session = [bundle.item_id(int(i)) for i in bundle.popular(3).items]
    settings = make_settings(tmp_path, bundle_path, fresh_concurrency=limit)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/events", json={"user_id": uid, "item_id": session[0], "event": "view"})
        assert r.status_code == 202, r.text

        def ask(k: int):
            if k % 3 == 1:
                return c.get(f"/v1/users/{uid}/recommendations", params={"n": 3})
            if k % 3 == 2:  # another known user, no new event, a page past the cached lists
                params = {"n": 3, "offset": bundle.config.cache_n}
                return c.get(f"/v1/users/{other}/recommendations", params=params)
            return c.post("/v1/recommendations", json={"items": session, "n": 3})

        with ThreadPoolExecutor(9) as pool:
            answers = list(pool.map(ask, range(9)))
    assert all(a.status_code == 200 for a in answers)
    assert all(a.json()["fresh"] for k, a in enumerate(answers) if k % 3 != 2)
    # one at a time with a limit of 1; with 3, several at once (so the limit is what held
    # them apart), never more than 3
    assert most == 1 if limit == 1 else 1 < most <= limit


def test_session_of_unknown_items_falls_back(client: TestClient) -> None:
    body = client.post("/v1/recommendations", json={"items": ["nope-1", "nope-2"]}).json()
    assert body["fallback"] == "popular" and body["unknown_items"] == ["nope-1", "nope-2"]
    assert client.post("/v1/recommendations", json={"items": []}).json()["fallback"] == "popular"


# -- items and popular --------------------------------------------------------------------
def test_similar_items(client: TestClient, bundle: Bundle) -> None:
    item = bundle.item_id(int(bundle.popular(1).items[0]))
    for kind in ("auto", "cf", "content"):
        r = client.get(f"/v1/items/{item}/similar", params={"n": 5, "kind": kind})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] in ("cf", "content") and (kind == "auto" or body["kind"] == kind)
        used, expected = bundle.similar(bundle.item_index(item), kind=kind, n=6)
        want = [bundle.item_id(int(i)) for i in expected.items if bundle.item_id(int(i)) != item]
        assert ids(body) == want[:5] and item not in ids(body)
    assert_error(client.get("/v1/items/no-such-item/similar"), 404, "item_id", "not_found")
    assert_error(client.get(f"/v1/items/{item}/similar", params={"kind": "x"}), 422, "kind")


def test_popular_overall_trending_and_per_category(client: TestClient, bundle: Bundle) -> None:
    body = client.get("/v1/popular", params={"n": 5}).json()
    assert ids(body) == [bundle.item_id(int(i)) for i in bundle.popular(5).items]
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    trending = client.get("/v1/popular", params={"n": 5, "window": "trending"}).json()
    assert ids(trending) == [
        bundle.item_id(int(i)) for i in bundle.popular(5, window="trending").items
    ]
    cat = bundle.categories[-1]
    in_cat = client.get("/v1/popular", params={"category": cat}).json()
    assert in_cat["items"] and all(cat in i["categories"] for i in in_cat["items"])
    assert_error(client.get("/v1/popular", params={"category": "zzz"}), 422, "category")
    assert_error(client.get("/v1/popular", params={"window": "week"}), 422, "window")


# -- events and erasure ---------------------------------------------------------------------
def test_an_event_is_durable_and_excluded_at_once(
    client: TestClient, bundle: Bundle, tmp_path: Path
) -> None:
    uid, u = known_user(bundle)
    before = client.get(f"/v1/users/{uid}/recommendations", params={"n": 5}).json()
    top = before["items"][0]["item_id"]
    r = client.post("/v1/events", json={"user_id": uid, "item_id": top, "event": "purchase"})
    assert r.status_code == 202, r.text
    assert r.json()["known_user"] and r.json()["known_item"]
    landed = load_landing(tmp_path / "landing", {"purchase": 8.0, "view": 1.0})
    assert landed[["user_id", "item_id", "event"]].values.tolist() == [[uid, top, "purchase"]]
    after = client.get(f"/v1/users/{uid}/recommendations", params={"n": 5}).json()
    assert after["fresh"] and top not in ids(after) and len(after["items"]) == 5


def test_an_event_on_an_unknown_item_is_kept_for_ingest(
    client: TestClient, bundle: Bundle, tmp_path: Path
) -> None:
    uid, _ = known_user(bundle, 1)
    r = client.post("/v1/events", json={"user_id": uid, "item_id": "brand-new", "timestamp": 5})
    assert r.status_code == 202 and r.json()["known_item"] is False
    assert r.json()["timestamp"] == 5
    body = client.get(f"/v1/users/{uid}/recommendations").json()
    assert not body["fresh"]  # nothing the bundle can rank with
    assert len(load_landing(tmp_path / "landing", {"view": 1.0})) == 1


def test_erasure(client: TestClient, bundle: Bundle, tmp_path: Path, bundle_path: Path) -> None:
    uid, _ = known_user(bundle, 2)
    r = client.delete(f"/v1/users/{uid}")
    assert r.status_code == 200 and r.json() == {"user_id": uid, "erased": True, "known_user": True}
    assert load_deletions(tmp_path / "deletions.jsonl") == {uid}
    body = client.get(f"/v1/users/{uid}/recommendations").json()
    assert body["fallback"] == "popular" and not body["known_user"]
    assert_error(client.post("/v1/events", json={"user_id": uid, "item_id": "x"}), 409, "user_id")
    # a restarted service (fresh memory store) forgets the same users
    with TestClient(create_app(make_settings(tmp_path, bundle_path))) as again:
        assert again.get(f"/v1/users/{uid}/recommendations").json()["fallback"] == "popular"


def test_api_key_guards_writes_and_admin(tmp_path: Path, bundle_path: Path, bundle) -> None:
    settings = make_settings(tmp_path, bundle_path, api_key="s3cret")
    uid, _ = known_user(bundle)
    with TestClient(create_app(settings)) as c:
        event = {"user_id": uid, "item_id": "x"}
        for call in (
            lambda h: c.post("/v1/events", json=event, headers=h),
            lambda h: c.delete("/v1/users/someone", headers=h),
            lambda h: c.post("/admin/reload", headers=h),
        ):
            assert_error(call({}), 401, "X-API-Key", "unauthorized")
            assert_error(call({"X-API-Key": "wrong"}), 401)
            assert call({"X-API-Key": "s3cret"}).status_code in (200, 202)
        assert c.get(f"/v1/users/{uid}/recommendations").status_code == 200


# -- errors, metrics, reload --------------------------------------------------------------
def test_unknown_routes_and_methods_get_the_error_shape(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing"), 404, code="not_found")
    assert_error(client.put("/v1/popular"), 405, code="method_not_allowed")


def test_metrics(client: TestClient, bundle: Bundle) -> None:
    uid, _ = known_user(bundle)
    client.get(f"/v1/users/{uid}/recommendations")
    client.get("/v1/popular", params={"n": 0})
    text = client.get("/metrics").text
    ep = 'endpoint="/v1/users/{user_id}/recommendations"'
    assert f'recpipe_requests_total{{{ep},method="GET",status="200"}} 1.0' in text
    assert 'recpipe_requests_total{endpoint="/v1/popular",method="GET",status="422"} 1.0' in text
    assert f"recpipe_request_seconds_bucket{{{ep}" in text
    assert f'recpipe_bundle_info{{bundle_id="{bundle.id}"}} 1.0' in text
    assert uid not in text  # ids never become labels


def test_reload_swaps_and_a_broken_bundle_keeps_the_old(
    tmp_path: Path, bundle_path: Path, bundle: Bundle
) -> None:
    live = copy_bundle(bundle_path, tmp_path / "live")
    with TestClient(create_app(make_settings(tmp_path, live, api_key="k"))) as c:
        key = {"X-API-Key": "k"}
        shutil_manifest = json.loads((live / "manifest.json").read_text())
        shutil_manifest["bundle_id"] = "second"
        (live / "manifest.json").write_text(json.dumps(shutil_manifest))
        r = c.post("/admin/reload", params={"wait": True}, headers=key)
        assert r.status_code == 202 and r.json()["bundle_id"] == "second"
        assert c.get("/v1/popular").json()["bundle_id"] == "second"
        # a broken bundle: the old one keeps serving and the error is reported
        (live / "items.parquet").write_bytes(b"not parquet")
        err = assert_error(c.post("/admin/reload", params={"wait": True}, headers=key), 503)
        assert "items.parquet" in err["message"]
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["bundle_id"] == "second"
        assert "items.parquet" in ready.json()["reload"]["last_error"]
        assert "items.parquet" in c.get("/v1/version").json()["reload"]["last_error"]
        assert c.get("/v1/popular").status_code == 200
        assert 'recpipe_bundle_reloads_total{result="error"} 1.0' in c.get("/metrics").text


def test_a_loaded_bundle_is_kept_out_of_full_collections(
    tmp_path: Path, bundle_path: Path, bundle: Bundle
) -> None:
    import gc

    live = copy_bundle(bundle_path, tmp_path / "live")
    gc.unfreeze()
    with TestClient(create_app(make_settings(tmp_path, live, api_key="k"))) as c:
        served = c.app.state.holder.current.bundle
        # the bundle's tables no longer reach the collector: it does not track them
        assert not any(o is served for o in gc.get_objects())
        frozen = gc.get_freeze_count()
        assert frozen > 0
        for _ in range(2):  # each reload puts everything back in view first
            r = c.post("/admin/reload", params={"wait": True}, headers={"X-API-Key": "k"})
            assert r.status_code == 202
        assert gc.get_freeze_count() < 2 * frozen
        assert c.app.state.holder.current.bundle is not served
    gc.unfreeze()


def test_a_changed_bundle_on_disk_is_picked_up(
    tmp_path: Path, bundle_path: Path, bundle: Bundle
) -> None:
    live = copy_bundle(bundle_path, tmp_path / "live")
    settings = make_settings(tmp_path, live).model_copy(update={"reload_interval": 0.1})
    with TestClient(create_app(settings)) as c:
        assert c.get("/readyz").json()["bundle_id"] == bundle.id
        manifest = json.loads((live / "manifest.json").read_text())
        manifest["bundle_id"] = "polled"
        (live / "manifest.json").write_text(json.dumps(manifest))
        deadline = time.monotonic() + 20
        while c.get("/readyz").json()["bundle_id"] != "polled":
            assert time.monotonic() < deadline, "the new bundle was not picked up"
            time.sleep(0.1)


def test_a_missing_bundle_stops_the_start(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, tmp_path / "nowhere"))
    with pytest.raises(BundleError, match="nowhere"), TestClient(app):
        pass


def test_scores_are_finite_numbers(client: TestClient, bundle: Bundle) -> None:
    uid, _ = known_user(bundle)
    body = client.get(f"/v1/users/{uid}/recommendations", params={"n": 20}).json()
    assert np.isfinite([i["score"] for i in body["items"]]).all()


# -- review fixes: each test names the problem it guards ------------------------------------
def service_over(bundle: Bundle, tmp_path: Path, **settings) -> Service:
    """A Service over ``bundle`` (one loaded for the test, free to tweak) and a fresh store."""
    s = make_settings(tmp_path, bundle.path, **settings)
    return Service(bundle, MemoryStore(), EventLog(s.landing), DeletionList(s.deletions), s)


def test_text_is_python_strings_while_serving_and_answers_do_not_change(
    tmp_path: Path, bundle_path: Path, bundle: Bundle
) -> None:
    """The app serves with pandas' Python-backed strings (restored when it stops); a fresh
    ranking answers the same as a service over a bundle loaded with the Arrow-backed ones."""
    before = pd.get_option("mode.string_storage")
    assert before != "python"  # else this test shows nothing
    session = [bundle.item_id(int(i)) for i in bundle.popular(3).items]
    uid, _ = known_user(bundle)
    outside = service_over(bundle, tmp_path / "outside")
    event = dict(user_id=uid, item_id=session[0], event="click", timestamp=1_700_000_000)
    outside.record_event(**event)
    expected = [
        outside.session_recommendations(
            [SessionEvent(i, None, 1_700_000_000 + k) for k, i in enumerate(session)], 8
        ),
        outside.user_recommendations(uid, 8),  # its bundle history (event types) and an event
    ]
    body = [{"item_id": i, "timestamp": 1_700_000_000 + k} for k, i in enumerate(session)]
    settings = make_settings(tmp_path, bundle_path)
    # two apps whose lives overlap: the option holds until the last one stops
    with contextlib.ExitStack() as stack:
        c = stack.enter_context(TestClient(create_app(settings)))
        other = TestClient(create_app(make_settings(tmp_path / "other", bundle_path)))
        other.__enter__()
        assert pd.get_option("mode.string_storage") == "python"
        assert c.post("/v1/events", json=event).status_code == 202
        served = [
            c.post("/v1/recommendations", json={"items": body, "n": 8}).json(),
            c.get(f"/v1/users/{uid}/recommendations", params={"n": 8}).json(),
        ]
    assert pd.get_option("mode.string_storage") == "python"  # the other app still runs
    other.__exit__(None, None, None)
    assert pd.get_option("mode.string_storage") == before
    assert served[1]["fresh"]
    for got, want in zip(served, expected, strict=True):
        assert ids(got) == [i.item_id for i in want.items]
        assert [i["score"] for i in got["items"]] == [i.score for i in want.items]


def test_a_rating_outside_the_data_s_scale_is_refused(client: TestClient, bundle: Bundle) -> None:
    """A rating of 1e308 was accepted and every later request of the user was a 500."""
    uid, _ = known_user(bundle)
    low, high = bundle.rating_range
    item = bundle.item_id(int(bundle.popular(1).items[0]))
    for rating in (1e308, -1e308, high + 0.5, low - 0.5):
        err = assert_error(
            client.post("/v1/events", json={"user_id": uid, "item_id": item, "rating": rating}),
            422,
            "rating",
        )
        assert str(high) in err["message"]
    ok = client.post("/v1/events", json={"user_id": uid, "item_id": item, "rating": high})
    assert ok.status_code == 202, ok.text
    after = client.get(f"/v1/users/{uid}/recommendations")
    assert after.status_code == 200 and after.json()["fresh"]


def test_a_bundle_without_ratings_refuses_any_rating(bundle_path: Path, tmp_path: Path) -> None:
    b = Bundle.load(bundle_path)
    b.rating_range = None
    service = service_over(b, tmp_path)
    with pytest.raises(ServiceError, match="no ratings") as got:
        service.record_event("u1", "i1", "view", None, 3.0)
    assert got.value.status == 422 and got.value.field == "rating"
    assert service.record_event("u1", "i1").event == "view"


def test_an_unexpected_error_answers_the_json_shape(
    tmp_path: Path, bundle_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Service, "popular", broken)
    app = create_app(make_settings(tmp_path, bundle_path))
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level("ERROR"):
        r = c.get("/v1/popular")
        assert_error(r, 500, code="internal_error")
        assert "boom" not in r.text  # no internals to the client; they go to the log
        assert "boom" in caplog.text
        text = c.get("/metrics").text
        assert 'recpipe_requests_total{endpoint="/v1/popular",method="GET",status="500"}' in text


@pytest.mark.parametrize("user_id", ["%20u1", "u1%20", "%20", "%09", "x" * 513])
def test_erasure_of_an_id_ingest_would_not_match_is_refused(
    client: TestClient, user_id: str, tmp_path: Path
) -> None:
    assert_error(client.delete(f"/v1/users/{user_id}"), 422, "user_id")
    assert load_deletions(tmp_path / "deletions.jsonl") == set()


def test_serve_with_several_workers_needs_redis(
    bundle_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from recpipe.cli import SERVE_OPTIONS, main

    for variable in SERVE_OPTIONS.values():  # restored after the test: serve sets them
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    code = main(["serve", "--bundle", str(bundle_path), "--workers", "2"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--store redis" in err and "--workers" in err
    code = main(["serve", "--bundle", str(bundle_path), "--workers", "2", "--store", "memory"])
    assert code == 2


def test_exclusions_are_resolved_at_once(client: TestClient, bundle: Bundle) -> None:
    """The largest exclusion list is accepted and applied (one index lookup, not one per id)."""
    uid, u = known_user(bundle)
    cached = [bundle.item_id(int(i)) for i in bundle.cached(u).items]
    exclude = cached[:5] + [f"nope-{k}" for k in range(995)]
    body = client.get(
        f"/v1/users/{uid}/recommendations", params={"n": 5, "exclude": exclude}
    ).json()
    assert ids(body) == cached[5:10]


def test_a_body_over_the_limit_is_413(client: TestClient) -> None:
    big = b'{"items": [], "pad": "' + b"x" * (2**20) + b'"}'
    headers = {"Content-Type": "application/json"}
    r = client.post("/v1/recommendations", content=big, headers=headers)
    assert_error(r, 413, "body", "payload_too_large")

    def chunks():  # no Content-Length: counted as it arrives
        for k in range(0, len(big), 65536):
            yield big[k : k + 65536]

    assert_error(client.post("/v1/recommendations", content=chunks(), headers=headers), 413)
    small = client.post("/v1/recommendations", content=b'{"items": []}', headers=headers)
    assert small.status_code == 200


def test_a_store_that_stops_answering_is_a_json_503(
    tmp_path: Path, bundle_path: Path, bundle: Bundle
) -> None:
    """Redis down: users, sessions of users, events and erasure get 503 store_unavailable."""
    uid, _ = known_user(bundle)
    item = bundle.item_id(int(bundle.popular(1).items[0]))
    (tmp_path / "redis").mkdir()
    with contextlib.ExitStack() as stack:
        with redis_server(tmp_path / "redis") as url:
            settings = make_settings(tmp_path, bundle_path, store="redis", redis_url=url)
            c = stack.enter_context(TestClient(create_app(settings)))
            assert c.get(f"/v1/users/{uid}/recommendations").status_code == 200
        # the server is stopped
        assert_error(c.get(f"/v1/users/{uid}/recommendations"), 503, code="store_unavailable")
        event = {"user_id": uid, "item_id": item}
        assert_error(c.post("/v1/events", json=event), 503, code="store_unavailable")
        assert_error(c.delete(f"/v1/users/{uid}"), 503, code="store_unavailable")
        assert c.get("/v1/popular").status_code == 200  # the bundle alone still answers
        assert c.get("/readyz").status_code == 503


def test_a_far_future_timestamp_is_refused(client: TestClient, bundle: Bundle) -> None:
    """It would move the next bundle's "now" (the last event of the history)."""
    uid, _ = known_user(bundle)
    now = int(time.time())
    for ts in (now + 2 * 86400, 10_000_000_000):
        event = {"user_id": uid, "item_id": "i", "timestamp": ts}
        err = assert_error(client.post("/v1/events", json=event), 422, "timestamp")
        assert "ahead" in err["message"]
    session = {"items": [{"item_id": "i", "timestamp": now + 2 * 86400}]}
    assert_error(client.post("/v1/recommendations", json=session), 422, "items[0].timestamp")
    ok = {"user_id": uid, "item_id": "i", "timestamp": now + 3600}
    assert client.post("/v1/events", json=ok).status_code == 202


def test_a_stranger_walks_the_bundle_s_fallback_order(bundle_path: Path, tmp_path: Path) -> None:
    b = Bundle.load(bundle_path)
    b.config = b.config.model_copy(update={"fallback": ["trending", "popular"]})
    service = service_over(b, tmp_path)
    trending = [b.item_id(int(i)) for i in b.popular(1000, window="trending").items]
    n = len(trending) + 5  # more than the trending list holds: the page goes on with popular
    rec = service.user_recommendations("stranger", n=n, reasons=False)
    got = [i.item_id for i in rec.items]
    assert rec.fallback == "trending" and not rec.known_user
    assert got[: len(trending)] == trending and len(got) == n and len(set(got)) == n
    assert {i.source for i in rec.items[len(trending) :]} == {"popular"}
    popular = [b.item_id(int(i)) for i in b.popular(1000).items]
    assert got[len(trending) :] == [i for i in popular if i not in trending][:5]
    assert recommendations_out(rec).fallback == "trending"
    # a page past the trending list: popular was the first list used
    rec = service.user_recommendations("stranger", n=3, offset=len(trending), reasons=False)
    assert rec.fallback == "popular" and [i.item_id for i in rec.items] == got[-5:-2]
    session = service.session_recommendations([SessionEvent("nope")], n=3, reasons=False)
    assert session.fallback == "trending" and [i.item_id for i in session.items] == trending[:3]


def test_a_category_filter_tops_the_cached_list_up_without_ranking(
    bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full-length cached list that a category leaves short is topped up with the
    category's popular items, not ranked fresh (a whole ranking for a few items)."""
    b = Bundle.load(bundle_path)
    uid, u = known_user(b)
    full = b.cached(u)
    cut = Scored(full.items[:20], full.scores[:20])  # a full-length list of cache_n = 20
    b.config = b.config.model_copy(update={"cache_n": 20})
    monkeypatch.setattr(b, "cached", lambda user, model="ranker": cut)

    def no_ranking(*args, **kwargs):
        raise AssertionError("ranked fresh")

    monkeypatch.setattr(b, "rank_fresh", no_ranking)
    service = service_over(b, tmp_path)
    counts = {c: sum(c in b.item_categories(int(i)) for i in cut.items) for c in b.categories}
    cat = min((c for c in counts if counts[c]), key=counts.get)
    n = counts[cat] + 3
    assert n <= 20
    rec = service.user_recommendations(uid, n=n, filters=Filters(categories=(cat,)))
    got = [i.item_id for i in rec.items]
    in_cut = [b.item_id(int(i)) for i in cut.items if cat in b.item_categories(int(i))]
    seen = {b.item_id(int(i)) for i in b.seen(u)}
    assert not rec.fresh and got[: len(in_cut)] == in_cut and len(got) == n
    assert all(cat in i.categories for i in rec.items) and not seen & set(got)
    assert {i.source for i in rec.items[len(in_cut) :]} == {"popular"}


def test_a_failed_reload_is_retried_until_the_bundle_is_complete(
    tmp_path: Path, bundle_path: Path, bundle: Bundle
) -> None:
    """``dvc pull`` may write the manifest before the other files: the poller must try the
    same manifest again after the interval, not only when it changes."""
    live = copy_bundle(bundle_path, tmp_path / "live")
    settings = make_settings(tmp_path, live).model_copy(update={"reload_interval": 0.1})
    with TestClient(create_app(settings)) as c:
        good = (live / "items.parquet").read_bytes()
        (live / "items.parquet").write_bytes(b"half written")
        manifest = json.loads((live / "manifest.json").read_text())
        manifest["bundle_id"] = "pulled"
        (live / "manifest.json").write_text(json.dumps(manifest))
        deadline = time.monotonic() + 20
        while not c.get("/readyz").json()["reload"]["last_error"]:
            assert time.monotonic() < deadline, "the broken bundle was not tried"
            time.sleep(0.05)
        assert c.get("/readyz").json()["bundle_id"] == bundle.id
        (live / "items.parquet").write_bytes(good)  # the rest of the pull arrives
        while c.get("/readyz").json()["bundle_id"] != "pulled":
            assert time.monotonic() < deadline, "the completed bundle was not picked up"
            time.sleep(0.05)
        assert c.get("/readyz").json()["reload"]["last_error"] is None


def test_an_empty_category_is_refused_everywhere(client: TestClient) -> None:
    assert_error(client.get("/v1/popular", params={"category": ""}), 422, "category")
    assert_error(
        client.get("/v1/users/u1/recommendations", params={"category": ""}), 422, "category.0"
    )


def test_a_session_a_model_cannot_rank_says_fallback(client: TestClient, bundle: Bundle) -> None:
    """svd scores known users only: a session asked of it gets popular items, flagged."""
    session = [bundle.item_id(int(i)) for i in bundle.popular(3).items]
    body = client.post("/v1/recommendations", json={"items": session, "model": "svd"}).json()
    assert body["fallback"] == "popular" and body["items"]
    assert {i["source"] for i in body["items"]} == {"popular"}


def test_non_finite_scores_drop_their_items(
    bundle_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN score was answered as 0.0, as if it were a real score."""
    b = Bundle.load(bundle_path)
    uid, u = known_user(b)
    full = b.cached(u)
    scores = full.scores.copy()
    scores[[1, 3]] = [np.nan, np.inf]
    monkeypatch.setattr(b, "cached", lambda user, model="ranker": Scored(full.items, scores))
    rec = service_over(b, tmp_path).user_recommendations(uid, n=5, reasons=False)
    want = [b.item_id(int(i)) for k, i in enumerate(full.items) if k not in (1, 3)][:5]
    assert [i.item_id for i in rec.items] == want
    assert all(math.isfinite(i.score) for i in rec.items)


@pytest.fixture(scope="class")
def refusing(tmp_path_factory: pytest.TempPathFactory, bundle_path: Path) -> Iterator[TestClient]:
    """One service shared by :class:`TestRefusedRequests`, closed at the end of the class:
    a running service holds pandas' string option, which
    test_text_is_python_strings_while_serving_and_answers_do_not_change checks."""
    settings = make_settings(tmp_path_factory.mktemp("refusing"), bundle_path)
    with TestClient(create_app(settings)) as c:
        yield c


class TestRefusedRequests:
    """Requests the service must refuse, each naming what is wrong. A refusal changes
    nothing, so they share one service (one per case took 0.3 s each, over 60 cases)."""

    @pytest.mark.parametrize(
        ("params", "field"),
        [({"n": 0}, "n"), ({"n": 1001}, "n"), ({"n": "ten"}, "n"), ({"offset": -1}, "offset")],
    )
    def test_bad_query_values_name_the_field(
        self, refusing: TestClient, params: dict, field: str
    ) -> None:
        assert_error(refusing.get("/v1/users/u1/recommendations", params=params), 422, field)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (b"{not json", "body"),
            (b'{"items": "x"}', "body.items"),
            (b'{"items": [], "n": 0}', "body.n"),
            (b'{"items": [], "colour": "red"}', "body.colour"),
            (b'{"items": [], "model": "nope"}', "model"),
            (b'{"items": [{"item_id": "x", "event": "teleport"}]}', "items[0].event"),
            (b"[]", "body"),
        ],
    )
    def test_bad_session_bodies_name_the_field(
        self, refusing: TestClient, body: bytes, field: str
    ) -> None:
        r = refusing.post(
            "/v1/recommendations", content=body, headers={"Content-Type": "application/json"}
        )
        err = assert_error(r, 422, field)
        if body.startswith(b"{not"):
            assert "malformed JSON" in err["message"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"user_id": "u", "item_id": "i", "event": "wish"}, "event"),
            ({"user_id": "u", "item_id": "i", "timestamp": 10**13}, "timestamp"),
            ({"item_id": "i"}, "body.user_id"),
            ({"user_id": "", "item_id": "i"}, "body.user_id"),
            ({"user_id": "u", "item_id": "i", "rating": "good"}, "body.rating"),
        ],
    )
    def test_bad_events_name_the_field(self, refusing: TestClient, body: dict, field: str) -> None:
        assert_error(refusing.post("/v1/events", json=body), 422, field)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"user_id": " u1", "item_id": "i"}, "body.user_id"),
            ({"user_id": "u1 ", "item_id": "i"}, "body.user_id"),
            ({"user_id": "   ", "item_id": "i"}, "body.user_id"),
            ({"user_id": "u1", "item_id": "i\n"}, "body.item_id"),
            ({"user_id": "u1", "item_id": "\t"}, "body.item_id"),
            ({"user_id": "u1", "item_id": "i", "event": " view"}, "event"),
            ({"user_id": "u1", "item_id": "i", "event": ""}, "event"),
        ],
    )
    def test_events_follow_ingest_s_rules(
        self, refusing: TestClient, body: dict, field: str
    ) -> None:
        """Ingest strips ids and refuses blank ones and unknown event types: so does the API,
        or the next ingest would fail or disagree with what was served."""
        assert_error(refusing.post("/v1/events", json=body), 422, field)

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"exclude": [f"i{k}" for k in range(1001)]}, "exclude"),
            ({"exclude": ["x" * 513]}, "exclude.0"),
            ({"category": ["books"] * 1001}, "category"),
            ({"category": ["c" * 513]}, "category.0"),
            ({"category": ""}, "category.0"),
        ],
    )
    def test_user_filters_are_bounded(self, refusing: TestClient, params: dict, field: str) -> None:
        assert_error(refusing.get("/v1/users/u1/recommendations", params=params), 422, field)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"items": [], "exclude": [f"i{k}" for k in range(1001)]}, "body.exclude"),
            ({"items": [], "exclude": ["x" * 513]}, "body.exclude.0"),
            ({"items": [], "category": ["books"] * 1001}, "body.category"),
            ({"items": [], "category": [""]}, "body.category.0"),
            ({"items": ["x" * 513]}, "body.items.0.item_id"),
            ({"items": [""]}, "body.items.0.item_id"),
            ({"items": [], "n": True}, "body.n"),
            ({"items": [], "offset": True}, "body.offset"),
            ({"items": [{"item_id": "x", "timestamp": True}]}, "body.items.0.timestamp"),
        ],
    )
    def test_session_bodies_are_bounded_and_strict(
        self, refusing: TestClient, body: dict, field: str
    ) -> None:
        assert_error(refusing.post("/v1/recommendations", json=body), 422, field)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"user_id": "u", "item_id": "i", "timestamp": True}, "body.timestamp"),
            ({"user_id": "u", "item_id": "i", "rating": True}, "body.rating"),
            ({"user_id": "u", "item_id": "i", "timestamp": 1.5}, "body.timestamp"),
        ],
    )
    def test_event_numbers_are_strict(self, refusing: TestClient, body: dict, field: str) -> None:
        assert_error(refusing.post("/v1/events", json=body), 422, field)

    @pytest.mark.parametrize(
        ("body", "what"),
        [(b"[" * 100_000 + b"]" * 100_000, "nested"), (b'{"items": ["\xff\xfe"]}', "UTF-8")],
    )
    def test_unparseable_bodies_are_422_naming_the_body(
        self, refusing: TestClient, body: bytes, what: str
    ) -> None:
        r = refusing.post(
            "/v1/recommendations", content=body, headers={"Content-Type": "application/json"}
        )
        err = assert_error(r, 422, "body", "invalid_request")
        assert what in err["message"]
