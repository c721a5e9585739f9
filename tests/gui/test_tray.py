"""The tray: actions drive the real agent, the icon follows its state, the tooltip counts. It
depends on gui/model.py's protocols, not on the controller: also built on a stand-in model."""

from __future__ import annotations

from pathlib import Path

import pytest
import qasync
from PySide6.QtGui import QAction, QIcon, QImage
from PySide6.QtWidgets import QApplication

from tests.gui.conftest import Rig
from tests.gui.standin import StandIn, imported_modules
from usepod_desktop.core import paths
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui import tray as tray_module
from usepod_desktop.gui.icons import state_icon, tray_variant
from usepod_desktop.gui.model import TrayModel
from usepod_desktop.gui.tray import TrayIcon

pytestmark = pytest.mark.gui


def _menu_action(tray: TrayIcon, name: str) -> QAction:
    tray.menu.aboutToShow.emit()  # what Qt does before showing it: rebuilt from the state now
    action = tray.action(name)
    names = [a.objectName() for a in tray.menu.actions()]
    assert action is not None, f"{name} not in the menu: {names}"
    return action


def _image(icon: QIcon) -> QImage:
    return icon.pixmap(22, 22).toImage()


def test_pause_and_resume_from_the_menu_change_state_icon_and_capabilities(rig: Rig) -> None:
    tray = rig.controller.tray
    assert isinstance(tray, TrayIcon)
    assert tray.icon_key is not None and tray.icon_key[0] == AgentState.SERVING
    assert _image(tray.icon()) == _image(state_icon(AgentState.SERVING))
    assert "Serving" in _menu_action(tray, "action_status").text()

    before = rig.caps_count()
    _menu_action(tray, "action_pause").trigger()
    caps = rig.next_caps(before)
    assert caps.models == []
    rig.until(lambda: rig.agent.state == AgentState.PAUSED, what="paused")
    assert rig.agent.paused
    assert tray.icon_key[0] == AgentState.PAUSED
    assert _image(tray.icon()) == _image(state_icon(AgentState.PAUSED))
    assert _image(tray.icon()) != _image(state_icon(AgentState.SERVING))
    tray.menu.aboutToShow.emit()
    assert tray.action("action_pause") is None  # the rebuilt menu offers Resume instead
    assert "Paused" in tray.toolTip()

    before = rig.caps_count()
    _menu_action(tray, "action_resume").trigger()
    caps = rig.next_caps(before)
    assert sorted(m["model_id"] for m in caps.models) == ["alpha", "beta"]
    rig.until(lambda: tray.icon_key[0] == AgentState.SERVING, what="serving icon")


def test_icon_follows_connection_loss_and_recovery(rig: Rig) -> None:
    tray = rig.controller.tray
    rig.run(rig.coordinator.stop())
    rig.until(
        lambda: tray.icon_key[0] in (AgentState.OFFLINE, AgentState.CONNECTING), what="offline icon"
    )
    assert "Serving" not in tray.toolTip()
    rig.run(rig.coordinator.start())
    rig.until(lambda: tray.icon_key[0] == AgentState.SERVING, timeout=15, what="back online")


def test_no_backend_up_is_its_own_warning_icon_tooltip_and_menu_line(rig: Rig) -> None:
    """Issue 19 item 1: connected with zero advertised models is not a green "Serving"."""
    tray = rig.controller.tray
    label = f"vllm @ {rig.fake.url}"
    port = int(rig.fake.url.rsplit(":", 1)[1])
    rig.run(rig.fake.stop())
    before = rig.caps_count()
    rig.run(rig.agent.rediscover())
    assert rig.next_caps(before).models == []
    rig.until(lambda: tray.icon_key[0] == AgentState.NO_MODELS, what="no-models icon")
    assert _image(tray.icon()) == _image(state_icon(AgentState.NO_MODELS))
    assert _image(tray.icon()) != _image(state_icon(AgentState.SERVING))
    tip = tray.toolTip()
    assert "No models offered" in tip and "Serving" not in tip and label in tip
    assert max(len(line) for line in tip.splitlines()) <= 80
    status = _menu_action(tray, "action_status")
    assert status.text().startswith("No models offered: ")
    assert f"{label} is down" in status.toolTip() and "fix its URL in Settings" in status.toolTip()
    assert len(status.text()) <= 64
    fix = _menu_action(tray, "action_fix_backends")
    assert fix.isEnabled() and label in fix.toolTip()
    rig.run(rig.fake.start(port))
    rig.run(rig.agent.rediscover())
    rig.until(lambda: tray.icon_key[0] == AgentState.SERVING, what="serving again")
    assert _menu_action(tray, "action_status").text() == "Serving: 2 model(s) advertised"
    assert tray.action("action_fix_backends") is None


