"""Coroutines started from Qt slots (gui/tasks.py): the result goes to `on_done`, a
user-facing error to `on_error`, any other error to `sys.excepthook`, a cancelled task to
nobody; every task is held until it ends."""

from __future__ import annotations

import asyncio
import gc
import sys
from types import TracebackType

import pytest
import qasync

from tests.gui.conftest import until
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.gui import tasks

pytestmark = pytest.mark.gui


def test_results_and_errors_each_go_to_their_place(
    qloop: qasync.QEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked: list[BaseException] = []

    def hook(_t: type[BaseException], exc: BaseException, _tb: TracebackType | None) -> None:
        hooked.append(exc)

    monkeypatch.setattr(sys, "excepthook", hook)
    done: list[int] = []
    shown: list[str] = []

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def refused() -> int:
        raise UserFacingError("the keyring is locked", title="Keyring")

    async def bug() -> int:
        raise ValueError("a bug")

    tasks.spawn(answer(), on_done=done.append, on_error=lambda e: shown.append(str(e)))
    tasks.spawn(refused(), on_done=done.append, on_error=lambda e: shown.append(str(e)))
    tasks.spawn(bug(), on_done=done.append, on_error=lambda e: shown.append(str(e)))
    tasks.spawn(refused())  # no on_error: a user-facing error is still not lost
    until(qloop, lambda: tasks.pending() == 0, what="all four ended")
    assert done == [42]
    assert shown == ["the keyring is locked"]
    assert [type(e) for e in hooked] == [ValueError, UserFacingError]


def test_a_spawned_task_is_held_until_it_ends_and_a_cancelled_one_reports_nothing(
    qloop: qasync.QEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooked: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda _t, exc, _tb: hooked.append(exc))
    release = asyncio.Event()
    done: list[str] = []

    async def wait() -> str:
        await release.wait()
        return "finished"

    before = tasks.pending()
    tasks.spawn(wait(), on_done=done.append)  # no reference kept here
    gc.collect()
    assert tasks.pending() == before + 1
    release.set()
    until(qloop, lambda: done == ["finished"], what="the unreferenced task finished")
    assert tasks.pending() == before

    cancelled = tasks.spawn(asyncio.sleep(3600), on_done=lambda _r: done.append("no"))
    cancelled.cancel()
    until(qloop, lambda: tasks.pending() == before, what="the cancelled task released")
    assert done == ["finished"] and hooked == []


def test_no_loop_is_available_once_it_is_gone(qapp: object) -> None:
    asyncio.set_event_loop(None)
    assert not tasks.loop_available()
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        assert tasks.loop_available()
        loop.close()
        assert not tasks.loop_available()  # a closed loop cannot take a task
    finally:
        asyncio.set_event_loop(None)
