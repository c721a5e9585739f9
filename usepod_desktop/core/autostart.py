"""Start at login: off until the user turns it on, never switched on by anything else.

One entry per OS, pointing at the program that is running now:

- Linux (and other XDG desktops): `$XDG_CONFIG_HOME/autostart/usepod-desktop.desktop`
- macOS: the LaunchAgent `~/Library/LaunchAgents/ai.usepod.usepod-desktop.plist` (RunAtLoad; it
  is read at the next login, so turning it on does not start a second copy now)
- Windows: the value `UsePodDesktop` under `HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run`

:func:`refresh` is meant to be called at every launch of the app: when start at login is on and
the entry points at another program file (the app was moved or updated to a new path), it
rewrites the entry to point here. It never creates an entry, so an update cannot switch start at
login back on.

Every function takes `platform` (default `sys.platform`) so the tests can render and check each
OS's entry on any OS. On Windows the registry is reached through the small :class:`RunKey` seam;
tests pass an in-memory one. No Qt here: the GUI's "Start at login" checkbox calls this module.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol

from usepod_desktop import APP_NAME
from usepod_desktop.core import paths
from usepod_desktop.core.errors import AutostartError
from usepod_desktop.core.fs import atomic_write_bytes

#: File name of the XDG autostart entry.
DESKTOP_FILE_NAME = f"{APP_NAME}.desktop"
#: launchd label of the login item (the headless service uses `<label>.agent`).
LAUNCH_AGENT_LABEL = "ai.usepod.usepod-desktop"
#: Name of the value under the Run key.
RUN_VALUE_NAME = "UsePodDesktop"
RUN_KEY_PATH = r"Software\Microsoft\Windows\CurrentVersion\Run"
#: Where Windows (Task Manager, Settings > Apps > Startup) records a user's "disabled" choice.
STARTUP_APPROVED_KEY_PATH = (
    r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"
)

DISPLAY_NAME = "Use Pod Desktop"
COMMENT = "Serve AI inference from your own backends on the Use Pod marketplace"


def platform_kind(platform: str | None = None) -> str:
    """`"linux"` (any XDG desktop), `"darwin"` or `"win32"`."""
    name = platform or sys.platform
    if name == "darwin":
        return "darwin"
    if name in ("win32", "cygwin"):
        return "win32"
    return "linux"


# --------------------------------------------------------------------------------------------
# What to launch


#: The console twin of the frozen Windows app (packaging/usepod-desktop.spec).
WINDOWS_CONSOLE_EXE = f"{APP_NAME}-cli.exe"
#: The windowed launcher pip makes on Windows from `[project.gui-scripts]`.
WINDOWS_GUI_SCRIPT = f"{APP_NAME}-gui.exe"


def launch_command(
    *,
    platform: str | None = None,
    executable: str | None = None,
    frozen: bool | None = None,
    windowed: bool = True,
    isfile: Callable[[str], bool] = os.path.isfile,
) -> list[str]:
    """The argv that starts this program as it is installed now.

    - frozen (PyInstaller): the bundle's executable (`$APPIMAGE` when running from an AppImage,
      whose mount point changes at every start);
    - otherwise the `usepod-desktop` console script next to the interpreter when it exists (a
      virtualenv or pip install), else `<python> -m usepod_desktop`.

    Windows with `windowed` (start at login starts the tray app): never a console program,
    whose window would open at every login and take the app down when closed. The frozen
    `usepod-desktop-cli.exe` is replaced by its windowed twin `usepod-desktop.exe`; a pip
    install uses the `usepod-desktop-gui.exe` launcher (`[project.gui-scripts]`), else
    `pythonw.exe -m usepod_desktop`. `windowed=False` is for the headless service.

    `executable`, `frozen` and `isfile` default to `sys.executable`, `sys.frozen` and the real
    file system; tests pass them.
    """
    kind = platform_kind(platform)
    exe = executable if executable is not None else sys.executable
    is_frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    pure = PureWindowsPath if kind == "win32" else PurePosixPath
    folder = pure(exe).parent
    gui = windowed and kind == "win32"
    if is_frozen:
        appimage = os.environ.get("APPIMAGE")
        if kind == "linux" and appimage:
            return [appimage]
        if gui and pure(exe).name.lower() == WINDOWS_CONSOLE_EXE:
            twin = folder / f"{APP_NAME}.exe"
            if isfile(str(twin)):
                return [str(twin)]
        return [exe]
    if gui:
        # a venv has its scripts next to python.exe; a system Python in Scripts\
        for candidate in (folder / WINDOWS_GUI_SCRIPT, folder / "Scripts" / WINDOWS_GUI_SCRIPT):
            if isfile(str(candidate)):
                return [str(candidate)]
        pythonw = folder / "pythonw.exe"
        if isfile(str(pythonw)):
            return [str(pythonw), "-m", "usepod_desktop"]
    script_name = f"{APP_NAME}.exe" if kind == "win32" else APP_NAME
    script = folder / script_name
    if isfile(str(script)):
        return [str(script)]
    return [exe, "-m", "usepod_desktop"]


def macos_translocation_problem(program: str) -> str | None:
    """macOS: one line when `program` runs from a place that is gone after a reboot, else None.

    Gatekeeper's App Translocation runs an app opened from Downloads (still quarantined) from a
    random read-only copy under `/private/var/folders/.../AppTranslocation/`; an app opened
    straight from its disk image runs from `/Volumes/...`. A login item pointing there would
    start nothing after the next restart."""
    if "/AppTranslocation/" in program:
        where = "a temporary copy macOS made of it (App Translocation, e.g. from Downloads)"
    elif program.startswith("/Volumes/"):
        where = "the disk image (or external volume) it came on"
    else:
        return None
    return (
        f"Use Pod is running from {where}. Drag Use Pod into the Applications folder, eject "
        "the disk image, and open it from Applications: otherwise start at login would point "
        "at a path that is gone after a restart."
    )


# --------------------------------------------------------------------------------------------
# Rendering (pure): what each OS's entry contains

_DESKTOP_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def desktop_exec(argv: Sequence[str]) -> str:
    """Quote argv for a .desktop file's `Exec=` value (Desktop Entry Specification: quoting,
    `%` doubled, then the general backslash escaping of string values)."""
    parts = []
    for arg in argv:
        if not arg or any(c in _DESKTOP_RESERVED for c in arg):
            inner = "".join("\\" + c if c in '"`$\\' else c for c in arg)
            arg = f'"{inner}"'
        parts.append(arg.replace("%", "%%"))
    return " ".join(parts).replace("\\", "\\\\")


def parse_desktop_exec(value: str) -> list[str]:
    """The inverse of :func:`desktop_exec` (for entries we wrote)."""
    unescaped = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            unescaped.append({"s": " ", "n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
            i += 2
            continue
        unescaped.append(c)
        i += 1
    text = "".join(unescaped).replace("%%", "\x00")
    args: list[str] = []
    current: list[str] = []
    started = in_quotes = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_quotes:
            if c == "\\" and i + 1 < len(text) and text[i + 1] in '"`$\\':
                current.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_quotes = False
            else:
                current.append(c)
        elif c == '"':
            in_quotes = started = True
        elif c in " \t\n":
            if started:
                args.append("".join(current))
            current, started = [], False
        else:
            current.append(c)
            started = True
        i += 1
    if in_quotes:
        raise ValueError("unterminated quote in Exec")
    if started:
        args.append("".join(current))
    return [a.replace("\x00", "%") for a in args]


def render_desktop_entry(argv: Sequence[str]) -> str:
    """The XDG autostart entry (`~/.config/autostart/usepod-desktop.desktop`)."""
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        f"Name={DISPLAY_NAME}\n"
        f"Comment={COMMENT}\n"
        f"Exec={desktop_exec(argv)}\n"
        f"Icon={APP_NAME}\n"
        "Terminal=false\n"
        "Categories=Network;\n"
        "X-GNOME-Autostart-enabled=true\n"
        "X-GNOME-Autostart-Delay=5\n"
    )


def render_launch_agent(argv: Sequence[str]) -> bytes:
    """The macOS login item: a LaunchAgent that runs the app once at login (no KeepAlive: quitting
    the app from its menu must not restart it)."""
    plist: dict[str, Any] = {
        "Label": LAUNCH_AGENT_LABEL,
        "ProgramArguments": list(argv),
        "RunAtLoad": True,
        "KeepAlive": False,
        "ProcessType": "Interactive",
        "LimitLoadToSessionType": "Aqua",
    }
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False)


def windows_command_line(argv: Sequence[str]) -> str:
    """A Windows command line for argv: the program path always in double quotes (a path with
    spaces unquoted is a classic Run-key bug), the arguments quoted as the C runtime parses them."""
    if not argv:
        raise ValueError("empty command")
    program = f'"{argv[0]}"'
    rest = subprocess.list2cmdline(list(argv[1:]))
    return f"{program} {rest}" if rest else program


def parse_windows_command_line(value: str) -> list[str]:
    """Split a Run value into argv (the rules of :func:`windows_command_line`, enough for ours and
    for a plain unquoted path)."""
    args: list[str] = []
    current: list[str] = []
    in_quotes = False
    backslashes = 0
    started = False
    for c in value:
        if c == "\\":
            backslashes += 1
            started = True
            continue
        if c == '"':
            current.append("\\" * (backslashes // 2))
            if backslashes % 2:
                current.append('"')
            else:
                in_quotes = not in_quotes
            backslashes = 0
            started = True
            continue
        current.append("\\" * backslashes)
        backslashes = 0
        if c in " \t" and not in_quotes:
            if started:
                args.append("".join(current))
            current, started = [], False
            continue
        current.append(c)
        started = True
    current.append("\\" * backslashes)
    if started:
        args.append("".join(current))
    return args


def render(argv: Sequence[str], platform: str | None = None) -> str:
    """The text of the entry for `platform` (the plist as XML text, the registry value as is)."""
    kind = platform_kind(platform)
    if kind == "darwin":
        return render_launch_agent(argv).decode("utf-8")
    if kind == "win32":
        return windows_command_line(argv)
    return render_desktop_entry(argv)


# --------------------------------------------------------------------------------------------
# Windows registry seam


class RunKey(Protocol):
    """The few registry operations start at login needs (HKCU only)."""

    def get(self, name: str) -> str | None:
        """The Run value's text, or None."""

    def set(self, name: str, value: str) -> None:
        """Write the Run value (REG_SZ)."""

    def delete(self, name: str) -> bool:
        """Delete the Run value; False when it did not exist."""

    def approved(self, name: str) -> bool:
        """False when the user disabled the entry in Task Manager / Settings > Startup."""

    def clear_approval(self, name: str) -> None:
        """Forget a Task Manager "disabled" choice (the user has just turned it on here)."""


