"""`pause`: pause the running agent (tray app or headless) by hand.

Advertises no models and refuses new jobs; running jobs finish. Without an option the pause
lasts until `usepod-desktop resume` (also across restarts).
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "pause",
        parents=parents,
        help="pause serving on the running agent (until resume, or --for / --until)",
        description="Pause the running agent: no models advertised, new jobs refused, running "
        "jobs finish. Without an option it stays paused until `usepod-desktop resume`. "
        "Exit 3 when no agent is running.",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--for",
        dest="duration",
        metavar="DURATION",
        help="pause for this long, e.g. 15m, 1h, 1h30m (a bare number is minutes)",
    )
    when.add_argument(
        "--until",
        metavar="HH:MM",
        help='pause until this local time (the next one to come), or "tomorrow" (06:00)',
    )
    p.add_argument("--json", action="store_true", help="print the resulting status as JSON")


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from usepod_desktop.commands.common import fail
    from usepod_desktop.commands.control import print_status, send
    from usepod_desktop.core.serving.policy import manual_until, parse_duration

    now = datetime.now(UTC)
    try:
        if args.duration is not None:
            until = manual_until(now, for_s=parse_duration(args.duration))
        elif args.until is not None:
            if args.until.strip().lower() == "tomorrow":
                until = manual_until(now, tomorrow=True)
            else:
                until = manual_until(now, until=args.until.strip())
        else:
            until = None
    except ValueError as exc:
        return fail(f"--for/--until: {exc}")
    code, status = send({"cmd": "pause", "until": until.isoformat() if until else None})
    if status is not None:
        print_status(status, as_json=args.json)
    return code
