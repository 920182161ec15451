"""``/admin``: operations (reload)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from recpipe.serving import schemas
from recpipe.serving.deps import get_holder, require_api_key
from recpipe.serving.reload import ServiceHolder
from recpipe.serving.service import ServiceError

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_api_key)])


def reload_info(holder: ServiceHolder) -> schemas.ReloadInfo:
    return schemas.ReloadInfo(**holder.status.__dict__)


@router.post("/reload", response_model=schemas.ReloadOut, status_code=202)
def reload_bundle(
    wait: bool = Query(False, description="answer when the reload is done (200 or 503)"),
    holder: ServiceHolder = Depends(get_holder),  # noqa: B008
) -> schemas.ReloadOut:
    """Load and warm the bundle folder again in the background and swap it in; requests in
    flight finish on the old one. A bundle that fails to load leaves the old one serving
    (the error is in /readyz and /v1/version; with ``wait``, a 503)."""
    if wait:
        try:
            holder.load()
        except Exception as exc:
            raise ServiceError(
                503, "reload_failed", f"{type(exc).__name__}: {exc} (the old bundle serves)"
            ) from None
        started = True
    else:
        started = holder.reload_in_background()
    current = holder.current
    return schemas.ReloadOut(
        started=started,
        bundle_id=current.bundle_id if current else None,
        reload=reload_info(holder),
    )
