"""The dashboard's view of the app (:class:`DashboardModel`, a protocol the controller meets)
and the live figures it reads from the agent's snapshot (memory only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from PySide6.QtCore import SignalInstance

from usepod_desktop.core.protocol import HeartbeatFigures
from usepod_desktop.gui.dashboard.text import DASH, NO_GPU_TEXT

if TYPE_CHECKING:
    from usepod_desktop.core.agent import Agent
    from usepod_desktop.core.ledger import Ledger
    from usepod_desktop.core.view import AgentView
    from usepod_desktop.gui.figures import LedgerFigures


class DashboardModel(Protocol):
    """What the dashboard needs from the app (the controller provides it): the agent, the
    ledger and its one throttled reader, the mode, the GPU lines of the tray menu, and a signal
    when the agent is replaced."""

    @property
    def agent(self) -> Agent | None: ...

    @property
    def ledger(self) -> Ledger | None: ...

    @property
    def figures(self) -> LedgerFigures: ...

    @property
    def sandbox(self) -> bool: ...

    @property
    def agentChanged(self) -> SignalInstance: ...

    def gpu_lines(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """What the next heartbeat will report, plus the jobs counted in its 60 s window."""

    figures: HeartbeatFigures
    jobs_in_window: int


def live_figures(view: AgentView | None) -> LiveFigures | None:
    """The agent's rolling figures from memory (no disk), None without an agent."""
    if view is None:
        return None
    return LiveFigures(view.live, view.jobs_in_window)


def gpu_text(model: DashboardModel) -> str:
    """The GPU lines of the tray menu (temperature, utilisation, VRAM, power), from the serving
    rules' last sensor reading; why there are none; or a dash without an agent."""
    if model.agent is None:
        return f"GPU: {DASH}"
    lines = model.gpu_lines()
    if lines:
        return "\n".join(lines)
    if model.agent.serving.snapshot is None:
        return "GPU: no reading yet"
    return f"GPU: {NO_GPU_TEXT}"
