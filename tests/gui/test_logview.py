"""The log view (gui/logview.py): tails the log, filters by level, follows rotation, wraps
long lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import qasync
from PySide6.QtWidgets import QPlainTextEdit, QPushButton

from usepod_desktop.gui.logview import LogViewer

pytestmark = pytest.mark.gui


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
