"""The earnings dashboard: a real ledger file filled with JobOutcome rows (expected dollars
computed here from tokens x prices x 0.8, not by the ledger), a real agent serving jobs through
the sandbox coordinator, and a damaged ledger file."""

from __future__ import annotations

import asyncio
import itertools
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import qasync
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QColor, QHelpEvent
from PySide6.QtWidgets import QApplication, QMenu, QTableWidget, QToolTip

from tests.gui.conftest import Rig, run, spin, until
from tests.gui.test_responsiveness import PROMPT, LagMeter
from usepod_desktop.core.backends.base import UpstreamPrice
from usepod_desktop.core.events import JobFinished
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.host import AgentHost
from usepod_desktop.core.ledger import Ledger
from usepod_desktop.gui.bridge import AgentBridge
from usepod_desktop.gui.controller import AppController
from usepod_desktop.gui.dashboard import (
    DASH,
    ESTIMATE_TEXT,
    MODEL_COLUMNS,
    RECENT_COLUMNS,
    DashboardWindow,
)
from usepod_desktop.gui.figures import LedgerFigures
from usepod_desktop.gui.widgets import ERROR_COLOUR
from usepod_desktop.gui.windows import show_window

pytestmark = pytest.mark.gui

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
TODAY = NOW.date()
SHARE = Fraction(4, 5)  # the provider keeps 80% of what the user is billed

QWEN = "Qwen/Qwen3-8B"
LLAMA = "llama3.1:8b"
BYOK = "meta-llama/llama-3.3-70b-instruct"
QWEN_PRICES = (400_000, 1_000_000)  # micro-USD per 1M tokens (in, out)
LLAMA_PRICES = (100_000, 200_000)
BYOK_PRICES = (500_000, 600_000)
#: What OpenRouter charges the operator for BYOK: more than the 80% share of the listing.
BYOK_UPSTREAM = (900_000, 1_200_000)


# ---- the data, and what the figures must be ------------------------------------------------


class Job:
    """One row to record, and its expected estimated earnings in exact dollars."""

    def __init__(
        self,
        job_id: str,
        model: str,
        days_ago: int,
        tokens: tuple[int, int],
        *,
        backend: str = "vllm",
        prices: tuple[int, int] = QWEN_PRICES,
        upstream: tuple[int, int] | None = None,
        error: str | None = None,
        cancelled: bool = False,
        source: str = "coordinator",
        minute: int = 0,
    ) -> None:
        self.model, self.days_ago, self.tokens = model, days_ago, tokens
        self.prices, self.upstream, self.source = prices, upstream, source
        self.error, self.cancelled = error, cancelled
        ended = NOW - timedelta(days=days_ago) + timedelta(minutes=minute)
        self.outcome = JobOutcome(
            job_id=job_id,
            model_id=model,
            backend=backend,
            format="openai",
            started_at=ended - timedelta(seconds=2),
            ended_at=ended,
            ttfb_ms=100.0 + minute,
            duration_ms=2000,
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            bytes_relayed=1024,
            error_code=error,
            message=None if error is None else f"{error} happened",
            input_per_1m=prices[0],
            output_per_1m=prices[1],
            cancelled=cancelled,
            source=source,
        )

    @property
    def done(self) -> bool:
        return self.error is None and not self.cancelled

    def billed_usd(self) -> Fraction:
        """tokens x price (micro-USD per 1M tokens), in dollars."""
        (tin, tout), (pin, pout) = self.tokens, self.prices
        return Fraction(tin * pin + tout * pout, 10**12)

    def earnings_usd(self) -> Fraction:
        return self.billed_usd() * SHARE if self.done else Fraction(0)

    def upstream_usd(self) -> Fraction:
        assert self.upstream is not None
        (tin, tout), (uin, uout) = self.tokens, self.upstream
        return Fraction(tin * uin + tout * uout, 10**12)


