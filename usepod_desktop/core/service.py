"""The headless agent as a user service.

- Linux: a systemd user unit `$XDG_CONFIG_HOME/systemd/user/usepod-desktop.service` running
  `usepod-desktop run`, restarted on failure. With `loginctl enable-linger` it starts at boot
  and keeps running without anyone logged in: the choice for rigs without a screen.
- macOS: a LaunchAgent `~/Library/LaunchAgents/ai.usepod.usepod-desktop.agent.plist` running
  `usepod-desktop run`, kept alive when it fails, its output in `~/Library/Logs/usepod-desktop/`.
  A LaunchAgent belongs to the user's desktop session (`gui/<uid>`): it starts when that user
  logs in to the desktop and stops at logout; it does NOT run at boot before a login, nor for a
  machine nobody logs in to (that would need a system LaunchDaemon run by root, which this
  program does not install). See :data:`MACOS_SCOPE`. It is loaded with `launchctl bootstrap`
  and removed with `launchctl bootout` (the `load`/`unload` subcommands are deprecated), and
  runs as `ProcessType: Standard` (launchd throttles `Background` jobs' CPU and I/O).

:func:`install` writes the file and returns exactly what it wrote together with the commands that
enable and start it and show its logs. It runs those commands only when asked (`start=True`),
through the `runner` seam; :func:`control` (start, stop, restart, logs) runs them through the
same seam. The real runner executes `systemctl` / `launchctl` / `journalctl` found on PATH,
which is how the tests put recording fakes in their place.

The service and start at login (:mod:`usepod_desktop.core.autostart`) both run an agent with the
same identity: use one or the other.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usepod_desktop import APP_NAME
from usepod_desktop.core import autostart, paths
from usepod_desktop.core.errors import ServiceError
from usepod_desktop.core.fs import atomic_write_text
from usepod_desktop.core.logsetup import PROCESS_KIND_ENV

UNIT_NAME = f"{APP_NAME}.service"
LAUNCHD_LABEL = f"{autostart.LAUNCH_AGENT_LABEL}.agent"

#: Runs one command, returns its exit code. The default runs it for real.
Runner = Callable[[Sequence[str]], int]

#: What the macOS service is and is not, said wherever it is installed or described.
MACOS_SCOPE = (
    "on macOS the service is a LaunchAgent of your desktop session: it starts when you log in "
    "to the desktop and stops when you log out; it does not run at boot before a login or "
    "while nobody is logged in"
)

#: `service` actions besides install / uninstall / status.
CONTROL_ACTIONS = ("start", "stop", "restart", "logs")

#: Exit code of `service status` (and the control actions) when nothing is installed, as the
#: reference agent (and LSB `status`) use.
EXIT_NOT_INSTALLED = 3


def _run_for_real(argv: Sequence[str]) -> int:
    try:
        return subprocess.run(list(argv), check=False).returncode
    except FileNotFoundError:
        print(f"{argv[0]}: command not found", file=sys.stderr)
        return 127
    except KeyboardInterrupt:  # `service logs -f` ends with Ctrl-C
        return 0


def _quiet_runner(argv: Sequence[str]) -> int:
    """For probes whose output the user does not need (`launchctl print`)."""
    try:
        return subprocess.run(
            list(argv), check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ).returncode
    except FileNotFoundError:
        return 127


def launchd_domain() -> str:
    """`gui/<uid>`: the launchd domain of the user's desktop session."""
    getuid = getattr(os, "getuid", None)
    return f"gui/{getuid() if getuid is not None else 0}"


def launchd_target() -> str:
    """`gui/<uid>/<label>`: the service inside that domain."""
    return f"{launchd_domain()}/{LAUNCHD_LABEL}"


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
    program = (
        list(base)
        if base is not None
        else autostart.launch_command(platform=platform, windowed=False)
    )
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
        f"Environment={PROCESS_KIND_ENV}=service\n"
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
        # Standard: no launchd throttling of CPU/IO (Background is throttled like a
        # maintenance task), and not Interactive (no UI here).
        "ProcessType": "Standard",
        "StandardOutPath": str(logs / "agent.out.log"),
        "StandardErrorPath": str(logs / "agent.err.log"),
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1", PROCESS_KIND_ENV: "service"},
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
    """Shell commands, each an argv; `text` joins them for printing. A failing step stops the
    sequence, except the steps listed in `may_fail` (e.g. `launchctl bootout` of a service
    that is not loaded, before loading it again)."""

    steps: list[list[str]]
    may_fail: frozenset[int] = frozenset()

    @property
    def text(self) -> str:
        separator = " ; " if self.may_fail else " && "
        return separator.join(_sh(s) for s in self.steps)


