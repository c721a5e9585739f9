"""The agent against a coordinator written in the test (tests/integration/wire_coordinator.py)
that sends what the reference agent 0.3.3 tolerates (docs/protocol.md, "Tolerance"):

- every `job` frame that carries a usable job id gets exactly one terminal frame, with the id
  in canonical form, whatever the format / deadline / id form / model / request;
- `job_cancel` in any id form stops the job, and frees its slot before the next frame is read
  (a cancel and a new job in ONE socket write at `max_concurrent`);
- an `auth_ok` with a numeric provider_id and an empty challenge nonce keep the session;
- a close after `auth_ok` (before or at `capabilities`) is post-auth: no backoff escalation,
  and quick reconnects reuse the discovery result;
- admission refusals stay out of the heartbeat's error rate;
- `agent_version` is "0.3.3" on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.integration.conftest import AgentFactory, make_config
from tests.integration.wire_coordinator import Session, WireCoordinator
from usepod_desktop.core.agent import Agent
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.sandbox.fakes import FailMode, FakeBackend

CHAT = {"messages": [{"role": "user", "content": "hello there agent"}], "max_tokens": 4}
ANTHROPIC = {"model": "x", "max_tokens": 4, "messages": [{"role": "user", "content": "hi you"}]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeBackend]:
    async with FakeBackend("vllm", ["m"], output_tokens=4) as backend:
        yield backend


@pytest.fixture
async def wire() -> AsyncIterator[WireCoordinator]:
    async with WireCoordinator() as coord:
        yield coord


async def serve(
    start_agent: AgentFactory, coord: WireCoordinator, fake: FakeBackend, tmp: Path, **kw: Any
) -> tuple[Agent, Session]:
    limits = {k: kw.pop(k) for k in ("max_concurrent",) if k in kw}
    config = make_config(coord.url, [BackendConfig(kind="vllm", url=fake.url)], tmp, **limits)
    agent = await start_agent(config, **kw)
    return agent, await coord.session(1)


async def until(predicate: Callable[[], object], within: float = 5.0) -> None:
    """Poll agent-side state (no frame announces it)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def job(job_id: str, **fields: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "job", "job_id": job_id, "model_id": "m", "request": CHAT}
    for key, value in fields.items():
        if value is ...:
            frame.pop(key, None)
        else:
            frame[key] = value
    return frame


async def probe(session: Session) -> None:
    """A normal job served after the others: frames arrive in order, so any late frame of an
    earlier job would have arrived before this job's terminal frame."""
    probe_id = str(uuid.uuid4())
    await session.send(job(probe_id))
    assert (await session.terminal(probe_id))["type"] == "job_done"


# ------------------------------------------------------------------------------ job frames


