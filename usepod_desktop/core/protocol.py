"""Coordinator link wire format (docs/protocol.md): pure builders and parsers, no I/O.

Both directions live here: the agent builds the outbound frames and parses the inbound
ones; the sandbox coordinator does the opposite with the same code.

Parsing is total: `parse_inbound` / `parse_outbound` return a frame dataclass or raise
`FrameError` (a `ValueError`) whose one-line message names the frame type and the field.
They never raise anything else, whatever the input. Unknown frame types are not errors:
they come back as `UnknownFrame` (the link logs them at debug level). Unknown fields
inside a known frame are ignored.

Inbound frames are read as leniently as the reference agent reads them (docs/protocol.md,
"Tolerance"): a `job_id` in any UUID form is accepted and canonicalised, `format` and
`deadline_ms` fall back instead of failing, `auth_ok.provider_id` of the wrong type is
ignored and an empty challenge nonce is signed. A `job` frame that still cannot be served
raises a `FrameError` carrying the canonical `job_id`, so the link answers it with a
`job_error` (`invalid_request`) instead of leaving the coordinator waiting. Outbound frames
(parsed by the sandbox coordinator) stay strict.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeAlias

__all__ = [
    "DEFAULT_DEADLINE_MS",
    "MAX_DEADLINE_MS",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_FRAME_BYTES",
    "U32_MAX",
    "U64_MAX",
    "AuthChallenge",
    "AuthFailed",
    "AuthOk",
    "AuthResponse",
    "Capabilities",
    "ErrorCode",
    "FrameError",
    "Heartbeat",
    "HeartbeatFigures",
    "InboundFrame",
    "Job",
    "JobCancel",
    "JobChunk",
    "JobDone",
    "JobError",
    "JobFormat",
    "OutboundFrame",
    "UnknownFrame",
    "auth_challenge",
    "auth_failed",
    "auth_ok",
    "auth_response",
    "canonical_uuid",
    "capabilities",
    "heartbeat",
    "is_uuid",
    "job",
    "job_cancel",
    "job_chunk",
    "job_done",
    "job_error",
    "parse_inbound",
    "parse_outbound",
]

#: Inbound frame size limit for the link (pass it as the WebSocket `max_size`).
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: `deadline_ms` when the job frame has none.
DEFAULT_DEADLINE_MS = 60_000
#: Larger (but in-range) deadlines are capped to this: one hour.
MAX_DEADLINE_MS = 3_600_000
#: `job_error.message` is cut to this many characters (upstream bodies can be huge).
MAX_ERROR_MESSAGE_CHARS = 4096
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

JobFormat: TypeAlias = Literal["openai", "anthropic"]

_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


# The textual forms the reference's parser (Rust `uuid`) takes: hyphenated, simple (32 hex
# digits), braced hyphenated and `urn:uuid:` hyphenated. Anything looser (Python's
# `uuid.UUID` also takes stray hyphens, underscores, '+') is refused.
_HYPHENATED = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_ANY_UUID_RE = re.compile(
    rf"urn:uuid:(?P<urn>{_HYPHENATED})|\{{(?P<braced>{_HYPHENATED})\}}"
    rf"|(?P<plain>{_HYPHENATED})|(?P<simple>[0-9a-f]{{32}})",
    re.IGNORECASE,
)


def is_uuid(s: object) -> bool:
    """True when `s` is a UUID in canonical 8-4-4-4-12 textual form (any case)."""
    return isinstance(s, str) and _UUID_RE.fullmatch(s) is not None


def canonical_uuid(s: object) -> str | None:
    """`s` in the canonical lowercase 8-4-4-4-12 form when it is a UUID in any form the
    reference accepts (hyphenated, simple, braced, `urn:uuid:`, any case), else None."""
    if not isinstance(s, str) or len(s) > 45:
        return None
    m = _ANY_UUID_RE.fullmatch(s)
    if m is None:
        return None
    text = m.group("urn") or m.group("braced") or m.group("plain")
    if text is None:
        h = m.group("simple")
        text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return text.lower()


class ErrorCode(StrEnum):
    """`job_error.error_code` values.

    All but `RATE_LIMITED` and `INVALID_REQUEST` are the reference agent's codes. Ours
    (beyond the reference): `RATE_LIMITED`, a job refused because
    `limits.max_tokens_per_minute` is exhausted; `INVALID_REQUEST`, a job this agent will not
    run as asked: a `job` frame with a usable job id that cannot be served (empty or missing
    `model_id`, `request` not an object), which the reference drops without an answer, a
    reused job id, `n` > 1 on a BYOK backend. Conditions without a code of their own map to
    `INTERNAL`: agent shutdown, a chunk the socket would not take within 5 s, an `anthropic`
    job on a backend kind without `/v1/messages`, a mid-stream `data: {"error": ...}` event.
    """

    BACKEND_UNREACHABLE = "backend_unreachable"
    BACKEND_TIMEOUT = "backend_timeout"
    INVALID_REQUEST = "invalid_request"
    MODEL_NOT_LOADED = "model_not_loaded"
    AUTH_REJECTED_BY_BACKEND = "auth_rejected_by_backend"
    INTERNAL = "internal"
    OUT_OF_CAPACITY = "out_of_capacity"
    RATE_LIMITED = "rate_limited"


class FrameError(ValueError):
    """A frame that cannot be used. `str(err)` is one line naming the frame and field.

    `frame_type` is the frame's `type` when it was readable, else None. `job_id` is set
    (canonical form) when the frame carried a usable job_id, so the link may answer with a
    `job_error`.
    """

    def __init__(self, message: str, frame_type: str | None = None, job_id: str | None = None):
        super().__init__(message)
        self.frame_type = frame_type
        self.job_id = job_id


# --------------------------------------------------------------------------- frames


@dataclass(frozen=True, slots=True)
class HeartbeatFigures:
    """The figures of one `heartbeat` frame. All zeros/None is the reference's heartbeat."""

    queue_depth: int = 0
    tokens_per_sec_p50: float = 0.0
    p50_latency_ms: int = 0
    p95_latency_ms: int = 0
    error_rate_60s: float = 0.0
    last_error_at: datetime | None = None
    last_error_code: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A JSON object frame with a `type` this side does not handle."""

    type: str


# coordinator -> agent


@dataclass(frozen=True, slots=True)
class AuthChallenge:
    """`nonce` may be empty: it is signed like any other (as the reference does)."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class AuthOk:
    """`provider_id` is None when absent, null, empty or not a string (ignored, as the
    reference ignores it). `sandbox` is true only when the frame says `"sandbox": true`, which
    the local sandbox coordinator sends and the real one never does (docs/sandbox.md): its jobs
    are not real earnings."""

    provider_id: str | None
    sandbox: bool = False


