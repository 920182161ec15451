"""``/v1/events``: events posted by the shop, durable and applied at once."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from recpipe.serving import schemas
from recpipe.serving.deps import get_service, require_api_key
from recpipe.serving.service import Service

router = APIRouter(prefix="/v1/events", tags=["events"], dependencies=[Depends(require_api_key)])


@router.post(
    "",
    status_code=202,
    response_model=schemas.EventOut,
    responses={409: {"model": schemas.ErrorOut, "description": "the user was erased"}},
)
def post_event(body: schemas.EventIn, service: Service = Depends(get_service)) -> schemas.EventOut:  # noqa: B008
    """Appended (fsync'd) to the landing folder that the next ``data=files`` ingest reads,
    and applied to the user's recent events: the next request excludes the item and fresh
    ranking sees it."""
    got = service.record_event(body.user_id, body.item_id, body.event, body.timestamp, body.rating)
    return schemas.EventOut(**got.__dict__)
