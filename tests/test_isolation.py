"""The suite's own isolation (tests/conftest.py): a CLI child never reaches the session's keyring
and never writes under the real home, even when run from a desktop (DISPLAY set, a session bus
whose gnome-keyring would prompt for a new keyring password)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = (
    "import json, os, keyring; print(json.dumps({"
    "'home': os.environ.get('HOME'), 'bus': os.environ.get('DBUS_SESSION_BUS_ADDRESS'),"
    "'display': os.environ.get('DISPLAY'), 'runtime': os.environ.get('XDG_RUNTIME_DIR'),"
    "'keyring': type(keyring.get_keyring()).__module__}))"
)


def test_cli_child_gets_temp_home_and_no_session_keyring(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=os.environ.copy()
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert Path(seen["home"]).is_relative_to(tmp_path)
    assert Path(seen["runtime"]).is_relative_to(tmp_path)
    assert seen["bus"] is None and seen["display"] is None
    assert seen["keyring"] == "tests.file_keyring"


def test_suite_run_from_a_desktop_leaves_the_real_home_alone(tmp_path: Path) -> None:
    """The issue's scenario: `./scripts/test` from a desktop terminal. The bus's gnome-keyring
    would run with the desktop's HOME and prompt on its DISPLAY; nothing may reach it."""
    for tool in ("dbus-run-session", "gnome-keyring-daemon"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run the suite through scripts/test")
    desktop_home = tmp_path / "desktop-home"
    desktop_home.mkdir()
    (desktop_home / "sentinel").write_text("mine")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "USEPOD_", "PYTHON"))}
    env.update(HOME=str(desktop_home), DISPLAY=":97", PYTHONPATH=str(REPO))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    out = subprocess.run(
        [
            "dbus-run-session",
            "--",
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests/commands/test_cli.py",
            "-k",
            "keys_status",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "passed" in out.stdout
    assert "prompt" not in out.stderr, out.stderr[-2000:]
    assert sorted(p.name for p in desktop_home.rglob("*")) == ["sentinel"]