@dataclass(frozen=True, slots=True)
class AuthFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class Job:
    """A job to run. `job_id` is the canonical lowercase hyphenated form of the id sent."""

    job_id: str
    model_id: str
    request: dict[str, Any]
    format: JobFormat = "openai"
    deadline_ms: int = DEFAULT_DEADLINE_MS


@dataclass(frozen=True, slots=True)
class JobCancel:
    job_id: str


InboundFrame: TypeAlias = AuthChallenge | AuthOk | AuthFailed | Job | JobCancel | UnknownFrame


# agent -> coordinator


@dataclass(frozen=True, slots=True)
class AuthResponse:
    pubkey: bytes
    signature: bytes
    agent_version: str
    enrollment_code: str | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    models: list[dict[str, Any]]
    limits: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    figures: HeartbeatFigures


@dataclass(frozen=True, slots=True)
class JobChunk:
    job_id: str
    data: bytes


@dataclass(frozen=True, slots=True)
class JobDone:
    job_id: str
    input_tokens: int
    output_tokens: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class JobError:
    job_id: str
    error_code: str
    message: str
    tokens_emitted: int


OutboundFrame: TypeAlias = (
    AuthResponse | Capabilities | Heartbeat | JobChunk | JobDone | JobError | UnknownFrame
)


# --------------------------------------------------------------------------- builders

_b64encode = base64.b64encode


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _b64(data: bytes) -> str:
    return _b64encode(data).decode("ascii")


def _uint_out(value: int | None, maximum: int = U64_MAX) -> int:
    """Clamp a count to [0, maximum]; None is 0 ("missing counts are 0")."""
    if value is None:
        return 0
    return min(max(int(value), 0), maximum)


