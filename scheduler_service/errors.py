"""Errors the service raises; the API maps each to one HTTP status (see ``api/app.py``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One rejected field: where (pydantic-style ``loc``), why, and an error type."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"


class ServiceError(Exception):
    """Base of every error the service reports to a caller."""


class NotFound(ServiceError):
    """The run (or another named thing) does not exist."""


class Conflict(ServiceError):
    """The request contradicts stored state (run name taken, episode id reused)."""


class InvalidInput(ServiceError):
    """The request is well-formed JSON but its values are wrong; nothing was changed."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in errors))

    @classmethod
    def one(cls, loc: tuple[str | int, ...], msg: str) -> InvalidInput:
        """An error about a single field."""
        return cls([FieldError(loc, msg)])


class PayloadTooLarge(ServiceError):
    """The batch holds more items than allowed."""


class PreconditionFailed(ServiceError):
    """``If-Match`` named a state version that is no longer current."""

    def __init__(self, current_version: int) -> None:
        self.current_version = current_version
        super().__init__(f"state_version is {current_version}")


class Unavailable(ServiceError):
    """The database stayed busy past the retry budget; the caller should retry later."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class ServiceOverloaded(Unavailable):
    """The writer's queue is full: the request is shed (503 with Retry-After) before it runs."""


class SchemaVersionError(RuntimeError):
    """The database was written by a newer scheduler (or an unknown schema)."""
