"""A Qt-free event bus: the core publishes, the GUI (through a small Qt bridge) and the
ledger subscribe. Handlers run synchronously in the publisher's thread (the asyncio loop);
a failing handler is logged and never breaks the publisher."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar, overload

from usepod_desktop.core.listeners import Listeners

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
E = TypeVar("E")


class EventBus:
    """Subscribe to every event (`subscribe(handler)`) or to one type
    (`subscribe(JobFinished, handler)`: the handler gets only those, no isinstance filter)."""

    def __init__(self) -> None:
        self._handlers: Listeners[[Any]] = Listeners("event handler", log)

    @overload
    def subscribe(self, handler: Handler, /) -> Callable[[], None]: ...

    @overload
    def subscribe(
        self, event_type: type[E], handler: Callable[[E], None], /
    ) -> Callable[[], None]: ...

    def subscribe(
        self, first: type | Handler, handler: Callable[[Any], None] | None = None, /
    ) -> Callable[[], None]:
        """Call `handler(event)` for every event, or for every event of one type (subclasses
        included); returns the unsubscribe function."""
        if handler is None:
            return self._handlers.add(first)
        if not isinstance(first, type):
            raise TypeError("subscribe(handler) or subscribe(EventType, handler)")
        event_type, typed = first, handler

        def of_type(event: object) -> None:
            if isinstance(event, event_type):
                typed(event)

        return self._handlers.add(of_type)

    def emit(self, event: object) -> None:
        self._handlers.emit(event)
