"""The service's business logic, without HTTP: what the endpoints of ``recpipe serve`` call.

A :class:`Service` answers from one loaded bundle plus the shared :mod:`store` (recent
events, erased users) and writes events and erasures durably (:mod:`events`). Every answer
is a plain dataclass; every refusal is a :class:`ServiceError` carrying the HTTP status,
a code and the request field at fault, so the app only translates.

A known user's recommendations come from the bundle's precomputed list when the user has
posted nothing the bundle does not already hold; otherwise the bundle ranks the user's
history plus the new events at once (``Bundle.rank_fresh``). Seen items (the bundle's
history and the recent events), the request's exclusions and, when asked, items outside
the requested categories are removed; a list that filtering leaves short is topped up
with popular items (per category when filtered; marked ``source="popular"``), without a
fresh ranking. Only a page that reaches past the precomputed depth (``serve.cache_n``) is
ranked fresh for a user without new events. A user the bundle does not know (or who was
erased) and who has no events, and a session or user the model cannot rank, get the
bundle's fallback lists (``serve.fallback``: popular, trending) walked in order, per
category when filtered, flagged with the first one used (``fallback="popular"``). Items
whose score is not a finite number are left out.

Requests are checked with the rules ingest reads the events back with: event types of the
event weights, timestamps no more than a day ahead of this server's clock (a later one
would move the next bundle's "now"), ratings within the bundle's ratings. A store that does
not answer (:class:`~recpipe.serving.store.StoreUnavailable`) is a 503
``store_unavailable``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recpipe.log import get_logger
from recpipe.schema import EARLIEST, LATEST
from recpipe.serving.events import DeletionList, EventLog, EventRecord
from recpipe.serving.settings import Settings
from recpipe.serving.store import Store, StoredEvent, StoreUnavailable, UserState

if TYPE_CHECKING:
    from recpipe.serving.bundle import Bundle, Reason

log = get_logger("serve")

FUTURE_SECONDS = 86_400
"""How far ahead of this server's clock an event's timestamp may be (clock skew between the
shop and the service); later ones would move the next bundle's "now"."""


