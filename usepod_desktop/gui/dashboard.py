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
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, QTimer
from PySide6.QtGui import (
    QBrush,
    QCloseEvent,
    QColor,
    QFont,
    QFontMetricsF,
    QHelpEvent,
    QHideEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.config import REMOTE_KINDS
from usepod_desktop.core.ledger import (
    ESTIMATE_NOTE,
    PERIOD_LABELS,
    PERIODS,
    USE_DEFAULT,
    Dashboard,
    DayTotals,
    JobRow,
    ModelTotals,
    SourcesArg,
    Totals,
)
from usepod_desktop.core.money import NANO_PER_USD, SHARE_PERCENT, format_amount
from usepod_desktop.core.protocol import HeartbeatFigures
from usepod_desktop.gui.figures import DAYS, RECENT, REFRESH_MIN_INTERVAL_S, read_dashboard
from usepod_desktop.gui.icons import app_icon
from usepod_desktop.gui.widgets import (
    ERROR_COLOUR,
    OK_COLOUR,
    WARN_COLOUR,
    plain,
    plain_tooltip,
    set_tone,
)

if TYPE_CHECKING:
    from usepod_desktop.core.view import AgentView, ModelView
    from usepod_desktop.gui.controller import AppController

log = logging.getLogger(__name__)

#: Shown when the sensor layer found no GPU and gave no reason.
NO_GPU_TEXT = "no NVIDIA or AMD GPU sensor"
#: The live figures (memory only) are refreshed this often while the window is shown.
LIVE_INTERVAL_MS = 2000
#: "Estimated: the coordinator settles the payout from its own token count."
ESTIMATE_TEXT = ESTIMATE_NOTE[:1].upper() + ESTIMATE_NOTE[1:] + "."
SANDBOX_TEXT = (
    "Sandbox mode: these are sandbox (demo) figures from the local sandbox coordinator and "
    "fake backends. Nothing here is paid."
)
NO_LEDGER_TEXT = (
    "No earnings ledger yet.\n\nThe ledger opens when the agent starts; every job it serves "
    "is then recorded here with its estimated earnings."
)
DASH = "—"

#: (key, row label) of the totals grid; its labels are `total_<period>_<key>`.
TOTAL_ROWS: tuple[tuple[str, str], ...] = (
    ("jobs", "Jobs"),
    ("success", "Success rate"),
    ("tokens_in", "Tokens in"),
    ("tokens_out", "Tokens out"),
    ("earnings", "Estimated earnings"),
)
#: (key, title) of the live figures; their labels are `live_<key>`.
LIVE_FIELDS: tuple[tuple[str, str], ...] = (
    ("running", "Jobs running"),
    ("jobs_60s", "Jobs (60 s)"),
    ("tps_p50", "Tokens/s p50"),
    ("ttfb_p50", "First byte p50"),
    ("ttfb_p95", "First byte p95"),
    ("error_rate", "Error rate (60 s)"),
)
MODEL_COLUMNS: tuple[str, ...] = (
    "Model",
    "Jobs",
    "Success",
    "Tokens in",
    "Tokens out",
    "Est. earnings",
    "Median first byte",
    "Est. upstream cost",
    "Est. net margin",
)
RECENT_COLUMNS: tuple[str, ...] = (
    "Ended",
    "Model",
    "Outcome",
    "Tokens in",
    "Tokens out",
    "First byte",
    "Duration",
    "Est. earnings",
)


# ---------------------------------------------------------------------------------------------
# Text


def money_text(nusd: int) -> str:
    """Nano-USD as dollars, small amounts with enough decimals to be seen (`$0.000312`)."""
    return format_amount(nusd, places=None)


def exact_money_text(nusd: int) -> str:
    """Nano-USD as exact dollars, 9 decimals (`$0.000312000`), for tooltips."""
    return format_amount(nusd, places=9)


def count_text(n: int) -> str:
    return f"{n:,}"


def rate_text(rate: float | None) -> str:
    return DASH if rate is None else f"{rate * 100:.1f} %"


def ms_text(ms: float | None) -> str:
    if ms is None:
        return DASH
    return f"{ms / 1000:.2f} s" if ms >= 10_000 else f"{ms:.0f} ms"


def duration_text(ms: float) -> str:
    return f"{ms / 1000:.2f} s"


def outcome_text(row: JobRow) -> str:
    """`done`, `error: <code>` or `cancelled`."""
    if row.outcome == "error":
        return f"error: {row.error_code}" if row.error_code else "error"
    return row.outcome


def local_time(moment: datetime, tz: tzinfo | None) -> datetime:
    return moment.astimezone(tz) if tz is not None else moment.astimezone()


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


def gpu_text(controller: AppController) -> str:
    """The GPU lines of the tray menu (temperature, utilisation, VRAM, power), from the serving
    rules' last sensor reading; why there are none; or a dash without an agent."""
    if controller.agent is None:
        return f"GPU: {DASH}"
    lines = controller.gpu_lines()
    if lines:
        return "\n".join(lines)
    if controller.agent.serving.snapshot is None:
        return "GPU: no reading yet"
    return f"GPU: {NO_GPU_TEXT}"


# ---------------------------------------------------------------------------------------------
# The chart


def nice_step(raw: float) -> int:
    """The smallest 1, 2 or 5 x 10^k (an integer, at least 1) that is >= `raw`."""
    if raw <= 1:
        return 1
    base = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * base:
            return int(m * base)
    return int(10 * base)  # pragma: no cover - the loop always returns


def axis_ticks(max_nusd: int, target: int = 4) -> list[int]:
    """Gridline values (nano-USD) from 0 to a round top at or above `max_nusd`."""
    top = max(max_nusd, 0) or 10_000_000  # nothing earned: an axis to one cent
    step = nice_step(top / target)
    count = -(-top // step)
    return [k * step for k in range(count + 1)]


def tick_text(nusd: int, step: int) -> str:
    """An axis label in dollars with as many decimals as the step needs (`$0.005`, `$2`)."""
    if step >= NANO_PER_USD:
        decimals = 0
    else:
        decimals = max(2, math.ceil(-math.log10(step / NANO_PER_USD) - 1e-9))
    return format_amount(nusd, places=decimals)


class EarningsChart(QWidget):
    """Bars of estimated earnings per day, a dollar axis, a tooltip per bar.

    What it draws is public: :attr:`days`, :attr:`values_nusd`, :attr:`jobs`, :attr:`ticks`,
    and :meth:`bar_rects` (the geometry `paintEvent` uses)."""

    BAR_FILL = 0.72  # share of a day's slot the bar takes

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("earningsChart")
        self.setMouseTracking(True)
        self.setMinimumHeight(150)
        self.days: list[date] = []
        self.values_nusd: list[int] = []
        self.jobs: list[int] = []
        self.ticks: list[int] = axis_ticks(0)
        self.hovered: int | None = None
        self.sandbox = False

    def sizeHint(self) -> QSize:
        return QSize(640, 220)

    def set_days(self, days: Sequence[DayTotals]) -> None:
        self.days = [d.day for d in days]
        self.values_nusd = [max(d.totals.earnings_nusd, 0) for d in days]
        self.jobs = [d.totals.jobs for d in days]
        self.ticks = axis_ticks(max(self.values_nusd, default=0))
        self.hovered = None
        self.update()

    @property
    def axis_max(self) -> int:
        return self.ticks[-1]

    def tick_labels(self) -> list[str]:
        step = self.ticks[1] - self.ticks[0] if len(self.ticks) > 1 else self.ticks[0] or 1
        return [tick_text(v, step) for v in self.ticks]

    def _small_font(self) -> QFont:
        font = QFont(self.font())
        if font.pointSizeF() > 0:
            font.setPointSizeF(max(font.pointSizeF() * 0.9, 7.0))
        return font

    def plot_rect(self) -> QRectF:
        """The area the bars stand in (axis labels left of it, dates under it)."""
        metrics = QFontMetricsF(self._small_font())
        left = max(metrics.horizontalAdvance(t) for t in self.tick_labels()) + 12
        bottom = metrics.height() + 8
        top = metrics.height() / 2 + 4
        width = max(self.width() - left - 10, 1)
        return QRectF(left, top, width, max(self.height() - top - bottom, 1))

    def bar_rects(self) -> list[QRectF]:
        """One rectangle per day, oldest first; height proportional to the day's earnings."""
        plot = self.plot_rect()
        n = len(self.values_nusd)
        if n == 0:
            return []
        slot = plot.width() / n
        width = max(slot * self.BAR_FILL, 1.0)
        rects = []
        for i, value in enumerate(self.values_nusd):
            height = plot.height() * value / self.axis_max
            x = plot.left() + i * slot + (slot - width) / 2
            rects.append(QRectF(x, plot.bottom() - height, width, height))
        return rects

    def bar_at(self, x: float) -> int | None:
        """The day whose slot holds the horizontal position `x`."""
        plot = self.plot_rect()
        n = len(self.values_nusd)
        if n == 0 or not plot.left() <= x < plot.right():
            return None
        return min(int((x - plot.left()) / (plot.width() / n)), n - 1)

    def bar_tooltip(self, index: int) -> str:
        day = self.days[index]
        what = "demo job(s)" if self.sandbox else "job(s)"
        return (
            f"{day:%a %d %b %Y}\n"
            f"{money_text(self.values_nusd[index])} estimated earnings\n"
            f"{self.jobs[index]} {what}"
        )

    # events

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            index = self.bar_at(event.pos().x())
            if index is None:
                QToolTip.hideText()
                event.ignore()
            else:
                QToolTip.showText(event.globalPos(), self.bar_tooltip(index), self)
            return True
        return super().event(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        index = self.bar_at(event.position().x())
        if index != self.hovered:
            self.hovered = index
            self.update()
        super().mouseMoveEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        if self.hovered is not None:
            self.hovered = None
            self.update()
        super().leaveEvent(event)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        palette = self.palette()
        text = palette.color(QPalette.ColorRole.WindowText)
        grid = QColor(text)
        grid.setAlpha(45)
        muted = QColor(text)
        muted.setAlpha(150)
        painter.setFont(self._small_font())
        metrics = painter.fontMetrics()
        plot = self.plot_rect()

        # dollar axis and gridlines
        for value, label in zip(self.ticks, self.tick_labels(), strict=True):
            y = plot.bottom() - plot.height() * value / self.axis_max
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            painter.setPen(muted)
            box = QRectF(0, y - metrics.height() / 2, plot.left() - 6, metrics.height())
            align = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            painter.drawText(box, int(align), label)

        # bars
        bar = palette.color(QPalette.ColorRole.Highlight)
        hover = bar.lighter(130)
        painter.setPen(Qt.PenStyle.NoPen)
        for i, rect in enumerate(self.bar_rects()):
            if rect.height() <= 0:
                continue
            painter.setBrush(QBrush(hover if i == self.hovered else bar))
            painter.drawRect(rect)

        # axis line and day labels: today and every 7th day before it
        painter.setPen(QPen(muted, 1))
        painter.drawLine(QPointF(plot.left(), plot.bottom()), QPointF(plot.right(), plot.bottom()))
        n = len(self.days)
        slot = plot.width() / n if n else 0
        for i, day in enumerate(self.days):
            if (n - 1 - i) % 7:
                continue
            label = "Today" if i == n - 1 else f"{day.day} {day:%b}"
            width = metrics.horizontalAdvance(label) + 6
            centre = plot.left() + (i + 0.5) * slot
            x = min(max(centre - width / 2, plot.left()), self.width() - width)
            box = QRectF(x, plot.bottom() + 3, width, metrics.height())
            painter.drawText(box, int(Qt.AlignmentFlag.AlignCenter), label)

        if not any(self.values_nusd):
            painter.setPen(muted)
            message = "No estimated earnings in the last 30 days"
            painter.drawText(plot, int(Qt.AlignmentFlag.AlignCenter), message)


# ---------------------------------------------------------------------------------------------
# Tables


class Cell(QTableWidgetItem):
    """A read-only cell that sorts by `key` (numbers as numbers, missing values first)."""

    def __init__(
        self,
        text: str,
        key: Any = None,
        *,
        numeric: bool = False,
        tooltip: str = "",
        colour: str | None = None,
    ) -> None:
        super().__init__(text)
        self.key: Any = text if key is None and not numeric else key
        self.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        if numeric:
            self.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if tooltip:
            self.setToolTip(plain_tooltip(tooltip))
        if colour is not None:
            self.setForeground(QBrush(QColor(colour)))

    def __lt__(self, other: QTableWidgetItem) -> bool:
        if isinstance(other, Cell):
            mine = (self.key is not None, self.key)
            theirs = (other.key is not None, other.key)
            try:
                return bool(mine < theirs)
            except TypeError:
                pass
        return super().__lt__(other)


def _table(
    columns: Sequence[str], name: str, parent: QWidget, *, sort_column: int, stretch_column: int
) -> QTableWidget:
    """A read-only, sortable table, sorted by `sort_column` (descending) until the user
    clicks another header."""
    table = QTableWidget(0, len(columns), parent)
    table.setObjectName(name)
    table.setHorizontalHeaderLabels(list(columns))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setAlternatingRowColors(True)
    table.verticalHeader().setVisible(False)
    table.setWordWrap(False)
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(stretch_column, QHeaderView.ResizeMode.Stretch)
    header.setSortIndicator(sort_column, Qt.SortOrder.DescendingOrder)
    return table


def _fill(table: QTableWidget, rows: Sequence[Sequence[Cell]]) -> None:
    table.setSortingEnabled(False)
    table.setRowCount(len(rows))
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            table.setItem(r, c, cell)
    table.setSortingEnabled(True)


# ---------------------------------------------------------------------------------------------
# The window


class DashboardWindow(QWidget):
    """The earnings dashboard (a non-modal top-level window; the controller keeps one)."""

    def __init__(self, controller: AppController) -> None:
        super().__init__()
        self.controller = controller
        #: The controller's ledger reader (it owns the throttle).
        self.figures = controller.figures
        self.setObjectName("dashboardWindow")
        self.setWindowIcon(app_icon())
        self.resize(1100, 780)
        #: The figures shown now (None before the first successful read).
        self.dashboard: Dashboard | None = None
        #: The live figures shown now (None without an agent).
        self.live: LiveFigures | None = None
        #: Ledger reads finished (successful or not), live ticks done: for tests.
        self.reads = 0
        self.live_ticks = 0
        #: The last read's one-line problem (None when it read fine).
        self.read_problem: str | None = None
        self.read_task: asyncio.Task[None] | None = None
        self._watching = False

        root = QVBoxLayout(self)
        head = QHBoxLayout()
        self.title = QLabel(self)
        self.title.setObjectName("dashboardTitle")
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.35)
        font.setBold(True)
        self.title.setFont(font)
        head.addWidget(self.title)
        head.addStretch(1)
        self.updated_label = QLabel(self)
        self.updated_label.setObjectName("updatedLabel")
        self.updated_label.setStyleSheet("QLabel { color: palette(placeholder-text); }")
        head.addWidget(self.updated_label)
        self.refresh_button = QPushButton("Refresh", self)
        self.refresh_button.setObjectName("refreshButton")
        self.refresh_button.setToolTip("Read the earnings ledger again")
        self.refresh_button.clicked.connect(lambda: self.refresh())
        head.addWidget(self.refresh_button)
        root.addLayout(head)

        self.sandbox_label = QLabel(SANDBOX_TEXT, self)
        self.sandbox_label.setObjectName("sandboxLabel")
        self.sandbox_label.setWordWrap(True)
        root.addWidget(self.sandbox_label)
        self.note_label = QLabel(ESTIMATE_TEXT, self)
        self.note_label.setObjectName("estimateNote")
        self.note_label.setWordWrap(True)
        root.addWidget(self.note_label)
        self.problem_label = plain(QLabel(self))
        self.problem_label.setObjectName("problemLabel")
        self.problem_label.setWordWrap(True)
        self.problem_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem_label.hide()
        root.addWidget(self.problem_label)

        root.addWidget(self._build_live())

        self.stack = QStackedWidget(self)
        self.empty_label = QLabel(NO_LEDGER_TEXT, self.stack)
        self.empty_label.setObjectName("emptyLabel")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.stack.addWidget(self.empty_label)
        self.content = self._build_content()
        self.stack.addWidget(self.content)
        root.addWidget(self.stack, 1)

        self.live_timer = QTimer(self)
        self.live_timer.setInterval(LIVE_INTERVAL_MS)
        self.live_timer.timeout.connect(self.update_live)

        self.figures.dashboardReading.connect(self._on_reading)
        self.figures.dashboardChanged.connect(self._on_read)
        controller.agentChanged.connect(self._on_agent_changed)
        self._apply_mode()
        self.update_live()
        self._show_dashboard(None)

    # ---- building ----------------------------------------------------------------------

    def _build_live(self) -> QGroupBox:
        box = QGroupBox("Live: the last 60 s, as the heartbeats report them", self)
        box.setObjectName("liveBox")
        grid = QGridLayout(box)
        self.live_labels: dict[str, QLabel] = {}
        for col, (key, title) in enumerate(LIVE_FIELDS):
            caption = QLabel(title, box)
            caption.setStyleSheet("QLabel { color: palette(placeholder-text); }")
            value = QLabel(DASH, box)
            value.setObjectName(f"live_{key}")
            font = value.font()
            font.setPointSizeF(font.pointSizeF() * 1.2)
            font.setBold(True)
            value.setFont(font)
            grid.addWidget(caption, 0, col)
            grid.addWidget(value, 1, col)
            self.live_labels[key] = value
        self.live_note = plain(QLabel(box))
        self.live_note.setObjectName("liveNote")
        self.live_note.setStyleSheet("QLabel { color: palette(placeholder-text); }")
        grid.addWidget(self.live_note, 2, 0, 1, len(LIVE_FIELDS))
        # the same GPU readings as the tray menu (the serving rules' sensors), one line each
        self.gpu_label = plain(QLabel(DASH, box))
        self.gpu_label.setObjectName("liveGpu")
        grid.addWidget(self.gpu_label, 3, 0, 1, len(LIVE_FIELDS))
        return box

    def _build_content(self) -> QWidget:
        content = QWidget(self.stack)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)

        totals = QGroupBox("Totals (earnings are estimates)", content)
        totals.setObjectName("totalsBox")
        grid = QGridLayout(totals)
        self.total_labels: dict[tuple[str, str], QLabel] = {}
        for col, period in enumerate(PERIODS, start=1):
            head = QLabel(PERIOD_LABELS[period], totals)
            head.setAlignment(Qt.AlignmentFlag.AlignRight)
            font = head.font()
            font.setBold(True)
            head.setFont(font)
            grid.addWidget(head, 0, col)
        for row, (key, title) in enumerate(TOTAL_ROWS, start=1):
            grid.addWidget(QLabel(title, totals), row, 0)
            for col, period in enumerate(PERIODS, start=1):
                label = QLabel(DASH, totals)
                label.setObjectName(f"total_{period}_{key}")
                label.setAlignment(Qt.AlignmentFlag.AlignRight)
                label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
                grid.addWidget(label, row, col)
                self.total_labels[(period, key)] = label
        grid.setColumnStretch(0, 1)
        for col in range(1, len(PERIODS) + 1):
            grid.setColumnStretch(col, 2)
        layout.addWidget(totals)

        splitter = QSplitter(Qt.Orientation.Vertical, content)
        splitter.setChildrenCollapsible(False)
        chart_box = QGroupBox(f"Estimated earnings per day, last {DAYS} days", splitter)
        chart_box.setObjectName("chartBox")
        chart_layout = QVBoxLayout(chart_box)
        self.chart = EarningsChart(chart_box)
        chart_layout.addWidget(self.chart)
        splitter.addWidget(chart_box)

        self.tabs = QTabWidget(splitter)
        self.tabs.setObjectName("dashboardTabs")
        earnings_column = MODEL_COLUMNS.index("Est. earnings")
        self.models_table = _table(
            MODEL_COLUMNS, "modelsTable", self.tabs, sort_column=earnings_column, stretch_column=0
        )
        self.recent_table = _table(
            RECENT_COLUMNS, "recentTable", self.tabs, sort_column=0, stretch_column=1
        )
        self.tabs.addTab(self.models_table, "Per model (all time)")
        self.tabs.addTab(self.recent_table, f"Last {RECENT} jobs")
        splitter.addWidget(self.tabs)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        layout.addWidget(splitter, 1)
        return content

    # ---- state -------------------------------------------------------------------------

    @property
    def sandbox(self) -> bool:
        return bool(self.controller.sandbox)

    def sources(self) -> SourcesArg:
        """Sandbox jobs in sandbox mode, else the ledger's default (coordinator jobs)."""
        return ("sandbox",) if self.sandbox else USE_DEFAULT

    def _apply_mode(self) -> None:
        sandbox = self.sandbox
        self.setWindowTitle("Use Pod earnings (sandbox)" if sandbox else "Use Pod earnings")
        self.title.setText("Earnings (sandbox demo)" if sandbox else "Earnings")
        set_tone(self.sandbox_label, SANDBOX_TEXT if sandbox else "", "warning")
        self.chart.sandbox = sandbox

    # ---- reading the ledger ------------------------------------------------------------

    def refresh(self) -> asyncio.Task[None] | None:
        """Read the ledger again in a worker thread (coalesced with a read under way).
        Returns the read's task, None when there is no ledger to read."""
        self._apply_mode()
        self._show_page()
        task = self.figures.refresh_dashboard()
        if task is None:
            if self.controller.ledger is None:
                self._set_problem(None)
            return None
        self.read_task = task
        return task

    def schedule_refresh(self) -> None:
        """Read again soon, throttled (see :meth:`LedgerFigures.schedule_dashboard`)."""
        self.figures.schedule_dashboard()

    def _on_reading(self) -> None:
        self.refresh_button.setEnabled(False)

    def _on_read(self, data: Dashboard | None, problem: str | None) -> None:
        self.reads += 1
        self.refresh_button.setEnabled(True)
        self.read_problem = problem
        if data is not None:
            self._show_dashboard(data)
        self._set_problem(problem or (data.problem if data is not None else None))

    def _watch(self, watching: bool) -> None:
        if watching != self._watching:
            self._watching = watching
            self.figures.watch_dashboard(self, watching)

    def _on_agent_changed(self) -> None:
        self._apply_mode()
        self.update_live()
        if self.isVisible():
            self.refresh()

    def _set_problem(self, problem: str | None) -> None:
        text = " ".join(problem.split()) if problem else ""  # one line
        if text != self.problem_label.text() or self.problem_label.isVisible() != bool(text):
            set_tone(self.problem_label, text, "error")

    # ---- showing -----------------------------------------------------------------------

    def _show_page(self) -> None:
        """The figures, or the empty state while there is no ledger."""
        has_ledger = self.controller.ledger is not None
        self.stack.setCurrentWidget(self.content if has_ledger else self.empty_label)

    def _show_dashboard(self, data: Dashboard | None) -> None:
        self._show_page()
        if data is None:
            if self.dashboard is None:
                self.updated_label.setText("")
            return
        self.dashboard = data
        tz = getattr(self.controller.ledger, "tz", None)
        read_at = local_time(data.generated_at, tz)
        self.updated_label.setText(f"Ledger read at {read_at:%H:%M:%S}")
        for period in PERIODS:
            self._show_totals(period, data.periods.get(period, Totals()))
        self.chart.set_days(data.per_day)
        self._show_models(data.per_model)
        self._show_recent(data.recent, tz, read_at.date())

    def _show_totals(self, period: str, totals: Totals) -> None:
        labels = self.total_labels
        labels[(period, "jobs")].setText(count_text(totals.jobs))
        labels[(period, "jobs")].setToolTip(
            f"{totals.done} done, {totals.errors} failed, {totals.cancelled} cancelled"
        )
        labels[(period, "success")].setText(rate_text(totals.success_rate))
        labels[(period, "tokens_in")].setText(count_text(totals.input_tokens))
        labels[(period, "tokens_out")].setText(count_text(totals.output_tokens))
        earnings = labels[(period, "earnings")]
        earnings.setText(money_text(totals.earnings_nusd))
        earnings.setToolTip(
            f"{exact_money_text(totals.earnings_nusd)}: your {SHARE_PERCENT} share of "
            f"{exact_money_text(totals.gross_nusd)} billed. {ESTIMATE_TEXT}"
        )

    def _byok_models(self) -> dict[str, ModelView]:
        """Models the agent serves now through a BYOK backend (OpenRouter, Venice)."""
        agent = self.controller.agent
        models = agent.snapshot().models if agent is not None else ()
        return {m.model_id: m for m in models if m.backend in REMOTE_KINDS}

    def _show_models(self, per_model: Sequence[ModelTotals]) -> None:
        byok = self._byok_models()
        rows = []
        for model in per_model:
            t = model.totals
            advertised = byok.get(model.model_id)
            name_tip = ""
            name = model.model_id
            if advertised is not None and advertised.below_cost:
                name = f"{name}  ⚠"
                name_tip = (
                    "Priced below its upstream cost: every job loses money. "
                    "Raise its price in Settings > Pricing."
                )
            cells = [
                Cell(name, model.model_id, tooltip=name_tip or model.model_id),
                Cell(count_text(t.jobs), t.jobs, numeric=True),
                Cell(rate_text(t.success_rate), t.success_rate, numeric=True),
                Cell(count_text(t.input_tokens), t.input_tokens, numeric=True),
                Cell(count_text(t.output_tokens), t.output_tokens, numeric=True),
                Cell(
                    money_text(t.earnings_nusd),
                    t.earnings_nusd,
                    numeric=True,
                    tooltip=exact_money_text(t.earnings_nusd),
                ),
                Cell(ms_text(t.median_ttfb_ms), t.median_ttfb_ms, numeric=True),
            ]
            if t.upstream_cost_nusd is not None:
                net = t.net_nusd
                cells.append(
                    Cell(
                        money_text(t.upstream_cost_nusd),
                        t.upstream_cost_nusd,
                        numeric=True,
                        tooltip=f"{exact_money_text(t.upstream_cost_nusd)} paid upstream "
                        "(BYOK), estimated",
                    )
                )
                cells.append(
                    Cell(
                        money_text(net),
                        net,
                        numeric=True,
                        colour=ERROR_COLOUR if net < 0 else None,
                        tooltip=(
                            f"{exact_money_text(net)}: estimated earnings less the upstream cost"
                            + (": this model loses money, raise its price" if net < 0 else "")
                        ),
                    )
                )
            elif advertised is not None:
                why = "the upstream price of this model is not known"
                cells.append(Cell("unknown", None, numeric=True, tooltip=why))
                cells.append(Cell("unknown", None, numeric=True, tooltip=why))
            else:
                local = "served by a local backend: no upstream cost"
                cells.append(Cell(DASH, None, numeric=True, tooltip=local))
                cells.append(Cell(DASH, None, numeric=True, tooltip=local))
            rows.append(cells)
        _fill(self.models_table, rows)
        if not per_model:
            self.models_table.setToolTip("No jobs recorded yet")
        else:
            self.models_table.setToolTip("")

    def _show_recent(self, recent: Sequence[JobRow], tz: tzinfo | None, today: date) -> None:
        rows = []
        for job in recent:
            ended = local_time(job.ended_at, tz)
            when = f"{ended:%H:%M:%S}" if ended.date() == today else f"{ended:%Y-%m-%d %H:%M}"
            colour = {"done": OK_COLOUR, "error": ERROR_COLOUR}.get(job.outcome, WARN_COLOUR)
            earnings_tip = exact_money_text(job.earnings_nusd)
            if job.outcome != "done":
                earnings_tip = "failed and cancelled jobs are not billed"
            rows.append(
                [
                    Cell(when, job.ended_at, tooltip=f"{ended:%Y-%m-%d %H:%M:%S} · {job.job_id}"),
                    Cell(job.model_id, tooltip=job.backend),
                    Cell(outcome_text(job), tooltip=job.error_message or "", colour=colour),
                    Cell(count_text(job.input_tokens), job.input_tokens, numeric=True),
                    Cell(count_text(job.output_tokens), job.output_tokens, numeric=True),
                    Cell(ms_text(job.ttfb_ms), job.ttfb_ms, numeric=True),
                    Cell(duration_text(job.duration_ms), job.duration_ms, numeric=True),
                    Cell(
                        money_text(job.earnings_nusd),
                        job.earnings_nusd,
                        numeric=True,
                        tooltip=earnings_tip,
                    ),
                ]
            )
        _fill(self.recent_table, rows)

    # ---- live figures ------------------------------------------------------------------

    def update_live(self) -> None:
        """Show the agent's rolling figures (memory only, never the disk)."""
        self.live_ticks += 1
        agent = self.controller.agent
        live = live_figures(agent.snapshot() if agent is not None else None)
        self.live = live
        labels = self.live_labels
        if live is None:
            for label in labels.values():
                label.setText(DASH)
            self.live_note.setText("The agent is not running: no live figures.")
        else:
            f = live.figures
            seen = live.jobs_in_window > 0
            labels["running"].setText(count_text(f.queue_depth))
            labels["jobs_60s"].setText(count_text(live.jobs_in_window))
            labels["tps_p50"].setText(f"{f.tokens_per_sec_p50:.1f}" if seen else DASH)
            labels["ttfb_p50"].setText(ms_text(f.p50_latency_ms) if seen else DASH)
            labels["ttfb_p95"].setText(ms_text(f.p95_latency_ms) if seen else DASH)
            labels["error_rate"].setText(rate_text(f.error_rate_60s) if seen else DASH)
            note = f"Refreshed every {LIVE_INTERVAL_MS / 1000:g} s."
            if f.last_error_at is not None:
                at = local_time(f.last_error_at, None)
                note += f" Last error: {f.last_error_code} at {at:%H:%M:%S}."
            self.live_note.setText(note)
        self.gpu_label.setText(gpu_text(self.controller))
        # a write problem the ledger reports (memory only: the attribute, not the file)
        ledger = self.controller.ledger
        problem = self.read_problem or (getattr(ledger, "problem", None) if ledger else None)
        self._set_problem(problem)

    # ---- window events -----------------------------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:
        self.update_live()
        self.live_timer.start()
        self._watch(True)
        if self.figures.dashboard_stale or self.read_task is None:
            self.refresh()
        super().showEvent(event)

    def hideEvent(self, event: QHideEvent) -> None:
        self.live_timer.stop()
        self._watch(False)
        super().hideEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.live_timer.stop()
        self._watch(False)
        super().closeEvent(event)


__all__ = [
    "DASH",
    "ESTIMATE_TEXT",
    "LIVE_INTERVAL_MS",
    "NO_GPU_TEXT",
    "REFRESH_MIN_INTERVAL_S",
    "SANDBOX_TEXT",
    "Cell",
    "DashboardWindow",
    "EarningsChart",
    "LiveFigures",
    "axis_ticks",
    "gpu_text",
    "live_figures",
    "money_text",
    "nice_step",
    "read_dashboard",
]
