"""The earnings dashboard window: the live figures, the totals per period, the chart and the
tables, read through the app's one ledger reader (see the package docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import date, tzinfo
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.config import REMOTE_KINDS
from usepod_desktop.core.ledger import (
    PERIOD_LABELS,
    PERIODS,
    USE_DEFAULT,
    Dashboard,
    JobRow,
    ModelTotals,
    SourcesArg,
    Totals,
)
from usepod_desktop.core.money import SHARE_PERCENT
from usepod_desktop.gui.dashboard.chart import EarningsChart
from usepod_desktop.gui.dashboard.model import DashboardModel, LiveFigures, gpu_text, live_figures
from usepod_desktop.gui.dashboard.tables import (
    MODEL_COLUMNS,
    RECENT_COLUMNS,
    Cell,
    fill_table,
    make_table,
)
from usepod_desktop.gui.dashboard.text import (
    DASH,
    ESTIMATE_TEXT,
    NO_LEDGER_TEXT,
    SANDBOX_TEXT,
    count_text,
    duration_text,
    exact_money_text,
    local_time,
    money_text,
    ms_text,
    outcome_text,
    rate_text,
)
from usepod_desktop.gui.figures import DAYS, RECENT
from usepod_desktop.gui.icons import app_icon
from usepod_desktop.gui.widgets import ERROR_COLOUR, OK_COLOUR, WARN_COLOUR, plain, set_tone

if TYPE_CHECKING:
    from usepod_desktop.core.view import ModelView

#: The live figures (memory only) are refreshed this often while the window is shown.
LIVE_INTERVAL_MS = 2000
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


class DashboardWindow(QWidget):
    """The earnings dashboard (a non-modal top-level window; the window registry keeps one)."""

    def __init__(self, model: DashboardModel) -> None:
        super().__init__()
        #: The app as the dashboard sees it (the controller, through a small protocol).
        self.model = model
        #: The app's one ledger reader (it owns the throttle).
        self.figures = model.figures
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
        model.agentChanged.connect(self._on_agent_changed)
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
        self.models_table = make_table(
            MODEL_COLUMNS, "modelsTable", self.tabs, sort_column=earnings_column, stretch_column=0
        )
        self.recent_table = make_table(
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
        return bool(self.model.sandbox)

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
            if self.model.ledger is None:
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
        has_ledger = self.model.ledger is not None
        self.stack.setCurrentWidget(self.content if has_ledger else self.empty_label)

    def _show_dashboard(self, data: Dashboard | None) -> None:
        self._show_page()
        if data is None:
            if self.dashboard is None:
                self.updated_label.setText("")
            return
        self.dashboard = data
        tz = getattr(self.model.ledger, "tz", None)
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
        agent = self.model.agent
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
        fill_table(self.models_table, rows)
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
        fill_table(self.recent_table, rows)

    # ---- live figures ------------------------------------------------------------------

    def update_live(self) -> None:
        """Show the agent's rolling figures (memory only, never the disk)."""
        self.live_ticks += 1
        agent = self.model.agent
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
        self.gpu_label.setText(gpu_text(self.model))
        # a write problem the ledger reports (memory only: the attribute, not the file)
        ledger = self.model.ledger
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
