"""Every way of asking a headless agent to stop, turned into one `asyncio.Event`.

SIGINT, SIGTERM and (Windows) SIGBREAK, and on Windows the console control handler (Ctrl-Break,
closing the console window, logging off, shutting down). Used by `run` and `run --sandbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Windows console control events (wincon.h).
CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT = 0, 1, 2
CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 5, 6
#: Windows ends the process 5 s after a close / logoff / shutdown event whatever the handler
#: does: the stop must be done before that.
CONSOLE_CLOSE_BUDGET_S = 4.5
#: The grace running jobs get when the console is closing (the rest of the budget is for their
#: terminal frames and the ledger).
CONSOLE_CLOSE_GRACE_S = 2.5

ConsoleHandler = Callable[[int], bool]


class StopHandlers:
    """Turns every way of asking a headless agent to stop into one `asyncio.Event`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        self.loop = loop
        self.stop = stop
        #: The console is closing: Windows kills the process within 5 s.
        self.hurry = False
        self._done = threading.Event()
        self._keep: list[Any] = []  # the ctypes callback must outlive the registration

    def request(self) -> None:
        """Thread-safe: ask the loop to stop (signal handlers, console handler thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self.stop.set)

    def stopped(self) -> None:
        """The graceful stop is complete: a blocked console handler may let Windows end us."""
        self._done.set()

    def grace(self, requested: float) -> float:
        return min(requested, CONSOLE_CLOSE_GRACE_S) if self.hurry else requested

    def console_event(self, event: int) -> bool:
        """The `SetConsoleCtrlHandler` routine (called on a thread Windows creates). For a
        close / logoff / shutdown event it blocks until the stop is complete (returning lets
        Windows end the process at once), at most :data:`CONSOLE_CLOSE_BUDGET_S`."""
        closing = event in (CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT)
        if closing:
            self.hurry = True
        self.request()
        if closing:
            self._done.wait(CONSOLE_CLOSE_BUDGET_S)
        return True  # handled: no default handler (which would end the process now)


def set_console_ctrl_handler(handler: ConsoleHandler, keep: list[Any]) -> bool:
    """Register `handler` with `SetConsoleCtrlHandler` (Windows only, through ctypes)."""
    import ctypes
    from ctypes import wintypes

    routine_type = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)  # type: ignore[attr-defined,unused-ignore]
    routine = routine_type(lambda event: bool(handler(int(event))))
    keep.append(routine)
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
    return bool(kernel32.SetConsoleCtrlHandler(routine, True))


def install_stop_handlers(
    loop: asyncio.AbstractEventLoop,
    stop: asyncio.Event,
    *,
    platform: str | None = None,
    register_console: Callable[[ConsoleHandler, list[Any]], bool] | None = None,
) -> StopHandlers:
    """SIGINT, SIGTERM and (Windows) SIGBREAK set `stop`: through the loop where it supports
    signal handlers, else (Windows' proactor loop) through `signal.signal`, which the loop
    wakes up for. On Windows the console control handler covers Ctrl-Break and closing the
    console window, logging off and shutting down. `register_console` is the seam for tests."""
    handlers = StopHandlers(loop, stop)
    signals = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGBREAK"):
        signals.append(signal.SIGBREAK)
    for sig in signals:
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            with contextlib.suppress(ValueError, OSError):  # not the main thread
                signal.signal(sig, lambda *_: handlers.request())
    if (platform or sys.platform) == "win32":
        try:
            (register_console or set_console_ctrl_handler)(handlers.console_event, handlers._keep)
        except Exception:  # no console (pythonw): nothing to close
            log.debug("no console control handler", exc_info=True)
    return handlers
