"""The GUI loop is the agent's loop: it must keep ticking while jobs stream, and opening any
window or dialog (never with a nested `exec()`) must not disturb the jobs."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QDialog

from tests.gui.conftest import Rig
from usepod_desktop.gui.errors import ExceptionReporter, show_message
from usepod_desktop.gui.settings import TAB_NAMES, SettingsWindow
from usepod_desktop.gui.test_job import TestJobDialog

pytestmark = pytest.mark.gui

JOBS = 32
PROMPT = {"messages": [{"role": "user", "content": "stream please"}], "max_tokens": 512}


class LagMeter:
    """A 10 ms precise timer; lag = how late each tick came."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks.clear()
        self.timer.start()

    def stop(self) -> dict[str, float]:
        self.timer.stop()
        gaps = [b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False)]
        lags = sorted(max(0.0, gap - 0.010) * 1000 for gap in gaps)
        assert len(lags) > 50, "the timer hardly ticked: the loop was blocked"
        return {
            "ticks": len(lags),
            "p50_ms": statistics.median(lags),
            "p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
            "max_ms": lags[-1],
        }


async def _stream(rig: Rig, during: Callable[[], object] | None = None) -> list:
    models = ["alpha", "beta"]
    handles = [await rig.coordinator.dispatch(models[i % 2], PROMPT) for i in range(JOBS)]
    if during is not None:
        result = during()
        if asyncio.iscoroutine(result):
            await result
    await asyncio.gather(*(h.wait(60) for h in handles))
    return handles


def _check_jobs(rig: Rig, handles: list) -> None:
    from usepod_desktop.sandbox.answers import extract_text

    expected = rig.fake.expected_text(rig.fake.output_tokens)
    assert len(handles) == JOBS
    for handle in handles:
        assert handle.ok, handle.terminal
        assert not handle.late_frames
        assert extract_text(handle.data) == expected


def test_gui_loop_keeps_responding_while_32_jobs_stream(
    rig_factory: Callable[..., Rig], capsys: pytest.CaptureFixture[str]
) -> None:
    rig = rig_factory(tokens_per_second=75, output_tokens=150, max_concurrent=64)
    rig.controller.open_settings("backends")  # live widgets updating while jobs run
    meter = LagMeter()
    meter.start()
    started = time.perf_counter()
    handles = rig.run(_stream(rig), 60)
    elapsed = time.perf_counter() - started
    figures = meter.stop()
    _check_jobs(rig, handles)
    assert rig.controller.today_summary()[0] == JOBS or rig.controller.today.jobs == JOBS
    with capsys.disabled():
        print(
            f"\nGUI loop lag with {JOBS} jobs streaming ({elapsed:.2f} s, "
            f"{figures['ticks']} ticks of 10 ms): p50 {figures['p50_ms']:.1f} ms, "
            f"p99 {figures['p99_ms']:.1f} ms, max {figures['max_ms']:.1f} ms"
        )
    assert figures["p99_ms"] < 250


def test_every_window_and_dialog_opens_while_jobs_stream(
    rig_factory: Callable[..., Rig],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING)
    rig = rig_factory(tokens_per_second=40, output_tokens=60, max_concurrent=64)
    controller = rig.controller
    opened: list[str] = []

    async def probe_nothing() -> list:
        await asyncio.sleep(0.05)
        return []

    monkeypatch.setattr(rig.agent, "probe_local", probe_nothing)

    async def open_everything() -> None:
        # every window / dialog, from inside a coroutine, as an asyncSlot would
        tray = controller.tray
        assert tray is not None
        tray.menu.aboutToShow.emit()
        opened.append("tray menu")
        settings = controller.open_settings()
        assert isinstance(settings, SettingsWindow)
        for name in TAB_NAMES:
            settings.select_tab(name)
            await asyncio.sleep(0.02)
            opened.append(f"settings:{name}")
        add = settings.backends_tab.add()
        assert add.isVisible()
        await asyncio.sleep(0.05)
        add.reject()
        opened.append("backend dialog")
        settings.backends_tab.detect()
        await asyncio.sleep(0.1)
        opened.append("detect")
        settings.pricing_tab.default_in.setText("oops")
        assert settings.apply() is False  # the invalid-field path, while streaming
        settings.pricing_tab.default_in.setText("0.50")
        opened.append("apply refused")
        dialog = controller.open_test_job()
        assert isinstance(dialog, TestJobDialog)
        task = dialog.send()
        assert task is not None
        opened.append("test job")
        log_view = controller.open_log_view()
        assert log_view.isVisible()
        opened.append("log view")
        reporter = ExceptionReporter()
        try:
            raise RuntimeError("boom while streaming")
        except RuntimeError as exc:
            reporter.excepthook(type(exc), exc, exc.__traceback__)
        assert reporter.dialog is not None and reporter.dialog.isVisible()
        assert not reporter.dialog.isModal()
        opened.append("traceback dialog")
        box = show_message(None, "Hello", "A message box, shown without exec()")
        assert box.isVisible()
        opened.append("message box")
        status = controller.show_status_window()
        assert status.isVisible()
        opened.append("status window")
        await task
        assert dialog.result is not None and dialog.result.outcome.ok
        assert dialog.answer.startswith("tok")
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QDialog) and widget.isVisible():
                widget.close()

    handles = rig.run(_stream(rig, open_everything), 60)
    _check_jobs(rig, handles)
    assert opened == [
        "tray menu",
        *(f"settings:{n}" for n in TAB_NAMES),
        "backend dialog",
        "detect",
        "apply refused",
        "test job",
        "log view",
        "traceback dialog",
        "message box",
        "status window",
    ]
    assert "Cannot enter into task" not in caplog.text
    assert "could not send" not in caplog.text
