"""The headless agent as a user service, for rigs without a screen.

- Linux: a systemd user unit `$XDG_CONFIG_HOME/systemd/user/usepod-desktop.service` running
  `usepod-desktop run`, restarted on failure;
- macOS: a LaunchAgent `~/Library/LaunchAgents/ai.usepod.usepod-desktop.agent.plist` running
  `usepod-desktop run`, kept alive when it fails, its output in `~/Library/Logs/usepod-desktop/`.

:func:`install` writes the file and returns exactly what it wrote together with the commands that
enable and start it and show its logs. It runs those commands only when asked (`start=True`),
through the `runner` seam, so tests never touch systemctl or launchctl.

The service and start at login (:mod:`usepod_desktop.core.autostart`) both run an agent with the
same identity: use one or the other.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usepod_desktop import APP_NAME
from usepod_desktop.core import autostart, paths
from usepod_desktop.core.errors import UserFacingError

UNIT_NAME = f"{APP_NAME}.service"
LAUNCHD_LABEL = f"{autostart.LAUNCH_AGENT_LABEL}.agent"

#: Runs one command, returns its exit code. The default runs it for real.
Runner = Callable[[Sequence[str]], int]


class ServiceError(UserFacingError):
    title = "Service"


def _run_for_real(argv: Sequence[str]) -> int:
    try:
        return subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError:
        print(f"{argv[0]}: command not found", file=sys.stderr)
        return 127


# --------------------------------------------------------------------------------------------
# Locations


def unit_path() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else paths.home() / ".config"
    return base / "systemd" / "user" / UNIT_NAME


def plist_path() -> Path:
    return paths.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"


def macos_log_dir() -> Path:
    """`~/Library/Logs/usepod-desktop` (or `$USEPOD_LOG_DIR`)."""
    override = os.environ.get("USEPOD_LOG_DIR")
    if override:
        return Path(override)
    return paths.home() / "Library" / "Logs" / APP_NAME


def service_path(platform: str | None = None) -> Path:
    kind = _kind(platform)
    return plist_path() if kind == "darwin" else unit_path()


def _kind(platform: str | None) -> str:
    kind = autostart.platform_kind(platform)
    if kind == "win32":
        raise ServiceError(
            "a background service is not available on Windows; use `usepod-desktop autostart on`"
            " to start the app at login"
        )
    return kind


# --------------------------------------------------------------------------------------------
# Rendering (pure)

_SYSTEMD_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=.,/:@")


def systemd_quote(arg: str) -> str:
    """Quote one word of an `ExecStart=` line (`%` and `$` escaped so systemd keeps them)."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and all(c in _SYSTEMD_SAFE for c in arg):
        return escaped
    escaped = escaped.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def service_command(
    extra_args: Sequence[str] = (),
    *,
    base: Sequence[str] | None = None,
    platform: str | None = None,
) -> list[str]:
    """The argv the service runs: the current program + `run` + extra args (e.g. `--config`)."""
    program = list(base) if base is not None else autostart.launch_command(platform=platform)
    return [*program, "run", *extra_args]


def render_systemd_unit(argv: Sequence[str]) -> str:
    return (
        "[Unit]\n"
        "Description=Use Pod provider agent (headless)\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={' '.join(systemd_quote(a) for a in argv)}\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "# SIGTERM: no new jobs, running ones get their grace period, then exit 0.\n"
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=30\n"
        "Environment=PYTHONUNBUFFERED=1\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def render_launchd_plist(argv: Sequence[str]) -> str:
    logs = macos_log_dir()
    plist: dict[str, Any] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(argv),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "ProcessType": "Background",
        "StandardOutPath": str(logs / "agent.out.log"),
        "StandardErrorPath": str(logs / "agent.err.log"),
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
    }
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False).decode("utf-8")


def render(argv: Sequence[str], platform: str | None = None) -> str:
    return render_launchd_plist(argv) if _kind(platform) == "darwin" else render_systemd_unit(argv)


def parse_exec_start(value: str) -> list[str]:
    """Split an `ExecStart=` value we wrote back into argv."""
    words = shlex.split(value.replace("$$", "\x00"), posix=True)
    return [w.replace("\x00", "$").replace("%%", "%") for w in words]


# --------------------------------------------------------------------------------------------
# Commands to show (and to run with start=True)


def _sh(argv: Sequence[str]) -> str:
    return shlex.join(argv)


@dataclass(frozen=True)
class Commands:
    """Shell commands, each an argv; `text` joins them for printing."""

    steps: list[list[str]]

    @property
    def text(self) -> str:
        return " && ".join(_sh(s) for s in self.steps)


def start_commands(platform: str | None = None) -> Commands:
    if _kind(platform) == "darwin":
        return Commands([["launchctl", "load", "-w", str(plist_path())]])
    return Commands(
        [
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", APP_NAME],
        ]
    )


def stop_commands(platform: str | None = None) -> Commands:
    """What :func:`uninstall` runs with stop=True, before it removes the file."""
    if _kind(platform) == "darwin":
        return Commands([["launchctl", "unload", "-w", str(plist_path())]])
    return Commands([["systemctl", "--user", "disable", "--now", APP_NAME]])


def status_commands(platform: str | None = None) -> Commands:
    if _kind(platform) == "darwin":
        return Commands([["launchctl", "list", LAUNCHD_LABEL]])
    return Commands([["systemctl", "--user", "status", APP_NAME]])


