"""Test isolation: every test gets its own home, config, data, cache, runtime and log dirs, and
an in-memory keyring, so nothing touches the real home directory or the real OS keyring.

Subprocesses inherit the same isolation through the environment: a file keyring in the test's
temp dir (`tests.file_keyring`, importable through PYTHONPATH), no D-Bus session bus (a CLI
child that reached the session bus would D-Bus-activate gnome-keyring, which runs with the
*bus's* HOME and pops a password prompt on a desktop), and no DISPLAY / WAYLAND_DISPLAY (tests
that want a display start Xvfb and set their own). Tests marked `keyring_daemon` keep the bus.

Qt runs offscreen (set before any Qt import).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import keyring.errors
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A non-system keyring for tests: never prompts, never persists."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        try:
            del self.store[(service, username)]
        except KeyError:
            raise keyring.errors.PasswordDeleteError("not found") from None


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    # Subprocesses (the CLI run as a user would) get a file keyring in this test's dir, never
    # the OS keyring; tests that need another keyring set their own.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.file_keyring.FileKeyring")
    monkeypatch.setenv("USEPOD_TEST_KEYRING_FILE", str(tmp_path / "test-keyring.json"))
    path = os.environ.get("PYTHONPATH", "")
    if str(REPO_ROOT) not in path.split(os.pathsep):
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO_ROOT), path) if p))
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    if not request.node.get_closest_marker("keyring_daemon"):
        monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("USEPOD_CONFIG_DIR", str(home / ".config" / "usepod-agent"))
    monkeypatch.setenv("USEPOD_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("USEPOD_LOG_DIR", str(home / "log"))
    monkeypatch.setenv("USEPOD_RUNTIME_DIR", str(home / "run"))  # local control socket
    for name in ("OPENROUTER_API_KEY", "VENICE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    # the update check and the doctor's market price list never leave the machine in tests
    monkeypatch.setenv("USEPOD_UPDATE_FEED_URL", "http://127.0.0.1:9/no-release-feed-in-tests")
    monkeypatch.setenv("USEPOD_MARKET_PRICES_URL", "http://127.0.0.1:9/no-price-list-in-tests")
    return home


@pytest.fixture(autouse=True)
def memory_keyring(request: pytest.FixtureRequest) -> Iterator[MemoryKeyring | None]:
    """Every test runs against an in-memory keyring unless marked `keyring_daemon`."""
    if request.node.get_closest_marker("keyring_daemon"):
        yield None
        return
    previous = keyring.get_keyring()
    ring = MemoryKeyring()
    keyring.set_keyring(ring)
    try:
        yield ring
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def reference_toml() -> str:
    """The reference agent's example agent.toml, as shipped (a copy lives in tests/fixtures)."""
    shared = REFERENCE_DIR / "agent.example.toml"
    if shared.is_file():
        return shared.read_text(encoding="utf-8")
    return (FIXTURES / "agent.example.toml").read_text(encoding="utf-8")


MakeFake = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_fake() -> AsyncIterator[MakeFake]:
    """Start FakeBackend(kind, models, **knobs) servers on 127.0.0.1; all stopped afterwards."""
    from usepod_desktop.sandbox.fakes import FakeBackend, FakeModel

    started: list[FakeBackend] = []

    async def _make(kind: str, models: Sequence[str | FakeModel] = ("m1",), **kw: Any) -> Any:
        fake = FakeBackend(kind, models, **kw)
        await fake.start()
        started.append(fake)
        return fake

    yield _make
    for fake in started:
        await fake.stop()
