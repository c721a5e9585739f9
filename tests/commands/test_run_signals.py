"""`run` (and `run --sandbox`) stop gracefully however they are asked to: the signal handlers
of the real event loop, the `signal.signal` fallback used where the loop has none (Windows'
proactor loop), and the Windows console control handler (Ctrl-Break, closing the console
window), driven on Linux through its registration seam."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from typing import Any

import pytest

from usepod_desktop.core import stopping


class NoSignalLoop(asyncio.SelectorEventLoop):
    """A loop without add_signal_handler, as Windows' ProactorEventLoop."""

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:
        raise NotImplementedError


@pytest.fixture
def restore_signals() -> Any:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_without_loop_signal_handlers_ctrl_c_still_stops_gracefully(restore_signals: Any) -> None:
    """Windows' `run --sandbox` had no fallback: Ctrl-C raised KeyboardInterrupt mid-job."""
    loop = NoSignalLoop()
    try:
        stop = asyncio.Event()

        async def main() -> bool:
            stopping.install_stop_handlers(asyncio.get_running_loop(), stop, platform="linux")
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C
            await asyncio.wait_for(stop.wait(), 5)
            return stop.is_set()

        assert loop.run_until_complete(main()) is True
    finally:
        loop.close()


def test_console_close_stops_and_waits_for_the_stop_to_finish() -> None:
    registered: list[Any] = []

    def register(handler: Any, keep: list[Any]) -> bool:
        registered.append(handler)
        return True

    loop = asyncio.new_event_loop()
    try:
        stop = asyncio.Event()
        returned: list[tuple[bool, float]] = []

        async def main() -> None:
            handlers = stopping.install_stop_handlers(
                asyncio.get_running_loop(), stop, platform="win32", register_console=register
            )
            assert registered == [handlers.console_event]
            started = time.monotonic()

            def windows_thread() -> None:  # Windows calls the routine on a new thread
                returned.append((registered[0](stopping.CTRL_CLOSE_EVENT), time.monotonic()))

            thread = threading.Thread(target=windows_thread)
            thread.start()
            await asyncio.wait_for(stop.wait(), 5)
            assert handlers.hurry and handlers.grace(10.0) == stopping.CONSOLE_CLOSE_GRACE_S
            await asyncio.sleep(0.3)  # the graceful stop at work
            assert returned == []  # still blocked: returning would let Windows end us now
            handlers.stopped()
            await asyncio.to_thread(thread.join, 5)
            assert returned and returned[0][0] is True
            assert returned[0][1] - started >= 0.3

        loop.run_until_complete(main())
    finally:
        loop.close()


def test_ctrl_break_stops_without_hurrying() -> None:
    loop = asyncio.new_event_loop()
    try:
        stop = asyncio.Event()
        handlers = stopping.StopHandlers(loop, stop)

        async def main() -> None:
            assert await asyncio.to_thread(handlers.console_event, stopping.CTRL_BREAK_EVENT)
            await asyncio.wait_for(stop.wait(), 5)

        loop.run_until_complete(main())
        assert not handlers.hurry and handlers.grace(10.0) == 10.0
    finally:
        loop.close()