class ServiceError(Exception):
    """A request the service refuses: ``status`` (HTTP), ``code``, the ``field`` at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def invalid(field: str, message: str) -> ServiceError:
    return ServiceError(422, "invalid_request", message, field)


@dataclass(frozen=True)
class Filters:
    """What a request removes from a list, besides the items the user has seen."""

    categories: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass
class RecommendedItem:
    """One item of an answer. ``source`` is the list it came from: the model asked for,
    ``popular`` (a fallback or a top-up), or ``cf``/``content`` (similar items)."""

    item_id: str
    score: float
    rank: int
    title: str
    categories: list[str]
    reasons: list[Reason] = field(default_factory=list)
    source: str = "ranker"


@dataclass
class Recommendations:
    """An answer to a user's or a session's request."""

    user_id: str | None
    model: str
    items: list[RecommendedItem]
    n: int
    offset: int
    fallback: str | None
    fresh: bool
    known_user: bool
    bundle_id: str
    unknown_items: list[str] = field(default_factory=list)


@dataclass
class SimilarItems:
    item_id: str
    kind: str
    items: list[RecommendedItem]
    bundle_id: str


@dataclass
class PopularItems:
    category: str | None
    window: str
    items: list[RecommendedItem]
    bundle_id: str


@dataclass
class EventAccepted:
    user_id: str
    item_id: str
    event: str
    timestamp: int
    known_user: bool
    known_item: bool


@dataclass
class UserForgotten:
    user_id: str
    known_user: bool


@dataclass
class SessionEvent:
    """One item of a visitor's session (most recent last); ``timestamp`` defaults to one
    second apart, ending now."""

    item_id: str
    event: str | None = None
    timestamp: int | None = None


@dataclass
class Ranked:
    """A list of candidates before filtering: item indices, scores, per-item feature
    contributions (fresh ranker lists) and where the list came from."""

    items: np.ndarray
    scores: np.ndarray
    contributions: list[dict[str, float]] | None
    source: str


def check_timestamp(value: int, field_name: str, now: float | None = None) -> int:
    """Unix seconds ingest accepts, at most :data:`FUTURE_SECONDS` ahead of ``now``."""
    if not EARLIEST <= value < LATEST:
        raise invalid(field_name, f"timestamp {value} is not unix seconds between 1900 and 2300")
    now = time.time() if now is None else now
    if value > now + FUTURE_SECONDS:
        raise invalid(
            field_name,
            f"timestamp {value} is more than a day ahead of the server's clock ({int(now)})",
        )
    return value


_NO_HISTORY = pd.DataFrame()
"""The history of a request that needs none (read only; building an empty frame per
request cost a tenth of a known user's answer)."""


class Service:
    """Answers from one bundle (see the module's docstring). Cheap to call from many threads:
    the bundle is read-only and the store, event log and deletion list lock themselves."""

    def __init__(
        self,
        bundle: Bundle,
        store: Store,
        events: EventLog,
        deletions: DeletionList,
        settings: Settings,
    ) -> None:
        self.bundle = bundle
        self.store = store
        self.events = events
        self.deletions = deletions
        self.settings = settings
        items = bundle.items.sort_values("item_idx")
        self.item_ids: list[str] = [str(x) for x in items["item_id"]]
        self.titles: list[str] = [str(x) for x in items["title"]]
        self.item_categories: list[list[str]] = [
            [str(c) for c in (cats if cats is not None else [])] for cats in items["categories"]
        ]
        self.categories = tuple(bundle.categories)
        self._category_set = set(self.categories)
        self._category_items: dict[str, np.ndarray] = {}
        self._item_index = pd.Index(self.item_ids)
        # the bundle's fallback lists in order (serve.fallback), as popularity windows
        self.fallback_order: tuple[str, ...] = tuple(bundle.config.fallback) or ("popular",)

    # ------------------------------------------------------------------ helpers

    @property
    def bundle_id(self) -> str:
        return self.bundle.id

    @cached_property
    def model_names(self) -> tuple[str, ...]:
        return tuple(self.bundle.model_names)

    def check_model(self, model: str) -> str:
        if model not in self.model_names:
            raise invalid(
                "model",
                f"unknown model {model!r} (available: {', '.join(self.model_names)})",
            )
        return model

    def check_n(self, n: int, offset: int = 0) -> None:
        if not 1 <= n <= self.settings.max_n:
            raise invalid("n", f"n must be between 1 and {self.settings.max_n}, got {n}")
        if offset < 0:
            raise invalid("offset", f"offset must be 0 or more, got {offset}")

    def category_items(self, category: str) -> np.ndarray:
        got = self._category_items.get(category)
        if got is None:
            got = np.array(
                [i for i, cats in enumerate(self.item_categories) if category in cats],
                dtype=np.int64,
            )
            self._category_items[category] = got
        return got

    def check_categories(self, categories: tuple[str, ...]) -> None:
        for c in categories:
            if not c:
                raise invalid("category", "category must not be empty")
            if c not in self._category_set:
                known = ", ".join(self.categories[:50])
                more = "" if len(self.categories) <= 50 else ", ..."
                raise invalid("category", f"unknown category {c!r} (known: {known}{more})")

    def _allowed(self, items: np.ndarray, filters: Filters, removed: set[int]) -> np.ndarray:
        """Mask of the items a request may get."""
        keep = np.ones(len(items), dtype=bool)
        if filters.categories:
            wanted = np.concatenate([self.category_items(c) for c in filters.categories])
            keep &= np.isin(items, wanted)
        if removed:
            keep &= ~np.isin(items, np.fromiter(removed, dtype=np.int64, count=len(removed)))
        return keep

    def _item(self, idx: int, score: float, rank: int, source: str) -> RecommendedItem:
        return RecommendedItem(
            item_id=self.item_ids[idx],
            score=float(score),
            rank=rank,
            title=self.titles[idx],
            categories=self.item_categories[idx],
            source=source,
        )

    def _excluded(self, filters: Filters) -> set[int]:
        """The indices of the excluded items the bundle knows, in one look-up."""
        if not filters.exclude:
            return set()
        found = self._item_index.get_indexer(list(filters.exclude))
        return set(found[found >= 0].tolist())

    @contextmanager
    def _store_answering(self, what: str) -> Iterator[None]:
        """A store that does not answer as a 503 (``what`` says what was done anyway)."""
        try:
            yield
        except StoreUnavailable as exc:
            log.warning("store unavailable: %s", exc)
            raise ServiceError(
                503, "store_unavailable", f"the shared store did not answer{what}; retry later"
            ) from None

    def user_state(self, user_id: str) -> UserState:
        """The user's state in the store (erased, recent events); a 503 when the store
        does not answer."""
        return self._user_state(user_id)

    def _user_state(self, user_id: str) -> UserState:
        with self._store_answering(""):
            return self.store.user_state(user_id)

    def _popular(self, n: int, categories: tuple[str, ...], window: str = "all") -> Ranked:
        """Popular items (``window`` all or trending), merged over the requested categories
        by score; ``source`` is ``popular`` or ``trending``."""
        source = "popular" if window == "all" else window
        if not categories:
            s = self.bundle.popular(n=n, category=None, window=window)
            return Ranked(s.items, s.scores, None, source)
        parts = [self.bundle.popular(n=n, category=c, window=window) for c in categories]
        items = np.concatenate([p.items for p in parts])
        scores = np.concatenate([p.scores for p in parts])
        order = np.lexsort((items, -scores))
        items, scores = items[order], scores[order]
        _, first = np.unique(items, return_index=True)
        first.sort()
        return Ranked(items[first], scores[first], None, source)

    def _page(
        self,
        lists: list[Ranked],
        filters: Filters,
        removed: set[int],
        n: int,
        offset: int,
        history: np.ndarray,
        with_reasons: bool,
    ) -> list[RecommendedItem]:
        """The items ``offset .. offset + n`` of the lists chained (each filtered, items of
        an earlier list not repeated), with their reasons."""
        out: list[RecommendedItem] = []
        taken = set(removed)
        position = 0
        context = self.bundle.history_context(history) if with_reasons else None
        for ranked in lists:
            # a score that is not a number says nothing about the item's place: left out
            keep = self._allowed(ranked.items, filters, taken) & np.isfinite(ranked.scores)
            for j in np.flatnonzero(keep):
                idx = int(ranked.items[j])
                if idx in taken:  # a duplicate inside one list
                    continue
                taken.add(idx)
                position += 1
                if position <= offset:
                    continue
                item = self._item(idx, float(ranked.scores[j]), position, ranked.source)
                if with_reasons:
                    contrib = ranked.contributions[j] if ranked.contributions else None
                    item.reasons = list(self.bundle.reasons(history, idx, contrib, context))
                out.append(item)
                if len(out) == n:
                    return out
        return out

    def _fallback(
        self, filters: Filters, removed: set[int], n: int, offset: int, reasons: bool
    ) -> tuple[list[RecommendedItem], str]:
        """The page from the bundle's fallback lists walked in order (a list too short for
        the page goes on with the next), and the first list the page used."""
        want = offset + n + len(removed)
        windows = {"popular": "all", "trending": "trending"}
        lists = [self._popular(want, filters.categories, windows[f]) for f in self.fallback_order]
        items = self._page(lists, filters, removed, n, offset, np.empty(0, np.int64), reasons)
        return items, items[0].source if items else self.fallback_order[0]

    def _history_frame(self, rows: list[tuple[int, int, str, float, float | None]]) -> pd.DataFrame:
        frame = pd.DataFrame(rows, columns=["item_idx", "timestamp", "event", "weight", "rating"])
        return frame.astype({"item_idx": "int64", "timestamp": "int64", "weight": "float64"})

    def _with_new_events(
        self, history: pd.DataFrame, rows: list[tuple[int, int, str, float, float | None]]
    ) -> pd.DataFrame:
        """The bundle's ``history`` of a user (or an empty frame) and the ``rows`` of new
        events, ordered by time (ties in that order): :meth:`_history_frame` of both, put
        together column by column (a frame of the history's rows as tuples cost a tenth of
        a fresh answer)."""
        if len(history) == 0:
            return self._history_frame(rows).sort_values("timestamp", kind="stable")
        new = list(zip(*rows, strict=True)) if rows else [()] * 5
        rating = [np.nan if r is None else r for r in new[4]]
        frame = pd.DataFrame(
            {
                "item_idx": np.r_[history["item_idx"].to_numpy(np.int64), new[0]].astype(np.int64),
                "timestamp": np.r_[history["timestamp"].to_numpy(np.int64), new[1]].astype(
                    np.int64
                ),
                "event": np.r_[history["event"].to_numpy(object), np.array(new[2], dtype=object)],
                "weight": np.r_[history["weight"].to_numpy(np.float64), new[3]].astype(np.float64),
                "rating": np.r_[history["rating"].to_numpy(np.float64), rating].astype(np.float64),
            }
        )
        return frame.sort_values("timestamp", kind="stable")

    def _weight(self, event: str) -> float:
        return float(self.settings.event_weights.get(event, 1.0))

    # ------------------------------------------------------------------ users

    def user_recommendations(
        self,
        user_id: str,
        n: int = 10,
        offset: int = 0,
        filters: Filters = Filters(),  # noqa: B008 (frozen, never mutated)
        model: str = "ranker",
        reasons: bool = True,
        state: UserState | None = None,
    ) -> Recommendations:
        """A user's page of recommendations (see the module's docstring). ``state``: the
        user's store state when the caller already read it (:meth:`user_state`)."""
        self.check_n(n, offset)
        self.check_model(model)
        self.check_categories(filters.categories)
        state = self._user_state(user_id) if state is None else state
        idx = None if state.erased else self.bundle.user_index(user_id)
        removed = self._excluded(filters)
        new_rows: list[tuple[int, int, str, float, float | None]] = []
        history = _NO_HISTORY
        # the frame only when events must be compared with it (the cached path needs the
        # item indices alone, and building a frame costs more than the rest of a request)
        if idx is not None and state.events and not state.erased:
            history = self.bundle.history(idx)
        if state.events and not state.erased:
            held = set()
            if len(history):
                held = set(
                    zip(history["item_idx"], history["timestamp"], history["event"], strict=True)
                )
            for e in state.events:
                item = self.bundle.item_index(e.item_id)
                if item is None:
                    continue
                if (item, e.timestamp, e.event) in held:  # already in this bundle
                    continue
                # a rating outside the bundle's (kept from before it was checked) is dropped
                rating = e.rating if self._rating_ok(e.rating) else None
                new_rows.append((item, e.timestamp, e.event, e.weight, rating))
        known_items = self.bundle.history_items(idx) if idx is not None else np.empty(0, np.int64)
        seen = set(known_items.tolist())
        seen |= {r[0] for r in new_rows}
        removed |= seen
        base = dict(user_id=user_id, model=model, n=n, offset=offset, bundle_id=self.bundle_id)
        if idx is None and not new_rows:
            items, used = self._fallback(filters, removed, n, offset, reasons)
            return Recommendations(
                items=items, fallback=used, fresh=False, known_user=False, **base
            )
        need = offset + n + len(removed)
        lists: list[Ranked] = []
        fresh = bool(new_rows)
        hist_items = self._history_items(known_items, new_rows)
        if not fresh:
            cached = self.bundle.cached(idx, model=model)
            if cached is not None:
                lists.append(Ranked(cached.items, cached.scores, cached.contributions, model))
                # a page past a full-length list's depth is ranked fresh (a shorter list
                # already held every candidate); a list that filters (categories, exclusions)
                # leave short is topped up with popular items below: a fresh ranking would
                # cost a whole ranking for the few items the filter keeps
                depth = len(cached.items)
                fresh = offset + n > depth and depth >= self.bundle.config.cache_n
            else:
                fresh = True
        if fresh:
            if idx is not None and history.empty:
                history = self.bundle.history(idx)
            rows = self._with_new_events(history, new_rows)
            s = self.bundle.rank_fresh(rows, user_idx=idx, model=model, n=self._fresh_n(need))
            if len(s) == 0 and idx is None:  # the model cannot rank a history it does not know
                items, used = self._fallback(filters, removed, n, offset, reasons)
                return Recommendations(
                    items=items, fallback=used, fresh=False, known_user=False, **base
                )
            lists = [Ranked(s.items, s.scores, s.contributions, model)]
        lists.append(self._popular(need, filters.categories))
        items = self._page(lists, filters, removed, n, offset, hist_items, reasons)
        return Recommendations(
            items=items, fallback=None, fresh=fresh, known_user=idx is not None, **base
        )

    def _fresh_n(self, need: int) -> int:
        """How many items to rank fresh: the bundle's list length, more when a page (plus
        what filters remove) reaches past it."""
        return max(self.bundle.config.cache_n, need)

    def _rating_ok(self, rating: float | None) -> bool:
        if rating is None:
            return True
        scale = self.bundle.rating_range
        return scale is not None and math.isfinite(rating) and scale[0] <= rating <= scale[1]

    @staticmethod
    def _history_items(old: np.ndarray, new_rows: list[tuple]) -> np.ndarray:
        """Item indices of a history, oldest first (what reasons compare against)."""
        if not new_rows:
            return old
        new = np.array([r[0] for r in sorted(new_rows, key=lambda r: r[1])], dtype=np.int64)
        return np.concatenate([old, new])

    # ------------------------------------------------------------------ sessions

    def session_recommendations(
        self,
        session: list[SessionEvent],
        n: int = 10,
        offset: int = 0,
        filters: Filters = Filters(),  # noqa: B008
        model: str = "ranker",
        reasons: bool = True,
    ) -> Recommendations:
        """A visitor's page from the items of the current session (most recent last)."""
        self.check_n(n, offset)
        self.check_model(model)
        self.check_categories(filters.categories)
        clock = time.time()
        now = int(clock)
        rows: list[tuple[int, int, str, float, float | None]] = []
        unknown: list[str] = []
        for k, e in enumerate(session):
            ts = now - (len(session) - 1 - k) if e.timestamp is None else e.timestamp
            check_timestamp(ts, f"items[{k}].timestamp", clock)
            event = e.event or "view"
            if event not in self.settings.event_weights:
                raise invalid(
                    f"items[{k}].event",
                    f"unknown event type {event!r} "
                    f"(known: {', '.join(self.settings.event_weights)})",
                )
            idx = self.bundle.item_index(e.item_id)
            if idx is None:
                unknown.append(e.item_id)
                continue
            rows.append((idx, ts, event, self._weight(event), None))
        removed = self._excluded(filters) | {r[0] for r in rows}
        base = dict(user_id=None, model=model, n=n, offset=offset, bundle_id=self.bundle_id)
        frame = self._history_frame(rows).sort_values("timestamp", kind="stable")
        need = offset + n + len(removed)
        s = None
        if rows:
            s = self.bundle.rank_fresh(frame, user_idx=None, model=model, n=self._fresh_n(need))
        if s is None or len(s) == 0:
            # no known item, or a model that cannot rank a session (svd knows users only)
            items, used = self._fallback(filters, removed, n, offset, reasons)
            return Recommendations(
                items=items,
                fallback=used,
                fresh=False,
                known_user=False,
                unknown_items=unknown,
                **base,
            )
        lists = [
            Ranked(s.items, s.scores, s.contributions, model),
            self._popular(need, filters.categories),
        ]
        hist_items = frame["item_idx"].to_numpy(np.int64)
        items = self._page(lists, filters, removed, n, offset, hist_items, reasons)
        return Recommendations(
            items=items,
            fallback=None,
            fresh=True,
            known_user=False,
            unknown_items=unknown,
            **base,
        )

    # ------------------------------------------------------------------ items

    def similar(self, item_id: str, n: int = 10, kind: str = "auto") -> SimilarItems:
        self.check_n(n)
        idx = self.bundle.item_index(item_id)
        if idx is None:
            raise ServiceError(404, "not_found", f"unknown item {item_id!r}", "item_id")
        used, s = self.bundle.similar(idx, kind=kind, n=n + 1)
        keep = (s.items != idx) & np.isfinite(s.scores)
        items = [
            self._item(int(i), float(sc), r + 1, used)
            for r, (i, sc) in enumerate(zip(s.items[keep][:n], s.scores[keep][:n], strict=True))
        ]
        return SimilarItems(item_id=item_id, kind=used, items=items, bundle_id=self.bundle_id)

    def popular(
        self, n: int = 10, category: str | None = None, window: str = "all"
    ) -> PopularItems:
        self.check_n(n)
        cats = () if category is None else (category,)
        self.check_categories(cats)
        s = self._popular(n, cats, window)
        keep = np.isfinite(s.scores)
        items = [
            self._item(int(i), float(sc), r + 1, s.source)
            for r, (i, sc) in enumerate(zip(s.items[keep][:n], s.scores[keep][:n], strict=True))
        ]
        return PopularItems(category=category, window=window, items=items, bundle_id=self.bundle_id)

    # ------------------------------------------------------------------ writes

    def record_event(
        self,
        user_id: str,
        item_id: str,
        event: str = "view",
        timestamp: int | None = None,
        rating: float | None = None,
    ) -> EventAccepted:
        """Append the event durably, then apply it to the user's recent events."""
        if event not in self.settings.event_weights:
            raise invalid(
                "event",
                f"unknown event type {event!r} (known: {', '.join(self.settings.event_weights)})",
            )
        ts = int(time.time()) if timestamp is None else check_timestamp(timestamp, "timestamp")
        if rating is not None:
            self._check_rating(rating)
        if self._user_state(user_id).erased:
            raise ServiceError(
                409, "user_erased", f"user {user_id!r} was erased: no events are kept", "user_id"
            )
        self.events.append(EventRecord(user_id, item_id, event, ts, rating))
        with self._store_answering(" (the event is saved for the next ingest, not applied now)"):
            self.store.add_event(
                user_id, StoredEvent(item_id, event, self._weight(event), ts, rating)
            )
        return EventAccepted(
            user_id=user_id,
            item_id=item_id,
            event=event,
            timestamp=ts,
            known_user=self.bundle.user_index(user_id) is not None,
            known_item=self.bundle.item_index(item_id) is not None,
        )

    def _check_rating(self, rating: float) -> None:
        """A rating on the scale of the ratings the bundle's models learnt from: another
        would skew them (and a huge one overflows the features)."""
        scale = self.bundle.rating_range
        if not math.isfinite(rating):
            raise invalid("rating", "rating must be a finite number")
        if scale is None:
            raise invalid(
                "rating",
                "this bundle's data has no ratings: send the event without a rating",
            )
        low, high = scale
        if not low <= rating <= high:
            raise invalid(
                "rating", f"rating {rating} is outside the data's ratings [{low}, {high}]"
            )

    def forget_user(self, user_id: str) -> UserForgotten:
        """Right to erasure: on the deletion list (durably) first, then forgotten here."""
        self.deletions.append(user_id)
        with self._store_answering(
            " (the erasure is on the deletion list: a restart or the next ingest honours it)"
        ):
            self.store.forget(user_id)
        known = self.bundle.user_index(user_id) is not None
        return UserForgotten(user_id=user_id, known_user=known)

    def describe(self) -> dict[str, Any]:
        """What /v1/version shows of the bundle."""
        m = self.bundle.manifest
        return {
            "bundle_id": self.bundle_id,
            "bundle_path": str(self.bundle.path),
            "models": list(self.model_names),
            "git_revision": m.get("git_revision"),
            "params_digest": m.get("params_digest"),
            "counts": m.get("counts", {}),
            "metrics": m.get("metrics", {}),
        }
