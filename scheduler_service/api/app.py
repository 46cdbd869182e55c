"""The FastAPI application: ``create_app(settings)`` builds it; the lifespan builds the rest.

The engine and the service are created when the app starts (never at import time) and
kept on ``app.state``. Service errors map to HTTP statuses here, in one table, and every
422 has pydantic's ``{"detail": [{"loc", "msg", "type"}]}`` shape without echoing the
rejected input (which may hold values JSON cannot carry).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from scheduler_service.api.routes import router
from scheduler_service.api.schemas import error_detail
from scheduler_service.api.transport import BodySizeLimit, KeepConnectionOnError
from scheduler_service.config import Settings
from scheduler_service.dashboard import mount_dashboard
from scheduler_service.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServiceError,
    Unavailable,
)
from scheduler_service.metrics import install_metrics, new_metrics
from scheduler_service.service import SchedulerService, ServiceOptions
from scheduler_service.store.engine import create_store_engine
from scheduler_service.writer import is_transient

logger = logging.getLogger(__name__)

_LOCATIONS = frozenset({"body", "query", "path", "header"})

_STATUS: Mapping[type[ServiceError], int] = {
    NotFound: status.HTTP_404_NOT_FOUND,
    Conflict: status.HTTP_409_CONFLICT,
    PayloadTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
}
"""Service errors answered as ``{"detail": message}``."""


def _json_safe(value: Any) -> Any:
    """A ctx value of a validation error as something JSON can carry."""
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return str(value)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = []
    for error in exc.errors():
        entry = error_detail(tuple(error.get("loc", ())), str(error.get("msg")), error["type"])
        ctx = error.get("ctx")
        if ctx:
            entry["ctx"] = {k: _json_safe(v) for k, v in ctx.items()}
        detail.append(entry)
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    detail = [
        error_detail(e.loc if e.loc and e.loc[0] in _LOCATIONS else ("body", *e.loc), e.msg, e.type)
        for e in exc.errors
    ]
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _precondition_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PreconditionFailed)
    return JSONResponse(
        {
            "detail": f"If-Match is stale: the run is at state_version {exc.current_version}",
            "state_version": exc.current_version,
        },
        status_code=status.HTTP_412_PRECONDITION_FAILED,
        headers={"ETag": f'"{exc.current_version}"'},
    )


def _unavailable_response(message: str, retry_after: float) -> JSONResponse:
    return JSONResponse(
        {"detail": message},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(max(1, round(retry_after)))},
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Unavailable)
    return _unavailable_response(str(exc), exc.retry_after)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if not is_transient(exc):
        raise exc
    logger.warning("database busy on %s %s: %s", request.method, request.url.path, exc.orig)
    return _unavailable_response("the database is busy; retry shortly", 1.0)


def _service_error(code: int) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handler


def create_app(settings: Settings | None = None) -> FastAPI:
    """The scheduler's ASGI app; the database is opened when the app starts."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_store_engine(settings.database_url)
        service = SchedulerService(
            engine,
            ServiceOptions(
                max_outcomes_per_batch=settings.max_outcomes_per_batch,
                learner_stale_seconds=settings.learner_stale_seconds,
                alarm_thresholds=settings.alarms,
            ),
        )
        await asyncio.to_thread(service.start)
        app.state.service = service
        logger.info("scheduler ready on %s", engine.url.render_as_string(hide_password=True))
        try:
            yield
        finally:
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="clip-scheduler",
        summary="Clip sampling probabilities, reward weights and usage for multi-clip "
        "motion imitation.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(KeepConnectionOnError)  # outermost of ours: sees what the rest raise
    app.include_router(router)
    install_metrics(app, new_metrics(max_clips=settings.metrics_max_clips))
    mount_dashboard(app)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(PreconditionFailed, _precondition_failed)
    app.add_exception_handler(Unavailable, _unavailable)
    app.add_exception_handler(DBAPIError, _database_error)
    for error, code in _STATUS.items():
        app.add_exception_handler(error, _service_error(code))
    if not settings.auth_enabled:
        app.openapi = _without_security(app.openapi)  # type: ignore[method-assign]
    return app


def _without_security(openapi: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document of a server without tokens: no security scheme, no 401."""

    def document() -> dict[str, Any]:
        schema = openapi()
        schema.get("components", {}).pop("securitySchemes", None)
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
        return schema

    return document