def test_pair_this_computer_is_offered_when_paired_too(rig: Rig) -> None:
    """Issue 19 item 13: pair again (another account, another coordinator) from the menu."""
    tray = rig.controller.tray
    assert rig.agent.state == AgentState.SERVING and not rig.controller.needs_pairing
    pair = _menu_action(tray, "action_pair")
    assert pair.isEnabled() and pair.text() == "Pair this computer…"
    opened: list[bool] = []
    rig.controller.open_pairing = lambda: opened.append(True)  # type: ignore[method-assign]
    pair.trigger()
    assert opened == [True]


def test_tooltip_counts_todays_jobs_and_estimated_earnings(rig: Rig) -> None:
    tray = rig.controller.tray
    assert "Today: 0 job(s)" in tray.toolTip()
    handle = rig.run(
        rig.coordinator.dispatch(
            "alpha", {"messages": [{"role": "user", "content": "one two three"}]}
        )
    )
    rig.run(handle.wait(10))
    assert handle.ok
    rig.until(lambda: "Today: 1 job(s)" in tray.toolTip(), what="tooltip to count the job")
    jobs, usd = rig.controller.today_summary()
    assert jobs == 1 and usd > 0
    assert "≈ $0.0000" in tray.toolTip()  # a tiny job: six decimals, shown as an estimate
    assert "today 1 job(s)" in _menu_action(tray, "action_figures").text()
    test_job = rig.run(
        rig.agent.run_test_job("beta", {"messages": [{"role": "user", "content": "x"}]})
    )
    assert test_job.outcome.ok
    rig.run(rig.agent.rediscover())  # some events later: test jobs still do not count
    assert rig.controller.today_summary()[0] == 1


def test_open_log_folder_and_start_at_login(rig: Rig) -> None:
    from usepod_desktop.core import autostart

    tray = rig.controller.tray
    _menu_action(tray, "action_log_folder").trigger()
    assert [Path(u.toLocalFile()) for u in rig.opened_urls] == [paths.log_dir()]

    action = _menu_action(tray, "action_autostart")
    assert action.isCheckable() and not action.isChecked()  # off until the user turns it on
    action.trigger()
    rig.until(lambda: autostart.enabled(), what="autostart entry")
    rig.until(lambda: rig.controller.start_at_login(), what="cached state")
    assert _menu_action(tray, "action_autostart").isChecked()
    _menu_action(tray, "action_autostart").trigger()
    rig.until(lambda: not autostart.enabled(), what="autostart removed")
    # the menu's cached state follows (and the background task is done before teardown)
    rig.until(lambda: not rig.controller.start_at_login(), what="cached state cleared")


def test_start_at_login_keeps_the_config_and_says_what_it_does_in_sandbox_mode(
    rig: Rig,
) -> None:
    """Issue 19 item 15."""
    from usepod_desktop.core import autostart

    tray = rig.controller.tray
    rig.controller.options.config = str(rig.config_path)
    _menu_action(tray, "action_autostart").trigger()
    rig.until(lambda: autostart.enabled(), what="autostart entry")
    command = autostart.current_command()
    assert command is not None and command[-2:] == ["--config", str(rig.config_path)]
    rig.until(lambda: rig.controller.start_at_login(), what="cached state")
    _menu_action(tray, "action_autostart").trigger()
    rig.until(lambda: not rig.controller.start_at_login(), what="cached state cleared")
    rig.controller.sandbox = True
    try:
        action = _menu_action(tray, "action_autostart")
        assert action.text() == "Start the app at login (not the sandbox)"
        assert "starts Use Pod normally" in action.toolTip()
    finally:
        rig.controller.sandbox = False


def test_quit_stops_the_agent_gracefully(rig: Rig) -> None:
    session = next(iter(rig.coordinator.providers.values()))
    _menu_action(rig.controller.tray, "action_quit").trigger()
    rig.run(rig.controller.wait_quit(), 20)
    assert rig.agent.state == AgentState.OFFLINE
    rig.until(lambda: not session.connected, what="connection closed")


# ---- on a stand-in model ------------------------------------------------------------------


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


def test_the_tray_does_not_import_the_controller() -> None:
    imported = imported_modules(tray_module)
    assert "usepod_desktop.gui.controller" not in imported
    assert "usepod_desktop.gui.model" in imported
