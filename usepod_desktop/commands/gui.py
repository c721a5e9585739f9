"""No subcommand: the tray app."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from usepod_desktop.gui.app import main as gui_main

    return gui_main(args)
