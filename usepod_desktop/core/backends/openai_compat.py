"""The one OpenAI-compatible HTTP client every backend kind uses: the job hot path.

Per backend there is one :class:`httpx.AsyncClient` (HTTP/1.1, connections reused). Streams have
no read timeout: the executor bounds every job with its deadline and cancels the task, which
closes the upstream request. Health and model-list calls use a short timeout
(:attr:`OpenAICompatBackend.probe_timeout`).

Execute (docs/files.md, "Backends", "beyond" included): the job's request is forwarded with
`stream` forced to true, `stream_options.include_usage` set to true (also inside an existing
`stream_options`) and `model` always set to the routed model id. Local backends get every
other field untouched. Remote (BYOK) backends, paid with the operator's key, get only an
allow-list of standard fields (:func:`byok_request`): provider routing and paid tools
(`models`, `route`, `provider`, `plugins`, `web_search_options`, `transforms`, server-side
tools, ...) are dropped, `n` > 1 is refused (`invalid_request`) and `max_tokens` is capped at
the model's context length, so no request can make the key pay for another model, another
provider, a paid tool or several answers at the advertised price of one.

Each upstream chunk goes to the sink at once and unmodified (`Accept-Encoding: identity`, so
the bytes are the real SSE text). Token usage is read on the side by
:class:`~usepod_desktop.core.backends.sse.SseUsageScanner` (re-exported here), which costs a
couple of substring searches per chunk and decodes JSON only for the few lines that carry
`"usage"` or `"error"`.

Error classes (docs/files.md, "Backends") -> `ErrorCode`: connect failure -> backend_unreachable;
timeout -> backend_timeout; 404 or a "model not found" body -> model_not_loaded; 401/403 ->
auth_rejected_by_backend; anything else -> internal (status plus a short one-line body).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import httpcore
import httpx

from usepod_desktop import __version__
from usepod_desktop.core.backends.base import (
    Backend,
    BackendError,
    ChunkSink,
    Health,
    JobRequest,
    ModelInfo,
    Usage,
    one_line,
)
from usepod_desktop.core.backends.sse import (
    SseUsageScanner,
    json_count,
)
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.logsetup import register_secret
from usepod_desktop.core.net import (
    NET_ERRORS,
    NetFailure,
    connect_failure_text,
    error_message_of,
    error_text,
    failure_of,
)
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.core.text import redact_url

__all__ = [
    "CONNECT_TIMEOUT",
    "PROBE_TIMEOUT",
    "OpenAICompatBackend",
    "SseUsageScanner",
    "backend_error_of",
    "byok_request",
    "classify_http_error",
    "connect_failure_text",
    "context_window_of",
    "decode_json",
    "error_message_of",
    "error_text",
    "json_count",
    "local_base_url",
]

#: Seconds to open a TCP (+TLS) connection to a backend.
CONNECT_TIMEOUT = 10.0
#: Seconds a health check or model-list call may take, end to end.
PROBE_TIMEOUT = 5.0
#: Idle pooled connections are dropped after this many seconds: below the 5 s keep-alive of
#: uvicorn (vLLM) and cpp-httplib (llama.cpp), so we never reuse a socket the server is closing.
KEEPALIVE_EXPIRY = 3.0
#: Running streaming requests per httpx client (see OpenAICompatBackend._shards).
STREAM_SHARD_SIZE = 16
#: How much of an error body is read (the rest is discarded).
MAX_ERROR_BODY = 16 * 1024
#: A non-streamed JSON answer to a streamed request may be this large; a larger one ends the
#: job with an error (never relayed cut short as a success).
MAX_JSON_ANSWER = 16 * 1024 * 1024
#: A JSON answer is relayed in slices of this size, so each `job_chunk` frame (base64: 4/3 of
#: it) stays far below the 16 MiB frame limit.
JSON_SLICE = 1024 * 1024
#: A model-list response body larger than this is refused (OpenRouter's is ~1 MB).
MAX_MODELS_BODY = 32 * 1024 * 1024
#: Model-list bodies fetched by a health check are reused by list_models for this long.
MODELS_CACHE_SECONDS = 10.0

log = logging.getLogger(__name__)

_USER_AGENT = f"usepod-desktop/{__version__}"
_JSON_HEADERS = {"Content-Type": "application/json"}
_ANTHROPIC_HEADERS = {"Content-Type": "application/json", "anthropic-version": "2023-06-01"}


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


def backend_error_of(
    exc: BaseException,
    kind: str,
    *,
    probe: str | None = None,
    probe_timeout: float = PROBE_TIMEOUT,
    answered: bool = False,
    relayed: int = 0,
) -> BackendError:
    """The BackendError for a request that failed in transport (one of ``net.NET_ERRORS``).

    `probe` names a health / model-list call ("GET <url>"): any timeout there is
    backend_timeout and any other failure `internal`. For a job (`probe` None): a connect
    timeout or failure is backend_unreachable; a read timeout backend_timeout; a connection
    closed before the response headers (`answered` False) backend_unreachable (nothing was
    generated or relayed), closed after them `internal` with the `relayed` byte count (the
    backend was reachable and part of the answer may be out already; the next job on a dead
    server gets backend_unreachable from its connect attempt).
    """
    failure = failure_of(exc)
    name = type(exc).__name__
    if failure is NetFailure.CONNECT:
        return BackendError(ErrorCode.BACKEND_UNREACHABLE, f"{kind}: {connect_failure_text(exc)}")
    if probe is not None:
        if failure in (NetFailure.TIMEOUT, NetFailure.CONNECT_TIMEOUT):
            return BackendError(
                ErrorCode.BACKEND_TIMEOUT, f"{kind}: {probe} timed out after {probe_timeout:g} s"
            )
        return BackendError(ErrorCode.INTERNAL, f"{kind}: {probe} failed: {name}")
    if failure is NetFailure.CONNECT_TIMEOUT:
        return BackendError(
            ErrorCode.BACKEND_UNREACHABLE,
            f"{kind}: connect timed out after {CONNECT_TIMEOUT:g} s",
        )
    if failure is NetFailure.TIMEOUT:
        return BackendError(ErrorCode.BACKEND_TIMEOUT, f"{kind}: timed out ({name})")
    if failure is NetFailure.DISCONNECTED:
        if not answered:
            return BackendError(
                ErrorCode.BACKEND_UNREACHABLE, f"{kind}: disconnected before answering ({name})"
            )
        return BackendError(
            ErrorCode.INTERNAL,
            f"{kind}: upstream connection dropped mid-stream after {relayed} bytes ({name})",
        )
    return BackendError(ErrorCode.INTERNAL, f"{kind}: request failed ({name}: {exc})")


# ------------------------------------------------------------------------------ helpers


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


def decode_json(content: bytes) -> Any:
    """JSON with floats as Decimal (prices stay exact)."""
    return json.loads(content, parse_float=Decimal)


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    """Up to `cap` bytes of a streamed response body; the rest is not read."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= cap:
            break
    return b"".join(parts)[:cap]


