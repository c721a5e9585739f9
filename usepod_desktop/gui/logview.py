"""The log window: a live tail of the log file with a level filter, and "Open log folder".

It polls the file twice a second (cheap: only the new bytes are read, at most 256 KiB per
tick) and follows rotation (a smaller or replaced file is read again from the start).
Continuation lines (tracebacks) take the level of the record they belong to.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QCloseEvent, QFontDatabase, QShowEvent, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core import paths
from usepod_desktop.core.logsetup import LOG_FILE_NAME
from usepod_desktop.gui.icons import app_icon

LEVELS: tuple[tuple[str, int], ...] = (
    ("Debug and up", logging.DEBUG),
    ("Info and up", logging.INFO),
    ("Warnings and errors", logging.WARNING),
    ("Errors only", logging.ERROR),
)
MAX_LINES = 5000
READ_LIMIT = 256 * 1024
TAIL_ON_OPEN = 128 * 1024
#: `2026-05-02 10:11:12,123 WARNING usepod...: message` (logsetup.FORMAT)
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")


def line_level(line: str) -> int | None:
    match = _RECORD.match(line)
    return logging.getLevelName(match.group(1)) if match else None


class LogViewer(QWidget):
    def __init__(
        self, path: Path | None = None, open_folder: Callable[[], object] | None = None
    ) -> None:
        super().__init__()
        self.setObjectName("logViewer")
        self.setWindowTitle("Use Pod log")
        self.setWindowIcon(app_icon())
        self.resize(900, 520)
        self.path = path or paths.log_dir() / LOG_FILE_NAME
        self._offset = 0
        self._inode: int | None = None
        self._partial = ""
        self._last_level = logging.INFO
        #: Every (level, line) read so far, newest last (the filter re-renders from it).
        self.lines: list[tuple[int, str]] = []

        layout = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show", self))
        self.level = QComboBox(self)
        self.level.setObjectName("logLevel")
        for label, value in LEVELS:
            self.level.addItem(label, value)
        self.level.setCurrentIndex(1)
        self.level.currentIndexChanged.connect(self.render)
        top.addWidget(self.level)
        #: Says when the chosen level shows less than asked (debug records are not written).
        self.level_note = QLabel("", self)
        self.level_note.setObjectName("logLevelNote")
        top.addWidget(self.level_note)
        self.where = QLabel(str(self.path), self)
        self.where.setStyleSheet("QLabel { color: palette(placeholder-text); }")
        top.addWidget(self.where, 1)
        folder = QPushButton("Open log folder", self)
        folder.setObjectName("openLogFolder")
        if open_folder is not None:
            folder.clicked.connect(lambda: open_folder())
        else:
            folder.setEnabled(False)
        top.addWidget(folder)
        layout.addLayout(top)
        self.text = QPlainTextEdit(self)
        self.text.setObjectName("logText")
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LINES)
        # long lines (tracebacks, reasons naming a backend) wrap at the window's width
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        layout.addWidget(self.text, 1)
        self.timer = QTimer(self)
        self.timer.setInterval(500)
        self.timer.timeout.connect(self.poll)

    @property
    def min_level(self) -> int:
        return int(self.level.currentData())

    def set_min_level(self, level: int) -> None:
        for i in range(self.level.count()):
            if self.level.itemData(i) == level:
                self.level.setCurrentIndex(i)

    def showEvent(self, event: QShowEvent) -> None:
        self.poll()
        self.timer.start()
        super().showEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.timer.stop()
        super().closeEvent(event)

    def poll(self) -> None:
        """Read what was appended since the last poll."""
        try:
            stat = os.stat(self.path)
        except OSError:
            if not self.lines:
                self.text.setPlainText(f"No log file yet at {self.path}")
            return
        if self._inode is not None and (stat.st_ino != self._inode or stat.st_size < self._offset):
            self._offset = 0  # rotated or truncated
            self._partial = ""
        if self._inode is None and stat.st_size > TAIL_ON_OPEN:
            self._offset = stat.st_size - TAIL_ON_OPEN  # start near the end of a long log
        self._inode = stat.st_ino
        if stat.st_size <= self._offset:
            return
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read(READ_LIMIT)
        except OSError:
            return
        first_read = not self.lines and self._offset > 0
        self._offset += len(data)
        text = self._partial + data.decode("utf-8", "replace")
        chunks = text.split("\n")
        self._partial = chunks.pop()
        if first_read and chunks:
            chunks = chunks[1:]  # the first line of a tail read is likely cut
        if not chunks:
            return
        if not self.lines:
            self.text.clear()
        fresh: list[tuple[int, str]] = []
        for line in chunks:
            level = line_level(line)
            if level is None:
                level = self._last_level
            else:
                self._last_level = level
            fresh.append((level, line))
        self.lines.extend(fresh)
        if len(self.lines) > MAX_LINES * 2:
            del self.lines[: len(self.lines) - MAX_LINES]
        self._append([line for level, line in fresh if level >= self.min_level])

    def render(self) -> None:
        written = logging.getLogger().getEffectiveLevel()
        self.level_note.setText(
            "(debug lines are written only with --log-level debug)"
            if self.min_level < written
            else ""
        )
        self.text.clear()
        self._append([line for level, line in self.lines if level >= self.min_level])

    def _append(self, lines: list[str]) -> None:
        if not lines:
            return
        bar = self.text.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        cursor = self.text.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        prefix = "\n" if not self.text.document().isEmpty() else ""
        cursor.insertText(prefix + "\n".join(lines))
        if at_end:
            bar.setValue(bar.maximum())

    def visible_text(self) -> str:
        return self.text.toPlainText()
