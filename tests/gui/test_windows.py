"""The smaller windows: test job, log view, error reporting, the no-tray status window; the
icon and money helpers they use; and the window registry (gui/windows.py): one window per
kind, forgotten when deleted, all closed on quit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import qasync
import shiboken6
from PySide6.QtCore import QEvent
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from tests.gui.conftest import Rig, run, until
from tests.pairing_support import probe_ports
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui import icons
from usepod_desktop.gui.errors import ExceptionReporter
from usepod_desktop.gui.logview import LogViewer
from usepod_desktop.gui.mainwindow import StatusWindow
from usepod_desktop.gui.windows import WindowRegistry

pytestmark = pytest.mark.gui


def test_test_job_streams_the_answer_with_tokens_and_time(rig: Rig) -> None:
    dialog = rig.controller.open_test_job()
    assert dialog is not None and dialog.model.count() == 2
    dialog.model.setCurrentIndex(dialog.model.findData("beta"))
    chunks: list[str] = []
    dialog.output.textChanged.connect(lambda: chunks.append(dialog.output.toPlainText()))
    task = dialog.send()
    assert task is not None and not dialog.send_button.isEnabled()
    run(rig.loop, task)
    expected = rig.fake.expected_text(rig.fake.output_tokens)
    assert dialog.answer == expected == dialog.output.toPlainText()
    assert len(chunks) > 1  # it arrived in pieces, not at the end
    stats = dialog.stats.text()
    assert f"{rig.fake.output_tokens} output tokens" in stats and "Done:" in stats
    assert dialog.send_button.isEnabled()
    assert rig.controller.today_summary()[0] == 0  # test jobs are not earnings

    dialog.format.setCurrentIndex(dialog.format.findData("anthropic"))
    run(rig.loop, dialog.send())
    assert dialog.answer == expected


def test_test_job_failure_is_shown(rig: Rig) -> None:
    dialog = rig.controller.open_test_job()
    run(rig.loop, rig.fake.set_fail_mode("error_status"))
    run(rig.loop, dialog.send())
    assert dialog.stats.text().startswith("Failed:")


def test_log_view_tails_filters_and_follows_rotation(
    qloop: qasync.QEventLoop, tmp_path: Path
) -> None:
    path = tmp_path / "usepod-desktop.log"
    opened: list[bool] = []
    view = LogViewer(path, open_folder=lambda: opened.append(True))
    view.show()
    assert "No log file yet" in view.visible_text()
    path.write_text(
        "2026-05-02 10:11:12,123 DEBUG   core.link: ping\n"
        "2026-05-02 10:11:12,124 INFO    core.agent: started\n"
        "2026-05-02 10:11:12,125 ERROR   core.executor: boom\n"
        "Traceback (most recent call last):\n"
        "  ValueError: x\n"
    )
    view.poll()
    text = view.visible_text()
    assert "started" in text and "boom" in text and "ValueError" in text and "ping" not in text
    view.set_min_level(logging.ERROR)
    assert "started" not in view.visible_text() and "ValueError" in view.visible_text()
    view.set_min_level(logging.DEBUG)
    assert "ping" in view.visible_text()
    with path.open("a") as fh:
        fh.write("2026-05-02 10:11:13,000 WARNING core.discovery: slow\n")
    view.poll()
    assert view.visible_text().endswith("slow")
    path.rename(tmp_path / "usepod-desktop.log.1")  # rotation
    path.write_text("2026-05-02 10:11:14,000 INFO    core.agent: fresh file\n")
    view.poll()
    assert view.visible_text().endswith("fresh file")
    view.findChild(QPushButton, "openLogFolder").click()
    assert opened == [True]
    view.close()


def test_log_view_wraps_long_lines_and_each_level_shows_only_its_records(
    qloop: qasync.QEventLoop, tmp_path: Path
) -> None:
    """Issue 19 item 12: long lines wrap; every filter choice shows exactly its levels."""
    path = tmp_path / "usepod-desktop.log"
    levels = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    long_reason = "vllm @ http://127.0.0.1:8000 is down (connection refused): start it " * 4
    path.write_text(
        "".join(
            f"2026-05-02 10:11:12,12{i} {name:<7} core.x: {name.lower()}-record\n"
            for i, name in enumerate(levels)
        )
        + f"2026-05-02 10:11:13,000 WARNING core.agent: {long_reason}\n"
    )
    view = LogViewer(path)
    view.resize(500, 300)
    view.show()
    view.poll()
    for choice, shown in (
        (logging.DEBUG, levels),
        (logging.INFO, levels[1:]),
        (logging.WARNING, levels[2:]),
        (logging.ERROR, levels[3:]),
    ):
        view.set_min_level(choice)
        text = view.visible_text()
        for name in levels:
            assert (f"{name.lower()}-record" in text) == (name in shown), (choice, text)
    view.set_min_level(logging.WARNING)
    assert view.text.lineWrapMode() == QPlainTextEdit.LineWrapMode.WidgetWidth
    block = view.text.document().lastBlock()
    assert long_reason.strip() in block.text()
    assert block.layout().lineCount() > 1  # wrapped, no horizontal scrolling
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        view.set_min_level(logging.DEBUG)
        assert "--log-level debug" in view.level_note.text()
        view.set_min_level(logging.INFO)
        assert view.level_note.text() == ""
    finally:
        root.setLevel(previous)
    view.close()


def test_excepthook_logs_and_shows_one_non_modal_window(
    qloop: qasync.QEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = ExceptionReporter()
    for n in range(3):
        try:
            raise RuntimeError(f"unexpected {n}")
        except RuntimeError as exc:
            reporter.excepthook(type(exc), exc, exc.__traceback__)
    dialog = reporter.dialog
    assert dialog is not None and dialog.isVisible() and not dialog.isModal()
    text = dialog.text.toPlainText()
    assert all(f"unexpected {n}" in text for n in range(3)) and dialog.count == 3
    assert "3 unexpected errors" in dialog.windowTitle()
    assert caplog.text.count("unexpected error") == 3
    dialog.close()
    until(qloop, lambda: reporter.dialog is None, what="dialog released")

    err = UserFacingError("the keyring is locked", title="Keyring unavailable")
    reporter.excepthook(type(err), err, None)
    assert reporter.dialog is None  # a user-facing error is a message, not a traceback
    shown = [
        w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()
    ]
    assert any(b.text() == "the keyring is locked" and not b.isModal() for b in shown)


def test_asyncio_errors_reach_the_reporter(qloop: qasync.QEventLoop) -> None:
    reporter = ExceptionReporter()
    reporter.install(qloop)
    try:

        async def fail() -> None:
            raise ValueError("in a task nobody awaited")

        from usepod_desktop.gui import tasks

        tasks.spawn(fail())
        until(qloop, lambda: reporter.reported, what="reported")
        assert isinstance(reporter.reported[0], ValueError)
        assert "in a task nobody awaited" in reporter.dialog.text.toPlainText()
    finally:
        reporter.uninstall()
        if reporter.dialog is not None:
            reporter.dialog.close()


def test_without_a_tray_a_status_window_shows_state_and_actions(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(tray=False)
    window = rig.controller.window
    assert isinstance(window, StatusWindow) and window.isVisible()
    assert rig.controller.tray is None
    assert window.state_label.text() == "Serving"
    window.pause_button.click()
    rig.until(lambda: window.state_label.text() == "Paused", what="paused")
    assert window.pause_button.text() == "Resume serving"
    rig.controller.notify("Lost connection", "test message", "warning")
    assert "Lost connection" in window.notice.text()
    window.close()  # without a tray, closing the window quits the app
    rig.run(rig.controller.wait_quit(), 20)
    assert rig.agent.state == AgentState.OFFLINE


def test_a_tray_that_appears_later_gets_the_icon(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(tray=False)
    controller = rig.controller
    assert controller.tray is None and controller._tray_watch is not None
    assert controller._tray_watch.isActive()  # still looking for a tray
    assert controller.check_tray(available=False) is False and controller.tray is None
    assert controller.check_tray(available=True) is True
    assert controller.tray is not None and not controller._tray_watch.isActive()
    window = controller.window
    assert isinstance(window, StatusWindow)
    window.close()  # with a tray now, closing the window no longer quits
    assert not controller.stopping


def test_icons_exist_for_every_state_in_both_variants_and_differ(qapp: QApplication) -> None:
    images = set()
    for state in AgentState:
        for variant in ("on-light", "on-dark"):
            path = icons.find_icon_file(icons.state_icon_name(state, variant))
            assert path is not None and path.suffix == ".svg"
            icon = icons.state_icon(state, variant)  # type: ignore[arg-type]
            image = icon.pixmap(22, 22).toImage()
            assert not image.isNull()
            images.add(bytes(image.constBits()))
    assert len(images) == 2 * len(AgentState)
    dark = QPalette()
    dark.setColor(QPalette.ColorRole.Window, QColor("#202020"))
    light = QPalette()
    light.setColor(QPalette.ColorRole.Window, QColor("#f0f0f0"))
    assert icons.variant_for(dark) == "on-dark" and icons.variant_for(light) == "on-light"


# ---- the window registry -------------------------------------------------------------------


def _delete_now(qapp: QApplication, widget: QWidget) -> None:
    widget.deleteLater()
    qapp.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_registry_opens_one_window_per_kind_and_a_deleted_one_anew(
    qloop: qasync.QEventLoop, qapp: QApplication
) -> None:
    registry = WindowRegistry()
    built: list[QWidget] = []
    again: list[QWidget] = []
    prepared: list[QWidget] = []

    def build() -> QWidget:
        built.append(QWidget())
        return built[-1]

    def open_it() -> QWidget:
        return registry.open("dash", build, again=again.append, prepare=prepared.append)

    first = open_it()
    assert first.isVisible() and built == [first] and again == [] and prepared == [first]
    first.showMinimized()
    assert open_it() is first  # raised, not built again
    assert not first.isMinimized() and built == [first] and again == [first]
    assert prepared == [first, first]
    other = registry.open("log", QWidget)
    assert registry.kinds() == ["dash", "log"] and registry.get("log") is other

    _delete_now(qapp, first)
    assert registry.get("dash") is None and registry.kinds() == ["log"]
    fresh = open_it()
    assert fresh is not first and built == [first, fresh] and registry.get("dash") is fresh

    registry.forget(fresh)  # closing for good: the next open builds another
    assert registry.get("dash") is None
    assert open_it() is built[-1] is not fresh
    registry.close_all()
    assert not other.isVisible() and not built[-1].isVisible()
    assert registry.get("log") is other  # closed (hidden), kept: reopening shows it again


def test_the_app_opens_one_of_each_window_and_quit_closes_them_all(rig: Rig) -> None:
    from usepod_desktop.gui.pairing import PairingWizard, open_pairing_wizard

    controller = rig.controller
    dashboard = controller.open_dashboard()
    assert controller.open_dashboard() is dashboard
    log_view = controller.open_log_view()
    assert controller.open_log_view() is log_view
    doctor = controller.open_doctor()
    assert controller.open_doctor() is doctor

    def wizard() -> PairingWizard:
        return open_pairing_wizard(
            controller, rig.coordinator.http_url, probe_ports=probe_ports(), open_url=lambda _: True
        )

    first = wizard()
    assert wizard() is first and first.isVisible()
    first.reject()  # cancelled: the wizard deletes itself, the next one is fresh
    assert controller.windows.get("pairing") is None
    rig.until(lambda: not shiboken6.isValid(first), what="the cancelled wizard deleted")
    second = wizard()
    assert second is not first and controller.windows.get("pairing") is second
    flow = second.flow
    assert flow is not None
    cancelled: list[bool] = []
    real_cancel = flow.cancel
    flow.cancel = lambda: (cancelled.append(True), real_cancel())[1]  # type: ignore[method-assign]
    assert set(controller.windows.kinds()) == {"dashboard", "log_view", "doctor", "pairing"}

    rig.run(controller.shutdown(), 20)

    assert not any(w.isVisible() for w in (dashboard, log_view, doctor))
    assert cancelled == [True]  # the wizard was closed too: its flow stops
    assert controller.windows.get("pairing") is None