def start_commands(platform: str | None = None) -> Commands:
    """What `service install --start` runs."""
    if _kind(platform) == "darwin":
        # bootout first (fails harmlessly when not loaded) so a reinstall loads the new plist.
        return Commands(
            [
                ["launchctl", "bootout", launchd_target()],
                ["launchctl", "bootstrap", launchd_domain(), str(plist_path())],
            ],
            may_fail=frozenset({0}),
        )
    return Commands(
        [
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", APP_NAME],
        ]
    )


def stop_commands(platform: str | None = None) -> Commands:
    """What :func:`uninstall` runs with stop=True, before it removes the file."""
    if _kind(platform) == "darwin":
        return Commands([["launchctl", "bootout", launchd_target()]])
    return Commands([["systemctl", "--user", "disable", "--now", APP_NAME]])


def status_commands(platform: str | None = None) -> Commands:
    if _kind(platform) == "darwin":
        return Commands([["launchctl", "print", launchd_target()]])
    return Commands([["systemctl", "--user", "status", APP_NAME]])


def log_hint(platform: str | None = None) -> str:
    """How to read the service's logs (what `usepod-desktop service logs -f` runs)."""
    return shlex.join(logs_command(platform, follow=True))


def logs_command(
    platform: str | None = None, *, follow: bool = False, lines: int = 100
) -> list[str]:
    """The argv that shows the service's recent output (and keeps following with `follow`)."""
    if _kind(platform) == "darwin":
        logs = macos_log_dir()
        return [
            "tail",
            "-n",
            str(lines),
            *(["-F"] if follow else []),
            str(logs / "agent.err.log"),
            str(logs / "agent.out.log"),
        ]
    return [
        "journalctl",
        "--user",
        "-u",
        APP_NAME,
        "-n",
        str(lines),
        *(["-f"] if follow else ["--no-pager"]),
    ]


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
    atomic_write_text(path, text, mode=0o644)


def _run_all(commands: Commands, runner: Runner) -> list[tuple[str, int]]:
    ran = []
    for i, step in enumerate(commands.steps):
        code = runner(step)
        ran.append((_sh(step), code))
        if code != 0 and i not in commands.may_fail:
            break
    return ran


def failed(ran: Sequence[tuple[str, int]], commands: Commands | None = None) -> bool:
    """True when a step that had to succeed failed (or did not run at all)."""
    if commands is None:
        return any(code for _, code in ran)
    if len(ran) < len(commands.steps):
        return True
    return any(code for i, (_, code) in enumerate(ran) if i not in commands.may_fail)


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
        notes.append(MACOS_SCOPE)
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
    platform: str | None = None,
    *,
    stop: bool = False,
    runner: Runner | None = None,
    probe: Runner | None = None,
) -> UninstallResult:
    """Stop (only with `stop=True`) and remove the service file. On Linux the unit's
    `default.target.wants` link is removed too, so it is not started at the next login even if
    `systemctl --user disable` was never run."""
    kind = _kind(platform)
    path = service_path(kind)
    ran: list[tuple[str, int]] = []
    if stop and path.exists():
        # launchctl bootout of a service that is not loaded fails: only stop a loaded one
        loaded = (
            kind != "darwin"
            or (probe or _quiet_runner)(["launchctl", "print", launchd_target()]) == 0
        )
        if loaded:
            ran = _run_all(stop_commands(kind), runner or _run_for_real)
    removed = False
    try:
        path.unlink()
        removed = True
    except FileNotFoundError:
        pass
    if kind == "darwin":
        after = Commands([["launchctl", "bootout", launchd_target()]])
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
        current=(
            list(base)
            if base is not None
            else autostart.launch_command(platform=kind, windowed=False)
        ),
        check=status_commands(kind),
        logs=log_hint(kind),
    )


