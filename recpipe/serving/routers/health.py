"""Health, readiness, version and Prometheus metrics."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from recpipe.serving import schemas
from recpipe.serving.deps import get_holder
from recpipe.serving.reload import ServiceHolder
from recpipe.serving.routers.admin import reload_info

router = APIRouter(tags=["health"])


def _recpipe_version() -> str:
    try:
        return version("recpipe")
    except PackageNotFoundError:
        return "unknown"


@router.get("/healthz", response_model=schemas.HealthOut)
def healthz() -> schemas.HealthOut:
    """The process answers (liveness)."""
    return schemas.HealthOut()


@router.get(
    "/readyz",
    response_model=schemas.ReadyOut,
    responses={503: {"model": schemas.ReadyOut, "description": "no bundle or no store"}},
)
def readyz(request: Request, holder: ServiceHolder = Depends(get_holder)) -> Response:  # noqa: B008
    """Ready when a bundle is loaded and the store answers; a failed reload is reported
    here while the old bundle keeps serving."""
    current = holder.current
    store_ok = request.app.state.store.ping()
    body = schemas.ReadyOut(
        ready=current is not None and store_ok,
        bundle_id=current.bundle_id if current else None,
        store=store_ok,
        reload=reload_info(holder),
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/v1/version", response_model=schemas.VersionOut)
def version_info(holder: ServiceHolder = Depends(get_holder)) -> schemas.VersionOut:  # noqa: B008
    """The code and the bundle serving: its id, git revision, params digest, counts and the
    metrics of the run that built it."""
    current = holder.current
    described = current.describe() if current else {}
    return schemas.VersionOut(
        recpipe=_recpipe_version(),
        bundle_id=described.get("bundle_id"),
        bundle_path=str(holder.path),
        models=described.get("models", []),
        git_revision=described.get("git_revision"),
        params_digest=described.get("params_digest"),
        counts=described.get("counts", {}),
        metrics=described.get("metrics", {}),
        reload=reload_info(holder),
    )


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus exposition: requests and latency per endpoint, fallbacks, bundle id."""
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
