"""Wire frames of docs/protocol.md: builders, parsers, malformed input, fuzzing."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usepod_desktop.core import protocol as p
from usepod_desktop.core.protocol import (
    AuthChallenge,
    AuthFailed,
    AuthOk,
    AuthResponse,
    Capabilities,
    ErrorCode,
    FrameError,
    Heartbeat,
    HeartbeatFigures,
    Job,
    JobCancel,
    JobChunk,
    JobDone,
    JobError,
    UnknownFrame,
)

JOB_ID = "3f2b8c1e-5d4a-4e6f-9a7b-0c1d2e3f4a5b"
PUBKEY = bytes(range(32))
SIGNATURE = bytes(range(64))
PUBKEY_B64 = base64.b64encode(PUBKEY).decode()
SIGNATURE_B64 = base64.b64encode(SIGNATURE).decode()
MODEL = {
    "model_id": "llama-3",
    "input_per_1m": 500_000,
    "output_per_1m": 750_000,
    "max_concurrent": 8,
    "backend": "vllm",
    "context_window": 8192,
}


def loads(text: str) -> Any:
    return json.loads(text)


def frame_error(parse: Any, raw: Any) -> FrameError:
    with pytest.raises(FrameError) as info:
        parse(raw)
    return info.value


# --------------------------------------------------------------------------- basics


def test_frame_error_is_value_error_with_attributes() -> None:
    err = FrameError("job frame: x", "job", JOB_ID)
    assert isinstance(err, ValueError)
    assert (err.frame_type, err.job_id, str(err)) == ("job", JOB_ID, "job frame: x")
    assert FrameError("frame: y").frame_type is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (JOB_ID, True),
        (JOB_ID.upper(), True),
        ("00000000-0000-0000-0000-000000000000", True),
        ("abc", False),
        ("", False),
        (JOB_ID.replace("-", ""), False),
        ("{" + JOB_ID + "}", False),
        ("urn:uuid:" + JOB_ID, False),
        (JOB_ID + "\n", False),
        (" " + JOB_ID, False),
        (JOB_ID[:-1] + "g", False),
        (JOB_ID + "0", False),
        (123, False),
        (None, False),
    ],
)
def test_is_uuid(value: Any, expected: bool) -> None:
    assert p.is_uuid(value) is expected


def test_error_codes() -> None:
    assert {c.value for c in ErrorCode} == {
        "backend_unreachable",
        "backend_timeout",
        "model_not_loaded",
        "auth_rejected_by_backend",
        "internal",
        "out_of_capacity",
        "rate_limited",
        "invalid_request",
    }
    assert ErrorCode.OUT_OF_CAPACITY == "out_of_capacity"
    assert str(ErrorCode.BACKEND_TIMEOUT) == "backend_timeout"


def test_constants() -> None:
    assert p.MAX_FRAME_BYTES == 16 * 1024 * 1024
    assert p.DEFAULT_DEADLINE_MS == 60_000
    assert p.MAX_DEADLINE_MS == 3_600_000


def test_modules_do_not_import_qt() -> None:
    code = (
        "import sys\n"
        "import usepod_desktop.core.protocol, usepod_desktop.core.stats,"
        " usepod_desktop.core.backoff\n"
        "bad = [m for m in sys.modules if m.startswith(('PySide6', 'qasync', 'PyQt'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- agent builders


def test_auth_response_without_enrollment_code() -> None:
    assert loads(p.auth_response(PUBKEY_B64, SIGNATURE_B64, "0.3.2")) == {
        "type": "auth_response",
        "pubkey": PUBKEY_B64,
        "signature": SIGNATURE_B64,
        "agent_version": "0.3.2",
    }
    assert "enrollment_code" not in loads(p.auth_response("a", "b", "v", ""))


def test_auth_response_with_enrollment_code() -> None:
    assert loads(p.auth_response("pk", "sig", "0.3.2", "POD-ENROLL-1")) == {
        "type": "auth_response",
        "pubkey": "pk",
        "signature": "sig",
        "agent_version": "0.3.2",
        "enrollment_code": "POD-ENROLL-1",
    }


def test_capabilities_builder() -> None:
    no_ctx = {k: v for k, v in MODEL.items() if k != "context_window"} | {"model_id": "b"}
    text = p.capabilities([MODEL, no_ctx], 8, 200_000, {"agent_version": "0.3.2"})
    assert loads(text) == {
        "type": "capabilities",
        "models": [MODEL, no_ctx],
        "limits": {"max_concurrent_total": 8, "max_tokens_per_minute": 200_000},
        "metadata": {"agent_version": "0.3.2"},
    }


def test_capabilities_builder_empty_models_and_no_token_limit() -> None:
    assert loads(p.capabilities([], 4, None, {"agent_version": "x"})) == {
        "type": "capabilities",
        "models": [],
        "limits": {"max_concurrent_total": 4, "max_tokens_per_minute": None},
        "metadata": {"agent_version": "x"},
    }


def test_heartbeat_builder_zeros_matches_reference() -> None:
    assert loads(p.heartbeat(HeartbeatFigures())) == {
        "type": "heartbeat",
        "queue_depth": 0,
        "tokens_per_sec_p50": 0.0,
        "p50_latency_ms": 0,
        "p95_latency_ms": 0,
        "error_rate_60s": 0.0,
        "last_error_at": None,
        "last_error_code": None,
    }


def test_heartbeat_builder_with_figures() -> None:
    at = datetime(2026, 5, 2, 10, 11, 12, 123456, tzinfo=UTC)
    fig = HeartbeatFigures(3, 42.5, 120, 480, 0.25, at, ErrorCode.BACKEND_TIMEOUT)
    assert loads(p.heartbeat(fig)) == {
        "type": "heartbeat",
        "queue_depth": 3,
        "tokens_per_sec_p50": 42.5,
        "p50_latency_ms": 120,
        "p95_latency_ms": 480,
        "error_rate_60s": 0.25,
        "last_error_at": "2026-05-02T10:11:12.123Z",
        "last_error_code": "backend_timeout",
    }
    assert isinstance(loads(p.heartbeat(fig))["tokens_per_sec_p50"], float)


def test_heartbeat_builder_converts_offsets_and_naive_times_to_utc() -> None:
    plus2 = datetime(2026, 5, 2, 12, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    naive = datetime(2026, 5, 2, 10, 0, 0)
    for at in (plus2, naive):
        sent = loads(p.heartbeat(HeartbeatFigures(last_error_at=at)))["last_error_at"]
        assert sent == "2026-05-02T10:00:00.000Z"


def test_heartbeat_builder_sanitizes_figures() -> None:
    fig = HeartbeatFigures(-1, float("nan"), 2**40, -5, 7.0)
    sent = loads(p.heartbeat(fig))
    assert sent["queue_depth"] == 0
    assert sent["tokens_per_sec_p50"] == 0.0
    assert sent["p50_latency_ms"] == p.U32_MAX
    assert sent["p95_latency_ms"] == 0
    assert sent["error_rate_60s"] == 1.0
    assert loads(p.heartbeat(HeartbeatFigures(tokens_per_sec_p50=float("inf"))))[
        "tokens_per_sec_p50"
    ] == (0.0)


def test_job_chunk_builder_exact_text() -> None:
    text = p.job_chunk(JOB_ID, b"data: {}\n\n")
    assert text == ('{"type":"job_chunk","job_id":"' + JOB_ID + '","data":"ZGF0YToge30KCg=="}')
    assert loads(text) == {"type": "job_chunk", "job_id": JOB_ID, "data": "ZGF0YToge30KCg=="}
    assert loads(p.job_chunk(JOB_ID, b""))["data"] == ""


def test_job_done_builder() -> None:
    assert loads(p.job_done(JOB_ID, 12, 34, 567)) == {
        "type": "job_done",
        "job_id": JOB_ID,
        "tokens": {"input": 12, "output": 34, "input_tokens": 12, "output_tokens": 34},
        "duration_ms": 567,
    }


def test_job_done_builder_missing_counts_are_zero() -> None:
    assert loads(p.job_done(JOB_ID, None, None, 5))["tokens"] == {
        "input": 0,
        "output": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }


def test_job_error_builder() -> None:
    text = p.job_error(JOB_ID, ErrorCode.OUT_OF_CAPACITY, "agent at max_concurrent", 0)
    assert loads(text) == {
        "type": "job_error",
        "job_id": JOB_ID,
        "error_code": "out_of_capacity",
        "message": "agent at max_concurrent",
        "tokens_emitted": 0,
    }
    assert loads(p.job_error(JOB_ID, "custom", 'say "hi"\n', 9))["message"] == 'say "hi"\n'


def test_job_error_builder_cuts_long_messages() -> None:
    sent = loads(p.job_error(JOB_ID, "internal", "x" * 100_000, 1))["message"]
    assert len(sent) == p.MAX_ERROR_MESSAGE_CHARS
    assert sent.endswith("...")
    short = "y" * p.MAX_ERROR_MESSAGE_CHARS
    assert loads(p.job_error(JOB_ID, "internal", short, 1))["message"] == short


# --------------------------------------------------------------------------- coordinator builders


def test_auth_challenge_builder() -> None:
    assert loads(p.auth_challenge(b"\x00\x01nonce")) == {
        "type": "auth_challenge",
        "nonce": base64.b64encode(b"\x00\x01nonce").decode(),
    }


def test_auth_ok_builder() -> None:
    assert loads(p.auth_ok("prov-1")) == {"type": "auth_ok", "provider_id": "prov-1"}
    assert loads(p.auth_ok(None)) == {"type": "auth_ok"}


def test_auth_failed_builder() -> None:
    assert loads(p.auth_failed("bad signature")) == {
        "type": "auth_failed",
        "reason": "bad signature",
    }


def test_job_builder() -> None:
    req = {"messages": [{"role": "user", "content": "hi"}]}
    assert loads(p.job(JOB_ID, "m", req)) == {
        "type": "job",
        "job_id": JOB_ID,
        "model_id": "m",
        "request": req,
        "format": "openai",
        "deadline_ms": 60_000,
    }
    assert loads(p.job(JOB_ID, "m", req, "anthropic", 5))["format"] == "anthropic"
    assert loads(p.job(JOB_ID, "m", req, "anthropic", 5))["deadline_ms"] == 5


def test_job_cancel_builder() -> None:
    assert loads(p.job_cancel(JOB_ID)) == {"type": "job_cancel", "job_id": JOB_ID}


# --------------------------------------------------------------------------- round trips


def test_round_trip_inbound() -> None:
    req = {"model": "x", "messages": [], "temperature": 0.5}
    assert p.parse_inbound(p.auth_challenge(b"n" * 32)) == AuthChallenge(b"n" * 32)
    assert p.parse_inbound(p.auth_ok("prov")) == AuthOk("prov")
    assert p.parse_inbound(p.auth_ok(None)) == AuthOk(None)
    assert p.parse_inbound(p.auth_failed("nope")) == AuthFailed("nope")
    assert p.parse_inbound(p.job(JOB_ID, "m", req, "anthropic", 1234)) == Job(
        JOB_ID, "m", req, "anthropic", 1234
    )
    assert p.parse_inbound(p.job(JOB_ID, "m", req)) == Job(JOB_ID, "m", req, "openai", 60_000)
    assert p.parse_inbound(p.job_cancel(JOB_ID)) == JobCancel(JOB_ID)


def test_round_trip_outbound() -> None:
    assert p.parse_outbound(p.auth_response(PUBKEY_B64, SIGNATURE_B64, "0.3.2")) == (
        AuthResponse(PUBKEY, SIGNATURE, "0.3.2", None)
    )
    assert p.parse_outbound(p.auth_response(PUBKEY_B64, SIGNATURE_B64, "v", "CODE")) == (
        AuthResponse(PUBKEY, SIGNATURE, "v", "CODE")
    )
    no_ctx = {k: v for k, v in MODEL.items() if k != "context_window"}
    caps = p.parse_outbound(p.capabilities([MODEL, no_ctx], 8, None, {"agent_version": "v"}))
    assert caps == Capabilities(
        [MODEL, no_ctx],
        {"max_concurrent_total": 8, "max_tokens_per_minute": None},
        {"agent_version": "v"},
    )
    at = datetime(2026, 5, 2, 10, 11, 12, 123000, tzinfo=UTC)
    fig = HeartbeatFigures(2, 17.25, 90, 300, 0.5, at, "internal")
    assert p.parse_outbound(p.heartbeat(fig)) == Heartbeat(fig)
    assert p.parse_outbound(p.heartbeat(HeartbeatFigures())) == Heartbeat(HeartbeatFigures())
    assert p.parse_outbound(p.job_chunk(JOB_ID, b"\xff\x00abc")) == JobChunk(JOB_ID, b"\xff\x00abc")
    assert p.parse_outbound(p.job_done(JOB_ID, 1, 2, 3)) == JobDone(JOB_ID, 1, 2, 3)
    assert p.parse_outbound(p.job_error(JOB_ID, "internal", "boom", 7)) == JobError(
        JOB_ID, "internal", "boom", 7
    )


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=4096), job_id=st.uuids().map(str))
def test_job_chunk_round_trip_property(data: bytes, job_id: str) -> None:
    assert p.parse_outbound(p.job_chunk(job_id, data)) == JobChunk(job_id, data)


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    job_id=st.uuids().map(str).flatmap(lambda u: st.sampled_from([u, u.upper()])),
    model_id=st.text(min_size=1, max_size=40),
    request=JSON_OBJECTS,
    fmt=st.sampled_from(["openai", "anthropic"]),
    deadline=st.integers(1, p.MAX_DEADLINE_MS),
)
def test_job_round_trip_property(
    job_id: str, model_id: str, request: dict[str, Any], fmt: Any, deadline: int
) -> None:
    assert p.parse_inbound(p.job(job_id, model_id, request, fmt, deadline)) == Job(
        job_id.lower(), model_id, request, fmt, deadline
    )


@settings(max_examples=200, deadline=None)
@given(
    job_id=st.uuids().map(str),
    i=st.integers(0, p.U64_MAX),
    o=st.integers(0, p.U64_MAX),
    d=st.integers(0, p.U64_MAX),
    code=st.text(min_size=1, max_size=30),
    message=st.text(max_size=200),
)
def test_terminal_frames_round_trip_property(
    job_id: str, i: int, o: int, d: int, code: str, message: str
) -> None:
    assert p.parse_outbound(p.job_done(job_id, i, o, d)) == JobDone(job_id, i, o, d)
    assert p.parse_outbound(p.job_error(job_id, code, message, d)) == JobError(
        job_id, code, message, d
    )


# --------------------------------------------------------------------------- parsing details


def job_frame(**changes: Any) -> str:
    frame: dict[str, Any] = {
        "type": "job",
        "job_id": JOB_ID,
        "model_id": "m",
        "request": {"messages": []},
        "format": "openai",
        "deadline_ms": 1000,
    }
    for key, value in changes.items():
        if value is ...:
            frame.pop(key, None)
        else:
            frame[key] = value
    return json.dumps(frame)


def test_job_defaults_when_format_and_deadline_absent_or_null() -> None:
    for frame in (job_frame(format=..., deadline_ms=...), job_frame(format=None, deadline_ms=None)):
        parsed = p.parse_inbound(frame)
        assert isinstance(parsed, Job)
        assert (parsed.format, parsed.deadline_ms) == ("openai", 60_000)


def test_job_canonicalises_job_id_and_ignores_extra_fields() -> None:
    upper = JOB_ID.upper()
    parsed = p.parse_inbound(job_frame(job_id=upper, extra={"x": 1}, format="anthropic"))
    assert parsed == Job(JOB_ID, "m", {"messages": []}, "anthropic", 1000)


SIMPLE = JOB_ID.replace("-", "")


@pytest.mark.parametrize(
    "form",
    [
        JOB_ID,
        JOB_ID.upper(),
        SIMPLE,
        SIMPLE.upper(),
        "{" + JOB_ID + "}",
        "{" + JOB_ID.upper() + "}",
        "urn:uuid:" + JOB_ID,
        "URN:UUID:" + JOB_ID.upper(),
    ],
)
def test_every_uuid_form_the_reference_takes_is_canonicalised(form: str) -> None:
    """The reference parses ids with Rust's `uuid` (hyphenated, simple, braced, urn); replies
    and job_cancel matching use the canonical lowercase hyphenated form."""
    assert p.canonical_uuid(form) == JOB_ID
    job = p.parse_inbound(job_frame(job_id=form))
    assert isinstance(job, Job) and job.job_id == JOB_ID
    assert p.parse_inbound(json.dumps({"type": "job_cancel", "job_id": form})) == JobCancel(JOB_ID)


@pytest.mark.parametrize(
    "form",
    [
        "abc",
        JOB_ID + "\n",
        JOB_ID[:-1],
        "{" + SIMPLE + "}",  # Rust's uuid takes braces around the hyphenated form only
        "urn:uuid:" + SIMPLE,
        SIMPLE[:-1] + "_",  # Python's uuid.UUID would take these
        "+" + SIMPLE[1:],
        JOB_ID.replace("-", "", 1) + "-",
        " " + JOB_ID,
        "x" * 500,
    ],
)
def test_non_uuid_forms_are_refused(form: str) -> None:
    assert p.canonical_uuid(form) is None
    assert frame_error(p.parse_inbound, job_frame(job_id=form)).job_id is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("anthropic", "anthropic"),
        ("Anthropic", "anthropic"),
        ("ANTHROPIC", "anthropic"),
        ("openai", "openai"),
        ("OpenAI", "openai"),
        ("xml", "openai"),
        ("", "openai"),
        (1, "openai"),
        (["anthropic"], "openai"),
        ({"a": 1}, "openai"),
        (True, "openai"),
    ],
)
def test_job_format_is_lenient_like_the_reference(value: Any, expected: str) -> None:
    job = p.parse_inbound(job_frame(format=value))
    assert isinstance(job, Job) and job.format == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1500.0, 1500),
        (1.5, 2),
        (0.2, 1),
        ("60000", 60_000),
        (" 2500 ", 2500),
        ("2.5e3", 2500),
        (0, p.DEFAULT_DEADLINE_MS),
        (-1, p.DEFAULT_DEADLINE_MS),
        (-0.0, p.DEFAULT_DEADLINE_MS),
        (-(10**30), p.DEFAULT_DEADLINE_MS),
        ("soon", p.DEFAULT_DEADLINE_MS),
        ("", p.DEFAULT_DEADLINE_MS),
        ("nan", p.DEFAULT_DEADLINE_MS),
        ("-5", p.DEFAULT_DEADLINE_MS),
        (True, p.DEFAULT_DEADLINE_MS),
        ([1000], p.DEFAULT_DEADLINE_MS),
        ({"ms": 1}, p.DEFAULT_DEADLINE_MS),
        (2**32, p.MAX_DEADLINE_MS),  # clamped to u32, then to the 1 h cap
        (10**30, p.MAX_DEADLINE_MS),
        (10**200, p.MAX_DEADLINE_MS),
        ("1e400", p.MAX_DEADLINE_MS),
        ("inf", p.MAX_DEADLINE_MS),
    ],
)
def test_job_deadline_is_read_leniently(value: Any, expected: int) -> None:
    job = p.parse_inbound(job_frame(deadline_ms=value))
    assert isinstance(job, Job) and job.deadline_ms == expected


def test_auth_challenge_with_empty_nonce_is_a_challenge() -> None:
    assert p.parse_inbound('{"type":"auth_challenge","nonce":""}') == AuthChallenge(b"")


@pytest.mark.parametrize("value", ["7", "[]", "{}", "true", "1.5"])
def test_auth_ok_provider_id_of_another_type_is_ignored(value: str) -> None:
    assert p.parse_inbound('{"type":"auth_ok","provider_id":' + value + "}") == AuthOk(None)


@pytest.mark.parametrize(
    ("deadline", "expected"),
    [(1, 1), (3_600_000, 3_600_000), (3_600_001, 3_600_000), (p.U32_MAX, 3_600_000)],
)
def test_job_deadline_is_capped(deadline: int, expected: int) -> None:
    parsed = p.parse_inbound(job_frame(deadline_ms=deadline))
    assert isinstance(parsed, Job)
    assert parsed.deadline_ms == expected


def test_auth_ok_provider_id_variants() -> None:
    assert p.parse_inbound('{"type":"auth_ok"}') == AuthOk(None)
    assert p.parse_inbound('{"type":"auth_ok","provider_id":null}') == AuthOk(None)
    assert p.parse_inbound('{"type":"auth_ok","provider_id":""}') == AuthOk(None)
    assert p.parse_inbound('{"type":"auth_ok","provider_id":"p-1"}') == AuthOk("p-1")


def test_auth_failed_without_reason() -> None:
    assert p.parse_inbound('{"type":"auth_failed"}') == AuthFailed("unknown")
    assert p.parse_inbound('{"type":"auth_failed","reason":null}') == AuthFailed("unknown")


def test_unknown_types_are_frames_not_errors() -> None:
    assert p.parse_inbound('{"type":"config_update","x":1}') == UnknownFrame("config_update")
    assert p.parse_inbound('{"type":""}') == UnknownFrame("")
    # each side treats the other side's frames as unknown
    assert p.parse_inbound(p.heartbeat(HeartbeatFigures())) == UnknownFrame("heartbeat")
    assert p.parse_outbound(p.job_cancel(JOB_ID)) == UnknownFrame("job_cancel")
    assert p.parse_outbound('{"type":"ping"}') == UnknownFrame("ping")


def test_job_done_accepts_reference_tokens_shape() -> None:
    legacy = {"type": "job_done", "job_id": JOB_ID, "tokens": {"input": 4, "output": 5}}
    assert p.parse_outbound(json.dumps(legacy | {"duration_ms": 6})) == JobDone(JOB_ID, 4, 5, 6)
    long_only = {"input_tokens": 7, "output_tokens": 8}
    frame = legacy | {"tokens": long_only, "duration_ms": 1}
    assert p.parse_outbound(json.dumps(frame)) == JobDone(JOB_ID, 7, 8, 1)
    assert p.parse_outbound(json.dumps(legacy | {"tokens": {}, "duration_ms": 1})) == JobDone(
        JOB_ID, 0, 0, 1
    )


def test_heartbeat_parses_rfc3339_variants() -> None:
    base = json.loads(p.heartbeat(HeartbeatFigures()))
    for text in ("2026-05-02T10:11:12Z", "2026-05-02T12:11:12+02:00"):
        parsed = p.parse_outbound(json.dumps(base | {"last_error_at": text}))
        assert isinstance(parsed, Heartbeat)
        assert parsed.figures.last_error_at == datetime(2026, 5, 2, 10, 11, 12, tzinfo=UTC)
    parsed = p.parse_outbound(json.dumps(base | {"tokens_per_sec_p50": 3}))
    assert isinstance(parsed, Heartbeat)
    assert parsed.figures.tokens_per_sec_p50 == 3.0


# --------------------------------------------------------------------------- malformed: general


GENERAL_BAD: list[tuple[Any, str]] = [
    (b'{"type":"job"}', "binary frame: expected a JSON text frame"),
    (bytearray(b"{}"), "binary frame: expected a JSON text frame"),
    (memoryview(b"{}"), "binary frame: expected a JSON text frame"),
    ("", "invalid JSON frame: Expecting value at char 0"),
    ("not json", "invalid JSON frame: Expecting value at char 0"),
    ('{"type":"job"', "invalid JSON frame:"),
    ('{"type":"job"} trailing', "invalid JSON frame: Extra data"),
    ("[]", "frame: expected a JSON object, got array"),
    ('"job"', "frame: expected a JSON object, got string"),
    ("42", "frame: expected a JSON object, got integer"),
    ("null", "frame: expected a JSON object, got null"),
    ("{}", "frame: missing 'type'"),
    ('{"job_id":"x"}', "frame: missing 'type'"),
    ('{"type":1}', "frame: 'type' must be a string, got integer"),
    ('{"type":null}', "frame: 'type' must be a string, got null"),
    ('{"type":["job"]}', "frame: 'type' must be a string, got array"),
    ('{"type":"job","x":NaN}', "invalid JSON frame: non-standard constant NaN"),
    ('{"type":"job","x":-Infinity}', "invalid JSON frame: non-standard constant -Infinity"),
    ('{"type":"job","x":1e999}', "invalid JSON frame: number 1e999 is out of range"),
    ("[" * 200_000 + "]" * 200_000, "invalid JSON frame: nested too deeply"),
    ('{"type":"job","x":' + "9" * 5000 + "}", "invalid JSON frame:"),
    (None, "frame: expected a text frame, got NoneType"),
    (123, "frame: expected a text frame, got int"),
]


@pytest.mark.parametrize("parse", [p.parse_inbound, p.parse_outbound])
@pytest.mark.parametrize(("raw", "message"), GENERAL_BAD)
def test_general_malformed_frames(parse: Any, raw: Any, message: str) -> None:
    err = frame_error(parse, raw)
    assert str(err).startswith(message)
    assert "\n" not in str(err)
    assert err.frame_type is None


@pytest.mark.parametrize("parse", [p.parse_inbound, p.parse_outbound])
def test_oversized_frame(parse: Any) -> None:
    raw = '{"type":"x","pad":"' + "a" * p.MAX_FRAME_BYTES + '"}'
    err = frame_error(parse, raw)
    assert str(err) == f"frame: too large (more than {p.MAX_FRAME_BYTES} bytes)"


# --------------------------------------------------------------------------- malformed: inbound

INBOUND_BAD: list[tuple[str, str, str]] = [
    ('{"type":"auth_challenge"}', "auth_challenge", "missing 'nonce'"),
    (
        '{"type":"auth_challenge","nonce":5}',
        "auth_challenge",
        "nonce must be a string, got integer",
    ),
    ('{"type":"auth_challenge","nonce":"!!!!"}', "auth_challenge", "nonce is not valid base64"),
    ('{"type":"auth_challenge","nonce":"abc"}', "auth_challenge", "nonce is not valid base64"),
    ('{"type":"auth_challenge","nonce":"ñññ="}', "auth_challenge", "nonce is not valid base64"),
    ('{"type":"auth_failed","reason":[]}', "auth_failed", "reason must be a string, got array"),
    (job_frame(job_id=...), "job", "missing 'job_id'"),
    (job_frame(job_id="abc"), "job", "job_id 'abc' is not a UUID"),
    (job_frame(job_id=12), "job", "job_id must be a string, got integer"),
    (job_frame(job_id=None), "job", "job_id must be a string, got null"),
    (job_frame(job_id=JOB_ID + "\n"), "job", "job_id '" + JOB_ID + "\\n' is not a UUID"),
    (job_frame(job_id="x" * 500), "job", "job_id 'xxxxxxxx"),
    (job_frame(model_id=...), "job", "missing 'model_id'"),
    (job_frame(model_id=""), "job", "model_id must not be empty"),
    (job_frame(model_id=None), "job", "model_id must be a string, got null"),
    (job_frame(model_id=["m"]), "job", "model_id must be a string, got array"),
    (job_frame(request=...), "job", "missing 'request'"),
    (job_frame(request="{}"), "job", "request must be an object, got string"),
    (job_frame(request=[1]), "job", "request must be an object, got array"),
    (job_frame(request=None), "job", "request must be an object, got null"),
    ('{"type":"job_cancel"}', "job_cancel", "missing 'job_id'"),
    ('{"type":"job_cancel","job_id":"nope"}', "job_cancel", "job_id 'nope' is not a UUID"),
    ('{"type":"job_cancel","job_id":false}', "job_cancel", "job_id must be a string, got boolean"),
]


@pytest.mark.parametrize(("raw", "frame_type", "detail"), INBOUND_BAD)
def test_inbound_malformed(raw: str, frame_type: str, detail: str) -> None:
    err = frame_error(p.parse_inbound, raw)
    assert err.frame_type == frame_type
    assert str(err).startswith(f"{frame_type} frame: {detail}")
    assert "\n" not in str(err)
    assert len(str(err)) < 200


def test_job_error_carries_job_id_once_known() -> None:
    assert frame_error(p.parse_inbound, job_frame(job_id="abc")).job_id is None
    assert frame_error(p.parse_inbound, job_frame(model_id="")).job_id == JOB_ID
    assert frame_error(p.parse_inbound, job_frame(model_id=...)).job_id == JOB_ID
    assert frame_error(p.parse_inbound, job_frame(model_id=5)).job_id == JOB_ID
    assert frame_error(p.parse_inbound, job_frame(request=[])).job_id == JOB_ID
    assert frame_error(p.parse_inbound, job_frame(request=...)).job_id == JOB_ID
    # the id in the error is the canonical form, whatever form was sent
    upper = JOB_ID.upper().replace("-", "")
    assert frame_error(p.parse_inbound, job_frame(job_id=upper, model_id="")).job_id == JOB_ID


# --------------------------------------------------------------------------- malformed: outbound


def outbound(kind: str, **changes: Any) -> str:
    valid = {
        "auth_response": p.auth_response(PUBKEY_B64, SIGNATURE_B64, "v"),
        "capabilities": p.capabilities([MODEL], 8, 1000, {"agent_version": "v"}),
        "heartbeat": p.heartbeat(HeartbeatFigures()),
        "job_chunk": p.job_chunk(JOB_ID, b"abc"),
        "job_done": p.job_done(JOB_ID, 1, 2, 3),
        "job_error": p.job_error(JOB_ID, "internal", "m", 0),
    }
    frame = json.loads(valid[kind])
    for key, value in changes.items():
        if value is ...:
            frame.pop(key, None)
        else:
            frame[key] = value
    return json.dumps(frame)


def model_with(**changes: Any) -> dict[str, Any]:
    m = dict(MODEL)
    for key, value in changes.items():
        if value is ...:
            m.pop(key)
        else:
            m[key] = value
    return m


OUTBOUND_BAD: list[tuple[str, str, str]] = [
    (outbound("auth_response", pubkey=...), "auth_response", "missing 'pubkey'"),
    (outbound("auth_response", pubkey="@@"), "auth_response", "pubkey is not valid base64"),
    (outbound("auth_response", pubkey="AAAA"), "auth_response", "pubkey must be 32 bytes, got 3"),
    (outbound("auth_response", signature=...), "auth_response", "missing 'signature'"),
    (outbound("auth_response", signature=PUBKEY_B64), "auth_response", "signature must be 64"),
    (outbound("auth_response", agent_version=3), "auth_response", "agent_version must be a"),
    (outbound("auth_response", enrollment_code=1), "auth_response", "enrollment_code must be a"),
    (outbound("capabilities", models=...), "capabilities", "missing 'models'"),
    (outbound("capabilities", models={}), "capabilities", "models must be an array, got object"),
    (outbound("capabilities", models=[1]), "capabilities", "models[0] must be an object"),
    (
        outbound("capabilities", models=[MODEL, model_with(model_id=...)]),
        "capabilities",
        "missing 'models[1].model_id'",
    ),
    (
        outbound("capabilities", models=[model_with(input_per_1m="5")]),
        "capabilities",
        "models[0].input_per_1m must be an integer, got string",
    ),
    (
        outbound("capabilities", models=[model_with(output_per_1m=-1)]),
        "capabilities",
        "models[0].output_per_1m must not be negative",
    ),
    (
        outbound("capabilities", models=[model_with(max_concurrent=2**32)]),
        "capabilities",
        "models[0].max_concurrent 4294967296 is out of range",
    ),
    (
        outbound("capabilities", models=[model_with(backend=None)]),
        "capabilities",
        "models[0].backend must be a string, got null",
    ),
    (
        outbound("capabilities", models=[model_with(context_window=1.5)]),
        "capabilities",
        "models[0].context_window must be an integer",
    ),
    (outbound("capabilities", limits=...), "capabilities", "missing 'limits'"),
    (
        outbound("capabilities", limits={}),
        "capabilities",
        "missing 'limits.max_concurrent_total'",
    ),
    (
        outbound("capabilities", limits={"max_concurrent_total": 1, "max_tokens_per_minute": "x"}),
        "capabilities",
        "limits.max_tokens_per_minute must be an integer",
    ),
    (outbound("capabilities", metadata=[]), "capabilities", "metadata must be an object"),
    (outbound("heartbeat", queue_depth=...), "heartbeat", "missing 'queue_depth'"),
    (outbound("heartbeat", queue_depth=2**32), "heartbeat", "queue_depth 4294967296 is out of"),
    (outbound("heartbeat", queue_depth=-1), "heartbeat", "queue_depth must not be negative"),
    (outbound("heartbeat", tokens_per_sec_p50="1"), "heartbeat", "tokens_per_sec_p50 must be a"),
    (outbound("heartbeat", tokens_per_sec_p50=-0.5), "heartbeat", "tokens_per_sec_p50 -0.5 is"),
    (outbound("heartbeat", tokens_per_sec_p50=10**400), "heartbeat", "tokens_per_sec_p50 <"),
    (outbound("heartbeat", p95_latency_ms=1.5), "heartbeat", "p95_latency_ms must be an integer"),
    (outbound("heartbeat", error_rate_60s=1.5), "heartbeat", "error_rate_60s 1.5 is out of range"),
    (outbound("heartbeat", last_error_at="yesterday"), "heartbeat", "last_error_at 'yesterday'"),
    (
        outbound("heartbeat", last_error_at="2026-05-02T10:11:12"),
        "heartbeat",
        "last_error_at '2026-05-02T10:11:12' has no UTC offset",
    ),
    (outbound("heartbeat", last_error_at=5), "heartbeat", "last_error_at must be a string"),
    (outbound("heartbeat", last_error_code=5), "heartbeat", "last_error_code must be a string"),
    (outbound("job_chunk", job_id="1"), "job_chunk", "job_id '1' is not a UUID"),
    (outbound("job_chunk", data=...), "job_chunk", "missing 'data'"),
    (outbound("job_chunk", data="***"), "job_chunk", "data is not valid base64"),
    (outbound("job_chunk", data=[1]), "job_chunk", "data must be a string, got array"),
    (outbound("job_done", tokens=...), "job_done", "missing 'tokens'"),
    (outbound("job_done", tokens=5), "job_done", "tokens must be an object, got integer"),
    (outbound("job_done", tokens={"input": -1}), "job_done", "tokens.input must not be negative"),
    (
        outbound("job_done", tokens={"output_tokens": "3"}),
        "job_done",
        "tokens.output_tokens must be an integer",
    ),
    (outbound("job_done", duration_ms=2**64), "job_done", "duration_ms 18446744073709551616 is"),
    (outbound("job_done", duration_ms=...), "job_done", "missing 'duration_ms'"),
    (outbound("job_error", error_code=""), "job_error", "error_code must not be empty"),
    (outbound("job_error", message=...), "job_error", "missing 'message'"),
    (outbound("job_error", tokens_emitted=True), "job_error", "tokens_emitted must be an integer"),
    (outbound("job_error", job_id=...), "job_error", "missing 'job_id'"),
]


@pytest.mark.parametrize(("raw", "frame_type", "detail"), OUTBOUND_BAD)
def test_outbound_malformed(raw: str, frame_type: str, detail: str) -> None:
    err = frame_error(p.parse_outbound, raw)
    assert err.frame_type == frame_type
    assert str(err).startswith(f"{frame_type} frame: {detail}")
    assert "\n" not in str(err)


# --------------------------------------------------------------------------- fuzzing


def check_inbound(frame: object) -> None:
    """A parsed inbound frame is fully valid."""
    if isinstance(frame, AuthChallenge):
        assert isinstance(frame.nonce, bytes)
    elif isinstance(frame, AuthOk):
        assert frame.provider_id is None or (
            isinstance(frame.provider_id, str) and frame.provider_id
        )
    elif isinstance(frame, AuthFailed):
        assert isinstance(frame.reason, str)
    elif isinstance(frame, Job):
        assert p.is_uuid(frame.job_id) and frame.job_id == frame.job_id.lower()
        assert isinstance(frame.model_id, str) and frame.model_id
        assert isinstance(frame.request, dict)
        assert frame.format in ("openai", "anthropic")
        assert type(frame.deadline_ms) is int and 1 <= frame.deadline_ms <= p.MAX_DEADLINE_MS
    elif isinstance(frame, JobCancel):
        assert p.is_uuid(frame.job_id) and frame.job_id == frame.job_id.lower()
    else:
        assert isinstance(frame, UnknownFrame)
        assert frame.type not in ("auth_challenge", "auth_ok", "auth_failed", "job", "job_cancel")


def _uint(value: object, maximum: int) -> bool:
    return type(value) is int and 0 <= value <= maximum


def check_outbound(frame: object) -> None:
    """A parsed outbound frame is fully valid."""
    if isinstance(frame, AuthResponse):
        assert len(frame.pubkey) == 32 and len(frame.signature) == 64
        assert isinstance(frame.agent_version, str)
        assert frame.enrollment_code is None or isinstance(frame.enrollment_code, str)
    elif isinstance(frame, Capabilities):
        assert isinstance(frame.models, list) and isinstance(frame.metadata, dict)
        for m in frame.models:
            assert isinstance(m["model_id"], str) and m["model_id"]
            assert _uint(m["input_per_1m"], p.U64_MAX) and _uint(m["output_per_1m"], p.U64_MAX)
            assert _uint(m["max_concurrent"], p.U32_MAX) and isinstance(m["backend"], str)
        assert _uint(frame.limits["max_concurrent_total"], p.U32_MAX)
    elif isinstance(frame, Heartbeat):
        f = frame.figures
        assert _uint(f.queue_depth, p.U32_MAX) and _uint(f.p50_latency_ms, p.U32_MAX)
        assert _uint(f.p95_latency_ms, p.U32_MAX)
        assert isinstance(f.tokens_per_sec_p50, float) and f.tokens_per_sec_p50 >= 0
        assert isinstance(f.error_rate_60s, float) and 0 <= f.error_rate_60s <= 1
        assert f.last_error_at is None or f.last_error_at.tzinfo is not None
    elif isinstance(frame, JobChunk):
        assert p.is_uuid(frame.job_id) and isinstance(frame.data, bytes)
    elif isinstance(frame, JobDone):
        assert p.is_uuid(frame.job_id)
        for v in (frame.input_tokens, frame.output_tokens, frame.duration_ms):
            assert _uint(v, p.U64_MAX)
    elif isinstance(frame, JobError):
        assert p.is_uuid(frame.job_id) and frame.error_code
        assert isinstance(frame.message, str) and _uint(frame.tokens_emitted, p.U64_MAX)
    else:
        assert isinstance(frame, UnknownFrame)


def parse_checked(raw: Any) -> None:
    """Both parsers: a valid frame or a one-line FrameError, nothing else."""
    for parse, check in ((p.parse_inbound, check_inbound), (p.parse_outbound, check_outbound)):
        try:
            frame = parse(raw)
        except FrameError as err:
            assert str(err) and "\n" not in str(err) and "\r" not in str(err)
            assert err.frame_type is None or isinstance(err.frame_type, str)
        else:
            check(frame)


VALID_FRAMES: list[str] = [
    p.auth_challenge(b"nonce-bytes"),
    p.auth_ok("prov"),
    p.auth_failed("nope"),
    p.job(JOB_ID, "m", {"messages": [{"role": "user", "content": "hi"}]}, "anthropic", 9),
    p.job_cancel(JOB_ID),
    p.auth_response(PUBKEY_B64, SIGNATURE_B64, "v", "CODE"),
    p.capabilities([MODEL], 8, 1000, {"agent_version": "v"}),
    p.heartbeat(HeartbeatFigures(1, 2.0, 3, 4, 0.5, datetime(2026, 1, 1, tzinfo=UTC), "x")),
    p.job_chunk(JOB_ID, b"abc"),
    p.job_done(JOB_ID, 1, 2, 3),
    p.job_error(JOB_ID, "internal", "m", 0),
]
TYPES = sorted({json.loads(f)["type"] for f in VALID_FRAMES})
FIELD_VALUES = JSON_VALUES | st.sampled_from(
    [JOB_ID, JOB_ID.upper(), "", "AAAA", PUBKEY_B64, -1, 0, 2**32, 2**64, 10**100, 1.5, -0.0]
)


@st.composite
def mutated_frames(draw: st.DrawFn) -> dict[str, Any]:
    frame = json.loads(draw(st.sampled_from(VALID_FRAMES)))
    for _ in range(draw(st.integers(1, 3))):
        keys = sorted(frame)
        action = draw(st.sampled_from(["drop", "replace", "add", "retype", "nest"]))
        if action == "drop" and keys:
            frame.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            frame[draw(st.sampled_from(keys))] = draw(FIELD_VALUES)
        elif action == "add":
            frame[draw(st.text(max_size=10))] = draw(FIELD_VALUES)
        elif action == "retype":
            frame["type"] = draw(st.sampled_from(TYPES))
        else:
            for key in keys:
                if isinstance(frame[key], dict) and frame[key]:
                    inner = frame[key]
                    inner[draw(st.sampled_from(sorted(inner)))] = draw(FIELD_VALUES)
                elif (
                    isinstance(frame[key], list)
                    and frame[key]
                    and isinstance(frame[key][0], dict)
                    and frame[key][0]
                ):
                    inner = frame[key][0]
                    inner[draw(st.sampled_from(sorted(inner)))] = draw(FIELD_VALUES)
    return frame


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_frames())
def test_fuzz_mutated_frames(frame: dict[str, Any]) -> None:
    parse_checked(json.dumps(frame))


@settings(max_examples=1500, deadline=None)
@given(JSON_VALUES)
def test_fuzz_random_json(value: Any) -> None:
    parse_checked(json.dumps(value))


@settings(max_examples=1500, deadline=None)
@given(
    type_=st.sampled_from(TYPES) | st.text(max_size=12),
    body=st.dictionaries(
        st.sampled_from(
            [
                "job_id",
                "model_id",
                "request",
                "format",
                "deadline_ms",
                "nonce",
                "provider_id",
                "reason",
                "pubkey",
                "signature",
                "agent_version",
                "enrollment_code",
                "models",
                "limits",
                "metadata",
                "queue_depth",
                "tokens_per_sec_p50",
                "p50_latency_ms",
                "p95_latency_ms",
                "error_rate_60s",
                "last_error_at",
                "last_error_code",
                "data",
                "tokens",
                "duration_ms",
                "error_code",
                "message",
                "tokens_emitted",
            ]
        ),
        FIELD_VALUES,
        max_size=8,
    ),
)
def test_fuzz_random_fields(type_: str, body: dict[str, Any]) -> None:
    parse_checked(json.dumps(body | {"type": type_}))


@settings(max_examples=1500, deadline=None)
@given(frame=st.sampled_from(VALID_FRAMES), cut=st.integers(0, 400), junk=st.text(max_size=5))
def test_fuzz_damaged_text(frame: str, cut: int, junk: str) -> None:
    parse_checked(frame[:cut] + junk + frame[cut + len(junk) :])
    parse_checked(frame[:cut])


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_fuzz_arbitrary_input(raw: str | bytes) -> None:
    parse_checked(raw)
