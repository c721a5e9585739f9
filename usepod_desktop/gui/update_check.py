"""The tray app's periodic update check: at most daily, jittered, off when the operator turns
"Check for updates" off in Settings > App. It only reads the release feed
(:mod:`usepod_desktop.core.updates`) and shows "Update available" in the tray menu; it never
downloads or installs anything."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from usepod_desktop.core import updates
from usepod_desktop.core.updates import UpdateCheckError, UpdateInfo
from usepod_desktop.gui import tasks
from usepod_desktop.gui.prefs import Prefs

log = logging.getLogger(__name__)


class UpdateWatcher(QObject):
    #: The known newest release changed (`info` holds it).
    changed = Signal()

    def __init__(
        self,
        prefs: Prefs,
        *,
        check: Callable[[], UpdateInfo] = updates.check_for_update,
        rng: random.Random | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.prefs = prefs
        self._check = check
        self._rng = rng or random.Random()
        self.info: UpdateInfo | None = None
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.timeout.connect(self.check_now)
        self._started = False

    @property
    def available(self) -> UpdateInfo | None:
        """The newer release, when there is one."""
        return self.info if self.info is not None and self.info.available else None

    def start(self) -> None:
        """Read the last answer and schedule the next check (no-op when turned off)."""
        if self._started or not self.prefs.update_check_enabled:
            return
        self._started = True
        tasks.spawn(asyncio.to_thread(updates.load_cached), name="update-cache", on_done=self._got)

    def stop(self) -> None:
        self.timer.stop()

    def check_now(self) -> None:
        if not self.prefs.update_check_enabled or not tasks.loop_available():
            return

        async def ask() -> UpdateInfo | None:
            try:
                return await asyncio.to_thread(self._check)
            except UpdateCheckError as exc:
                log.info("update check: %s", exc)
                return None

        tasks.spawn(ask(), name="update-check", on_done=self._got)

    def _got(self, info: UpdateInfo | None) -> None:
        if info is not None:
            before = self.available
            self.info = info
            if self.available != before:
                self.changed.emit()
        delay = updates.next_check_delay(self.info, rng=self._rng)
        self.timer.start(int(delay * 1000))
