"""A Qt-free event bus: the core publishes, the GUI (through a small Qt bridge) and the
ledger subscribe. Handlers run synchronously in the publisher's thread (the asyncio loop);
a failing handler is logged and never breaks the publisher."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from usepod_desktop.core.discovery import DiscoveryResult
    from usepod_desktop.core.executor import JobOutcome

log = logging.getLogger(__name__)


class AgentState(StrEnum):
    OFFLINE = "offline"
    CONNECTING = "connecting"
    SERVING = "serving"
    #: Connected, but no model is advertised (every backend down, no key, nothing loaded).
    NO_MODELS = "no_models"
    PAUSED = "paused"
    ERROR = "error"
    NEEDS_PAIRING = "needs_pairing"

    @property
    def label(self) -> str:
        return {
            AgentState.OFFLINE: "Offline",
            AgentState.CONNECTING: "Connecting",
            AgentState.SERVING: "Serving",
            AgentState.NO_MODELS: "No models offered",
            AgentState.PAUSED: "Paused",
            AgentState.ERROR: "Error",
            AgentState.NEEDS_PAIRING: "Needs pairing",
        }[self]


@dataclass(frozen=True, slots=True)
class StateChanged:
    state: AgentState
    reason: str


@dataclass(frozen=True, slots=True)
class JobStarted:
    job_id: str
    model_id: str
    backend: str


@dataclass(frozen=True, slots=True)
class JobFinished:
    outcome: JobOutcome


@dataclass(frozen=True, slots=True)
class BackendStatusChanged:
    label: str
    up: bool
    detail: str


@dataclass(frozen=True, slots=True)
class CapabilitiesSent:
    models: tuple[str, ...]
    paused: bool


@dataclass(frozen=True, slots=True)
class DiscoveryCompleted:
    result: DiscoveryResult


@dataclass(frozen=True, slots=True)
class ConfigReloaded:
    pass


Handler = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Call `handler(event)` for every event; returns the unsubscribe function."""
        self._handlers.append(handler)

        def unsubscribe() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return unsubscribe

    def emit(self, event: object) -> None:
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception:
                log.exception("event handler failed for %s", type(event).__name__)
