"""What the endpoints receive through FastAPI's dependencies: the service that answers
(from the holder the lifespan put on ``app.state``), the settings, and the API key check."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from recpipe.serving.reload import ServiceHolder
from recpipe.serving.service import Service, ServiceError
from recpipe.serving.settings import Settings

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="needed by events, user deletion and admin endpoints when the service has "
    "RECPIPE_API_KEY set",
)


# The dependencies and the quick endpoints are coroutines: FastAPI runs a plain function in
# its thread pool, and the hop there and back cost more than a cached answer itself. Work
# that blocks for long (fresh ranking, fsync'd event writes, reloads) stays in plain functions.


T = TypeVar("T")


async def run_fresh(request: Request, work: Callable[[], T]) -> T:
    """``work`` (an answer that ranks fresh: tens of milliseconds of Python) in a worker
    thread, at most ``settings.fresh_concurrency`` at a time in this process; the others
    wait on the event loop, holding no thread. Rankings side by side contend for the
    interpreter lock: eight at once in one process finished about half as many per second
    as one at a time (bench/README.md), so more cores want more worker processes, not
    threads."""
    return await anyio.to_thread.run_sync(work, limiter=request.app.state.fresh_limiter)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_holder(request: Request) -> ServiceHolder:
    return request.app.state.holder


async def get_service(holder: ServiceHolder = Depends(get_holder)) -> Service:  # noqa: B008
    """The service of the bundle serving now; the request keeps it to the end even if a
    reload swaps in another meanwhile."""
    service = holder.current
    if service is None:
        raise ServiceError(503, "not_ready", "no bundle is loaded")
    return service


async def require_api_key(
    request: Request,
    key: str | None = Security(api_key_header),  # noqa: B008
) -> None:
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise ServiceError(401, "unauthorized", "missing or wrong X-API-Key header", "X-API-Key")
