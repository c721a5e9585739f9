"""Serving rules in the tray app: the "Serving rules" settings tab (saved to agent.toml, live
"Now:" line), the tray's timed pauses, reason in the tooltip, GPU figures, notifications."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.gui.conftest import Rig
from usepod_desktop.core.config import ScheduleWindow, ServingConfig, load_config
from usepod_desktop.core.events import AgentState
from usepod_desktop.core.serving.sensors import GpuReading, Sensors
from usepod_desktop.gui.settings.serving import parse_schedule
from usepod_desktop.gui.tray import TrayIcon

pytestmark = pytest.mark.gui


class Idle:
    name = "test idle"

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def idle_seconds(self) -> float | None:
        return self.seconds


class Gpu:
    problem = None

    def read(self) -> list[GpuReading]:
        return [GpuReading("Test GPU", 64, 35, 12 * 1024, 24 * 1024, 210)]


def inject(rig: Rig, idle: Idle) -> None:
    rig.agent.serving.sensors = Sensors(
        idle=idle, processes=frozenset, battery=lambda: False, gpu=Gpu()
    )
    rig.agent.serving.interval = 0.05


def menu(tray: TrayIcon) -> dict[str, str]:
    tray.menu.aboutToShow.emit()
    return {a.objectName(): a.text() for a in tray.menu.actions() if a.objectName()}


def test_tray_pause_for_15_minutes_shows_the_reason_and_resumes(rig: Rig) -> None:
    tray = rig.controller.tray
    assert isinstance(tray, TrayIcon)
    items = menu(tray)
    assert items["action_pause_15m"] == "Pause for 15 minutes"
    assert items["action_pause_1h"] == "Pause for 1 hour"
    assert items["action_pause_tomorrow"] == "Pause until tomorrow (06:00)"
    before = rig.caps_count()
    tray.action("action_pause_15m").trigger()  # type: ignore[union-attr]
    assert rig.next_caps(before).models == []
    rig.until(lambda: rig.agent.state == AgentState.PAUSED, what="paused")
    status = rig.agent.serving.status()
    assert status["paused_by"] == ["manual"]
    ends = datetime.fromisoformat(status["resumes_at"])
    assert abs(ends - (datetime.now(UTC) + timedelta(minutes=15))) < timedelta(seconds=30)
    local_end = ends.astimezone().strftime("%H:%M")
    rig.until(lambda: f"until {local_end}" in tray.toolTip(), what="tooltip reason")
    assert f"Paused: you paused it until {local_end}" in menu(tray)["action_status"]
    before = rig.caps_count()
    tray.action("action_resume").trigger()  # type: ignore[union-attr]
    assert len(rig.next_caps(before).models) == 2
    rig.until(lambda: "Paused" not in tray.toolTip(), what="tooltip back to serving")


def test_tray_pause_one_hour_and_until_tomorrow(rig: Rig) -> None:
    tray = rig.controller.tray
    menu(tray)
    tray.action("action_pause_1h").trigger()  # type: ignore[union-attr]
    rig.until(lambda: rig.agent.serving.status()["resumes_at"] is not None, what="1 h pause")
    ends = datetime.fromisoformat(rig.agent.serving.status()["resumes_at"])
    assert abs(ends - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(seconds=30)
    menu(tray)
    tray.action("action_pause_tomorrow").trigger()  # type: ignore[union-attr]
    rig.until(
        lambda: (
            datetime.fromisoformat(rig.agent.serving.status()["resumes_at"]).astimezone().hour == 6
        ),
        what="pause until 06:00",
    )
    ends = datetime.fromisoformat(rig.agent.serving.status()["resumes_at"])
    assert timedelta(0) < ends - datetime.now(UTC) <= timedelta(hours=24)


def test_gpu_figures_in_the_tray_menu(rig: Rig) -> None:
    inject(rig, Idle(None))
    rig.run(rig.agent.serving.evaluate())
    items = menu(rig.controller.tray)
    assert items["action_gpu_0"] == "Test GPU: 64 °C, 35 % busy, VRAM 12.0/24.0 GB, 210 W"


def test_serving_tab_saves_rules_and_shows_the_live_reason(rig: Rig) -> None:
    inject(rig, Idle(0.0))  # the owner is at the keyboard
    window = rig.controller.open_settings("serving")
    assert window is not None
    tab = window.serving_tab
    assert window.tabs.tabText(window.tabs.currentIndex()) == "Serving rules"
    assert tab.now.text() == "Now: serving"
    tab.when.setCurrentIndex(tab.when.findData("idle"))
    tab.idle_minutes.setValue(10)
    tab.processes.setText("steam, Game.exe")
    tab.schedule.setPlainText("mon-fri 22:00-07:00\nsat,sun 10:00-23:00")
    tab.temp_pause.setValue(85)
    tab.temp_resume.setValue(75)
    tab.free_memory.setChecked(True)
    tab.min_switch.setValue(0)
    assert window.dirty
    assert window.apply(), window.message.text()
    rig.until(lambda: not window.saving, what="save to finish")
    saved = load_config(rig.config_path, allow_insecure=True).serving
    assert saved == ServingConfig(
        when="idle",
        idle_minutes=10,
        pause_when_running=("steam", "Game.exe"),
        on_battery="pause",
        gpu_temp_pause_c=85,
        gpu_temp_resume_c=75,
        free_gpu_memory_on_pause=True,
        min_switch_s=0,
        schedule=(
            ScheduleWindow("22:00", "07:00", ("mon", "tue", "wed", "thu", "fri")),
            ScheduleWindow("10:00", "23:00", ("sat", "sun")),
        ),
    )
    assert rig.agent.config.serving == saved  # in effect without a restart
    # the live line follows the running agent: paused, and says why
    rig.until(lambda: "you are using the computer" in tab.now.text(), what="live line")
    assert tab.now.text().startswith("Now: paused because ")
    assert "Test GPU: 64 °C" in tab.sensors.text()
    assert "Idle for 0 s (test idle)" in tab.sensors.text()


def test_an_invalid_schedule_blocks_apply_and_names_the_line(rig: Rig) -> None:
    before = rig.config_path.read_bytes()
    window = rig.controller.open_settings("serving")
    assert window is not None
    tab = window.serving_tab
    tab.schedule.setPlainText("mon-fri 22:00-07:00\nevery night")
    assert window.apply() is False
    assert "line 2" in window.message.text() and "Nothing was saved" in window.message.text()
    assert tab.schedule.property("invalid") is True
    tab.schedule.setPlainText("mon 25:00-07:00")
    assert window.apply() is False
    assert "HH:MM" in tab.schedule_error.text()
    tab.schedule.setPlainText("")
    tab.temp_pause.setValue(80)
    tab.temp_resume.setValue(90)
    assert window.apply() is False
    assert "below gpu_temp_pause_c" in tab.temp_error.text()
    assert rig.config_path.read_bytes() == before


def test_parse_schedule_ranges_and_every_day() -> None:
    assert parse_schedule("22:00-07:00") == [{"start": "22:00", "end": "07:00"}]
    assert parse_schedule(" fri-mon 01:00 - 02:00 ") == [
        {"start": "01:00", "end": "02:00", "days": ["fri", "sat", "sun", "mon"]}
    ]
    with pytest.raises(ValueError, match="unknown day 'moon'"):
        parse_schedule("moon 01:00-02:00")


def test_rule_pause_and_resume_are_notified_and_switchable(rig: Rig) -> None:
    idle = Idle(0.0)
    inject(rig, idle)
    notifier = rig.controller.notifier
    rig.run(
        rig.agent.reload_config(
            rig.agent.config.replace(
                serving=ServingConfig(when="idle", idle_minutes=1, min_switch_s=0)
            )
        )
    )
    rig.until(
        lambda: (
            ("Serving paused", "Paused: you are using the computer; resumes after 1 idle minute.")
            in notifier.sent
        ),
        what="pause notification",
    )
    idle.seconds = 120.0
    rig.until(lambda: notifier.sent[-1][0] == "Serving again", what="resume notification")
    # a pause the user asked for is not announced back to them
    count = len(notifier.sent)
    rig.run(rig.agent.pause())
    rig.until(lambda: rig.agent.paused)
    rig.run(rig.agent.resume())
    assert len(notifier.sent) == count
    # switched off: silent
    rig.controller.prefs.set_notify_enabled("notify/serving", False)
    idle.seconds = 0.0
    rig.until(lambda: rig.agent.paused, what="paused again")
    assert len(notifier.sent) == count


def test_the_tray_app_answers_local_control(
    rig_factory: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import tempfile

    from usepod_desktop.core.serving.control import request

    with tempfile.TemporaryDirectory(prefix="upd-", dir="/tmp") as short:
        monkeypatch.setenv("USEPOD_RUNTIME_DIR", short)  # a Unix socket path fits 108 bytes
        rig = rig_factory()
        sock = f"{short}/control.sock"
        answer = rig.run(asyncio.to_thread(request, {"cmd": "status"}, address=sock))
        assert answer["ok"] and answer["status"]["state"] == "serving"
        assert sorted(answer["status"]["models"]) == ["alpha", "beta"]
        before = rig.caps_count()
        until = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
        answer = rig.run(asyncio.to_thread(request, {"cmd": "pause", "until": until}, address=sock))
        assert answer["status"]["paused_by"] == ["manual"]
        assert rig.next_caps(before).models == []
        rig.until(lambda: "Paused: you paused it until" in rig.controller.tray.toolTip())
