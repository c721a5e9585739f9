"""Writing files safely: one atomic-write helper for agent.toml, the identity key, the start at
login entry and the service file.

- :func:`atomic_write_text` / :func:`atomic_write_bytes`: temp file in the same directory, fsync,
  mode, rename over the target, fsync of the directory. Readers see the old or the new file,
  never a mix; on any failure the old file is left as it was.
- :func:`create_exclusive`: create a new file, never replacing one (``O_EXCL``), written and
  fsynced before it is closed: the identity key is created this way, so a key another process
  created a moment earlier is never overwritten.
- :func:`replace`: `os.replace` that survives Windows' transient refusals. There, renaming over a
  file fails with "access denied" / "sharing violation" while another process has it open
  without delete sharing: an antivirus scanning the new file, a backup or indexer, an editor.
  Those last milliseconds, so the rename is retried with a short backoff (about 1.5 s in all).
  A read-only target fails the same way but never clears up by itself: it is reported at once
  in one line that names the file and the fix (:class:`ReadOnlyFileError`).
- :func:`restrict_to_owner`: only the current user may read the file. POSIX: mode 0600. Windows:
  mode bits only toggle the read-only flag, so the file's ACL is replaced with one entry
  granting the current user full control, inheritance removed (`icacls`).

Every platform-dependent step takes `platform` (default `sys.platform`) and, for the commands it
runs, a `runner`, so the Windows behaviour is tested on any OS.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from usepod_desktop.core import paths

log = logging.getLogger(__name__)

#: Pauses between rename attempts on Windows (seconds): about 1.5 s in all.
REPLACE_BACKOFF: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.4, 0.7)

#: Windows error codes a rename over a busy file fails with (access denied, sharing violation,
#: lock violation).
_TRANSIENT_WINERRORS = {5, 32, 33}


class ReadOnlyFileError(PermissionError):
    """The target is read-only: retrying cannot help. `str()` is one line with the fix."""


class FileBusyError(PermissionError):
    """The target stayed locked by another program through every retry."""


def _is_read_only(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not mode & stat.S_IWRITE


def _read_only_message(path: Path, platform: str) -> str:
    fix = (
        f'clear its read-only flag (Properties, or `attrib -r "{path}"`)'
        if platform == "win32"
        else f"make it writable (`chmod u+w {path}`)"
    )
    return f"cannot save {path}: the file is read-only; {fix} and try again"


def replace(
    src: str | Path,
    dst: str | Path,
    *,
    platform: str | None = None,
    backoff: Sequence[float] = REPLACE_BACKOFF,
    sleep: Callable[[float], None] | None = None,
) -> None:
    """`os.replace(src, dst)`, retried on Windows while another program holds `dst` (see the
    module docstring). Raises :class:`ReadOnlyFileError` for a read-only target and
    :class:`FileBusyError` when it stays busy; `src` is left in place for the caller to remove."""
    kind = platform or sys.platform
    target = Path(dst)
    attempt = 0
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError as exc:
            if _is_read_only(target):
                raise ReadOnlyFileError(_read_only_message(target, kind)) from None
            winerror = getattr(exc, "winerror", None)
            transient = kind == "win32" and (winerror is None or winerror in _TRANSIENT_WINERRORS)
            if not transient:
                raise
            if attempt >= len(backoff):
                raise FileBusyError(
                    f"cannot save {target}: another program keeps it open (an antivirus, "
                    "backup or editor?); close it and try again"
                ) from None
            log.debug("%s is busy (%s); retrying the rename", target, exc)
            (sleep or time.sleep)(backoff[attempt])
            attempt += 1


def atomic_write_bytes(
    target: Path,
    data: bytes,
    *,
    mode: int | None = None,
    owner_only: bool = False,
    platform: str | None = None,
) -> None:
    """Replace `target` with `data` so that readers see the old or the new file, never a mix.

    `mode` defaults to the existing file's (0600 for a new one, in directories created 0700:
    agent.toml tells where the operator's money goes). `owner_only` restricts the new file to
    the current user before it takes the target's place (:func:`restrict_to_owner`). A symlink
    is written through: its target is replaced, the link stays.
    """
    target = Path(os.path.realpath(target))
    paths.make_private_dir(target.parent)
    if owner_only:
        mode = 0o600
    if mode is None:
        try:
            mode = target.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = paths.PRIVATE_FILE_MODE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if owner_only and (platform or sys.platform) == "win32":
            restrict_to_owner(tmp, platform=platform)
        replace(tmp, target, platform=platform)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def atomic_write_text(
    target: Path,
    text: str,
    *,
    mode: int | None = None,
    owner_only: bool = False,
    platform: str | None = None,
) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text (newlines written as given)."""
    atomic_write_bytes(
        target, text.encode("utf-8"), mode=mode, owner_only=owner_only, platform=platform
    )


def create_exclusive(path: Path, text: str, *, mode: int = 0o600) -> None:
    """Create `path` holding `text` (UTF-8, in text mode) with `mode`; the parent
    directories are created when missing. Raises FileExistsError, leaving the file alone, when
    `path` exists already (even one created a moment ago by another process), and OSError when
    it cannot be created or written; a file it created but could not write whole (a full disk)
    is removed again, so no half-written file is left to be read later. The data is fsynced
    before the file is closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)  # ours: created exclusively a moment ago
        raise


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Owner-only access


def windows_user() -> str:
    """`DOMAIN\\user` of the current Windows user (from the environment Windows sets at logon)."""
    user = os.environ.get("USERNAME") or ""
    domain = os.environ.get("USERDOMAIN") or ""
    return f"{domain}\\{user}" if domain and user else user


def owner_only_command(path: str | Path, user: str) -> list[str]:
    """The `icacls` argv that leaves exactly one entry on `path`: `user`, full control.
    `/inheritance:r` drops the entries inherited from the folder (Administrators, SYSTEM,
    other users on a shared profile folder); `/grant:r` replaces the user's own entries."""
    return ["icacls", str(path), "/inheritance:r", "/grant:r", f"{user}:(F)"]


def _run_quiet(argv: Sequence[str]) -> int:
    try:
        return subprocess.run(
            list(argv),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        ).returncode
    except OSError:
        return 127


def restrict_to_owner(
    path: str | Path,
    *,
    platform: str | None = None,
    runner: Callable[[Sequence[str]], int] | None = None,
    user: str | None = None,
) -> bool:
    """Only the current user may read or change `path`. POSIX: chmod 0600. Windows: an ACL with
    one entry for the current user (see :func:`owner_only_command`). Returns False (and logs a
    warning) when that could not be done; the file is then protected only by its folder's
    permissions, which on Windows is the user's profile folder."""
    if (platform or sys.platform) != "win32":
        os.chmod(path, 0o600)
        return True
    who = user if user is not None else windows_user()
    if not who:
        log.warning("cannot restrict %s to its owner: USERNAME is not set", path)
        return False
    code = (runner or _run_quiet)(owner_only_command(path, who))
    if code != 0:
        log.warning(
            "cannot restrict %s to its owner (icacls exit %s); it is protected only by the "
            "permissions of its folder",
            path,
            code,
        )
        return False
    return True
