"""Running the facade's coroutines from Qt slots without blocking and without losing errors.

Under qasync the asyncio loop *is* the Qt event loop, so a slot starts a coroutine with
:func:`spawn` and returns at once. A task keeps a strong reference until it ends (asyncio only
keeps weak ones). When it fails, a :class:`UserFacingError` goes to the caller's `on_error`
(shown inline or in a non-modal box); anything else goes to `sys.excepthook`, which logs it and
shows the traceback dialog.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from usepod_desktop.core.errors import UserFacingError

log = logging.getLogger(__name__)

T = TypeVar("T")

_tasks: set[asyncio.Task[Any]] = set()


def event_loop() -> asyncio.AbstractEventLoop:
    """The running loop, else the loop installed for this thread (tests drive it in steps)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.get_event_loop_policy().get_event_loop()


def loop_available() -> bool:
    """Is there a loop :func:`spawn` can use? Timer slots ask first: a timer of a window or
    controller that outlived its loop (at exit, or between tests) must do nothing, not fail."""
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    try:
        return not asyncio.get_event_loop_policy().get_event_loop().is_closed()
    except RuntimeError:
        return False


def spawn(
    coro: Coroutine[Any, Any, T],
    *,
    name: str | None = None,
    on_error: Callable[[UserFacingError], None] | None = None,
    on_done: Callable[[T], None] | None = None,
) -> asyncio.Task[T]:
    """Start `coro` on the loop; route its result and errors (see the module docs)."""
    task = event_loop().create_task(coro, name=name)
    _tasks.add(task)

    def finished(t: asyncio.Task[T]) -> None:
        _tasks.discard(t)
        if t.cancelled():
            return
        exc = t.exception()
        if exc is None:
            if on_done is not None:
                on_done(t.result())
            return
        if isinstance(exc, UserFacingError) and on_error is not None:
            log.info("%s: %s", exc.title, exc)
            on_error(exc)
            return
        sys.excepthook(type(exc), exc, exc.__traceback__)

    task.add_done_callback(finished)
    return task


def pending() -> int:
    """How many spawned tasks are still running (for shutdown and tests)."""
    return len(_tasks)
