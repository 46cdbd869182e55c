"""REST routes: parse, call the service, shape the answer. Nothing else lives here."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status

from scheduler_service.api.deps import IfMatch, Operator, ReadService, ServiceDep, WriteService
from scheduler_service.api.schemas import (
    MAX_INT64,
    RUN_NAME_PATTERN,
    AuditOut,
    AuditRowOut,
    ClipProbsIn,
    ErrorOut,
    HealthOut,
    HistoryOut,
    HistoryRowOut,
    IngestOut,
    NextClipsOut,
    OutcomeBatchIn,
    RewardWeightsIn,
    RunCreate,
    RunListOut,
    RunStateOut,
    RunSummaryOut,
    TargetsIn,
)
from scheduler_service.api.transport import OrjsonRoute
from scheduler_service.domain import MAX_NEXT_CLIPS
from scheduler_service.store.tables import SCHEMA_VERSION

router = APIRouter(route_class=OrjsonRoute)

_RUN_NAME = re.compile(RUN_NAME_PATTERN)


def _run_path(run: Annotated[str, Path(description="run name", max_length=200)]) -> str:
    """The run name of the path; one no run can have (control characters, NUL) is a 404
    before any database sees it."""
    if not _RUN_NAME.match(run):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run!r} does not exist")
    return run


RunPath = Annotated[str, Depends(_run_path)]


_ERROR_TEXT: dict[int, str] = {
    401: "no valid bearer token (tokens configured)",
    403: "a read token on a write, or a cross-site write",
    404: "no such run",
    409: "the run exists, or an episode id was posted with another payload",
    412: "If-Match is stale: the answer carries the current state_version",
    413: "request body too large",
    415: "a write body that is not application/json",
    422: "invalid input: detail names every field",
    503: "busy (writer queue full, database locked): retry after Retry-After",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the error answers an operation can give."""
    return {code: {"model": ErrorOut, "description": _ERROR_TEXT[code]} for code in codes}


_READ = (401, 404, 503)
_WRITE = (401, 403, 404, 413, 415, 503)


def _state(state_out: RunStateOut, response: Response) -> RunStateOut:
    response.headers["ETag"] = f'"{state_out.state_version}"'
    return state_out


@router.get("/health", tags=["health"])
async def health(service: ServiceDep) -> HealthOut:
    """Liveness and database reachability."""
    await service.check_database()
    return HealthOut(status="ok", database=service.database_kind, schema_version=SCHEMA_VERSION)


@router.post(
    "/runs",
    status_code=status.HTTP_201_CREATED,
    tags=["runs"],
    responses=_errors(401, 403, 409, 413, 415, 503),
)
async def create_run(
    actor: Operator, body: RunCreate, service: ServiceDep, response: Response
) -> RunStateOut:
    """Create a run with its clips, strategy, targets and aggregation."""
    state = await service.create_run(body.to_spec(), actor=actor)
    return _state(RunStateOut.from_state(state), response)


@router.get("/runs", tags=["runs"], responses=_errors(401, 503))
async def list_runs(service: ReadService) -> RunListOut:
    """List every run with its totals."""
    return RunListOut(runs=[RunSummaryOut.from_summary(s) for s in await service.list_runs()])


@router.get("/runs/{run}", tags=["runs"], responses=_errors(*_READ))
async def get_run(service: ReadService, run: RunPath, response: Response) -> RunStateOut:
    """Read a run's state: usage against target per clip, learners, totals."""
    return _state(RunStateOut.from_state(await service.get_run_state(run)), response)


@router.get(
    "/runs/{run}/next-clips",
    tags=["actors"],
    response_class=Response,
    responses={
        200: {"model": NextClipsOut, "description": "sampled clip ids"},
        **_errors(*_READ),
    },
)
async def next_clips(
    service: ReadService,
    run: RunPath,
    n: Annotated[int, Query(ge=1, le=MAX_NEXT_CLIPS, description="how many clip ids")] = 1,
    learner_id: Annotated[str | None, Query(max_length=200, description="for tracing")] = None,
    known_version: Annotated[
        int | None, Query(description="omit actor_config if this is still current")
    ] = None,
) -> Response:
    """Sample the next clip ids for n environments (the actors' hot path)."""
    body = await service.next_clips(run, n, known_version)
    return Response(content=body, media_type="application/json")


