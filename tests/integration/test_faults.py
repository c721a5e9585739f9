"""Faults, end to end: a real Agent, the sandbox coordinator and fake backend servers, all on
127.0.0.1 (port 0). Every fault gets the right `job_error` (or, for a dropped coordinator, no
frame at all), the fault stays with the jobs it hit, and nothing leaks.

- the coordinator dies with 16 jobs in flight, 8 times over (streams stalled after their first
  chunks, or streaming 20 tokens/s): the agent closes the 16 upstream requests (the fake's
  sockets go away), reconnects with backoff, re-registers and serves again; asyncio tasks,
  file descriptors and TCP connections are counted before and after;
- a backend process dies mid-stream; a backend hangs (before or after its first byte) past
  the job deadline; llama.cpp answers 503 "Loading model": the right `job_error` each time
  while jobs on the other backend finish normally;
- a coordinator that stops reading (a TCP proxy that pauses): the send timeout ends the stuck
  job and closes its upstream request while a test job on the same agent and a job of another
  agent on the same coordinator finish; when reading resumes the session is intact.

Every wait is bounded; no test depends on a sleep being long enough except the short pauses
that let a down coordinator escalate the backoff, which only make assertions weaker if cut.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
import pytest

from tests.integration.conftest import FAST_BACKOFF, AgentFactory, make_config
from usepod_desktop.core import executor as executor_mod
from usepod_desktop.core import protocol
from usepod_desktop.core.agent import Agent, internals_for_tests
from usepod_desktop.core.backends import JobRequest, build_backend
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.events import AgentState, JobFinished
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.core.secrets import SecretStore
from usepod_desktop.core.serving import controller as serving_controller
from usepod_desktop.sandbox.answers import extract_text
from usepod_desktop.sandbox.coordinator import JobHandle, SandboxCoordinator
from usepod_desktop.sandbox.fakes import FailMode, FakeBackend


@pytest.fixture(autouse=True)
def _no_backend_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests count the sockets and tasks the agent holds; the serving controller's
    backend health probe (every 2 s, tested in test_serving_agent.py) would add its own."""
    monkeypatch.setattr(serving_controller, "DEFAULT_BACKEND_INTERVAL_S", 3600.0)


#: No max_tokens: the fake streams its `output_tokens`.
ENDLESS = {"messages": [{"role": "user", "content": "keep talking"}]}
SHORT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}

CYCLES = 8
JOBS_IN_FLIGHT = 16


async def wait_until(
    predicate: Callable[[], object],
    timeout: float = 5.0,  # noqa: ASYNC109
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.01)


def established(port: int, side: Literal["server", "client"]) -> int:
    """ESTABLISHED TCP connections of this process whose server end (side="server": the
    fake's sockets; "client": the agent's) is on `port`. A peer that closed its end leaves
    ESTABLISHED at once, whatever the application does."""
    count = 0
    for conn in psutil.Process().net_connections(kind="tcp"):
        if conn.status != psutil.CONN_ESTABLISHED:
            continue
        address = conn.laddr if side == "server" else conn.raddr
        if address and address.port == port:
            count += 1
    return count


def outcomes_of(agent: Agent) -> list[JobOutcome]:
    seen: list[JobOutcome] = []

    def grab(event: object) -> None:
        if isinstance(event, JobFinished):
            seen.append(event.outcome)

    agent.events.subscribe(grab)
    return seen


async def all_done(handles: list[JobHandle], timeout: float = 10.0) -> list[protocol.JobDone]:  # noqa: ASYNC109
    terminals = await asyncio.gather(*(h.wait(timeout) for h in handles))
    for handle, terminal in zip(handles, terminals, strict=True):
        assert isinstance(terminal, protocol.JobDone), (handle, terminal)
    return [t for t in terminals if isinstance(t, protocol.JobDone)]


# ------------------------------------------------------------------------------ coordinator dies


@dataclass(frozen=True)
class Resources:
    """What the process holds, minus the fake backend's idle keep-alive connections.

    The agent's HTTP pool keeps finished connections to the fake open for reuse (bounded by
    the pool, closed after 3 s idle): how many are open at a given instant depends on which
    of them the next requests happened to reuse. Each one is 2 descriptors (both ends live in
    this process), 2 TCP connection entries, and 2 tasks of the fake's aiohttp server (the
    connection's handler and its keep-alive request task); they are counted and taken out, so
    what is left is exact: the agent, the coordinator and the test itself."""

    tasks: int
    fds: int
    tcp: int
    idle_keepalive: int


