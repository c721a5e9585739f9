"""`usepod-desktop forget [--identity]`, run as a user would (a subprocess with the test's
temporary HOME and a file-backed keyring): what it removes, what it keeps, and that the
identity goes only after a yes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keyring
import keyring.errors
import pytest

from tests.conftest import MemoryKeyring
from usepod_desktop.core import identity, service
from usepod_desktop.core.pairing import HOST_TOKEN_KEY

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "agent.example.toml"


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


def cli(keyring_file: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = os.environ.copy()  # the isolated home of tests/conftest.py
    env["PYTHON_KEYRING_BACKEND"] = "tests.file_keyring.FileKeyring"
    env["USEPOD_TEST_KEYRING_FILE"] = str(keyring_file)
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = "/nonexistent"  # systemctl / launchctl are never really run
    return subprocess.run(
        [sys.executable, "-m", "usepod_desktop", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )


@pytest.fixture
def user(isolated_home: Path, keyring_file: Path) -> dict[str, Path]:
    """A user with agent.toml (a BYOK backend under a custom key name and a custom identity
    path), an identity, start at login on, the service installed, keyring items of this app
    and items that are not this app's."""
    config_dir = isolated_home / ".config" / "usepod-agent"
    config_dir.mkdir(parents=True)
    config = config_dir / "agent.toml"
    text = FIXTURE.read_text(encoding="utf-8")
    text = text.replace('"~/.usepod-agent/identity.key"', '"~/keys/rig.key"')
    text = text.replace('api_key_env = "OPENROUTER_API_KEY"', 'api_key_env = "MY_ROUTER_KEY"')
    config.write_text(text, encoding="utf-8")
    key = isolated_home / "keys" / "rig.key"
    identity.create(key)
    keyring_file.write_text(
        json.dumps(
            {
                f"usepod-agent/{HOST_TOKEN_KEY}": "pht_secret-host-token",
                "usepod-agent/MY_ROUTER_KEY": "sk-or-mine",
                "usepod-agent/VENICE_API_KEY": "vk-conventional",
                "usepod-agent/SOMETHING_ELSE": "not-named-anywhere",
                "other-app/MY_ROUTER_KEY": "someone-else's",
            }
        )
    )
    assert cli(keyring_file, "autostart", "on").returncode == 0
    assert cli(keyring_file, "service", "install").returncode == 0
    autostart_entry = isolated_home / ".config" / "autostart" / "usepod-desktop.desktop"
    assert autostart_entry.is_file() and service.unit_path().is_file()
    return {"config": config, "key": key, "autostart": autostart_entry}


def test_forget_removes_start_at_login_service_and_this_apps_keyring_items(
    user: dict[str, Path], keyring_file: Path
) -> None:
    config_before = user["config"].read_bytes()
    key_before = user["key"].read_bytes()

    out = cli(keyring_file, "forget")

    assert out.returncode == 0, out.stdout + out.stderr
    assert not user["autostart"].exists()
    assert not service.unit_path().exists()
    assert json.loads(keyring_file.read_text()) == {
        "usepod-agent/SOMETHING_ELSE": "not-named-anywhere",
        "other-app/MY_ROUTER_KEY": "someone-else's",
    }
    # The user's records and the identity stay, byte for byte.
    assert user["config"].read_bytes() == config_before
    assert user["key"].read_bytes() == key_before
    lines = out.stdout.splitlines()
    assert f"start at login: removed XDG autostart entry {user['autostart']}" in lines
    assert f"service: removed {service.unit_path()}" in lines
    assert (
        f"keyring: removed {HOST_TOKEN_KEY}, MY_ROUTER_KEY, VENICE_API_KEY (service 'usepod-agent')"
    ) in lines
    assert f"identity: kept {user['key']} (add --identity to delete it)" in lines
    # No secret is printed.
    for secret in ("pht_secret-host-token", "sk-or-mine", "vk-conventional"):
        assert secret not in out.stdout + out.stderr

    again = cli(keyring_file, "forget")
    assert again.returncode == 0
    assert "start at login: was off" in again.stdout
    assert "service: not installed" in again.stdout