def log_hint(platform: str | None = None) -> str:
    """How to read the service's logs."""
    if _kind(platform) == "darwin":
        logs = macos_log_dir()
        return f"tail -f {shlex.quote(str(logs / 'agent.err.log'))}"
    return f"journalctl --user -u {APP_NAME} -f"


def log_files(platform: str | None = None) -> list[Path]:
    if _kind(platform) == "darwin":
        logs = macos_log_dir()
        return [logs / "agent.out.log", logs / "agent.err.log"]
    return []


# --------------------------------------------------------------------------------------------
# Install / uninstall / status


@dataclass(frozen=True)
class InstallResult:
    path: Path
    content: str  #: exactly what was written
    command: list[str]  #: the argv the service runs
    start: Commands  #: enable + start (run when start=True)
    logs: str  #: how to read the logs
    log_files: list[Path] = field(default_factory=list)
    ran: list[tuple[str, int]] = field(default_factory=list)  #: (command, exit code) when started
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UninstallResult:
    path: Path
    removed: bool
    stop: Commands  #: what stops a running instance
    ran: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceStatus:
    path: Path
    installed: bool
    command: list[str] | None  #: what the installed file runs
    current: list[str]  #: the program a fresh install would run (without `run` and its args)
    check: Commands
    logs: str

    @property
    def stale(self) -> bool:
        """The installed file runs a program other than this one (moved or updated)."""
        if not self.installed or self.command is None:
            return False
        return self.command[: len(self.current) + 1] != [*self.current, "run"]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _run_all(commands: Commands, runner: Runner) -> list[tuple[str, int]]:
    ran = []
    for step in commands.steps:
        code = runner(step)
        ran.append((_sh(step), code))
        if code != 0:
            break
    return ran


def install(
    platform: str | None = None,
    *,
    extra_args: Sequence[str] = (),
    start: bool = False,
    runner: Runner | None = None,
    base: Sequence[str] | None = None,
) -> InstallResult:
    """Write the service file for the current program (replacing an older one). With
    `start=True` also run the enable/start commands; otherwise only return them."""
    kind = _kind(platform)
    argv = service_command(extra_args, base=base, platform=kind)
    content = render(argv, kind)
    path = service_path(kind)
    existed = path.exists()
    _atomic_write(path, content)
    notes: list[str] = []
    if existed:
        restart = (
            f"launchctl kickstart -k gui/$(id -u)/{LAUNCHD_LABEL}"
            if kind == "darwin"
            else f"systemctl --user daemon-reload && systemctl --user restart {APP_NAME}"
        )
        notes.append(f"replaced an existing service file; if it is running, restart it: {restart}")
    if kind == "darwin":
        macos_log_dir().mkdir(parents=True, exist_ok=True)
    else:
        notes.append(
            "to keep it running after you log out and start it at boot: "
            "loginctl enable-linger $USER"
        )
    if autostart.enabled(kind):
        notes.append(
            "start at login is also on and would run a second agent with the same identity: "
            "usepod-desktop autostart off"
        )
    commands = start_commands(kind)
    ran = _run_all(commands, runner or _run_for_real) if start else []
    return InstallResult(
        path=path,
        content=content,
        command=argv,
        start=commands,
        logs=log_hint(kind),
        log_files=log_files(kind),
        ran=ran,
        notes=notes,
    )


def uninstall(
    platform: str | None = None, *, stop: bool = False, runner: Runner | None = None
) -> UninstallResult:
    """Stop (only with `stop=True`) and remove the service file. On Linux the unit's
    `default.target.wants` link is removed too, so it is not started at the next login even if
    `systemctl --user disable` was never run."""
    kind = _kind(platform)
    path = service_path(kind)
    ran = _run_all(stop_commands(kind), runner or _run_for_real) if stop and path.exists() else []
    removed = False
    try:
        path.unlink()
        removed = True
    except FileNotFoundError:
        pass
    if kind == "darwin":
        after = Commands([["launchctl", "remove", LAUNCHD_LABEL]])
    else:
        wants = path.parent / "default.target.wants" / UNIT_NAME
        if wants.is_symlink() or wants.exists():
            wants.unlink()
        after = Commands(
            [
                ["systemctl", "--user", "stop", APP_NAME],
                ["systemctl", "--user", "daemon-reload"],
            ]
        )
    if stop and removed and kind == "linux":
        ran += _run_all(
            Commands([["systemctl", "--user", "daemon-reload"]]), runner or _run_for_real
        )
    return UninstallResult(path=path, removed=removed, stop=after, ran=ran)


def installed_command(platform: str | None = None) -> list[str] | None:
    """The argv the installed service runs, None when not installed."""
    kind = _kind(platform)
    path = service_path(kind)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if kind == "darwin":
        try:
            plist = plistlib.loads(data)
        except Exception:
            return []
        args = plist.get("ProgramArguments") if isinstance(plist, dict) else None
        return [str(a) for a in args] if isinstance(args, list) else []
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "ExecStart":
            try:
                return parse_exec_start(value.strip())
            except ValueError:
                return []
    return []


def status(platform: str | None = None, *, base: Sequence[str] | None = None) -> ServiceStatus:
    """What is installed (from the file only; nothing is run)."""
    kind = _kind(platform)
    command = installed_command(kind)
    return ServiceStatus(
        path=service_path(kind),
        installed=command is not None,
        command=command,
        current=list(base) if base is not None else autostart.launch_command(platform=kind),
        check=status_commands(kind),
        logs=log_hint(kind),
    )
