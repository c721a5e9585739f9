"""One serving process per identity.

The tray app, `run` and a service that all use one identity key would each open a coordinator
session as the same provider, and each would take the other's jobs and close its session. So
the agent takes an exclusive OS lock before it connects (`fcntl.flock` on POSIX, `msvcrt`
locking on Windows). The lock file sits in our data dir, one per identity file (named after a
hash of its absolute path). It holds the owner's pid and kind (tray app, run, service). The OS
drops the lock when the process ends, even on a crash, so a stale file never blocks start-up.
The second process gets one line naming the first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import IO, Any

from usepod_desktop.core import paths
from usepod_desktop.core.errors import UserFacingError

KINDS = {"tray": "the tray app", "run": "`usepod-desktop run`", "service": "the service"}


class IdentityInUse(UserFacingError):
    """Another process serves under this identity now."""

    title = "Already serving"


def lock_path_for(identity_path: Path, directory: Path | None = None) -> Path:
    key = str(Path(identity_path).expanduser().absolute())
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return (directory or paths.data_dir()) / "locks" / f"identity-{digest}.lock"


def _try_lock(fh: IO[str]) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _describe(owner: dict[str, Any]) -> str:
    kind = KINDS.get(str(owner.get("kind")), "another usepod-desktop process")
    pid = owner.get("pid")
    return f"{kind} (pid {pid})" if isinstance(pid, int) else kind


class IdentityLock:
    """Held while an agent serves under `identity_path`. :meth:`acquire` raises
    :class:`IdentityInUse`, naming the other process, when another one holds it."""

    def __init__(
        self, identity_path: Path, kind: str = "run", *, directory: Path | None = None
    ) -> None:
        self.identity_path = Path(identity_path)
        self.kind = kind
        self.path = lock_path_for(self.identity_path, directory)
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._fh is not None

    def acquire(self) -> None:
        if self._fh is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+", encoding="utf-8")  # held until release()
        except OSError:
            return  # an unwritable data dir must not stop serving; nothing to compare with
        if not _try_lock(fh):
            fh.seek(0)
            try:
                owner = json.loads(fh.read(4096) or "{}")
            except ValueError:
                owner = {}
            fh.close()
            raise IdentityInUse(
                f"{_describe(owner if isinstance(owner, dict) else {})} is already serving "
                f"under the identity {self.identity_path}; stop it first (one process per "
                "identity, or the two would take each other's jobs)"
            )
        with contextlib.suppress(OSError):
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": os.getpid(), "kind": self.kind}))
            fh.flush()
        self._fh = fh

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.seek(0)
                fh.truncate()
            fh.close()  # closing drops the lock