class BodyTooLarge(Exception):
    """A response body went past the size it may have; reading stopped at the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes; stopped reading it")
        self.limit = limit


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed response, read chunk by chunk; :class:`BodyTooLarge` as soon as
    it goes past `limit` bytes, so an endless or huge body never costs more than `limit`."""
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        if len(buf) + len(chunk) > limit:
            raise BodyTooLarge(limit)
        buf += chunk
    return bytes(buf)


#: Headers that describe the body on the wire, not the decoded body read_limited returns.
_DECODED = frozenset({"content-encoding", "content-length", "transfer-encoding"})


async def _read_error_body(response: httpx.Response) -> bytes:
    """An error body, bounded in size and time (a stalled error body must not hold the job)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            return await _read_capped(response, MAX_ERROR_BODY)
    except (TimeoutError, httpx.HTTPError):
        return b""


#: Upstream closes running in tasks of their own (see _close_response): strong references.
_CLOSING: set[asyncio.Task[None]] = set()


async def _close_response(response: httpx.Response) -> None:
    """Close a streamed response in a task of its own, so the close completes even when the job
    is cancelled while an error unwinds: the coordinator connection drops, the chunk send fails
    and the executor aborts the job at the same moment. httpx's own close, interrupted by that
    second exception, leaves the connection open and the backend generating into it. The
    caller's cancellation still propagates."""
    if response.is_closed:
        return
    task = asyncio.ensure_future(response.aclose())
    _CLOSING.add(task)
    task.add_done_callback(_close_done)
    with contextlib.suppress(Exception):  # a failed close must not hide the job's own error
        await asyncio.shield(task)


def _close_done(task: asyncio.Task[None]) -> None:
    _CLOSING.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: nothing more to do about a close that failed


