"""PyInstaller entry script: the `usepod-desktop` command, frozen."""

from __future__ import annotations

import multiprocessing
import os
import sys


def _main() -> int:
    multiprocessing.freeze_support()
    # A windowed Windows executable starts without stdout/stderr; printing would raise.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")
    from usepod_desktop.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
