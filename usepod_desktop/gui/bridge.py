"""Core events -> Qt signals.

The core publishes plain dataclasses on :class:`usepod_desktop.core.events.EventBus`,
synchronously in the publisher's thread. Under qasync that thread is the GUI thread, so a
signal emitted here reaches its slots directly; if the core ever publishes from a worker thread,
Qt's automatic connection queues the call to the GUI thread, because the bridge (and every
widget connected to it) lives there. Widgets therefore never subscribe to the bus themselves.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal, SignalInstance

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
from usepod_desktop.core.serving.controller import ServingChanged


class AgentBridge(QObject):
    stateChanged = Signal(object)  # StateChanged
    jobStarted = Signal(object)  # JobStarted
    jobFinished = Signal(object)  # JobFinished
    backendStatusChanged = Signal(object)  # BackendStatusChanged
    capabilitiesSent = Signal(object)  # CapabilitiesSent
    discoveryCompleted = Signal(object)  # DiscoveryCompleted
    configReloaded = Signal(object)  # ConfigReloaded
    servingChanged = Signal(object)  # ServingChanged (a [serving] rule paused or resumed)
    #: Every event, after its specific signal (for the tray's status refresh).
    event = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._unsubscribe: Callable[[], None] | None = None

    def attach(self, bus: EventBus) -> None:
        """Listen to `bus` (detaching from the previous one, e.g. after pairing)."""
        self.detach()
        typed: tuple[tuple[type, SignalInstance], ...] = (
            (StateChanged, self.stateChanged),
            (JobStarted, self.jobStarted),
            (JobFinished, self.jobFinished),
            (BackendStatusChanged, self.backendStatusChanged),
            (CapabilitiesSent, self.capabilitiesSent),
            (DiscoveryCompleted, self.discoveryCompleted),
            (ServingChanged, self.servingChanged),
            (ConfigReloaded, self.configReloaded),
        )
        # The bus calls its handlers in subscription order: the typed signals first, then
        # `event`, so a slot of `event` (the tray's status refresh) sees what the typed slots
        # (the controller's "today" counter, the notifier) already did with the same event.
        offs = [bus.subscribe(kind, signal.emit) for kind, signal in typed]
        offs.append(bus.subscribe(self.event.emit))

        def unsubscribe() -> None:
            for off in offs:
                off()

        self._unsubscribe = unsubscribe

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
