"""A list of callbacks that one failing callback cannot break: the one listener helper.

The event bus, the executor (job started / finished), the ledger (storage problem) and the
pairing flow each keep listeners. :class:`Listeners` does it once: :meth:`Listeners.add`
returns the function that removes the listener again, :meth:`Listeners.emit` calls every
listener registered at that moment (a listener may add or remove listeners while it runs)
and logs, never raises, what one of them raises, so the publisher (a job's relay, the
ledger's writer thread) goes on. Listeners run synchronously in the publisher's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Generic, ParamSpec

__all__ = ["Listeners"]

P = ParamSpec("P")

log = logging.getLogger(__name__)


class Listeners(Generic[P]):
    """Callbacks taking the arguments `P`. `what` names them in the log line of a failure."""

    __slots__ = ("_items", "_log", "what")

    def __init__(self, what: str = "listener", logger: logging.Logger | None = None) -> None:
        self.what = what
        self._log = logger or log
        self._items: list[Callable[P, object]] = []

    def add(self, listener: Callable[P, object]) -> Callable[[], None]:
        """Call `listener` on every :meth:`emit`; returns the function that removes it."""
        self._items.append(listener)

        def remove() -> None:
            self.remove(listener)

        return remove

    #: list-style spelling of :meth:`add` (``executor.on_outcome.append(f)``).
    append = add

    def remove(self, listener: Callable[P, object]) -> None:
        """Stop calling `listener` (nothing happens if it is not registered)."""
        try:
            self._items.remove(listener)
        except ValueError:
            pass

    def emit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call each listener; one that raises is logged with a traceback and skipped."""
        for listener in tuple(self._items):
            try:
                listener(*args, **kwargs)
            except Exception:
                on = type(args[0]).__name__ if args else "emit"
                self._log.exception("%s failed on %s", self.what, on)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Callable[P, object]]:
        return iter(tuple(self._items))

    def __contains__(self, listener: object) -> bool:
        return listener in self._items