def jobs() -> list[Job]:
    return [
        # today: 3 served, 1 failed (Qwen); 1 cancelled (llama)
        Job("q-t1", QWEN, 0, (1000, 500), minute=1),
        Job("q-t2", QWEN, 0, (1000, 500), minute=2),
        Job("q-t3", QWEN, 0, (1000, 500), minute=3),
        Job("q-err", QWEN, 0, (1000, 20), error="backend_error", minute=4),
        Job("l-can", LLAMA, 0, (300, 10), backend="ollama", prices=LLAMA_PRICES, cancelled=True),
        # BYOK through OpenRouter, yesterday: sold below what OpenRouter charges
        *(
            Job(
                f"b-{i}",
                BYOK,
                1,
                (10_000, 2_000),
                backend="openrouter",
                prices=BYOK_PRICES,
                upstream=BYOK_UPSTREAM,
                minute=i,
            )
            for i in range(2)
        ),
        Job("q-3a", QWEN, 3, (20_000, 8_000)),
        Job("q-3b", QWEN, 3, (20_000, 8_000), minute=5),
        Job("l-5", LLAMA, 5, (10_000, 5_000), backend="ollama", prices=LLAMA_PRICES),
        Job("q-10", QWEN, 10, (200_000, 100_000)),
        Job("q-40", QWEN, 40, (1_000_000, 500_000)),  # only in "all time"
        # not paid: "Send test job", and sandbox demo jobs (shown in sandbox mode only)
        Job("test-1", QWEN, 0, (5000, 5000), source="test", minute=7),
        Job("sb-1", QWEN, 0, (7000, 3000), source="sandbox", minute=8),
        Job("sb-2", QWEN, 2, (7000, 1000), source="sandbox"),
    ]


PERIOD_DAYS = {"today": 1, "last_7_days": 7, "last_30_days": 30, "all_time": None}


def in_period(job: Job, period: str) -> bool:
    days = PERIOD_DAYS[period]
    return days is None or job.days_ago < days


def record(ledger: Ledger, rows: list[Job]) -> None:
    for job in rows:
        price = None
        if job.upstream is not None:
            price = UpstreamPrice(Decimal(job.upstream[0]), Decimal(job.upstream[1]))
        assert ledger.record(job.outcome, upstream_price=price)


def dollars(value: Fraction) -> Decimal:
    return Decimal(value.numerator) / Decimal(value.denominator)


def assert_money(text: str, expected: Fraction) -> None:
    """`text` is `expected` dollars, rounded to the decimals it shows, with enough decimals
    that a non-zero amount does not read as $0."""
    assert text.startswith("$") or text.startswith("-$"), text
    shown = text.replace("$", "").replace(",", "")
    places = len(shown.split(".")[1]) if "." in shown else 0
    want = dollars(expected).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    assert Decimal(shown) == want, (text, dollars(expected))
    if expected != 0:
        assert Decimal(shown) != 0, f"{text} hides {dollars(expected)}"


def exact(expected: Fraction) -> str:
    value = dollars(expected)
    return f"-${-value:,.9f}" if value < 0 else f"${value:,.9f}"


# ---- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(tmp_path / "ledger.sqlite3", clock=lambda: NOW, tz=UTC)
    yield book
    book.close()


@pytest.fixture
def excepthook_calls(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """Anything that reaches sys.excepthook (the app's traceback dialog) fails the test."""
    calls: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda _t, exc, _tb: calls.append(exc))
    return calls


def open_window(loop: qasync.QEventLoop, controller: AppController) -> DashboardWindow:
    """What `AppController.open_dashboard` does: one window, read when opened, shown."""
    window = DashboardWindow(controller)
    window.resize(1100, 780)
    before = window.reads
    task = window.refresh()
    show_window(window)
    if task is not None:
        until(loop, lambda: window.reads > before, what="the first ledger read")
    return window


def controller_with(ledger: Ledger | None, *, sandbox: bool = False) -> AppController:
    controller = AppController(open_url=lambda _u: True)
    controller.ledger = ledger
    controller.sandbox = sandbox
    return controller


def cells(table: QTableWidget, row: int) -> dict[str, Any]:
    headers = [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())]
    return {h: table.item(row, c) for c, h in enumerate(headers)}


def rows_by(table: QTableWidget, column: str) -> dict[str, dict[str, Any]]:
    out = {}
    for r in range(table.rowCount()):
        row = cells(table, r)
        out[row[column].text()] = row
    return out


# ---- a real ledger, rendered ----------------------------------------------------------------


