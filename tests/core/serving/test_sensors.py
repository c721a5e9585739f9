"""Sensors: idle time under a real Xvfb (xdotool input resets it), the process rule against a
real process started here, battery and GPU through injected readings at the library seam."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from usepod_desktop.core.config import ServingConfig
from usepod_desktop.core.serving.policy import Paused, Serve, decide
from usepod_desktop.core.serving.sensors import (
    ChainIdle,
    GpuReading,
    NvmlGpu,
    Sensors,
    X11Idle,
    on_battery,
    running_process_names,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/procfs")


def _wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A private Xvfb on a free display number (it picks one and tells us with -displayfd)."""
    if not shutil.which("Xvfb") or not shutil.which("xdotool"):
        pytest.fail("Xvfb and xdotool are required (scripts/test installs them)")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "640x480x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as fh:
            number = fh.readline().strip()
        assert number.isdigit(), "Xvfb did not report its display"
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@linux_only
def test_x11_idle_grows_and_xdotool_input_resets_it(xvfb: str) -> None:
    source = X11Idle(xvfb)
    try:
        first = source.idle_seconds()
        assert first is not None
        # without input the idle time grows
        _wait_for(lambda: (source.idle_seconds() or 0) >= first + 1.0)
        before = source.idle_seconds()
        assert before is not None and before >= 1.0
        env = {**os.environ, "DISPLAY": xvfb}
        subprocess.run(["xdotool", "mousemove", "10", "20"], env=env, check=True, timeout=10)
        _wait_for(lambda: (v := source.idle_seconds()) is not None and v < 0.5)
        # the decision follows: an idle rule of 3 s pauses right after the input...
        rules = ServingConfig(when="idle", idle_minutes=0.05, min_switch_s=0)
        reading = Sensors(idle=source, processes=frozenset, battery=lambda: False, gpu=_NoGpu())
        snap = reading.read()
        assert snap.readings.idle_s is not None and snap.readings.idle_s < 3.0
        decision, _ = decide(rules, snap.readings, datetime.now(UTC))
        assert isinstance(decision, Paused) and decision.kinds == ["idle"]
        # ...and serves once the user has been away for 3 s
        _wait_for(lambda: (source.idle_seconds() or 0) >= 3.0)
        decision, _ = decide(rules, reading.read().readings, datetime.now(UTC))
        assert isinstance(decision, Serve)
    finally:
        source.close()


def test_no_display_is_unknown_not_idle() -> None:
    source = X11Idle("")
    assert source.idle_seconds() is None
    chain = ChainIdle([X11Idle(""), _Unknown()])
    assert chain.idle_seconds() is None and chain.name == "none"


@linux_only
def test_unreachable_x_display_is_unknown() -> None:
    assert X11Idle(":987").idle_seconds() is None


def test_chain_keeps_the_first_source_that_answers() -> None:
    answer = _Fixed(42.0)
    chain = ChainIdle([_Unknown(), answer])
    assert chain.idle_seconds() == 42.0
    assert chain.name == "fixed"
    answer.value = None  # the source went away: unknown, and the chain looks again next time
    assert chain.idle_seconds() is None
    assert chain.active is None


@linux_only
def test_process_rule_sees_a_real_renamed_process(tmp_path: Path) -> None:
    game = tmp_path / "GameClient-Test"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", game)
    game.chmod(0o755)
    rules = ServingConfig(pause_when_running=("gameclient-test",), min_switch_s=0)
    assert "gameclient-test" not in running_process_names()
    proc = subprocess.Popen([str(game), "60"])
    try:
        _wait_for(lambda: "gameclient-test" in running_process_names())
        snap = Sensors(idle=_Fixed(0.0), battery=lambda: False, gpu=_NoGpu()).read()
        decision, _ = decide(rules, snap.readings, datetime.now(UTC))
        assert isinstance(decision, Paused) and decision.kinds == ["process"]
        assert decision.text == "gameclient-test running"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    _wait_for(lambda: "gameclient-test" not in running_process_names())
    snap = Sensors(idle=_Fixed(0.0), battery=lambda: False, gpu=_NoGpu()).read()
    decision, _ = decide(rules, snap.readings, datetime.now(UTC))
    assert isinstance(decision, Serve)


def test_battery_through_injected_psutil_readings() -> None:
    assert on_battery(lambda: SimpleNamespace(percent=50, power_plugged=False)) is True
    assert on_battery(lambda: SimpleNamespace(percent=50, power_plugged=True)) is False
    assert on_battery(lambda: None) is False  # no battery at all: mains
    assert on_battery(lambda: SimpleNamespace(percent=50, power_plugged=None)) is None
    assert on_battery(_raise) is None
    assert on_battery() in (True, False, None)  # the real psutil call works here


class _FakeNvml:
    """The pynvml functions NvmlGpu calls, answering like a driver with two GPUs."""

    def __init__(self, fail_init: Exception | None = None) -> None:
        self.fail_init = fail_init
        self.temps = [64, 81]
        self.set_calls: list[str] = []

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise self.fail_init

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes | str:
        return b"NVIDIA GeForce RTX 4090" if h == 0 else "NVIDIA RTX A4000"

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        assert sensor == 0  # NVML_TEMPERATURE_GPU
        return self.temps[h]

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=35 if h == 0 else 0, memory=10)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=12 * 2**30, total=24 * 2**30, free=12 * 2**30)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return 210_500

    def __getattr__(self, name: str) -> Any:
        if name.startswith("nvmlDeviceSet"):
            self.set_calls.append(name)  # never expected: the sensor is read only
        raise AttributeError(name)


def test_gpu_figures_through_injected_nvml() -> None:
    fake = _FakeNvml()
    gpu = NvmlGpu(fake)
    readings = gpu.read()
    assert readings == [
        GpuReading("NVIDIA GeForce RTX 4090", 64, 35, 12 * 1024, 24 * 1024, 210.5),
        GpuReading("NVIDIA RTX A4000", 81, 0, 12 * 1024, 24 * 1024, None),
    ]
    assert readings[0].summary() == "NVIDIA GeForce RTX 4090: 64 °C, 35 %, 12.0/24.0 GB, 210 W"
    assert fake.set_calls == []
    snap = Sensors(idle=_Fixed(1.0), processes=frozenset, battery=lambda: False, gpu=gpu).read()
    assert snap.readings.gpu_temp_c == 81  # the hottest GPU drives the temperature rule
    assert len(snap.gpus) == 2


def test_no_nvidia_driver_is_said_not_guessed() -> None:
    gpu = NvmlGpu(_FakeNvml(fail_init=RuntimeError("NVML Shared Library Not Found")))
    assert gpu.read() == []
    assert gpu.problem is not None and "no NVIDIA GPU sensor" in gpu.problem
    snap = Sensors(idle=_Fixed(1.0), processes=frozenset, battery=lambda: False, gpu=gpu).read()
    assert snap.readings.gpu_temp_c is None
    assert snap.gpu_problem == gpu.problem
    # the real library: on a machine without an NVIDIA driver it says so the same way
    real = NvmlGpu()
    if not real.read():
        assert real.problem is not None and real.problem.startswith("no ")


class _Fixed:
    name = "fixed"

    def __init__(self, value: float | None) -> None:
        self.value = value

    def idle_seconds(self) -> float | None:
        return self.value


class _Unknown(_Fixed):
    name = "unknown"

    def __init__(self) -> None:
        super().__init__(None)


class _NoGpu:
    problem = "no GPU sensor"

    def read(self) -> list[GpuReading]:
        return []


def _raise() -> None:
    raise OSError("no power supply class")
