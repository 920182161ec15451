"""The shared store: the same behaviour from MemoryStore and from RedisStore against a real
redis-server process (started here on a free port), never a fake."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recpipe.serving.store import MemoryStore, RedisStore, StoredEvent
from tests.serving_helpers import redis_server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


_prefixes = iter(range(10_000))


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest):
    """A factory of empty stores of one kind (each Redis store under its own key prefix)."""
    made = []

    def make(recent_max: int = 200, recent_ttl: float = 0):
        if request.param == "memory":
            store = MemoryStore(recent_max, recent_ttl)
        else:
            url = request.getfixturevalue("redis_url")
            store = RedisStore(url, f"t{next(_prefixes)}", recent_max, recent_ttl)
        made.append(store)
        return store

    yield make
    for s in made:
        s.close()


def ev(item: str, ts: int = 1_700_000_000, event: str = "view") -> StoredEvent:
    return StoredEvent(item, event, 1.0, ts, None)


def test_recent_events_in_order_per_user(make_store) -> None:
    s = make_store()
    assert s.user_state("u1").events == () and not s.user_state("u1").erased
    s.add_event("u1", ev("a", 1))
    s.add_event("u1", StoredEvent("b", "purchase", 8.0, 2, 4.5))
    s.add_event("u2", ev("c", 3))
    assert s.user_state("u1").events == (ev("a", 1), StoredEvent("b", "purchase", 8.0, 2, 4.5))
    assert [e.item_id for e in s.user_state("u2").events] == ["c"]


def test_only_the_newest_recent_max_are_kept(make_store) -> None:
    s = make_store(recent_max=3)
    for k in range(5):
        s.add_event("u", ev(f"i{k}", k))
    assert [e.item_id for e in s.user_state("u").events] == ["i2", "i3", "i4"]


def test_forget_erases_and_drops_events(make_store) -> None:
    s = make_store()
    s.add_event("u", ev("a"))
    s.add_event("v", ev("b"))
    s.forget("u")
    assert s.user_state("u").erased and s.user_state("u").events == ()
    assert not s.user_state("v").erased and len(s.user_state("v").events) == 1
    s.mark_erased({"v", "w"})
    assert s.user_state("v").erased and s.user_state("v").events == ()
    assert s.erased_count() == 3
    assert s.ping()


def test_ids_are_text_as_given(make_store) -> None:
    s = make_store()
    odd = "user:ü 7 \n{x}"
    s.add_event(odd, ev("item ü/1"))
    assert s.user_state(odd).events[0].item_id == "item ü/1"
    assert s.user_state("user:ü 7").events == ()


def test_recent_events_expire(make_store) -> None:
    s = make_store(recent_ttl=0.4)
    s.add_event("u", ev("a"))
    assert len(s.user_state("u").events) == 1
    time.sleep(0.6)
    assert s.user_state("u").events == ()


def test_two_redis_clients_share_the_state(redis_url: str) -> None:
    """What several replicas rely on: one writes, another reads."""
    a, b = RedisStore(redis_url, "shared"), RedisStore(redis_url, "shared")
    a.add_event("u", ev("x"))
    b.forget("gone")
    assert [e.item_id for e in b.user_state("u").events] == ["x"]
    assert a.user_state("gone").erased


def test_unreachable_redis_is_not_ready(tmp_path: Path) -> None:
    from tests.serving_helpers import free_port

    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", "x")
    assert s.ping() is False
