"""The OpenAI-compatible wire, as every backend kind speaks it: what a job's request becomes
upstream, what a remote (BYOK) backend may be sent, and what an answer or an error means. Pure
functions; the HTTP client that applies them is :mod:`usepod_desktop.core.backends.http`.

Requests (docs/files.md, "Backends", "beyond" included; :func:`encode_request`): `stream` is
forced to true, `stream_options.include_usage` set to true (also inside an existing
`stream_options`) and `model` always set to the routed model id. Local backends get every
other field untouched. Remote (BYOK) backends, paid with the operator's key, get only an
allow-list of standard fields (:func:`byok_request`): provider routing and paid tools
(`models`, `route`, `provider`, `plugins`, `web_search_options`, `transforms`, server-side
tools, ...) are dropped, `n` > 1 is refused (`invalid_request`) and `max_tokens` is capped at
the model's context length, so no request can make the key pay for another model, another
provider, a paid tool or several answers at the advertised price of one.

Usage: token counts are read on the side of the relayed bytes by
:class:`~usepod_desktop.core.backends.sse.SseUsageScanner` (re-exported here), which costs a
couple of substring searches per chunk and decodes JSON only for the few lines that carry
`"usage"` or `"error"`; a JSON answer where a stream was asked for is read whole
(:func:`usage_of_answer`).

Error answers (docs/files.md, "Backends") -> `ErrorCode` (:func:`classify_http_error`): 404 or
a "model not found" body -> model_not_loaded; 401/403 -> auth_rejected_by_backend; 408/504 ->
backend_timeout; anything else -> internal (status plus a short one-line body). Transport
failures (connect, timeout, disconnect) are classified by the client
(``http.backend_error_of`` over ``core/net.py``'s ``failure_of``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal, TypeAlias

from usepod_desktop.core.backends.base import BackendError, JobRequest, Usage, one_line
from usepod_desktop.core.backends.sse import SseUsageScanner, json_count
from usepod_desktop.core.net import connect_failure_text, error_message_of, error_text
from usepod_desktop.core.protocol import ErrorCode

__all__ = [
    "BYOK_ANTHROPIC_FIELDS",
    "BYOK_OPENAI_FIELDS",
    "DEFAULT_BYOK_MAX_TOKENS",
    "Endpoint",
    "SseUsageScanner",
    "byok_request",
    "classify_http_error",
    "connect_failure_text",
    "context_window_of",
    "decode_json",
    "encode_request",
    "error_message_of",
    "error_text",
    "is_error_answer",
    "is_json_content_type",
    "json_count",
    "stream_error",
    "usage_of_answer",
]

JSON_HEADERS = {"Content-Type": "application/json"}
ANTHROPIC_HEADERS = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}
#: Which upstream endpoint a job goes to: `/chat/completions` or `/messages` (Anthropic).
Endpoint: TypeAlias = Literal["chat", "messages"]


# ------------------------------------------------------------------------------ error mapping

_MODEL_MISSING = re.compile(
    r"model[^.\n]{0,160}?(not found|does not exist|not exist|unknown|not available|not loaded)"
    r"|not a valid model|model_not_found|no such model|invalid model|unknown model"
    r"|model is required|loading model|model is loading",
    re.IGNORECASE,
)
_NO_ENDPOINT = re.compile(
    r"unexpected endpoint|page not found|^not found$|file not found|method not allowed",
    re.IGNORECASE,
)


def classify_http_error(
    kind: str, status: int, body: bytes | str, *, anthropic: bool = False
) -> BackendError:
    """The BackendError for a non-2xx upstream answer (or a 2xx whose body is an error)."""
    message = error_message_of(body)
    shown = f"{kind}: HTTP {status}: {message}"
    if status in (401, 403):
        return BackendError(ErrorCode.AUTH_REJECTED_BY_BACKEND, shown, status)
    if anthropic and _NO_ENDPOINT.search(message) and not _MODEL_MISSING.search(message):
        # A server without /v1/messages (Ollama < 0.14, LM Studio < 0.4.1, old vLLM).
        return BackendError(
            ErrorCode.INTERNAL,
            f"{kind} has no Anthropic Messages endpoint (HTTP {status}: {message}); "
            "update the server or serve this model from another backend",
            status,
        )
    if status == 404 or _MODEL_MISSING.search(message):
        return BackendError(ErrorCode.MODEL_NOT_LOADED, shown, status)
    if status in (408, 504):
        return BackendError(ErrorCode.BACKEND_TIMEOUT, shown, status)
    return BackendError(ErrorCode.INTERNAL, shown, status)


# ------------------------------------------------------------------------------ models


def context_window_of(entry: dict[str, Any]) -> int | None:
    """First present (positive integer) of context_length, max_model_len, context_window."""
    for key in ("context_length", "max_model_len", "context_window"):
        value = json_count(entry.get(key))
        if value:
            return value
    return None


# ------------------------------------------------------------------------------ BYOK requests

#: OpenAI chat-completion fields forwarded to a remote (BYOK) backend; every other is dropped.
BYOK_OPENAI_FIELDS = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "top_a",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "seed",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "response_format",
        "stream",
        "stream_options",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "user",
        "n",
        "reasoning_effort",
    }
)
#: Anthropic Messages fields forwarded to a remote backend (`metadata` keeps `user_id` only).
BYOK_ANTHROPIC_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
    }
)
#: Anthropic tool types run by the client (the caller executes them: no upstream charge
#: beyond tokens). Server tools (`web_search_*`, `web_fetch_*`, `code_execution_*`, ...)
#: are billed per use on the operator's key and are dropped.
_CLIENT_TOOL_PREFIXES = ("custom", "bash_", "text_editor_", "computer_", "memory_")
#: `max_tokens` cap of a remote model whose context length is unknown.
DEFAULT_BYOK_MAX_TOKENS = 131_072


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _keep_tool(tool: Any, anthropic: bool) -> bool:
    if not isinstance(tool, dict):
        return False
    kind = tool.get("type")
    if anthropic:
        return kind is None or (isinstance(kind, str) and kind.startswith(_CLIENT_TOOL_PREFIXES))
    return kind == "function"


def byok_request(
    request: dict[str, Any],
    *,
    anthropic: bool,
    extra_fields: Mapping[str, frozenset[str] | None] | None = None,
    max_tokens_cap: int,
) -> tuple[dict[str, Any], list[str]]:
    """The body a remote (BYOK) backend gets for a job's `request`, and the names of what was
    dropped (for the log). Raises BackendError(`invalid_request`) for `n` other than 1.

    Only the standard fields of the format are kept (`extra_fields`: kind-specific fields,
    mapped to the sub-keys kept inside them, None for all); only function tools (OpenAI) or
    client tools (Anthropic) are kept; `stream_options` is reduced to `include_usage`;
    `max_tokens` / `max_completion_tokens` above `max_tokens_cap` are lowered to it.
    """
    allowed = BYOK_ANTHROPIC_FIELDS if anthropic else BYOK_OPENAI_FIELDS
    extra = extra_fields or {}
    body: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in request.items():
        if key in allowed:
            body[key] = value
        elif key in extra:
            keep = extra[key]
            if keep is not None and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k in keep}
                dropped += [f"{key}.{k}" for k in request[key] if k not in keep]
            body[key] = value
        else:
            dropped.append(key)
    n = body.pop("n", None)
    if n is not None and n != 1:
        raise BackendError(
            ErrorCode.INVALID_REQUEST,
            f"n={one_line(str(n), 20)} is not served on a BYOK backend (one answer per job)",
        )
    tools = body.get("tools")
    if isinstance(tools, list):
        kept = [t for t in tools if _keep_tool(t, anthropic)]
        if len(kept) != len(tools):
            dropped.append(f"tools ({len(tools) - len(kept)} server/paid tool(s))")
            if kept:
                body["tools"] = kept
            else:
                body.pop("tools")
                body.pop("tool_choice", None)
    if anthropic:
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and set(metadata) - {"user_id"}:
            dropped.append("metadata (all but user_id)")
            body["metadata"] = {k: v for k, v in metadata.items() if k == "user_id"}
    else:
        body.pop("stream_options", None)  # set again to include_usage only by the caller
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if _is_number(value) and value > max_tokens_cap:
            body[key] = max_tokens_cap
            dropped.append(f"{key}>{max_tokens_cap}")
    return body, dropped


# ------------------------------------------------------------------------------ requests


def encode_request(
    body: dict[str, Any], job: JobRequest, *, kind: str, supports_anthropic: bool
) -> tuple[Endpoint, bytes, dict[str, str]]:
    """Endpoint, encoded body and headers for a job whose request was shaped into `body` (a
    copy the caller owns: it is changed here). Raises BackendError before any network I/O."""
    body["model"] = job.model_id
    body["stream"] = True
    endpoint: Endpoint
    if job.format == "anthropic":
        if not supports_anthropic:
            raise BackendError(
                ErrorCode.INTERNAL,
                f"{kind} has no Anthropic Messages endpoint; this model cannot serve "
                "anthropic-format jobs",
            )
        endpoint, headers = "messages", ANTHROPIC_HEADERS
    elif job.format == "openai":
        options = body.get("stream_options")
        if isinstance(options, dict):
            body["stream_options"] = {**options, "include_usage": True}
        else:
            body["stream_options"] = {"include_usage": True}
        endpoint, headers = "chat", JSON_HEADERS
    else:
        raise BackendError(ErrorCode.INTERNAL, f"unknown job format {job.format!r}")
    try:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise BackendError(ErrorCode.INTERNAL, f"job request cannot be encoded: {exc}") from None
    return endpoint, payload, headers


# ------------------------------------------------------------------------------ answers


def is_json_content_type(content_type: str) -> bool:
    """`application/json` or `*+json`: a whole JSON answer, not an SSE stream."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


def stream_error(kind: str, message: str | None) -> BackendError:
    """The error for an `error` event inside a stream that began as a success."""
    return BackendError(ErrorCode.INTERNAL, f"{kind} stream error: {message or 'error'}")


def is_error_answer(body: bytes) -> bool:
    """A JSON answer that is an error disguised as a success (LM Studio's `{"error": ...}`)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return False
    return isinstance(obj, dict) and bool(obj.get("error"))


def usage_of_answer(body: bytes) -> Usage:
    """The token usage of a whole (non-streamed) answer."""
    scanner = SseUsageScanner()
    scanner.take(body)
    return scanner.usage


def decode_json(content: bytes) -> Any:
    """JSON with floats as Decimal (prices stay exact)."""
    return json.loads(content, parse_float=Decimal)
