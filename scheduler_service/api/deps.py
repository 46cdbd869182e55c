"""Dependencies of the routes, as ``Annotated`` aliases: the service, access, the operator.

``ReadService`` / ``WriteService`` are the service for a caller allowed to read / write
(one dependency on the hot paths, where each costs tens of microseconds); ``Operator``
checks for a write token and names the caller for the audit log.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in its thread
pool, a thread hop per call on the hot path.

Bearer tokens are optional. When any is configured every route but ``/health`` needs
one: a read token (or any write token) for reads, a write token for writes. They are
checked twice: first by ``require_any_token``, which the route class (``OrjsonRoute``,
``api/transport.py``) calls before FastAPI reads or decodes the body, so an
unauthenticated request gets 401 and never a 422 (not even for malformed JSON); then
here, in dependencies, which also tell reads from writes (403) and name the operator.
Tokens are compared in constant time (``hmac.compare_digest``) and never logged.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Header, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler_service.config import Settings
from scheduler_service.errors import FieldError, InvalidInput
from scheduler_service.service import SchedulerService

_bearer = HTTPBearer(auto_error=False, description="write or read token, when configured")


@dataclass(frozen=True)
class Principal:
    """Who is calling: their access level and, for named operator tokens, their name."""

    access: Literal["read", "write"]
    name: str | None = None


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_service(request: Request) -> SchedulerService:
    """The app's service (built in the lifespan)."""
    service: SchedulerService = request.app.state.service
    return service


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _authenticate(
    settings: Settings, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if not settings.auth_enabled:
        return Principal("write")
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = credentials.credentials
    matched: Principal | None = None
    # compare against every token (no early exit), so timing says nothing about which
    for name, secret in settings.operator_tokens.items():
        if _same(token, secret.get_secret_value()):
            matched = Principal("write", name)
    if settings.write_token is not None and _same(token, settings.write_token.get_secret_value()):
        matched = matched or Principal("write")
    if settings.read_token is not None and _same(token, settings.read_token.get_secret_value()):
        matched = matched or Principal("read")
    if matched is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return matched


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
"""Every route with one of these methods changes state and needs the write token."""


def require_any_token(request: Request) -> None:
    """Raise 401 unless auth is off or the ``Authorization`` header holds a valid token,
    and 403 when a read token calls a write route.

    Runs before the body is read (see ``OrjsonRoute``), so neither a missing token nor a
    read token on a write ever learns how its body would have been judged; the route's
    dependency checks access again and names the operator.
    """
    settings = _settings(request)
    if not settings.auth_enabled:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    credentials = (
        HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
        if scheme.lower() == "bearer" and token.strip()
        else None
    )
    principal = _authenticate(settings, credentials)
    if request.method in WRITE_METHODS and principal.access != "write":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this call needs the write token")


BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]


async def service_for_reads(request: Request, credentials: BearerCredentials) -> SchedulerService:
    """The service, for a caller holding any valid token (when tokens are configured)."""
    _authenticate(_settings(request), credentials)
    return await get_service(request)


def _writer(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    principal = _authenticate(_settings(request), credentials)
    if principal.access != "write":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this call needs the write token")
    return principal


async def service_for_writes(request: Request, credentials: BearerCredentials) -> SchedulerService:
    """The service, for a caller holding a write token (when tokens are configured)."""
    _writer(request, credentials)
    return await get_service(request)


async def operator(
    request: Request,
    credentials: BearerCredentials,
    x_operator: Annotated[
        str | None, Header(max_length=200, description="who is acting (for the audit log)")
    ] = None,
) -> str:
    """A write token's holder, as the audit log names them: the token's name, else
    ``X-Operator``, else ``anonymous``."""
    return _writer(request, credentials).name or x_operator or "anonymous"


async def if_match(
    value: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description="the state_version the change is based on; 412 if it is stale",
        ),
    ] = None,
) -> int | None:
    """The ``If-Match`` state version (``17``, ``"17"`` or ``W/"17"``; ``*`` = any)."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise InvalidInput([FieldError(("header", "If-Match"), "must be a state_version")])
    return int(text)


ServiceDep = Annotated[SchedulerService, Depends(get_service)]
ReadService = Annotated[SchedulerService, Depends(service_for_reads)]
WriteService = Annotated[SchedulerService, Depends(service_for_writes)]
Operator = Annotated[str, Depends(operator)]
IfMatch = Annotated[int | None, Depends(if_match)]
