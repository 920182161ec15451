"""Request and response bodies of the HTTP API (pydantic), so the OpenAPI document
describes every field. They mirror the dataclasses of :mod:`recpipe.serving.service`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recpipe.serving.settings import MAX_N

ID_MAX = 512
"""Longest user or item id accepted (ids are text, as in the data)."""


class Strict(BaseModel):
    """Request bodies refuse unknown fields: a misspelled filter is an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class ReasonOut(BaseModel):
    """Why an item is recommended."""

    kind: str = Field(
        description="similar_to (an item of the history), category, popular or feature"
    )
    text: str = Field(description="the reason in words, e.g. 'because you watched X'")
    item_id: str | None = Field(None, description="the history item it is most similar to")
    category: str | None = Field(None, description="the category the reason is about")
    feature: str | None = Field(None, description="the ranker feature (kind=feature)")
    value: float | None = Field(None, description="similarity or contribution to the score")


class ItemOut(BaseModel):
    """One recommended item."""

    item_id: str
    score: float = Field(
        description="the list's score (higher is better; not comparable across lists)"
    )
    rank: int = Field(description="1-based position in the whole list (offset included)")
    title: str
    categories: list[str]
    reasons: list[ReasonOut] = Field(default_factory=list)
    source: str = Field(
        description="the list the item came from: the model asked for, popular (fallback or "
        "top-up of a short filtered list), cf or content (similar items)"
    )


class RecommendationsOut(BaseModel):
    """A page of recommendations for a user or a session."""

    user_id: str | None = Field(description="the user (null for a session)")
    model: str
    n: int
    offset: int
    items: list[ItemOut]
    fallback: Literal["popular"] | None = Field(
        description="'popular' when the user is unknown and sent no items"
    )
    fresh: bool = Field(description="ranked now (new events or a session), not precomputed")
    known_user: bool = Field(description="the bundle knows the user")
    bundle_id: str
    unknown_items: list[str] = Field(
        default_factory=list, description="session items the bundle does not know (ignored)"
    )


class SessionItem(Strict):
    """One item of a session, with its event type and time when known."""

    item_id: str = Field(min_length=1, max_length=ID_MAX)
    event: str | None = Field(None, description="event type (default view)")
    timestamp: int | None = Field(
        None, description="unix seconds (default: one second apart, the last one now)"
    )


class SessionRequest(Strict):
    """A visitor's session (items most recent last) and the same filters as a user's."""

    items: list[SessionItem | str] = Field(
        max_length=MAX_N,
        description="the session's items, most recent last: ids, or objects with event and "
        "timestamp",
    )
    n: int = Field(10, ge=1, le=MAX_N)
    offset: int = Field(0, ge=0, le=10_000)
    category: list[str] = Field(default_factory=list, description="only these categories")
    exclude: list[str] = Field(default_factory=list, description="item ids never to return")
    model: str = Field("ranker", description="ranker, blend or an enabled candidate model")
    reasons: bool = Field(True, description="explain each item")


class SimilarOut(BaseModel):
    item_id: str
    kind: Literal["cf", "content"] = Field(description="the neighbours given")
    items: list[ItemOut]
    bundle_id: str


class PopularOut(BaseModel):
    category: str | None
    window: Literal["all", "trending"]
    items: list[ItemOut]
    bundle_id: str


class EventIn(Strict):
    """An event of a user on an item."""

    user_id: str = Field(min_length=1, max_length=ID_MAX)
    item_id: str = Field(min_length=1, max_length=ID_MAX)
    event: str = Field("view", description="event type (one of the service's event weights)")
    timestamp: int | None = Field(None, description="unix seconds (default: now)")
    rating: float | None = Field(None, description="explicit rating, if any")


class EventOut(BaseModel):
    user_id: str
    item_id: str
    event: str
    timestamp: int
    known_user: bool
    known_item: bool = Field(description="false: stored for the next ingest, not usable now")


class ForgetOut(BaseModel):
    user_id: str
    erased: Literal[True] = True
    known_user: bool = Field(description="the current bundle knew the user")


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReloadInfo(BaseModel):
    reloading: bool
    reloads: int = Field(description="bundles loaded since start (the first included)")
    loaded_at: float | None = Field(description="unix time the current bundle was swapped in")
    load_seconds: float | None
    last_error: str | None = Field(description="why the last reload failed (old bundle kept)")
    last_error_at: float | None


class ReadyOut(BaseModel):
    ready: bool
    bundle_id: str | None
    store: bool = Field(description="the store answers")
    reload: ReloadInfo


class VersionOut(BaseModel):
    recpipe: str
    bundle_id: str | None
    bundle_path: str
    models: list[str]
    git_revision: str | None
    params_digest: str | None
    counts: dict[str, Any]
    metrics: dict[str, Any]
    reload: ReloadInfo


class ReloadOut(BaseModel):
    started: bool = Field(description="a reload started (false: one was already running)")
    bundle_id: str | None = Field(description="the bundle serving when this answer was made")
    reload: ReloadInfo


class ErrorBody(BaseModel):
    status: int
    code: str = Field(description="invalid_request, not_found, unauthorized, ...")
    message: str
    field: str | None = Field(
        None, description="the request field at fault, e.g. n or body.items.0"
    )
    details: list[dict] | None = None


class ErrorOut(BaseModel):
    """Every error has this shape."""

    error: ErrorBody