def test_totals_chart_and_tables_show_the_ledger(
    qloop: qasync.QEventLoop, ledger: Ledger, excepthook_calls: list[BaseException]
) -> None:
    data = jobs()
    record(ledger, data)
    window = open_window(qloop, controller_with(ledger))
    paid = [j for j in data if j.source == "coordinator"]

    # everything money is labelled as an estimate; not a sandbox window
    assert window.note_label.isVisible()
    assert window.note_label.text() == (
        "Estimated: the coordinator settles the payout from its own token count."
    )
    assert ESTIMATE_TEXT == window.note_label.text()
    assert not window.sandbox_label.isVisible() and "sandbox" not in window.windowTitle()
    assert not window.problem_label.isVisible()
    assert window.stack.currentWidget() is window.content

    # totals per period, from tokens x prices x 0.8
    for period in ("today", "last_7_days", "last_30_days", "all_time"):
        chosen = [j for j in paid if in_period(j, period)]
        label = window.total_labels
        assert label[(period, "jobs")].text() == f"{len(chosen):,}", period
        done = sum(j.done for j in chosen)
        failed = sum(j.error is not None for j in chosen)
        rate = Fraction(done, done + failed)
        assert label[(period, "success")].text() == f"{float(rate) * 100:.1f} %", period
        assert label[(period, "tokens_in")].text() == f"{sum(j.tokens[0] for j in chosen):,}"
        assert label[(period, "tokens_out")].text() == f"{sum(j.tokens[1] for j in chosen):,}"
        earned = sum((j.earnings_usd() for j in chosen), Fraction(0))
        money = label[(period, "earnings")]
        assert_money(money.text(), earned)
        assert money.toolTip().startswith(exact(earned)), (period, money.toolTip())
        assert "80%" in money.toolTip() and ESTIMATE_TEXT in money.toolTip()
    # spelled out for today: 3 jobs x (1000 x $0.40 + 500 x $1.00) / 1M x 0.8 = $0.00216
    assert window.total_labels[("today", "earnings")].toolTip().startswith("$0.002160000")
    assert window.total_labels[("today", "jobs")].text() == "5"  # 3 done, 1 failed, 1 cancelled
    assert window.total_labels[("today", "success")].text() == "75.0 %"

    # the chart: 30 bars, one per local day, heights in proportion to the day's earnings
    chart = window.chart
    expected = [
        sum((j.earnings_usd() for j in paid if j.days_ago == 29 - i), Fraction(0))
        for i in range(30)
    ]
    assert chart.days == [TODAY - timedelta(days=29 - i) for i in range(30)]
    assert [Fraction(v, 10**9) for v in chart.values_nusd] == expected
    rects = chart.bar_rects()
    assert len(rects) == 30
    tallest = max(range(30), key=lambda i: expected[i])
    assert expected[tallest] == Fraction(200_000 * 400_000 + 100_000 * 1_000_000, 10**12) * SHARE
    for i, rect in enumerate(rects):
        want = float(expected[i] / expected[tallest]) * rects[tallest].height()
        assert rect.height() == pytest.approx(want, abs=1e-6), i
    assert rects[tallest].height() > 40  # a real bar, not a sliver
    assert sum(r.height() > 0 for r in rects) == 5  # today, 1, 3, 5 and 10 days ago
    assert rects[29].height() > 0 and rects[28].height() > 0 and rects[27].height() == 0
    # the dollar axis reaches past the tallest bar and reads in dollars
    labels = chart.tick_labels()
    assert labels[0].startswith("$0.") and all(t.startswith("$") for t in labels)
    assert Decimal(labels[-1][1:]) >= dollars(expected[tallest])
    # a tooltip per bar, the money matching the day
    today_tip = chart.bar_tooltip(29)
    assert "$0.002160 estimated" in today_tip and "5 job(s)" in today_tip
    assert f"{TODAY:%d %b %Y}" in today_tip and "estimated" in today_tip
    centre = rects[tallest].center().toPoint()
    assert chart.bar_at(centre.x()) == tallest
    help_event = QHelpEvent(QEvent.Type.ToolTip, centre, chart.mapToGlobal(centre))
    QApplication.sendEvent(chart, help_event)
    assert QToolTip.text() == chart.bar_tooltip(tallest)
    # and the bars are really painted where bar_rects says
    image = chart.grab().toImage()
    bar_colour = chart.palette().color(chart.palette().ColorRole.Highlight)
    assert QColor(image.pixel(centre)) == bar_colour
    empty = rects[27].center().toPoint()
    assert QColor(image.pixel(empty.x(), int(rects[tallest].top()) + 2)) != bar_colour

    # per model (all time): earnings, success, tokens, median first byte; BYOK costs
    table = window.models_table
    assert table.rowCount() == 3
    assert [table.horizontalHeaderItem(c).text() for c in range(9)] == list(MODEL_COLUMNS)
    by_model = rows_by(table, "Model")
    assert set(by_model) == {QWEN, LLAMA, BYOK}
    for model, row in by_model.items():
        mine = [j for j in paid if j.model == model]
        assert row["Jobs"].text() == str(len(mine))
        assert_money(row["Est. earnings"].text(), sum((j.earnings_usd() for j in mine), Fraction()))
        assert row["Tokens in"].text() == f"{sum(j.tokens[0] for j in mine):,}"
        done = sum(j.done for j in mine)
        finished = done + sum(j.error is not None for j in mine)
        assert row["Success"].text() == f"{done / finished * 100:.1f} %"
        median = statistics.median(j.outcome.ttfb_ms for j in mine)
        assert row["Median first byte"].text() == f"{median:.0f} ms"
    assert by_model[QWEN]["Success"].text() == "87.5 %"  # 7 done, 1 failed
    assert by_model[LLAMA]["Success"].text() == "100.0 %"  # a cancelled job is neither
    byok_jobs = [j for j in paid if j.model == BYOK]
    upstream = sum((j.upstream_usd() for j in byok_jobs), Fraction())
    net = sum((j.earnings_usd() for j in byok_jobs), Fraction()) - upstream
    assert net < 0  # 2 x (10,000 x $0.50 + 2,000 x $0.60)/1M x 0.8 < 2 x $0.0114 upstream
    byok = by_model[BYOK]
    assert_money(byok["Est. upstream cost"].text(), upstream)
    assert_money(byok["Est. net margin"].text(), net)
    assert byok["Est. net margin"].text().startswith("-$")
    assert byok["Est. net margin"].foreground().color() == QColor(ERROR_COLOUR)
    assert byok["Est. net margin"].toolTip().startswith(exact(net))
    for local in (QWEN, LLAMA):  # no upstream cost for local backends
        assert by_model[local]["Est. upstream cost"].text() == DASH
        assert by_model[local]["Est. net margin"].foreground().color() != QColor(ERROR_COLOUR)
    # highest estimated earnings first
    assert table.item(0, 0).text() == QWEN

    # the last jobs, newest first, with their outcome
    recent = window.recent_table
    assert [recent.horizontalHeaderItem(c).text() for c in range(8)] == list(RECENT_COLUMNS)
    assert recent.rowCount() == len(paid)
    listed = [cells(recent, r) for r in range(recent.rowCount())]
    outcomes = [row["Outcome"].text() for row in listed]
    assert outcomes.count("done") == len(paid) - 2
    assert outcomes.count("error: backend_error") == 1 and outcomes.count("cancelled") == 1
    failed_row = next(row for row in listed if row["Outcome"].text().startswith("error"))
    assert failed_row["Model"].text() == QWEN and failed_row["Est. earnings"].text() == "$0.00"
    assert failed_row["Outcome"].toolTip() == "backend_error happened"
    assert listed[-1]["Model"].text() == QWEN and listed[-1]["Tokens in"].text() == "1,000,000"
    ended = [row["Ended"].data(Qt.ItemDataRole.DisplayRole) for row in listed]
    assert ended[0] == "12:04:00"  # the failed one, four minutes after NOW: newest
    assert_money(listed[1]["Est. earnings"].text(), paid[2].earnings_usd())
    assert excepthook_calls == []


