"""Core events -> Qt signals.

The core publishes plain dataclasses on :class:`usepod_desktop.core.events.EventBus`,
synchronously in the publisher's thread. Under qasync that thread is the GUI thread, so a
signal emitted here reaches its slots directly; if the core ever publishes from a worker thread,
Qt's automatic connection queues the call to the GUI thread, because the bridge (and every
widget connected to it) lives there. Widgets therefore never subscribe to the bus themselves.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

from usepod_desktop.core.events import (
    BackendStatusChanged,
    CapabilitiesSent,
    ConfigReloaded,
    DiscoveryCompleted,
    EventBus,
    JobFinished,
    JobStarted,
    StateChanged,
)


class AgentBridge(QObject):
    stateChanged = Signal(object)  # StateChanged
    jobStarted = Signal(object)  # JobStarted
    jobFinished = Signal(object)  # JobFinished
    backendStatusChanged = Signal(object)  # BackendStatusChanged
    capabilitiesSent = Signal(object)  # CapabilitiesSent
    discoveryCompleted = Signal(object)  # DiscoveryCompleted
    configReloaded = Signal(object)  # ConfigReloaded
    #: Every event, after its specific signal (for the tray's status refresh).
    event = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, bus: EventBus) -> None:
        """Listen to `bus` (detaching from the previous one, e.g. after pairing)."""
        self.detach()
        self._unsubscribe = bus.subscribe(self._dispatch)

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _dispatch(self, event: object) -> None:
        if isinstance(event, StateChanged):
            self.stateChanged.emit(event)
        elif isinstance(event, JobStarted):
            self.jobStarted.emit(event)
        elif isinstance(event, JobFinished):
            self.jobFinished.emit(event)
        elif isinstance(event, BackendStatusChanged):
            self.backendStatusChanged.emit(event)
        elif isinstance(event, CapabilitiesSent):
            self.capabilitiesSent.emit(event)
        elif isinstance(event, DiscoveryCompleted):
            self.discoveryCompleted.emit(event)
        elif isinstance(event, ConfigReloaded):
            self.configReloaded.emit(event)
        self.event.emit(event)
