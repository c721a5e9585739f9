"""`validate`: parse and check agent.toml, no network.

Exit codes as the reference's: 0 and `ok: parsed N backend(s)` for a valid file; 1 and one
`error: ...` line on stderr naming the field for an invalid (or missing, unreadable) one.
"""

from __future__ import annotations

import argparse

from usepod_desktop.commands.common import fail, init_logging, load_config
from usepod_desktop.core.errors import UserFacingError


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "validate",
        parents=parents,
        help="check agent.toml and exit (no network)",
        description="Parse and validate agent.toml. Prints 'ok: parsed N backend(s)' "
        "(exit 0) or one error line naming the field (exit 1).",
    )


def run(args: argparse.Namespace) -> int:
    init_logging(args)
    try:
        config = load_config(args)
    except UserFacingError as exc:
        return fail(str(exc), 1)
    print(f"ok: parsed {len(config.backends)} backend(s)")
    return 0
