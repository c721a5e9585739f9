"""Faithful, fast fake inference servers for the six backend kinds.

A :class:`FakeBackend` is a real HTTP server on 127.0.0.1 (aiohttp) that imitates vLLM,
llama.cpp ``llama-server``, LM Studio, Ollama, OpenRouter or Venice on the wire, quirks
included (see docs/backends.md): the routes, the model-list bodies, the error
bodies, the SSE framing of OpenAI chat streams and of Anthropic ``/v1/messages`` streams,
and a set of failure modes (:class:`FailMode`).  The test suite, the benchmarks and the
app's sandbox/demo mode all run against these.

Usage::

    async with FakeBackend("vllm", ["Qwen/Qwen3-8B"], tokens_per_second=50) as fake:
        url = fake.url                      # "http://127.0.0.1:PORT"
        ...
        fake.fail_mode = FailMode.DIE_MID_STREAM
        assert fake.requests[-1].json["model"] == "Qwen/Qwen3-8B"

Failure modes, and where they apply:

* ``REFUSE``: nothing listens on the port (connection refused). Setting it, either by
  assignment or with ``await fake.set_fail_mode(...)``, closes the listening socket at
  once *and* drops every open connection (like a dead process), keeping the port number;
  setting any other mode binds the same port again (``set_fail_mode`` waits until the
  server accepts; after a plain assignment the socket is already listening and the first
  connections wait in the backlog a moment).  vLLM's ``LOADING`` behaves the same,
  because a loading vLLM does not listen yet.  ``stop()`` / ``start(port=...)`` also work.
* ``LOADING``: llama.cpp answers EVERY route 503 "Loading model"; LM Studio's model lists
  answer 200 with an ``{"error": ...}`` body and inference requests block until the mode
  changes (JIT loading); Ollama has no loading state, inference requests block until the
  mode changes; the hosted kinds answer 503.
* ``ERROR_STATUS``: inference routes answer ``error_status`` with the kind's error body
  (OpenRouter 402 = out of credits, 429 carries ``Retry-After``; Venice 503 is the
  MODEL_OFFLINE message); vLLM's ``/health`` answers 503 too; LM Studio's model lists
  answer 200 with an ``{"error": ...}`` body.
* ``HANG``: inference requests are accepted and never answered (health and model routes
  still work, so discovery succeeds) until the client goes away or the fake stops.
* ``DIE_MID_STREAM`` / ``ERROR_EVENT`` / ``HANG_MID_STREAM``: after ``fail_after_chunks``
  content chunks (or after all of them when the answer is shorter) the connection is
  closed without the chunked terminator / the kind's mid-stream error event is sent /
  the stream stalls.  For ``stream: false`` requests they mean: connection closed
  without an answer / HTTP 500 with the kind's error body / no answer.

A stream truncated by the request's ``max_tokens`` ends with ``finish_reason "length"``
(Anthropic: ``stop_reason "max_tokens"``), as the real servers do; otherwise "stop".

Run one by hand: ``python -m usepod_desktop.sandbox.fakes ollama --model llama3.2:latest``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from usepod_desktop.sandbox import fake_kinds as K

__all__ = ["FailMode", "FakeBackend", "FakeModel", "RecordedRequest"]

JSON = dict[str, Any]
_BACKLOG = 1024
_SHUTDOWN_TIMEOUT = 0.25
_YIELD_EVERY = 16  # unpaced streams yield to the loop every N chunks
_DONE = b"data: [DONE]\n\n"
_OR_COMMENT = b": OPENROUTER PROCESSING\n\n"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _dumpb(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ------------------------------------------------------------------------------ public types


@dataclass
class FakeModel:
    """One model a fake serves.  Prices are USD per token."""

    id: str
    context_length: int | None = 4096
    prompt_price: float | None = None
    completion_price: float | None = None


class FailMode(enum.StrEnum):
    NONE = "none"
    REFUSE = "refuse"
    LOADING = "loading"
    ERROR_STATUS = "error_status"
    DIE_MID_STREAM = "die_mid_stream"
    ERROR_EVENT = "error_event"
    HANG = "hang"
    HANG_MID_STREAM = "hang_mid_stream"


_MID_STREAM = frozenset({FailMode.DIE_MID_STREAM, FailMode.ERROR_EVENT, FailMode.HANG_MID_STREAM})


class Headers(dict[str, str]):
    """Request headers, keys lower-cased; lookups are case-insensitive."""

    __slots__ = ()

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class RecordedRequest:
    """A request the fake received (``json`` is None for no body or a body that is not JSON)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any = None


