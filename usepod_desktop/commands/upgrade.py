"""`upgrade`: compare this version with the newest release and say what to run or download.

It never installs anything: the operator runs the printed command (or downloads the build).
`--check` only reports the two versions. Offline or a bad feed: one line on stderr, exit 1.
"""

from __future__ import annotations

import argparse
import json

from usepod_desktop.commands.common import fail


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "upgrade",
        parents=parents,
        help="check for a newer release and print how to upgrade (installs nothing)",
        description="Check the release feed for a newer usepod-desktop and print the current "
        "and newest versions and the command to run (or the page to download from). Nothing "
        "is installed. Exit status: 0 when the check worked, 1 when the feed cannot be reached "
        "or answers something unusable.",
    )
    p.add_argument(
        "--check", action="store_true", help="only report the current and newest versions"
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core.updates import UpdateCheckError, check_for_update

    try:
        info = check_for_update()
    except UpdateCheckError as exc:
        return fail(str(exc), code=1)
    if args.json:
        print(json.dumps(info.to_dict()))
        return 0
    print(f"current: usepod-desktop {info.current}")
    print(f"newest:  usepod-desktop {info.newest}")
    if not info.available:
        print("You are up to date.")
    elif args.check:
        print("An update is available.")
    else:
        print(f"An update is available; to upgrade, {info.how_to_upgrade()}")
    return 0