class WinregRunKey:
    """The real HKCU Run key, through winreg (Windows only)."""

    def __init__(self) -> None:
        import winreg  # type: ignore[import-not-found,unused-ignore]

        self._winreg: Any = winreg

    def get(self, name: str) -> str | None:
        w = self._winreg
        try:
            with w.OpenKey(w.HKEY_CURRENT_USER, RUN_KEY_PATH, 0, w.KEY_READ) as key:
                value, _kind = w.QueryValueEx(key, name)
        except FileNotFoundError:
            return None
        return str(value)

    def set(self, name: str, value: str) -> None:
        w = self._winreg
        with w.CreateKeyEx(w.HKEY_CURRENT_USER, RUN_KEY_PATH, 0, w.KEY_SET_VALUE) as key:
            w.SetValueEx(key, name, 0, w.REG_SZ, value)

    def delete(self, name: str) -> bool:
        w = self._winreg
        try:
            with w.OpenKey(w.HKEY_CURRENT_USER, RUN_KEY_PATH, 0, w.KEY_SET_VALUE) as key:
                w.DeleteValue(key, name)
        except FileNotFoundError:
            return False
        return True

    def approved(self, name: str) -> bool:
        w = self._winreg
        try:
            with w.OpenKey(w.HKEY_CURRENT_USER, STARTUP_APPROVED_KEY_PATH, 0, w.KEY_READ) as key:
                data, _kind = w.QueryValueEx(key, name)
        except FileNotFoundError:
            return True
        # 12 bytes; an even first byte (0x02, 0x06) means enabled, odd (0x03) disabled.
        return not (isinstance(data, bytes | bytearray) and data and data[0] & 1)

    def clear_approval(self, name: str) -> None:
        w = self._winreg
        try:
            with w.OpenKey(
                w.HKEY_CURRENT_USER, STARTUP_APPROVED_KEY_PATH, 0, w.KEY_SET_VALUE
            ) as key:
                w.DeleteValue(key, name)
        except FileNotFoundError:
            pass


