"""The HTTP client every backend kind uses: the job hot path.

:class:`HttpBackend` is the client base: per backend one :class:`httpx.AsyncClient`
(HTTP/1.1, connections reused; streaming requests spread over clients of at most
:data:`STREAM_SHARD_SIZE` running requests each), health and model-list calls, and `execute`,
which streams a job upstream and relays each chunk to the sink at once and unmodified
(`Accept-Encoding: identity`, so the bytes are the real SSE text). :class:`LocalBackend` is a
server the operator runs (no key, no proxy), :class:`RemoteBackend` a hosted API paid with the
operator's key. The per-kind modules subclass those two and hold only quirks.

What goes over the wire and what an answer means (request shaping, the BYOK allow-list, usage,
error answers) is :mod:`usepod_desktop.core.backends.openai_compat`. Transport failures
become a ``BackendError`` in one place, :func:`backend_error_of`, over ``core/net.py``'s
``failure_of``: connect failure -> backend_unreachable; timeout -> backend_timeout.

Streams have no read timeout: the executor bounds every job with its deadline and cancels the
task, which closes the upstream request. Health and model-list calls use a short timeout
(:attr:`HttpBackend.probe_timeout`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
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
from usepod_desktop.core.backends.openai_compat import (
    DEFAULT_BYOK_MAX_TOKENS,
    SseUsageScanner,
    byok_request,
    classify_http_error,
    context_window_of,
    decode_json,
    encode_request,
    is_error_answer,
    is_json_content_type,
    stream_error,
    usage_of_answer,
)
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.logsetup import register_secret
from usepod_desktop.core.net import (
    NET_ERRORS,
    BodyTooLarge,
    NetFailure,
    connect_failure_text,
    error_message_of,
    error_text,
    failure_of,
    read_capped,
    read_limited,
)
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.core.text import redact_url

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_MODELS_BODY",
    "PROBE_TIMEOUT",
    "HttpBackend",
    "LocalBackend",
    "RemoteBackend",
    "backend_error_of",
    "local_base_url",
    "quick_ack",
]

#: Seconds to open a TCP (+TLS) connection to a backend.
CONNECT_TIMEOUT = 10.0
#: Seconds a health check or model-list call may take, end to end.
PROBE_TIMEOUT = 5.0
#: Idle pooled connections are dropped after this many seconds: below the 5 s keep-alive of
#: uvicorn (vLLM) and cpp-httplib (llama.cpp), so we never reuse a socket the server is closing.
KEEPALIVE_EXPIRY = 3.0
#: Running streaming requests per httpx client (see HttpBackend._shards). The pool walk at
#: each request start and end is O(connections in the client): 8 measured ~18% less agent CPU
#: per event than 16 at 16 concurrent jobs; 4 saved a little more but doubled the tray app's
#: event-loop lag with 64 unpaced streams (BENCHMARKS.md).
STREAM_SHARD_SIZE = 8
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


# ------------------------------------------------------------------------------ transport errors


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


# ------------------------------------------------------------------------------ responses


#: Headers that describe the body on the wire, not the decoded body read_limited returns.
_DECODED = frozenset({"content-encoding", "content-length", "transfer-encoding"})


async def _read_error_body(response: httpx.Response) -> bytes:
    """An error body, bounded in size and time (a stalled error body must not hold the job)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            return await read_capped(response, MAX_ERROR_BODY)
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


# ------------------------------------------------------------------------------ the backend


class HttpBackend(Backend):
    """The client base: an OpenAI-compatible server over HTTP. Subclasses set the class
    attributes and override the `_judge_health` / `_parse_models` / `_enrich_models` /
    `_shape_request` hooks for their quirks."""

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
        if transport is None:
            # One TLS context for all of this backend's clients (the shards below): httpx would
            # build one per client, ~35 ms of CPU and ~130 KB each (the CA bundle loaded again).
            self._client_options["verify"] = httpx.create_ssl_context(trust_env=trust_env)
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
        endpoint, payload, headers = encode_request(
            body, job, kind=self.kind, supports_anthropic=self.supports_anthropic
        )
        return (self.messages_url if endpoint == "messages" else self.chat_url), payload, headers

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
                if is_json_content_type(resp.headers.get("content-type", "")):
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
        return stream_error(self.kind, message)

    async def _json_answer(self, resp: httpx.Response, sink: ChunkSink, anthropic: bool) -> Usage:
        """A JSON body where a stream was asked for: an error disguised as 200 (LM Studio's
        `{"error": ...}`), or a server that ignored `stream`. Errors raise; a real answer is
        relayed whole, in JSON_SLICE pieces; one over MAX_JSON_ANSWER raises before any byte
        is relayed."""
        body = await read_capped(resp, MAX_JSON_ANSWER + 1)
        if len(body) > MAX_JSON_ANSWER:
            raise BackendError(
                ErrorCode.INTERNAL,
                f"{self.kind}: non-streamed answer larger than {MAX_JSON_ANSWER // 2**20} MiB; "
                "not relayed (ask for a shorter answer, or serve it streamed)",
            )
        if is_error_answer(body):
            raise classify_http_error(self.kind, resp.status_code, body, anthropic=anthropic)
        view = memoryview(body)
        for start in range(0, len(body), JSON_SLICE):
            await sink(bytes(view[start : start + JSON_SLICE]))
        return usage_of_answer(body)


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


class LocalBackend(HttpBackend):
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


class RemoteBackend(HttpBackend):
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