@router.post("/runs/{run}/outcomes", tags=["actors"], responses=_errors(*_WRITE, 409))
async def post_outcomes(service: WriteService, run: RunPath, body: OutcomeBatchIn) -> IngestOut:
    """Report finished episodes; a batch with one bad item is rejected whole."""
    result = await service.ingest_outcomes(
        run, body.learner_id, [o.to_record() for o in body.outcomes]
    )
    return IngestOut.from_result(result)


@router.put("/runs/{run}/targets", tags=["operators"], responses=_errors(*_WRITE, 412))
async def put_targets(
    actor: Operator,
    expected: IfMatch,
    run: RunPath,
    body: TargetsIn,
    service: ServiceDep,
    response: Response,
) -> RunStateOut:
    """Override target usage per clip or per group; answers the normalised targets."""
    state = await service.set_targets(
        run,
        target_usage=body.target_usage,
        target_usage_by_group=body.target_usage_by_group,
        if_match=expected,
        actor=actor,
    )
    return _state(RunStateOut.from_state(state), response)


@router.put("/runs/{run}/clip-probs", tags=["operators"], responses=_errors(*_WRITE, 412))
async def put_clip_probs(
    actor: Operator,
    expected: IfMatch,
    run: RunPath,
    body: ClipProbsIn,
    service: ServiceDep,
    response: Response,
) -> RunStateOut:
    """Set clip probabilities and/or freeze them against the controller."""
    state = await service.set_clip_probs(
        run, body.clip_probs, freeze=body.freeze, if_match=expected, actor=actor
    )
    return _state(RunStateOut.from_state(state), response)


@router.put("/runs/{run}/reward-weights", tags=["operators"], responses=_errors(*_WRITE, 412))
async def put_reward_weights(
    actor: Operator,
    expected: IfMatch,
    run: RunPath,
    body: RewardWeightsIn,
    service: ServiceDep,
    response: Response,
) -> RunStateOut:
    """Set reward weights and/or freeze them against adaptation."""
    state = await service.set_reward_weights(
        run, body.reward_weights, freeze=body.freeze, if_match=expected, actor=actor
    )
    return _state(RunStateOut.from_state(state), response)


@router.post("/runs/{run}/pause", tags=["operators"], responses=_errors(*_WRITE, 412))
async def pause(
    actor: Operator, expected: IfMatch, run: RunPath, service: ServiceDep, response: Response
) -> RunStateOut:
    """Pause adaptation: updates keep measuring usage but change nothing."""
    state = await service.set_paused(run, True, if_match=expected, actor=actor)
    return _state(RunStateOut.from_state(state), response)


@router.post("/runs/{run}/resume", tags=["operators"], responses=_errors(*_WRITE, 412))
async def resume(
    actor: Operator, expected: IfMatch, run: RunPath, service: ServiceDep, response: Response
) -> RunStateOut:
    """Resume adaptation."""
    state = await service.set_paused(run, False, if_match=expected, actor=actor)
    return _state(RunStateOut.from_state(state), response)


@router.get("/runs/{run}/history", tags=["runs"], responses=_errors(*_READ))
async def history(
    service: ReadService,
    run: RunPath,
    since_update: Annotated[
        int, Query(ge=0, le=MAX_INT64, description="only updates after this one")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> HistoryOut:
    """Per-clip p, u, w and success at every controller update (for plots)."""
    rows = await service.history(run, since_update, limit)
    names = (await service.get_config(run)).clip_names
    return HistoryOut(clip_names=list(names), updates=[HistoryRowOut.from_row(r) for r in rows])


@router.get("/runs/{run}/audit", tags=["operators"], responses=_errors(*_READ))
async def audit(
    service: ReadService,
    run: RunPath,
    since_id: Annotated[
        int, Query(ge=0, le=MAX_INT64, description="only entries after this id")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> AuditOut:
    """The run's audit log: every operator action, oldest first."""
    rows = await service.audit(run, since_id, limit)
    return AuditOut(entries=[AuditRowOut.from_row(r) for r in rows])