def _run_key(registry: RunKey | None) -> RunKey:
    return registry if registry is not None else WinregRunKey()


# --------------------------------------------------------------------------------------------
# Locations


def desktop_entry_path() -> Path:
    """`$XDG_CONFIG_HOME/autostart/usepod-desktop.desktop` (XDG Autostart Specification)."""
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else paths.home() / ".config"
    return base / "autostart" / DESKTOP_FILE_NAME


def launch_agent_path() -> Path:
    return paths.home() / "Library" / "LaunchAgents" / f"{LAUNCH_AGENT_LABEL}.plist"


def entry_path(platform: str | None = None) -> Path | None:
    """The file holding the entry, or None on Windows (a registry value)."""
    kind = platform_kind(platform)
    if kind == "darwin":
        return launch_agent_path()
    if kind == "win32":
        return None
    return desktop_entry_path()


def describe(platform: str | None = None) -> str:
    """Where the entry lives, in words for the user."""
    kind = platform_kind(platform)
    if kind == "darwin":
        return f"LaunchAgent {launch_agent_path()}"
    if kind == "win32":
        return f"registry value HKCU\\{RUN_KEY_PATH}\\{RUN_VALUE_NAME}"
    return f"XDG autostart entry {desktop_entry_path()}"


# --------------------------------------------------------------------------------------------
# Reading what is there


