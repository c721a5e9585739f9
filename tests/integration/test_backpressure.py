"""A coordinator that stops reading (issue: bounded buffering, stalled sessions end).

Written in the test (tests/integration/wire_coordinator.py): after the handshake it streams a
big job from the agent, then stops reading its socket and floods the agent with job frames for a
model the agent does not serve (each one would be answered with a ~130-byte refusal). The agent
must stop reading while its socket does not drain (so the coordinator's sends block and the
agent's outbound buffer stays near its high-water mark), then drop the session once it has not
drained for `SEND_STALL_TIMEOUT_S`, reconnect, and serve on the new session.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import AgentFactory, make_config
from tests.integration.wire_coordinator import WireCoordinator
from usepod_desktop.core import link as link_mod
from usepod_desktop.core.agent import internals_for_tests
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.sandbox.fakes import FakeBackend

CHAT = {"messages": [{"role": "user", "content": "hello there agent"}], "max_tokens": 4}
ENDLESS = {"messages": [{"role": "user", "content": "hello there agent"}]}  # no max_tokens
FLOOD = 4000  # job frames of ~2 KiB: 8 MB offered, 520 kB of refusals if all were read
PAD = "x" * 2000


async def until(predicate, within: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (agent-side state: no frame announces it)
            await asyncio.sleep(0.01)


async def test_a_coordinator_that_stops_reading_gets_bounded_buffers_then_a_reconnect(
    start_agent: AgentFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(link_mod, "SEND_STALL_TIMEOUT_S", 3.0)
    async with (
        WireCoordinator(rcvbuf=16 * 1024) as coord,
        FakeBackend("vllm", ["big", "m"], output_tokens=1_000_000) as fake,
    ):
        config = make_config(coord.url, [BackendConfig(kind="vllm", url=fake.url)], tmp_path)
        agent = await start_agent(config)
        session = await coord.session(1)
        link = internals_for_tests(agent).link
        assert link is not None and link._ws is not None
        ws = link._ws
        # small kernel buffers on the coordinator's side too, so the flood blocks early
        ws_sock = ws.transport.get_extra_info("socket")
        ws_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        session.ws.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024
        )

        big = str(uuid.uuid4())
        await session.send({"type": "job", "job_id": big, "model_id": "big", "request": ENDLESS})
        await session.wait_for(lambda: session.for_job(big))
        session.stop_reading()
        await until(lambda: ws.paused)  # the agent's socket no longer drains

        peak = 0

        def sample() -> None:
            nonlocal peak
            if not ws.transport.is_closing():
                peak = max(peak, ws.transport.get_write_buffer_size())

        sent = 0
        for _ in range(FLOOD):
            frame = {
                "type": "job",
                "job_id": str(uuid.uuid4()),
                "model_id": "not-served",
                "request": {"pad": PAD},
            }
            try:
                async with asyncio.timeout(0.5):
                    await session.ws.send(json.dumps(frame))
            except Exception:
                break  # blocked: the agent is not reading
            sent += 1
            sample()
        sample()
        # The agent stopped reading: the coordinator could not push the whole flood ...
        assert sent < FLOOD, f"all {sent} frames were taken: the agent kept reading"
        # ... and what the agent holds for the coordinator stays near the high-water mark
        # (unbounded, it would grow by ~130 bytes per frame read)
        assert peak < link_mod.WRITE_LIMIT + 256 * 1024, peak

        # the session cannot send for SEND_STALL_TIMEOUT_S: dropped, then a new one serves
        second = await coord.session(2, timeout=20)
        view = agent.snapshot().link
        assert view is not None and view.stalled_sessions == 1
        fake.output_tokens = 4
        probe = str(uuid.uuid4())
        await second.send({"type": "job", "job_id": probe, "model_id": "m", "request": CHAT})
        terminal = await second.terminal(probe)
        assert terminal["type"] == "job_done"
        print(
            f"\nflood: {sent} of {FLOOD} frames of {len(PAD) // 1000} kB taken before the "
            f"coordinator's sends blocked; agent's outbound buffer peaked at {peak / 1024:.0f} KiB"
        )