# ------------------------------------------------------------------------------ tokens


def _token_text(i: int) -> str:
    return f"tok{i}" if i == 0 else f" tok{i}"


_TOKEN_JSON: list[bytes] = []


def _tokens_json(n: int) -> list[bytes]:
    """JSON string literals of the first n tokens (cached, grows on demand)."""
    cache = _TOKEN_JSON
    while len(cache) < n:
        cache.append(_dumpb(_token_text(len(cache))))
    return cache


def _words(content: Any) -> int:
    if isinstance(content, str):
        return len(content.split())
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += len(part.split())
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                total += len(part["text"].split())
        return total
    return 0


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


# ------------------------------------------------------------------------------ stream frames


@dataclass
class _Answer:
    """What one inference request is going to produce."""

    model: str  # as the request named it
    fake_model: FakeModel
    n_prompt: int
    n_out: int
    truncated: bool
    want_usage: bool
    created: int
    ident: str


class _ChatFrames:
    """Pre-encoded pieces of an OpenAI ``chat.completion.chunk`` stream."""

    anthropic = False

    def __init__(self, fake: FakeBackend, a: _Answer) -> None:
        self.fake = fake
        self.a = a
        common = (
            f'{{"id":{_dumps(a.ident)},"object":"chat.completion.chunk",'
            f'"created":{a.created},"model":{_dumps(a.model)},'
        )
        self.common = common
        if fake.kind == "ollama":  # Ollama puts the role in every delta, no separate role chunk
            self.head = b""
            delta = '{"role":"assistant","content":'
        else:
            self.head = (
                f'data: {common}"choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},'
                f'"logprobs":null,"finish_reason":null}}]}}\n\n'
            ).encode()
            delta = '{"content":'
        self.pre = f'data: {common}"choices":[{{"index":0,"delta":{delta}'.encode()
        self.post = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def tail(self, sent: int, t_start: float, t_first: float, t_end: float) -> bytes:
        a = self.a
        finish = "length" if a.truncated else "stop"
        delta = '{"role":"assistant","content":""}' if self.fake.kind == "ollama" else "{}"
        out = (
            f'data: {self.common}"choices":[{{"index":0,"delta":{delta},"logprobs":null,'
            f'"finish_reason":"{finish}"}}]}}\n\n'
        )
        if a.want_usage:
            extra = ""
            if self.fake.kind == "llamacpp":
                extra = ',"timings":' + _dumps(_timings(a.n_prompt, sent, t_start, t_first, t_end))
            usage = _dumps(self.fake._usage(a.fake_model, a.n_prompt, sent))
            out += f'data: {self.common}"choices":[],"usage":{usage}{extra}}}\n\n'
        return out.encode() + _DONE

    def error(self) -> bytes:
        body, done = K.mid_stream_error(
            self.fake.kind, chunk_id=self.a.ident, created=self.a.created, model=self.a.model
        )
        return b"data: " + _dumpb(body) + b"\n\n" + (_DONE if done else b"")


def _sse(event: str, data: JSON) -> bytes:
    return f"event: {event}\ndata: {_dumps(data)}\n\n".encode()