@dataclass(frozen=True)
class Entry:
    """What :func:`enable` wrote (or :func:`refresh` rewrote)."""

    location: str  #: :func:`describe`
    path: Path | None  #: the file, None for the registry
    content: str  #: exactly what was written (file text or registry value)
    command: list[str]  #: the argv it starts


def _read_desktop_entry(path: Path) -> dict[str, str] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[str, str] = {}
    group = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
            continue
        if group == "Desktop Entry" and "=" in line:
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), value.strip())
    return values


def _read_launch_agent(path: Path) -> dict[str, Any] | None:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        plist = plistlib.loads(data)
    except Exception:
        return {}
    return plist if isinstance(plist, dict) else {}


def current_command(
    platform: str | None = None, *, registry: RunKey | None = None
) -> list[str] | None:
    """The argv the existing entry starts (None when there is no entry, even a disabled one)."""
    kind = platform_kind(platform)
    if kind == "darwin":
        plist = _read_launch_agent(launch_agent_path())
        if plist is None:
            return None
        args = plist.get("ProgramArguments")
        return [str(a) for a in args] if isinstance(args, list) else []
    if kind == "win32":
        value = _run_key(registry).get(RUN_VALUE_NAME)
        return None if value is None else parse_windows_command_line(value)
    values = _read_desktop_entry(desktop_entry_path())
    if values is None:
        return None
    try:
        return parse_desktop_exec(values.get("Exec", ""))
    except ValueError:
        return []


def enabled(platform: str | None = None, *, registry: RunKey | None = None) -> bool:
    """True when the program starts at login: our entry exists and the user has not switched it
    off elsewhere (`Hidden=true` / `X-GNOME-Autostart-enabled=false` from a desktop's startup
    settings, `Disabled` in the plist, Task Manager's "Disabled" on Windows)."""
    kind = platform_kind(platform)
    if kind == "darwin":
        plist = _read_launch_agent(launch_agent_path())
        return bool(plist) and plist.get("RunAtLoad") is True and not plist.get("Disabled")
    if kind == "win32":
        key = _run_key(registry)
        return key.get(RUN_VALUE_NAME) is not None and key.approved(RUN_VALUE_NAME)
    values = _read_desktop_entry(desktop_entry_path())
    if not values:
        return False
    if values.get("Hidden", "").lower() == "true":
        return False
    return values.get("X-GNOME-Autostart-enabled", "true").lower() != "false"


