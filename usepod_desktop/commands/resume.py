"""`resume`: end a manual pause of the running agent (the [serving] rules still apply)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "resume",
        parents=parents,
        help="end a manual pause on the running agent",
        description="End a manual pause. The [serving] rules of agent.toml still apply (a "
        "schedule or the idle rule may keep serving paused; `status` says why). "
        "Exit 3 when no agent is running.",
    )
    p.add_argument("--json", action="store_true", help="print the resulting status as JSON")


def run(args: argparse.Namespace) -> int:
    from usepod_desktop.commands.control import print_status, send

    code, status = send({"cmd": "resume"})
    if status is not None:
        print_status(status, as_json=args.json)
    return code