# --------------------------------------------------------------------------------------------
# Before installing: the config the service will read


def checked_config(explicit: str | None, *, allow_insecure: bool = False) -> Path:
    """The agent.toml the service will use, loaded and validated now: a service started on a
    missing or invalid file would fail, be restarted every 5 s and fail again. Returns its
    absolute path; raises :class:`ServiceError` (one line) otherwise."""
    from usepod_desktop.core.config import ConfigError, find_config, load_config

    try:
        path = find_config(explicit)
        load_config(path, allow_insecure=allow_insecure)
    except ConfigError as exc:
        raise ServiceError(
            f"not installing: {exc}; the service would fail and restart in a loop "
            "(check it with `usepod-desktop validate`)"
        ) from None
    return path.resolve()


# --------------------------------------------------------------------------------------------
# start / stop / restart / logs


@dataclass(frozen=True)
class ControlResult:
    action: str
    ran: list[tuple[str, int]]
    ok: bool
    message: str = ""  #: what happened, in words (e.g. "was not running")


def manager_problem(
    platform: str | None = None, *, which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """One line when this system has no usable service manager for :func:`control`, else None."""
    kind = _kind(platform)
    tool = "launchctl" if kind == "darwin" else "systemctl"
    if which(tool) is None:
        if kind == "darwin":
            return "launchctl not found on PATH; cannot control the LaunchAgent"
        return (
            "systemctl not found on PATH: this system has no systemd user manager; run "
            "`usepod-desktop run` under your own supervisor instead"
        )
    return None


def control(
    action: str,
    platform: str | None = None,
    *,
    follow: bool = False,
    runner: Runner | None = None,
    probe: Runner | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> ControlResult:
    """Start, stop, restart the installed service, or show its logs (`follow`: keep showing).

    Raises :class:`ServiceError` (one line) when `action` is unknown or no service manager is
    available, and :class:`NotInstalled` when start / stop / restart find no service file.
    `probe` runs `launchctl print` quietly (macOS: is it loaded?); both default to the real
    commands.
    """
    if action not in CONTROL_ACTIONS:
        raise ServiceError(
            f"unknown service action {action!r}; use one of {', '.join(CONTROL_ACTIONS)}"
        )
    kind = _kind(platform)
    run = runner or _run_for_real
    if action == "logs":
        argv = logs_command(kind, follow=follow)
        if kind == "linux" and which("journalctl") is None:
            raise ServiceError(
                "journalctl not found on PATH; the service's output is in the journal"
            )
        code = run(argv)
        return ControlResult(action, [(_sh(argv), code)], code == 0)
    problem = manager_problem(kind, which=which)
    if problem is not None:
        raise ServiceError(problem)
    if not service_path(kind).exists():
        raise NotInstalled(
            f"the service is not installed ({service_path(kind)}); "
            "install it: usepod-desktop service install"
        )
    if kind == "linux":
        steps = [["systemctl", "--user", action, APP_NAME]]
        if action != "stop":  # pick up a unit file rewritten by a reinstall
            steps.insert(0, ["systemctl", "--user", "daemon-reload"])
        commands = Commands(steps)
        ran = _run_all(commands, run)
        return ControlResult(action, ran, not failed(ran, commands))
    loaded = (probe or _quiet_runner)(["launchctl", "print", launchd_target()]) == 0
    if action == "stop":
        if not loaded:
            return ControlResult(action, [], True, "was not running (not loaded in launchd)")
        commands = Commands([["launchctl", "bootout", launchd_target()]])
        message = "it starts again at your next login, or with `usepod-desktop service start`"
    elif loaded:
        flags = ["-k"] if action == "restart" else []
        commands = Commands([["launchctl", "kickstart", *flags, launchd_target()]])
        message = ""
    else:
        commands = Commands([["launchctl", "bootstrap", launchd_domain(), str(plist_path())]])
        message = ""
    ran = _run_all(commands, run)
    return ControlResult(action, ran, not failed(ran, commands), message)


class NotInstalled(ServiceError):
    """start / stop / restart without a service file (exit code :data:`EXIT_NOT_INSTALLED`)."""
