"""Property tests of the LIVE session: the sandbox coordinator sends thousands of random and
mutated frames to a connected agent over the real WebSocket.

Properties, checked after every example:
- the agent never crashes and never drops the session: the same connection stays open, no
  reconnect happens, and a normal job dispatched after the batch is served;
- the agent sends nothing for a job id the coordinator never dispatched as a valid job
  (`stray_frames == 0`);
- every `job` frame that carries a usable job id (by an oracle written here from
  docs/protocol.md, "Tolerance", independently of the agent's parser) gets exactly one
  terminal frame, under the canonical form of its id, and nothing after it.

Frames: mutations of valid `job`, `job_cancel` and auth frames (keys dropped, values replaced
by random JSON, unknown keys added, `type` changed, then optionally the JSON text cut or
edited character by character), random JSON values, random text, random binary frames and
unknown frame types. Job ids are fresh UUIDs filled in at send time, so no two frames share one
and no mutation can hit a job dispatched earlier.

Examples are derandomised (the same ones every run, so CI is reproducible) and bounded: about
5,000 frames in well under 30 s.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import AgentFactory, make_config
from usepod_desktop.core import protocol
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.sandbox.coordinator import JobHandle, ProviderSession, SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

JOB_ID = "@@JOB@@"  # replaced by a fresh uuid4 at send time
JOB_ID_UPPER = "@@JOBU@@"  # replaced by a fresh uuid4 in upper case (still a valid id)
JOB_ID_SIMPLE = "@@JOBS@@"  # a fresh uuid4 as 32 hex digits (valid)
JOB_ID_BRACED = "@@JOBB@@"  # a fresh uuid4 as {hyphenated} (valid)
JOB_ID_URN = "@@JOBN@@"  # a fresh uuid4 as urn:uuid:hyphenated (valid)
JOB_ID_FORMS = [JOB_ID, JOB_ID_UPPER, JOB_ID_SIMPLE, JOB_ID_BRACED, JOB_ID_URN]
SERVED = "m"
CHAT = {"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3}
TERMINAL_WAIT_S = 10.0

FUZZ_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    # One live session on purpose: every example goes to the same connected agent.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ------------------------------------------------------------------------------ the oracle

_HYPHENATED = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_SIMPLE = re.compile(r"[0-9a-fA-F]{32}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def canonical_id(value: object) -> str | None:
    """The canonical id of a job_id in a form the reference's parser takes (hyphenated,
    32-hex simple, {braced hyphenated}, urn:uuid:hyphenated; any case), else None."""
    if not isinstance(value, str):
        return None
    text = value
    if text[:9].lower() == "urn:uuid:":
        text = text[9:]
    elif text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    elif _SIMPLE.fullmatch(text):
        return str(uuid.UUID(hex=text))
    if not _HYPHENATED.fullmatch(text):
        return None
    return str(uuid.UUID(text))


def expected_job(frame: str | bytes) -> dict[str, Any] | None:
    """The job frame's object, its `job_id` replaced by the canonical form, when `frame` is a
    `job` frame the agent must answer (docs/protocol.md, "Tolerance": a JSON text frame with
    `type` "job" and a `job_id` in a UUID form; any other field may be anything: an
    unservable job still gets its `job_error`), else None."""
    if isinstance(frame, bytes):
        return None
    try:
        obj = json.loads(frame, parse_float=_finite, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("type") != "job":
        return None
    job_id = canonical_id(obj.get("job_id"))
    if job_id is None:
        return None
    return {**obj, "job_id": job_id}


# ------------------------------------------------------------------------------ strategies

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)

job_frames = st.fixed_dictionaries(
    {
        "type": st.just("job"),
        "job_id": st.sampled_from(JOB_ID_FORMS),
        "model_id": st.sampled_from([SERVED, SERVED, "not-served-here"]),
        "request": st.fixed_dictionaries(
            {"messages": st.just([{"role": "user", "content": "hi there"}])},
            optional={
                "max_tokens": st.integers(min_value=0, max_value=6),
                "temperature": st.floats(min_value=0, max_value=2),
                "stream": st.booleans(),
                "stream_options": json_values,
                "model": json_values,
                "extra": json_values,
            },
        ),
    },
    optional={
        "format": st.sampled_from(["openai", "anthropic", None]),
        "deadline_ms": st.one_of(st.none(), st.integers(min_value=1, max_value=60_000)),
    },
)
cancel_frames = st.fixed_dictionaries(
    {"type": st.just("job_cancel"), "job_id": st.sampled_from(JOB_ID_FORMS)}
)
auth_frames = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("auth_challenge"),
            "nonce": st.binary(min_size=1, max_size=32).map(lambda b: base64.b64encode(b).decode()),
        }
    ),
    st.fixed_dictionaries({"type": st.just("auth_ok"), "provider_id": json_values}),
    st.fixed_dictionaries({"type": st.just("auth_failed"), "reason": json_values}),
)
unknown_type_frames = st.dictionaries(st.text(max_size=8), json_values, max_size=3).flatmap(
    lambda extra: st.text(max_size=12).map(lambda t: {**extra, "type": t})
)

# Structural mutations: (op, index, value). The index picks a key modulo the key count.
structural_ops = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 10), st.none()),
    st.tuples(st.just("set"), st.integers(0, 10), json_values),
    st.tuples(st.just("add"), st.integers(0, 10), st.tuples(st.text(max_size=8), json_values)),
    st.tuples(
        st.just("type"),
        st.integers(0, 0),
        st.sampled_from(["Job", "JOB", "job ", "jobs", "", "job_chunk", "job_done", "heartbeat"]),
    ),
    st.tuples(st.just("wrap"), st.integers(0, 0), st.sampled_from(["list", "string"])),
)
# Text mutations on the serialised frame: (op, position fraction, character). A text frame is
# UTF-8 on the wire, so a lone surrogate cannot be sent as text at all (the coordinator's own
# send would fail): invalid bytes reach the agent through the "binary" and raw-bytes frames.
text_chars = st.characters(exclude_categories=("Cs",))
text_ops = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just("")),
    st.tuples(st.just("insert"), st.floats(0, 1), text_chars),
    st.tuples(st.just("delete"), st.floats(0, 1), st.just("")),
    st.tuples(st.just("replace"), st.floats(0, 1), text_chars),
    st.tuples(st.just("binary"), st.just(0.0), st.just("")),
)


@dataclass(frozen=True)
class FrameSpec:
    """A frame to send: its base object (or raw payload) and the mutations to apply."""

    base: Any
    structural: tuple[tuple[str, int, Any], ...] = ()
    text: tuple[str, float, str] | None = None
    raw: str | bytes | None = None


mutated = st.builds(
    FrameSpec,
    base=st.one_of(job_frames, job_frames, cancel_frames, auth_frames, unknown_type_frames),
    structural=st.lists(structural_ops, max_size=3).map(tuple),
    text=st.none() | text_ops,
)
intact = st.builds(FrameSpec, base=st.one_of(job_frames, cancel_frames, auth_frames))
intact_jobs = st.builds(FrameSpec, base=job_frames)
garbage = st.one_of(
    st.builds(FrameSpec, base=json_values),  # any JSON value: lists, numbers, objects ...
    st.builds(FrameSpec, base=st.none(), raw=st.text(max_size=64)),
    st.builds(FrameSpec, base=st.none(), raw=st.binary(max_size=64)),
    st.builds(FrameSpec, base=unknown_type_frames),
)
batches = st.lists(
    st.one_of(mutated, mutated, intact_jobs, intact, garbage), min_size=4, max_size=24
)
garbage_batches = st.lists(st.one_of(garbage, mutated), min_size=20, max_size=60)


def _apply_structural(obj: Any, op: tuple[str, int, Any]) -> Any:
    name, index, value = op
    if name == "wrap":
        return [obj] if value == "list" else json.dumps(obj)
    if not isinstance(obj, dict):
        return obj
    obj = dict(obj)
    keys = list(obj)
    if name == "drop" and keys:
        del obj[keys[index % len(keys)]]
    elif name == "set" and keys:
        obj[keys[index % len(keys)]] = value
    elif name == "add":
        key, extra = value
        obj.setdefault(key, extra)
    elif name == "type":
        obj["type"] = value
    return obj


def _apply_text(text: str, op: tuple[str, float, str]) -> str | bytes:
    name, where, char = op
    pos = min(int(where * len(text)), len(text))
    if name == "truncate":
        return text[:pos]
    if name == "insert":
        return text[:pos] + char + text[pos:]
    if name == "delete":
        return text[:pos] + text[pos + 1 :]
    if name == "replace":
        return text[:pos] + char + text[pos + 1 :]
    return text.encode("utf-8", errors="surrogatepass")  # "binary": the same bytes, binary frame


def render(spec: FrameSpec) -> str | bytes:
    """The frame on the wire, with fresh job ids filled in."""
    if spec.raw is not None:
        return spec.raw
    obj: Any = spec.base
    for op in spec.structural:
        obj = _apply_structural(obj, op)
    text = json.dumps(obj)
    out: str | bytes = text if spec.text is None else _apply_text(text, spec.text)
    if isinstance(out, bytes):
        return out
    out = out.replace(JOB_ID_UPPER, str(uuid.uuid4()).upper())
    out = out.replace(JOB_ID_SIMPLE, uuid.uuid4().hex)
    out = out.replace(JOB_ID_BRACED, "{" + str(uuid.uuid4()) + "}")
    out = out.replace(JOB_ID_URN, "urn:uuid:" + str(uuid.uuid4()))
    return out.replace(JOB_ID, str(uuid.uuid4()))


# ------------------------------------------------------------------------------ the live session


@dataclass
class Live:
    coordinator: SandboxCoordinator
    session: ProviderSession
    frames_sent: int = 0
    valid_jobs: int = 0
    examples: int = 0
    terminals: dict[str, int] = field(default_factory=dict)


@pytest.fixture
async def live(
    coordinator: SandboxCoordinator, start_agent: AgentFactory, tmp_path: Path
) -> AsyncIterator[Live]:
    async with FakeBackend("vllm", [SERVED], output_tokens=3) as fake:
        await start_agent(
            make_config(
                coordinator.url,
                [BackendConfig(kind="vllm", url=fake.url)],
                tmp_path,
                max_concurrent=8,
            )
        )
        session = await coordinator.wait_for_provider(10)
        await coordinator.wait_for_capabilities(10, provider=session)
        state = Live(coordinator, session)
        yield state
        print(
            f"\n{state.examples} examples, {state.frames_sent} fuzzed frames, "
            f"{state.valid_jobs} of them valid jobs, terminals {state.terminals}, "
            f"stray frames {coordinator.stray_frames}, sessions {len(coordinator.sessions)}"
        )
        assert coordinator.stray_frames == 0
        assert len(coordinator.sessions) == 1 and session.connected


async def send_and_check(live: Live, specs: list[FrameSpec]) -> None:
    coord, session = live.coordinator, live.session
    expected: list[JobHandle] = []
    for spec in specs:
        frame = render(spec)
        job = expected_job(frame)
        if job is not None:  # registered first, so its frames are accounted for
            handle = JobHandle(
                job["job_id"],
                str(job.get("model_id")),
                job.get("request") if isinstance(job.get("request"), dict) else {},
                "openai",
                protocol.DEFAULT_DEADLINE_MS,
                session,
            )
            coord.jobs[handle.job_id] = handle
            expected.append(handle)
        await coord.send_raw(frame, provider=session)
        live.frames_sent += 1
    for handle in expected:
        terminal = await handle.wait(TERMINAL_WAIT_S)  # exactly one (late ones are recorded)
        live.terminals[type(terminal).__name__] = live.terminals.get(type(terminal).__name__, 0) + 1
    # the session still works: a normal job after the batch is served on the same connection
    # (sent once the batch's own jobs have ended: while up to max_concurrent of them still run,
    # a refusal for capacity would be the right answer)
    probe = await coord.dispatch(SERVED, CHAT, provider=session)
    assert isinstance(await probe.wait(TERMINAL_WAIT_S), protocol.JobDone)
    live.valid_jobs += len(expected)
    live.examples += 1
    for handle in [*expected, probe]:
        assert handle.late_frames == [], handle
        coord.forget(handle.job_id)  # a later frame for it would now count as stray
    assert coord.stray_frames == 0, list(coord.stray_job_ids)
    assert session.connected and len(coord.sessions) == 1
    assert coord.providers.get(session.provider_id or "") is session


@FUZZ_SETTINGS
@given(specs=batches)
async def test_mutated_and_random_frames_never_break_the_session(
    live: Live, specs: list[FrameSpec]
) -> None:
    await send_and_check(live, specs)


@settings(FUZZ_SETTINGS, max_examples=100)
@given(specs=garbage_batches)
async def test_floods_of_garbage_never_break_the_session(
    live: Live, specs: list[FrameSpec]
) -> None:
    await send_and_check(live, specs)


def test_the_oracle_agrees_with_the_protocol_examples() -> None:
    """The oracle itself, on hand-written frames (a wrong oracle would make the fuzz vacuous)."""
    job_id = str(uuid.uuid4())
    good = {"type": "job", "job_id": job_id, "model_id": "m", "request": {}}
    for form in (
        job_id,
        job_id.upper(),
        job_id.replace("-", ""),
        "{" + job_id + "}",
        "urn:uuid:" + job_id,
        "URN:UUID:" + job_id.upper(),
    ):
        found = expected_job(json.dumps({**good, "job_id": form}))
        assert found is not None and found["job_id"] == job_id, form
    # answered although unservable or odd: a usable id is enough
    for odd in (
        {**good, "model_id": ""},
        {**good, "model_id": 5},
        {**good, "request": []},
        {**good, "format": "gemini"},
        {**good, "deadline_ms": 0},
        {**good, "deadline_ms": "soon"},
        {k: v for k, v in good.items() if k != "request"},
    ):
        assert expected_job(json.dumps(odd)) is not None, odd
    for bad in (
        {**good, "job_id": "not-a-uuid"},
        {**good, "job_id": "{" + job_id.replace("-", "") + "}"},
        {**good, "job_id": job_id + "0"},
        {**good, "job_id": 5},
        {**good, "type": "Job"},
        {k: v for k, v in good.items() if k != "job_id"},
    ):
        assert expected_job(json.dumps(bad)) is None, bad
    assert expected_job(json.dumps(good).encode()) is None  # binary frame
    assert expected_job(json.dumps(good)[:-1]) is None
    nan = json.dumps(good).replace('"request": {}', '"request": {"x": NaN}')
    assert "NaN" in nan and expected_job(nan) is None
    # and the agent's own parser agrees on these (the oracle is not the parser under test)
    assert isinstance(protocol.parse_inbound(json.dumps(good)), protocol.Job)
    with pytest.raises(protocol.FrameError) as err:
        protocol.parse_inbound(json.dumps({**good, "model_id": ""}))
    assert err.value.job_id == job_id
