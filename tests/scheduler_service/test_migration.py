"""Schema v1 -> v2: a v1 database with data opens under the new code with every number kept.

The v1 database is built from the v1 DDL (today's tables with v1's ``runs``, plus the
per-clip tables v2 replaced, kept in ``store.migrations``), filled with counters,
moving averages, pseudo-counts, reward-term moments, learners and outcomes, and then
served by the current scheduler, which migrates it at start.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    select,
    text,
)
from sqlalchemy import inspect as sa_inspect

from scheduler_service.domain import AggregationParams, StrategyParams
from scheduler_service.store import tables
from scheduler_service.store.engine import WRITE_OPTIONS, create_store_engine
from scheduler_service.store.migrations import V1_TABLES
from scheduler_service.store.repository import RunPolicy, _policy_values, config_json
from tests.scheduler_service.helpers import outcome, post_outcomes, running_app

pytestmark = pytest.mark.anyio

CLIPS = ("walk", "run", "jump", "idle", "back")
TERMS = ("pose", "root")
LEARNERS = ("alpha", "beta")


def v1_metadata() -> MetaData:
    """The complete v1 schema."""
    meta = MetaData()
    Table(
        "runs",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(200), nullable=False, unique=True),
        Column("config", tables.Text, nullable=False),
        Column("created_at", Double, nullable=False),
        Column("state_version", BigInteger, nullable=False),
        Column("paused", Boolean, nullable=False),
        Column("clip_probs_frozen", Boolean, nullable=False),
        Column("reward_weights_frozen", Boolean, nullable=False),
        Column("total_episodes", BigInteger, nullable=False),
        Column("total_steps", BigInteger, nullable=False),
        Column("interval_index", BigInteger, nullable=False),
        Column("updates", BigInteger, nullable=False),
    )
    for name in ("schema_meta", "clips", "policies", "learners", "outcomes", "history", "audit"):
        tables.metadata.tables[name].to_metadata(meta)
    for table in V1_TABLES:
        table.to_metadata(meta)
    return meta


def v1_data(rng: np.random.Generator) -> dict[str, Any]:
    """Per-clip v1 rows: clip 3 never had an outcome; moments only for some (clip, term)."""
    k = len(CLIPS)
    episodes = rng.integers(1, 50, k)
    episodes[3] = 0
    stats = {
        "episodes": episodes,
        "steps": episodes * rng.integers(10, 100, k),
        "return_sum": np.where(episodes > 0, rng.normal(100, 30, k), 0.0),
        "success_sum": np.where(episodes > 0, rng.uniform(0, 1, k) * episodes, 0.0),
        "ema_success": np.where(episodes > 0, rng.uniform(0, 1, k), 0.0),
        "ema_return": np.where(episodes > 0, rng.normal(3, 1, k), 0.0),
        "ts_successes": np.where(episodes > 0, rng.uniform(0, 9, k), 0.0),
        "ts_failures": np.where(episodes > 0, rng.uniform(0, 9, k), 0.0),
    }
    moments = {
        (clip, term): (float(rng.integers(5, 500)), float(rng.normal()), float(rng.uniform(1, 9)))
        for clip in (0, 1, 2, 4)
        for term in TERMS
        if not (clip == 2 and term == "root")
    }
    learner_clips = {
        (learner, clip): (int(episodes[clip]) // 2 + j, int(stats["steps"][clip]) // 2 + j)
        for j, learner in enumerate(LEARNERS)
        for clip in range(k)
        if episodes[clip] > 0
    }
    return {"stats": stats, "moments": moments, "learner_clips": learner_clips}


def write_v1_database(url: str, data: dict[str, Any]) -> None:
    meta = v1_metadata()
    engine = create_store_engine(url)
    try:
        with engine.connect().execution_options(**WRITE_OPTIONS) as conn, conn.begin():
            meta.create_all(conn)
            t = meta.tables
            conn.execute(t["schema_meta"].insert().values(key="schema_version", value="1"))
            stats = data["stats"]
            run_id = conn.execute(
                t["runs"]
                .insert()
                .values(
                    name="old",
                    config=config_json(
                        StrategyParams(kind="controller", update_every_steps=10**9),
                        AggregationParams(),
                        None,
                    ),
                    created_at=1.0,
                    state_version=3,
                    paused=False,
                    clip_probs_frozen=False,
                    reward_weights_frozen=False,
                    total_episodes=int(stats["episodes"].sum()),
                    total_steps=int(stats["steps"].sum()),
                    interval_index=0,
                    updates=0,
                )
                .returning(t["runs"].c.id)
            ).scalar_one()
            k = len(CLIPS)
            conn.execute(
                t["clips"].insert(),
                [
                    {
                        "run_id": run_id,
                        "clip_id": i,
                        "name": n,
                        "group_name": None,
                        "metadata": "{}",
                    }
                    for i, n in enumerate(CLIPS)
                ],
            )
            uniform = np.full(k, 1.0 / k)
            conn.execute(
                t["policies"]
                .insert()
                .values(
                    run_id=run_id,
                    **_policy_values(RunPolicy.initial(uniform, uniform, uniform, uniform)),
                )
            )
            conn.execute(
                t["clip_stats"].insert(),
                [
                    {
                        "run_id": run_id,
                        "clip_id": i,
                        **{name: values[i].item() for name, values in stats.items()},
                    }
                    for i in range(k)
                ],
            )
            conn.execute(
                t["clip_term_moments"].insert(),
                [
                    {"run_id": run_id, "clip_id": c, "term": term, "count": n, "mean": m, "m2": m2}
                    for (c, term), (n, m, m2) in data["moments"].items()
                ],
            )
            for learner in LEARNERS:
                rows = {c: v for (lid, c), v in data["learner_clips"].items() if lid == learner}
                conn.execute(
                    t["learners"]
                    .insert()
                    .values(
                        run_id=run_id,
                        learner_id=learner,
                        episodes=sum(e for e, _ in rows.values()),
                        steps=sum(s for _, s in rows.values()),
                        first_seen=1.0,
                        last_seen=2.0,
                    )
                )
                conn.execute(
                    t["learner_clips"].insert(),
                    [
                        {
                            "run_id": run_id,
                            "learner_id": learner,
                            "clip_id": c,
                            "episodes": e,
                            "steps": s,
                        }
                        for c, (e, s) in rows.items()
                    ],
                )
            conn.execute(
                t["outcomes"]
                .insert()
                .values(
                    run_id=run_id,
                    episode_id="old-episode",
                    clip_id=0,
                    learner_id="alpha",
                    steps=10,
                    episode_return=1.0,
                    success=1.0,
                    payload_hash="0" * 32,
                    received_at=1.0,
                )
            )
    finally:
        engine.dispose()


async def test_a_v1_database_is_migrated_with_every_number_kept(database_url: str) -> None:
    data = v1_data(np.random.default_rng(11))
    write_v1_database(database_url, data)
    stats = data["stats"]
    async with running_app(database_url) as client:
        state = (await client.get("/runs/old")).json()
        assert state["totals"]["episodes"] == int(stats["episodes"].sum())
        for clip in state["clips"]:
            i = clip["id"]
            n = int(stats["episodes"][i])
            assert (clip["episodes"], clip["steps"]) == (n, int(stats["steps"][i]))
            bandit = clip["bandit"]
            assert bandit["thompson_successes"] == stats["ts_successes"][i]
            assert bandit["thompson_failures"] == stats["ts_failures"][i]
            if n:
                assert clip["return_mean"] == stats["return_sum"][i] / n
                assert clip["success_mean"] == stats["success_sum"][i] / n
                assert clip["success"] == bandit["ema_success"] == stats["ema_success"][i]
                assert bandit["ema_return"] == stats["ema_return"][i]
            else:
                assert clip["success"] is None and clip["return_mean"] is None
            expected = {
                term: {"count": c, "mean": m, "std": math.sqrt(m2 / c)}
                for (ci, term), (c, m, m2) in data["moments"].items()
                if ci == i
            }
            assert clip["normalizers"] == expected
        learners = {learner["learner_id"]: learner for learner in state["learners"]}
        for learner in LEARNERS:
            counts = np.zeros(len(CLIPS))
            for (lid, c), (e, _) in data["learner_clips"].items():
                if lid == learner:
                    counts[c] = e
            assert learners[learner]["usage"] == pytest.approx((counts / counts.sum()).tolist())

        # the migrated run keeps counting: a stored id is a duplicate (its hash is the
        # v1 one, so another payload is a 409), a new outcome adds to the migrated numbers
        clash = await client.post(
            "/runs/old/outcomes",
            json={"learner_id": "alpha", "outcomes": [outcome(0, episode_id="old-episode")]},
        )
        assert clash.status_code == 409
        answer = await post_outcomes(
            client, "old", [outcome(3, steps=7, success=1.0, episode_return=4.0)], "beta"
        )
        assert answer["accepted"] == 1
        clip3 = (await client.get("/runs/old")).json()["clips"][3]
        assert (clip3["episodes"], clip3["steps"], clip3["success"]) == (1, 7, 1.0)
        assert clip3["bandit"]["ema_return"] == 4.0  # first observation ever sets J

    engine = create_store_engine(database_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(
                select(tables.schema_meta.c.value).where(
                    tables.schema_meta.c.key == "schema_version"
                )
            ).scalar_one()
            names = set(sa_inspect(conn).get_table_names())
            # the one batch posted after the migration is one pending delta row of the run
            pending = conn.execute(text("SELECT pending_deltas FROM runs")).scalar_one()
            rows = conn.execute(text("SELECT COUNT(*) FROM clip_deltas")).scalar_one()
            assert pending == rows == 1
        assert int(version) == tables.SCHEMA_VERSION == 3
        assert not names & {"clip_stats", "clip_term_moments", "learner_clips"}
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_a_v2_database_gets_a_64_bit_audit_cursor(database_url: str) -> None:
    from tests.scheduler_service.helpers import create_run

    async with running_app(database_url) as client:
        await create_run(client, "r")
    engine = create_store_engine(database_url)
    try:  # make it a v2 database: a 32-bit audit id on PostgreSQL, version 2
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("ALTER TABLE audit ALTER COLUMN id TYPE INTEGER"))
            conn.execute(
                tables.schema_meta.update()
                .where(tables.schema_meta.c.key == "schema_version")
                .values(value="2")
            )
    finally:
        engine.dispose()
    async with running_app(database_url) as client:
        for cursor in (2**31, 2**40, 2**63 - 1):
            answer = await client.get("/runs/r/audit", params={"since_id": cursor})
            assert answer.status_code == 200, answer.text
            assert answer.json()["entries"] == []
        entries = (await client.get("/runs/r/audit", params={"since_id": 0})).json()["entries"]
        assert [e["action"] for e in entries] == ["create_run"]
    engine = create_store_engine(database_url)
    try:
        with engine.connect() as conn:
            version = conn.execute(
                select(tables.schema_meta.c.value).where(
                    tables.schema_meta.c.key == "schema_version"
                )
            ).scalar_one()
            assert int(version) == 3
            if conn.dialect.name == "postgresql":
                kind = conn.execute(
                    text(
                        "SELECT data_type FROM information_schema.columns "
                        "WHERE table_name = 'audit' AND column_name = 'id' "
                        "AND table_schema = current_schema()"
                    )
                ).scalar_one()
                assert kind == "bigint"
    finally:
        engine.dispose()
