"""`status`: what the running agent is doing now, and why it is paused if it is."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        parents=parents,
        help="show the running agent's state, pause reasons, models and jobs",
        description="Ask the running agent (tray app or headless) over its local control "
        "channel. --json prints state, paused_by (manual, schedule, idle, process, battery, "
        "temperature), models, jobs_running, resumes_at and the sensor readings. "
        "Exit 3 when no agent is running.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from usepod_desktop.commands.control import print_status, send

    code, status = send({"cmd": "status"})
    if status is not None:
        print_status(status, as_json=args.json)
    return code
