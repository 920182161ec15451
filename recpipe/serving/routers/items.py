"""``/v1/items``: similar items."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query

from recpipe.serving import schemas
from recpipe.serving.deps import get_service
from recpipe.serving.routers.convert import item_out
from recpipe.serving.schemas import ID_MAX
from recpipe.serving.service import Service
from recpipe.serving.settings import MAX_N

router = APIRouter(prefix="/v1/items", tags=["items"])


@router.get(
    "/{item_id}/similar",
    response_model=schemas.SimilarOut,
    responses={404: {"model": schemas.ErrorOut, "description": "unknown item"}},
)
async def similar_items(
    item_id: Annotated[str, Path(max_length=ID_MAX)],
    n: int = Query(10, ge=1, le=MAX_N),
    kind: Literal["auto", "cf", "content"] = Query(
        "auto",
        description="cf: collaborative neighbours; content: by text and categories; auto: "
        "content for items with too little interaction data, cf otherwise",
    ),
    service: Service = Depends(get_service),  # noqa: B008
) -> schemas.SimilarOut:
    got = service.similar(item_id, n, kind)
    return schemas.SimilarOut(
        item_id=got.item_id,
        kind=got.kind,
        items=[item_out(i) for i in got.items],
        bundle_id=got.bundle_id,
    )
