"""Issue 12 item 6: the sandbox coordinator serves one agent and survives hostile ones.

The hostile agents are minimal WebSocket clients written here (tests/sandbox' MiniAgent,
real identity keys and protocol builders), all on 127.0.0.1: a second local process that
tries to take the prompts, an agent printing terminal escapes, one flooding frames, one
sending oversized frames and answers, and a client asking the pairing desk for codes
without end."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed

from tests.sandbox.test_coordinator import SEED_A, SEED_B, MiniAgent, caps_frame, model
from usepod_desktop.core import protocol
from usepod_desktop.core.identity import from_seed
from usepod_desktop.core.protocol import AuthFailed, AuthOk, HeartbeatFigures, Job
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.pairing import enable_pairing

T = 10.0
ESCAPES = "\x1b]0;owned\x07\x1b[2J\x1b[31m"

#: Measured figures, printed for RELIABILITY.md (`pytest -s`).
FIGURES: dict[str, str] = {}


def agent(url: str, tmp_path: Path, seed: bytes) -> MiniAgent:
    return MiniAgent(url, from_seed(seed, tmp_path / f"id-{seed[0]}.key"))


async def test_pin_first_agent_refuses_every_other_key(tmp_path: Path) -> None:
    async with SandboxCoordinator(port=0, pin_first_agent=True) as coord:
        first, second = agent(coord.url, tmp_path, SEED_A), agent(coord.url, tmp_path, SEED_B)
        try:
            assert isinstance(await first.connect(), AuthOk)
            assert coord.pinned_key == first.identity.public_key_b64
            refused = await second.connect()
            assert isinstance(refused, AuthFailed) and "another agent" in refused.reason
            await first.close()
            again = agent(coord.url, tmp_path, SEED_A)
            assert isinstance(await again.connect(), AuthOk)  # the same agent reconnects
            await again.close()
        finally:
            await first.close()
            await second.close()
        assert coord.allowed_keys == {first.identity.public_key_b64}


async def test_frame_flood_closes_the_connection_and_history_is_bounded(tmp_path: Path) -> None:
    async with SandboxCoordinator(
        port=0, max_frames_per_second=200, history_limit=10, ws_heartbeat=None
    ) as coord:
        flooder = agent(coord.url, tmp_path, SEED_A)
        assert isinstance(await flooder.connect(), AuthOk)
        frame = protocol.heartbeat(HeartbeatFigures())
        sent = 0
        with pytest.raises(Exception):  # noqa: B017 (closed by the peer: any close error)
            for _ in range(100_000):
                await flooder.send(frame)
                sent += 1
                if sent % 100 == 0:
                    await asyncio.sleep(0)
        assert await flooder.closed_code() == 1008
        session = coord.sessions[-1]
        assert coord.rate_limited == 1
        assert len(session.heartbeats) <= 10 and len(session.heartbeat_times) <= 10
        FIGURES["flood"] = (
            f"frame flood: agent sent {sent} heartbeat frames; closed with 1008 after "
            f"{session.frames_received} were read; {len(session.heartbeats)} kept"
        )
        print(FIGURES["flood"])


async def test_an_answer_over_the_limit_is_cancelled_and_dropped(tmp_path: Path) -> None:
    limit = 1024 * 1024
    async with SandboxCoordinator(port=0, max_job_bytes=limit, ws_heartbeat=None) as coord:
        hostile = agent(coord.url, tmp_path, SEED_A)
        assert isinstance(await hostile.connect(), AuthOk)
        await hostile.send(caps_frame("m"))
        await coord.wait_for_capabilities(T)
        handle = await coord.dispatch("m", {"messages": []})
        job = await hostile.recv()
        assert isinstance(job, Job)
        chunk = protocol.job_chunk(job.job_id, b"x" * 65536)
        cancelled = None
        for _ in range(64):  # 4 MiB offered
            await hostile.send(chunk)
        while cancelled is None:
            frame = await hostile.recv()
            if isinstance(frame, protocol.JobCancel):
                cancelled = frame
        assert cancelled.job_id == job.job_id
        with pytest.raises(Exception, match="larger than"):
            await handle.wait(T)
        assert handle.chunks == [] and handle.lost and "larger than" in handle.lost
        await hostile.close()


async def test_pairing_desk_issues_codes_at_a_bounded_rate(tmp_path: Path) -> None:
    coord = SandboxCoordinator(port=0)
    desk = enable_pairing(coord)
    await coord.start()
    key = base64.b64encode(bytes(32)).decode()
    statuses: list[int] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                async with http.post(
                    coord.http_url + "/v1/host/pair/issue", json={"agent_pubkey": key}
                ) as response:
                    statuses.append(response.status)
                    if response.status == 429:
                        assert response.headers.get("Retry-After") == "60"
    finally:
        await coord.stop()
    issued = statuses.count(200)
    assert issued <= desk.max_pending and issued <= desk.max_per_minute
    assert statuses.count(429) == 200 - issued and len(desk.requests) == issued
    FIGURES["pairing"] = f"pairing desk: 200 issue requests -> {issued} codes, rest HTTP 429"
    print(FIGURES["pairing"])


# ------------------------------------------------------------------- the `sandbox` command


@pytest.fixture
async def sandbox_cli() -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "usepod_desktop",
        "sandbox",
        "--port",
        "0",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    yield proc
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def read_until(proc: asyncio.subprocess.Process, pattern: str, seen: list[str]) -> str:
    assert proc.stdout is not None
    regex = re.compile(pattern)
    async with asyncio.timeout(T):
        while True:
            line = (await proc.stdout.readline()).decode("utf-8", "replace")
            if not line:
                raise AssertionError(f"{pattern!r} never printed:\n{''.join(seen)}")
            seen.append(line)
            if regex.search(line):
                return line


async def test_sandbox_command_serves_one_agent_and_prints_agent_text_safely(
    sandbox_cli: asyncio.subprocess.Process, tmp_path: Path
) -> None:
    proc = sandbox_cli
    seen: list[str] = []
    banner = await read_until(proc, r"listening on ws://", seen)
    url = banner.split("listening on ", 1)[1].strip()
    served = agent(url, tmp_path, SEED_A)
    intruder = agent(url, tmp_path, SEED_B)
    try:
        assert isinstance(await served.connect(), AuthOk)
        await read_until(proc, r"serves only agent key", seen)
        hostile_id = f"evil{ESCAPES}model"
        await served.send(
            protocol.capabilities([model(hostile_id)], 8, None, {"agent_version": ESCAPES})
        )
        await read_until(proc, r"advertises 1 model", seen)
        await read_until(proc, r"evil", seen)
        # A second local process with another key tries to take over: refused.
        refused = await intruder.connect()
        assert isinstance(refused, AuthFailed)
        await read_until(proc, r"failed auth", seen)
        # The typed prompt goes to the served agent only.
        assert proc.stdin is not None
        proc.stdin.write(b"what is the secret plan?\n")
        await proc.stdin.drain()
        job = await served.recv()
        assert isinstance(job, Job)
        assert job.request["messages"][0]["content"] == "what is the secret plan?"
        body = b'data: {"choices":[{"delta":{"content":"line one\\nline \\u001b[2Jtwo"}}]}\n\n'
        await served.send(protocol.job_chunk(job.job_id, body))
        await served.send(protocol.job_done(job.job_id, 1, 2, 3))
        await read_until(proc, r"input / .* output tokens", seen)
        # A frame over the 8 MiB limit ends that connection, not the sandbox.
        with contextlib.suppress(ConnectionError, ConnectionClosed):
            await served.send("x" * (9 * 1024 * 1024))  # the sandbox closes mid-frame
        assert await served.closed_code() == 1009
    finally:
        await served.close()
        await intruder.close()
    text = "".join(seen)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;owned\\x07" in text
    assert "line one\n" in text and "line \\x1b[2Jtwo" in text
    assert intruder.ws is not None and intruder.ws.close_code == 1008
