"""The agent's own exceptions, as one tree (the httpx ``_exceptions.py`` layout).

::

    UsePodError                     every exception the agent raises on purpose
    ├── UserFacingError             safe to show as is: `title` + one-line message, no secret
    │   ├── ConfigError             agent.toml missing or invalid; `field` names the field
    │   │   ├── ConfigChangedError  (config.py) agent.toml changed on disk since it was loaded
    │   │   ├── ConfigProblemsError (config.py) a draft to save has problems; `problems` has all
    │   │   └── ConfigNotFound      (host.py) no agent.toml where the agent looked
    │   ├── IdentityError           the identity key file is unreadable or inconsistent
    │   ├── IdentityInUse           (identity_lock.py) another process serves as this identity
    │   ├── SecretStoreError        no usable OS keyring, or it refused an operation
    │   ├── MissingKeyError         a remote backend has no API key
    │   ├── LedgerError             the earnings ledger database cannot be used
    │   ├── PairingError            pairing cannot go on
    │   │   ├── PairingExpired      (pairing/values.py) the pair code expired before approval
    │   │   └── PairingCancelled    (pairing/values.py) the operator cancelled
    │   ├── ServiceError            installing / controlling the system service failed
    │   │   └── NotInstalled        (service.py) there is no service to control
    │   ├── AutostartError          the start-at-login entry cannot be written or removed
    │   └── UpdateCheckError        the update feed is unreachable or unusable
    └── BackendError                (backends/base.py) a failed backend call; `code` is the
                                    `job_error` code sent to the coordinator, `message` one
                                    line, `status` the upstream HTTP status if any

Library errors are translated at the edge, once: httpx failures through
:mod:`usepod_desktop.core.net` (``failure_of``; the backend adapters turn it into a
`BackendError`, pairing into a retry), websockets failures in :mod:`usepod_desktop.core.link`.
Malformed frames raise ``protocol.FrameError`` (a ``ValueError``: bad input, not an agent
failure). The GUI shows a `UserFacingError` as it is and anything else as an internal error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from usepod_desktop.core.config import BackendConfig

__all__ = [
    "AutostartError",
    "ConfigError",
    "IdentityError",
    "LedgerError",
    "MissingKeyError",
    "PairingError",
    "SecretStoreError",
    "ServiceError",
    "UpdateCheckError",
    "UsePodError",
    "UserFacingError",
]


class UsePodError(Exception):
    """The root of the agent's own exceptions (see the tree above)."""


class UserFacingError(UsePodError):
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


class MissingKeyError(UserFacingError):
    """A remote backend (openrouter, venice) without an API key."""

    title = "API key missing"

    def __init__(self, config: BackendConfig, where_looked: str) -> None:
        super().__init__(
            f"{config.label}: no API key; looked in {where_looked}. "
            f"Add it with `usepod-desktop keys set {config.api_key_env}` or in the settings."
        )
        self.config = config
        self.where_looked = where_looked


class LedgerError(UserFacingError):
    """The ledger database cannot be used. The message names the file and what to do."""

    title = "Earnings ledger problem"


class PairingError(UserFacingError):
    """Pairing cannot go on: one line for the operator, never a secret."""

    title = "Pairing failed"


class ServiceError(UserFacingError):
    """Installing, removing or controlling the system service failed."""

    title = "Service"


class AutostartError(UserFacingError):
    """The start-at-login entry cannot be written or removed."""

    title = "Start at login"


class UpdateCheckError(UserFacingError):
    """The feed could not be reached or answered something unusable (one line)."""

    title = "Update check"
