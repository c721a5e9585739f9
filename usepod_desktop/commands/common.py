"""Helpers shared by subcommands: logging set-up, config loading with one-line errors."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from usepod_desktop.core.errors import UserFacingError


def fail(message: str, code: int = 2) -> int:
    """Print one line to stderr (control characters escaped) and return the exit code."""
    from usepod_desktop.core.text import escape_controls

    print(f"error: {escape_controls(message)}", file=sys.stderr)
    return code


def init_logging(
    args: argparse.Namespace, *, default: str = "warning", log_file: bool = False
) -> None:
    from usepod_desktop.core.logsetup import setup_logging

    setup_logging(getattr(args, "log_level", None) or default, log_file=log_file)


def load_config(args: argparse.Namespace) -> Any:
    """Load agent.toml honouring --config / --allow-insecure; raises ConfigError (one line)."""
    from usepod_desktop.core.config import load_config as _load

    return _load(getattr(args, "config", None), allow_insecure=bool(args.allow_insecure))


def handle_user_errors(func):  # type: ignore[no-untyped-def]
    """Decorator: a UserFacingError becomes one line on stderr and exit code 2."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(func(args) or 0)
        except UserFacingError as exc:
            return fail(str(exc))

    wrapper.__doc__ = func.__doc__
    return wrapper