@contextlib.asynccontextmanager
async def _closed_on_exit(
    stream: contextlib.AbstractAsyncContextManager[httpx.Response],
) -> AsyncIterator[httpx.Response]:
    """`client.stream(...)`, with the response closed by :func:`_close_response` on exit."""
    async with stream as response:
        try:
            yield response
        finally:
            await _close_response(response)


def _is_json(content_type: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return ctype == "application/json" or ctype.endswith("+json")


# ------------------------------------------------------------------------------ the backend


class OpenAICompatBackend(Backend):
    """An OpenAI-compatible server. Subclasses set the class attributes and override the
    `_judge_health` / `_parse_models` / `_enrich_models` hooks for their quirks."""

    kind: ClassVar[str] = "openai"  # type: ignore[misc]
    native: ClassVar[bool] = True  # type: ignore[misc]
    supports_anthropic: ClassVar[bool] = True  # type: ignore[misc]
    #: Human name used in messages ("LM Studio").
    display_name: ClassVar[str] = "OpenAI-compatible server"

    def __init__(
        self,
        config: BackendConfig,
        *,
        base_url: str,
        api_prefix: str = "/v1",
        health_path: str | None = None,
        api_key: str | None = None,
        extra_headers: dict[str, str] | None = None,
        trust_env: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.api_base = self.base_url + api_prefix
        self.chat_url = self.api_base + "/chat/completions"
        self.messages_url = self.api_base + "/messages"
        self.models_url = self.api_base + "/models"
        self.health_url = self.base_url + health_path if health_path else self.models_url
        #: Seconds for a health check or model-list call (discovery may lower it).
        self.probe_timeout = PROBE_TIMEOUT
        headers = {"Accept-Encoding": "identity", "User-Agent": _USER_AGENT}
        if api_key:
            register_secret(api_key)
            headers["Authorization"] = f"Bearer {api_key}"
        if extra_headers:
            headers.update(extra_headers)
        self._client_options: dict[str, Any] = {
            "http1": True,
            "http2": False,
            "headers": headers,
            "timeout": httpx.Timeout(connect=CONNECT_TIMEOUT, read=None, write=None, pool=None),
            "follow_redirects": False,
            # Local servers must never go through an HTTP(S)_PROXY from the environment.
            "trust_env": trust_env,
        }
        self._client = self._new_client(256, transport)  # 256 = the largest max_concurrent
        #: Streaming requests spread over clients of at most STREAM_SHARD_SIZE running requests
        #: each (the first is `_client`): httpcore walks every pooled connection, with a syscall
        #: for each idle one, whenever a request starts or ends, so one pool of 256 made each
        #: job cost O(256). Not with a caller's transport (tests): one client then.
        self._shards = [self._client]
        self._shard_running = [0]
        self._can_shard = transport is None
        self._models_cache: tuple[float, bytes] | None = None
        self._inflight = 0
        self._closed = False

    def _new_client(
        self, keepalive: int, transport: httpx.AsyncBaseTransport | None = None
    ) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=None,
                max_keepalive_connections=keepalive,  # no reconnect churn
                keepalive_expiry=KEEPALIVE_EXPIRY,
            ),
            transport=transport,
            **self._client_options,
        )
        if transport is None:
            quick_ack(client)
        return client

    def _stream_shard(self) -> int:
        """The first streaming client with room (a new one when all are full)."""
        running = self._shard_running
        for i, n in enumerate(running):
            if n < STREAM_SHARD_SIZE or not self._can_shard:
                return i
        self._shards.append(self._new_client(2 * STREAM_SHARD_SIZE))
        running.append(0)
        return len(running) - 1

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

    @property
    def inflight(self) -> int:
        """Jobs currently executing on this backend."""
        return self._inflight

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        self._closed = True
        for client in self._shards:
            await client.aclose()

    # -------------------------------------------------------------- health and models

    async def _probe_get(self, url: str) -> tuple[httpx.Response, float]:
        """GET with the short probe timeout; returns the response (its body read, at most
        :data:`MAX_MODELS_BODY` bytes, else :class:`BodyTooLarge`) and its latency in ms."""
        timeout = self.probe_timeout
        started = time.perf_counter()
        async with (
            asyncio.timeout(timeout),
            _closed_on_exit(self._client.stream("GET", url, timeout=httpx.Timeout(timeout))) as r,
        ):
            content = await read_limited(r, MAX_MODELS_BODY)
        headers = [(k, v) for k, v in r.headers.multi_items() if k.lower() not in _DECODED]
        response = httpx.Response(
            r.status_code, headers=headers, content=content, request=r.request
        )
        return response, (time.perf_counter() - started) * 1000.0

    async def health(self) -> Health:
        try:
            response, latency = await self._probe_get(self.health_url)
        except (TimeoutError, httpx.TimeoutException):
            return Health(False, None, f"timed out after {self.probe_timeout:g} s", "timeout")
        except httpx.ConnectError as exc:
            return Health(False, None, connect_failure_text(exc), "unreachable")
        except BodyTooLarge as exc:
            return Health(False, None, f"GET {redact_url(self.health_url)}: {exc}", "error")
        except Exception as exc:  # never raises: a health check is a yes/no question
            text = one_line(f"{type(exc).__name__}: {exc}", 160)
            return Health(False, None, text, "error")
        if self.health_url == self.models_url and response.is_success:
            self._models_cache = (time.monotonic(), response.content)
        return self._judge_health(response, latency)

    def _judge_health(self, response: httpx.Response, latency_ms: float) -> Health:
        """Any 2xx is up (the reference rule); kinds override for their quirks."""
        if response.is_success:
            return Health(True, latency_ms, "ok", "ok")
        message = error_message_of(response.content, 120)
        return Health(False, latency_ms, f"HTTP {response.status_code}: {message}", "error")

    async def _get_json(self, url: str, *, cache: bool = False) -> Any:
        """GET `url` (probe timeout) and decode its JSON; errors become BackendError."""
        content: bytes | None = None
        if cache and self._models_cache is not None:
            stamp, cached = self._models_cache
            if time.monotonic() - stamp < MODELS_CACHE_SECONDS:
                content = cached
            self._models_cache = None
        if content is None:
            try:
                response, _ = await self._probe_get(url)
            except BodyTooLarge as exc:
                shown = redact_url(url)
                raise BackendError(ErrorCode.INTERNAL, f"{self.kind}: GET {shown}: {exc}") from None
            except NET_ERRORS as exc:
                raise backend_error_of(
                    exc, self.kind, probe=f"GET {url}", probe_timeout=self.probe_timeout
                ) from None
            if not response.is_success:
                raise classify_http_error(self.kind, response.status_code, response.content)
            content = response.content
        if len(content) > MAX_MODELS_BODY:
            raise BackendError(ErrorCode.INTERNAL, f"{self.kind}: model list too large")
        try:
            return decode_json(content)
        except ValueError:
            raise BackendError(
                ErrorCode.INTERNAL,
                f"{self.kind}: GET {url} did not return JSON: {error_message_of(content, 80)}",
            ) from None

    async def list_models(self) -> list[ModelInfo]:
        body = await self._get_json(self.models_url, cache=True)
        if isinstance(body, dict) and body.get("error") and not isinstance(body.get("data"), list):
            raise BackendError(
                ErrorCode.INTERNAL, f"{self.display_name} error: {error_text(body['error'])}"
            )
        models = self._parse_models(body)
        return await self._enrich_models(models)

    def _model_entries(self, body: Any) -> list[dict[str, Any]]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BackendError(
                ErrorCode.INTERNAL, f"{self.kind}: unexpected model list (no 'data' array)"
            )
        return [entry for entry in data if isinstance(entry, dict)]

    def _parse_models(self, body: Any) -> list[ModelInfo]:
        """OpenAI shape `{"data": [{"id": ...}]}`; duplicate and malformed entries skipped."""
        out: list[ModelInfo] = []
        seen: set[str] = set()
        for entry in self._model_entries(body):
            model_id = entry.get("id")
            if not isinstance(model_id, str) or not model_id or model_id in seen:
                continue
            seen.add(model_id)
            out.append(self._model_info(model_id, entry))
        return out

    def _model_info(self, model_id: str, entry: dict[str, Any]) -> ModelInfo:
        return ModelInfo(model_id, context_window_of(entry))

    async def _enrich_models(self, models: list[ModelInfo]) -> list[ModelInfo]:
        """Hook: fill in what the model list lacks (Ollama: context windows)."""
        return models

    # -------------------------------------------------------------- execute

    def _shape_request(self, request: dict[str, Any], job: JobRequest) -> dict[str, Any]:
        """The request to forward (before model / stream / usage are set): a shallow copy,
        every field passed through untouched. RemoteBackend reduces it to an allow-list."""
        return dict(request)

    def _prepare(self, job: JobRequest) -> tuple[str, bytes, dict[str, str]]:
        """URL, body and headers for a job; raises BackendError before any network I/O."""
        request = job.request
        if not isinstance(request, dict):
            raise BackendError(ErrorCode.INTERNAL, "job request is not a JSON object")
        body = self._shape_request(request, job)
        body["model"] = job.model_id
        body["stream"] = True
        if job.format == "anthropic":
            if not self.supports_anthropic:
                raise BackendError(
                    ErrorCode.INTERNAL,
                    f"{self.kind} has no Anthropic Messages endpoint; this model cannot serve "
                    "anthropic-format jobs",
                )
            url, headers = self.messages_url, _ANTHROPIC_HEADERS
        elif job.format == "openai":
            options = body.get("stream_options")
            if isinstance(options, dict):
                body["stream_options"] = {**options, "include_usage": True}
            else:
                body["stream_options"] = {"include_usage": True}
            url, headers = self.chat_url, _JSON_HEADERS
        else:
            raise BackendError(ErrorCode.INTERNAL, f"unknown job format {job.format!r}")
        try:
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise BackendError(
                ErrorCode.INTERNAL, f"job request cannot be encoded: {exc}"
            ) from None
        return url, payload, headers

    async def execute(self, job: JobRequest, sink: ChunkSink) -> Usage:
        url, payload, headers = self._prepare(job)
        if self._closed:
            raise BackendError(
                ErrorCode.INTERNAL,
                f"{self.kind}: backend closed (reconfigured, or the agent is stopping)",
            )
        anthropic = job.format == "anthropic"
        self._inflight += 1
        shard = self._stream_shard()
        self._shard_running[shard] += 1
        answered = False  # response headers received
        relayed = 0
        try:
            client = self._shards[shard]
            upstream = client.stream("POST", url, content=payload, headers=headers)
            async with _closed_on_exit(upstream) as resp:
                answered = True
                if not resp.is_success:
                    body = await _read_error_body(resp)
                    raise classify_http_error(
                        self.kind, resp.status_code, body, anthropic=anthropic
                    )
                if _is_json(resp.headers.get("content-type", "")):
                    return await self._json_answer(resp, sink, anthropic)
                scanner = SseUsageScanner()
                feed = scanner.feed
                async for chunk in resp.aiter_bytes():
                    await sink(chunk)
                    relayed += len(chunk)
                    if feed(chunk):
                        raise self._stream_error(scanner.error)
                # The stream may end without `data: [DONE]` (llama.cpp after an error event).
                if scanner.finish():
                    raise self._stream_error(scanner.error)
                return scanner.usage
        except httpx.HTTPError as exc:
            raise backend_error_of(exc, self.kind, answered=answered, relayed=relayed) from None
        finally:
            self._inflight -= 1
            self._shard_running[shard] -= 1

    def _stream_error(self, message: str | None) -> BackendError:
        return BackendError(ErrorCode.INTERNAL, f"{self.kind} stream error: {message or 'error'}")

    async def _json_answer(self, resp: httpx.Response, sink: ChunkSink, anthropic: bool) -> Usage:
        """A JSON body where a stream was asked for: an error disguised as 200 (LM Studio's
        `{"error": ...}`), or a server that ignored `stream`. Errors raise; a real answer is
        relayed whole, in JSON_SLICE pieces; one over MAX_JSON_ANSWER raises before any byte
        is relayed."""
        body = await _read_capped(resp, MAX_JSON_ANSWER + 1)
        if len(body) > MAX_JSON_ANSWER:
            raise BackendError(
                ErrorCode.INTERNAL,
                f"{self.kind}: non-streamed answer larger than {MAX_JSON_ANSWER // 2**20} MiB; "
                "not relayed (ask for a shorter answer, or serve it streamed)",
            )
        try:
            obj = json.loads(body)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and obj.get("error"):
            raise classify_http_error(self.kind, resp.status_code, body, anthropic=anthropic)
        view = memoryview(body)
        for start in range(0, len(body), JSON_SLICE):
            await sink(bytes(view[start : start + JSON_SLICE]))
        scanner = SseUsageScanner()
        scanner.take(body)
        return scanner.usage


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class _QuickAckStream(httpcore.AsyncNetworkStream):
    """A backend connection that re-arms `TCP_QUICKACK` after each request write.

    A server that writes the response headers and the first SSE event with two `send()`s and
    leaves Nagle's algorithm on (the stdlib's `http.server`, many small servers) holds that
    event until the headers are acknowledged. On a kept-alive connection Linux delays that ACK
    (up to 40 ms) because the client just sent data; quick-ACK mode, set right after the
    request went out, makes the kernel acknowledge at once. Reads are the inner stream's own
    method (nothing added per chunk); one `setsockopt` per request write."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self.read = inner.read  # type: ignore[method-assign]
        self.get_extra_info = inner.get_extra_info  # type: ignore[method-assign]
        self._sock = inner.get_extra_info("socket")

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)
        if self._sock is not None:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            except (OSError, TypeError, ValueError):
                self._sock = None  # not a TCP socket after all: stop trying

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's signature)
    ) -> httpcore.AsyncNetworkStream:
        return _QuickAckStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))


class _QuickAckBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with :class:`_QuickAckStream` TCP connections."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return _QuickAckStream(await self._inner.connect_tcp(*args, **kwargs))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(*args, **kwargs)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def quick_ack(client: httpx.AsyncClient) -> bool:
    """Give `client`'s own transport quick-ACK connections (Linux; see :class:`_QuickAckStream`).

    Reaches into httpx's default transport (its httpcore pool); anything unexpected (another
    transport, a future httpx) leaves the client as it is. Returns whether it applied."""
    if _QUICKACK is None:
        return False
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    inner = getattr(pool, "_network_backend", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not isinstance(
        inner, httpcore.AsyncNetworkBackend
    ):
        return False
    pool._network_backend = _QuickAckBackend(inner)
    return True


def local_base_url(url: str) -> str:
    """A local kind's configured URL without a trailing `/` or `/v1` (both are common)."""
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return base


