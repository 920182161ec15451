"""State shared between replicas of the service: each user's recent events (those posted
since the bundle was built) and the erased users.

:class:`MemoryStore` keeps it in this process (one replica, one worker);
:class:`RedisStore` in Redis, for several workers or replicas. Both behave the same (one
test suite runs against both, Redis as a real ``redis-server``). The precomputed lists stay
in the bundle, which every replica loads itself: they are read-only and as large as the
bundle, so copying them to Redis would only add a network hop to every request.

Users are keyed by their id as given (text), not by a bundle's index, so the state
outlives a bundle swap. A store that cannot answer raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The store did not answer (Redis down, refusing connections or too slow): the
    service answers 503 ``store_unavailable`` instead of failing the request."""


@dataclass(frozen=True)
class StoredEvent:
    """One event posted to the service."""

    item_id: str
    event: str
    weight: float
    timestamp: int
    rating: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> StoredEvent:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class UserState:
    """What a request needs to know about a user: erased, and the recent events (oldest
    first)."""

    erased: bool
    events: tuple[StoredEvent, ...]


class Store(Protocol):
    """The shared state's operations (see the module's docstring)."""

    def add_event(self, user_id: str, event: StoredEvent) -> None:
        """Append one event to the user's recent events (the newest ``recent_max`` kept)."""

    def user_state(self, user_id: str) -> UserState:
        """Erased or not, and the recent events, in one look-up."""

    def forget(self, user_id: str) -> None:
        """Mark the user erased and drop their recent events."""

    def mark_erased(self, user_ids: set[str]) -> None:
        """Mark users erased (the deletion list, at start)."""

    def erased_count(self) -> int: ...

    def ping(self) -> bool:
        """Whether the store answers (readiness)."""

    def close(self) -> None: ...


class MemoryStore:
    """The state in this process's memory: for one replica with one worker."""

    def __init__(self, recent_max: int = 200, recent_ttl: float = 0) -> None:
        self.recent_max = recent_max
        self.recent_ttl = recent_ttl
        self._lock = threading.Lock()
        self._recent: dict[str, tuple[float, deque[StoredEvent]]] = {}
        self._erased: set[str] = set()

    def add_event(self, user_id: str, event: StoredEvent) -> None:
        with self._lock:
            entry = self._recent.get(user_id)
            if entry is None or self._expired(user_id):
                events: deque[StoredEvent] = deque(maxlen=self.recent_max)
            else:
                events = entry[1]
            events.append(event)
            self._recent[user_id] = (time.monotonic(), events)

    def _expired(self, user_id: str) -> bool:
        last, _ = self._recent[user_id]
        return bool(self.recent_ttl) and time.monotonic() - last > self.recent_ttl

    def user_state(self, user_id: str) -> UserState:
        with self._lock:
            erased = user_id in self._erased
            if user_id not in self._recent:
                return UserState(erased, ())
            if self._expired(user_id):
                del self._recent[user_id]
                return UserState(erased, ())
            return UserState(erased, tuple(self._recent[user_id][1]))

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._erased.add(user_id)
            self._recent.pop(user_id, None)

    def mark_erased(self, user_ids: set[str]) -> None:
        with self._lock:
            self._erased |= user_ids
            for u in user_ids:
                self._recent.pop(u, None)

    def erased_count(self) -> int:
        with self._lock:
            return len(self._erased)

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class RedisStore:
    """The state in Redis: a list of JSON events per user (``<prefix>:recent:<user>``,
    trimmed to the newest ``recent_max``, expiring ``recent_ttl`` seconds after the last
    event) and a set of erased users (``<prefix>:erased``). Every operation is one round
    trip (a pipeline)."""

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        prefix: str = "recpipe",
        recent_max: int = 200,
        recent_ttl: float = 0,
    ) -> None:
        import redis  # only a service configured for Redis needs the client

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._errors = redis.RedisError
        self.prefix = prefix
        self.recent_max = recent_max
        self.recent_ttl = recent_ttl
        self._erased_key = f"{prefix}:erased"

    def _key(self, user_id: str) -> str:
        return f"{self.prefix}:recent:{user_id}"

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """Redis's failures (connection refused or lost, timeouts) as StoreUnavailable."""
        try:
            yield
        except self._errors as exc:
            raise StoreUnavailable(f"Redis did not answer ({type(exc).__name__}: {exc})") from exc

    def add_event(self, user_id: str, event: StoredEvent) -> None:
        key = self._key(user_id)
        with self._answering():
            pipe = self.client.pipeline(transaction=True)
            pipe.rpush(key, event.to_json())
            pipe.ltrim(key, -self.recent_max, -1)
            if self.recent_ttl:
                pipe.pexpire(key, max(1, round(self.recent_ttl * 1000)))
            pipe.execute()

    def user_state(self, user_id: str) -> UserState:
        with self._answering():
            pipe = self.client.pipeline(transaction=False)
            pipe.sismember(self._erased_key, user_id)
            pipe.lrange(self._key(user_id), 0, -1)
            erased, raw = pipe.execute()
        return UserState(bool(erased), tuple(StoredEvent.from_json(r) for r in raw))

    def forget(self, user_id: str) -> None:
        with self._answering():
            pipe = self.client.pipeline(transaction=True)
            pipe.sadd(self._erased_key, user_id)
            pipe.delete(self._key(user_id))
            pipe.execute()

    def mark_erased(self, user_ids: set[str]) -> None:
        if not user_ids:
            return
        with self._answering():
            pipe = self.client.pipeline(transaction=True)
            pipe.sadd(self._erased_key, *user_ids)
            pipe.delete(*(self._key(u) for u in user_ids))
            pipe.execute()

    def erased_count(self) -> int:
        with self._answering():
            return int(self.client.scard(self._erased_key))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # any connection failure means "not ready", not a 500
            return False

    def close(self) -> None:
        self.client.close()
