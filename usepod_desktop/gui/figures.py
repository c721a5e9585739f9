"""The one reader of the earnings ledger for the GUI: the tray's "today" figures and the
dashboard's figures, each read in a worker thread and throttled here, however many jobs finish.

- **Today** (the tray's tooltip and menu): read again at most once per
  :data:`TODAY_INTERVAL_MS` after `JobFinished` events; :attr:`LedgerFigures.today` holds the
  last figure and :attr:`LedgerFigures.todayChanged` says it was read.
- **Dashboard** (gui/dashboard/): read when a window asks (opened, "Refresh") and after
  `JobFinished` events at most once every :data:`REFRESH_MIN_INTERVAL_S`, only while a window
  watches; with none watching an event only marks the figures stale, so the next window shown
  reads them. :attr:`LedgerFigures.dashboardChanged` carries each read's result.

No Qt widget here, and no ledger read on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QTimer, Signal

from usepod_desktop.core.events import JobFinished
from usepod_desktop.core.ledger import USE_DEFAULT, Dashboard, Ledger, LedgerError, SourcesArg
from usepod_desktop.gui import tasks

if TYPE_CHECKING:
    from usepod_desktop.core.errors import UserFacingError
    from usepod_desktop.core.host import AgentHost
    from usepod_desktop.gui.bridge import AgentBridge

log = logging.getLogger(__name__)

#: After a JobFinished, today's figures are read again at most this often (milliseconds).
TODAY_INTERVAL_MS = 500
#: After a JobFinished, the dashboard's figures are read again at most this often (seconds).
REFRESH_MIN_INTERVAL_S = 2.0
DAYS = 30
RECENT = 50


def read_dashboard(
    ledger: Ledger, sources: SourcesArg = USE_DEFAULT, *, days: int = DAYS, recent: int = RECENT
) -> Dashboard:
    """Everything the dashboard shows, for `sources` (blocking: run it in a worker thread).
    Waits (bounded) for jobs queued to the ledger's writer first. Raises LedgerError."""
    ledger.flush(5.0)
    return Dashboard(
        generated_at=ledger.now(),
        periods=ledger.periods(sources=sources),
        per_model=ledger.per_model(sources=sources),
        per_day=ledger.per_day(days, sources=sources),
        recent=ledger.recent(recent, sources=sources),
        problem=ledger.problem,
    )


class Throttle(QObject):
    """Calls `action` at once when asked after a quiet spell, then at most once per
    `interval_ms` however often it is asked (a request inside the interval is served when it
    ends, never dropped). Asking costs a clock read and a timer check: O(1) per event."""

    def __init__(
        self, action: Callable[[], object], interval_ms: int, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._action = action
        self.interval_ms = interval_ms
        self._last = -float("inf")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._fire)

    def __call__(self) -> None:
        if self._timer.isActive():
            return  # served when the timer fires
        wait_s = self._last + self.interval_ms / 1000 - time.monotonic()
        if wait_s <= 0:
            self._fire()
        else:
            self._timer.start(max(1, round(wait_s * 1000)))

    def _fire(self) -> None:
        self._last = time.monotonic()
        self._action()

    def stop(self) -> None:
        self._timer.stop()


