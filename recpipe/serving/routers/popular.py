"""``/v1/popular``: popular and trending items, overall or per category."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query

from recpipe.serving import schemas
from recpipe.serving.deps import get_service
from recpipe.serving.routers.convert import item_out
from recpipe.serving.schemas import ID_MAX
from recpipe.serving.service import Service
from recpipe.serving.settings import MAX_N

router = APIRouter(prefix="/v1/popular", tags=["popular"])


@router.get("", response_model=schemas.PopularOut)
async def popular(
    n: int = Query(10, ge=1, le=MAX_N),
    category: str | None = Query(
        None, min_length=1, max_length=ID_MAX, description="only this category"
    ),
    window: Literal["all", "trending"] = Query(
        "all", description="all: the whole history; trending: the recent window"
    ),
    service: Service = Depends(get_service),  # noqa: B008
) -> schemas.PopularOut:
    got = service.popular(n, category, window)
    return schemas.PopularOut(
        category=got.category,
        window=got.window,
        items=[item_out(i) for i in got.items],
        bundle_id=got.bundle_id,
    )
