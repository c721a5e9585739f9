"""Where things live on disk, per OS.

The config dir and the identity default are the reference agent's, so both programs share one
agent.toml and one identity key. Our own data (ledger, logs, locks) lives under our app name.

Every location can be overridden with an environment variable, which is how the tests keep away
from the real home directory:

- `USEPOD_CONFIG_DIR`: the directory holding agent.toml
- `USEPOD_DATA_DIR`: ledger database, lock files
- `USEPOD_LOG_DIR`: rotating log files
- `HOME` / `XDG_*`: honoured as usual (on Windows `USERPROFILE` comes first, see :func:`home`)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import platformdirs

APP_DIR_NAME = "usepod-desktop"
CONFIG_FILE_NAME = "agent.toml"


def home(platform: str | None = None) -> Path:
    """The user's home directory.

    Windows: `USERPROFILE` first, `HOME` only when it is unset. The reference agent asks
    Windows for the profile folder (which is what `USERPROFILE` holds) and Python's own
    `expanduser` stopped preferring `HOME` in 3.8: a `HOME` set by MSYS / Cygwin or a
    corporate network home must not move the identity key where the reference does not look.
    Elsewhere `HOME`, as every POSIX program (the tests set both)."""
    names = ("USERPROFILE", "HOME") if (platform or sys.platform) == "win32" else ("HOME",)
    for name in names:
        value = os.environ.get(name)
        if value:
            return Path(value)
    return Path.home()


def expand_user(path: str | Path) -> Path:
    """Expand a leading `~` against :func:`home` (the reference expands `~` to the home dir)."""
    text = str(path)
    if text == "~" or text.startswith(("~/", "~\\")):
        return home() / text[2:]
    return Path(text)


def config_dir() -> Path:
    """The reference agent's config directory (docs/files.md, "agent.toml")."""
    override = os.environ.get("USEPOD_CONFIG_DIR")
    if override:
        return Path(override)
    if sys.platform == "darwin":
        return home() / "Library" / "Application Support" / "ai.usepod.usepod-agent"
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA") or str(home() / "AppData" / "Roaming")
        return Path(appdata) / "usepod" / "usepod-agent" / "config"
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else home() / ".config"
    return base / "usepod-agent"


def default_config_path() -> Path:
    return config_dir() / CONFIG_FILE_NAME


def default_identity_path() -> Path:
    """`~/.usepod-agent/identity.key`, the reference default."""
    return home() / ".usepod-agent" / "identity.key"


def data_dir() -> Path:
    """Our own data: the earnings ledger, the single-instance lock."""
    override = os.environ.get("USEPOD_DATA_DIR")
    if override:
        return Path(override)
    if sys.platform.startswith("linux"):
        xdg = os.environ.get("XDG_DATA_HOME")
        return (Path(xdg) if xdg else home() / ".local" / "share") / APP_DIR_NAME
    return Path(platformdirs.user_data_dir(APP_DIR_NAME, appauthor=False))


def log_dir() -> Path:
    """Rotating log files."""
    override = os.environ.get("USEPOD_LOG_DIR")
    if override:
        return Path(override)
    if sys.platform.startswith("linux"):
        xdg = os.environ.get("XDG_STATE_HOME")
        return (Path(xdg) if xdg else home() / ".local" / "state") / APP_DIR_NAME / "log"
    return Path(platformdirs.user_log_dir(APP_DIR_NAME, appauthor=False))


#: Mode of the directories and files we create on POSIX: the owner only (like the identity).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def make_private_dir(directory: Path) -> None:
    """Create `directory` and any missing parent, each one mode 0700 (POSIX; elsewhere the
    default ACLs). Directories that exist are left as they are (they may be shared)."""
    missing: list[Path] = []
    current = Path(directory)
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by another process
        if os.name == "posix":
            os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask


def create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 when it does not exist (a file that exists keeps its
    content; on POSIX one readable by others is narrowed to 0600)."""
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        if os.name == "posix" and not path.is_symlink():
            try:
                mode = path.stat().st_mode & 0o777
                if mode & 0o077:
                    os.chmod(path, mode & 0o700)
            except OSError:
                pass  # not ours to change (another user's file): leave it
        return
    os.close(fd)
