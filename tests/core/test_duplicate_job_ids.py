"""A reused job id (issue 12, item 12). The hostile coordinator is the sandbox coordinator
driven by hand: it sends a second `job` frame with the id of a job still streaming, then reuses
the id once that job ended. Real agent, real WebSocket, fake vLLM on 127.0.0.1, real ledger.

Before: the duplicate got no answer at all (the coordinator waited for its own timeout) and
the reused id's second run was silently dropped by the ledger's UNIQUE(job_id)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from tests.core.test_ledger import outcome
from usepod_desktop.core import ledger as ledger_mod
from usepod_desktop.core import protocol
from usepod_desktop.core.agent import Agent
from usepod_desktop.core.config import BackendConfig, Config, CoordinatorConfig, PricingConfig
from usepod_desktop.core.events import JobFinished
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.ledger import JobRow, Ledger, job_recorder
from usepod_desktop.core.protocol import ErrorCode, JobChunk, JobDone, JobError
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

CHAT = {"messages": [{"role": "user", "content": "count slowly"}], "max_tokens": 30}
T = 15.0


async def test_duplicate_running_id_is_refused_and_a_reused_id_is_served_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    db = tmp_path / "ledger.sqlite3"
    async with (
        SandboxCoordinator(ws_heartbeat=None) as coord,
        FakeBackend("vllm", ["m"], output_tokens=12, tokens_per_second=30) as fake,
    ):
        config = Config(
            coordinator=CoordinatorConfig(url=coord.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=fake.url),),
            identity_key_path=str(tmp_path / "identity.key"),
        )
        agent = Agent(config, allow_insecure=True)
        book = Ledger(db)
        detach = agent.events.subscribe(JobFinished, job_recorder(book))
        finished: list[JobOutcome] = []
        ended = asyncio.Event()

        def on_event(event: object) -> None:
            if isinstance(event, JobFinished):
                finished.append(event.outcome)
                ended.set()

        agent.events.subscribe(on_event)
        await agent.start()
        try:
            await coord.wait_for_capabilities(T)
            first = await coord.dispatch("m", CHAT)
            job_id = first.job_id
            async for _ in first.stream():
                break  # streaming now
            await coord.send_raw(protocol.job(job_id, "m", CHAT, "openai", 60_000))
            refusal = await first.wait(T)  # the first terminal frame for this id
            assert isinstance(refusal, JobError)
            assert refusal.error_code == ErrorCode.INVALID_REQUEST
            assert refusal.tokens_emitted == 0 and "already running" in refusal.message
            # the running job goes on: its chunks and its own job_done follow
            await asyncio.wait_for(ended.wait(), T)
            assert len(finished) == 1 and finished[0].ok
            late = first.late_frames
            for _ in range(500):  # the agent reports the job once its job_done is on the wire
                if any(isinstance(f, JobDone) for f in late):
                    break
                await asyncio.sleep(0.01)
            assert any(isinstance(f, JobChunk) for f in late)
            assert [type(f) for f in late if not isinstance(f, JobChunk)] == [JobDone]
            assert (
                len([r for r in fake.requests if r.path == "/v1/chat/completions"]) == 1
            )  # never run twice

            coord.forget(job_id)
            again = await coord.dispatch("m", CHAT, job_id=job_id)
            assert isinstance(await again.wait(T), JobDone)
            for _ in range(500):
                if len(finished) == 2:
                    break
                await asyncio.sleep(0.01)
            assert len(finished) == 2
            assert await asyncio.to_thread(book.flush, 5)
        finally:
            await agent.stop(grace=0.1)
            detach()
            await asyncio.to_thread(book.close)

    assert "already running" in caplog.text and "reused after its earlier run" in caplog.text
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT outcome, started_at_ms FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchall()
    assert [r[0] for r in rows] == ["done", "done"]  # both runs recorded
    assert rows[0][1] != rows[1][1]


def test_a_version_1_ledger_migrates_and_the_same_run_written_twice_is_one_row(
    tmp_path: Path,
) -> None:
    """Migration 2 keys rows by (job_id, started, ended): a retried write never doubles a job,
    two runs of one id are two rows, and a version-1 ledger keeps its rows."""
    db = tmp_path / "ledger.sqlite3"
    run = outcome("reused-id")
    with sqlite3.connect(db) as conn:  # a ledger written by the previous version
        for statement in ledger_mod.MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(ledger_mod._INSERT, JobRow.from_outcome(outcome("old-row"))._params())
    with Ledger(db) as book:
        assert book.count() == 1  # migrated, kept
        assert book.record(run) and book.record(run)
        assert book.count() == 2  # the same run twice: one row
        later = replace(run, started_at=run.ended_at, ended_at=run.ended_at + timedelta(seconds=3))
        assert book.record(later)
        assert [r.job_id for r in book.rows()].count("reused-id") == 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
