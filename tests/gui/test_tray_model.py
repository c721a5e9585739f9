"""The tray and the status window are built on gui/model.py's protocols, not on the
controller: here on a small stand-in model whose calls are recorded."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import qasync
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QApplication

from tests.gui.conftest import until
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui import mainwindow, tray
from usepod_desktop.gui.icons import state_icon, tray_variant
from usepod_desktop.gui.mainwindow import StatusWindow
from usepod_desktop.gui.model import TrayModel
from usepod_desktop.gui.tray import TrayIcon

pytestmark = pytest.mark.gui


class NoUpdate:
    available = None


class StandIn(QObject):
    """A TrayModel with plain attributes; every action is appended to `calls`."""

    statusChanged = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []
        self.state = AgentState.SERVING
        self.reason = "connected"
        self.paused = False
        self.agent: object | None = object()
        self.stopping = False
        self.sandbox = False
        self.needs_pairing = False
        self.settings_available = True
        self.config_problem_path: Path | None = None
        self.tray: object | None = None
        self.updates = NoUpdate()
        self.autostart_on = False

    def status_text(self) -> str:
        return f"{self.state.label} · {self.reason}"

    def figures_text(self) -> str:
        return "Today: 7 jobs"

    def tooltip_text(self) -> str:
        return f"stand-in: {self.state.label}"

    def gpu_lines(self) -> list[str]:
        return ["GPU: 41 °C"]

    def autostart_supported(self) -> tuple[bool, str]:
        return True, ""

    def start_at_login(self) -> bool:
        return self.autostart_on

    def _record(self, name: str, arg: object = None) -> None:
        self.calls.append((name, arg))

    def pause(self) -> None:
        self._record("pause")

    def resume(self) -> None:
        self._record("resume")

    def toggle_pause(self) -> None:
        self._record("toggle_pause")

    def pause_for(self, seconds: float) -> None:
        self._record("pause_for", seconds)

    def pause_until_tomorrow(self) -> None:
        self._record("pause_until_tomorrow")

    def open_settings(self) -> object:
        self._record("open_settings")
        return None

    def open_pairing(self) -> object:
        self._record("open_pairing")
        return None

    def open_test_job(self) -> object:
        self._record("open_test_job")
        return None

    def open_dashboard(self) -> object:
        self._record("open_dashboard")
        return None

    def open_doctor(self) -> object:
        self._record("open_doctor")
        return None

    def open_log_view(self) -> object:
        self._record("open_log_view")
        return None

    def open_log_folder(self) -> bool:
        self._record("open_log_folder")
        return True

    def open_config_file(self) -> bool:
        self._record("open_config_file")
        return True

    def reload_config_file(self) -> None:
        self._record("reload_config_file")

    def show_update(self) -> None:
        self._record("show_update")

    def show_main(self) -> None:
        self._record("show_main")

    def set_start_at_login(self, on: bool) -> None:
        self._record("set_start_at_login", on)
        self.autostart_on = on

    def request_quit(self) -> None:
        self._record("request_quit")


def _trigger(icon: TrayIcon, name: str) -> None:
    icon.menu.aboutToShow.emit()  # rebuilt from the model now, as Qt does before showing it
    action = icon.action(name)
    assert action is not None, f"{name} not in {[a.objectName() for a in icon.menu.actions()]}"
    action.trigger()


def test_the_tray_menu_shows_and_acts_on_its_model(
    qloop: qasync.QEventLoop, qapp: QApplication
) -> None:
    model = StandIn()
    typed: TrayModel = model  # the stand-in meets the protocol the tray is typed against
    icon = TrayIcon(typed)
    try:
        icon.menu.aboutToShow.emit()
        texts = {a.objectName(): a.text() for a in icon.menu.actions() if a.objectName()}
        assert texts["action_status"] == "Serving · connected"
        assert texts["action_figures"] == "Today: 7 jobs"
        assert texts["action_gpu_0"] == "GPU: 41 °C"
        assert icon.toolTip() == "stand-in: Serving"

        for name in ("action_pause", "action_settings", "action_test_job", "action_dashboard"):
            _trigger(icon, name)
        _trigger(icon, "action_pause_15m")
        _trigger(icon, "action_autostart")  # checkable: toggles on
        _trigger(icon, "action_quit")
        assert model.calls == [
            ("pause", None),
            ("open_settings", None),
            ("open_test_job", None),
            ("open_dashboard", None),
            ("pause_for", 15 * 60),
            ("set_start_at_login", True),
            ("request_quit", None),
        ]

        # The model changes and says so: icon and tooltip follow, the menu offers Resume.
        model.state, model.paused, model.reason = AgentState.PAUSED, True, "paused by you"
        model.statusChanged.emit()
        assert icon.icon_key == (AgentState.PAUSED, tray_variant())
        assert icon.icon().cacheKey() == state_icon(AgentState.PAUSED, tray_variant()).cacheKey()
        assert icon.toolTip() == "stand-in: Paused"
        icon.menu.aboutToShow.emit()
        assert icon.action("action_pause") is None
        model.calls.clear()
        _trigger(icon, "action_resume")
        assert model.calls == [("resume", None)]

        # Without an agent the agent's actions are off; a bad agent.toml offers to open it.
        model.agent = None
        model.config_problem_path = Path("/nowhere/agent.toml")
        icon.menu.aboutToShow.emit()
        assert not icon.action("action_resume").isEnabled()  # type: ignore[union-attr]
        model.calls.clear()
        _trigger(icon, "action_open_config")
        assert model.calls == [("open_config_file", None)]
    finally:
        icon.dispose()


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


@pytest.mark.parametrize("module", [tray, mainwindow])
def test_the_tray_and_status_window_do_not_import_the_controller(module: object) -> None:
    source = Path(module.__file__).read_text(encoding="utf-8")  # type: ignore[attr-defined]
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):  # every import, TYPE_CHECKING ones included
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert "usepod_desktop.gui.controller" not in imported
    assert "usepod_desktop.gui.model" in imported
