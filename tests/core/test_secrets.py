"""BYOK keys: keyring first, environment second, clear errors without a keyring."""

from __future__ import annotations

import logging

import pytest
from keyring.backends import fail

from tests.conftest import MemoryKeyring
from usepod_desktop.core.errors import SecretStoreError
from usepod_desktop.core.secrets import SERVICE, SecretStore

KEY = "sk-or-v1-0123456789abcdef0123456789abcdef"


def test_keyring_first_then_environment(memory_keyring: MemoryKeyring) -> None:
    store = SecretStore(environ={"OPENROUTER_API_KEY": "from-env-value"})
    found = store.get("OPENROUTER_API_KEY")
    assert (found.value, found.source) == ("from-env-value", "env")
    store.set("OPENROUTER_API_KEY", KEY)
    assert memory_keyring.store[(SERVICE, "OPENROUTER_API_KEY")] == KEY
    found = store.get("OPENROUTER_API_KEY")
    assert (found.value, found.source) == (KEY, "keyring")
    assert store.delete("OPENROUTER_API_KEY") is True
    assert store.delete("OPENROUTER_API_KEY") is False
    assert store.get("OPENROUTER_API_KEY").source == "env"


def test_missing_everywhere_says_where_it_looked() -> None:
    found = SecretStore(environ={}).get("VENICE_API_KEY")
    assert found.value is None and found.source is None
    assert "keyring" in found.where_looked and "$VENICE_API_KEY" in found.where_looked


def test_no_keyring_backend_falls_back_to_env_and_explains() -> None:
    store = SecretStore(backend=fail.Keyring(), environ={"K_ENV": "value-from-env"})
    assert store.unavailable_reason() is not None
    found = store.get("K_ENV")
    assert found.value == "value-from-env" and found.keyring_problem
    with pytest.raises(SecretStoreError) as info:
        store.set("K_ENV", KEY)
    message = str(info.value)
    assert "gnome-keyring" in message and "$K_ENV" in message and KEY not in message
    status = store.status("K_ENV")
    assert status.in_env and not status.in_keyring and status.keyring_problem


class ExplodingKeyring(MemoryKeyring):
    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError(f"dbus said no while reading {KEY}")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise RuntimeError(f"locked collection, value was {password}")


def test_broken_keyring_never_crashes_or_leaks(caplog: pytest.LogCaptureFixture) -> None:
    store = SecretStore(backend=ExplodingKeyring(), environ={})
    with caplog.at_level(logging.DEBUG):
        found = store.get("X")
    assert found.value is None and "RuntimeError" in (found.keyring_problem or "")
    with pytest.raises(SecretStoreError) as info:
        store.set("X", KEY)
    assert KEY not in str(info.value) and KEY not in caplog.text


def test_empty_key_refused(memory_keyring: MemoryKeyring) -> None:
    with pytest.raises(SecretStoreError, match="empty"):
        SecretStore().set("X", "   ")
    assert memory_keyring.store == {}


def test_lookup_repr_hides_value() -> None:
    found = SecretStore(environ={"A_KEY": KEY}).get("A_KEY")
    assert KEY not in repr(found)
