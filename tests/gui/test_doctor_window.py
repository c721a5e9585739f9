"""The Diagnose window and the tray's update entry, against the real agent of the GUI rig (the
update watcher itself: test_update_check.py)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication, QCheckBox, QFileDialog, QMessageBox

from tests.doctor.feeds import FeedServer, feed_server
from tests.gui.conftest import Rig
from usepod_desktop.gui.prefs import UPDATE_CHECK_KEY, Prefs
from usepod_desktop.gui.tray import find_action, populate_menu

MARKET = {
    "data": [
        # alpha is listed cheaper than the rig's $0.50 / $0.75: above the cap
        {"id": "acme/alpha", "pricing": {"prompt": "0.0000001", "completion": "0.0000002"}},
        {"id": "acme/beta", "pricing": {"prompt": "0.000001", "completion": "0.000002"}},
    ]
}


@pytest.fixture
def feeds(monkeypatch: pytest.MonkeyPatch) -> Iterator[FeedServer]:
    with feed_server() as server:
        server.routes["/models"] = (200, json.dumps(MARKET).encode())
        server.routes["/pypi"] = (200, json.dumps({"info": {"version": "99.1"}}).encode())
        monkeypatch.setenv("USEPOD_MARKET_PRICES_URL", server.url("/models"))
        monkeypatch.setenv("USEPOD_UPDATE_FEED_URL", server.url("/pypi"))
        yield server


def _rows(window) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    rows = {}
    root = window.tree.invisibleRootItem()
    for i in range(root.childCount()):
        section = root.child(i)
        for j in range(section.childCount()):
            item = section.child(j)
            rows[item.text(1)] = (item.text(0), item.text(2))
    return rows


def test_diagnose_from_the_tray_shows_every_check_with_fix_buttons(
    rig: Rig, feeds: FeedServer
) -> None:
    tray = rig.controller.tray
    assert tray is not None
    tray.rebuild_menu()
    action = tray.action("action_diagnose")
    assert action is not None and action.text() == "Diagnose…"
    connections = len(rig.coordinator.sessions)
    action.trigger()
    window = rig.controller.windows.get("doctor")
    assert window is not None and window.isVisible()
    rig.until(lambda: window.report is not None and not window.running, 20, "the checks")
    rows = _rows(window)
    assert rows["handshake"][0] == "OK" and rows["handshake"][1].startswith("connected now, for ")
    assert "0 reconnect(s) in the last hour" in rows["handshake"][1]
    assert len(rig.coordinator.sessions) == connections  # the live link, no second auth
    assert rows["alpha"][0] == "FAIL" and "above the cap" in rows["alpha"][1]
    assert rows["beta"][0] == "OK" and "at 50% of the cap" in rows["beta"][1]
    assert "Something stops this computer from earning" in window.summary.text()
    # a fix that is one click: the pricing tab of the settings
    button = window.fix_buttons["Prices:alpha"]
    assert button.text() == "Open pricing"
    button.click()
    settings = rig.controller.windows.get("settings")
    assert settings is not None and settings.isVisible()
    assert settings.tabs.currentIndex() == 2  # pricing


def test_paused_rig_gets_a_resume_button_that_resumes(rig: Rig, feeds: FeedServer) -> None:
    rig.controller.pause()
    rig.until(lambda: rig.controller.paused, what="paused")
    window = rig.controller.open_doctor()
    rig.until(lambda: window.report is not None and not window.running, 20, "the checks")
    assert _rows(window)["state"][0] == "WARN"
    button = window.fix_buttons["Serving:state"]
    assert button.text() == "Resume serving"
    first = window.report
    button.click()
    rig.until(lambda: not rig.controller.paused, what="resumed")
    rig.until(lambda: window.report is not first and not window.running, 20, "the checks again")
    assert _rows(window)["state"][0] == "OK"


def test_save_support_bundle_through_the_non_blocking_dialog(
    rig: Rig, feeds: FeedServer, tmp_path: Path
) -> None:
    window = rig.controller.open_doctor()
    rig.until(lambda: window.report is not None and not window.running, 20, "the checks")
    dialog = window.save_bundle()
    assert isinstance(dialog, QFileDialog) and dialog.isVisible()  # open(), not exec()
    target = tmp_path / "bundle.zip"
    dialog.fileSelected.emit(str(target))  # what choosing a file does
    dialog.close()
    rig.until(lambda: window.last_bundle is not None, 20, "the bundle")
    assert window.bundle_note.text() == f"Saved {target}"
    with zipfile.ZipFile(target) as zf:
        names = set(zf.namelist())
        assert "usepod-support/doctor.json" in names and "usepod-support/agent.toml" in names
        doctor = json.loads(zf.read("usepod-support/doctor.json"))
    assert any(c["name"] == "handshake" for c in doctor["checks"])


def test_unwritable_bundle_says_so_in_the_window(
    rig: Rig, feeds: FeedServer, tmp_path: Path
) -> None:
    window = rig.controller.open_doctor()
    rig.until(lambda: window.report is not None and not window.running, 20, "the checks")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    window.write_bundle(str(blocker / "b.zip"))
    rig.until(lambda: window.bundle_note.text().startswith("cannot write"), 20, "the error")
    assert window.bundle_button.isEnabled()


def test_tray_shows_update_available_after_the_periodic_check(rig: Rig, feeds: FeedServer) -> None:
    watcher = rig.controller.updates
    watcher.check_now()
    rig.until(lambda: watcher.available is not None, 10, "the update check")
    assert watcher.available is not None and watcher.available.newest == "99.1"
    # the next check is scheduled, at least a day later (jittered)
    assert watcher.timer.isActive() and watcher.timer.remainingTime() > 23 * 3600 * 1000
    tray = rig.controller.tray
    assert tray is not None
    tray.rebuild_menu()
    action = tray.action("action_update")
    assert action is not None and action.text() == "Update available: 99.1…"
    action.trigger()
    boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox)]
    assert any("pip install --upgrade usepod-desktop==99.1" in b.text() for b in boxes)
    for box in boxes:
        box.close()


def test_menu_without_update_has_no_update_entry(rig: Rig) -> None:
    from PySide6.QtWidgets import QMenu

    menu = QMenu()
    populate_menu(menu, rig.controller)
    assert find_action(menu, "action_update") is None
    assert find_action(menu, "action_diagnose") is not None
    menu.deleteLater()


def test_update_check_switch_is_in_settings_app_tab(rig: Rig) -> None:
    settings = rig.controller.open_settings("app")
    assert settings is not None
    box = settings.findChild(QCheckBox, UPDATE_CHECK_KEY)
    assert box is not None and box.isChecked()
    box.setChecked(False)
    assert Prefs().update_check_enabled is False
    assert rig.controller.prefs.update_check_enabled is False
