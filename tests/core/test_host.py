"""AgentHost, the composition root: it finds and loads agent.toml (or starts the sandbox),
builds the agent and the ledger, records every job, and owns their lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MemoryKeyring
from tests.pairing_support import probe_ports
from usepod_desktop.core import paths
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.core.events import AgentState, JobFinished
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.host import Adopted, AgentHost, ConfigNotFound, HostOptions
from usepod_desktop.core.ledger import Ledger, default_ledger_path
from usepod_desktop.core.pairing import PairingFlow, PairingResult
from usepod_desktop.core.protocol import JobDone
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.demo import DEMO_MODEL, SandboxSession
from usepod_desktop.sandbox.fakes import FakeBackend
from usepod_desktop.sandbox.pairing import PairingDesk, enable_pairing

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


# ---- adopting a pairing (the wizard's "Start serving", through AgentHost.adopt_pairing) ----


@pytest.fixture
async def pairing_desk() -> AsyncIterator[tuple[SandboxCoordinator, PairingDesk, FakeBackend]]:
    """The sandbox coordinator playing the real one, with its pairing desk and one backend."""
    coord = SandboxCoordinator(ws_heartbeat=None)
    coord.announce_sandbox = False
    desk = enable_pairing(coord)
    async with coord, FakeBackend("vllm", ["model-a", "model-b"]) as fake:
        yield coord, desk, fake


async def pair(
    coord: SandboxCoordinator,
    desk: PairingDesk,
    fake: FakeBackend,
    prices: list[tuple[str, int, int]],
    *,
    after: int = 0,
) -> PairingResult:
    """A real device-flow pairing, approved at the desk with these model prices; it writes
    the default agent.toml and identity."""
    flow = PairingFlow(
        coord.http_url,
        probe_ports=probe_ports(vllm=fake.port),
        poll_interval=0.02,
        backoff=Backoff(initial=0.02, maximum=0.1),
    )
    task = asyncio.create_task(flow.run())
    request = await desk.wait_for_request(T, after=after)
    desk.approve(request.pair_code, prices)
    return await asyncio.wait_for(task, T)


def prices_of(caps: Any) -> dict[str, int]:
    return {m["model_id"]: m["input_per_1m"] for m in caps.models}


async def test_adopting_a_first_pairing_starts_serving_then_a_new_one_reloads_in_place(
    pairing_desk: tuple[SandboxCoordinator, PairingDesk, FakeBackend],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk, fake = pairing_desk
    monkeypatch.chdir(tmp_path)  # no ./agent.toml: "not paired yet"
    host = AgentHost()
    shown: list[Any] = []
    try:
        with pytest.raises(ConfigNotFound):
            await host.load(HostOptions(agent_kwargs={"instance_kind": "tray"}))
        result = await pair(coord, desk, fake, [("model-b", 250_000, 500_000)])
        assert result.config_path == paths.default_config_path()

        adopted = await host.adopt_pairing(result, grace=1, on_agent=shown.append)

        assert adopted is Adopted.STARTED
        agent = host.agent
        assert agent is not None and shown == [agent]  # told before it started
        assert agent.config_path == paths.default_config_path()
        # the usual lookup finds the new file; the ws:// sandbox needs insecure URLs
        assert host.options.config is None and host.options.allow_insecure
        assert host.options.agent_kwargs == {"instance_kind": "tray"}  # the rest is kept
        session = await coord.wait_for_provider(T)
        assert session.provider_id == result.provider_id
        caps = await coord.wait_for_capabilities(T)
        assert prices_of(caps) == {"model-a": 500_000, "model-b": 250_000}

        # Pairing again writes the same agent.toml: the running agent reloads it in place.
        seen = len(session.capabilities)
        again = await pair(coord, desk, fake, [("model-a", 100_000, 200_000)], after=1)
        assert await host.adopt_pairing(again, grace=1, on_agent=shown.append) is (Adopted.RELOADED)
        assert host.agent is agent and shown == [agent]
        caps = await coord.wait_for_capabilities(T, after=seen)
        assert prices_of(caps)["model-a"] == 100_000
    finally:
        await host.close()


async def test_adopting_stops_an_agent_on_another_file_and_serves_the_new_one(
    pairing_desk: tuple[SandboxCoordinator, PairingDesk, FakeBackend],
    tmp_path: Path,
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk, fake = pairing_desk
    other = tmp_path / "other.toml"
    config = Config(
        coordinator=CoordinatorConfig(url="ws://127.0.0.1:9/ws"),  # nothing listens there
        pricing=PricingConfig(500_000, 750_000),
        backends=(),
        identity_key_path=str(tmp_path / "other.key"),
    )
    save_config(config, other, allow_insecure=True)
    host = AgentHost()
    shown: list[Any] = []
    try:
        old = await host.load(HostOptions(config=other, allow_insecure=True))
        await host.start()
        result = await pair(coord, desk, fake, [("model-a", 300_000, 600_000)])

        assert await host.adopt_pairing(result, grace=1, on_agent=shown.append) is (Adopted.STARTED)

        new = host.agent
        assert new is not None and new is not old and shown == [None, new]
        assert old.state == AgentState.OFFLINE  # stopped before the new one was built
        # `--config` was given: it now names the paired file
        assert host.options.config == paths.default_config_path()
        assert (await coord.wait_for_provider(T)).provider_id == result.provider_id
    finally:
        await host.close()


async def test_adopting_in_sandbox_mode_changes_nothing_until_the_next_start(
    pairing_desk: tuple[SandboxCoordinator, PairingDesk, FakeBackend],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk, fake = pairing_desk
    monkeypatch.chdir(tmp_path)
    host = AgentHost(sandbox=SandboxSession)
    try:
        agent = await host.load(HostOptions(sandbox=True))
        result = await pair(coord, desk, fake, [("model-a", 300_000, 600_000)])
        shown: list[Any] = []
        assert await host.adopt_pairing(result, on_agent=shown.append) is Adopted.LATER
        assert host.agent is agent and shown == []
        assert host.sandbox_session is not None
    finally:
        await host.close()
