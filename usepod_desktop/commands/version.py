"""`version`: print the program version."""

from __future__ import annotations

import argparse

from usepod_desktop import __version__


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "version",
        parents=parents,
        help="print the version",
        description="Print the program's version (`usepod-desktop X.Y.Z`), the same as "
        "`usepod-desktop --version`.",
    )


def run(args: argparse.Namespace) -> int:
    print(f"usepod-desktop {__version__}")
    return 0
