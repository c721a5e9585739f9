"""`service install|uninstall|status`: the headless agent as a user service (systemd on Linux,
launchd on macOS), for rigs without a screen."""

from __future__ import annotations

import argparse
import os
import shlex

from usepod_desktop.commands.common import fail, handle_user_errors


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "service",
        parents=parents,
        help="install the headless agent as a user service (systemd / launchd)",
        description="Write (install), remove (uninstall) or inspect (status) a user service that "
        "runs `usepod-desktop run`: a systemd user unit on Linux, a LaunchAgent on macOS. It "
        "prints the file it wrote and the commands that start it and show its logs; it runs "
        "them only with --start (install) or --stop (uninstall). --config and --allow-insecure "
        "given here are passed on to the service.",
    )
    p.add_argument("action", choices=("install", "uninstall", "status"))
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


def _print_content(content: str) -> None:
    for line in content.rstrip("\n").splitlines():
        print(f"  {line}")


def _extra_args(args: argparse.Namespace) -> list[str]:
    extra: list[str] = []
    if getattr(args, "config", None):
        extra += ["--config", os.path.abspath(os.path.expanduser(args.config))]
    if getattr(args, "allow_insecure", False):
        extra.append("--allow-insecure")
    if getattr(args, "log_level", None):
        extra += ["--log-level", args.log_level]
    return extra


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core import service

    if args.action == "install":
        result = service.install(extra_args=_extra_args(args), start=args.start)
        print(f"wrote {result.path}:")
        _print_content(result.content)
        print(f"it runs: {shlex.join(result.command)}")
        for note in result.notes:
            print(f"note: {note}")
        if args.start:
            for command, code in result.ran:
                print(f"ran: {command} (exit {code})")
            if any(code for _, code in result.ran):
                return fail(f"starting the service failed; try by hand: {result.start.text}", 1)
        else:
            print(f"enable and start it: {result.start.text}")
        print(f"read its logs: {result.logs}")
        return 0
    if args.action == "uninstall":
        removed = service.uninstall(stop=args.stop)
        for command, code in removed.ran:
            print(f"ran: {command} (exit {code})")
        if removed.removed:
            print(f"removed {removed.path}")
            if not args.stop:
                print(f"stop it if it is running: {removed.stop.text}")
        else:
            print(f"not installed (no {removed.path})")
        return 0
    st = service.status()
    print(f"service: {'installed' if st.installed else 'not installed'} ({st.path})")
    if st.command is not None:
        print(f"runs: {shlex.join(st.command)}")
        if st.stale:
            print(
                "note: it runs another copy of the program; reinstall to point it here: "
                "usepod-desktop service install"
            )
        print(f"is it running: {st.check.text}")
        print(f"read its logs: {st.logs}")
    else:
        print("install it: usepod-desktop service install")
    return 0
