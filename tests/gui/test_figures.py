"""The one throttled ledger reader (gui/figures.py) behind the tray's "today" and the dashboard:
a real ledger file, JobFinished events through the controller's bridge, the ledger's own read
methods counted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import qasync

from tests.gui.conftest import spin, until
from tests.gui.test_dashboard import NOW, QWEN, Job, controller_with, open_window, record
from usepod_desktop.core.events import JobFinished
from usepod_desktop.core.ledger import Ledger

pytestmark = pytest.mark.gui


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(tmp_path / "ledger.sqlite3", clock=lambda: NOW, tz=UTC)
    yield book
    book.close()


def count_calls(monkeypatch: pytest.MonkeyPatch, ledger: Ledger, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(ledger, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ledger, name, counting)
    return calls


def finish(controller: Any, ledger: Ledger, count: int, first_minute: int) -> None:
    """`count` jobs recorded in the ledger, then their JobFinished events all at once."""
    done = [
        Job(f"f-{first_minute + i}", QWEN, 0, (1000, 500), minute=first_minute + i)
        for i in range(count)
    ]
    record(ledger, done)
    for job in done:
        controller.bridge.jobFinished.emit(JobFinished(job.outcome))


def test_without_a_window_only_today_is_read_once_per_burst_and_the_dashboard_goes_stale(
    qloop: qasync.QEventLoop, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = controller_with(ledger)
    today_reads = count_calls(monkeypatch, ledger, "today")
    dashboard_reads = count_calls(monkeypatch, ledger, "periods")
    changed: list[int] = []
    controller.figures.todayChanged.connect(lambda: changed.append(1))
    finish(controller, ledger, 20, first_minute=10)
    until(qloop, lambda: changed, timeout=3, what="today's figures read")
    assert controller.today_summary()[0] == 20  # the ledger's figure (its clock's day)
    spin(qloop, 0.8)
    assert len(today_reads) == 1 and len(changed) == 1  # one read for 20 events
    assert dashboard_reads == [] and controller.figures.dashboard_stale
    window = open_window(qloop, controller)  # a window shown later reads what changed
    assert window.figures is controller.figures
    assert len(dashboard_reads) == 1 and not controller.figures.dashboard_stale
    assert window.total_labels[("today", "jobs")].text() == "20"


def test_two_windows_share_one_read(
    qloop: qasync.QEventLoop, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller = controller_with(ledger)
    first = open_window(qloop, controller)
    second = open_window(qloop, controller)
    dashboard_reads = count_calls(monkeypatch, ledger, "periods")
    reads = (first.reads, second.reads)
    spin(qloop, 2.1)  # past the throttle of the windows' first reads
    finish(controller, ledger, 5, first_minute=30)
    until(qloop, lambda: first.reads > reads[0], timeout=4, what="the read after the jobs")
    spin(qloop, 0.3)
    assert len(dashboard_reads) == 1  # one disk read ...
    assert (first.reads, second.reads) == (reads[0] + 1, reads[1] + 1)  # ... both windows
    for window in (first, second):
        assert window.total_labels[("today", "jobs")].text() == "5"
    # one window hidden: the other still follows the jobs; both hidden: no read at all
    second.hide()
    finish(controller, ledger, 1, first_minute=40)
    until(qloop, lambda: first.reads == reads[0] + 2, timeout=4, what="the shown window's read")
    first.hide()
    finish(controller, ledger, 1, first_minute=41)
    spin(qloop, 2.5)
    assert len(dashboard_reads) == 2 and controller.figures.dashboard_stale


def test_a_slow_read_of_today_never_overwrites_a_newer_figure(
    qloop: qasync.QEventLoop, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tray's figure once went back from 1 to 0: a read begun before a job was written
    finished after the read that counted it. Reads of today do not overlap any more."""
    import threading

    controller = controller_with(ledger)
    release = threading.Event()
    entered = threading.Event()
    original = ledger.today
    calls: list[int] = []

    def today(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        totals = original(*args, **kwargs)  # read before the job below is written ...
        if len(calls) == 1:
            entered.set()
            release.wait(10)  # ... and held back until a newer read was asked for
        return totals

    monkeypatch.setattr(ledger, "today", today)
    first = controller.figures.refresh_today()
    assert first is not None
    until(qloop, entered.is_set, timeout=5, what="the first read to begin")
    finish(controller, ledger, 1, first_minute=50)  # written, and its JobFinished
    assert controller.figures.refresh_today() is first  # joins the read under way
    release.set()
    until(qloop, lambda: len(calls) == 2, timeout=5, what="the read that follows it")
    until(qloop, lambda: controller.today_summary()[0] == 1, timeout=5, what="the newer figure")
    spin(qloop, 0.8)  # the JobFinished's throttled read comes and goes: still the newest
    assert controller.today_summary()[0] == 1


def test_a_burst_of_job_events_refreshes_the_status_a_few_times_and_ends_on_the_last_figure(
    qloop: qasync.QEventLoop,
) -> None:
    """Hundreds of job events a second used to refresh the tray's tooltip (and any status
    window) once per event on the agent's own loop; now at most once per interval, and the
    last refresh shows the figures after the last event."""
    from datetime import datetime

    from usepod_desktop.core.events import EventBus, JobStarted
    from usepod_desktop.core.executor import JobOutcome
    from usepod_desktop.gui.controller import JOB_STATUS_INTERVAL_MS

    controller = controller_with(None)
    bus = EventBus()  # as an agent's: the bridge turns its events into signals
    controller.bridge.attach(bus)
    shown: list[str] = []
    controller.statusChanged.connect(lambda: shown.append(controller.tooltip_text()))
    now = datetime.now(UTC)
    for i in range(200):
        bus.emit(JobStarted(f"b-{i}", QWEN, "vllm"))
        outcome = JobOutcome(f"b-{i}", QWEN, "vllm", "openai", now, now, 5.0, 10, 100, 50, 900)
        bus.emit(JobFinished(outcome))
    assert len(shown) == 1  # the first event, at once; the other 399 wait for the interval
    until(qloop, lambda: len(shown) == 2, timeout=5, what="the refresh after the burst")
    assert "Today: 200 job(s)" in shown[-1]
    spin(qloop, 2 * JOB_STATUS_INTERVAL_MS / 1000)
    assert len(shown) == 2  # nothing more was asked for
