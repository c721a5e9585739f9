"""The coordinator link: one WebSocket session at a time, reconnecting forever.

Per connection (docs/protocol.md): auth_challenge -> signed auth_response -> auth_ok /
auth_failed, provider_id persisted, discovery, capabilities, then heartbeats every 15 s while job
frames flow to the executor. Reconnects wait `backoff * jitter`, doubling to 60 s; the backoff is
reset when the session that ended had got `auth_ok` (as the reference 0.3.3: a coordinator deploy
or a close right after `capabilities` is a planned cycle, not an outage).

The session's rules (what to answer to which frame, when the provider id is stored, why a
session ended) are sans-I/O, in :mod:`usepod_desktop.core.link_session`; this module does the
I/O: the socket, the timers, the backoff wait, and it acts on the rules' answers.

Malformed frames are logged and ignored: they never end a session. A `job` frame with a usable
job id that cannot be served is answered with `job_error` `invalid_request` (docs/protocol.md,
"Tolerance").

Backpressure (docs/protocol.md, "Flow control"): while the socket does not drain (the
transport's buffer is above `write_limit`), no further inbound frame is read, so a coordinator
that stops reading cannot make the agent buffer refusals without bound; a session that has not
been able to send for `send_stall_timeout` seconds is aborted and the link reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from usepod_desktop import PROTOCOL_VERSION
from usepod_desktop.core import protocol
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.executor import Executor
from usepod_desktop.core.identity import Identity
from usepod_desktop.core.link_session import (
    Authenticated,
    AuthRejected,
    CancelJob,
    HandshakeError,
    Ignored,
    LinkState,
    RejectJob,
    RunJob,
    SendFrame,
    SessionRules,
    classify_disconnect,
)
from usepod_desktop.core.stats import JobStats

__all__ = ["AuthRejected", "HandshakeError", "Link", "LinkState", "LinkStatus"]

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 15.0
HANDSHAKE_TIMEOUT_S = 15.0
#: A session whose socket has not drained for this long is aborted (then: reconnect).
SEND_STALL_TIMEOUT_S = 30.0
#: The transport's write buffer high-water mark; above it writers wait and reading stops.
WRITE_LIMIT = 256 * 1024


class _PooledRandom:
    """`secrets.token_bytes` for websockets' client frame masks, from a pooled `os.urandom`.

    A client masks every frame with 4 random bytes (RFC 6455); websockets asks the OS for each
    mask, one syscall per `job_chunk` frame, about a tenth of the agent's CPU at high chunk
    rates. This hands out the same OS randomness 4 KiB at a time."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._pool = b""
        self._pos = 0

    def token_bytes(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._pool):
            self._pool, self._pos, end = os.urandom(max(self._size, n)), 0, n
        out = self._pool[self._pos : end]
        self._pos = end
        return out


def _install_pooled_masks() -> None:
    import websockets.frames

    if getattr(websockets.frames, "secrets", None) is not None and hasattr(
        websockets.frames.secrets, "token_bytes"
    ):
        websockets.frames.secrets = _PooledRandom()  # type: ignore[assignment]


_install_pooled_masks()