def _float_out(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) and value > 0.0 else 0.0


def _rfc3339(dt: datetime) -> str:
    if dt.tzinfo is None:  # naive: taken as UTC
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def auth_response(
    pubkey_b64: str,
    signature_b64: str,
    agent_version: str,
    enrollment_code: str | None = None,
) -> str:
    """`auth_response`; `enrollment_code` is included only when given (non-empty)."""
    frame: dict[str, Any] = {
        "type": "auth_response",
        "pubkey": pubkey_b64,
        "signature": signature_b64,
        "agent_version": agent_version,
    }
    if enrollment_code:
        frame["enrollment_code"] = enrollment_code
    return _dumps(frame)


def capabilities(
    models: list[dict[str, Any]],
    max_concurrent_total: int,
    max_tokens_per_minute: int | None,
    metadata: Mapping[str, Any],
) -> str:
    """`capabilities`; each model dict is sent as is (docs/protocol.md, "Capabilities")."""
    return _dumps(
        {
            "type": "capabilities",
            "models": list(models),
            "limits": {
                "max_concurrent_total": max_concurrent_total,
                "max_tokens_per_minute": max_tokens_per_minute,
            },
            "metadata": dict(metadata),
        }
    )


def heartbeat(fig: HeartbeatFigures) -> str:
    """`heartbeat`; integers clamped to u32, bad floats sent as 0, error rate capped at 1."""
    return _dumps(
        {
            "type": "heartbeat",
            "queue_depth": _uint_out(fig.queue_depth, U32_MAX),
            "tokens_per_sec_p50": _float_out(fig.tokens_per_sec_p50),
            "p50_latency_ms": _uint_out(fig.p50_latency_ms, U32_MAX),
            "p95_latency_ms": _uint_out(fig.p95_latency_ms, U32_MAX),
            "error_rate_60s": min(_float_out(fig.error_rate_60s), 1.0),
            "last_error_at": None if fig.last_error_at is None else _rfc3339(fig.last_error_at),
            "last_error_code": None if fig.last_error_code is None else str(fig.last_error_code),
        }
    )


def job_chunk(job_id: str, data: bytes) -> str:
    """`job_chunk`. Hot path: `job_id` must already be a validated UUID (no escaping)."""
    return f'{{"type":"job_chunk","job_id":"{job_id}","data":"{_b64encode(data).decode()}"}}'


def job_done(
    job_id: str, input_tokens: int | None, output_tokens: int | None, duration_ms: int
) -> str:
    """`job_done`; tokens carry both `input`/`output` and `input_tokens`/`output_tokens`."""
    i = _uint_out(input_tokens)
    o = _uint_out(output_tokens)
    return _dumps(
        {
            "type": "job_done",
            "job_id": job_id,
            "tokens": {"input": i, "output": o, "input_tokens": i, "output_tokens": o},
            "duration_ms": _uint_out(duration_ms),
        }
    )


def job_error(job_id: str, error_code: str, message: str, tokens_emitted: int) -> str:
    """`job_error`; `tokens_emitted` is the byte count relayed so far (reference semantics).

    `message` is cut to MAX_ERROR_MESSAGE_CHARS characters.
    """
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
    return _dumps(
        {
            "type": "job_error",
            "job_id": job_id,
            "error_code": str(error_code),
            "message": message,
            "tokens_emitted": _uint_out(tokens_emitted),
        }
    )


# coordinator side


def auth_challenge(nonce: bytes) -> str:
    """`auth_challenge` with the nonce base64-encoded."""
    return _dumps({"type": "auth_challenge", "nonce": _b64(nonce)})


def auth_ok(provider_id: str | None, *, sandbox: bool = False) -> str:
    """`auth_ok`; `provider_id` is omitted when None; `sandbox` adds `"sandbox": true`."""
    frame: dict[str, Any] = {"type": "auth_ok"}
    if provider_id is not None:
        frame["provider_id"] = provider_id
    if sandbox:
        frame["sandbox"] = True
    return _dumps(frame)


def auth_failed(reason: str) -> str:
    return _dumps({"type": "auth_failed", "reason": reason})


