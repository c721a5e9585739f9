"""No subcommand: the tray app."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    try:
        from usepod_desktop.gui.app import main as gui_main
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("usepod_desktop.gui"):
            print(
                "The tray app is not built yet; use `usepod-desktop run` (headless).",
                file=sys.stderr,
            )
            return 2
        raise
    return gui_main(args)
