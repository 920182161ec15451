"""``/v1/recommendations``: a visitor's session, ranked now."""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, Request

from recpipe.serving import schemas
from recpipe.serving.deps import get_service, run_fresh
from recpipe.serving.routers.convert import recommendations_out
from recpipe.serving.service import Filters, Service, SessionEvent

router = APIRouter(prefix="/v1/recommendations", tags=["recommendations"])


@router.post("", response_model=schemas.RecommendationsOut)
async def session_recommendations(
    request: Request,
    body: schemas.SessionRequest,
    service: Service = Depends(get_service),  # noqa: B008
) -> schemas.RecommendationsOut:
    """Recommendations for a visitor without an account from the session's items (most
    recent last); no known item: popular items (``fallback: popular``)."""
    session = [SessionEvent(i.item_id, i.event, i.timestamp) for i in body.items]
    answer = partial(
        service.session_recommendations,
        session,
        body.n,
        body.offset,
        Filters(tuple(body.category), tuple(body.exclude)),
        body.model,
        body.reasons,
    )
    rec = await run_fresh(request, answer)
    if rec.fallback:
        request.state.fallback = rec.fallback
    return recommendations_out(rec)