def job(
    job_id: str,
    model_id: str,
    request: Mapping[str, Any],
    format: JobFormat = "openai",
    deadline_ms: int = DEFAULT_DEADLINE_MS,
) -> str:
    """`job` frame (coordinator -> agent)."""
    return _dumps(
        {
            "type": "job",
            "job_id": job_id,
            "model_id": model_id,
            "request": dict(request),
            "format": format,
            "deadline_ms": deadline_ms,
        }
    )


def job_cancel(job_id: str) -> str:
    return _dumps({"type": "job_cancel", "job_id": job_id})


# --------------------------------------------------------------------------- parsing

_MISSING: Any = object()


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _show(value: object, limit: int = 40) -> str:
    """A short one-line rendering of a value for an error message."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value) if value.bit_length() < 128 else f"<{value.bit_length()}-bit integer>"
        return text
    return _json_type(value)


class _Reader:
    """Typed field access on one decoded object; errors name the frame and field path."""

    __slots__ = ("frame_type", "job_id", "obj", "prefix")

    def __init__(
        self, frame_type: str, obj: dict[str, Any], prefix: str = "", job_id: str | None = None
    ) -> None:
        self.frame_type = frame_type
        self.obj = obj
        self.prefix = prefix
        self.job_id = job_id

    def child(self, obj: dict[str, Any], prefix: str) -> _Reader:
        return _Reader(self.frame_type, obj, self.prefix + prefix, self.job_id)

    def fail(self, detail: str) -> FrameError:
        return FrameError(f"{self.frame_type} frame: {detail}", self.frame_type, self.job_id)

    def get(self, key: str, default: Any = _MISSING) -> Any:
        value = self.obj.get(key, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise self.fail(f"missing '{self.prefix}{key}'")
            return default
        return value

    def string(self, key: str, *, nonempty: bool = False, value: Any = _MISSING) -> str:
        if value is _MISSING:
            value = self.get(key)
        if not isinstance(value, str):
            raise self.fail(f"{self.prefix}{key} must be a string, got {_json_type(value)}")
        if nonempty and not value:
            raise self.fail(f"{self.prefix}{key} must not be empty")
        return value

    def opt_string(self, key: str) -> str | None:
        value = self.get(key, None)
        return None if value is None else self.string(key, value=value)

    def uuid(self, key: str = "job_id") -> str:
        value = self.string(key)
        if not is_uuid(value):
            raise self.fail(f"{self.prefix}{key} {_show(value)} is not a UUID")
        return value

    def uint(self, key: str, maximum: int, *, value: Any = _MISSING) -> int:
        if value is _MISSING:
            value = self.get(key)
        name = self.prefix + key
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(f"{name} must be an integer, got {_json_type(value)}")
        if value < 0:
            raise self.fail(f"{name} must not be negative, got {_show(value)}")
        if value > maximum:
            raise self.fail(f"{name} {_show(value)} is out of range (max {maximum})")
        return value

    def opt_uint(self, key: str, maximum: int) -> int | None:
        value = self.get(key, None)
        return None if value is None else self.uint(key, maximum, value=value)

    def number(self, key: str, maximum: float = math.inf) -> float:
        value = self.get(key)
        name = self.prefix + key
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(f"{name} must be a number, got {_json_type(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise self.fail(f"{name} {_show(value)} is out of range") from None
        if not 0.0 <= number <= maximum:
            raise self.fail(f"{name} {number!r} is out of range [0, {maximum}]")
        return number

    def obj_field(self, key: str) -> dict[str, Any]:
        value = self.get(key)
        if not isinstance(value, dict):
            raise self.fail(f"{self.prefix}{key} must be an object, got {_json_type(value)}")
        return value

    def b64(self, key: str, *, size: int | None = None, nonempty: bool = False) -> bytes:
        text = self.string(key)
        name = self.prefix + key
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise self.fail(f"{name} is not valid base64") from None
        if nonempty and not data:
            raise self.fail(f"{name} must not be empty")
        if size is not None and len(data) != size:
            raise self.fail(f"{name} must be {size} bytes, got {len(data)}")
        return data


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard constant {name}")


_decoder = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)


def _decode(raw: object) -> tuple[str, dict[str, Any]]:
    """Text frame -> (type, object), or FrameError."""
    if isinstance(raw, bytes | bytearray | memoryview):
        raise FrameError("binary frame: expected a JSON text frame")
    if not isinstance(raw, str):
        raise FrameError(f"frame: expected a text frame, got {type(raw).__name__}")
    if len(raw) > MAX_FRAME_BYTES:
        raise FrameError(f"frame: too large (more than {MAX_FRAME_BYTES} bytes)")
    try:
        obj = _decoder.decode(raw)
    except json.JSONDecodeError as exc:
        raise FrameError(f"invalid JSON frame: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise FrameError("invalid JSON frame: nested too deeply") from None
    except (ValueError, OverflowError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FrameError(f"invalid JSON frame: {first[:200]}") from None
    if not isinstance(obj, dict):
        raise FrameError(f"frame: expected a JSON object, got {_json_type(obj)}")
    frame_type = obj.get("type", _MISSING)
    if frame_type is _MISSING:
        raise FrameError("frame: missing 'type'")
    if not isinstance(frame_type, str):
        raise FrameError(f"frame: 'type' must be a string, got {_json_type(frame_type)}")
    return frame_type, obj


# coordinator -> agent


def _p_auth_challenge(r: _Reader) -> AuthChallenge:
    return AuthChallenge(nonce=r.b64("nonce"))


def _p_auth_ok(r: _Reader) -> AuthOk:
    value = r.get("provider_id", None)
    return AuthOk(
        provider_id=value if isinstance(value, str) and value else None,
        sandbox=r.get("sandbox", False) is True,
    )


def _p_auth_failed(r: _Reader) -> AuthFailed:
    reason = r.get("reason", None)
    return AuthFailed(reason="unknown" if reason is None else r.string("reason", value=reason))


def _job_format(value: object) -> JobFormat:
    """ "anthropic" in any case is Anthropic; anything else (unknown, non-string) is OpenAI."""
    if isinstance(value, str) and value.lower() == "anthropic":
        return "anthropic"
    return "openai"


def _deadline_ms(value: object) -> int:
    """A number, or a numeric string, of milliseconds; clamped to [1, u32] and then to
    MAX_DEADLINE_MS. Missing, null, boolean, 0, negative, NaN or non-numeric values mean
    DEFAULT_DEADLINE_MS."""
    number: float | int
    if isinstance(value, bool) or value is None:
        return DEFAULT_DEADLINE_MS
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            number = float(value.strip())
        except ValueError:
            return DEFAULT_DEADLINE_MS
    else:
        return DEFAULT_DEADLINE_MS
    if number != number or number <= 0:  # NaN, zero, negative
        return DEFAULT_DEADLINE_MS
    if number >= U32_MAX:  # includes +inf
        number = U32_MAX
    return min(max(math.ceil(number), 1), MAX_DEADLINE_MS)


def _job_id(r: _Reader) -> str:
    """The frame's `job_id` in canonical form; a UUID in any form the reference takes."""
    raw_id = r.get("job_id")
    job_id = canonical_uuid(raw_id)
    if job_id is None:
        if not isinstance(raw_id, str):
            raise r.fail(f"job_id must be a string, got {_json_type(raw_id)}")
        raise r.fail(f"job_id {_show(raw_id)} is not a UUID")
    return job_id