class _AnthropicFrames:
    """Pre-encoded pieces of an Anthropic Messages stream."""

    anthropic = True

    def __init__(self, fake: FakeBackend, a: _Answer) -> None:
        self.a = a
        message = {
            "id": a.ident,
            "type": "message",
            "role": "assistant",
            "model": a.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": a.n_prompt, "output_tokens": 1},
        }
        self.head = _sse("message_start", {"type": "message_start", "message": message}) + _sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        self.pre = (
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":'
        )
        self.post = b"}}\n\n"

    def tail(self, sent: int, t_start: float, t_first: float, t_end: float) -> bytes:
        stop = "max_tokens" if self.a.truncated else "end_turn"
        return (
            _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            + _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": sent},
                },
            )
            + _sse("message_stop", {"type": "message_stop"})
        )

    def error(self) -> bytes:
        return _sse(
            "error",
            {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
        )


def _timings(n_prompt: int, n_out: int, t_start: float, t_first: float, t_end: float) -> JSON:
    prompt_ms = max((t_first - t_start) * 1000.0, 0.001)
    predicted_ms = max((t_end - t_first) * 1000.0, 0.001)
    return {
        "cache_n": 0,
        "prompt_n": n_prompt,
        "prompt_ms": round(prompt_ms, 3),
        "prompt_per_token_ms": round(prompt_ms / max(n_prompt, 1), 3),
        "prompt_per_second": round(n_prompt * 1000.0 / prompt_ms, 3),
        "predicted_n": n_out,
        "predicted_ms": round(predicted_ms, 3),
        "predicted_per_token_ms": round(predicted_ms / max(n_out, 1), 3),
        "predicted_per_second": round(n_out * 1000.0 / predicted_ms, 3),
    }


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if os.name == "posix":  # on Windows SO_REUSEADDR would allow port stealing
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


_Handler = Callable[[web.BaseRequest, Any], Awaitable[web.StreamResponse]]
_INVALID = object()  # a request body that is not JSON


# ------------------------------------------------------------------------------ the server


class FakeBackend:
    """A loopback HTTP server that behaves like one backend kind (see the module docs)."""

    #: When more requests than this are recorded, the oldest half is dropped.
    MAX_RECORDED = 10_000

    def __init__(
        self,
        kind: str,
        models: Sequence[str | FakeModel] = ("fake-model",),
        *,
        tokens_per_second: float | None = None,
        ttft_s: float = 0.0,
        output_tokens: int = 8,
        include_usage: str = "auto",
        fail_mode: FailMode = FailMode.NONE,
        fail_after_chunks: int = 2,
        error_status: int = 500,
        api_key: str | None = None,
        sleep_mode: bool = False,
    ) -> None:
        """`sleep_mode` (vLLM): serve `/sleep`, `/wake_up`, `/is_sleeping`, as vLLM does when
        started with `--enable-sleep-mode` and `VLLM_SERVER_DEV_MODE=1` (else they are 404)."""
        if kind not in K.KINDS:
            raise ValueError(f"unknown backend kind {kind!r}; expected one of {', '.join(K.KINDS)}")
        if include_usage not in ("auto", "always", "never"):
            raise ValueError("include_usage must be 'auto', 'always' or 'never'")
        self.kind = kind
        self.models: list[FakeModel] = [
            m if isinstance(m, FakeModel) else FakeModel(m) for m in models
        ]
        self.tokens_per_second = tokens_per_second
        self.ttft_s = ttft_s
        self.output_tokens = output_tokens
        self.include_usage = include_usage
        self.fail_after_chunks = fail_after_chunks
        self.error_status = error_status
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        #: Models in (GPU) memory now: Ollama / LM Studio unload and load them.
        self.loaded: set[str] = {m.id for m in self.models}
        self.sleep_mode = sleep_mode
        self.sleeping = False  # vLLM sleep mode: weights offloaded
        self._fail_mode = FailMode(fail_mode)
        self._runner: web.ServerRunner | None = None
        self._server: asyncio.AbstractServer | None = None
        self._pending: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._running = False
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._routes: dict[tuple[str, str], _Handler] = self._build_routes()

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL to configure the backend with (kept after ``stop()``)."""
        if self._port is None:
            raise RuntimeError("FakeBackend not started")
        base = f"http://127.0.0.1:{self._port}"
        return base + "/api/v1" if self.kind in K.REMOTE_KINDS else base

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def fail_mode(self) -> FailMode:
        return self._fail_mode

    @fail_mode.setter
    def fail_mode(self, mode: FailMode | str) -> None:
        self._fail_mode = FailMode(mode)
        self._notify()
        self._sync_listening()

    async def set_fail_mode(self, mode: FailMode | str) -> None:
        """Set the mode and, when it makes the server listen again, wait until it accepts."""
        self.fail_mode = mode
        pending = self._pending
        if pending is not None:
            await asyncio.shield(pending)
        await asyncio.sleep(0)  # let dropped connections finish closing

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:port (0 = any free port) and return :attr:`url`."""
        if self._running:
            if port and port != self._port:
                raise RuntimeError(f"already running on port {self._port}")
            return self.url
        sock = _bind(port)  # first, so a busy port fails before anything is set up
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        server = web.Server(
            self._handle, handler_cancellation=True, access_log=None, keepalive_timeout=75.0
        )
        runner = web.ServerRunner(server, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        try:
            await runner.setup()
        except BaseException:
            sock.close()
            raise
        self._runner = runner
        self._port = sock.getsockname()[1]
        self._running = True
        if self._refusing():
            sock.close()  # the port number is kept; nothing listens
        else:
            await self._serve(sock)
        return self.url

    async def stop(self) -> None:
        """Stop listening, end open connections.  ``start()`` may be called again."""
        if not self._running:
            return
        self._running = False
        self._stopping.set()
        self._notify()
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._pending)
        if self._server is not None:
            self._server.close()
            self._server = None
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _refusing(self) -> bool:
        mode = self._fail_mode
        return mode is FailMode.REFUSE or (mode is FailMode.LOADING and self.kind == "vllm")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _sync_listening(self) -> None:
        """Make the listening state match the mode (synchronously, so it holds at once)."""
        if not self._running:
            return
        if self._refusing():
            if self._server is not None:
                self._server.close()  # closes the listening socket right now
                self._server = None
            self._drop_connections()
        elif self._server is None and self._pending is None and self._port is not None:
            loop = asyncio.get_running_loop()
            sock = _bind(self._port)  # listening from here on; accepted once _serve runs
            self._pending = loop.create_task(self._serve(sock))

    def _drop_connections(self) -> None:
        """End every open connection now, like a dead process (FIN sent synchronously)."""
        runner = self._runner
        if runner is None or runner.server is None:
            return
        for conn in runner.server.connections:
            transport = conn.transport
            if transport is not None:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            conn.force_close()

    async def _serve(self, sock: socket.socket) -> None:
        try:
            runner = self._runner
            if runner is None or runner.server is None:
                sock.close()
                return
            loop = asyncio.get_running_loop()
            server = await loop.create_server(runner.server, sock=sock, backlog=_BACKLOG)
            if self._running and not self._refusing() and self._server is None:
                self._server = server
            else:
                server.close()
        finally:
            if self._pending is asyncio.current_task():
                self._pending = None

    # ---------------------------------------------------------------- helpers

    def count_prompt_tokens(self, body: dict[str, Any]) -> int:
        """Prompt tokens the fake reports: per message 4 + its whitespace-separated words
        (text parts of list contents count); an Anthropic ``system`` counts as a message;
        a plain ``prompt`` counts its words."""
        n = 0
        if "system" in body:
            n += 4 + _words(body["system"])
        messages = body.get("messages")
        if isinstance(messages, list):
            for m in messages:
                n += 4 + (_words(m.get("content")) if isinstance(m, dict) else 0)
        if "prompt" in body:
            n += _words(body["prompt"])
        return n

    def expected_text(self, n_tokens: int) -> str:
        """The content the fake streams for n tokens: ``"tok0 tok1 ... tok{n-1}"``."""
        return "".join(_token_text(i) for i in range(n_tokens))

    def _find_model(self, name: str) -> FakeModel | None:
        for m in self.models:
            if m.id == name:
                return m
        if self.kind == "ollama":  # "llama3.2" is "llama3.2:latest"
            if name.endswith(":latest"):
                alt = name.removesuffix(":latest")
            elif ":" not in name:
                alt = name + ":latest"
            else:
                return None
            for m in self.models:
                if m.id == alt:
                    return m
        return None

    def _usage(self, model: FakeModel, n_prompt: int, n_out: int) -> JSON:
        usage: JSON = {
            "prompt_tokens": n_prompt,
            "completion_tokens": n_out,
            "total_tokens": n_prompt + n_out,
        }
        if self.kind == "openrouter" and (
            model.prompt_price is not None or model.completion_price is not None
        ):
            cost = (model.prompt_price or 0.0) * n_prompt + (model.completion_price or 0.0) * n_out
            usage["cost"] = round(cost, 12)
        return usage

    def _want_usage(self, body: JSON) -> bool:
        if self.include_usage == "always":
            return True
        if self.include_usage == "never":
            return False
        if self.kind == "openrouter":
            return True
        options = body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    def _ident(self, anthropic: bool) -> str:
        rnd = os.urandom(12).hex()
        if anthropic:
            return f"msg_{rnd}"
        if self.kind == "openrouter":
            return f"gen-{int(time.time())}-{rnd[:20]}"
        return f"chatcmpl-{rnd}"

    @staticmethod
    def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(
            status=status, body=_dumpb(body), content_type="application/json", headers=headers
        )

    def _error(
        self, status: int, message: str | None = None, *, anthropic: bool = False
    ) -> web.Response:
        msg = message or K.default_message(self.kind, status)
        body = K.error_body(self.kind, status, msg, anthropic=anthropic)
        return self._json(status, body, K.error_headers(self.kind, status))

    def _record(self, request: web.BaseRequest, body: Any) -> None:
        reqs = self.requests
        if len(reqs) >= self.MAX_RECORDED:
            del reqs[: len(reqs) // 2]
        headers = Headers((k.lower(), v) for k, v in request.headers.items())
        reqs.append(RecordedRequest(request.method, request.path, headers, body))

    def _auth_error(self, request: web.BaseRequest) -> web.Response | None:
        key = self.api_key
        if key is None or self.kind not in K.AUTH_KINDS:
            return None
        header = request.headers.get("Authorization")
        if header is None or not header.lower().startswith("bearer "):
            return self._json(*K.unauthorized(self.kind, missing=True))
        if header[7:].strip() != key:
            return self._json(*K.unauthorized(self.kind, missing=False))
        return None

    async def _wait_until_loaded(self) -> bool:
        """Block while the mode is LOADING (Ollama / LM Studio JIT).  False if stopping."""
        while self._fail_mode is FailMode.LOADING:
            if not self._running:
                return False
            await self._changed.wait()
        return self._running

    async def _hang(self, request: web.BaseRequest) -> None:
        """Never answer: until the client goes away (the handler is cancelled) or stop()."""
        await self._stopping.wait()
        if request.transport is not None:
            request.transport.close()

    @staticmethod
    def _die(request: web.BaseRequest) -> None:
        """Close the connection without ending the response (no chunked terminator)."""
        if request.transport is not None:
            request.transport.close()

    # ---------------------------------------------------------------- dispatch

    def _build_routes(self) -> dict[tuple[str, str], _Handler]:
        p = K.api_prefix(self.kind)
        routes: dict[tuple[str, str], _Handler] = {
            ("GET", f"{p}/models"): self._models,
            ("POST", f"{p}/chat/completions"): self._chat,
        }
        if K.has_messages(self.kind):
            routes[("POST", f"{p}/messages")] = self._messages
        if self.kind == "vllm":
            routes[("GET", "/health")] = self._vllm_health
            routes[("GET", "/version")] = self._vllm_version
            if self.sleep_mode:
                routes[("POST", "/sleep")] = self._vllm_sleep
                routes[("POST", "/wake_up")] = self._vllm_wake_up
                routes[("GET", "/is_sleeping")] = self._vllm_is_sleeping
        elif self.kind == "llamacpp":
            routes[("GET", "/health")] = self._llamacpp_health
            routes[("GET", "/v1/health")] = self._llamacpp_health
            routes[("GET", "/models")] = self._models
            routes[("POST", "/chat/completions")] = self._chat
        elif self.kind == "lmstudio":
            routes[("GET", "/api/v0/models")] = self._lmstudio_v0_models
            routes[("GET", "/api/v1/models")] = self._lmstudio_v1_models
            routes[("POST", "/api/v1/models/load")] = self._lmstudio_load
            routes[("POST", "/api/v1/models/unload")] = self._lmstudio_unload
        elif self.kind == "ollama":
            routes[("GET", "/")] = self._ollama_root
            routes[("GET", "/api/version")] = self._ollama_version
            routes[("GET", "/api/tags")] = self._ollama_tags
            routes[("POST", "/api/show")] = self._ollama_show
            routes[("POST", "/api/generate")] = self._ollama_generate
            routes[("GET", "/api/ps")] = self._ollama_ps
        return routes

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body: Any = None
        if request.body_exists:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = _INVALID
        self._record(request, None if body is _INVALID else body)
        if self._fail_mode is FailMode.LOADING and self.kind == "llamacpp":
            return self._json(*K.loading_error(self.kind))  # every route, /health included
        method = request.method
        handler = self._routes.get(("GET" if method == "HEAD" else method, request.path))
        if handler is None:
            path = request.path
            wrong_method = any(p == path for _, p in self._routes)
            status, payload = K.unknown_route(self.kind, method, path, wrong_method=wrong_method)
            if isinstance(payload, str):
                return web.Response(status=status, text=payload, content_type="text/plain")
            return self._json(status, payload)
        return await handler(request, body)

    # ---------------------------------------------------------------- simple routes

    async def _models(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        if self.kind == "lmstudio" and self._fail_mode in (FailMode.LOADING, FailMode.ERROR_STATUS):
            return self._lmstudio_failure()
        return self._json(200, K.models_body(self.kind, self.models))

    def _lmstudio_failure(self) -> web.Response:
        if self._fail_mode is FailMode.LOADING:
            return self._json(*K.loading_error("lmstudio"))
        return self._json(
            200, {"error": "Failed to list models: the LM Studio server is not ready"}
        )

    async def _lmstudio_v0_models(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        if self._fail_mode in (FailMode.LOADING, FailMode.ERROR_STATUS):
            return self._lmstudio_failure()
        return self._json(200, K.lmstudio_v0_models(self.models))

    async def _vllm_health(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        status = 503 if self._fail_mode is FailMode.ERROR_STATUS else 200
        return web.Response(status=status)

    async def _vllm_version(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return self._json(200, {"version": "0.11.0"})

    async def _llamacpp_health(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return self._json(200, {"status": "ok"})

    async def _ollama_root(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return web.Response(text="Ollama is running", content_type="text/plain")

    async def _ollama_version(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return self._json(200, {"version": K.OLLAMA_VERSION})

    async def _ollama_tags(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return self._json(200, K.ollama_tags(self.models))

    async def _ollama_show(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        if not isinstance(body, dict):
            return self._json(400, {"error": "invalid request body"})
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            return self._json(400, {"error": "model is required"})
        model = self._find_model(name)
        if model is None:
            return self._json(404, {"error": f"model '{name}' not found"})
        return self._json(200, K.ollama_show(model))

    # ---------------------------------------------------------------- memory (unload/load)

    async def _ollama_generate(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        """`POST /api/generate` without a prompt: load the model, or unload it with
        `keep_alive: 0` (Ollama's documented way); with a prompt: a short answer."""
        if not isinstance(body, dict):
            return self._json(400, {"error": "invalid request body"})
        name = body.get("model")
        if not isinstance(name, str) or not name:
            return self._json(400, {"error": "model is required"})
        model = self._find_model(name)
        if model is None:
            return self._json(404, {"error": f"model '{name}' not found"})
        keep_alive = body.get("keep_alive")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        answer: JSON = {"model": name, "created_at": stamp, "response": "", "done": True}
        if not body.get("prompt"):
            if keep_alive in (0, "0", "0s", "0m"):
                self.loaded.discard(model.id)
                answer["done_reason"] = "unload"
            else:
                self.loaded.add(model.id)
                answer["done_reason"] = "load"
            return self._json(200, answer)
        self.loaded.add(model.id)
        answer.update(response=self.expected_text(self.output_tokens), done_reason="stop")
        return self._json(200, answer)

    async def _ollama_ps(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return self._json(200, K.ollama_ps(self.models, self.loaded))

    async def _lmstudio_v1_models(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return self._json(200, K.lmstudio_v1_models(self.models, self.loaded))

    async def _lmstudio_load(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        name = body.get("model") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return self._json(400, {"error": "'model' is required"})
        model = self._find_model(name)
        if model is None:
            return self._json(404, {"error": f"Model '{name}' not found"})
        self.loaded.add(model.id)
        return self._json(
            200,
            {
                "type": "llm",
                "instance_id": model.id,
                "load_time_seconds": 0.01,
                "status": "loaded",
            },
        )

    async def _lmstudio_unload(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        instance = body.get("instance_id") if isinstance(body, dict) else None
        if not isinstance(instance, str) or not instance:
            return self._json(400, {"error": "'instance_id' is required"})
        if instance not in self.loaded:
            return self._json(404, {"error": f"No loaded model instance '{instance}'"})
        self.loaded.discard(instance)
        return self._json(200, {"instance_id": instance})

    async def _vllm_sleep(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        level = request.query.get("level", "1")
        if level not in ("1", "2"):
            return self._json(400, {"error": f"invalid sleep level {level!r}"})
        self.sleeping = True
        return web.Response(status=200)

    async def _vllm_wake_up(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        self.sleeping = False
        return web.Response(status=200)

    async def _vllm_is_sleeping(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return self._json(200, {"is_sleeping": self.sleeping})

    # ---------------------------------------------------------------- inference

    async def _chat(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return await self._inference(request, body, anthropic=False)

    async def _messages(self, request: web.BaseRequest, body: Any) -> web.StreamResponse:
        return await self._inference(request, body, anthropic=True)

    async def _inference(
        self, request: web.BaseRequest, body: Any, *, anthropic: bool
    ) -> web.StreamResponse:
        denied = self._auth_error(request)
        if denied is not None:
            return denied
        kind = self.kind
        mode = self._fail_mode
        if mode is FailMode.LOADING:
            if kind in ("ollama", "lmstudio"):
                if not await self._wait_until_loaded():
                    return web.Response(status=503)
            else:
                return self._json(*K.loading_error(kind))
        elif mode is FailMode.HANG:
            await self._hang(request)
            return web.Response(status=503)
        elif mode is FailMode.ERROR_STATUS:
            return self._error(self.error_status, anthropic=anthropic)
        if not isinstance(body, dict):
            return self._error(400, "Invalid JSON body", anthropic=anthropic)
        name = body.get("model")
        if name is None and self.models:
            name = self.models[0].id
        if not isinstance(name, str):
            return self._error(400, "model must be a string", anthropic=anthropic)
        model = self._find_model(name)
        if model is None:
            status, payload = K.not_found(kind, name, anthropic=anthropic)
            return self._json(status, payload)
        n_prompt = self.count_prompt_tokens(body)
        max_tokens = _as_int(body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = _as_int(body.get("max_completion_tokens"))
        if model.context_length is not None:
            overflow = K.context_overflow(kind, n_prompt, model.context_length, max_tokens)
            if overflow is not None:
                return self._json(*overflow)
        n_out = max(self.output_tokens, 0)
        truncated = max_tokens is not None and max_tokens < n_out
        if truncated:
            n_out = max(max_tokens or 0, 0)
        answer = _Answer(
            model=name,
            fake_model=model,
            n_prompt=n_prompt,
            n_out=n_out,
            truncated=truncated,
            want_usage=self._want_usage(body),
            created=int(time.time()),
            ident=self._ident(anthropic),
        )
        if body.get("stream"):
            frames = _AnthropicFrames(self, answer) if anthropic else _ChatFrames(self, answer)
            return await self._stream(request, frames)
        return await self._complete(request, answer, anthropic)

    async def _stream(
        self, request: web.BaseRequest, frames: _ChatFrames | _AnthropicFrames
    ) -> web.StreamResponse:
        headers = _SSE_HEADERS
        if self.kind == "vllm":
            headers = {**_SSE_HEADERS, "Content-Type": "text/event-stream; charset=utf-8"}
        resp = web.StreamResponse(status=200, headers=headers)
        loop = asyncio.get_running_loop()
        t_start = loop.time()
        n = frames.a.n_out
        fail_after = self.fail_after_chunks
        try:
            await resp.prepare(request)
            comments = self.kind == "openrouter" and not frames.anthropic
            if comments:
                await resp.write(_OR_COMMENT)
            ttft = self.ttft_s
            while ttft > 0:  # OpenRouter repeats its keep-alive comment while it waits
                step = min(ttft, 1.0) if comments else ttft
                await asyncio.sleep(step)
                ttft -= step
                if comments and ttft > 0:
                    await resp.write(_OR_COMMENT)
            tps = self.tokens_per_second
            interval = 1.0 / tps if tps else 0.0
            t_first = loop.time()
            toks = _tokens_json(n)
            pre, post = frames.pre, frames.post
            head = frames.head
            write = resp.write
            for i in range(n):
                if i >= fail_after and self._fail_mode in _MID_STREAM:
                    return await self._fail_stream(request, resp, frames)
                if interval:
                    if i:
                        delay = t_first + i * interval - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                elif i % _YIELD_EVERY == _YIELD_EVERY - 1:
                    await asyncio.sleep(0)
                if head:
                    await write(head + pre + toks[i] + post)
                    head = b""
                else:
                    await write(pre + toks[i] + post)
            if self._fail_mode in _MID_STREAM:
                return await self._fail_stream(request, resp, frames)
            await write(head + frames.tail(n, t_start, t_first, loop.time()))
        except ConnectionError:  # the client went away; nothing to log
            pass
        return resp

    async def _fail_stream(
        self,
        request: web.BaseRequest,
        resp: web.StreamResponse,
        frames: _ChatFrames | _AnthropicFrames,
    ) -> web.StreamResponse:
        mode = self._fail_mode
        if mode is FailMode.DIE_MID_STREAM:
            self._die(request)
        elif mode is FailMode.ERROR_EVENT:
            await resp.write(frames.error())  # then end the body normally
        else:
            await self._hang(request)
        return resp

    async def _complete(
        self, request: web.BaseRequest, a: _Answer, anthropic: bool
    ) -> web.StreamResponse:
        delay = self.ttft_s
        if self.tokens_per_second and a.n_out > 1:
            delay += (a.n_out - 1) / self.tokens_per_second
        if delay > 0:
            await asyncio.sleep(delay)
        mode = self._fail_mode
        if mode is FailMode.DIE_MID_STREAM:
            self._die(request)
            return web.Response(status=500)
        if mode is FailMode.ERROR_EVENT:
            return self._error(500, anthropic=anthropic)
        if mode is FailMode.HANG_MID_STREAM:
            await self._hang(request)
            return web.Response(status=503)
        text = self.expected_text(a.n_out)
        if anthropic:
            return self._json(
                200,
                {
                    "id": a.ident,
                    "type": "message",
                    "role": "assistant",
                    "model": a.model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "max_tokens" if a.truncated else "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": a.n_prompt, "output_tokens": a.n_out},
                },
            )
        body: JSON = {
            "id": a.ident,
            "object": "chat.completion",
            "created": a.created,
            "model": a.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "length" if a.truncated else "stop",
                }
            ],
            "usage": self._usage(a.fake_model, a.n_prompt, a.n_out),
        }
        if self.kind == "llamacpp":
            now = asyncio.get_running_loop().time()
            body["timings"] = _timings(a.n_prompt, a.n_out, now, now, now)
        return self._json(200, body)


# ------------------------------------------------------------------------------ command line


async def _run(fake: FakeBackend, port: int) -> None:
    url = await fake.start(port=port)
    ids = ", ".join(m.id for m in fake.models)
    print(f"fake {fake.kind} serving [{ids}] at {url}  (Ctrl-C to stop)", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m usepod_desktop.sandbox.fakes",
        description="Run one fake inference backend on 127.0.0.1.",
    )
    parser.add_argument("kind", choices=K.KINDS)
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: the real server's port for local kinds, a free one for remote kinds)",
    )
    parser.add_argument("--model", dest="models", action="append", metavar="ID", help="repeatable")
    parser.add_argument(
        "--tps", type=float, default=None, help="tokens per second (default: unpaced)"
    )
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--output-tokens", type=int, default=8)
    parser.add_argument("--context", type=int, default=4096, help="context length of every model")
    parser.add_argument(
        "--price",
        nargs=2,
        type=float,
        metavar=("PROMPT", "COMPLETION"),
        help="USD per token (remote kinds default to 0.000001 0.000002)",
    )
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--fail-mode", choices=[m.value for m in FailMode], default="none")
    args = parser.parse_args(argv)

    prices: tuple[float | None, float | None] = (None, None)
    if args.price:
        prices = (args.price[0], args.price[1])
    elif args.kind in K.REMOTE_KINDS:
        prices = (1e-6, 2e-6)
    ids = args.models or ["fake-model"]
    models = [FakeModel(i, args.context, prices[0], prices[1]) for i in ids]
    port = args.port if args.port is not None else K.DEFAULT_PORTS.get(args.kind, 0)
    fake = FakeBackend(
        args.kind,
        models,
        tokens_per_second=args.tps,
        ttft_s=args.ttft,
        output_tokens=args.output_tokens,
        fail_mode=FailMode(args.fail_mode),
        api_key=args.api_key,
    )
    try:
        asyncio.run(_run(fake, port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