# --------------------------------------------------------------------------------------------
# Changing it


def _atomic_write(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data, mode=0o644)


def _write(argv: Sequence[str], kind: str, registry: RunKey | None) -> Entry:
    content = render(argv, kind)
    if kind == "win32":
        key = _run_key(registry)
        key.set(RUN_VALUE_NAME, content)
        return Entry(describe(kind), None, content, list(argv))
    path = entry_path(kind)
    assert path is not None
    _atomic_write(path, content.encode("utf-8"))
    return Entry(describe(kind), path, content, list(argv))


def enable(
    platform: str | None = None,
    *,
    registry: RunKey | None = None,
    command: Sequence[str] | None = None,
) -> Entry:
    """Turn start at login on (the user asked): write the entry for the current program and
    clear any "disabled elsewhere" mark. Returns exactly what was written. Raises
    :class:`AutostartError` on macOS when the app runs from a translocated or disk-image path
    (:func:`macos_translocation_problem`)."""
    kind = platform_kind(platform)
    argv = list(command) if command is not None else launch_command(platform=kind)
    problem = macos_translocation_problem(argv[0]) if kind == "darwin" else None
    if problem is not None:
        raise AutostartError(problem)
    entry = _write(argv, kind, registry)
    if kind == "win32":
        _run_key(registry).clear_approval(RUN_VALUE_NAME)
    return entry


def disable(platform: str | None = None, *, registry: RunKey | None = None) -> bool:
    """Turn start at login off: remove the entry. False when there was none."""
    kind = platform_kind(platform)
    if kind == "win32":
        return _run_key(registry).delete(RUN_VALUE_NAME)
    path = entry_path(kind)
    assert path is not None
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def is_stale(
    platform: str | None = None,
    *,
    registry: RunKey | None = None,
    command: Sequence[str] | None = None,
) -> bool:
    """True when an entry exists and starts something other than the current program."""
    kind = platform_kind(platform)
    existing = current_command(kind, registry=registry)
    if existing is None:
        return False
    argv = list(command) if command is not None else launch_command(platform=kind)
    return _program_of(existing) != argv


def _program_of(argv: Sequence[str]) -> list[str]:
    """The program part of an entry's argv: what comes before its first option (`--config F`
    written by `autostart on --config F` is the user's, not part of the program)."""
    for i, arg in enumerate(argv):
        if i and arg.startswith("--"):
            return list(argv[:i])
    return list(argv)


def refresh(
    platform: str | None = None,
    *,
    registry: RunKey | None = None,
    command: Sequence[str] | None = None,
) -> bool:
    """Call at every launch. When start at login is on and its entry points at another program
    file, rewrite it to point at this one and return True. Never creates an entry and never
    touches one the user switched off: it cannot turn start at login on."""
    kind = platform_kind(platform)
    if not enabled(kind, registry=registry):
        return False
    argv = list(command) if command is not None else launch_command(platform=kind)
    existing = current_command(kind, registry=registry) or []
    program = _program_of(existing)
    if program == argv:
        return False
    if kind == "darwin" and macos_translocation_problem(argv[0]) is not None:
        return False  # never repoint a good entry at a temporary copy
    _write(argv + _kept_options(existing[len(program) :]), kind, registry)
    return True


def _kept_options(options: Sequence[str]) -> list[str]:
    """What a repointed entry keeps: `--config FILE` (from `autostart on --config FILE`)."""
    kept: list[str] = []
    for i, arg in enumerate(options):
        if arg == "--config" and i + 1 < len(options):
            kept += [arg, options[i + 1]]
        elif arg.startswith("--config="):
            kept.append(arg)
    return kept
