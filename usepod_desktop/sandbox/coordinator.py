"""A local coordinator that speaks docs/protocol.md for real, on 127.0.0.1.

It is how users try the app without an account, how the test suite and the benchmarks
drive the agent, and what the GUI's "Send test job" talks to. It is built on
`aiohttp.web`; the WebSocket endpoint is ``GET /provider/connect``. More routes (the
pairing endpoints) may be added to :attr:`SandboxCoordinator.app` before the first
:meth:`~SandboxCoordinator.start`; handlers find the coordinator with
``request.app[COORDINATOR_KEY]``.

Usage::

    async with SandboxCoordinator() as coord:        # port 0: a free port
        url = coord.url                              # ws://127.0.0.1:PORT/provider/connect
        session = await coord.wait_for_provider(10)
        caps = await coord.wait_for_capabilities(10)
        handle = await coord.dispatch("model-a", {"messages": [...]})
        terminal = await handle.wait(30)             # JobDone | JobError
        print(handle.text, handle.late_frames)       # late_frames must stay empty

Handshake: an ``auth_challenge`` with a random 32-byte nonce; the ``auth_response``
signature is verified (Ed25519, over the decoded nonce bytes) against its pubkey; the
provider id is stable per public key for the lifetime of this object (stop/start
included). ``reject_auth`` refuses every auth with that reason;
``require_enrollment_code`` demands the code from a public key this coordinator has not
assigned an id to yet. Seed :attr:`~SandboxCoordinator.provider_ids` (base64 public key
-> id) to choose ids or to pre-enroll a key.

The receive loop is the hot path (benchmarks push tens of thousands of ``job_chunk``
frames per second): one ``parse_outbound`` per frame, the chunk appended to its job, no
logging, no per-chunk event unless someone is streaming the job.

Timestamps (``dispatched_at``, ``first_chunk_at``, ``terminal_at``, ...) are
``time.perf_counter()`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from usepod_desktop.core import protocol
from usepod_desktop.core.protocol import (
    AuthResponse,
    Capabilities,
    FrameError,
    Heartbeat,
    HeartbeatFigures,
    JobChunk,
    JobDone,
    JobError,
    JobFormat,
    OutboundFrame,
    UnknownFrame,
)

__all__ = [
    "CONNECT_PATH",
    "COORDINATOR_KEY",
    "CoordinatorEvent",
    "JobHandle",
    "JobLostError",
    "NoProviderError",
    "ProviderSession",
    "SandboxCoordinator",
    "Terminal",
]

log = logging.getLogger(__name__)

CONNECT_PATH = "/provider/connect"
#: Largest frame the coordinator accepts from an agent (a chunk can be big).
MAX_MSG_SIZE = 64 * 1024 * 1024
#: Close code of an `auth_failed` (policy violation).
AUTH_FAILED_CLOSE_CODE = WSCloseCode.POLICY_VIOLATION
#: How many frame-error messages a session keeps for debugging.
_ERROR_LOG_SIZE = 100

Terminal: TypeAlias = JobDone | JobError
EventKind: TypeAlias = Literal[
    "connected", "auth_failed", "capabilities", "heartbeat", "disconnected"
]
T = TypeVar("T")

_perf = time.perf_counter


class NoProviderError(LookupError):
    """No (or no unambiguous) connected provider to send to."""


class JobLostError(RuntimeError):
    """The job ended without a terminal frame: cancelled, provider gone, coordinator stopped."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id}: {reason}")
        self.job_id = job_id
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CoordinatorEvent:
    """What :meth:`SandboxCoordinator.add_listener` callbacks receive."""

    kind: EventKind
    session: ProviderSession


# --------------------------------------------------------------------------- jobs


