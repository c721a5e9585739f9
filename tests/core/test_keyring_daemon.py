"""Against a real Secret Service: gnome-keyring-daemon on a private D-Bus session.

`scripts/test` runs the suite under `dbus-run-session`; this test starts an unlocked
gnome-keyring-daemon on that bus (with its own temporary data dir) and drives the real
SecretService keyring backend through our SecretStore.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from usepod_desktop.core.secrets import SERVICE, SecretStore

pytestmark = pytest.mark.keyring_daemon

KEY = "sk-or-v1-realdaemon-0123456789abcdef"


@pytest.fixture
def secret_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        pytest.skip("no D-Bus session bus: run the suite through scripts/test (dbus-run-session)")
    daemon = shutil.which("gnome-keyring-daemon")
    if daemon is None:
        pytest.fail("gnome-keyring-daemon is not installed (scripts/test installs it)")
    data = tmp_path / "keyring-data"
    data.mkdir()
    env = {**os.environ, "XDG_DATA_HOME": str(data), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [daemon, "--unlock", "--components=secrets", "--replace", "--daemonize"],
        input=b"test-password\n",
        env=env,
        capture_output=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    from keyring.backends import SecretService

    backend = SecretService.Keyring()
    deadline = time.monotonic() + 10
    while True:
        try:
            backend.get_password("probe", "probe")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield backend
    subprocess.run(["pkill", "-f", "gnome-keyring-daemon --unlock"], check=False)


def test_real_secret_service_set_get_delete(secret_service: object) -> None:
    store = SecretStore(backend=secret_service, environ={})  # type: ignore[arg-type]
    assert store.unavailable_reason() is None
    store.set("OPENROUTER_API_KEY", KEY)
    # read back through a fresh backend object: it really is in the daemon
    from keyring.backends import SecretService

    assert SecretService.Keyring().get_password(SERVICE, "OPENROUTER_API_KEY") == KEY
    found = store.get("OPENROUTER_API_KEY")
    assert (found.value, found.source) == (KEY, "keyring")
    assert store.status("OPENROUTER_API_KEY").in_keyring
    assert store.delete("OPENROUTER_API_KEY") is True
    assert store.get("OPENROUTER_API_KEY").value is None
