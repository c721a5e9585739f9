"""Against a real Secret Service: gnome-keyring-daemon on a private D-Bus session bus.

The test runs a child process under its own `dbus-run-session`, starts an unlocked
gnome-keyring-daemon there (its data in a temporary dir), and drives our SecretStore through
keyring's real SecretService backend. A private bus per test keeps parallel runs apart.
`scripts/test` installs dbus and gnome-keyring.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.keyring_daemon

KEY = "sk-or-v1-realdaemon-0123456789abcdef"

CHILD = r"""
import json, os, subprocess, sys, time
proc = subprocess.run(
    ["gnome-keyring-daemon", "--unlock", "--components=secrets", "--daemonize"],
    input=b"test-password\n", capture_output=True, timeout=20)
assert proc.returncode == 0, proc.stderr
from keyring.backends import SecretService
from usepod_desktop.core.secrets import SERVICE, SecretStore
backend = SecretService.Keyring()
deadline = time.monotonic() + 15
while True:
    try:
        backend.get_password("probe", "probe")
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
store = SecretStore(backend=backend, environ={})
out = {"unavailable": store.unavailable_reason()}
store.set("OPENROUTER_API_KEY", sys.argv[1])
out["fresh_backend_reads"] = SecretService.Keyring().get_password(SERVICE, "OPENROUTER_API_KEY")
found = store.get("OPENROUTER_API_KEY")
out["lookup"] = [found.value, found.source]
out["status_in_keyring"] = store.status("OPENROUTER_API_KEY").in_keyring
out["deleted"] = store.delete("OPENROUTER_API_KEY")
out["after_delete"] = store.get("OPENROUTER_API_KEY").value
print(json.dumps(out))
"""


def test_real_secret_service_set_get_delete(tmp_path: Path) -> None:
    for tool in ("dbus-run-session", "gnome-keyring-daemon"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run the suite through scripts/test")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    (tmp_path / "run").mkdir(mode=0o700)
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    out = subprocess.run(
        ["dbus-run-session", "--", sys.executable, str(script), KEY],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "unavailable": None,
        "fresh_backend_reads": KEY,  # it really is in the daemon
        "lookup": [KEY, "keyring"],
        "status_in_keyring": True,
        "deleted": True,
        "after_delete": None,
    }