@pytest.mark.parametrize("answer", ["n\n", "", "whatever\n"])
def test_forget_identity_keeps_the_key_unless_the_answer_is_yes(
    user: dict[str, Path], keyring_file: Path, answer: str
) -> None:
    ident = identity.load(user["key"])

    out = cli(keyring_file, "forget", "--identity", stdin=answer)

    assert out.returncode == 2, out.stdout + out.stderr
    assert user["key"].is_file()
    assert f"public key {ident.public_key_b64}" in out.stdout
    assert "enroll (pair) this machine again" in out.stdout  # said before asking
    assert out.stdout.index("enroll (pair)") < out.stdout.index("Delete the identity key? [y/N]")
    assert "identity: kept" in out.stdout
    assert not user["autostart"].exists()  # the rest was still done


@pytest.mark.parametrize(("args", "answer"), [((), "y\n"), ((), "YES\n"), (("--yes",), "")])
def test_forget_identity_deletes_the_key_after_a_yes(
    user: dict[str, Path], keyring_file: Path, args: tuple[str, ...], answer: str
) -> None:
    out = cli(keyring_file, "forget", "--identity", *args, stdin=answer)

    assert out.returncode == 0, out.stdout + out.stderr
    assert not user["key"].exists()
    assert f"identity: deleted {user['key']}" in out.stdout
    assert "enroll (pair) this machine again" in out.stdout
    assert ("[y/N]" in out.stdout) is (not args)
    assert user["config"].is_file()


def test_forget_with_a_broken_config_still_finds_its_keys_and_identity(
    user: dict[str, Path], keyring_file: Path
) -> None:
    # Valid TOML that no longer validates (a bad price): the key names and the identity
    # path are still read from it.
    text = user["config"].read_text(encoding="utf-8")
    user["config"].write_text(
        text.replace("default_input_per_1m  = 500_000", "default_input_per_1m  = -1"),
        encoding="utf-8",
    )

    out = cli(keyring_file, "forget", "--identity", "--yes")

    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("config: ")
    assert "usepod-agent/MY_ROUTER_KEY" not in json.loads(keyring_file.read_text())
    assert not user["key"].exists()


def test_forget_is_listed_in_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "usepod_desktop", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert "forget" in out.stdout


class LockedKeyring(MemoryKeyring):
    """A keyring that refuses every operation, as a locked Secret Service does."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def delete_password(self, service: str, username: str) -> None:
        self.calls += 1
        raise keyring.errors.InitError("the collection is locked")


def test_a_locked_keyring_is_reported_once_and_fails_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from usepod_desktop.commands import forget

    locked = LockedKeyring()
    keyring.set_keyring(locked)  # the autouse memory_keyring fixture restores the previous one

    assert forget._forget_keyring(["MY_ROUTER_KEY"]) is False

    out = capsys.readouterr().out.splitlines()
    assert locked.calls == 1  # one refusal (one prompt), not one per item
    assert out == [
        f"keyring: the keyring refused to delete {HOST_TOKEN_KEY}: InitError; not removed: "
        f"{HOST_TOKEN_KEY}, MY_ROUTER_KEY, OPENROUTER_API_KEY, VENICE_API_KEY (is it unlocked?)"
    ]


def test_keep_keyring_leaves_every_item(user: dict[str, Path], keyring_file: Path) -> None:
    before = keyring_file.read_text()

    out = cli(keyring_file, "forget", "--identity", "--yes", "--keep-keyring")

    assert out.returncode == 0, out.stdout + out.stderr
    assert keyring_file.read_text() == before
    assert "keyring: kept (--keep-keyring)" in out.stdout.splitlines()
    assert not user["key"].exists()  # what the Windows uninstaller runs after a yes
    assert not user["autostart"].exists()
