"""The sandbox coordinator, driven by a minimal agent written here on `websockets`.

Everything listens on port 0 (parallel-safe). The mini agent uses the real identity code
and the real protocol builders/parsers, so a coordinator bug shows up as a failed
handshake, a missing frame or a wrong count.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

from usepod_desktop.core import protocol
from usepod_desktop.core.identity import Identity, from_seed
from usepod_desktop.core.protocol import (
    AuthChallenge,
    AuthFailed,
    AuthOk,
    HeartbeatFigures,
    InboundFrame,
    Job,
    JobCancel,
    JobDone,
    JobError,
)
from usepod_desktop.sandbox.answers import AnswerDecoder, extract_text
from usepod_desktop.sandbox.coordinator import (
    COORDINATOR_KEY,
    CoordinatorEvent,
    JobLostError,
    NoProviderError,
    SandboxCoordinator,
)

SEED_A = bytes(range(32))
SEED_B = bytes(range(1, 33))
PROVIDER_ID = re.compile(r"prov_[0-9a-f]{12}")
T = 5.0  # generous per-step timeout; every step normally takes milliseconds


def model(model_id: str, backend: str = "vllm") -> dict[str, Any]:
    return {
        "model_id": model_id,
        "input_per_1m": 500_000,
        "output_per_1m": 750_000,
        "max_concurrent": 8,
        "backend": backend,
        "context_window": 32768,
    }


def caps_frame(*model_ids: str) -> str:
    return protocol.capabilities(
        [model(m) for m in model_ids], 8, None, {"agent_version": "test-0.0.1"}
    )


class MiniAgent:
    """Just enough of an agent: handshake, send frames, read frames."""

    def __init__(self, url: str, identity: Identity) -> None:
        self.url = url
        self.identity = identity
        self.ws: ClientConnection | None = None
        self.nonce = b""

    async def connect(
        self,
        *,
        enrollment_code: str | None = None,
        sign: bytes | None = None,
        pubkey_b64: str | None = None,
    ) -> InboundFrame:
        """Open, answer the challenge (optionally signing `sign` instead of the nonce),
        and return the auth reply."""
        self.ws = await connect(self.url, proxy=None, max_size=None, open_timeout=T)
        challenge = await self.recv()
        assert isinstance(challenge, AuthChallenge)
        assert len(challenge.nonce) == 32
        self.nonce = challenge.nonce
        signature = self.identity.sign_b64(self.nonce if sign is None else sign)
        await self.send(
            protocol.auth_response(
                pubkey_b64 or self.identity.public_key_b64,
                signature,
                "test-0.0.1",
                enrollment_code,
            )
        )
        return await self.recv()

    async def recv(self) -> InboundFrame:
        assert self.ws is not None
        async with asyncio.timeout(T):
            return protocol.parse_inbound(await self.ws.recv())

    async def recv_raw(self) -> str | bytes:
        assert self.ws is not None
        async with asyncio.timeout(T):
            return await self.ws.recv()

    async def send(self, data: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def closed_code(self) -> int | None:
        """Wait for the coordinator to close the connection; its close code."""
        assert self.ws is not None
        async with asyncio.timeout(T):
            await self.ws.wait_closed()
        return self.ws.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def barrier(coord: SandboxCoordinator, agent: MiniAgent) -> None:
    """Send a heartbeat and wait until the coordinator has read it (frames are ordered,
    so everything sent before it has been processed too)."""
    session = next(s for s in coord.providers.values())
    count = len(session.heartbeats)
    await agent.send(protocol.heartbeat(HeartbeatFigures()))
    await coord.wait_for_heartbeat(T, after=count, provider=session)


@pytest.fixture
async def coord() -> AsyncIterator[SandboxCoordinator]:
    async with SandboxCoordinator(port=0) as c:
        yield c


@pytest.fixture
async def agents(tmp_path: Path) -> AsyncIterator[list[MiniAgent]]:
    """Mini agents created by tests, closed at the end."""
    made: list[MiniAgent] = []
    yield made
    for agent in made:
        await agent.close()


def new_agent(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path, seed: bytes = SEED_A
) -> MiniAgent:
    agent = MiniAgent(coord.url, from_seed(seed, tmp_path / f"id-{seed[0]}.key"))
    agents.append(agent)
    return agent


async def connected_agent(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path, *models: str
) -> MiniAgent:
    agent = new_agent(coord, agents, tmp_path)
    assert isinstance(await agent.connect(), AuthOk)
    await agent.send(caps_frame(*models))
    await coord.wait_for_capabilities(T)
    return agent


# --------------------------------------------------------------------------- handshake


async def test_url_and_handshake(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/provider/connect", coord.url)
    assert coord.http_url == f"http://127.0.0.1:{coord.port}"
    agent = new_agent(coord, agents, tmp_path)
    reply = await agent.connect(enrollment_code="POD-ENROLL-X")
    assert isinstance(reply, AuthOk)
    assert reply.provider_id is not None and PROVIDER_ID.fullmatch(reply.provider_id)
    session = await coord.wait_for_provider(T)
    assert session.provider_id == reply.provider_id
    assert coord.providers == {reply.provider_id: session}
    assert session.authenticated and session.connected
    assert session.agent_version == "test-0.0.1"
    assert session.sent_enrollment_code and session.enrollment_code == "POD-ENROLL-X"
    assert session.pubkey_b64 == agent.identity.public_key_b64
    assert coord.provider_ids == {agent.identity.public_key_b64: reply.provider_id}


async def test_nonce_is_random_per_connection(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    first = new_agent(coord, agents, tmp_path)
    second = new_agent(coord, agents, tmp_path)
    await first.connect()
    await second.connect()
    assert first.nonce != second.nonce


async def test_provider_id_stable_per_key_across_reconnects(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = new_agent(coord, agents, tmp_path)
    first = await agent.connect()
    assert isinstance(first, AuthOk)
    s1 = await coord.wait_for_provider(T)
    await agent.close()
    await coord.wait_for(lambda: True if not coord.providers else None, T)
    again = await agent.connect()
    assert isinstance(again, AuthOk) and again.provider_id == first.provider_id
    s2 = await coord.wait_for_provider(T, after=s1.serial)
    assert s2 is not s1 and s2.serial == s1.serial + 1
    assert not s2.sent_enrollment_code

    other = new_agent(coord, agents, tmp_path, SEED_B)
    third = await other.connect()
    assert isinstance(third, AuthOk) and third.provider_id != first.provider_id
    assert len(coord.provider_ids) == 2


async def test_bad_signature_is_refused(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = new_agent(coord, agents, tmp_path)
    reply = await agent.connect(sign=b"not the nonce")
    assert isinstance(reply, AuthFailed)
    assert "signature" in reply.reason
    assert await agent.closed_code() == 1008
    assert coord.providers == {}
    assert coord.provider_ids == {}
    assert coord.auth_failures == 1
    assert coord.sessions[-1].auth_failed_reason == reply.reason

    # A valid signature, but by another key than the pubkey claims.
    other = from_seed(SEED_B, tmp_path / "b.key")
    impostor = new_agent(coord, agents, tmp_path)
    reply = await impostor.connect(pubkey_b64=other.public_key_b64)
    assert isinstance(reply, AuthFailed) and "signature" in reply.reason


async def test_reject_auth_knob(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    coord.reject_auth = "provider suspended"
    agent = new_agent(coord, agents, tmp_path)
    reply = await agent.connect()
    assert reply == AuthFailed("provider suspended")
    await agent.closed_code()
    assert coord.providers == {}
    coord.reject_auth = None
    assert isinstance(await agent.connect(), AuthOk)


async def test_require_enrollment_code(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    coord.require_enrollment_code = "POD-ENROLL-OK"
    agent = new_agent(coord, agents, tmp_path)
    missing = await agent.connect()
    assert isinstance(missing, AuthFailed) and "enrollment code" in missing.reason
    wrong = await agent.connect(enrollment_code="POD-ENROLL-BAD")
    assert isinstance(wrong, AuthFailed) and "enrollment code" in wrong.reason
    ok = await agent.connect(enrollment_code="POD-ENROLL-OK")
    assert isinstance(ok, AuthOk)
    # Enrolled now: an agent that has its provider id sends no code, and that is fine.
    again = await agent.connect()
    assert isinstance(again, AuthOk) and again.provider_id == ok.provider_id


async def test_preassigned_provider_id(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = new_agent(coord, agents, tmp_path)
    coord.provider_ids[agent.identity.public_key_b64] = "prov_chosen"
    reply = await agent.connect()
    assert reply == AuthOk("prov_chosen", sandbox=True)  # it says it is a sandbox
    coord.announce_sandbox = False  # playing the real coordinator: the field is absent
    assert await agent.connect() == AuthOk("prov_chosen")


async def test_handshake_requires_auth_response_first(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = new_agent(coord, agents, tmp_path)
    agent.ws = await connect(coord.url, proxy=None)
    assert isinstance(await agent.recv(), AuthChallenge)
    await agent.send(caps_frame("m"))
    reply = await agent.recv()
    assert isinstance(reply, AuthFailed) and "auth_response" in reply.reason
    assert await agent.closed_code() == 1008

    garbled = new_agent(coord, agents, tmp_path)
    garbled.ws = await connect(coord.url, proxy=None)
    await garbled.recv()
    await garbled.send('{"type":"auth_response","pubkey":"!!","signature":"x"}')
    reply = await garbled.recv()
    assert isinstance(reply, AuthFailed) and "malformed" in reply.reason


async def test_auth_timeout(tmp_path: Path) -> None:
    async with SandboxCoordinator(auth_timeout=0.2) as coord:
        ws = await connect(coord.url, proxy=None)
        try:
            assert isinstance(protocol.parse_inbound(await ws.recv()), AuthChallenge)
            async with asyncio.timeout(T):
                reply = protocol.parse_inbound(await ws.recv())
            assert isinstance(reply, AuthFailed) and "auth_response" in reply.reason
        finally:
            await ws.close()


# --------------------------------------------------------------------------- steady state


async def test_capabilities_and_heartbeats_recorded(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = new_agent(coord, agents, tmp_path)
    await agent.connect()
    session = await coord.wait_for_provider(T)
    await agent.send(caps_frame("b-model", "a-model"))
    first = await coord.wait_for_capabilities(T)
    assert [m["model_id"] for m in first.models] == ["b-model", "a-model"]
    assert first.limits == {"max_concurrent_total": 8, "max_tokens_per_minute": None}
    assert first.metadata == {"agent_version": "test-0.0.1"}
    await agent.send(caps_frame())
    newest = await coord.wait_for_capabilities(T, after=1)
    assert newest.models == []
    assert session.capabilities == [first, newest]
    assert session.models == []

    figures = HeartbeatFigures(queue_depth=2, p50_latency_ms=120, p95_latency_ms=300)
    await agent.send(protocol.heartbeat(figures))
    got = await coord.wait_for_heartbeat(T)
    assert got.queue_depth == 2 and got.p50_latency_ms == 120 and got.p95_latency_ms == 300
    await agent.send(protocol.heartbeat(HeartbeatFigures()))
    await coord.wait_for_heartbeat(T, after=1)
    assert len(session.heartbeats) == len(session.heartbeat_times) == 2
    assert session.heartbeat_times[0] <= session.heartbeat_times[1]
    assert session.malformed_frames == session.unknown_frames == 0


async def test_wait_for_capabilities_times_out_with_reason(coord: SandboxCoordinator) -> None:
    coord.reject_auth = "nope"
    with pytest.raises(TimeoutError, match="no capabilities"):
        await coord.wait_for_capabilities(0.05)
    with pytest.raises(TimeoutError, match="no provider"):
        await coord.wait_for_provider(0.05)


async def test_listener_events(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    events: list[CoordinatorEvent] = []
    coord.add_listener(events.append)
    coord.add_listener(lambda e: 1 / 0)  # a broken listener must not break anything
    agent = new_agent(coord, agents, tmp_path)
    await agent.connect()
    await agent.send(caps_frame("m"))
    await coord.wait_for_capabilities(T)
    await agent.close()
    await coord.wait_for(lambda: True if not coord.providers else None, T)
    assert [e.kind for e in events] == ["connected", "capabilities", "disconnected"]
    coord.reject_auth = "no"
    await agent.connect()
    assert events[-1].kind == "auth_failed"


# --------------------------------------------------------------------------- jobs


async def test_dispatch_stream_and_done(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    handle = await coord.dispatch("m1", request, deadline_ms=1234)
    job = await agent.recv()
    assert job == Job(handle.job_id, "m1", request, "openai", 1234)
    assert uuid.UUID(job.job_id).version == 4
    parts = [b'data: {"a":1}\n\n', "é".encode()[:1], "é".encode()[1:] + b"\n"]
    for part in parts:
        await agent.send(protocol.job_chunk(job.job_id, part))
    await agent.send(protocol.job_done(job.job_id, 7, 3, 42))
    terminal = await handle.wait(T)
    assert terminal == JobDone(job.job_id, 7, 3, 42)
    assert handle.ok and handle.finished
    assert handle.chunks == parts
    assert handle.data == b"".join(parts)
    assert handle.text == 'data: {"a":1}\n\né\n'
    assert handle.bytes_received == len(handle.data)
    assert handle.first_chunk_at is not None and handle.terminal_at is not None
    assert handle.dispatched_at <= handle.first_chunk_at <= handle.terminal_at
    assert handle.elapsed is not None and handle.time_to_first_chunk is not None
    assert handle.late_frames == []
    assert handle.provider_id == next(iter(coord.providers))
    assert coord.stray_frames == 0


async def test_dispatch_anthropic_job_error(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    handle = await coord.dispatch("claude-ish", {"messages": []}, format="anthropic")
    job = await agent.recv()
    assert isinstance(job, Job) and job.format == "anthropic" and job.deadline_ms == 60000
    await agent.send(protocol.job_error(job.job_id, "model_not_loaded", "no route", 0))
    assert await handle.wait(T) == JobError(job.job_id, "model_not_loaded", "no route", 0)
    assert not handle.ok and handle.text == "" and handle.first_chunk_at is None


async def test_frames_after_terminal_are_late(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    handle = await coord.dispatch("m1", {})
    job_id = (await agent.recv()).job_id  # type: ignore[union-attr]
    await agent.send(protocol.job_chunk(job_id, b"ok"))
    await agent.send(protocol.job_done(job_id, 1, 1, 1))
    await agent.send(protocol.job_chunk(job_id, b"late"))
    await agent.send(protocol.job_error(job_id, "internal", "twice", 0))
    await barrier(coord, agent)
    assert isinstance(handle.terminal, JobDone)
    assert handle.text == "ok"
    assert [type(f).__name__ for f in handle.late_frames] == ["JobChunk", "JobError"]
    assert coord.stray_frames == 0


async def test_cancel(coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    handle = await coord.dispatch("m1", {})
    job_id = (await agent.recv()).job_id  # type: ignore[union-attr]
    await agent.send(protocol.job_chunk(job_id, b"part"))
    await barrier(coord, agent)
    await coord.cancel(job_id)
    assert await agent.recv() == JobCancel(job_id)
    assert handle.cancelled_at is not None and handle.finished
    with pytest.raises(JobLostError, match="cancelled"):
        await handle.wait(T)
    assert handle.late_frames == []
    await agent.send(protocol.job_chunk(job_id, b"after cancel"))
    await barrier(coord, agent)
    assert len(handle.late_frames) == 1
    assert handle.text == "part"


async def test_stray_frames_counted(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    unknown = str(uuid.uuid4())
    await agent.send(protocol.job_chunk(unknown, b"x"))
    await agent.send(protocol.job_done(unknown, 0, 0, 0))
    await agent.send(protocol.job_error(str(uuid.uuid4()), "internal", "?", 0))
    await barrier(coord, agent)
    assert coord.stray_frames == 3
    assert unknown in coord.stray_job_ids

    # A job sent to another provider connection is stray on this one.
    other = new_agent(coord, agents, tmp_path, SEED_B)
    await other.connect()
    handle = await coord.dispatch("m1", {}, provider=next(iter(coord.providers)))
    sent_to = handle.session
    wrong = agent if sent_to.pubkey_b64 != agent.identity.public_key_b64 else other
    await wrong.send(protocol.job_chunk(handle.job_id, b"not yours"))
    await wrong.send(protocol.job_done(handle.job_id, 0, 0, 0))
    await wrong.send(protocol.heartbeat(HeartbeatFigures()))
    await coord.wait_for(lambda: True if coord.stray_frames == 5 else None, T)
    assert handle.chunks == [] and handle.terminal is None


async def test_malformed_frames_do_not_kill_the_connection(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    session = await coord.wait_for_provider(T)
    bad = [
        "not json",
        "[]",
        '{"type": 5}',
        '{"no_type": 1}',
        '{"type":"job_chunk","job_id":"not-a-uuid","data":"eA=="}',
        f'{{"type":"job_chunk","job_id":"{uuid.uuid4()}","data":"%%%"}}',
        f'{{"type":"job_done","job_id":"{uuid.uuid4()}"}}',
        '{"type":"heartbeat","queue_depth":-1}',
        '{"type":"capabilities","models":"all"}',
        '{"type":"x", "n": 1e999}',
        "[" * 100_000,
        protocol.auth_response(agent.identity.public_key_b64, agent.identity.sign_b64(b"n"), "v"),
    ]
    for frame in bad:
        await agent.send(frame)
    await agent.send(b"\x00\x01 binary")
    await agent.send('{"type":"something_new","x":1}')
    await barrier(coord, agent)
    assert session.malformed_frames == len(bad) + 1
    assert session.unknown_frames == 1
    assert len(session.errors) == len(bad) + 1
    assert session.connected and coord.providers
    assert len(session.capabilities) == 1  # the bad capabilities frame was not recorded
    # Still fully working.
    handle = await coord.dispatch("m1", {})
    job_id = (await agent.recv()).job_id  # type: ignore[union-attr]
    await agent.send(protocol.job_done(job_id, 0, 0, 0))
    assert isinstance(await handle.wait(T), JobDone)


async def test_send_raw(coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    await coord.send_raw('{"type":"job","job_id":"nope"}')
    assert await agent.recv_raw() == '{"type":"job","job_id":"nope"}'
    await coord.send_raw(b"\x00binary")
    assert await agent.recv_raw() == b"\x00binary"


async def test_dispatch_needs_one_provider(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    with pytest.raises(NoProviderError, match="no provider"):
        await coord.dispatch("m", {})
    first = new_agent(coord, agents, tmp_path)
    second = new_agent(coord, agents, tmp_path, SEED_B)
    a = await first.connect()
    b = await second.connect()
    assert isinstance(a, AuthOk) and isinstance(b, AuthOk) and b.provider_id
    with pytest.raises(NoProviderError, match="2 providers"):
        await coord.dispatch("m", {})
    with pytest.raises(NoProviderError, match="prov_missing"):
        await coord.dispatch("m", {}, provider="prov_missing")
    handle = await coord.dispatch("m", {}, provider=b.provider_id)
    job = await second.recv()
    assert isinstance(job, Job) and job.job_id == handle.job_id


async def test_large_frames_accepted(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    handle = await coord.dispatch("m1", {})
    job_id = (await agent.recv()).job_id  # type: ignore[union-attr]
    big = os.urandom(6 * 1024 * 1024)  # base64: 8 MiB frame, above aiohttp's 4 MiB default
    await agent.send(protocol.job_chunk(job_id, big))
    await agent.send(protocol.job_done(job_id, 0, 0, 0))
    await handle.wait(T)
    assert handle.data == big


async def test_stream_yields_chunks_as_they_arrive(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    handle = await coord.dispatch("m1", {})
    job_id = (await agent.recv()).job_id  # type: ignore[union-attr]
    received: list[bytes] = []
    stream = handle.stream()
    await agent.send(protocol.job_chunk(job_id, b"one"))
    async with asyncio.timeout(T):
        received.append(await anext(stream))
    await agent.send(protocol.job_chunk(job_id, b"two"))
    async with asyncio.timeout(T):
        received.append(await anext(stream))
    await agent.send(protocol.job_done(job_id, 0, 0, 0))
    async with asyncio.timeout(T):
        received.extend([chunk async for chunk in stream])
    assert received == [b"one", b"two"]


async def test_many_chunks_in_order(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    handle = await coord.dispatch("m1", {})
    job_id = (await agent.recv()).job_id  # type: ignore[union-attr]
    for i in range(2000):
        await agent.send(protocol.job_chunk(job_id, b"%d," % i))
    await agent.send(protocol.job_done(job_id, 0, 2000, 5))
    await handle.wait(T)
    assert handle.text == "".join(f"{i}," for i in range(2000))


# --------------------------------------------------------------------------- connection life


async def test_kick_closes_with_code_and_loses_inflight_jobs(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    s1 = await coord.wait_for_provider(T)
    handle = await coord.dispatch("m1", {})
    await agent.recv()
    assert await coord.kick() == 1
    assert coord.providers == {}
    assert not s1.connected and s1.close_code == 1012
    assert await agent.closed_code() == 1012
    with pytest.raises(JobLostError, match="disconnected"):
        await handle.wait(T)

    reply = await agent.connect()
    assert isinstance(reply, AuthOk) and reply.provider_id == s1.provider_id
    s2 = await coord.wait_for_provider(T, after=s1.serial)
    assert s2.connected and s2 is not s1

    await coord.kick(code=4000)
    assert await agent.closed_code() == 4000


async def test_stop_and_start_on_the_same_port(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    s1 = await coord.wait_for_provider(T)
    url = coord.url
    await coord.stop()
    assert not coord.running
    assert await agent.closed_code() == 1001
    with pytest.raises(OSError):
        await connect(url, proxy=None, open_timeout=T)
    assert await coord.start() == url
    reply = await agent.connect()
    assert isinstance(reply, AuthOk) and reply.provider_id == s1.provider_id
    await coord.wait_for_provider(T, after=s1.serial)


async def test_dead_connection_is_noticed(tmp_path: Path) -> None:
    default = SandboxCoordinator().ws_heartbeat
    assert default is not None and 0 < default <= 30  # pings on by default
    async with SandboxCoordinator(ws_heartbeat=0.2) as coord:
        agent = MiniAgent(coord.url, from_seed(SEED_A, tmp_path / "a.key"))
        try:
            await agent.connect()
            session = await coord.wait_for_provider(T)
            assert agent.ws is not None
            agent.ws.transport.pause_reading()  # no more pongs: looks dead
            await coord.wait_for(lambda: True if not coord.providers else None, T)
            assert not session.connected
        finally:
            assert agent.ws is not None
            agent.ws.transport.abort()


async def test_client_close_is_recorded(
    coord: SandboxCoordinator, agents: list[MiniAgent], tmp_path: Path
) -> None:
    agent = await connected_agent(coord, agents, tmp_path, "m1")
    session = await coord.wait_for_provider(T)
    assert agent.ws is not None
    await agent.ws.close(code=1000)
    await coord.wait_for(lambda: True if not coord.providers else None, T)
    assert session.close_code == 1000 and session.closed_at is not None


async def test_app_is_extensible(agents: list[MiniAgent], tmp_path: Path) -> None:
    coord = SandboxCoordinator()

    async def pair_issue(request: web.Request) -> web.Response:
        assert request.app[COORDINATOR_KEY] is coord
        return web.json_response({"pair_code": "ABC-123"})

    coord.add_routes([web.post("/v1/host/pair/issue", pair_issue)])
    async with coord:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{coord.http_url}/v1/host/pair/issue", json={}) as resp:
                assert resp.status == 200
                assert await resp.json() == {"pair_code": "ABC-123"}
        await coord.stop()
        await coord.start()  # the same app again, routes included
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{coord.http_url}/v1/host/pair/issue", json={}) as resp:
                assert resp.status == 200


# --------------------------------------------------------------------------- answers

OPENAI_SSE = (
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"lo \xc3\xa9"}}]}\r\n\r\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    b": keep-alive comment\n\n"
    b"data: [DONE]\n\n"
)

ANTHROPIC_SSE = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"usage":{"input_tokens":5}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: ping\n"
    b'data: {"type":"ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":" there"}}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":2}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)


def test_extract_text_openai() -> None:
    assert extract_text(OPENAI_SSE) == "Hello é"
    assert extract_text(OPENAI_SSE, "openai") == "Hello é"


def test_extract_text_anthropic() -> None:
    assert extract_text(ANTHROPIC_SSE, "anthropic") == "Hi there"


@pytest.mark.parametrize("body", [OPENAI_SSE, ANTHROPIC_SSE])
def test_answer_decoder_any_split(body: bytes) -> None:
    fmt = "openai" if body is OPENAI_SSE else "anthropic"
    whole = extract_text(body, fmt)
    for size in (1, 2, 3, 7, 64):
        decoder = AnswerDecoder(fmt)
        parts = [decoder.feed(body[i : i + size]) for i in range(0, len(body), size)]
        assert "".join(parts) + decoder.close() == whole
    decoder = AnswerDecoder(fmt)
    decoder.feed(body)
    assert decoder.finish_reason == ("stop" if fmt == "openai" else "end_turn")


def test_answer_decoder_streams_incrementally() -> None:
    decoder = AnswerDecoder()
    assert decoder.feed(b'data: {"choices":[{"delta":{"content":"A"}}]}\n') == "A"
    assert decoder.feed(b'data: {"choices":[{"delta":{"content":"B"}}]}') == ""
    assert decoder.feed(b"\n") == "B"
    assert decoder.close() == ""


def test_answer_decoder_errors_and_plain_bodies() -> None:
    decoder = AnswerDecoder()
    text = decoder.feed(
        b'data: {"choices":[{"delta":{"content":"par"}}]}\n\n'
        b'data: {"error":{"message":"upstream died","code":500}}\n\n'
    )
    assert text == "par" and decoder.error == "upstream died"

    anthropic = AnswerDecoder("anthropic")
    anthropic.feed(b'event: error\ndata: {"type":"error","error":{"message":"overloaded"}}\n\n')
    assert anthropic.error == "overloaded"

    plain = b'{"choices":[{"message":{"content":"whole answer"},"finish_reason":"length"}]}'
    assert extract_text(plain) == "whole answer"
    messages = b'{"content":[{"type":"text","text":"from"},{"type":"text","text":" claude"}]}'
    assert extract_text(messages, "anthropic") == "from claude"
    assert extract_text(b"garbage \xff\xfe\ndata: nope\n\n") == ""
    assert extract_text(b"") == ""


# --------------------------------------------------------------------------- the command


async def _readline_with(proc: asyncio.subprocess.Process, needle: str, seen: list[str]) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(15):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError(f"{needle!r} never printed; output: {''.join(seen)}")
            line = raw.decode()
            seen.append(line)
            if needle in line:
                return line


async def _start_command(*extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "usepod_desktop",
        "sandbox",
        "--port",
        "0",
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_command_prints_url_and_exits_on_eof() -> None:
    proc = await _start_command()
    seen: list[str] = []
    try:
        line = await _readline_with(proc, "ws://", seen)
        url = re.search(r"ws://127\.0\.0\.1:(\d+)/provider/connect", line)
        assert url is not None and url.group(1) != "0"
        await _readline_with(proc, f'url = "{url.group(0)}"', seen)
        await _readline_with(proc, "--allow-insecure", seen)
        assert proc.stdin is not None
        proc.stdin.close()
        async with asyncio.timeout(15):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert "sandbox stopped" in out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_command_sends_typed_prompts_as_jobs(tmp_path: Path) -> None:
    proc = await _start_command("--max-tokens", "9")
    seen: list[str] = []
    agent: MiniAgent | None = None
    try:
        line = await _readline_with(proc, "ws://", seen)
        match = re.search(r"ws://\S+/provider/connect", line)
        assert match is not None
        agent = MiniAgent(match.group(0), from_seed(SEED_A, tmp_path / "a.key"))
        reply = await agent.connect()
        assert isinstance(reply, AuthOk)
        await _readline_with(proc, f"provider {reply.provider_id} connected", seen)
        await agent.send(caps_frame("tiny-model", "other-model"))
        await _readline_with(proc, "advertises 2 model(s)", seen)
        await _readline_with(proc, "tiny-model", seen)

        assert proc.stdin is not None
        proc.stdin.write(b"What is up?\n")
        await proc.stdin.drain()
        job = await agent.recv()
        assert isinstance(job, Job) and job.model_id == "tiny-model"
        assert job.request["messages"] == [{"role": "user", "content": "What is up?"}]
        assert job.request["max_tokens"] == 9
        for word in ("Not ", "much", "!"):
            chunk = json.dumps({"choices": [{"delta": {"content": word}}]})
            await agent.send(protocol.job_chunk(job.job_id, f"data: {chunk}\n\n".encode()))
        await agent.send(protocol.job_chunk(job.job_id, b"data: [DONE]\n\n"))
        await agent.send(protocol.job_done(job.job_id, 11, 3, 20))
        answer = await _readline_with(proc, "Not much!", seen)
        assert "[tiny-model]" in answer
        await _readline_with(proc, "11 input / 3 output tokens", seen)

        proc.stdin.close()
        async with asyncio.timeout(15):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert f"provider {reply.provider_id} disconnected" in out.decode()
    finally:
        if agent is not None:
            await agent.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
