"""Tray notifications: few, useful, each switchable.

- Lost connection to the coordinator: only when the agent is still not connected
  `offline_grace_ms` (10 s) after it was serving, so a coordinator deploy (a reconnect within a
  second or two) says nothing; "Connected again" follows only a loss that was announced.
- A backend going down, or coming back after it was reported down.
- Connected but no model offered (every backend down, no key, nothing loaded), when that lasts
  `no_models_grace_ms` (30 s): start-up discovery and a backend restart say nothing.
- Pairing completed (:meth:`Notifier.paired`, called by the pairing flow).

The switches are in :class:`usepod_desktop.gui.prefs.Prefs` (the settings window's "App" tab).
"""

from __future__ import annotations

import html
import sys
from collections.abc import Callable
from typing import Literal

from PySide6.QtCore import QObject, QTimer

from usepod_desktop.core.events import AgentState, BackendStatusChanged, StateChanged
from usepod_desktop.core.serving.controller import ServingChanged
from usepod_desktop.gui.bridge import AgentBridge
from usepod_desktop.gui.prefs import Prefs

Level = Literal["info", "warning", "error"]
Sink = Callable[[str, str, Level], None]

OFFLINE_GRACE_MS = 10_000
NO_MODELS_GRACE_MS = 30_000
_ONLINE = (AgentState.SERVING, AgentState.NO_MODELS, AgentState.PAUSED)


def bubble_text(text: str, platform: str | None = None) -> str:
    """`text` as the system's notification bubble should get it. On Linux Qt hands it to the
    desktop's notification service, and many of those (GNOME Shell, KDE, dunst) read a subset
    of HTML in the body: a coordinator reason or backend message with `<a href=...>` or
    `<img src=...>` must show as text, so `&`, `<` and `>` are escaped there (SECURITY.md:
    remote text is shown as plain text everywhere). Elsewhere the text is shown as is."""
    if (platform or sys.platform).startswith("linux"):
        return html.escape(text, quote=False)
    return text


class Notifier(QObject):
    def __init__(
        self,
        prefs: Prefs,
        sink: Sink,
        *,
        offline_grace_ms: int = OFFLINE_GRACE_MS,
        no_models_grace_ms: int = NO_MODELS_GRACE_MS,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.prefs = prefs
        self.sink = sink
        self.suspended = False
        self._online = False
        self._was_online = False
        self._lost_announced = False
        self._last_reason = ""
        self._down: set[str] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(offline_grace_ms)
        self._timer.timeout.connect(self._offline_too_long)
        self._no_models = False
        self._no_models_announced = False
        self._no_models_timer = QTimer(self)
        self._no_models_timer.setSingleShot(True)
        self._no_models_timer.setInterval(no_models_grace_ms)
        self._no_models_timer.timeout.connect(self._no_models_too_long)
        #: What was shown, newest last (title, message): for the tests and for debugging.
        self.sent: list[tuple[str, str]] = []

    def connect_bridge(self, bridge: AgentBridge) -> None:
        bridge.stateChanged.connect(self.on_state)
        bridge.backendStatusChanged.connect(self.on_backend)
        bridge.servingChanged.connect(self.on_serving)

    # ---- events

    def on_state(self, event: StateChanged) -> None:
        self._no_models = event.state == AgentState.NO_MODELS
        if self._no_models:
            if not self._no_models_announced and not self._no_models_timer.isActive():
                self._no_models_timer.start()
        else:
            self._no_models_timer.stop()
            if self._no_models_announced and event.state == AgentState.SERVING:
                self._no_models_announced = False
                self._send(
                    "notify/backend", "Serving again", "Use Pod offers models again.", "info"
                )
        self._online = event.state in _ONLINE
        self._last_reason = event.reason
        if self._online:
            self._timer.stop()
            if self._lost_announced:
                self._lost_announced = False
                self._send(
                    "notify/disconnect",
                    "Connected again",
                    "Use Pod is connected to the coordinator again.",
                    "info",
                )
            self._was_online = True
        elif self._was_online and not self._lost_announced and not self._timer.isActive():
            self._timer.start()

    def on_backend(self, event: BackendStatusChanged) -> None:
        if not event.up:
            if event.label in self._down:
                return
            self._down.add(event.label)
            detail = f": {event.detail}" if event.detail else ""
            self._send(
                "notify/backend",
                "Backend unavailable",
                f"{event.label}{detail}. Its models are not offered.",
                "warning",
            )
        elif event.label in self._down:
            self._down.discard(event.label)
            self._send(
                "notify/backend",
                "Backend back",
                f"{event.label} is answering again; its models are offered.",
                "info",
            )

    def on_serving(self, event: ServingChanged) -> None:
        """A `[serving]` rule paused or resumed serving (a pause the user asked for is not
        announced back to them)."""
        if event.manual:
            return
        if event.serving:
            self._send(
                "notify/serving", "Serving again", "Use Pod offers its models again.", "info"
            )
        else:
            self._send("notify/serving", "Serving paused", f"Paused: {event.text}.", "info")

    def paired(self, provider_id: str | None = None) -> None:
        """The hook for the pairing flow."""
        who = f" as provider {provider_id}" if provider_id else ""
        self._send(
            "notify/pairing",
            "Paired",
            f"This computer is paired{who} and will start serving.",
            "info",
        )

    def suspend(self) -> None:
        """Quitting: say nothing more (the agent going offline is what the user asked for)."""
        self.suspended = True
        self._timer.stop()
        self._no_models_timer.stop()

    # ---- internals

    def _offline_too_long(self) -> None:
        if self._online:
            return
        self._lost_announced = True
        reason = f" ({self._last_reason})" if self._last_reason else ""
        self._send(
            "notify/disconnect",
            "Lost connection",
            f"Use Pod lost its connection to the coordinator{reason}. It keeps retrying.",
            "warning",
        )

    def _no_models_too_long(self) -> None:
        if not self._no_models:
            return
        self._no_models_announced = True
        self._send(
            "notify/backend",
            "No models offered",
            f"Use Pod is connected but offers no model: {self._last_reason}.",
            "warning",
        )

    def _send(self, key: str, title: str, message: str, level: Level) -> None:
        if self.suspended or not self.prefs.notify_enabled(key):
            return
        self.sent.append((title, message))
        self.sink(title, message, level)