async def test_every_job_frame_with_a_job_id_gets_exactly_one_terminal_frame(
    wire: WireCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    _, session = await serve(start_agent, wire, fake, tmp_path, max_concurrent=16)
    ids = [uuid.uuid4() for _ in range(15)]
    cases: list[tuple[dict[str, Any], str, str | None]] = [
        # (frame, expected terminal, expected error_code)
        (job(str(ids[0]), format="ANTHROPIC", request=ANTHROPIC), "job_done", None),
        (job(str(ids[1]), format="Anthropic", request=ANTHROPIC), "job_done", None),
        (job(str(ids[2]), format="gemini"), "job_done", None),
        (job(str(ids[3]), format=7), "job_done", None),
        (job(str(ids[4]), deadline_ms="30000"), "job_done", None),
        (job(str(ids[5]), deadline_ms=30000.0), "job_done", None),
        (job(str(ids[6]), deadline_ms=0), "job_done", None),
        (job(str(ids[7]), deadline_ms=-5), "job_done", None),
        (job(str(ids[8]), deadline_ms=2**40), "job_done", None),
        (job(ids[9].hex.upper()), "job_done", None),
        (job("{" + str(ids[10]) + "}"), "job_done", None),
        (job("urn:uuid:" + str(ids[11])), "job_done", None),
        (job(str(ids[12]), model_id=""), "job_error", "invalid_request"),
        (job(str(ids[13]), request=["not", "an", "object"]), "job_error", "invalid_request"),
        (job(str(ids[14]).upper(), model_id=...), "job_error", "invalid_request"),
    ]
    for frame, _, _ in cases:
        await session.send(frame)
    for job_uuid, (_, kind, code) in zip(ids, cases, strict=True):
        terminal = await session.terminal(str(job_uuid))
        assert terminal["type"] == kind, (job_uuid, terminal)
        if code is not None:
            assert terminal["error_code"] == code
            assert terminal["tokens_emitted"] == 0
            assert "job frame:" in terminal["message"]
    await probe(session)
    canonical = {str(u) for u in ids}
    for job_uuid in ids:
        assert len(session.terminals(str(job_uuid))) == 1
    # every reply carries the canonical (lowercase hyphenated) id, never the form sent
    replied = {f["job_id"] for f in session.frames if "job_id" in f}
    assert canonical <= replied
    assert all(i == i.lower() and len(i) == 36 for i in replied)
    # the anthropic jobs went to the Messages endpoint, the others to chat/completions
    paths = [r.path for r in fake.requests if r.method == "POST"]
    assert paths.count("/v1/messages") == 2
    assert len(wire.sessions) == 1 and not session.closed.is_set()


async def test_deadline_given_as_a_string_is_enforced(
    wire: WireCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with FakeBackend("vllm", ["m"], fail_mode=FailMode.HANG_MID_STREAM) as fake:
        _, session = await serve(start_agent, wire, fake, tmp_path)
        job_id = str(uuid.uuid4())
        started = asyncio.get_running_loop().time()
        await session.send(job(job_id, deadline_ms="300"))
        terminal = await session.terminal(job_id, 10)
        elapsed = asyncio.get_running_loop().time() - started
    assert terminal["type"] == "job_error" and terminal["error_code"] == "backend_timeout"
    assert "300 ms" in terminal["message"]
    assert elapsed < 5  # not the 60 s default


@pytest.mark.parametrize("form", ["simple", "upper", "braced", "urn"])
async def test_job_cancel_in_any_uuid_form_stops_the_job(
    wire: WireCoordinator, start_agent: AgentFactory, tmp_path: Path, form: str
) -> None:
    async with FakeBackend("vllm", ["m"], fail_mode=FailMode.HANG_MID_STREAM) as fake:
        agent, session = await serve(start_agent, wire, fake, tmp_path)
        job_uuid = uuid.uuid4()
        await session.send(job(str(job_uuid)))
        await session.wait_for(lambda: session.of_type("job_chunk"))
        assert agent.jobs_running == 1
        cancel_id = {
            "simple": job_uuid.hex,
            "upper": str(job_uuid).upper(),
            "braced": "{" + str(job_uuid) + "}",
            "urn": "urn:uuid:" + str(job_uuid),
        }[form]
        await session.send({"type": "job_cancel", "job_id": cancel_id})
        await until(lambda: agent.jobs_running == 0)
        fake.fail_mode = FailMode.NONE
        await probe(session)
    assert session.terminals(str(job_uuid)) == []  # nothing after a cancel


async def test_cancel_and_new_job_in_one_socket_write_at_max_concurrent(
    wire: WireCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with FakeBackend("vllm", ["m"], fail_mode=FailMode.HANG_MID_STREAM) as fake:
        agent, session = await serve(start_agent, wire, fake, tmp_path, max_concurrent=1)
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        await session.send(job(first))
        await session.wait_for(lambda: session.for_job(first))  # streaming: the slot is taken
        await session.send({"type": "job_cancel", "job_id": first}, job(second))
        # the second job is admitted and streams; it is not refused for capacity
        await session.wait_for(lambda: session.for_job(second))
        assert next(f["type"] for f in session.for_job(second)) == "job_chunk"
        assert agent.jobs_running == 1
        fake.fail_mode = FailMode.NONE
        third = str(uuid.uuid4())
        await session.send({"type": "job_cancel", "job_id": second}, job(third))
        assert (await session.terminal(third))["type"] == "job_done"
    assert session.terminals(first) == [] and session.terminals(second) == []
    assert not any(f.get("error_code") == "out_of_capacity" for f in session.frames)


# ------------------------------------------------------------------------------ handshake


@pytest.mark.parametrize("provider_id", [42, 1.5, ["p"], {"id": "p"}, True])
async def test_auth_ok_with_a_provider_id_of_another_type_keeps_the_session(
    fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path, provider_id: Any
) -> None:
    async with WireCoordinator(provider_id=provider_id) as coord:
        agent, session = await serve(start_agent, coord, fake, tmp_path)
        await probe(session)
        assert len(coord.sessions) == 1 and not session.closed.is_set()
    assert agent.provider_id is None  # ignored, not stored


async def test_an_empty_challenge_nonce_is_signed(
    fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with WireCoordinator(nonce=b"") as coord:
        agent, session = await serve(start_agent, coord, fake, tmp_path)
        assert session.signature_ok and session.auth is not None
        signature = base64.b64decode(session.auth["signature"])
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(agent.public_key_b64 or ""))
        key.verify(signature, b"")  # the signature of the empty message
        await probe(session)
        assert len(coord.sessions) == 1


async def test_agent_version_on_the_wire_is_the_protocol_version(
    wire: WireCoordinator, fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    from usepod_desktop import __version__

    _, session = await serve(start_agent, wire, fake, tmp_path)
    assert session.auth is not None and session.auth["agent_version"] == "0.3.3"
    [caps] = session.of_type("capabilities")
    assert caps["metadata"]["agent_version"] == "0.3.3"
    assert caps["metadata"]["client"] == f"usepod-desktop/{__version__}"  # the app's own


@pytest.mark.parametrize("close_at", ["auth_ok", "capabilities"])
async def test_a_close_after_auth_ok_is_post_auth_no_escalation(
    fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path, close_at: Any
) -> None:
    backoff = Backoff(initial=0.05, maximum=5.0)
    async with WireCoordinator(close_at=close_at) as coord:
        await serve(start_agent, coord, fake, tmp_path, backoff=backoff)
        await coord.session(6, timeout=20)
        times = coord.connect_times[:6]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # escalating, the five gaps would be about 0.05, 0.1, 0.2, 0.4, 0.8 s (1.55 s in all)
    assert backoff.current == pytest.approx(0.1)  # reset to 0.05 each time, doubled once
    assert max(gaps) < 0.5, gaps


async def test_quick_reconnects_reuse_the_discovery_result(
    fake: FakeBackend, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with WireCoordinator(close_at="capabilities") as coord:
        await serve(start_agent, coord, fake, tmp_path)
        sixth = await coord.session(6, timeout=20)
        await sixth.closed.wait()
    # every session got the full capabilities ...
    for session in coord.sessions[:6]:
        [caps] = session.of_type("capabilities")
        assert [m["model_id"] for m in caps["models"]] == ["m"]
    # ... from one discovery pass, not one per reconnect
    model_lists = [r for r in fake.requests if r.method == "GET" and r.path == "/v1/models"]
    assert len(model_lists) == 1, [r.path for r in fake.requests]


# ------------------------------------------------------------------------------ heartbeat


async def test_admission_refusals_stay_out_of_the_heartbeat_error_rate(
    wire: WireCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> None:
    async with FakeBackend("vllm", ["m"], fail_mode=FailMode.HANG_MID_STREAM) as fake:
        agent, session = await serve(
            start_agent, wire, fake, tmp_path, max_concurrent=1, heartbeat_interval=0.2
        )
        busy = str(uuid.uuid4())
        await session.send(job(busy))
        await session.wait_for(lambda: session.for_job(busy))
        refused = [str(uuid.uuid4()) for _ in range(4)]
        await session.send(*(job(i) for i in refused[:3]), job(refused[3], model_id="nope"))
        codes = [(await session.terminal(i))["error_code"] for i in refused]
        assert codes == ["out_of_capacity"] * 3 + ["model_not_loaded"]
        await session.send({"type": "job_cancel", "job_id": busy})
        fake.fail_mode = FailMode.NONE
        await probe(session)  # one success
        seen = len(session.of_type("heartbeat"))
        heartbeat = (await session.wait_for(lambda: session.of_type("heartbeat")[seen:]))[0]
    assert heartbeat["error_rate_60s"] == 0.0
    assert heartbeat["last_error_code"] is None and heartbeat["last_error_at"] is None
    totals = agent.snapshot().totals
    assert totals.refused == 4 and totals.errors == 0
