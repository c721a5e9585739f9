"""gui/settings/serving.py: the "Serving rules" tab saves to agent.toml, shows the live "Now:" line,
and names what it cannot read."""

from __future__ import annotations

import pytest

from tests.gui.conftest import Rig
from tests.gui.test_serving_gui import Idle, inject
from usepod_desktop.core.config import (
    ScheduleWindow,
    ServingConfig,
    load_config,
)
from usepod_desktop.gui.settings.serving import parse_schedule

pytestmark = pytest.mark.gui


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
