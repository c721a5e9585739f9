"""What the pairing flow hands out: the pair code, the approval, the result, the progress
events the faces render, and the two errors only pairing raises.

One name per thing: :class:`PollExpired` is what :meth:`PairingFlow.wait` returns when the code
expired, :class:`CodeExpired` the event that announces it, :class:`PairingExpired` the error
:meth:`PairingFlow.run` raises for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from usepod_desktop.core.errors import PairingError
from usepod_desktop.core.kinds import KINDS, LOCAL_KINDS

if TYPE_CHECKING:
    from usepod_desktop.core.config import Config
    from usepod_desktop.core.discovery import ProbeResult

__all__ = [
    "BACKEND_HINTS",
    "HOST_TOKEN_KEY",
    "ActivatedModel",
    "Activation",
    "BackendsDetected",
    "CodeExpired",
    "CodeIssued",
    "CoordinatorUnreachable",
    "IdentityReady",
    "PairCode",
    "Paired",
    "PairingCancelled",
    "PairingError",
    "PairingEvent",
    "PairingExpired",
    "PairingResult",
    "PollExpired",
    "WaitingForApproval",
]

#: Keyring user name of the host token (service `usepod-agent`, like the BYOK keys).
HOST_TOKEN_KEY = "usepod-host-token"

#: Per local kind: its name and how to start it, for "nothing found" hints (CLI and GUI).
BACKEND_HINTS: dict[str, tuple[str, str]] = {
    k: (KINDS[k].label, KINDS[k].install_hint or "") for k in LOCAL_KINDS
}


# ------------------------------------------------------------------------------ errors


class PairingExpired(PairingError):
    """The pair code expired before it was approved (:meth:`PairingFlow.run` only)."""

    title = "Pair code expired"


class PairingCancelled(PairingError):
    """The flow was cancelled with :meth:`PairingFlow.cancel`; nothing was written."""

    title = "Pairing cancelled"


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class PairCode:
    """A code to show. `deadline` is on the flow's (monotonic) clock."""

    pair_code: str
    page_url: str
    expires_at: datetime
    deadline: float
    poll_token: str = field(repr=False)
    #: The answer said `"sandbox": true`: a local sandbox, approved in its own terminal (there
    #: is no web page) and whose provider id is not written into the shared identity.
    sandbox: bool = False


@dataclass(frozen=True, slots=True)
class ActivatedModel:
    model_id: str
    input_per_1m: int
    output_per_1m: int
    max_concurrent: int


@dataclass(frozen=True, slots=True)
class Activation:
    """The poll answer `active`: the operator approved this computer on the website."""

    provider_id: str
    models: tuple[ActivatedModel, ...]
    host_token: str = field(repr=False)
    #: Entries of `model_config` that could not be used (skipped), one line each.
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PollExpired:
    """The poll outcome `expired` (or no answer at all until the code's deadline)."""

    code: PairCode


@dataclass(frozen=True, slots=True)
class PairingResult:
    provider_id: str
    models: tuple[ActivatedModel, ...]
    config: Config
    config_path: Path
    identity_path: Path
    #: Where the previous agent.toml was kept, if there was one.
    backup_path: Path | None
    #: Whether the host token is in the OS keyring (False: no usable keyring, see warnings).
    token_stored: bool
    warnings: tuple[str, ...] = ()

    @property
    def insecure(self) -> bool:
        """The coordinator URL is ws:// (a local sandbox): the agent needs --allow-insecure."""
        return self.config.coordinator.url.startswith("ws://")


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class IdentityReady:
    public_key: str
    path: Path
    #: True when no identity file existed: a new key, saved only once paired.
    new: bool


@dataclass(frozen=True, slots=True)
class BackendsDetected:
    backends: tuple[ProbeResult, ...]


@dataclass(frozen=True, slots=True)
class CoordinatorUnreachable:
    """An attempt failed without an answer; the flow retries after `retry_in` seconds."""

    url: str
    detail: str
    attempt: int
    retry_in: float


@dataclass(frozen=True, slots=True)
class CodeIssued:
    code: PairCode


@dataclass(frozen=True, slots=True)
class WaitingForApproval:
    """A poll answered `pending`."""

    code: PairCode
    remaining: float
    polls: int


@dataclass(frozen=True, slots=True)
class CodeExpired:
    code: PairCode


@dataclass(frozen=True, slots=True)
class Paired:
    result: PairingResult


PairingEvent: TypeAlias = (
    IdentityReady
    | BackendsDetected
    | CoordinatorUnreachable
    | CodeIssued
    | WaitingForApproval
    | CodeExpired
    | Paired
)