class _BatchingConnection(ClientConnection):
    """Writes the frames queued during one event-loop iteration with one socket write.

    At 64+ concurrent streams many jobs relay a chunk in the same iteration; one `send()`
    syscall per `job_chunk` frame was ~22% of the agent's CPU. Frames are flushed by a callback
    scheduled for the next iteration, so nothing waits longer than the callbacks already ready.
    Outside the OPEN state (closing handshakes) writes go straight through, as in websockets.

    It also records since when writing has been paused (the transport's buffer above its
    high-water mark), for the link's stall watchdog."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch: list[bytes] = []
        #: loop time since which writing has been paused; None while the socket drains
        self.paused_since: float | None = None

    def send_data(self) -> None:
        if self.protocol.state is not State.OPEN:
            self._flush_batch()
            super().send_data()
            return
        batch = self._batch
        schedule = not batch
        for data in self.protocol.data_to_send():
            if data:
                batch.append(data)
            else:  # end of stream: keep the order, then half-close as websockets does
                self._flush_batch()
                self._send_eof()
                return
        if schedule and batch:
            self.loop.call_soon(self._flush_batch)

    def _send_eof(self) -> None:
        """websockets' end-of-stream marker (an empty chunk from `data_to_send`), consumed
        above so `super().send_data()` would never see it: half-close the TCP connection
        (or close it where a half-close is impossible, e.g. TLS), as websockets does."""
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():
            with contextlib.suppress(Exception):  # write_eof() documents no exceptions
                transport.write_eof()
        else:
            transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused_since = self.loop.time()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.paused_since = None

    def _flush_batch(self) -> None:
        batch = self._batch
        if not batch:
            return
        self._batch = []
        if self.transport.is_closing():
            return
        self.transport.write(b"".join(batch) if len(batch) > 1 else batch[0])


@dataclass(slots=True)
class LinkStatus:
    state: LinkState
    detail: str = ""
    retry_in_s: float | None = None


#: Called after auth_ok; runs discovery and returns the capabilities frame to send.
CapabilitiesProvider = Callable[[], Awaitable[str]]
StatusListener = Callable[[LinkStatus], None]


class Link:
    def __init__(
        self,
        url: str,
        identity: Identity,
        executor: Executor,
        capabilities: CapabilitiesProvider,
        *,
        enrollment_code: str | None = None,
        allow_insecure: bool = False,
        stats: JobStats | None = None,
        backoff: Backoff | None = None,
        heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
        ssl_context: ssl.SSLContext | None = None,
        on_status: StatusListener | None = None,
        on_provider_id: Callable[[str], Awaitable[None]] | None = None,
        send_stall_timeout: float | None = None,
    ) -> None:
        scheme = urlsplit(url).scheme
        if scheme == "ws" and not allow_insecure:
            raise ValueError("coordinator.url: ws:// needs --allow-insecure; use wss://")
        if scheme not in ("ws", "wss"):
            raise ValueError(f"coordinator.url: scheme {scheme!r} is not supported; use wss://")
        self.url = url
        self.identity = identity
        self.executor = executor
        self.capabilities = capabilities
        self.enrollment_code = enrollment_code
        self.stats = stats or executor.stats
        self.backoff = backoff or Backoff()
        self.heartbeat_interval = heartbeat_interval
        self.ssl_context = ssl_context
        self.on_status = on_status
        self.on_provider_id = on_provider_id
        #: The coordinator said `"sandbox": true` in auth_ok (docs/sandbox.md).
        self.sandbox = False
        #: The provider id the coordinator gave this session (a sandbox's is never stored).
        self.session_provider_id: str | None = None
        self.send_stall_timeout = (
            SEND_STALL_TIMEOUT_S if send_stall_timeout is None else send_stall_timeout
        )
        self.stalled_sessions = 0  # sessions aborted because the socket stopped draining
        self.status = LinkStatus(LinkState.OFFLINE)
        self.sessions = 0  # completed handshakes, for the UI and tests
        self.last_auth_failure: str | None = None
        #: `time.monotonic()` when the last heartbeat frame of this session went out (None
        #: before the first one; reset by each new session). Read only, for the doctor.
        self.last_heartbeat_sent_at: float | None = None
        #: The monotonic clock of :attr:`last_heartbeat_sent_at` (tests move it forward).
        self.clock: Callable[[], float] = time.monotonic
        self._ws: ClientConnection | None = None
        self._established = False
        #: the session got auth_ok: its end is a planned cycle (backoff back to `initial`)
        self._authenticated = False
        self._stopping = False
        self._wake = asyncio.Event()

    # ---- public ------------------------------------------------------------------------

    @property
    def heartbeat_age_s(self) -> float | None:
        """Seconds since this session's last heartbeat was sent (None before the first)."""
        sent = self.last_heartbeat_sent_at
        return None if sent is None else max(0.0, self.clock() - sent)

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._established

    async def send(self, text: str) -> None:
        """Send one frame on the current connection (raises ConnectionError when there is none)."""
        ws = self._ws
        if ws is None:
            raise ConnectionError("not connected to the coordinator")
        await ws.send(text)

    async def send_capabilities(self, frame: str) -> bool:
        """Send a fresh capabilities frame on the live session (re-discovery, pause)."""
        if not self.connected:
            return False
        try:
            await self.send(frame)
        except (ConnectionClosed, ConnectionError):
            return False
        return True

    def reconnect_now(self) -> None:
        """Skip the current backoff wait (settings changed, user pressed Reconnect)."""
        self._wake.set()

    async def run_forever(self) -> None:
        """Connect, serve, reconnect with backoff until :meth:`stop` or cancellation."""
        self._stopping = False
        while not self._stopping:
            error: BaseException | None = None
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            finally:
                self._ws = None
                aborted = self.executor.abort_all()
                if aborted:
                    log.warning("connection lost: stopped %d running job(s) upstream", aborted)
            ended = classify_disconnect(error)
            detail = ended.detail
            if ended.unexpected:
                log.error("coordinator session crashed", exc_info=error)
            if ended.auth_failure is not None:
                self.last_auth_failure = ended.auth_failure
                self._set(LinkState.AUTH_FAILED, detail)
            if self._stopping:
                break
            delay = self.backoff.after_disconnect(self._authenticated)
            self._established = False
            self._authenticated = False
            log.info("coordinator: %s; reconnecting in %.1f s", detail, delay)
            self._set(ended.state, detail, retry_in_s=delay)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
        self._set(LinkState.OFFLINE, "stopped")

    async def stop(self) -> None:
        """Close the connection and stop reconnecting (running jobs are the executor's)."""
        self._stopping = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(1001, "agent shutting down")

    # ---- one session -------------------------------------------------------------------

    async def _session(self) -> None:
        self._set(LinkState.CONNECTING, self.url)
        host = urlsplit(self.url).hostname or ""
        kwargs: dict[str, Any] = {
            "create_connection": _BatchingConnection,
            "max_size": protocol.MAX_FRAME_BYTES,
            "compression": None,  # per-message deflate costs CPU on every chunk frame
            "open_timeout": 10,
            "ping_interval": 20,
            "ping_timeout": 20,
            "close_timeout": 5,
            "user_agent_header": f"usepod-desktop (protocol {PROTOCOL_VERSION})",
            "write_limit": WRITE_LIMIT,
        }
        if host in ("127.0.0.1", "localhost", "::1"):
            kwargs["proxy"] = None
        if self.url.startswith("wss://"):
            if self.ssl_context is None:  # built once per link: loading the CA store costs
                self.ssl_context = default_ssl_context()  # ~10 ms of CPU per reconnect
            kwargs["ssl"] = self.ssl_context
        async with connect(self.url, **kwargs) as ws:
            self._set(LinkState.AUTHENTICATING, self.url)
            rules = SessionRules(self.identity, self.enrollment_code)
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                auth = await self._handshake(ws, rules)
            # From here on a drop is post-auth, as in the reference 0.3.3 (a close during
            # discovery or right at `capabilities` included): the next attempt comes after
            # about `backoff.initial`, without escalation.
            self._authenticated = True
            provider_id = auth.provider_id
            if auth.unusable_provider_id is not None:  # logged and ignored: the session goes on
                log.warning(
                    "coordinator sent an unusable provider id, not saved: %s",
                    auth.unusable_provider_id,
                )
            if auth.save_provider_id is not None:
                if self.on_provider_id is not None:
                    await self.on_provider_id(auth.save_provider_id)
                else:
                    await asyncio.to_thread(self.identity.set_provider_id, auth.save_provider_id)
            frame = await self.capabilities()
            self._ws = ws
            await ws.send(frame)
            self._established = True
            self.last_heartbeat_sent_at = None
            self.sessions += 1
            self.session_provider_id = provider_id or None
            self._set(LinkState.CONNECTED, provider_id or "")
            log.info("connected to %s as %s", self.url, provider_id or "<no provider id>")
            heartbeat = asyncio.create_task(self._heartbeat(ws), name="heartbeat")
            watchdog = asyncio.create_task(self._stall_watchdog(ws), name="stall-watchdog")
            try:
                await self._receive(ws, rules)
            finally:
                for task in (heartbeat, watchdog):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _handshake(self, ws: ClientConnection, rules: SessionRules) -> Authenticated:
        """Feed the coordinator's frames to the rules until `auth_ok` (their errors end the
        session: AuthRejected, HandshakeError)."""
        while True:
            action = rules.receive(await ws.recv())
            if isinstance(action, SendFrame):
                await ws.send(action.text)
            elif isinstance(action, Ignored):
                log.debug("%s", action.why)
            elif isinstance(action, Authenticated):
                self.last_auth_failure = None
                self.sandbox = action.sandbox
                if action.sandbox:
                    log.info(
                        "the coordinator is a local sandbox: its jobs are recorded as sandbox jobs"
                    )
                return action

    async def _receive(self, ws: ClientConnection, rules: SessionRules) -> None:
        executor = self.executor
        send: Any = _SandboxSender(ws.send) if self.sandbox else ws.send
        receive = rules.receive
        async for raw in ws:
            if ws.paused:
                # The socket is not draining: read nothing more until it does (TCP pushes
                # back on the coordinator), so refusals cannot pile up in our buffers.
                await ws.drain()
            action = receive(raw)
            if isinstance(action, RunJob):
                executor.submit(action.job, send)
            elif isinstance(action, CancelJob):
                if not executor.cancel(action.job_id):
                    log.debug("job_cancel for unknown job %s ignored", action.job_id)
            elif isinstance(action, RejectJob):
                log.warning("job %s refused: %s", action.job_id, action.message)
                executor.reject(action.job_id, action.code, action.message, send)
            elif isinstance(action, Ignored):
                if action.warn:
                    log.warning("%s", action.why)
                else:
                    log.debug("%s", action.why)

    async def _stall_watchdog(self, ws: ClientConnection) -> None:
        """Abort the session once its socket has not drained for `send_stall_timeout` s.

        Keepalive pings cannot catch this: websockets writes a ping only after the buffer
        drains, so its pong timeout never starts. Aborting (no close frame: it could not be
        sent either) ends `_receive`, and `run_forever` reconnects."""
        limit = self.send_stall_timeout
        tick = min(1.0, limit / 4)
        loop = asyncio.get_running_loop()
        last_size: int | None = None
        progress_at = 0.0
        while True:
            await asyncio.sleep(tick)
            since = getattr(ws, "paused_since", None)
            if since is None:
                last_size = None
                continue
            # a slow coordinator that still reads is not stalled: any shrinking of the
            # buffer between two ticks counts as progress
            size = ws.transport.get_write_buffer_size()
            if last_size is None or size < last_size:
                progress_at = since if last_size is None else loop.time()
            last_size = size
            if loop.time() - max(since, progress_at) >= limit:
                self.stalled_sessions += 1
                log.warning(
                    "coordinator has not read what we sent for %.0f s (%d bytes waiting); "
                    "dropping the connection",
                    limit,
                    size,
                )
                ws.transport.abort()
                return

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            figures = self.stats.snapshot(queue_depth=self.executor.running)
            await ws.send(protocol.heartbeat(figures))
            self.last_heartbeat_sent_at = self.clock()

    def _set(self, state: LinkState, detail: str = "", retry_in_s: float | None = None) -> None:
        self.status = LinkStatus(state, detail, retry_in_s)
        if self.on_status is not None:
            try:
                self.on_status(self.status)
            except Exception:
                log.exception("link status listener failed")


class _SandboxSender:
    """`ws.send` for a sandbox session: the executor records its jobs with source "sandbox"."""

    source = "sandbox"

    def __init__(self, send: Callable[[str], Awaitable[None]]) -> None:
        self._send = send

    async def __call__(self, text: str) -> None:
        await self._send(text)


def default_ssl_context() -> ssl.SSLContext:
    """Certificate-verifying TLS for wss://: the OS trust store, plus certifi's CA bundle in a
    frozen build (a PyInstaller bundle cannot rely on the system's OpenSSL paths)."""
    context = ssl.create_default_context()
    if getattr(sys, "frozen", False):
        try:
            import certifi

            context.load_verify_locations(certifi.where())
        except (ImportError, OSError):
            log.warning("certifi CA bundle missing from this build; using the system store")
    return context