class LocalBackend(OpenAICompatBackend):
    """A server the operator runs (vLLM, llama.cpp, LM Studio, Ollama): no key, no proxy.
    Subclasses set `health_path` (None: the model list is the health check)."""

    health_path: str | None = None

    def __init__(
        self, config: BackendConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if not config.url:
            raise ValueError(f"{config.kind}: a url is required")
        super().__init__(
            config,
            base_url=local_base_url(config.url),
            health_path=self.health_path,
            transport=transport,
        )


class RemoteBackend(OpenAICompatBackend):
    """A hosted API reached with the operator's own key (OpenRouter, Venice). The base URL can be
    overridden through `base_url_env`, for tests only.

    Jobs are reduced by :func:`byok_request` (the key pays for whatever the request asks):
    `max_tokens` is capped at the model's context length from the last model list, and never
    above `max_tokens_cap` (default :data:`DEFAULT_BYOK_MAX_TOKENS`), which also applies to a
    model whose context length is unknown. `extra_fields`: kind-specific request fields kept."""

    default_base_url: str
    base_url_env: str
    extra_headers: dict[str, str] | None = None
    extra_fields: ClassVar[Mapping[str, frozenset[str] | None]] = {}

    def __init__(
        self,
        config: BackendConfig,
        api_key: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_tokens_cap: int = DEFAULT_BYOK_MAX_TOKENS,
    ) -> None:
        super().__init__(
            config,
            base_url=os.environ.get(self.base_url_env) or self.default_base_url,
            api_prefix="",
            api_key=api_key,
            extra_headers=self.extra_headers,
            trust_env=True,
            transport=transport,
        )
        self.max_tokens_cap = max_tokens_cap
        #: Context length per model id, from the last model list (max_tokens cap).
        self.context_windows: dict[str, int] = {}

    async def list_models(self) -> list[ModelInfo]:
        models = await super().list_models()
        self.context_windows = {
            m.model_id: m.context_window for m in models if m.context_window is not None
        }
        return models

    def _shape_request(self, request: dict[str, Any], job: JobRequest) -> dict[str, Any]:
        cap = self.max_tokens_cap
        context = self.context_windows.get(job.model_id)
        if context is not None:
            cap = min(cap, context)
        body, dropped = byok_request(
            request,
            anthropic=job.format == "anthropic",
            extra_fields=self.extra_fields,
            max_tokens_cap=cap,
        )
        if dropped:
            shown = ", ".join(one_line(name, 40) for name in dropped[:12])
            more = f" and {len(dropped) - 12} more" if len(dropped) > 12 else ""
            log.info("job %s on %s: not forwarded: %s%s", job.job_id, self.kind, shown, more)
        return body
