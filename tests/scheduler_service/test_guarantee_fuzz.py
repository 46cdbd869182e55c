"""Guarantee 6 (generated input): schemathesis finds no 5xx and no off-schema answer.

Schemathesis generates requests for every operation of the OpenAPI document and sends
them to the real ASGI app (lifespan and all) on a temporary SQLite file holding one run
(``r``). Two checks: no answer is a 5xx, and every documented answer conforms to its
response schema. ``FUZZ_EXAMPLES`` (200) examples per operation in CI, 1000 with ``--slow``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from scheduler_service.api.app import create_app
from scheduler_service.config import Settings
from tests.guarantee_support import record_guarantee
from tests.scheduler_service.helpers import create_run, running_app

FUZZ_EXAMPLES = 200
"""Examples per operation in the fast run."""
SLOW_EXAMPLES = 1000
"""Examples per operation under ``--slow``."""
CHECKS = [not_a_server_error, response_schema_conformance]


def generated_requests(
    operation: Any, examples: int, counts: dict[str, int], label: str, statuses: dict[str, int]
) -> Callable[[], None]:
    """A Hypothesis test sending ``examples`` generated requests to ``operation``; each
    answer's status class is counted in ``statuses`` before the checks run on it."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        counts[label] += 1
        response = case.call()
        status_class = f"{response.status_code // 100}xx"
        statuses[status_class] = statuses.get(status_class, 0) + 1
        case.validate_response(response, checks=CHECKS)

    return check  # type: ignore[no-any-return]


def fuzz(url: str, examples: int) -> dict[str, Any]:
    """Run ``examples`` generated requests per operation; the figures per operation."""

    async def seed() -> None:
        async with running_app(url) as client:
            await create_run(client, "r")

    asyncio.run(seed())
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(Settings(database_url=url)))
    counts: dict[str, int] = {}
    statuses: dict[str, int] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        counts[label] = 0

        generated_requests(operation, examples, counts, label, statuses)()
    return {
        "examples_per_operation": examples,
        "operations": len(counts),
        "requests": sum(counts.values()),
        "min_examples_run": min(counts.values()),
        "seconds": round(time.monotonic() - started, 1),
        "database": url.split(":", 1)[0],
        "answers_by_status": dict(sorted(statuses.items())),
        "server_errors": statuses.get("5xx", 0),
    }


def report(figures: dict[str, Any]) -> None:
    """Report the fuzz figures (any failure raised before this line)."""
    record_guarantee(
        6,
        f"schemathesis on {figures['database']}: {figures['requests']} generated requests over "
        f"{figures['operations']} operations ({figures['examples_per_operation']} max per "
        f"operation) in {figures['seconds']} s: answers {figures['answers_by_status']}, "
        f"5xx={figures['server_errors']}, response-schema violations=0 (a violation fails "
        "the test before this line)",
        **figures,
    )


def test_generated_requests_get_no_5xx_and_conform_to_the_schema(database_url: str) -> None:
    report(fuzz(database_url, FUZZ_EXAMPLES))


@pytest.mark.slow
def test_many_generated_requests_get_no_5xx_and_conform_to_the_schema(database_url: str) -> None:
    report(fuzz(database_url, SLOW_EXAMPLES))
