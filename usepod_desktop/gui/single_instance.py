"""One copy per user: a lock file plus a local socket that brings the running copy forward.

- The first copy holds a :class:`QLockFile` in the data dir and listens on a
  :class:`QLocalServer` named per user (and per data dir, so test homes never meet).
- A second copy cannot take the lock: it connects, sends ``show``, waits for the answer and
  exits 0; the first copy emits :attr:`SingleInstance.activated` (it shows and activates its
  window) and answers ``shown``. The second copy prints what it was told, never more. On
  Windows the second copy (which the user just started, so it may take the foreground) first
  lets any process take it (`AllowSetForegroundWindow`): without that, Windows only flashes
  the first copy's taskbar button instead of raising its window.
- A crash leaves a lock file whose process is gone (QLockFile sees that it is stale and takes
  it over) and maybe a socket file: the new owner removes it before listening, so leftovers
  never block start-up.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import sys
from pathlib import Path

from PySide6.QtCore import QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from usepod_desktop import APP_NAME
from usepod_desktop.core import paths

log = logging.getLogger(__name__)

MESSAGE = b"show\n"
ANSWER = b"shown\n"
#: What the second copy prints after "Use Pod is already running; ".
SHOWN = "it has shown its window."
NO_ANSWER = "it was asked to show its window but did not confirm (an older version?)."


def allow_foreground(platform: str | None = None) -> bool:
    """Windows: let the running copy take the foreground (ASFW_ANY). No-op elsewhere."""
    if (platform or sys.platform) != "win32":
        return False
    try:
        import ctypes

        return bool(ctypes.windll.user32.AllowSetForegroundWindow(-1))  # type: ignore[attr-defined,unused-ignore]
    except Exception:
        return False


def default_key(data_dir: Path | None = None) -> str:
    directory = str(data_dir or paths.data_dir())
    try:
        user = getpass.getuser()
    except Exception:  # no user name (odd containers)
        user = "user"
    digest = hashlib.sha256(directory.encode()).hexdigest()[:10]
    safe_user = "".join(c for c in user if c.isalnum() or c in "-_") or "user"
    return f"{APP_NAME}-{safe_user}-{digest}"


class SingleInstance(QObject):
    activated = Signal()

    def __init__(
        self, key: str | None = None, lock_dir: Path | None = None, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self.key = key or default_key()
        self.lock_dir = lock_dir or paths.data_dir()
        self.lock_path = self.lock_dir / "gui.lock"
        self.lock: QLockFile | None = None
        self.server: QLocalServer | None = None

    def acquire(self) -> bool:
        """True when this is the only copy (and now owns the lock and the socket)."""
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("cannot create %s (%s); single-instance check skipped", self.lock_dir, exc)
            return self._listen()
        lock = QLockFile(str(self.lock_path))
        lock.setStaleLockTime(0)  # stale only when its process is gone, never by age
        if not lock.tryLock(200):
            if lock.error() == QLockFile.LockError.LockFailedError:
                return False
            log.warning(
                "cannot use the lock file %s (%s); single-instance check skipped",
                self.lock_path,
                lock.error(),
            )
            return self._listen()
        self.lock = lock
        return self._listen()

    def _listen(self) -> bool:
        QLocalServer.removeServer(self.key)  # a socket left by a crash
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.key):
            log.warning(
                "cannot listen on %s: %s (a second launch will not find this one)",
                self.key,
                server.errorString(),
            )
            return True
        server.newConnection.connect(self._connection)
        self.server = server
        return True

    def notify_running(self, timeout_ms: int = 2000) -> str | None:
        """Ask the running copy to come forward. Returns what happened in words (:data:`SHOWN`
        or :data:`NO_ANSWER`), None when nobody is listening."""
        allow_foreground()
        socket = QLocalSocket()
        socket.connectToServer(self.key)
        if not socket.waitForConnected(timeout_ms):
            return None
        socket.write(MESSAGE)
        if not socket.waitForBytesWritten(timeout_ms):
            socket.abort()
            return None
        answer = bytearray()
        while ANSWER not in answer and len(answer) < 64 and socket.waitForReadyRead(timeout_ms):
            answer += bytes(socket.readAll().data())
        socket.disconnectFromServer()
        if socket.state() != QLocalSocket.LocalSocketState.UnconnectedState:
            socket.waitForDisconnected(timeout_ms)
        return SHOWN if ANSWER in answer else NO_ANSWER

    def _connection(self) -> None:
        server = self.server
        if server is None:
            return
        while server.hasPendingConnections():
            socket = server.nextPendingConnection()
            if socket is None:
                break
            buffer = bytearray()

            def read(s: QLocalSocket = socket, buf: bytearray = buffer) -> None:
                buf += bytes(s.readAll().data())
                if MESSAGE.strip() in buf:
                    buf.clear()
                    self.activated.emit()  # the window is shown by the connected slot
                    s.write(ANSWER)
                    s.flush()
                elif len(buf) > 64:  # not one of ours
                    s.abort()

            socket.readyRead.connect(read)
            socket.disconnected.connect(socket.deleteLater)
            if socket.bytesAvailable():
                read()

    def release(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.lock is not None:
            self.lock.unlock()
            self.lock = None
