"""The refcount guard keeps a long session alive on a PySide6 that leaks references."""

from __future__ import annotations

import sys

import pytest
from PySide6.QtWidgets import QApplication, QLabel

from usepod_desktop.gui.pyside_fixes import LOW, RefcountGuard, _Probe, measure_leaks

pytestmark = pytest.mark.gui


def test_measure_leaks_matches_what_a_loop_of_calls_does(qapp: QApplication) -> None:
    probe = _Probe()
    before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(50):
        probe.setObjectName("x")
        probe.ping.emit()
    lost_none = before[0] - sys.getrefcount(None)
    lost_true = before[1] - sys.getrefcount(True)
    leaks = measure_leaks()
    assert (leaks.get("None", 0) > 0) == (lost_none >= 50)
    assert (leaks.get("True", 0) > 0) == (lost_true >= 50)


def test_a_million_calls_leave_none_and_true_alive(qapp: QApplication) -> None:
    guard = RefcountGuard()
    guard.install()
    label = QLabel()
    probe = _Probe()
    for _ in range(1_000_000):
        label.setText("x")  # returns None
        probe.ping.emit()  # returns True
    guard.check()
    assert sys.getrefcount(None) > LOW or not guard.active
    assert sys.getrefcount(True) > LOW or not guard.active
