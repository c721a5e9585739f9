"""A coordinator written for the tests: a plain `websockets` server on 127.0.0.1 that does the
handshake itself (checking the Ed25519 signature) and then lets a test send any frame, several
frames in ONE socket write, close at a chosen point of the handshake, or stop reading.

It knows nothing about jobs: it records every frame the agent sends, in order, per session,
and the test decides what they mean. (The sandbox coordinator is a faithful peer; this one is
a deliberately odd one.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import Close, Frame, Opcode

from usepod_desktop.core import protocol

CloseAt = Literal["auth_ok", "capabilities"] | None


@dataclass
class Session:
    ws: ServerConnection
    serial: int
    nonce: bytes = b""
    auth: dict[str, Any] | None = None
    signature_ok: bool = False
    frames: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, *frames: str | dict[str, Any]) -> None:
        """Send text frames; several go out in ONE socket write (one TCP segment on
        loopback), so the agent reads them in the same burst."""
        texts = [f if isinstance(f, str) else json.dumps(f) for f in frames]
        if len(texts) == 1:
            await self.ws.send(texts[0])
            return
        raw = b"".join(
            Frame(Opcode.TEXT, t.encode()).serialize(mask=False, extensions=[]) for t in texts
        )
        self.ws.transport.write(raw)

    def stop_reading(self) -> None:
        """Stop reading from the socket: the agent's writes stall once the kernel buffers
        between us are full (a coordinator whose reader is stuck). The handler stops
        consuming too, or websockets would resume reading as its queue drains."""
        self.reading.clear()
        self.ws.transport.pause_reading()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == kind]

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("job_id") == job_id]

    def terminals(self, job_id: str) -> list[dict[str, Any]]:
        return [f for f in self.for_job(job_id) if f["type"] in ("job_done", "job_error")]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                self._changed.clear()
                await self._changed.wait()

    async def terminal(self, job_id: str, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        found = await self.wait_for(lambda: self.terminals(job_id), timeout)
        return found[0]


class WireCoordinator:
    def __init__(
        self,
        *,
        nonce: bytes | None = None,
        provider_id: Any = "prov-test",
        close_at: CloseAt = None,
        rcvbuf: int | None = None,
    ) -> None:
        self.nonce = nonce
        self.provider_id = provider_id
        self.close_at = close_at
        self.rcvbuf = rcvbuf
        self.sessions: list[Session] = []
        self.connect_times: list[float] = []
        self._server: Server | None = None
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/provider/connect"

    async def __aenter__(self) -> WireCoordinator:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf is not None:  # inherited by accepted sockets: stalls show up sooner
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", 0))
        self._server = await serve(
            self._handle,
            sock=sock,
            compression=None,
            max_size=protocol.MAX_FRAME_BYTES,
            ping_interval=None,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for session in self.sessions:
            session.ws.transport.abort()
        self._server.close()
        await self._server.wait_closed()

    async def session(self, serial: int = 1, timeout: float = 10.0) -> Session:  # noqa: ASYNC109
        """The `serial`-th session (1-based) once it has sent its capabilities (or, with
        `close_at`, once it authenticated)."""

        def ready() -> Session | None:
            if len(self.sessions) < serial:
                return None
            s = self.sessions[serial - 1]
            if self.close_at is None and not s.of_type("capabilities"):
                return None
            return s if s.auth is not None else None

        async with asyncio.timeout(timeout):
            while (found := ready()) is None:
                self._changed.clear()
                await self._changed.wait()
        return found

    async def _handle(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        self.connect_times.append(loop.time())
        session = Session(ws, len(self.sessions) + 1)
        session.reading.set()
        self.sessions.append(session)
        nonce = os.urandom(32) if self.nonce is None else self.nonce
        session.nonce = nonce
        try:
            await ws.send(json.dumps({"type": "auth_challenge", "nonce": _b64(nonce)}))
            answer = json.loads(await ws.recv())
            session.auth = answer
            pubkey = Ed25519PublicKey.from_public_bytes(base64.b64decode(answer["pubkey"]))
            pubkey.verify(base64.b64decode(answer["signature"]), nonce)  # raises when wrong
            session.signature_ok = True
            ok = '{"type":"auth_ok","provider_id":' + json.dumps(self.provider_id) + "}"
            if self.close_at == "auth_ok":
                # auth_ok and a close frame in one write: the agent learns of the close
                # before it can send capabilities
                close = Frame(Opcode.CLOSE, Close(1012, "restarting").serialize())
                ws.transport.write(
                    Frame(Opcode.TEXT, ok.encode()).serialize(mask=False, extensions=[])
                    + close.serialize(mask=False, extensions=[])
                )
                self._wake(session)
                async for _ in ws:  # until the agent answers the close and hangs up
                    pass
                return
            await ws.send(ok)
            self._wake(session)
            async for raw in ws:
                await session.reading.wait()
                session.frames.append(json.loads(raw))
                self._wake(session)
                if self.close_at == "capabilities" and session.frames[-1]["type"] == (
                    "capabilities"
                ):
                    await ws.close(1012, "restarting")
                    return
        except Exception:  # the agent went away, or sent garbage: the test checks frames
            pass
        finally:
            session.closed.set()
            self._wake(session)

    def _wake(self, session: Session) -> None:
        session._changed.set()
        self._changed.set()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
