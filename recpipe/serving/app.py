"""The FastAPI app of ``recpipe serve``, built by :func:`create_app` (tests build their own).

The bundle is loaded in the ``lifespan`` (never at import time) into a
:class:`~recpipe.serving.reload.ServiceHolder` on ``app.state``, and endpoints receive the
service through a dependency (:mod:`recpipe.serving.deps`). One router per resource lives
in :mod:`recpipe.serving.routers`; the logic they call is :mod:`recpipe.serving.service`.
Every error has one JSON shape (:class:`~recpipe.serving.schemas.ErrorOut`): 4xx naming the
field for bad input (a body that cannot be read as JSON is a 422 naming ``body``, one over
``max_body_bytes`` a 413), 503 when the store does not answer, and for an unexpected
failure a logged 500 in the same shape (never the server's plain text).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from recpipe.log import get_logger
from recpipe.serving import schemas
from recpipe.serving.events import DeletionList, EventLog
from recpipe.serving.metrics import Metrics, MetricsMiddleware
from recpipe.serving.reload import ServiceHolder
from recpipe.serving.routers import admin, events, health, items, popular, recommendations, users
from recpipe.serving.service import Service, ServiceError
from recpipe.serving.settings import Settings
from recpipe.serving.store import MemoryStore, RedisStore, Store

log = get_logger("serve")


def make_store(settings: Settings) -> Store:
    if settings.store == "redis":
        return RedisStore(
            settings.redis_url, settings.redis_prefix, settings.recent_max, settings.recent_ttl
        )
    return MemoryStore(settings.recent_max, settings.recent_ttl)


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    details: list[dict] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = schemas.ErrorOut(
        error=schemas.ErrorBody(
            status=status, code=code, message=message, field=field, details=details
        )
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    """``("query", "n")`` -> ``n``; ``("body", "items", 0, "item_id")`` ->
    ``body.items.0.item_id``; a body that is not JSON -> ``body``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        field, message = "body", f"malformed JSON: {first.get('ctx', {}).get('error', '')}"
    else:
        field = _field(loc)
        message = f"{field}: {first.get('msg', 'invalid value')}"
    details = [
        {
            "field": _field(tuple(e.get("loc", ()))),
            "message": str(e.get("msg")),
            "type": e.get("type"),
        }
        for e in errors
    ]
    return error_response(422, "invalid_request", message.strip(), field, details)


def _unreadable_body(cause: BaseException | None) -> str | None:
    """Why FastAPI could not parse a body as JSON, when its 400 hides a bad request: bytes
    that are not UTF-8, or JSON nested deeper than the parser goes."""
    if isinstance(cause, UnicodeDecodeError):
        return f"body is not valid UTF-8 JSON ({cause.reason} at byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "body is JSON nested too deeply to read"
    return None


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and (message := _unreadable_body(exc.__cause__)):
        return error_response(422, "invalid_request", message, "body")
    codes = {
        404: "not_found",
        405: "method_not_allowed",
        401: "unauthorized",
        413: "payload_too_large",
    }
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        str(exc.detail),
        "body" if exc.status_code == 413 else None,
        headers=getattr(exc, "headers", None),
    )


def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    headers = {"WWW-Authenticate": "APIKey"} if exc.status == 401 else None
    return error_response(exc.status, exc.code, exc.message, exc.field, headers=headers)


def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # a bug, not a bad request: the traceback goes to the log, the client gets the shape
    log.error(
        "%s %s failed: %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    return error_response(500, "internal_error", "internal error (logged by the service)")


class BodyLimitMiddleware:
    """Pure ASGI middleware: a request body over ``max_bytes`` gets a 413 in the error shape
    before the app reads it. A declared ``Content-Length`` is judged at once; a chunked body
    is read here up to the limit and handed on. (FastAPI's own ``max_body_size`` answers a
    too long ``Content-Length`` in plain text, whatever the app's handlers say.)"""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server holds the body to its length
            return
        if b"transfer-encoding" not in headers:  # no body
            await self.app(scope, receive, send)
            return
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send) -> None:
        message = f"request body larger than {self.max_bytes} bytes"
        response = error_response(413, "payload_too_large", message, "body")
        await response(scope, receive, send)


_strings_lock = threading.Lock()
_strings_users = 0
_strings_before: str | None = None


@contextmanager
def python_strings() -> Iterator[None]:
    """pandas' text as Python strings, not its default Arrow-backed ones, while any app in
    this process serves: a fresh ranking builds a few dozen small frames, and making and
    looking up their Arrow-backed column labels took a fifth of it (the same values
    either way; the served lists are checked against the pipeline's). The option is the
    process's: the first app to start sets it, the last to stop restores it."""
    import pandas as pd

    global _strings_users, _strings_before
    with _strings_lock:
        if _strings_users == 0:
            _strings_before = pd.get_option("mode.string_storage")
            pd.set_option("mode.string_storage", "python")
        _strings_users += 1
    try:
        yield
    finally:
        with _strings_lock:
            _strings_users -= 1
            if _strings_users == 0:
                pd.set_option("mode.string_storage", _strings_before)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app over ``settings.bundle`` (settings from the environment when not given)."""
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with python_strings():
            async with serving(app):
                yield

    @asynccontextmanager
    async def serving(app: FastAPI) -> AsyncIterator[None]:
        from recpipe.serving.bundle import Bundle  # the heavy imports, at start only

        store = make_store(settings)
        event_log = EventLog(
            settings.landing, settings.rotate_bytes, settings.rotate_seconds, settings.fsync
        )
        deletions = DeletionList(settings.deletions, settings.fsync)
        # the deletion list is the durable record: a restarted service forgets the same
        store.mark_erased(deletions.read())

        def build(bundle: Bundle) -> Service:
            service = Service(bundle, store, event_log, deletions, settings)
            metrics.set_bundle(bundle.id)
            return service

        def load(path: Path) -> Bundle:
            return Bundle.load(path, settings.similarity_tables_bytes)

        holder = ServiceHolder(
            settings.bundle,
            load,
            build,
            settings.warm,
            on_load=lambda ok: metrics.reloads.labels("ok" if ok else "error").inc(),
        )
        holder.load()  # a bundle that does not load stops the start, with its message
        holder.start_polling(settings.reload_interval)
        app.state.settings = settings
        app.state.store = store
        app.state.holder = holder
        app.state.metrics = metrics
        # made here, on the event loop it belongs to (see deps.run_fresh)
        app.state.fresh_limiter = anyio.CapacityLimiter(settings.fresh_concurrency)
        try:
            yield
        finally:
            holder.stop()
            event_log.close()
            store.close()

    app = FastAPI(
        title="recpipe",
        summary="Recommendations from the bundle a recpipe run produced",
        version="1",
        lifespan=lifespan,
        responses={422: {"model": schemas.ErrorOut, "description": "bad request field"}},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    for module in (users, recommendations, items, popular, events, admin, health):
        app.include_router(module.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # the outer one: counts the 413s
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (``recpipe serve --workers N``): settings from the
    environment, which ``recpipe serve`` sets."""
    return create_app(Settings())
