"""Showing errors without blocking the loop.

- :func:`show_user_error`: a :class:`UserFacingError` (title + one line) in a non-modal box.
- :class:`ExceptionReporter`: the `sys.excepthook` (and asyncio exception handler) of the app:
  logs the traceback and shows it in one non-modal dialog that collects further tracebacks
  instead of stacking windows.

Nothing here calls `exec()` or a static `QMessageBox` helper: those run a nested Qt loop that
re-enters asyncio (qasync issues #59, #82, #174). Boxes are shown with `show()` and delete
themselves when closed.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.errors import UserFacingError

log = logging.getLogger("usepod_desktop.gui")

_open_boxes: set[QMessageBox] = set()

ExcHook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]


def show_message(
    parent: QWidget | None,
    title: str,
    text: str,
    icon: QMessageBox.Icon = QMessageBox.Icon.Information,
) -> QMessageBox:
    """A non-modal message box that deletes itself when closed (never `exec()`)."""
    box = QMessageBox(icon, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setWindowModality(Qt.WindowModality.NonModal)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    # a parentless box lives as long as Python holds it: keep it until it is closed
    _open_boxes.add(box)
    box.finished.connect(lambda _result: _open_boxes.discard(box))
    box.show()
    return box


def show_user_error(parent: QWidget | None, error: UserFacingError) -> QMessageBox:
    return show_message(parent, error.title, error.message, QMessageBox.Icon.Warning)


class TracebackDialog(QDialog):
    """One window for unexpected errors; later ones are appended, not stacked."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("tracebackDialog")
        self.setWindowTitle("Use Pod: unexpected error")
        self.setModal(False)
        self.resize(720, 420)
        layout = QVBoxLayout(self)
        self.summary = QLabel(
            "Something went wrong inside Use Pod. Serving continues where it can. "
            "The details below are also in the log file; please include them in a bug report."
        )
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        layout.addWidget(self.text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        copy = QPushButton("Copy details", self)
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(self._copy)
        buttons.rejected.connect(self.close)
        layout.addWidget(buttons)
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if self.count > 1:
            self.text.appendPlainText("\n" + "-" * 60 + "\n")
            self.setWindowTitle(f"Use Pod: {self.count} unexpected errors")
        self.text.appendPlainText(text.rstrip())

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text.toPlainText())


class ExceptionReporter:
    """`sys.excepthook` for the GUI: log, then show (non-blocking)."""

    def __init__(self) -> None:
        self.dialog: TracebackDialog | None = None
        self.reported: list[BaseException] = []
        self._previous: ExcHook | None = None

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._previous = sys.excepthook
        sys.excepthook = self.excepthook
        if loop is not None:
            loop.set_exception_handler(self.asyncio_handler)

    def uninstall(self) -> None:
        if self._previous is not None and sys.excepthook == self.excepthook:
            sys.excepthook = self._previous
        self._previous = None

    def excepthook(
        self, etype: type[BaseException], value: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(etype, KeyboardInterrupt):
            if self._previous is not None:
                self._previous(etype, value, tb)
            return
        self.reported.append(value)
        if isinstance(value, UserFacingError):
            log.warning("%s: %s", value.title, value)
            self._safely(lambda: show_user_error(None, value))
            return
        text = "".join(traceback.format_exception(etype, value, tb))
        log.error("unexpected error:\n%s", text.rstrip())
        self._safely(lambda: self._show(text))

    def asyncio_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, BaseException) and not isinstance(exc, asyncio.CancelledError):
            self.excepthook(type(exc), exc, exc.__traceback__)
        else:
            log.error("asyncio: %s", context.get("message", context))

    def _show(self, text: str) -> None:
        if self.dialog is None:
            self.dialog = TracebackDialog()
            self.dialog.finished.connect(self._closed)
        self.dialog.add(text)
        self.dialog.show()
        self.dialog.raise_()

    def _closed(self, _result: int) -> None:
        if self.dialog is not None:
            self.dialog.deleteLater()
        self.dialog = None

    @staticmethod
    def _safely(show: Callable[[], object]) -> None:
        try:
            show()
        except Exception:  # never let the error display itself raise
            log.exception("could not show the error dialog")
