"""GPU figures in the earnings dashboard: the same sensor readings as the tray menu (the serving
rules' last snapshot, here with injected GPU readings), refreshed by the live tick, and a plain
line when there is no GPU sensor."""

from __future__ import annotations

import pytest
import qasync

from tests.gui.conftest import Rig
from tests.gui.test_dashboard import controller_with, open_window
from tests.gui.test_serving_gui import menu
from usepod_desktop.core.serving.sensors import GpuReading, Sensors
from usepod_desktop.gui.dashboard import DASH, NO_GPU_TEXT

pytestmark = pytest.mark.gui


class Gpus:
    """An injected GPU sensor: whatever `readings` holds now, and an optional problem."""

    def __init__(self, readings: list[GpuReading], problem: str | None = None) -> None:
        self.readings = readings
        self.problem = problem

    def read(self) -> list[GpuReading]:
        return list(self.readings)


class NoIdle:
    name = "test idle"

    def idle_seconds(self) -> float | None:
        return None


def inject(rig: Rig, gpu: Gpus) -> None:
    rig.agent.serving.sensors = Sensors(
        idle=NoIdle(), processes=frozenset, battery=lambda: False, gpu=gpu
    )
    rig.run(rig.agent.serving.evaluate())


def test_dashboard_shows_the_gpu_figures_the_tray_shows(rig: Rig) -> None:
    gpu = Gpus(
        [
            GpuReading("RTX 4090", 64, 35, 12 * 1024, 24 * 1024, 210),
            GpuReading("RTX 3060", 51, 0, 1.5 * 1024, 12 * 1024, None),
        ]
    )
    inject(rig, gpu)
    window = open_window(rig.loop, rig.controller)
    assert window.gpu_label.text().splitlines() == [
        "RTX 4090: 64 °C, 35 % busy, VRAM 12.0/24.0 GB, 210 W",
        "RTX 3060: 51 °C, 0 % busy, VRAM 1.5/12.0 GB",
    ]
    assert window.gpu_label.isVisible()
    # the tray menu says the same from the same reading
    items = menu(rig.controller.tray)
    assert items["action_gpu_0"] == window.gpu_label.text().splitlines()[0]
    # a new sensor reading reaches the dashboard at the next live tick
    gpu.readings = [GpuReading("RTX 4090", 83, 99, 23 * 1024, 24 * 1024, 440)]
    rig.run(rig.agent.serving.evaluate())
    window.update_live()
    assert window.gpu_label.text() == "RTX 4090: 83 °C, 99 % busy, VRAM 23.0/24.0 GB, 440 W"
    window.close()


def test_no_gpu_sensor_is_said_plainly(rig: Rig) -> None:
    inject(rig, Gpus([]))
    window = open_window(rig.loop, rig.controller)
    assert window.gpu_label.text() == f"GPU: {NO_GPU_TEXT}"
    # the sensor layer's own reason wins when it gives one
    inject(rig, Gpus([], problem="no NVIDIA GPU sensor (NVML Shared Library Not Found)"))
    window.update_live()
    assert window.gpu_label.text() == "no NVIDIA GPU sensor (NVML Shared Library Not Found)"
    window.close()


def test_no_agent_no_gpu_figures(qloop: qasync.QEventLoop) -> None:
    window = open_window(qloop, controller_with(None))
    assert window.gpu_label.text() == f"GPU: {DASH}"
    window.close()
