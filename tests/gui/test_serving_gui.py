"""Serving rules in the tray app: the tray's timed pauses, reason in the tooltip, GPU figures,
notifications, local control (the "Serving rules" settings tab is tested in
tests/gui/settings/test_serving.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.gui.conftest import Rig
from usepod_desktop.core.config import ServingConfig
from usepod_desktop.core.events import AgentState
from usepod_desktop.core.serving.sensors import GpuReading, Sensors
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
    # "until 23:59", or "until tomorrow 00:14" when the 15 minutes cross local midnight
    said = (f"until {local_end}", f"until tomorrow {local_end}")
    rig.until(lambda: any(s in tray.toolTip() for s in said), what="tooltip reason")
    status_line = menu(tray)["action_status"]
    assert any(f"Paused: you paused it {s}" in status_line for s in said), status_line
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
