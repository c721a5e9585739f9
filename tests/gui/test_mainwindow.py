"""The status window (gui/mainwindow.py): where there is no tray it is the app (state, actions,
notices; closing it quits); a tray that appears later takes over. Also built on a stand-in
model, since it depends on gui/model.py's protocols, not on the controller."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import qasync
from PySide6.QtWidgets import QApplication

from tests.gui.conftest import Rig, until
from tests.gui.standin import StandIn, imported_modules
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui import mainwindow
from usepod_desktop.gui.mainwindow import StatusWindow

pytestmark = pytest.mark.gui


def test_without_a_tray_a_status_window_shows_state_and_actions(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(tray=False)
    window = rig.controller.window
    assert isinstance(window, StatusWindow) and window.isVisible()
    assert rig.controller.tray is None
    assert window.state_label.text() == "Serving"
    window.pause_button.click()
    rig.until(lambda: window.state_label.text() == "Paused", what="paused")
    assert window.pause_button.text() == "Resume serving"
    rig.controller.notify("Lost connection", "test message", "warning")
    assert "Lost connection" in window.notice.text()
    window.close()  # without a tray, closing the window quits the app
    rig.run(rig.controller.wait_quit(), 20)
    assert rig.agent.state == AgentState.OFFLINE


def test_a_tray_that_appears_later_gets_the_icon(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(tray=False)
    controller = rig.controller
    assert controller.tray is None and controller._tray_watch is not None
    assert controller._tray_watch.isActive()  # still looking for a tray
    assert controller.check_tray(available=False) is False and controller.tray is None
    assert controller.check_tray(available=True) is True
    assert controller.tray is not None and not controller._tray_watch.isActive()
    window = controller.window
    assert isinstance(window, StatusWindow)
    window.close()  # with a tray now, closing the window no longer quits
    assert not controller.stopping


def test_the_status_window_acts_on_its_model_and_quits_without_a_tray(
    qloop: qasync.QEventLoop, qapp: QApplication
) -> None:
    model = StandIn()
    window = StatusWindow(model)
    try:
        assert window.state_label.text() == "Serving"
        assert window.figures_label.text() == "Today: 7 jobs"
        window.pause_button.click()
        window.settings_button.click()
        model.needs_pairing = True
        model.statusChanged.emit()
        assert window.pair_button.isVisibleTo(window)
        window.pair_button.click()
        window.close()  # no tray: closing the window is quitting
        until(qloop, lambda: ("request_quit", None) in model.calls, what="quit")
        assert model.calls[:3] == [
            ("toggle_pause", None),
            ("open_settings", None),
            ("open_pairing", None),
        ]
    finally:
        window.deleteLater()


def test_the_status_window_does_not_import_the_controller() -> None:
    imported = imported_modules(mainwindow)
    assert "usepod_desktop.gui.controller" not in imported
    assert "usepod_desktop.gui.model" in imported
