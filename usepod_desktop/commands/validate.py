"""`validate`: parse and check agent.toml, no network.

Exit codes as the reference's: 0 and `ok: parsed N backend(s)` for a valid file; 1 for an
invalid (or missing, unreadable) one, with one `error: ...` line on stderr per problem, each
naming its field (every problem of the file at once, see `core.config.problems`).
"""

from __future__ import annotations

import argparse

from usepod_desktop.commands.common import fail, init_logging
from usepod_desktop.core.errors import UserFacingError


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    sub.add_parser(
        "validate",
        parents=parents,
        help="check agent.toml and exit (no network)",
        description="Parse and validate agent.toml. Prints 'ok: parsed N backend(s)' "
        "(exit 0), or one error line per problem, each naming its field (exit 1).",
    )


def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core.config import (
        config_from_dict,
        find_config,
        parse_toml,
        problems,
        read_config_text,
    )

    init_logging(args)
    insecure = bool(args.allow_insecure)
    try:
        raw = parse_toml(read_config_text(find_config(getattr(args, "config", None))))
        found = problems(raw, allow_insecure=insecure)
        for problem in found:
            fail(problem.message, 1)
        if found:
            return 1
        config = config_from_dict(raw, allow_insecure=insecure)
    except UserFacingError as exc:
        return fail(str(exc), 1)
    print(f"ok: parsed {len(config.backends)} backend(s)")
    return 0
