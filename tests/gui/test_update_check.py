"""The periodic update check (gui/update_check.py): off when the operator turned it off, only
"available" for a release newer than this one, the next check scheduled after each answer, and
nothing at all once its event loop is gone. The check itself is injected (no network)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import qasync

from tests.gui.conftest import until
from usepod_desktop import __version__
from usepod_desktop.core.updates import UpdateCheckError, UpdateInfo
from usepod_desktop.gui.prefs import NOTIFICATIONS, UPDATE_CHECK_KEY, Prefs
from usepod_desktop.gui.update_check import UpdateWatcher

pytestmark = pytest.mark.gui


def _info(newest: str) -> UpdateInfo:
    return UpdateInfo(__version__, newest, "https://pypi.org/project/usepod-desktop/", time.time())


def test_a_newer_release_is_available_until_this_version_is_the_newest(
    qloop: qasync.QEventLoop,
) -> None:
    answers = [_info("99.0"), _info("99.0"), _info(__version__)]
    watcher = UpdateWatcher(Prefs(), check=lambda: answers.pop(0), rng=random.Random(1))
    announced: list[str | None] = []
    watcher.changed.connect(lambda: announced.append(getattr(watcher.available, "newest", None)))
    try:
        watcher.check_now()
        until(qloop, lambda: watcher.info is not None, what="the first answer")
        assert watcher.available is not None and watcher.available.newest == "99.0"
        assert announced == ["99.0"]
        # the next check is scheduled a day later (plus jitter), not at once
        assert watcher.timer.isActive() and watcher.timer.remainingTime() > 3600 * 1000
        watcher.check_now()  # the same release again: still available
        until(qloop, lambda: len(answers) == 1, what="the second answer")
        assert watcher.available is not None and watcher.available.newest == "99.0"
        watcher.check_now()  # this version is the newest now (updated meanwhile)
        until(qloop, lambda: watcher.available is None, what="the update gone")
        assert announced[-1] is None  # announced, so the tray drops its entry
    finally:
        watcher.stop()
        watcher.deleteLater()


def test_a_failed_check_keeps_what_was_known_and_tries_again_later(
    qloop: qasync.QEventLoop,
) -> None:
    calls: list[int] = []

    def check() -> UpdateInfo:
        calls.append(1)
        raise UpdateCheckError("feed unreachable")

    watcher = UpdateWatcher(Prefs(), check=check, rng=random.Random(1))
    try:
        watcher.check_now()
        until(qloop, lambda: watcher.timer.isActive(), what="the retry scheduled")
        assert calls == [1] and watcher.available is None
    finally:
        watcher.stop()
        watcher.deleteLater()


def test_update_check_opt_out(qloop: object) -> None:
    prefs = Prefs()
    prefs.set_notify_enabled(UPDATE_CHECK_KEY, False)
    asked: list[int] = []

    def check() -> UpdateInfo:
        asked.append(1)
        raise AssertionError("must not ask")

    watcher = UpdateWatcher(prefs, check=check, rng=random.Random(1))
    watcher.start()
    watcher.check_now()
    assert not watcher.timer.isActive() and asked == []
    # the switch is in Settings > App, with the notification switches
    assert UPDATE_CHECK_KEY in NOTIFICATIONS


def test_a_watcher_that_outlived_its_loop_does_nothing_when_its_timer_fires(qapp: object) -> None:
    """A controller left behind (at exit, or by an earlier test) keeps its update timer: when
    it fires with no event loop it must do nothing, not raise into the Qt event loop."""
    asked: list[int] = []

    def check() -> UpdateInfo:
        asked.append(1)
        raise AssertionError("must not ask without a loop")

    watcher = UpdateWatcher(Prefs(), check=check, rng=random.Random(1))
    asyncio.set_event_loop(None)  # what is left after a loop was closed and unset
    watcher.check_now()  # raised RuntimeError: no current event loop
    assert asked == []
    watcher.deleteLater()