class LedgerFigures(QObject):
    """Reads the host's ledger for the tray and the dashboard windows (the controller owns one)."""

    #: :attr:`today` was read again (or could not be read: then it is None).
    todayChanged = Signal()
    #: A dashboard read began.
    dashboardReading = Signal()
    #: A dashboard read finished: (Dashboard or None, its one-line problem or None).
    dashboardChanged = Signal(object, object)

    def __init__(
        self,
        host: AgentHost,
        bridge: AgentBridge,
        *,
        sandbox: Callable[[], bool],
        stopping: Callable[[], bool],
        today_interval_ms: int = TODAY_INTERVAL_MS,
        dashboard_interval_s: float = REFRESH_MIN_INTERVAL_S,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.host = host
        self._sandbox = sandbox
        self._stopping = stopping
        #: (jobs served today, estimated earnings in nano-USD) from the ledger; None before
        #: the first read, without a ledger, or while it cannot be read.
        self.today: tuple[int, int] | None = None
        self.dashboard_interval_s = dashboard_interval_s
        #: The dashboard read under way or last done (None before the first).
        self.dashboard_task: asyncio.Task[None] | None = None
        #: Jobs finished while no dashboard watched: the next one shown reads again.
        self.dashboard_stale = False
        #: The read of today's figures under way or last done (None before the first).
        self.today_task: asyncio.Task[None] | None = None
        self._today_again = False
        self._watchers: set[int] = set()
        self._again = False
        self._last_read_at: float | None = None
        self._today_timer = QTimer(self)
        self._today_timer.setSingleShot(True)
        self._today_timer.setInterval(today_interval_ms)
        self._today_timer.timeout.connect(self.refresh_today)
        self._dashboard_timer = QTimer(self)
        self._dashboard_timer.setSingleShot(True)
        self._dashboard_timer.timeout.connect(lambda: self.refresh_dashboard())
        bridge.jobFinished.connect(self._on_job_finished)

    @property
    def ledger(self) -> Ledger | None:
        return self.host.ledger

    def stop(self) -> None:
        """No more throttled reads (shutting down)."""
        self._today_timer.stop()
        self._dashboard_timer.stop()

    def _on_job_finished(self, event: JobFinished) -> None:
        if self.ledger is not None and not self._today_timer.isActive():
            self._today_timer.start()  # at most one read per TODAY_INTERVAL_MS
        if event.outcome.source == "test":
            return  # "Send test job" is not in the dashboard's figures
        self.schedule_dashboard()

    # ---- today -------------------------------------------------------------------------

    def refresh_today(self) -> asyncio.Task[None] | None:
        """Read today's figures again now (in a worker thread). A read under way is not
        raced: one more read follows it, so an older read can never overwrite a newer
        figure. Returns the read's task (None without a ledger or while stopping)."""
        if self.today_task is not None and not self.today_task.done():
            self._today_again = True
            return self.today_task
        if self.ledger is None or self._stopping() or not tasks.loop_available():
            return None
        task = tasks.spawn(self._read_today(), name="ledger-today", on_error=self._today_failed)
        task.add_done_callback(self._today_read_ended)
        self.today_task = task
        return task

    def _today_read_ended(self, task: asyncio.Task[None]) -> None:
        if self._today_again and not task.cancelled():
            self._today_again = False
            self.refresh_today()  # the read asked for while this one ran

    async def _read_today(self) -> None:
        sources = ("sandbox",) if self._sandbox() else ("coordinator",)
        totals = await self.host.ledger_today(sources)
        if totals is not None:
            self.today = (totals.done, totals.earnings_nusd)
        self.todayChanged.emit()

    def _today_failed(self, error: UserFacingError) -> None:
        log.warning("today's figures from the ledger: %s", error)
        self.today = None
        self.todayChanged.emit()

    # ---- dashboard ---------------------------------------------------------------------

    def dashboard_sources(self) -> SourcesArg:
        """Sandbox jobs in sandbox mode, else the ledger's default (coordinator jobs)."""
        return ("sandbox",) if self._sandbox() else USE_DEFAULT

    def watch_dashboard(self, window: QObject, watching: bool) -> None:
        """`window` was shown (True) or hidden (False): reads after events happen only while
        a window is shown (a window destroyed unhidden stops watching too)."""
        key = id(window)
        if watching and key not in self._watchers:
            self._watchers.add(key)
            window.destroyed.connect(lambda: self._unwatch(key))
        elif not watching:
            self._unwatch(key)

    def _unwatch(self, key: int) -> None:
        self._watchers.discard(key)
        if not self._watchers:
            self._dashboard_timer.stop()

    def refresh_dashboard(self) -> asyncio.Task[None] | None:
        """Read the dashboard's figures now (coalesced with a read under way: then one more
        read follows it). Returns the read's task, None when there is no ledger to read."""
        self._dashboard_timer.stop()
        self.dashboard_stale = False
        if self.dashboard_task is not None and not self.dashboard_task.done():
            self._again = True
            return self.dashboard_task
        ledger = self.ledger
        if ledger is None or self._stopping() or not tasks.loop_available():
            return None
        self._last_read_at = time.monotonic()
        self.dashboardReading.emit()
        self.dashboard_task = tasks.spawn(self._read(ledger), name="dashboard-read")
        return self.dashboard_task

    def schedule_dashboard(self) -> None:
        """Read again soon: at once if the last read began long enough ago, else when
        :attr:`dashboard_interval_s` has passed since it (many events, one read). With no
        window watching, only remember that the figures are stale."""
        if not self._watchers:
            self.dashboard_stale = True
            return
        if self._dashboard_timer.isActive():
            return
        wait = 0.0
        if self._last_read_at is not None:
            wait = max(0.0, self._last_read_at + self.dashboard_interval_s - time.monotonic())
        self._dashboard_timer.start(round(wait * 1000))

    async def _read(self, ledger: Ledger) -> None:
        sources = self.dashboard_sources()
        data: Dashboard | None = None
        problem: str | None = None
        try:
            data = await asyncio.to_thread(read_dashboard, ledger, sources)
        except LedgerError as exc:
            problem = exc.message
        except (sqlite3.Error, OSError) as exc:  # the ledger wraps these; belt and braces
            log.warning("reading the earnings ledger: %s", exc)
            problem = f"cannot read the earnings ledger {ledger.path} ({exc})"
        finally:  # a bug still ends the read for the windows (and reaches the excepthook)
            self.dashboardChanged.emit(data, problem)
        if self._again:
            self._again = False
            self.schedule_dashboard()


__all__ = [
    "REFRESH_MIN_INTERVAL_S",
    "TODAY_INTERVAL_MS",
    "LedgerFigures",
    "Throttle",
    "read_dashboard",
]
