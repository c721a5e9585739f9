"""Guards against a PySide6 bug that would crash a long-running tray app.

PySide6 6.12.0 on CPython < 3.12 returns `None` and `True` to Python without owning a
reference to them: every call of a method returning void (`setText`, `show`, `start`, ...)
drops one reference from `None`, and every `SignalInstance.emit()` drops one from `True`
(measured: 100 calls, -100). A GUI makes such calls all the time, and qasync emits a signal
for every `call_soon_threadsafe` (each `asyncio.to_thread` result), so after enough of them
CPython aborts with "none_dealloc: deallocating None" or "bool_dealloc". From Python 3.12 on
these objects are immortal and the bug is harmless.

:class:`RefcountGuard` detects the leak at start-up and, only when it is there, tops the
reference counts of `None`, `True` and `False` up again from a 1 s timer, long before they could
reach zero (the margin covers tens of millions of calls per second). It does nothing on a fixed
PySide6 or on Python 3.12+.
"""

from __future__ import annotations

import ctypes
import logging
import sys

from PySide6.QtCore import QObject, QTimer, Signal

log = logging.getLogger(__name__)

#: Top up when a count falls below LOW; add MARGIN.
LOW = 10_000_000
MARGIN = 100_000_000
GUARDED: tuple[object, ...] = (None, True, False)


class _Probe(QObject):
    ping = Signal()


def _counts() -> list[int]:
    return [sys.getrefcount(obj) for obj in GUARDED]


def measure_leaks(calls: int = 8) -> dict[str, int]:
    """References to None/True/False lost by `calls` void calls plus `calls` emits."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return {}
    probe = _Probe()
    before = _counts()
    for _ in range(calls):
        probe.setObjectName("probe")
        probe.ping.emit()
    after = _counts()
    lost = {repr(obj): b - a for obj, b, a in zip(GUARDED, before, after, strict=True)}
    for obj, b, a in zip(GUARDED, before, after, strict=True):
        if b > a:
            _add_refs(obj, b - a)  # give back what the probe took
    return {name: n for name, n in lost.items() if n > 0}


def _add_refs(obj: object, count: int) -> None:
    if count > 0:
        ctypes.c_ssize_t.from_address(id(obj)).value += count


class RefcountGuard(QObject):
    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.active = False
        self.leaks: dict[str, int] = {}
        self.top_ups = 0
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.check)

    def install(self) -> bool:
        """Detect the leak; when present, top up now and every second. Returns whether on."""
        self.leaks = measure_leaks()
        if not self.leaks:
            return False
        # trust the write only if the object header is what we expect (non-debug CPython)
        before = sys.getrefcount(None)
        _add_refs(None, 1)
        if sys.getrefcount(None) != before + 1:
            log.warning(
                "PySide6 leaks references to None/True (%s) and they cannot be "
                "topped up here; a long session may crash: use Python 3.12+",
                self.leaks,
            )
            return False
        self.active = True
        log.info(
            "PySide6 leaks references to %s on this Python; guarding them (Python "
            "3.12+ or a fixed PySide6 makes this unnecessary)",
            ", ".join(self.leaks),
        )
        self.check()
        self.timer.start()
        return True

    def check(self) -> None:
        for obj in GUARDED:
            if sys.getrefcount(obj) < LOW:
                _add_refs(obj, MARGIN)
                self.top_ups += 1