class JobHandle:
    """One dispatched job: what came back for it, and when.

    ``chunks`` are the decoded ``job_chunk`` payloads in order; ``terminal`` the
    ``JobDone`` / ``JobError``; ``late_frames`` every frame for this job received after
    the terminal frame or after :meth:`SandboxCoordinator.cancel` (a correct agent
    leaves it empty; note that chunks already on the wire when the cancel is sent land
    here too). ``lost`` says why the job ended without a terminal frame.
    """

    __slots__ = (
        "_closed",
        "_data",
        "_done",
        "_progress",
        "bytes_received",
        "cancelled_at",
        "chunks",
        "deadline_ms",
        "dispatched_at",
        "first_chunk_at",
        "format",
        "job_id",
        "late_frames",
        "lost",
        "model_id",
        "request",
        "session",
        "terminal",
        "terminal_at",
    )

    def __init__(
        self,
        job_id: str,
        model_id: str,
        request: dict[str, Any],
        format: JobFormat,
        deadline_ms: int,
        session: ProviderSession,
    ) -> None:
        self.job_id = job_id
        self.model_id = model_id
        self.request = request
        self.format: JobFormat = format
        self.deadline_ms = deadline_ms
        self.session = session
        self.chunks: list[bytes] = []
        self.bytes_received = 0
        self.terminal: Terminal | None = None
        self.late_frames: list[OutboundFrame] = []
        self.lost: str | None = None
        self.dispatched_at = _perf()
        self.first_chunk_at: float | None = None
        self.terminal_at: float | None = None
        self.cancelled_at: float | None = None
        self._closed = False  # terminal received or cancelled: later frames are late
        self._data: bytes | None = None
        self._done = asyncio.Event()
        self._progress: asyncio.Event | None = None

    def __repr__(self) -> str:
        state = type(self.terminal).__name__ if self.terminal else (self.lost or "running")
        return (
            f"JobHandle({self.job_id}, model={self.model_id!r}, {len(self.chunks)} chunks, "
            f"{self.bytes_received} bytes, {state})"
        )

    # ---- results

    @property
    def provider_id(self) -> str | None:
        return self.session.provider_id

    @property
    def finished(self) -> bool:
        """A terminal frame arrived, or the job was cancelled or lost."""
        return self.terminal is not None or self.cancelled_at is not None or self.lost is not None

    @property
    def ok(self) -> bool:
        return isinstance(self.terminal, JobDone)

    @property
    def data(self) -> bytes:
        """The reassembled response bytes received so far."""
        if self._data is None or len(self._data) != self.bytes_received:
            self._data = b"".join(self.chunks)
        return self._data

    @property
    def text(self) -> str:
        """:attr:`data` decoded as UTF-8 (invalid sequences replaced)."""
        return self.data.decode("utf-8", errors="replace")

    @property
    def time_to_first_chunk(self) -> float | None:
        """Seconds from dispatch to the first chunk."""
        if self.first_chunk_at is None:
            return None
        return self.first_chunk_at - self.dispatched_at

    @property
    def elapsed(self) -> float | None:
        """Seconds from dispatch to the terminal frame."""
        if self.terminal_at is None:
            return None
        return self.terminal_at - self.dispatched_at

    async def wait(self, timeout: float | None = None) -> Terminal:  # noqa: ASYNC109
        """The terminal frame, once it arrives.

        Raises ``TimeoutError`` after ``timeout`` seconds, or :class:`JobLostError` when
        the job was cancelled, its provider disconnected or the coordinator stopped first.
        """
        if not self.finished:
            async with asyncio.timeout(timeout):
                await self._done.wait()
        if self.terminal is not None:
            return self.terminal
        raise JobLostError(self.job_id, self.lost or "cancelled")

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield chunks as they arrive (from the first one) until the job finishes."""
        index = 0
        while True:
            chunks = self.chunks
            while index < len(chunks):
                yield chunks[index]
                index += 1
            if self.finished:
                return
            if self._progress is None:
                self._progress = asyncio.Event()
            self._progress.clear()
            if index < len(self.chunks) or self.finished:
                continue
            await self._progress.wait()

    # ---- fed by the coordinator

    def _chunk(self, frame: JobChunk) -> None:
        if self._closed:
            self.late_frames.append(frame)
            return
        if self.lost is not None:
            return
        if self.first_chunk_at is None:
            self.first_chunk_at = _perf()
        data = frame.data
        self.chunks.append(data)
        self.bytes_received += len(data)
        progress = self._progress
        if progress is not None:
            progress.set()

    def _terminal(self, frame: Terminal) -> bool:
        """Record the terminal frame; False when it came late (kept in late_frames)."""
        if self._closed:
            self.late_frames.append(frame)
            return False
        if self.lost is not None:
            return False
        self.terminal = frame
        self.terminal_at = _perf()
        self._finish()
        return True

    def _cancel(self) -> None:
        if self.cancelled_at is None:
            self.cancelled_at = _perf()
        self._finish()

    def _lose(self, reason: str) -> None:
        if self.finished:
            return
        self.lost = reason
        self._wake()

    def _finish(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        self._done.set()
        if self._progress is not None:
            self._progress.set()


# --------------------------------------------------------------------------- sessions


class ProviderSession:
    """One agent connection, authenticated or not, and everything it sent.

    ``serial`` is 0 until auth succeeds, then the 1-based count of successful auths
    on this coordinator (use it as ``after=`` to wait for the next connection).
    ``malformed_frames`` counts frames that failed to parse, binary frames and frames
    that make no sense after auth (a second ``auth_response``); ``errors`` keeps the
    latest messages.
    """

    def __init__(self, ws: web.WebSocketResponse, connection_id: int, remote: str | None) -> None:
        self._ws = ws
        self.connection_id = connection_id
        self.remote = remote
        self.serial = 0
        self.provider_id: str | None = None
        self.auth: AuthResponse | None = None
        self.auth_failed_reason: str | None = None
        self.capabilities: list[Capabilities] = []
        self.heartbeats: list[HeartbeatFigures] = []
        self.heartbeat_times: list[float] = []
        self.frames_received = 0
        self.unknown_frames = 0
        self.malformed_frames = 0
        self.errors: deque[str] = deque(maxlen=_ERROR_LOG_SIZE)
        self.connected_at = _perf()
        self.authenticated_at: float | None = None
        self.closed_at: float | None = None
        self.close_code: int | None = None
        self._inflight: dict[str, JobHandle] = {}
        self._detached = False

    def __repr__(self) -> str:
        state = "open" if self.connected else f"closed({self.close_code})"
        return f"ProviderSession(#{self.connection_id}, {self.provider_id}, {state})"

    @property
    def authenticated(self) -> bool:
        return self.serial > 0

    @property
    def connected(self) -> bool:
        return self.closed_at is None and not self._ws.closed

    @property
    def agent_version(self) -> str | None:
        return None if self.auth is None else self.auth.agent_version

    @property
    def pubkey_b64(self) -> str | None:
        return None if self.auth is None else base64.b64encode(self.auth.pubkey).decode("ascii")

    @property
    def enrollment_code(self) -> str | None:
        return None if self.auth is None else self.auth.enrollment_code

    @property
    def sent_enrollment_code(self) -> bool:
        return self.auth is not None and self.auth.enrollment_code is not None

    @property
    def models(self) -> list[str]:
        """Model ids of the newest capabilities frame (empty before the first)."""
        if not self.capabilities:
            return []
        return [m["model_id"] for m in self.capabilities[-1].models]

    @property
    def inflight(self) -> list[JobHandle]:
        return list(self._inflight.values())

    async def send(self, data: str | bytes) -> None:
        """Send one frame (text for str, binary for bytes). ConnectionError when closed."""
        if not self.connected:
            raise ConnectionResetError(f"provider connection #{self.connection_id} is closed")
        if isinstance(data, str):
            await self._ws.send_str(data)
        else:
            await self._ws.send_bytes(data)

    async def close(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"") -> None:
        """Close this connection with `code` (waits for the close handshake, bounded)."""
        with contextlib.suppress(Exception):
            await self._ws.close(code=code, message=message)

    def _frame_error(self, message: str) -> None:
        self.malformed_frames += 1
        self.errors.append(message)


# --------------------------------------------------------------------------- coordinator


class SandboxCoordinator:
    """A coordinator on `host:port` (port 0 picks a free one, kept across restarts).

    Knobs: ``reject_auth`` (refuse every auth with this reason),
    ``require_enrollment_code`` (both may be changed at any time); ``allowed_keys`` (the
    base64 agent public keys accepted; None: any) and ``pin_first_agent`` (accept only the
    first key that authenticates: it is then the only one in ``allowed_keys``, see
    :attr:`pinned_key`); ``max_frames_per_second`` / ``max_bytes_per_second`` (per
    connection, bursts of twice that; a connection over either is closed with 1008);
    ``max_job_bytes`` (an answer larger than this is cancelled and lost);
    ``history_limit`` (capabilities and heartbeats kept per session); ``ws_heartbeat``
    (seconds between WebSocket pings; a connection whose pong is missing for half of
    that is closed; None: off); ``auth_timeout`` (seconds to wait for the
    ``auth_response``); ``close_timeout`` (seconds to wait for the agent's close reply);
    ``max_msg_size`` (largest frame accepted); ``compress`` (offer permessage-deflate).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        reject_auth: str | None = None,
        require_enrollment_code: str | None = None,
        ws_heartbeat: float | None = 20.0,
        auth_timeout: float = 10.0,
        close_timeout: float = 2.0,
        max_msg_size: int = MAX_MSG_SIZE,
        compress: bool = False,
        allowed_keys: set[str] | None = None,
        pin_first_agent: bool = False,
        max_frames_per_second: float | None = None,
        max_bytes_per_second: float | None = None,
        max_job_bytes: int | None = None,
        history_limit: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        #: Refuse every auth with this reason (mutable at any time).
        self.reject_auth = reject_auth
        #: A key this coordinator has not enrolled yet must send this code (mutable).
        self.require_enrollment_code = require_enrollment_code
        #: Say `"sandbox": true` in auth_ok (docs/sandbox.md); tests set False to play the
        #: real coordinator, which never sends it.
        self.announce_sandbox = True
        self.ws_heartbeat = ws_heartbeat
        self.auth_timeout = auth_timeout
        self.close_timeout = close_timeout
        self.max_msg_size = max_msg_size
        self.compress = compress
        #: Agent public keys (base64) accepted; None: any (mutable).
        self.allowed_keys = allowed_keys
        self.pin_first_agent = pin_first_agent
        #: The key pinned by ``pin_first_agent`` (None until the first auth).
        self.pinned_key: str | None = None
        self.max_frames_per_second = max_frames_per_second
        self.max_bytes_per_second = max_bytes_per_second
        self.max_job_bytes = max_job_bytes
        self.history_limit = history_limit
        #: Connections closed for going over a rate limit.
        self.rate_limited = 0

        #: base64 public key -> provider id, for the lifetime of this object.
        self.provider_ids: dict[str, str] = {}
        #: provider id -> its open, authenticated session (the newest one).
        self.providers: dict[str, ProviderSession] = {}
        #: Every connection ever accepted, in order (including failed auths).
        self.sessions: list[ProviderSession] = []
        #: Every dispatched job by id (see :meth:`forget`).
        self.jobs: dict[str, JobHandle] = {}
        #: Job frames from an agent for a job id this coordinator did not send it.
        self.stray_frames = 0
        self.stray_job_ids: deque[str] = deque(maxlen=_ERROR_LOG_SIZE)
        self.auth_failures = 0

        self.app = web.Application()
        self.app[COORDINATOR_KEY] = self
        self.app.router.add_get(CONNECT_PATH, self._handle_ws)

        self._runner: web.AppRunner | None = None
        self._open: set[ProviderSession] = set()
        self._serial = 0
        self._connections = 0
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[CoordinatorEvent], None]] = []

    # ---- lifecycle

    async def start(self) -> str:
        """Listen (again, on the same port after a stop) and return the agent URL."""
        if self._runner is not None:
            return self.url
        runner = web.AppRunner(self.app, shutdown_timeout=1.0, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = int(runner.addresses[0][1])
        self._runner = runner
        log.info("sandbox coordinator listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Close every agent connection (1001) and stop listening. :meth:`start` may follow."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._close_sessions(WSCloseCode.GOING_AWAY, b"sandbox coordinator stopping")
        for handle in self.jobs.values():
            handle._lose("coordinator stopped")
        await runner.cleanup()
        log.info("sandbox coordinator stopped")

    async def __aenter__(self) -> SandboxCoordinator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def http_url(self) -> str:
        """``http://HOST:PORT`` (base of the HTTP routes)."""
        if not self.port:
            raise RuntimeError("the sandbox coordinator has not been started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The agent URL, ``ws://HOST:PORT/provider/connect``."""
        return "ws" + self.http_url[4:] + CONNECT_PATH

    def add_routes(self, routes: list[web.AbstractRouteDef]) -> None:
        """Add HTTP routes (before the first :meth:`start`; aiohttp freezes the router)."""
        self.app.add_routes(routes)

    def add_listener(self, callback: Callable[[CoordinatorEvent], None]) -> None:
        """Call `callback` on connected / auth_failed / capabilities / heartbeat /
        disconnected. Runs on the event loop; exceptions are logged and dropped."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[CoordinatorEvent], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    # ---- provider control

    async def kick(self, code: int = WSCloseCode.SERVICE_RESTART) -> int:
        """Close every agent connection with `code` (a coordinator deploy); keep listening.

        Returns the number of connections closed. When it returns, the kicked sessions
        are no longer in :attr:`providers`.
        """
        return await self._close_sessions(code, b"sandbox coordinator restart")

    async def send_raw(
        self, data: str | bytes, *, provider: str | ProviderSession | None = None
    ) -> None:
        """Send an arbitrary frame (text for str, binary for bytes) to a provider."""
        await self._pick(provider).send(data)

    async def dispatch(
        self,
        model_id: str,
        request: dict[str, Any],
        *,
        format: JobFormat = "openai",
        deadline_ms: int = protocol.DEFAULT_DEADLINE_MS,
        provider: str | ProviderSession | None = None,
        job_id: str | None = None,
    ) -> JobHandle:
        """Send a ``job`` frame to the only connected provider (or the named one).

        Raises :class:`NoProviderError` when there is none or several and none is named.
        """
        session = self._pick(provider)
        if job_id is None:
            job_id = str(uuid.uuid4())
        elif job_id in self.jobs:
            raise ValueError(f"job id {job_id} was already dispatched")
        frame = protocol.job(job_id, model_id, request, format, deadline_ms)
        handle = JobHandle(job_id, model_id, request, format, deadline_ms, session)
        self.jobs[job_id] = handle
        session._inflight[job_id] = handle
        try:
            await session.send(frame)
        except BaseException:
            self.jobs.pop(job_id, None)
            session._inflight.pop(job_id, None)
            raise
        return handle

    async def cancel(self, job_id: str) -> None:
        """Send ``job_cancel``; any later frame for the job lands in its ``late_frames``.

        KeyError for a job id never dispatched (to send a cancel for an unknown id, use
        ``send_raw(protocol.job_cancel(job_id))``).
        """
        handle = self.jobs[job_id]
        handle.session._inflight.pop(job_id, None)
        handle._cancel()
        if handle.session.connected:
            with contextlib.suppress(ConnectionError):
                await handle.session.send(protocol.job_cancel(job_id))

    def forget(self, job_id: str) -> JobHandle | None:
        """Drop a finished job's record (long runs); later frames for it count as stray."""
        handle = self.jobs.pop(job_id, None)
        if handle is not None:
            handle.session._inflight.pop(job_id, None)
        return handle

    # ---- waiting

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float | None) -> T:  # noqa: ASYNC109
        """Return `predicate()`'s first value that is not None; it is re-evaluated on every
        connection, auth, capabilities, heartbeat, disconnect and job end.

        Raises ``TimeoutError``.
        """
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                value = predicate()
                if value is not None:
                    return value
                await changed.wait()

    async def wait_for_provider(
        self,
        timeout: float | None = 10.0,  # noqa: ASYNC109
        *,
        after: int = 0,
    ) -> ProviderSession:
        """The newest open, authenticated session whose ``serial`` is above `after`."""

        def newest() -> ProviderSession | None:
            best: ProviderSession | None = None
            for session in self.providers.values():
                if session.serial > after and (best is None or session.serial > best.serial):
                    best = session
            return best

        try:
            return await self.wait_for(newest, timeout)
        except TimeoutError:
            raise TimeoutError(f"no provider connected within {timeout}s{self._why()}") from None

    async def wait_for_capabilities(
        self,
        timeout: float | None = 10.0,  # noqa: ASYNC109
        *,
        after: int = 0,
        provider: str | ProviderSession | None = None,
    ) -> Capabilities:
        """The newest capabilities frame of a session that has sent more than `after`.

        Without `provider`, any open authenticated session qualifies (the newest wins).
        """

        def found() -> Capabilities | None:
            for session in self._candidates(provider):
                if len(session.capabilities) > after:
                    return session.capabilities[-1]
            return None

        try:
            return await self.wait_for(found, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no capabilities frame (after {after}) within {timeout}s{self._why()}"
            ) from None

    async def wait_for_heartbeat(
        self,
        timeout: float | None = 30.0,  # noqa: ASYNC109
        *,
        after: int = 0,
        provider: str | ProviderSession | None = None,
    ) -> HeartbeatFigures:
        """The newest heartbeat of a session that has sent more than `after`."""

        def found() -> HeartbeatFigures | None:
            for session in self._candidates(provider):
                if len(session.heartbeats) > after:
                    return session.heartbeats[-1]
            return None

        try:
            return await self.wait_for(found, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no heartbeat (after {after}) within {timeout}s{self._why()}"
            ) from None

    # ---- internals

    def _candidates(self, provider: str | ProviderSession | None) -> list[ProviderSession]:
        if isinstance(provider, ProviderSession):
            return [provider]
        if provider is not None:
            session = self.providers.get(provider)
            return [] if session is None else [session]
        return sorted(self.providers.values(), key=lambda s: s.serial, reverse=True)

    def _pick(self, provider: str | ProviderSession | None) -> ProviderSession:
        if isinstance(provider, ProviderSession):
            return provider
        if provider is not None:
            session = self.providers.get(provider)
            if session is None:
                raise NoProviderError(f"provider {provider} is not connected")
            return session
        if not self.providers:
            raise NoProviderError(f"no provider connected{self._why()}")
        if len(self.providers) > 1:
            names = ", ".join(sorted(self.providers))
            raise NoProviderError(f"{len(self.providers)} providers connected ({names}); name one")
        return next(iter(self.providers.values()))

    def _why(self) -> str:
        """A hint for timeout messages: the latest auth failure, if any."""
        for session in reversed(self.sessions):
            if session.auth_failed_reason:
                return f" (last auth failure: {session.auth_failed_reason})"
        return ""

    def _notify(
        self, kind: EventKind | None = None, session: ProviderSession | None = None
    ) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if kind is None or session is None:
            return
        event = CoordinatorEvent(kind, session)
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:
                log.exception("sandbox coordinator listener failed on %s", kind)

    async def _close_sessions(self, code: int, message: bytes) -> int:
        sessions = list(self._open)
        for session in sessions:
            self._detach(session, code)
        await asyncio.gather(*(s.close(code, message) for s in sessions))
        return len(sessions)

    def _detach(self, session: ProviderSession, code: int | None) -> None:
        if session._detached:
            return
        session._detached = True
        if session.closed_at is None:
            session.closed_at = _perf()
        if session.close_code is None:
            session.close_code = code
        self._open.discard(session)
        if session.provider_id is not None and self.providers.get(session.provider_id) is session:
            del self.providers[session.provider_id]
        for handle in session._inflight.values():
            handle._lose("provider disconnected")
        session._inflight.clear()
        if session.authenticated:
            log.info("provider %s disconnected (code %s)", session.provider_id, session.close_code)
            self._notify("disconnected", session)
        else:
            self._notify()

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            heartbeat=self.ws_heartbeat,
            max_msg_size=self.max_msg_size,
            compress=self.compress,
            timeout=self.close_timeout,
        )
        await ws.prepare(request)
        self._connections += 1
        session = ProviderSession(ws, self._connections, request.remote)
        self.sessions.append(session)
        self._open.add(session)
        try:
            if self._runner is None:  # stopping
                await ws.close(code=WSCloseCode.GOING_AWAY)
            elif await self._handshake(session):
                await self._serve(session)
        except ConnectionError as exc:
            log.debug("provider connection #%d: %s", session.connection_id, exc)
        finally:
            self._detach(session, ws.close_code)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    async def _handshake(self, session: ProviderSession) -> bool:
        ws = session._ws
        nonce = os.urandom(32)
        await ws.send_str(protocol.auth_challenge(nonce))
        try:
            async with asyncio.timeout(self.auth_timeout):
                msg = await ws.receive()
        except TimeoutError:
            return await self._refuse(session, f"no auth_response within {self.auth_timeout}s")
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return False
        if msg.type is not WSMsgType.TEXT:
            session._frame_error("binary frame during the handshake")
            return await self._refuse(session, "expected an auth_response text frame")
        session.frames_received += 1
        try:
            frame = protocol.parse_outbound(msg.data)
        except FrameError as exc:
            session._frame_error(str(exc))
            return await self._refuse(session, f"malformed auth_response: {exc}")
        if not isinstance(frame, AuthResponse):
            kind = frame.type if isinstance(frame, UnknownFrame) else type(frame).__name__
            session._frame_error(f"expected auth_response, got {kind}")
            return await self._refuse(session, f"expected auth_response, got {kind}")
        session.auth = frame
        try:
            Ed25519PublicKey.from_public_bytes(frame.pubkey).verify(frame.signature, nonce)
        except (InvalidSignature, ValueError):
            return await self._refuse(session, "invalid signature")
        if self.reject_auth is not None:
            return await self._refuse(session, self.reject_auth)
        pubkey_b64 = base64.b64encode(frame.pubkey).decode("ascii")
        if self.allowed_keys is not None and pubkey_b64 not in self.allowed_keys:
            return await self._refuse(session, "this sandbox serves another agent key")
        if self.pin_first_agent and self.pinned_key is None:
            self.pinned_key = pubkey_b64
            self.allowed_keys = {pubkey_b64}
            log.info("sandbox coordinator: now serving only agent key %s", pubkey_b64)
        provider_id = self.provider_ids.get(pubkey_b64)
        if provider_id is None:
            code = self.require_enrollment_code
            if code is not None and frame.enrollment_code != code:
                reason = "enrollment code required" if not frame.enrollment_code else None
                return await self._refuse(session, reason or "invalid enrollment code")
            provider_id = "prov_" + secrets.token_hex(6)
            self.provider_ids[pubkey_b64] = provider_id
        self._serial += 1
        session.serial = self._serial
        session.provider_id = provider_id
        session.authenticated_at = _perf()
        self.providers[provider_id] = session
        await ws.send_str(
            protocol.auth_ok(provider_id, sandbox=self.announce_sandbox)
        )  # docs/sandbox.md
        log.info(
            "provider %s connected (agent %s, connection #%d)",
            provider_id,
            frame.agent_version,
            session.connection_id,
        )
        self._notify("connected", session)
        return True

    async def _refuse(self, session: ProviderSession, reason: str) -> bool:
        session.auth_failed_reason = reason
        self.auth_failures += 1
        log.info("provider connection #%d: auth failed: %s", session.connection_id, reason)
        self._notify("auth_failed", session)
        with contextlib.suppress(ConnectionError):
            await session._ws.send_str(protocol.auth_failed(reason))
        await session.close(AUTH_FAILED_CLOSE_CODE, b"auth failed")
        return False

    async def _serve(self, session: ProviderSession) -> None:
        """The hot loop: every frame after auth."""
        ws = session._ws
        jobs = self.jobs
        parse = protocol.parse_outbound
        text_type = WSMsgType.TEXT
        binary_type = WSMsgType.BINARY
        limiter = _RateLimiter.for_coordinator(self)
        history = self.history_limit
        while True:
            msg = await ws.receive()
            mtype = msg.type
            if limiter is not None and mtype in (text_type, binary_type):
                if not limiter.take(len(msg.data)):
                    self.rate_limited += 1
                    session._frame_error("frame rate limit exceeded; connection closed")
                    log.warning(
                        "provider %s: over the frame rate limit; closing", session.provider_id
                    )
                    await session.close(WSCloseCode.POLICY_VIOLATION, b"rate limit exceeded")
                    return
            if mtype is text_type:
                session.frames_received += 1
                try:
                    frame = parse(msg.data)
                except FrameError as exc:
                    session._frame_error(str(exc))
                    continue
                if isinstance(frame, JobChunk):
                    handle = jobs.get(frame.job_id)
                    if handle is None or handle.session is not session:
                        self._stray(frame.job_id)
                    else:
                        handle._chunk(frame)
                        if self.max_job_bytes is not None and (
                            handle.bytes_received > self.max_job_bytes
                        ):
                            await self._too_large(handle)
                elif isinstance(frame, JobDone | JobError):
                    handle = jobs.get(frame.job_id)
                    if handle is None or handle.session is not session:
                        self._stray(frame.job_id)
                    elif handle._terminal(frame):
                        session._inflight.pop(handle.job_id, None)
                        self._notify()
                elif isinstance(frame, Heartbeat):
                    session.heartbeats.append(frame.figures)
                    session.heartbeat_times.append(_perf())
                    if history is not None and len(session.heartbeats) > history:
                        del session.heartbeats[:-history], session.heartbeat_times[:-history]
                    self._notify("heartbeat", session)
                elif isinstance(frame, Capabilities):
                    session.capabilities.append(frame)
                    if history is not None and len(session.capabilities) > history:
                        del session.capabilities[:-history]
                    log.info(
                        "provider %s advertises %d model(s)",
                        session.provider_id,
                        len(frame.models),
                    )
                    self._notify("capabilities", session)
                elif isinstance(frame, UnknownFrame):
                    session.unknown_frames += 1
                    log.debug("provider %s: unknown frame type %r", session.provider_id, frame.type)
                else:
                    session._frame_error(f"unexpected {type(frame).__name__} after auth")
            elif mtype is binary_type:
                session._frame_error("binary frame")
            elif mtype is WSMsgType.ERROR:
                session.errors.append(f"connection error: {ws.exception()!r}")
                return
            else:  # CLOSE, CLOSING, CLOSED
                return

    async def _too_large(self, handle: JobHandle) -> None:
        """An answer over ``max_job_bytes``: dropped, lost and cancelled at the agent."""
        limit = self.max_job_bytes
        handle.chunks.clear()
        handle._data = None
        handle._lose(f"answer larger than {limit} bytes; cancelled")
        handle.session._inflight.pop(handle.job_id, None)
        with contextlib.suppress(ConnectionError):
            await handle.session.send(protocol.job_cancel(handle.job_id))

    def _stray(self, job_id: str) -> None:
        self.stray_frames += 1
        self.stray_job_ids.append(job_id)


class _RateLimiter:
    """Token buckets for one connection: frames and bytes per second, bursts of twice that."""

    def __init__(self, frames: float | None, data: float | None) -> None:
        self.frames, self.data = frames, data
        self._frame_tokens = 2 * frames if frames else 0.0
        self._byte_tokens = 2 * data if data else 0.0
        self._at = _perf()

    @classmethod
    def for_coordinator(cls, coord: SandboxCoordinator) -> _RateLimiter | None:
        if coord.max_frames_per_second is None and coord.max_bytes_per_second is None:
            return None
        return cls(coord.max_frames_per_second, coord.max_bytes_per_second)

    def take(self, size: int) -> bool:
        """Spend one frame of `size` bytes; False when over either limit."""
        now = _perf()
        elapsed, self._at = now - self._at, now
        if self.frames:
            self._frame_tokens = min(2 * self.frames, self._frame_tokens + elapsed * self.frames)
            self._frame_tokens -= 1
            if self._frame_tokens < 0:
                return False
        if self.data:
            self._byte_tokens = min(2 * self.data, self._byte_tokens + elapsed * self.data)
            self._byte_tokens -= size
            if self._byte_tokens < 0:
                return False
        return True


COORDINATOR_KEY = web.AppKey("usepod_sandbox_coordinator", SandboxCoordinator)