def test_sandbox_mode_says_the_figures_are_demo_figures(
    qloop: qasync.QEventLoop, ledger: Ledger
) -> None:
    data = jobs()
    record(ledger, data)
    window = open_window(qloop, controller_with(ledger, sandbox=True))
    assert window.sandbox_label.isVisible()
    assert "sandbox (demo) figures" in window.sandbox_label.text()
    assert "sandbox" in window.windowTitle() and "demo" in window.title.text()
    demo = [j for j in data if j.source == "sandbox"]
    assert window.total_labels[("all_time", "jobs")].text() == str(len(demo))
    assert window.total_labels[("today", "jobs")].text() == "1"
    assert_money(
        window.total_labels[("all_time", "earnings")].text(),
        sum((j.earnings_usd() for j in demo), Fraction()),
    )
    assert window.recent_table.rowCount() == 2
    assert "demo job(s)" in window.chart.bar_tooltip(29)


def test_no_ledger_is_a_clear_empty_state(
    qloop: qasync.QEventLoop, excepthook_calls: list[BaseException]
) -> None:
    window = open_window(qloop, controller_with(None))
    assert window.refresh() is None
    assert window.stack.currentWidget() is window.empty_label
    assert window.empty_label.isVisible()
    assert "No earnings ledger yet" in window.empty_label.text()
    assert not window.problem_label.isVisible()
    # no agent: no live figures, and it says why
    assert all(label.text() == DASH for label in window.live_labels.values())
    assert "not running" in window.live_note.text()
    assert window.reads == 0 and excepthook_calls == []


