"""How the coordinator connection went: connected since when, reconnects in the last hour.

Fed by the agent's :class:`~usepod_desktop.core.events.StateChanged` events (connected means
serving, no models offered or paused), so it needs nothing from the link itself. The tray app
attaches one to its agent; the Diagnose window reads it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from usepod_desktop.core.events import AgentState, StateChanged

CONNECTED = frozenset({AgentState.SERVING, AgentState.NO_MODELS, AgentState.PAUSED})
_KEEP = 1000


class ConnectionHistory:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.connected_since: float | None = None
        self.connects: deque[float] = deque(maxlen=_KEEP)
        self.disconnects: deque[float] = deque(maxlen=_KEEP)
        self._detach: Callable[[], None] | None = None

    @classmethod
    def attach(cls, agent: Any, clock: Callable[[], float] = time.monotonic) -> ConnectionHistory:
        history = cls(clock)
        if getattr(agent, "state", None) in CONNECTED:
            history._connected()
        history._detach = agent.events.subscribe(StateChanged, history.handle)
        return history

    def detach(self) -> None:
        if self._detach is not None:
            self._detach()
            self._detach = None

    def handle(self, event: StateChanged) -> None:
        if event.state in CONNECTED:
            if self.connected_since is None:
                self._connected()
        elif self.connected_since is not None:
            self.connected_since = None
            self.disconnects.append(self.clock())

    def _connected(self) -> None:
        now = self.clock()
        self.connected_since = now
        self.connects.append(now)

    def connected_for(self) -> float | None:
        """Seconds connected without a break, or None when not connected."""
        if self.connected_since is None:
            return None
        return self.clock() - self.connected_since

    def reconnects_last_hour(self) -> int:
        """Connections made in the last hour after a drop (the first connection is not one)."""
        since = self.clock() - 3600
        recent = [t for t in self.connects if t >= since]
        first_ever = self.connects[0] if self.connects else None
        return sum(1 for t in recent if t != first_ever)


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
