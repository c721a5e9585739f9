"""The pinned PySide6 keeps Python's reference counts straight.

PySide6-Essentials 6.12.0 on CPython 3.11 dropped a reference to None on every void method call
and to True on every signal emit, and a long-running tray app aborted ("bool_dealloc");
pyproject.toml pins a version without the bug. This fails if the pin is loosened onto it.
"""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication

pytestmark = pytest.mark.gui


class Probe(QObject):
    ping = Signal()


def test_void_calls_and_emits_keep_refcounts(qapp: QApplication) -> None:
    probe = Probe()
    received: list[int] = []
    probe.ping.connect(lambda: received.append(1))
    before = [sys.getrefcount(x) for x in (None, True, False)]
    for _ in range(1000):
        probe.setObjectName("probe")
        probe.ping.emit()
    after = [sys.getrefcount(x) for x in (None, True, False)]
    assert len(received) == 1000
    # a few references may come and go elsewhere; the bug lost exactly one per call
    assert all(a - b > -100 for a, b in zip(after, before, strict=True)), (before, after)