def measure(fake_port: int) -> Resources:
    proc = psutil.Process()
    idle = established(fake_port, "server")
    tasks = [
        t
        for t in asyncio.all_tasks()
        if not getattr(t.get_coro(), "__qualname__", "").startswith("RequestHandler.")
    ]
    return Resources(
        tasks=len(tasks),
        fds=proc.num_fds() - 2 * idle,
        tcp=len(proc.net_connections(kind="tcp")) - 2 * idle,
        idle_keepalive=idle,
    )


async def test_coordinator_killed_with_16_jobs_streaming_reconnects_and_leaks_nothing(
    coordinator: SandboxCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with FakeBackend("vllm", ["m"], tokens_per_second=20, output_tokens=10_000) as fake:
        assert fake.port is not None
        backends = [BackendConfig(kind="vllm", url=fake.url)]
        agent = await start_agent(
            make_config(coordinator.url, backends, tmp_path, max_concurrent=2 * JOBS_IN_FLIGHT)
        )
        session = await coordinator.wait_for_provider(10)
        provider_id = session.provider_id
        await coordinator.wait_for_capabilities(10, provider=session)
        backend = internals_for_tests(agent).pool.backends[0]
        snapshots: list[Resources] = []
        reconnect_s: list[float] = []
        for cycle in range(CYCLES):
            # even cycles: streams stalled after their first chunk (nothing more arrives, so
            # only the agent's handling of the lost connection can end them); odd cycles:
            # streaming 20 tokens/s (~8 min per stream)
            fake.fail_mode = FailMode.HANG_MID_STREAM if cycle % 2 == 0 else FailMode.NONE
            fake.fail_after_chunks = 1
            fake.tokens_per_second, fake.output_tokens = 20, 10_000
            streams = [await coordinator.dispatch("m", ENDLESS) for _ in range(JOBS_IN_FLIGHT)]
            await wait_until(
                lambda s=streams: all(h.bytes_received for h in s), what="16 streams flowing"
            )
            assert agent.jobs_running == JOBS_IN_FLIGHT and backend.inflight == JOBS_IN_FLIGHT
            open_before = established(fake.port, "server")
            assert open_before >= JOBS_IN_FLIGHT

            await coordinator.stop()  # every agent connection closed (1001), nothing listens
            await wait_until(lambda: agent.jobs_running == 0, 2, "jobs stopped")
            # the agent closed all 16 upstream requests: the fake's ends are no longer open
            await wait_until(
                lambda b=open_before: established(fake.port, "server") <= b - JOBS_IN_FLIGHT,
                2,
                "upstream requests closed",
            )
            assert backend.inflight == 0
            assert all(h.terminal is None and h.lost for h in streams)
            await wait_until(
                lambda: established(fake.port, "server") == established(fake.port, "client"),
                2,
                "both ends closed",
            )
            snapshots.append(measure(fake.port))

            # down for a while: failed attempts escalate the backoff
            await asyncio.sleep(0.25)
            # between attempts (offline) or in one (connecting): never serving
            assert agent.state in (AgentState.OFFLINE, AgentState.CONNECTING), agent.state
            assert agent.backoff.current > FAST_BACKOFF["initial"]
            restarted = time.monotonic()
            await coordinator.start()
            session = await coordinator.wait_for_provider(5, after=session.serial)
            reconnect_s.append(time.monotonic() - restarted)
            assert session.provider_id == provider_id  # re-registered as itself
            await coordinator.wait_for_capabilities(5, provider=session)
            await wait_until(lambda: agent.state == AgentState.SERVING, 2, "serving")

            fake.fail_mode = FailMode.NONE
            fake.tokens_per_second, fake.output_tokens = None, 4
            handles = [await coordinator.dispatch("m", SHORT) for _ in range(JOBS_IN_FLIGHT)]
            for terminal in await all_done(handles):
                assert terminal.output_tokens == 4
            # nothing ever came back for the 16 jobs of the dead connection
            assert coordinator.stray_frames == 0, list(coordinator.stray_job_ids)

    first, last = snapshots[0], snapshots[-1]
    print(
        f"\n{CYCLES} cycles x {JOBS_IN_FLIGHT} jobs killed mid-stream; resources after cycle 1 "
        f"{first}, after cycle {CYCLES} {last}; reconnect after restart "
        f"{min(reconnect_s):.3f}-{max(reconnect_s):.3f} s"
    )
    # Tolerances: a task may sit between its cancellation and its last step at the instant
    # of measurement (the send watchdog wakes every 0.5 s to notice no job runs); beyond that
    # nothing. A leak of one object per cycle would show 7 over the 7 cycles compared; a leak
    # per job 16 per cycle.
    assert last.tasks <= first.tasks + 2, snapshots
    assert last.fds <= first.fds + 1, snapshots
    assert last.tcp <= first.tcp + 1, snapshots
    assert max(reconnect_s) < FAST_BACKOFF["maximum"] * 1.2 + 1.0


async def test_cancel_landing_while_a_failed_send_unwinds_still_closes_upstream() -> None:
    """The race behind the test above, made deterministic: the coordinator connection drops,
    so the chunk send fails, and the executor's abort of the job (`task.cancel()`) lands while
    that error unwinds through the HTTP client's close. httpx's own close is interrupted by
    such a second exception and leaves the connection open, the backend generating into it.
    The adapter must still close the upstream request."""
    async with FakeBackend("vllm", ["m"], tokens_per_second=50, output_tokens=10_000) as fake:
        assert fake.port is not None
        backend = build_backend(BackendConfig(kind="vllm", url=fake.url), SecretStore())

        async def failing_send(data: bytes) -> None:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # the abort arrives ...
            raise ConnectionError("coordinator connection closed")  # ... as the send fails

        try:
            jobs = [
                asyncio.create_task(
                    backend.execute(JobRequest(str(uuid.uuid4()), "m", dict(ENDLESS)), failing_send)
                )
                for _ in range(8)
            ]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            assert all(isinstance(r, BaseException) for r in results), results
            assert getattr(backend, "inflight", 0) == 0
            await wait_until(
                lambda: established(fake.port or 0, "server") == 0, 2, "upstream requests closed"
            )
            assert established(fake.port, "client") == 0
        finally:
            await backend.aclose()


# ------------------------------------------------------------------------------ backend faults


@dataclass
class TwoBackends:
    agent: Agent
    a: FakeBackend  # vllm, "model-a": the one that fails
    b: FakeBackend  # llama.cpp, "model-b": must not notice
    outcomes: list[JobOutcome]


@pytest.fixture
async def two_backends(
    coordinator: SandboxCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> AsyncIterator[TwoBackends]:
    async with (
        FakeBackend("vllm", ["model-a"], tokens_per_second=50, output_tokens=400) as a,
        FakeBackend("llamacpp", ["model-b"], tokens_per_second=50, output_tokens=20) as b,
    ):
        backends = [
            BackendConfig(kind="vllm", url=a.url),
            BackendConfig(kind="llamacpp", url=b.url),
        ]
        agent = await start_agent(make_config(coordinator.url, backends, tmp_path))
        caps = await coordinator.wait_for_capabilities(10)
        assert [m["model_id"] for m in caps.models] == ["model-a", "model-b"]
        yield TwoBackends(agent, a, b, outcomes_of(agent))


async def dispatch_b(coordinator: SandboxCoordinator, n: int = 3) -> list[JobHandle]:
    return [await coordinator.dispatch("model-b", ENDLESS) for _ in range(n)]


async def check_b_unaffected(env: TwoBackends, handles: list[JobHandle]) -> None:
    for terminal, handle in zip(await all_done(handles), handles, strict=True):
        assert terminal.output_tokens == 20
        assert extract_text(handle.data) == env.b.expected_text(20)
        assert handle.late_frames == []


async def test_backend_killed_mid_stream(
    coordinator: SandboxCoordinator, two_backends: TwoBackends
) -> None:
    env = two_backends
    a_jobs = [await coordinator.dispatch("model-a", ENDLESS) for _ in range(3)]
    b_jobs = await dispatch_b(coordinator)
    await wait_until(lambda: all(h.bytes_received for h in a_jobs), what="model-a streaming")
    await env.a.set_fail_mode(FailMode.REFUSE)  # the process is gone: sockets reset, no listener
    for handle in a_jobs:
        terminal = await handle.wait(5)
        assert isinstance(terminal, protocol.JobError), terminal
        assert terminal.error_code == ErrorCode.INTERNAL
        assert "upstream connection dropped mid-stream" in terminal.message
        assert terminal.tokens_emitted == handle.bytes_received > 0
    await check_b_unaffected(env, b_jobs)
    # the next job on the dead backend: it cannot connect
    refused = await (await coordinator.dispatch("model-a", SHORT)).wait(5)
    assert isinstance(refused, protocol.JobError)
    assert refused.error_code == ErrorCode.BACKEND_UNREACHABLE
    assert "connection refused" in refused.message and refused.tokens_emitted == 0
    # the backend comes back: served again without any restart of the agent
    await env.a.set_fail_mode(FailMode.NONE)
    env.a.output_tokens = 4
    assert isinstance(
        await (await coordinator.dispatch("model-a", SHORT)).wait(5), protocol.JobDone
    )
    assert coordinator.stray_frames == 0


@pytest.mark.parametrize("mode", [FailMode.HANG, FailMode.HANG_MID_STREAM])
async def test_backend_hanging_ends_at_the_deadline(
    coordinator: SandboxCoordinator, two_backends: TwoBackends, mode: FailMode
) -> None:
    env = two_backends
    assert env.a.port is not None
    env.a.fail_mode = mode
    env.a.fail_after_chunks = 3
    b_jobs = await dispatch_b(coordinator)
    hung = await coordinator.dispatch("model-a", ENDLESS, deadline_ms=600)
    await wait_until(lambda: env.a.requests and env.a.requests[-1].path.endswith("/completions"))
    await wait_until(lambda: established(env.a.port or 0, "server") >= 1, what="request open")
    if mode is FailMode.HANG_MID_STREAM:
        await wait_until(lambda: hung.bytes_received > 0, what="first chunks")
    open_while_hung = established(env.a.port, "server")
    terminal = await hung.wait(5)
    assert isinstance(terminal, protocol.JobError), terminal
    assert terminal.error_code == ErrorCode.BACKEND_TIMEOUT
    assert "deadline of 600 ms" in terminal.message
    assert hung.elapsed is not None and 0.55 <= hung.elapsed < 3.0
    assert terminal.tokens_emitted == hung.bytes_received
    if mode is FailMode.HANG:
        assert hung.bytes_received == 0
    else:
        assert hung.bytes_received > 0  # three chunks, then nothing
    # the hanging request was closed: the fake's socket for it is gone (an idle keep-alive
    # connection from discovery may stay open)
    await wait_until(
        lambda: established(env.a.port or 0, "server") < open_while_hung, 2, "hung request closed"
    )
    await check_b_unaffected(env, b_jobs)
    assert env.agent.jobs_running == 0 and hung.late_frames == []
    assert coordinator.stray_frames == 0


async def test_llamacpp_loading_503_is_model_not_loaded_and_withdrawn(
    coordinator: SandboxCoordinator, two_backends: TwoBackends
) -> None:
    env = two_backends
    session = await coordinator.wait_for_provider(5)
    env.a.output_tokens = 30
    a_jobs = [await coordinator.dispatch("model-a", ENDLESS) for _ in range(2)]
    env.b.fail_mode = FailMode.LOADING  # llama.cpp restarting with a new model: every route 503
    loading = await (await coordinator.dispatch("model-b", SHORT)).wait(5)
    assert isinstance(loading, protocol.JobError), loading
    assert loading.error_code == ErrorCode.MODEL_NOT_LOADED
    assert "HTTP 503" in loading.message and "Loading model" in loading.message
    assert loading.tokens_emitted == 0
    for terminal in await all_done(a_jobs):  # the other backend's jobs are untouched
        assert terminal.output_tokens == 30
    # re-discovery sees it loading and stops advertising its model; then takes it back
    await env.agent.rediscover()
    caps = await coordinator.wait_for_capabilities(5, after=1, provider=session)
    assert [m["model_id"] for m in caps.models] == ["model-a"]
    refused = await (await coordinator.dispatch("model-b", SHORT)).wait(5)
    assert isinstance(refused, protocol.JobError)
    assert refused.error_code == ErrorCode.MODEL_NOT_LOADED  # no route now: refused at once
    env.b.fail_mode = FailMode.NONE
    await env.agent.rediscover()
    caps = await coordinator.wait_for_capabilities(5, after=2, provider=session)
    assert [m["model_id"] for m in caps.models] == ["model-a", "model-b"]
    await check_b_unaffected(env, await dispatch_b(coordinator, 1))
    assert len(coordinator.sessions) == 1 and coordinator.stray_frames == 0


# ------------------------------------------------------------------------------ slow reader


class PausableProxy:
    """A TCP proxy in front of the coordinator. `pause()` stops reading what the agent sends
    (a coordinator whose reader is stuck); the kernel buffers then fill and the agent's
    WebSocket writes stop completing. The other direction keeps flowing."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.reading = asyncio.Event()
        self.reading.set()
        self.forwarded = 0  # bytes agent -> coordinator
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # small receive buffer (inherited by accepted sockets): the stall shows up sooner
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.bind(("127.0.0.1", 0))
        self._server = await asyncio.start_server(self._accept, sock=sock, limit=16 * 1024)
        return int(sock.getsockname()[1])

    def pause(self) -> None:
        self.reading.clear()

    def resume(self) -> None:
        self.reading.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, gated=True)),
            asyncio.create_task(self._pump(up_reader, writer, gated=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, gated: bool
    ) -> None:
        try:
            while True:
                if gated:
                    await self.reading.wait()
                data = await reader.read(16 * 1024)
                if not data:
                    break
                if gated:
                    self.forwarded += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def test_coordinator_that_stops_reading_ends_the_stuck_job_only(
    coordinator: SandboxCoordinator,
    start_agent: AgentFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(executor_mod, "SEND_TIMEOUT_S", 0.5)
    monkeypatch.setattr(executor_mod, "TERMINAL_SEND_TIMEOUT_S", 0.5)
    proxy = PausableProxy(coordinator.port)
    proxy_port = await proxy.start()
    try:
        async with (
            FakeBackend("vllm", ["big"], output_tokens=1_000_000) as a,  # unpaced, ~150 MB
            FakeBackend("llamacpp", ["small"], tokens_per_second=100, output_tokens=10) as b,
        ):
            assert a.port is not None
            backends = [
                BackendConfig(kind="vllm", url=a.url),
                BackendConfig(kind="llamacpp", url=b.url),
            ]
            stuck_url = f"ws://127.0.0.1:{proxy_port}/provider/connect"
            stuck_agent = await start_agent(make_config(stuck_url, backends, tmp_path / "stuck"))
            stuck_session = await coordinator.wait_for_provider(10)
            await coordinator.wait_for_capabilities(10, provider=stuck_session)
            outcomes = outcomes_of(stuck_agent)
            await start_agent(make_config(coordinator.url, backends, tmp_path / "ok"))
            other_session = await coordinator.wait_for_provider(10, after=stuck_session.serial)
            await coordinator.wait_for_capabilities(10, provider=other_session)

            handle = await coordinator.dispatch("big", ENDLESS, provider=stuck_session)
            await wait_until(lambda: handle.bytes_received > 0, what="stream flowing")
            open_while_streaming = established(a.port, "server")
            proxy.pause()
            stalled_at = time.monotonic()
            await wait_until(lambda: outcomes, 30, "the stuck job to end")
            ended_after = time.monotonic() - stalled_at
            outcome = outcomes[0]
            assert outcome.error_code == ErrorCode.INTERNAL
            assert outcome.message == "coordinator did not accept a chunk within 0.5 s"
            assert stuck_agent.jobs_running == 0
            # the upstream request was closed, not left generating into a dead end (idle
            # keep-alive connections from the two agents' discovery may stay open)
            await wait_until(
                lambda: established(a.port or 0, "server") < open_while_streaming,
                2,
                "upstream closed",
            )
            # (the agent's backend watch may have sent a /health since)
            assert [r.path for r in a.requests if r.path != "/health"][-1] == (
                "/v1/chat/completions"
            )
            assert outcome.bytes_relayed < 150_000_000  # it did not run to the end

            # meanwhile: a test job on the same agent (another backend, another sender) and
            # a job of another agent on the same coordinator are served normally
            test_job = await stuck_agent.run_test_job("small", dict(SHORT))
            assert test_job.outcome.ok and test_job.outcome.output_tokens == 4
            other = await coordinator.dispatch("small", SHORT, provider=other_session)
            assert isinstance(await other.wait(5), protocol.JobDone)
            other_big = await coordinator.dispatch("big", SHORT, provider=other_session)
            assert isinstance(await other_big.wait(5), protocol.JobDone)
            assert handle.terminal is None  # still stuck in the buffers

            # reading resumes: everything buffered arrives, ending with the job's terminal frame
            proxy.resume()
            terminal = await handle.wait(30)
            assert isinstance(terminal, protocol.JobError), terminal
            assert terminal.error_code == ErrorCode.INTERNAL
            assert terminal.message == outcome.message
            assert terminal.tokens_emitted == handle.bytes_received == outcome.bytes_relayed
            # the same session carries on
            again = await coordinator.dispatch("small", SHORT, provider=stuck_session)
            assert isinstance(await again.wait(5), protocol.JobDone)
            assert stuck_session.connected and len(coordinator.sessions) == 2
            assert coordinator.stray_frames == 0 and handle.late_frames == []
            print(
                f"\n{proxy.forwarded / 1e6:.1f} MB forwarded in all; the job ended "
                f"{ended_after:.2f} s after the stall with {outcome.bytes_relayed / 1e6:.1f} MB "
                "relayed"
            )
    finally:
        proxy.resume()
        await proxy.stop()