def test_a_damaged_ledger_shows_one_problem_line(
    qloop: qasync.QEventLoop, tmp_path: Path, excepthook_calls: list[BaseException]
) -> None:
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"this is not a database, it was overwritten by accident\n" * 200)
    book = Ledger(path, clock=lambda: NOW, tz=UTC)
    try:
        window = open_window(qloop, controller_with(book))
        assert window.reads == 1
        assert window.problem_label.isVisible()
        text = window.problem_label.text()
        assert "damaged" in text and str(path) in text and "\n" not in text
        assert window.problem_label.styleSheet().count(ERROR_COLOUR) == 1
        assert window.dashboard is None  # nothing made up
        assert window.total_labels[("today", "earnings")].text() == DASH
        assert window.isVisible() and excepthook_calls == []
        # the live tick keeps the line (it reads the ledger's problem from memory)
        window.update_live()
        assert window.problem_label.isVisible() and window.problem_label.text() == text
        # Refresh tries again, and says the same, still without a crash
        window.refresh_button.click()
        until(qloop, lambda: window.reads == 2, what="second read")
        assert window.problem_label.text() == text and excepthook_calls == []
    finally:
        book.close()


def test_reads_run_in_a_worker_thread_and_the_loop_keeps_going(
    qloop: qasync.QEventLoop, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = jobs()
    record(ledger, data)
    threads: list[int] = []
    original = ledger.per_model

    def slow_per_model(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        time.sleep(0.6)  # a slow disk
        return original(*args, **kwargs)

    monkeypatch.setattr(ledger, "per_model", slow_per_model)
    window = DashboardWindow(controller_with(ledger))
    ticks: list[float] = []

    async def watch() -> None:
        task = window.refresh()
        assert task is not None and not window.refresh_button.isEnabled()
        while not task.done():
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    run(qloop, watch())
    assert threads and threading.get_ident() not in threads
    assert len(ticks) > 25  # the loop ran on while the ledger was read
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.3
    assert window.reads == 1 and window.refresh_button.isEnabled()
    paid = [j for j in data if j.source == "coordinator"]
    assert window.total_labels[("all_time", "jobs")].text() == str(len(paid))


def test_job_finished_refreshes_at_most_every_two_seconds(
    qloop: qasync.QEventLoop, ledger: Ledger
) -> None:
    controller = controller_with(ledger)
    window = open_window(qloop, controller)
    assert window.reads == 1 and window.total_labels[("today", "jobs")].text() == "0"
    extra = [Job(f"n-{i}", QWEN, 0, (1000, 500), minute=10 + i) for i in range(20)]
    record(ledger, extra)
    started = time.monotonic()
    for job in extra:  # 20 jobs end at once
        controller.bridge.jobFinished.emit(JobFinished(job.outcome))
    spin(qloop, 0.5)
    assert window.reads == 1  # the first read was just now: wait for the 2 s to pass
    until(qloop, lambda: window.reads == 2, timeout=4, what="the throttled read")
    assert time.monotonic() - started >= 1.4
    assert window.total_labels[("today", "jobs")].text() == "20"
    spin(qloop, 2.3)
    assert window.reads == 2  # one read for 20 events
    # a test job ("Send test job") is not in the figures: no read for it
    test_job = Job("t", QWEN, 0, (1, 1), source="test")
    controller.bridge.jobFinished.emit(JobFinished(test_job.outcome))
    spin(qloop, 0.3)
    assert window.reads == 2
    # the Refresh button reads at once
    window.refresh_button.click()
    until(qloop, lambda: window.reads == 3, timeout=1, what="Refresh")
    # while hidden: no reads; shown again: one read of what changed meanwhile
    window.hide()
    record(ledger, [Job("late", QWEN, 0, (1000, 500), minute=40)])
    controller.bridge.jobFinished.emit(JobFinished(Job("x", QWEN, 0, (1, 1)).outcome))
    spin(qloop, 2.5)
    assert window.reads == 3
    show_window(window)
    until(qloop, lambda: window.reads == 4, timeout=2, what="read on show")
    assert window.total_labels[("today", "jobs")].text() == "21"


# ---- a real agent serving jobs through the sandbox coordinator ------------------------------


def test_window_follows_jobs_served_by_a_real_agent(
    rig_factory: Callable[..., Rig], excepthook_calls: list[BaseException]
) -> None:
    # ~2 s per job (80 tokens at 40 tokens/s), so the live figures catch them running
    rig = rig_factory(tokens_per_second=40, output_tokens=80)
    controller = rig.controller
    assert controller.ledger is not None
    disk_reads: list[str] = []
    for name in ("periods", "per_model", "per_day", "recent"):
        original = getattr(controller.ledger, name)

        def counting(*a: Any, _name: str = name, _f: Any = original, **k: Any) -> Any:
            disk_reads.append(_name)
            return _f(*a, **k)

        setattr(controller.ledger, name, counting)

    window = open_window(rig.loop, controller)
    assert window.total_labels[("today", "jobs")].text() == "0"
    assert window.live_labels["running"].text() == "0"
    assert window.live_labels["jobs_60s"].text() == "0"
    # the live figures tick every ~2 s from memory: no ledger read for them
    reads, ticks, disk = window.reads, window.live_ticks, len(disk_reads)
    spin(rig.loop, 2.3)
    assert window.live_ticks > ticks and window.reads == reads and len(disk_reads) == disk

    prompt = {"messages": [{"role": "user", "content": "count to ten"}]}
    handles = [rig.run(rig.coordinator.dispatch(m, prompt)) for m in ("alpha", "beta", "alpha")]
    rig.until(
        lambda: window.live_labels["running"].text() not in ("0", DASH),
        timeout=5,
        what="jobs running in the live figures",
    )
    assert int(window.live_labels["running"].text()) <= 3
    for handle in handles:
        rig.run(handle.wait(20))
        assert handle.ok, handle.terminal
    before = window.reads
    rig.until(
        lambda: window.total_labels[("today", "jobs")].text() == "3",
        timeout=6,
        what="the window to show the 3 jobs after JobFinished",
    )
    assert window.reads > before
    assert window.reads - before <= 2  # three events, throttled
    by_model = rows_by(window.models_table, "Model")
    assert by_model["alpha"]["Jobs"].text() == "2" and by_model["beta"]["Jobs"].text() == "1"
    assert [cells(window.recent_table, r)["Outcome"].text() for r in range(3)] == ["done"] * 3
    # tokens x the agent.toml prices ($0.50 / $0.75 per 1M) x 0.8, from the ledger's rows
    rows = list(controller.ledger.rows())
    expected = sum(
        (
            Fraction(r.input_tokens * 500_000 + r.output_tokens * 750_000, 10**12) * SHARE
            for r in rows
        ),
        Fraction(),
    )
    assert all(r.output_tokens == 80 for r in rows)
    assert_money(window.total_labels[("today", "earnings")].text(), expected)
    # the live figures saw them: 3 jobs in the window, a tokens/s and first-byte figure
    rig.until(lambda: window.live_labels["jobs_60s"].text() == "3", timeout=5, what="live jobs")
    assert window.live_labels["running"].text() == "0"
    assert float(window.live_labels["tps_p50"].text()) > 0
    assert window.live_labels["ttfb_p50"].text().endswith("ms")
    assert window.live_labels["error_rate"].text() == "0.0 %"
    assert not window.problem_label.isVisible() and excepthook_calls == []


def test_open_while_32_jobs_stream_keeps_the_loop_and_the_jobs_going(
    rig_factory: Callable[..., Rig],
    caplog: pytest.LogCaptureFixture,
    excepthook_calls: list[BaseException],
) -> None:
    caplog.set_level(logging.WARNING)
    rig = rig_factory(tokens_per_second=75, output_tokens=150, max_concurrent=64)
    meter = LagMeter()

    async def stream() -> tuple[list[Any], DashboardWindow]:
        handles = [
            await rig.coordinator.dispatch(("alpha", "beta")[i % 2], PROMPT) for i in range(32)
        ]
        window = DashboardWindow(rig.controller)  # opened from a coroutine, as a slot would
        window.refresh()
        show_window(window)
        await asyncio.gather(*(h.wait(60) for h in handles))
        return handles, window

    meter.start()
    started = time.monotonic()
    handles, window = rig.run(stream(), 60)
    elapsed = time.monotonic() - started
    lag = meter.stop()
    assert all(h.ok for h in handles), [h.terminal for h in handles if not h.ok]
    assert lag["p99_ms"] < 250
    rig.until(
        lambda: window.total_labels[("today", "jobs")].text() == "32",
        timeout=6,
        what="all 32 jobs in the window",
    )
    # 32 JobFinished events, at most one read per 2 s (plus the first and the last)
    assert 2 <= window.reads <= elapsed / 2 + 3
    assert "Cannot enter into task" not in caplog.text and excepthook_calls == []


def test_controller_opens_one_dashboard_and_raises_it_again(rig: Rig) -> None:
    controller = rig.controller
    if not hasattr(controller, "open_dashboard"):
        pytest.skip("AppController.open_dashboard is not wired yet")
    from usepod_desktop.gui.tray import find_action, populate_menu

    menu = QMenu()
    populate_menu(menu, controller)
    action = find_action(menu, "action_dashboard")
    assert action is not None and action.isEnabled()
    action.trigger()
    rig.until(
        lambda: isinstance(controller.windows.get("dashboard"), DashboardWindow), what="dashboard"
    )
    window = controller.windows.get("dashboard")
    assert isinstance(window, DashboardWindow)
    rig.until(lambda: window.reads >= 1, what="read on open")
    assert window.isVisible()
    reads = window.reads
    window.showMinimized()
    again = controller.open_dashboard()
    assert again is window and not window.isMinimized()
    rig.until(lambda: window.reads > reads, what="read again when opened again")
    menu.deleteLater()


class SmallModel(QObject):
    """Only what :class:`DashboardModel` names (no AppController): the window must need no
    more of the app than that protocol."""

    agentChanged = Signal()

    def __init__(self, ledger: Ledger, *, sandbox: bool) -> None:
        super().__init__()
        self.agent: Any = None
        self.sandbox = sandbox
        self.host = AgentHost(ledger=ledger)
        self.bridge = AgentBridge(self)
        self.figures = LedgerFigures(
            self.host, self.bridge, sandbox=lambda: self.sandbox, stopping=lambda: False
        )

    @property
    def ledger(self) -> Ledger | None:
        return self.host.ledger

    def gpu_lines(self) -> list[str]:
        return ["GPU: 40 °C"]


def test_the_window_needs_only_the_dashboard_model(
    qloop: qasync.QEventLoop, ledger: Ledger
) -> None:
    data = jobs()
    record(ledger, data)
    model = SmallModel(ledger, sandbox=False)
    window = open_window(qloop, model)  # type: ignore[arg-type]
    paid = [j for j in data if j.source == "coordinator"]
    assert window.total_labels[("all_time", "jobs")].text() == str(len(paid))
    assert window.windowTitle() == "Use Pod earnings"
    assert window.gpu_label.text() == f"GPU: {DASH}"  # no agent: no GPU lines asked for
    assert window.live_labels["running"].text() == DASH

    model.sandbox = True  # the app restarted in sandbox mode: the window follows the signal
    model.agentChanged.emit()
    until(qloop, lambda: window.windowTitle() == "Use Pod earnings (sandbox)", what="mode")
    sandbox_jobs = [j for j in data if j.source == "sandbox"]
    until(
        qloop,
        lambda: window.total_labels[("all_time", "jobs")].text() == str(len(sandbox_jobs)),
        what="the sandbox figures read again",
    )
    window.close()
