"""The `usepod-desktop` command: the tray app by default, the headless agent and tools as
subcommands.

Each subcommand lives in `usepod_desktop/commands/<name>.py` with `add_parser(subparsers,
parents)` and `run(args) -> int`; heavy imports stay inside `run` so `--help` and `validate` start
fast. Global flags (`-c`/`--config`, `--log-level`, `--allow-insecure`) work before or after the
subcommand, like the reference agent's. Bad values (an unknown log level, a negative duration)
are argparse errors (exit 2), never silently replaced by a default.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from usepod_desktop import __version__

#: Subcommand modules, in the order `--help` lists them.
COMMANDS: tuple[str, ...] = (
    "run",
    "pause",
    "resume",
    "status",
    "sandbox",
    "setup",
    "discover",
    "validate",
    "enroll",
    "keys",
    "earnings",
    "autostart",
    "service",
    "doctor",
    "upgrade",
    "forget",
    "version",
)


#: `--log-level` values (any case); the reference's `warn` is `warning`.
LOG_LEVELS: tuple[str, ...] = ("error", "warning", "warn", "info", "debug")


def log_level(text: str) -> str:
    """argparse type of `--log-level`: one of LOG_LEVELS, any case."""
    value = text.strip().lower()
    if value not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid log level {text!r} (choose from {', '.join(LOG_LEVELS)})"
        )
    return "warning" if value == "warn" else value


def seconds(*, minimum: float, inclusive: bool) -> Callable[[str], float]:
    """argparse type: a finite number of seconds, >= `minimum` (or > when not inclusive)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number of seconds, got {text!r}"
            ) from None
        ok = value >= minimum if inclusive else value > minimum
        if not math.isfinite(value) or not ok:
            bound = f"at least {minimum:g}" if inclusive else f"more than {minimum:g}"
            raise argparse.ArgumentTypeError(f"must be {bound} seconds, got {text!r}")
        return value

    parse.__name__ = "seconds"
    return parse


def _global_flags(*, suppress: bool) -> argparse.ArgumentParser:
    """The flags accepted at both levels; the subcommand copy must not reset the top one."""
    default = argparse.SUPPRESS if suppress else None
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("global options")
    group.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=default,
        help="agent.toml to use (default: the reference agent's config dir, then ./agent.toml)",
    )
    group.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=log_level,
        default=default,
        help="error, warning (or warn), info (default) or debug",
    )
    group.add_argument(
        "--allow-insecure",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="allow a ws:// (unencrypted) coordinator URL, e.g. the local sandbox",
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usepod-desktop",
        description="Use Pod provider agent: serve AI inference from your own backends and earn "
        "USDC. Without a subcommand it starts the tray app.",
        parents=[_global_flags(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"usepod-desktop {__version__}")
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="try the app without an account: embed a local sandbox coordinator and send demo jobs",
    )
    parser.add_argument(
        "--demo-remote",
        action="append",
        metavar="NAME",
        default=[],
        help="with --sandbox: also send demo jobs to this BYOK backend (its kind, e.g. "
        "openrouter, or its api_key_env; repeatable); without it demo jobs never go to a "
        "backend your own API key pays for",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parents = [_global_flags(suppress=True)]
    for name in COMMANDS:
        _command_module(name).add_parser(sub, parents)
    return parser


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(f"usepod_desktop.commands.{name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        from usepod_desktop.commands import gui

        return gui.run(args)
    module = _command_module(args.command)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _stdout_closed()


def _stdout_closed() -> int:
    """The reader of our stdout went away (`... | head`): stop quietly, as a killed-by-SIGPIPE
    program would (exit 141), without a traceback at exit when Python flushes stdout."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


def gui_main(argv: Sequence[str] | None = None) -> int:
    """`usepod-desktop-gui` (`[project.gui-scripts]`): the tray app with the usual global flags,
    started without a console on Windows. A subcommand is refused: `usepod-desktop-gui run`
    would be a headless agent with no window nobody could see or stop."""
    args = build_parser().parse_args(argv)
    if args.command is not None:
        print(
            f"usepod-desktop-gui starts the tray app only; use `usepod-desktop {args.command}`",
            file=sys.stderr,
        )
        return 2
    from usepod_desktop.commands import gui

    return gui.run(args)


if __name__ == "__main__":
    sys.exit(main())
