"""`autostart on|off|status`: start the tray app at login (off until you turn it on)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from usepod_desktop.commands.common import handle_user_errors


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "autostart",
        parents=parents,
        help="start the tray app at login: on, off or status",
        description="Turn starting the tray app at login on or off, or show whether it is on. "
        "It is off until you turn it on. Linux: an XDG autostart entry; macOS: a LaunchAgent; "
        "Windows: the HKCU Run registry value. With --config FILE the app starts with that "
        "agent.toml. For a rig without a screen use `service`.",
    )
    p.add_argument("action", choices=("on", "off", "status"))


def _print_content(content: str) -> None:
    for line in content.rstrip("\n").splitlines():
        print(f"  {line}")


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core import autostart

    if args.action == "on":
        command = None
        if args.config:  # start the app at login with this agent.toml, not the default one
            config = str(Path(args.config).expanduser().absolute())
            command = [*autostart.launch_command(), "--config", config]
        entry = autostart.enable(command=command)
        print("start at login: on")
        if entry.path is not None:
            print(f"wrote {entry.path}:")
            _print_content(entry.content)
        else:
            print(f"set {entry.location} to:")
            _print_content(entry.content)
        print(f"at login it runs: {shlex.join(entry.command)}")
        return 0
    if args.action == "off":
        where = autostart.describe()
        if autostart.disable():
            print("start at login: off")
            print(f"removed {where}")
        else:
            print("start at login: off (it was not on)")
            print(f"no {where}")
        return 0
    on = autostart.enabled()
    command = autostart.current_command()
    print(f"start at login: {'on' if on else 'off'}")
    print(f"entry: {autostart.describe()}{'' if command is not None else ' (absent)'}")
    if command is not None:
        print(f"runs: {shlex.join(command)}")
        if not on:
            print("note: the entry exists but is switched off in your desktop's startup settings")
        elif autostart.is_stale():
            print(
                "note: it points at another copy of the program; launching the app repoints it, "
                "or run `usepod-desktop autostart on`"
            )
    return 0
