"""The earnings dashboard: what the ledger recorded (totals per period, estimated earnings per
day, per model and the last jobs) and the live figures the heartbeats carry.

Two sources, two paces:

- The **ledger** (SQLite on disk) is read by the controller's one
  :class:`~usepod_desktop.gui.figures.LedgerFigures` (which also reads the tray's "today") in a
  worker thread, never on the event loop: when the window is opened, on "Refresh", and after
  `JobFinished` events while it is shown, at most once every :data:`REFRESH_MIN_INTERVAL_S`
  however many jobs finish. A ledger that cannot be read shows its one-line problem in the
  window; without a ledger the window says so.
- The **live figures** (jobs running, tokens/s p50, time to first byte p50/p95, error rate over
  60 s) come from the agent's snapshot (`Agent.snapshot().live`, in memory), every
  :data:`LIVE_INTERVAL_MS` while the window is shown; that tick never touches the disk.

Every amount of money is an estimate (the coordinator settles the payout from its own token
count) and is labelled so; in sandbox mode the window says the figures are demo figures. The
chart is a small QPainter widget (QtCharts is not part of PySide6-Essentials).

The package: `text.py` (fixed texts, number and money formats), `chart.py`
(:class:`EarningsChart`), `tables.py` (the columns, :class:`Cell`, building and filling the
tables), `model.py` (:class:`DashboardModel`, what the window needs from the app: a protocol the
controller meets, so the window does not depend on the controller; the live figures) and
`window.py` (:class:`DashboardWindow`).
"""

from __future__ import annotations

from usepod_desktop.gui.dashboard.chart import EarningsChart, axis_ticks, nice_step, tick_text
from usepod_desktop.gui.dashboard.model import DashboardModel, LiveFigures, gpu_text, live_figures
from usepod_desktop.gui.dashboard.tables import MODEL_COLUMNS, RECENT_COLUMNS, Cell
from usepod_desktop.gui.dashboard.text import (
    DASH,
    ESTIMATE_TEXT,
    NO_GPU_TEXT,
    NO_LEDGER_TEXT,
    SANDBOX_TEXT,
    money_text,
)
from usepod_desktop.gui.dashboard.window import LIVE_INTERVAL_MS, DashboardWindow
from usepod_desktop.gui.figures import REFRESH_MIN_INTERVAL_S, read_dashboard

__all__ = [
    "DASH",
    "ESTIMATE_TEXT",
    "LIVE_INTERVAL_MS",
    "MODEL_COLUMNS",
    "NO_GPU_TEXT",
    "NO_LEDGER_TEXT",
    "RECENT_COLUMNS",
    "REFRESH_MIN_INTERVAL_S",
    "SANDBOX_TEXT",
    "Cell",
    "DashboardModel",
    "DashboardWindow",
    "EarningsChart",
    "LiveFigures",
    "axis_ticks",
    "gpu_text",
    "live_figures",
    "money_text",
    "nice_step",
    "read_dashboard",
    "tick_text",
]
