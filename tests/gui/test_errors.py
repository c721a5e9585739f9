"""Error reporting (gui/errors.py): unexpected errors are logged and shown in one non-modal
window, user-facing errors as a message; asyncio errors reach the same reporter."""

from __future__ import annotations

import pytest
import qasync
from PySide6.QtWidgets import QApplication, QMessageBox

from tests.gui.conftest import until
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.gui.errors import ExceptionReporter

pytestmark = pytest.mark.gui


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
