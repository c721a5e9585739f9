"""`validate`: parse and check agent.toml, no network."""

from __future__ import annotations

import argparse

from usepod_desktop.commands.common import handle_user_errors, init_logging, load_config


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "validate",
        parents=parents,
        help="check agent.toml and exit (no network)",
        description="Parse and validate agent.toml. Prints 'ok: parsed N backend(s)' "
        "or one error line naming the field.",
    )


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    init_logging(args)
    config = load_config(args)
    print(f"ok: parsed {len(config.backends)} backend(s)")
    return 0
