"""Request and response bodies of the HTTP API (pydantic), so the OpenAPI document
describes every field. They mirror the dataclasses of :mod:`recpipe.serving.service`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
)

from recpipe.serving.settings import MAX_N

ID_MAX = 512
"""Longest user, item or category id accepted (ids are text, as in the data)."""


def _ingest_id(value: str) -> str:
    # ingest (recpipe.sources.userfiles) strips ids and refuses blank ones: an id it would
    # change is refused here, or the events written now would not match what was served
    if not value.strip():
        raise ValueError("must not be blank")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace (ingest strips it)")
    return value


IngestId = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_MAX), AfterValidator(_ingest_id)
]
"""A user or item id the service writes for ingest: 1..ID_MAX characters, not blank, no
surrounding whitespace (``recpipe.sources.userfiles`` reads the same id back)."""

Text = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX)]
"""An id a request only looks up (an item to exclude, a category, a session item)."""

FILTER_MAX = MAX_N
"""Most categories or exclusions one request may carry."""


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
        description="the list's score (higher is better; not comparable across lists); an "
        "item whose score is not a finite number is left out"
    )
    rank: int = Field(description="1-based position in the whole list (offset included)")
    title: str
    categories: list[str]
    reasons: list[ReasonOut] = Field(default_factory=list)
    source: str = Field(
        description="the list the item came from: the model asked for, popular or trending "
        "(a fallback list, or popular as the top-up of a short filtered list), cf or content "
        "(similar items)"
    )


class RecommendationsOut(BaseModel):
    """A page of recommendations for a user or a session."""

    user_id: str | None = Field(description="the user (null for a session)")
    model: str
    n: int
    offset: int
    items: list[ItemOut]
    fallback: Literal["popular", "trending"] | None = Field(
        description="the first non-personal list used, when the user is unknown and sent no "
        "known items (the bundle's serve.fallback order: popular, trending) or the model "
        "cannot rank the session (popular)"
    )
    fresh: bool = Field(description="ranked now (new events or a session), not precomputed")
    known_user: bool = Field(description="the bundle knows the user")
    bundle_id: str
    unknown_items: list[str] = Field(
        default_factory=list, description="session items the bundle does not know (ignored)"
    )


class SessionItem(Strict):
    """One item of a session, with its event type and time when known."""

    item_id: Text
    event: str | None = Field(None, max_length=ID_MAX, description="event type (default view)")
    timestamp: StrictInt | None = Field(
        None,
        description="unix seconds, at most one day ahead of the server's clock (default: one "
        "second apart, the last one now)",
    )


def _session_item(value: object) -> object:
    return {"item_id": value} if isinstance(value, str) else value


SessionEntry = Annotated[
    SessionItem,
    # a bare id is the item alone: checked as one, so an error names body.items.<k>.item_id
    BeforeValidator(_session_item, json_schema_input_type=SessionItem | Text),
]


class SessionRequest(Strict):
    """A visitor's session (items most recent last) and the same filters as a user's."""

    items: list[SessionEntry] = Field(
        max_length=MAX_N,
        description="the session's items, most recent last: ids, or objects with event and "
        "timestamp",
    )
    n: StrictInt = Field(10, ge=1, le=MAX_N)
    offset: StrictInt = Field(0, ge=0, le=10_000)
    category: list[Text] = Field(
        default_factory=list, max_length=FILTER_MAX, description="only these categories"
    )
    exclude: list[Text] = Field(
        default_factory=list, max_length=FILTER_MAX, description="item ids never to return"
    )
    model: str = Field(
        "ranker", max_length=ID_MAX, description="ranker, blend or an enabled candidate model"
    )
    reasons: StrictBool = Field(True, description="explain each item")


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

    user_id: IngestId
    item_id: IngestId
    event: str = Field(
        "view", max_length=ID_MAX, description="event type (one of the service's event weights)"
    )
    timestamp: StrictInt | None = Field(
        None,
        description="unix seconds, at most one day ahead of the server's clock (default: now)",
    )
    rating: StrictFloat | None = Field(
        None,
        description="explicit rating, if any, within the bundle's ratings (refused when its "
        "data has none)",
    )


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
    code: str = Field(
        description="invalid_request, not_found, unauthorized, user_erased, payload_too_large, "
        "store_unavailable, not_ready, internal_error, ..."
    )
    message: str
    field: str | None = Field(
        None, description="the request field at fault, e.g. n or body.items.0"
    )
    details: list[dict] | None = None


class ErrorOut(BaseModel):
    """Every error has this shape."""

    error: ErrorBody
