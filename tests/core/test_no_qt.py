"""The core never imports Qt: checked in a fresh interpreter."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import usepod_desktop.core


def test_core_imports_without_qt() -> None:
    modules = [
        m.name for m in pkgutil.walk_packages(usepod_desktop.core.__path__, "usepod_desktop.core.")
    ]
    assert "usepod_desktop.core.config" in modules
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "qt = ('PySide6', 'qasync', 'shiboken6')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in qt)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
