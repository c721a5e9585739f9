"""gui/loop.py: ready asyncio callbacks run in slices, so Qt's own events get through while
many callbacks are due, in asyncio's order and none lost."""

from __future__ import annotations

import asyncio
import time

import pytest
import qasync
from PySide6.QtCore import QTimer

from tests.gui.conftest import until
from usepod_desktop.gui.loop import SlicedQEventLoop

pytestmark = pytest.mark.gui

CALLBACKS = 400
BUSY_S = 0.0005  # each callback's work: 400 of them are 200 ms of CPU


def _busy() -> None:
    end = time.perf_counter() + BUSY_S
    while time.perf_counter() < end:
        pass


def _qt_timer_position(loop: asyncio.AbstractEventLoop) -> tuple[list[int], int | None]:
    """Schedule CALLBACKS busy callbacks, then a Qt zero timer; returns the callbacks' order
    and how many had run when the Qt timer fired."""
    order: list[int] = []
    fired: list[int] = []

    def callback(i: int) -> None:
        _busy()
        order.append(i)

    timer = QTimer()  # a zero-interval timer object: a Qt timer (singleShot(0) is a posted call)
    timer.setSingleShot(True)
    timer.setInterval(0)
    timer.timeout.connect(lambda: fired.append(len(order)))

    def schedule() -> None:
        for i in range(CALLBACKS):
            loop.call_soon(callback, i)
        timer.start()

    loop.call_soon(schedule)
    until(loop, lambda: len(order) == CALLBACKS and fired, timeout=20, what="all callbacks")
    return order, fired[0]


def test_a_qt_timer_fires_between_slices_of_due_callbacks(qloop: SlicedQEventLoop) -> None:
    order, position = _qt_timer_position(qloop)
    assert order == list(range(CALLBACKS))  # asyncio's order, none lost
    assert position is not None and position < CALLBACKS // 2, position


def test_qasyncs_own_loop_runs_every_due_callback_first(qapp: object) -> None:
    """The behaviour the sliced loop exists to change (the control for the test above)."""
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        order, position = _qt_timer_position(loop)
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert order == list(range(CALLBACKS))
    assert position == CALLBACKS


def test_cancelled_callbacks_do_not_run_and_delayed_ones_keep_their_delay(
    qloop: SlicedQEventLoop,
) -> None:
    ran: list[str] = []
    handle = qloop.call_soon(ran.append, "cancelled")
    handle.cancel()
    qloop.call_soon(ran.append, "soon")
    started = time.monotonic()
    qloop.call_later(0.2, ran.append, "later")
    until(qloop, lambda: "later" in ran, timeout=5, what="the delayed callback")
    assert ran == ["soon", "later"]
    assert time.monotonic() - started >= 0.19


def test_a_failing_callback_reaches_the_exception_handler_and_the_rest_still_run(
    qloop: SlicedQEventLoop,
) -> None:
    seen: list[object] = []
    qloop.set_exception_handler(lambda _loop, context: seen.append(context.get("exception")))
    ran: list[int] = []

    def boom() -> None:
        raise ValueError("boom")

    qloop.call_soon(boom)
    qloop.call_soon(ran.append, 1)
    until(qloop, lambda: ran and seen, timeout=5, what="the callbacks")
    assert isinstance(seen[0], ValueError) and ran == [1]
    qloop.set_exception_handler(None)