def _p_job(r: _Reader) -> Job:
    job_id = r.job_id = _job_id(r)
    model_id = r.string("model_id", nonempty=True)
    request = r.obj_field("request")
    return Job(
        job_id,
        model_id,
        request,
        _job_format(r.get("format", None)),
        _deadline_ms(r.get("deadline_ms", None)),
    )


def _p_job_cancel(r: _Reader) -> JobCancel:
    return JobCancel(job_id=_job_id(r))


_INBOUND: dict[str, Callable[[_Reader], InboundFrame]] = {
    "auth_challenge": _p_auth_challenge,
    "auth_ok": _p_auth_ok,
    "auth_failed": _p_auth_failed,
    "job": _p_job,
    "job_cancel": _p_job_cancel,
}


def parse_inbound(raw: str | bytes) -> InboundFrame:
    """Parse a coordinator -> agent frame. Raises only FrameError."""
    frame_type, obj = _decode(raw)
    parser = _INBOUND.get(frame_type)
    if parser is None:
        return UnknownFrame(frame_type)
    return parser(_Reader(frame_type, obj))


# agent -> coordinator


def _p_auth_response(r: _Reader) -> AuthResponse:
    return AuthResponse(
        pubkey=r.b64("pubkey", size=32),
        signature=r.b64("signature", size=64),
        agent_version=r.string("agent_version"),
        enrollment_code=r.opt_string("enrollment_code"),
    )


