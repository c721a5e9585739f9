"""Errors meant for the user: a short title and a one-line message."""

from __future__ import annotations


class UserFacingError(Exception):
    """An error whose message is safe and useful to show to the operator as is.

    `title` is a few words for a dialog title; `str(err)` is one line, never a secret.
    """

    title = "Use Pod"

    def __init__(self, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        if title is not None:
            self.title = title

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(UserFacingError):
    """agent.toml is missing or invalid. The message names the field."""

    title = "Invalid agent.toml"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class IdentityError(UserFacingError):
    """The identity key file cannot be read, is malformed or inconsistent."""

    title = "Identity key problem"


class SecretStoreError(UserFacingError):
    """No usable OS keyring, or the keyring refused an operation."""

    title = "Keyring unavailable"
