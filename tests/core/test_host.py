"""AgentHost, the composition root: it finds and loads agent.toml (or starts the sandbox),
builds the agent and the ledger, records every job, and owns their lifecycle."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.core.events import JobFinished
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.host import AgentHost, ConfigNotFound, HostOptions
from usepod_desktop.core.ledger import Ledger, default_ledger_path
from usepod_desktop.core.protocol import JobDone
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.demo import DEMO_MODEL, SandboxSession
from usepod_desktop.sandbox.fakes import FakeBackend

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
T = 15.0


def finished_jobs(host: AgentHost) -> asyncio.Queue[JobOutcome]:
    queue: asyncio.Queue[JobOutcome] = asyncio.Queue()
    assert host.agent is not None
    host.agent.events.subscribe(JobFinished, lambda e: queue.put_nowait(e.outcome))
    return queue


async def test_open_loads_agent_toml_serves_records_and_closes(tmp_path: Path) -> None:
    async with (
        SandboxCoordinator(ws_heartbeat=None) as coord,
        FakeBackend("vllm", ["model-a"], output_tokens=5) as fake,
    ):
        path = tmp_path / "agent.toml"
        config = Config(
            coordinator=CoordinatorConfig(url=coord.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=fake.url),),
            identity_key_path=str(tmp_path / "identity.key"),
        )
        save_config(config, path, allow_insecure=True)
        host = await AgentHost.open(HostOptions(config=path, allow_insecure=True))
        try:
            assert host.agent is not None and host.agent.config_path == path
            assert host.ledger is not None
            ledger = host.ledger
            jobs = finished_jobs(host)
            await host.start()
            await coord.wait_for_capabilities(T)
            handle = await coord.dispatch("model-a", CHAT)
            assert isinstance(await handle.wait(T), JobDone)
            await asyncio.wait_for(jobs.get(), T)
            await host.stop(grace=1)
        finally:
            await host.close()
    assert ledger.closed  # owned by the host: closed with it, the job flushed first
    with Ledger(default_ledger_path(), create=False) as again:
        (row,) = again.rows()
    assert (row.job_id, row.source, row.backend_kind, row.outcome) == (
        handle.job_id,
        "sandbox",  # the sandbox coordinator says so in auth_ok
        "vllm",
        "done",
    )


async def test_no_agent_toml_is_config_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./agent.toml either
    host = AgentHost()
    with pytest.raises(ConfigNotFound, match=r"no agent\.toml found"):
        await host.load(HostOptions())
    assert host.agent is None and host.ledger is None  # nothing opened
    with pytest.raises(ConfigNotFound, match="config file not found"):
        await host.load(HostOptions(config=tmp_path / "missing.toml"))


async def test_sandbox_mode_records_coordinator_jobs_as_sandbox_and_stops_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    book = Ledger(tmp_path / "caller.sqlite3")  # the caller's: the host must not close it
    host = AgentHost(ledger=book, sandbox=SandboxSession)
    try:
        agent = await host.load(HostOptions(sandbox=True))
        session = host.sandbox_session
        assert session is not None and agent.config_path == session.config_path
        jobs = finished_jobs(host)
        await host.start()
        await session.coordinator.wait_for_capabilities(T)
        handle = await session.coordinator.dispatch(DEMO_MODEL, CHAT)
        assert isinstance(await handle.wait(T), JobDone)
        await asyncio.wait_for(jobs.get(), T)
        await host.stop(grace=1)
        assert host.sandbox_session is None
        await host.close()
        assert not book.closed
        assert book.flush(5)
        (row,) = book.rows()
        assert (row.source, row.model_id) == ("sandbox", DEMO_MODEL)
    finally:
        await host.close()
        book.close()


async def test_load_again_replaces_the_agent_and_keeps_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    config = Config(
        coordinator=CoordinatorConfig(url="ws://127.0.0.1:9/ws"),
        pricing=PricingConfig(500_000, 750_000),
        backends=(),
        identity_key_path=str(tmp_path / "identity.key"),
    )
    save_config(config, path, allow_insecure=True)
    host = AgentHost()
    try:
        first = await host.load(HostOptions(config=path, allow_insecure=True))
        ledger = host.ledger
        second = await host.load(HostOptions(config=path, allow_insecure=True))
        assert second is not first and host.agent is second and host.ledger is ledger
        assert ledger is not None
        now = datetime.now(UTC)
        for agent, job_id in ((first, "old"), (second, "new")):
            outcome = JobOutcome(job_id, "m", "vllm", "openai", now, now, None, 1, 1, 1, 0)
            agent.events.emit(JobFinished(outcome))
        assert ledger.flush(5)
        assert [r.job_id for r in ledger.rows()] == ["new"]  # the replaced agent is detached
    finally:
        await host.close()
