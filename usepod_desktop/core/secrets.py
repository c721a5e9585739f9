"""BYOK API keys: the OS keyring first, the environment variable second.

Keys are stored under service `usepod-agent` with the backend's `api_key_env` value as the user
name, so `OPENROUTER_API_KEY` in the keyring and in the environment mean the same key. Calls block
(D-Bus, Keychain): from async code run them with `asyncio.to_thread`.

A key's value never appears in a log line or an exception message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import keyring
import keyring.backend
import keyring.errors

from usepod_desktop.core.errors import SecretStoreError

log = logging.getLogger(__name__)

SERVICE = "usepod-agent"
NO_KEYRING_HINT = (
    "no OS keyring is available (on Linux install and unlock gnome-keyring or KWallet "
    "in your desktop session, or choose one with PYTHON_KEYRING_BACKEND)"
)

Source = Literal["keyring", "env"]


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """Where a key was found. `value` is the secret itself: never log this object's value."""

    name: str
    value: str | None
    source: Source | None
    keyring_problem: str | None = None

    def __repr__(self) -> str:
        shown = "<set>" if self.value else None
        return f"KeyLookup(name={self.name!r}, value={shown}, source={self.source!r})"

    @property
    def where_looked(self) -> str:
        """For the 'no key' warning: where we looked, in order."""
        ring = "the OS keyring" if not self.keyring_problem else "the OS keyring (unavailable)"
        return f"{ring} (service {SERVICE!r}, user {self.name!r}) and ${self.name}"


@dataclass(frozen=True, slots=True)
class KeyStatus:
    name: str
    in_keyring: bool
    in_env: bool
    keyring_problem: str | None


class SecretStore:
    """The keyring wrapper owned by the core. `backend` and `environ` are seams for tests."""

    def __init__(
        self,
        backend: keyring.backend.KeyringBackend | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._backend = backend
        self._environ = environ if environ is not None else os.environ

    @property
    def backend(self) -> keyring.backend.KeyringBackend:
        return self._backend if self._backend is not None else keyring.get_keyring()

    def unavailable_reason(self) -> str | None:
        """None when a usable keyring exists, else one line saying what to install."""
        try:
            backend = self.backend
        except Exception as exc:  # a broken keyring config must not crash us
            return f"{NO_KEYRING_HINT}: {type(exc).__name__}"
        if _is_fail_backend(backend):
            return NO_KEYRING_HINT
        return None

    def get(self, name: str) -> KeyLookup:
        """Keyring first, then `$name`. Never raises for a missing or broken keyring."""
        problem = self.unavailable_reason()
        if problem is None:
            try:
                value = self.backend.get_password(SERVICE, name)
            except Exception as exc:
                problem = f"keyring error: {type(exc).__name__}"
                log.warning("could not read %s from the keyring (%s)", name, problem)
            else:
                if value:
                    return KeyLookup(name, value, "keyring")
        env_value = self._environ.get(name)
        if env_value:
            return KeyLookup(name, env_value, "env", problem)
        return KeyLookup(name, None, None, problem)

    def set(self, name: str, value: str) -> None:
        if not name:
            raise SecretStoreError("key name (api_key_env) must not be empty")
        if not value or not value.strip():
            raise SecretStoreError(f"refusing to store an empty key for {name}")
        problem = self.unavailable_reason()
        if problem is not None:
            raise SecretStoreError(f"cannot store {name}: {problem}; set ${name} instead")
        try:
            self.backend.set_password(SERVICE, name, value.strip())
        except Exception as exc:
            raise SecretStoreError(
                f"the keyring refused to store {name}: {type(exc).__name__}"
            ) from None
        log.info("stored %s in the OS keyring", name)

    def delete(self, name: str) -> bool:
        """Remove the key from the keyring. Returns False when there was none."""
        problem = self.unavailable_reason()
        if problem is not None:
            raise SecretStoreError(f"cannot delete {name}: {problem}")
        try:
            self.backend.delete_password(SERVICE, name)
        except keyring.errors.PasswordDeleteError:
            return False
        except Exception as exc:
            raise SecretStoreError(
                f"the keyring refused to delete {name}: {type(exc).__name__}"
            ) from None
        log.info("deleted %s from the OS keyring", name)
        return True

    def status(self, name: str) -> KeyStatus:
        problem = self.unavailable_reason()
        in_keyring = False
        if problem is None:
            try:
                in_keyring = bool(self.backend.get_password(SERVICE, name))
            except Exception as exc:
                problem = f"keyring error: {type(exc).__name__}"
        return KeyStatus(name, in_keyring, bool(self._environ.get(name)), problem)


def _is_fail_backend(backend: keyring.backend.KeyringBackend) -> bool:
    from keyring.backends import chainer, fail

    if isinstance(backend, fail.Keyring):
        return True
    if isinstance(backend, chainer.ChainerBackend):
        return not backend.backends
    return False
