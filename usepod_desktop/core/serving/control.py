"""Local control of a running agent (tray app or headless `run`): pause, resume, status.

A channel only this user can open, never a TCP port:
- POSIX: a Unix socket `control.sock`, mode 0600, in a 0700 directory: `$USEPOD_RUNTIME_DIR`,
  else `$XDG_RUNTIME_DIR/usepod-desktop`, else `<data dir>/run`; on Linux the peer's uid is
  checked as well (SO_PEERCRED);
- Windows: the named pipe `\\\\.\\pipe\\usepod-desktop-<user>` served by asyncio's proactor
  pipe server (its default security lets only the owner, SYSTEM and administrators write).

Protocol: one JSON object per line each way, at most 4 KiB, 5 s per request.
Requests: `{"cmd": "status"}`, `{"cmd": "pause", "until": ISO-8601 | null}`,
`{"cmd": "resume"}`. Answers: `{"ok": true, "status": {...}}` or `{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import socket
import struct
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from usepod_desktop.core.serving.controller import ServingController

log = logging.getLogger(__name__)

MAX_LINE = 4096
REQUEST_TIMEOUT_S = 5.0
MAX_PAUSE = timedelta(days=366)
SOCKET_NAME = "control.sock"


class AgentNotRunning(Exception):
    """No agent answers on the control channel."""


def runtime_dir() -> Path:
    override = os.environ.get("USEPOD_RUNTIME_DIR")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and sys.platform.startswith("linux"):
        return Path(xdg) / "usepod-desktop"
    from usepod_desktop.core import paths

    return paths.data_dir() / "run"


def control_address() -> str:
    if sys.platform == "win32":
        user = "".join(c for c in getpass.getuser() if c.isalnum() or c in "-_") or "user"
        return rf"\\.\pipe\usepod-desktop-{user}"
    return str(runtime_dir() / SOCKET_NAME)


# ---------------------------------------------------------------------------- server


class ControlServer:
    def __init__(self, serving: ServingController, address: str | None = None) -> None:
        """Answers for `serving` (the running agent's serving controller)."""
        self._serving = serving
        self.address = address or control_address()
        self._server: Any = None
        self._pipe_servers: list[Any] = []

    async def start(self) -> bool:
        """Listen; False (logged) when another agent already answers there or binding fails."""
        if sys.platform == "win32":  # pragma: no cover - Windows only
            return await self._start_pipe()
        try:
            sock = await asyncio.to_thread(_bind, Path(self.address))
        except OSError as exc:
            log.warning("local control unavailable on %s: %s", self.address, exc)
            return False
        if sock is None:
            log.warning("local control: another agent already listens on %s", self.address)
            return False
        self._server = await asyncio.start_unix_server(self._handle, sock=sock, limit=MAX_LINE)
        log.info("local control on %s", self.address)
        return True

    async def _start_pipe(self) -> bool:  # pragma: no cover - Windows only
        loop = asyncio.get_running_loop()
        start = getattr(loop, "start_serving_pipe", None)
        if start is None:
            log.warning("local control needs the proactor event loop on Windows")
            return False

        def factory() -> asyncio.StreamReaderProtocol:
            reader = asyncio.StreamReader(limit=MAX_LINE)
            return asyncio.StreamReaderProtocol(reader, self._handle)

        try:
            self._pipe_servers = await start(factory, self.address)
        except OSError as exc:
            log.warning("local control unavailable on %s: %s", self.address, exc)
            return False
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(OSError):
                os.unlink(self.address)
        for server in self._pipe_servers:  # pragma: no cover - Windows only
            server.close()
        self._pipe_servers = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _same_user(writer):
                answer: dict[str, Any] = {"ok": False, "error": "not your agent"}
            else:
                try:
                    line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
                except (TimeoutError, ValueError, asyncio.LimitOverrunError):
                    line = b""
                answer = await self.dispatch(line)
            writer.write(json.dumps(answer).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
        except Exception as exc:
            log.debug("local control connection failed: %s", exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def dispatch(self, line: bytes) -> dict[str, Any]:
        """One request line -> the answer (never raises)."""
        if not line.strip() or len(line) > MAX_LINE:
            return {"ok": False, "error": "empty or oversized request"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "request must be a JSON object"}
        cmd = request.get("cmd")
        serving = self._serving
        try:
            if cmd == "status":
                pass
            elif cmd == "pause":
                until = _parse_until(request.get("until"))
                await serving.pause(until)
            elif cmd == "resume":
                await serving.resume()
            else:
                return {"ok": False, "error": f"unknown cmd {str(cmd)[:40]!r}"}
        except ValueError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("local control %s failed", cmd)
            return {"ok": False, "error": f"{cmd} failed: {type(exc).__name__}"}
        return {"ok": True, "status": serving.status()}


def _bind(path: Path) -> socket.socket | None:
    """The listening socket at `path` (0600, in a 0700 directory: nobody else can connect even
    before the chmod), or None when another agent answers there."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        if _answers(str(path)):
            return None
        path.unlink(missing_ok=True)  # left over by a crash
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _parse_until(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError("until: expected an ISO 8601 time or null")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"until: not an ISO 8601 time: {value!r}") from None
    if when.tzinfo is None:
        raise ValueError("until: needs a UTC offset")
    now = datetime.now(UTC)
    if when <= now:
        raise ValueError("until: is in the past")
    if when - now > MAX_PAUSE:
        raise ValueError("until: more than a year ahead; pause without an end instead")
    return when


def _same_user(writer: asyncio.StreamWriter) -> bool:
    """On Linux, the connecting process must run as our user (the 0600 mode already says so)."""
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED") or sock.family != socket.AF_UNIX:
        return True
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _answers(path: str) -> bool:
    try:
        request({"cmd": "status"}, address=path, timeout=2.0)
    except AgentNotRunning:
        return False
    except Exception:
        return True  # something answers, just not as we expect: do not steal its socket
    return True


# ---------------------------------------------------------------------------- client


def request(
    payload: dict[str, Any], *, address: str | None = None, timeout: float = REQUEST_TIMEOUT_S
) -> dict[str, Any]:
    """Send one request to the running agent; raises AgentNotRunning when none answers."""
    address = address or control_address()
    data = json.dumps(payload).encode() + b"\n"
    if sys.platform == "win32":  # pragma: no cover - Windows only
        try:
            with open(address, "r+b", buffering=0) as pipe:
                pipe.write(data)
                raw = pipe.read(MAX_LINE * 16)
        except OSError:
            raise AgentNotRunning(address) from None
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            try:
                sock.connect(address)
            except (FileNotFoundError, ConnectionRefusedError, OSError):
                raise AgentNotRunning(address) from None
            sock.sendall(data)
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_LINE * 16:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if chunk.endswith(b"\n"):
                    break
            raw = b"".join(chunks)
        finally:
            sock.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        raise RuntimeError("the agent's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise RuntimeError("the agent's answer is not a JSON object")
    return answer
