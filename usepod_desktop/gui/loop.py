"""The tray app's event loop: qasync's asyncio-in-Qt loop, with ready callbacks run in slices.

qasync runs each ready asyncio callback (`call_soon`, a socket that became readable) as its own
zero-delay Qt timer, and Qt fires every timer that is due in one pass. With many jobs streaming,
one pass then runs hundreds of relay callbacks back to back (tens of milliseconds) before the
window system gets a paint, a click or a timer of the GUI's own: the tray app feels stuck while
it earns. Here ready callbacks go into one FIFO instead, drained by a single zero-delay timer
for at most :data:`SLICE_S` per pass; what is left waits for the next pass, after Qt's own
events. The order of callbacks is asyncio's (first in, first out), none is dropped, and the
relay gets the same CPU (the loop is otherwise idle). Measured in BENCHMARKS.md.

Delayed callbacks (`call_later` with a delay) stay qasync's own timers.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import qasync
from PySide6.QtCore import QTimer

#: The longest run of ready callbacks between two passes of the Qt event loop (seconds).
SLICE_S = 0.002

__all__ = ["SLICE_S", "SlicedQEventLoop"]


class SlicedQEventLoop(qasync.QEventLoop):
    """qasync's loop with ready callbacks run in slices of at most `slice_s` (see the module
    docstring). Create and use it in the GUI thread, as qasync's."""

    def __init__(self, *args: Any, slice_s: float = SLICE_S, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slice_s = slice_s
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._drainer = QTimer()
        self._drainer.setSingleShot(True)
        self._drainer.setInterval(0)
        self._drainer.timeout.connect(self._drain)

    def _add_callback(self, handle: asyncio.Handle, delay: float = 0) -> asyncio.Handle:
        if delay > 0:
            return super()._add_callback(handle, delay)
        self._ready.append(handle)
        if not self._drainer.isActive():
            self._drainer.start()
        return handle

    def _drain(self) -> None:
        ready = self._ready
        deadline = time.perf_counter() + self.slice_s
        try:
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()  # asyncio.Handle reports its callback's exception
                if time.perf_counter() >= deadline:
                    break
        finally:  # even after a KeyboardInterrupt / SystemExit, which Handle lets through
            if ready and not self.is_closed():
                self._drainer.start()  # the rest after Qt's own events

    @property
    def pending_callbacks(self) -> int:
        """Ready callbacks waiting for the next slice."""
        return len(self._ready)

    def close(self) -> None:
        super().close()
        self._drainer.stop()
        self._ready.clear()