def _p_capabilities(r: _Reader) -> Capabilities:
    models = r.get("models")
    if not isinstance(models, list):
        raise r.fail(f"models must be an array, got {_json_type(models)}")
    for index, model in enumerate(models):
        if not isinstance(model, dict):
            raise r.fail(f"models[{index}] must be an object, got {_json_type(model)}")
        m = r.child(model, f"models[{index}].")
        m.string("model_id", nonempty=True)
        m.uint("input_per_1m", U64_MAX)
        m.uint("output_per_1m", U64_MAX)
        m.uint("max_concurrent", U32_MAX)
        m.string("backend")
        m.opt_uint("context_window", U32_MAX)
    limits = r.obj_field("limits")
    lim = r.child(limits, "limits.")
    lim.uint("max_concurrent_total", U32_MAX)
    lim.opt_uint("max_tokens_per_minute", U64_MAX)
    metadata = r.obj_field("metadata")
    return Capabilities(models=models, limits=limits, metadata=metadata)


def _p_heartbeat(r: _Reader) -> Heartbeat:
    queue_depth = r.uint("queue_depth", U32_MAX)
    tps = r.number("tokens_per_sec_p50")
    p50 = r.uint("p50_latency_ms", U32_MAX)
    p95 = r.uint("p95_latency_ms", U32_MAX)
    error_rate = r.number("error_rate_60s", maximum=1.0)
    at_text = r.opt_string("last_error_at")
    last_error_at: datetime | None = None
    if at_text is not None:
        try:
            last_error_at = datetime.fromisoformat(at_text)
        except ValueError:
            raise r.fail(f"last_error_at {_show(at_text)} is not an RFC 3339 time") from None
        if last_error_at.tzinfo is None:
            raise r.fail(f"last_error_at {_show(at_text)} has no UTC offset")
    code = r.opt_string("last_error_code")
    return Heartbeat(HeartbeatFigures(queue_depth, tps, p50, p95, error_rate, last_error_at, code))


def _p_job_chunk(r: _Reader) -> JobChunk:
    r.job_id = r.uuid("job_id")
    return JobChunk(job_id=r.job_id, data=r.b64("data"))


def _p_job_done(r: _Reader) -> JobDone:
    r.job_id = r.uuid("job_id")
    tokens = r.obj_field("tokens")
    t = r.child(tokens, "tokens.")

    def count(short: str, long: str) -> int:
        value = tokens.get(short)
        if value is None:
            return t.opt_uint(long, U64_MAX) or 0
        return t.uint(short, U64_MAX, value=value)

    return JobDone(
        job_id=r.job_id,
        input_tokens=count("input", "input_tokens"),
        output_tokens=count("output", "output_tokens"),
        duration_ms=r.uint("duration_ms", U64_MAX),
    )


def _p_job_error(r: _Reader) -> JobError:
    r.job_id = r.uuid("job_id")
    return JobError(
        job_id=r.job_id,
        error_code=r.string("error_code", nonempty=True),
        message=r.string("message"),
        tokens_emitted=r.uint("tokens_emitted", U64_MAX),
    )


_OUTBOUND: dict[str, Callable[[_Reader], OutboundFrame]] = {
    "auth_response": _p_auth_response,
    "capabilities": _p_capabilities,
    "heartbeat": _p_heartbeat,
    "job_chunk": _p_job_chunk,
    "job_done": _p_job_done,
    "job_error": _p_job_error,
}


def parse_outbound(raw: str | bytes) -> OutboundFrame:
    """Parse an agent -> coordinator frame (sandbox coordinator side). Raises only FrameError."""
    frame_type, obj = _decode(raw)
    parser = _OUTBOUND.get(frame_type)
    if parser is None:
        return UnknownFrame(frame_type)
    return parser(_Reader(frame_type, obj))
