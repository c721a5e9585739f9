"""One registry for the app's windows: one window per kind (settings, dashboard, diagnose, log
view, test job, pairing wizard).

:meth:`WindowRegistry.open` raises the open window of a kind or builds a fresh one; a window Qt
deletes (the pairing wizard deletes itself when it closes) is forgotten, so the next
:meth:`open` builds a new one; :meth:`close_all` closes them all when the app quits. The
no-tray status window is not one of them: it is the app's main window, which the controller
keeps itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar, cast

import shiboken6
from PySide6.QtWidgets import QWidget

log = logging.getLogger(__name__)

W = TypeVar("W", bound=QWidget)

__all__ = ["WindowRegistry", "show_window"]


def show_window(window: QWidget) -> None:
    """Show, un-minimise and raise a top-level window."""
    if window.isMinimized():
        window.showNormal()
    window.show()
    window.raise_()
    window.activateWindow()


class WindowRegistry:
    """The open windows, one per kind (a short name: "settings", "dashboard", ...)."""

    def __init__(self) -> None:
        self._windows: dict[str, QWidget] = {}

    def open(
        self,
        kind: str,
        build: Callable[[], W],
        *,
        again: Callable[[W], object] | None = None,
        prepare: Callable[[W], object] | None = None,
    ) -> W:
        """The window of `kind`, shown and raised: the open one (after `again(window)`), or a
        fresh one from `build()`. `prepare(window)` runs either way, before it is shown."""
        window = cast("W | None", self.get(kind))
        if window is None:
            window = build()
            self._add(kind, window)
        elif again is not None:
            again(window)
        if prepare is not None:
            prepare(window)
        show_window(window)
        return window

    def get(self, kind: str) -> QWidget | None:
        """The window of `kind` while it exists (shown or hidden), else None."""
        window = self._windows.get(kind)
        if window is not None and not shiboken6.isValid(window):
            del self._windows[kind]  # deleted before its `destroyed` reached us
            return None
        return window

    def forget(self, window: QWidget) -> None:
        """Stop tracking `window` (it is closing for good: the next open builds a new one)."""
        for kind, known in list(self._windows.items()):
            if known is window:
                del self._windows[kind]

    def kinds(self) -> list[str]:
        """The kinds with a window, in the order they were built."""
        return [kind for kind in list(self._windows) if self.get(kind) is not None]

    def close_all(self) -> None:
        """Close every window (quitting). A window deleted on close is forgotten with it; the
        others stay known (hidden) until the app exits."""
        for kind in self.kinds():
            window = self._windows.get(kind)
            if window is not None:
                window.close()

    def _add(self, kind: str, window: QWidget) -> None:
        self._windows[kind] = window
        key = id(window)

        def forget_deleted(_obj: object = None) -> None:
            # compared by id: the wrapper of a deleted C++ object must not be touched
            known = self._windows.get(kind)
            if known is not None and id(known) == key:
                del self._windows[kind]

        window.destroyed.connect(forget_deleted)
