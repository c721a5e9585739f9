"""`service install|uninstall|status|start|stop|restart|logs`: the headless agent as a user
service (a systemd user unit on Linux, a LaunchAgent on macOS).

Exit codes: 0 done; 1 a systemctl / launchctl command failed; 2 a one-line error (invalid
agent.toml, no service manager on this system); 3 not installed (`status`, and `start`, `stop`,
`restart` with nothing to act on), as the reference agent's `service status`.
"""

from __future__ import annotations

import argparse
import os
import shlex

from usepod_desktop.commands.common import fail, handle_user_errors

ACTIONS = ("install", "uninstall", "status", "start", "stop", "restart", "logs")


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "service",
        parents=parents,
        help="the headless agent as a user service (systemd / launchd)",
        description="Write (install), remove (uninstall) or inspect (status) a user service that "
        "runs `usepod-desktop run`: a systemd user unit on Linux, a LaunchAgent on macOS; start, "
        "stop, restart it, or show its logs (logs -f keeps following). install refuses a missing "
        "or invalid agent.toml. It prints the file it wrote and the commands that start it; it "
        "runs them only with --start (install) or --stop (uninstall). --config and "
        "--allow-insecure given here are passed on to the service. On macOS a LaunchAgent runs "
        "only while you are logged in to the desktop. Exit codes: 0 done, 1 a systemctl / "
        "launchctl command failed, 2 an error, 3 not installed.",
    )
    # no `choices`: an unknown action gets one clear line from run(), not argparse's usage dump
    p.add_argument("action", metavar="ACTION", help=" | ".join(ACTIONS))
    p.add_argument(
        "--start",
        action="store_true",
        help="install: also enable and start it now (runs systemctl / launchctl)",
    )
    p.add_argument(
        "--stop",
        action="store_true",
        help="uninstall: also stop and disable it now (runs systemctl / launchctl)",
    )
    p.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="logs: keep showing new lines until Ctrl-C",
    )


def _print_content(content: str) -> None:
    for line in content.rstrip("\n").splitlines():
        print(f"  {line}")


def _extra_args(args: argparse.Namespace, config_path: str | None) -> list[str]:
    extra: list[str] = []
    if config_path:
        extra += ["--config", config_path]
    if getattr(args, "allow_insecure", False):
        extra.append("--allow-insecure")
    if getattr(args, "log_level", None):
        extra += ["--log-level", args.log_level]
    return extra


def _config_arg(args: argparse.Namespace) -> str | None:
    """The --config the service gets: the one given, or the file found now when it is not the
    default location (./agent.toml would not be found from the service's working directory)."""
    from usepod_desktop.core import paths, service

    explicit = getattr(args, "config", None)
    if explicit:
        explicit = os.path.abspath(os.path.expanduser(explicit))
    found = service.checked_config(explicit, allow_insecure=bool(args.allow_insecure))
    if explicit or found == paths.default_config_path().resolve():
        return explicit
    return str(found)


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core import service

    action = args.action
    if action not in ACTIONS:
        return fail(f"unknown service action {action!r}; use one of: {', '.join(ACTIONS)}")
    if action == "install":
        return _install(args)
    if action == "uninstall":
        return _uninstall(args)
    if action == "status":
        return _status()
    try:
        result = service.control(action, follow=args.follow)
    except service.NotInstalled as exc:
        return fail(str(exc), service.EXIT_NOT_INSTALLED)
    for command, code in result.ran:
        if action != "logs":
            print(f"ran: {command} (exit {code})")
    if not result.ok:
        command, code = result.ran[-1]
        return fail(f"`{command}` failed (exit {code})", 1)
    if result.message:
        print(result.message)
    return 0


def _install(args: argparse.Namespace) -> int:
    from usepod_desktop.core import service

    config_path = _config_arg(args)
    result = service.install(extra_args=_extra_args(args, config_path), start=args.start)
    print(f"wrote {result.path}:")
    _print_content(result.content)
    print(f"it runs: {shlex.join(result.command)}")
    for note in result.notes:
        print(f"note: {note}")
    if args.start:
        for command, code in result.ran:
            print(f"ran: {command} (exit {code})")
        if service.failed(result.ran, result.start):
            return fail(f"starting the service failed; try by hand: {result.start.text}", 1)
    else:
        print(f"enable and start it: {result.start.text}")
    print(f"read its logs: {result.logs}")
    return 0


def _uninstall(args: argparse.Namespace) -> int:
    from usepod_desktop.core import service

    removed = service.uninstall(stop=args.stop)
    for command, code in removed.ran:
        print(f"ran: {command} (exit {code})")
    if removed.removed:
        print(f"removed {removed.path}")
        if not args.stop:
            print(f"stop it if it is running: {removed.stop.text}")
    else:
        print(f"not installed (no {removed.path})")
    if service.failed(removed.ran):
        command, code = next((c, k) for c, k in removed.ran if k)
        return fail(
            f"`{command}` failed (exit {code}); it may still be running: {removed.stop.text}", 1
        )
    return 0


def _status() -> int:
    from usepod_desktop.core import service

    st = service.status()
    print(f"service: {'installed' if st.installed else 'not installed'} ({st.path})")
    if st.command is None:
        print("install it: usepod-desktop service install")
        return service.EXIT_NOT_INSTALLED
    print(f"runs: {shlex.join(st.command)}")
    if st.stale:
        print(
            "note: it runs another copy of the program; reinstall to point it here: "
            "usepod-desktop service install"
        )
    print(f"is it running: {st.check.text}")
    print(f"read its logs: {st.logs}")
    return 0
