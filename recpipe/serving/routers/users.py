"""``/v1/users``: a user's recommendations, and erasure."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from recpipe.serving import schemas
from recpipe.serving.deps import get_service, require_api_key, run_fresh
from recpipe.serving.routers.convert import recommendations_out
from recpipe.serving.schemas import FILTER_MAX, ID_MAX, IngestId, Text
from recpipe.serving.service import Filters, Service
from recpipe.serving.settings import MAX_N

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get("/{user_id}/recommendations", response_model=schemas.RecommendationsOut)
async def user_recommendations(
    request: Request,
    user_id: Annotated[str, Path(max_length=ID_MAX)],
    n: int = Query(10, ge=1, le=MAX_N, description="items on the page"),
    offset: int = Query(0, ge=0, le=10_000, description="items skipped before the page"),
    category: list[Text] = Query(  # noqa: B008
        [], max_length=FILTER_MAX, description="only items of these categories (repeat)"
    ),
    exclude: list[Text] = Query(  # noqa: B008
        [], max_length=FILTER_MAX, description="item ids never to return (repeat)"
    ),
    model: str = Query(
        "ranker", max_length=ID_MAX, description="ranker, blend or an enabled candidate model"
    ),
    reasons: bool = Query(True, description="explain each item"),
    service: Service = Depends(get_service),  # noqa: B008
) -> Response:
    """The user's page: seen items excluded; an unknown user gets popular items
    (``fallback: popular``)."""
    state = service.user_state(user_id)
    answer = partial(
        service.user_recommendations,
        user_id,
        n,
        offset,
        Filters(tuple(category), tuple(exclude)),
        model,
        reasons,
        state,
    )
    # a user without new events whose page lies within the cached lists' depth is a cached
    # list (or a stranger): answered here, on the event loop; anything that may be ranked
    # fresh (tens of milliseconds) goes to a worker thread, in turn
    quick = state.erased or (not state.events and offset + n <= service.bundle.config.cache_n)
    rec = answer() if quick else await run_fresh(request, answer)
    if rec.fallback:
        request.state.fallback = rec.fallback
    # serialised here from the model the service filled: FastAPI would validate the
    # returned model against response_model again (the schema stays documented)
    return Response(recommendations_out(rec).model_dump_json(), media_type="application/json")


@router.delete(
    "/{user_id}",
    response_model=schemas.ForgetOut,
    dependencies=[Depends(require_api_key)],
)
def forget_user(user_id: IngestId, service: Service = Depends(get_service)) -> schemas.ForgetOut:  # noqa: B008
    """Right to erasure: forgotten by the service at once (served as a stranger, events
    refused) and written to the deletion list, which the next ingest honours. An id ingest
    would read differently (blank, surrounding whitespace) is refused: it could never match
    the user's events."""
    done = service.forget_user(user_id)
    return schemas.ForgetOut(user_id=done.user_id, known_user=done.known_user)
