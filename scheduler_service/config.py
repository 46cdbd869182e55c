"""Service settings: one typed object, read from ``CLIPSCHED_*`` environment variables.

Nothing here runs at import time; build a ``Settings`` in a factory (``create_app``,
``serve``, the CLI) and pass it down.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scheduler_service.algorithms.alarms import AlarmThresholds

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    """Everything the scheduler service can be configured with (env prefix ``CLIPSCHED_``)."""

    model_config = SettingsConfigDict(env_prefix="CLIPSCHED_", extra="forbid", frozen=True)

    database_url: str = Field(
        default="sqlite:///clipsched.db",
        description="SQLAlchemy URL or a plain SQLite file path; PostgreSQL via "
        "postgresql+psycopg://user@host/db",
    )
    host: str = Field(default="127.0.0.1", description="bind address")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port")
    write_token: SecretStr | None = Field(
        default=None, description="bearer token for mutating calls (also allows reads)"
    )
    read_token: SecretStr | None = Field(default=None, description="bearer token for reads")
    operator_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="named write tokens, name -> token; the name is recorded in the audit log",
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="request cap")
    max_outcomes_per_batch: int = Field(default=1024, ge=1, description="outcomes per POST")
    learner_stale_seconds: float = Field(
        default=60.0, gt=0, description="a learner silent this long is shown as stale"
    )
    log_level: LogLevel = Field(default="INFO", description="logging level of the service")
    alarms: AlarmThresholds = Field(
        default_factory=AlarmThresholds,
        description="collapse alarm thresholds, as JSON in CLIPSCHED_ALARMS, e.g. "
        '{"max_top1_share": 0.6}',
    )
    metrics_max_clips: int = Field(
        default=100,
        ge=0,
        description="runs with more clips than this get no per-clip series on /metrics",
    )

    @field_validator("write_token", "read_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        """An empty token (``CLIPSCHED_WRITE_TOKEN=`` from compose's ``${VAR:-}``) is no token."""
        return None if value == "" else value

    @property
    def auth_enabled(self) -> bool:
        """Whether any bearer token is configured (then every call needs one)."""
        return bool(self.write_token or self.read_token or self.operator_tokens)
