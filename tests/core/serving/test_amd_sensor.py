"""The amdgpu sysfs GPU sensor, on a fake /sys tree of real files and links in tmp_path, and
the choice between NVML and it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from usepod_desktop.core.serving.sensors import (
    AmdSysfsGpu,
    FirstGpuSensor,
    GpuReading,
    NvmlGpu,
    Sensors,
    default_gpu_sensor,
)


class _NoNvml:
    """pynvml on a machine without an NVIDIA driver."""

    def nvmlInit(self) -> None:
        raise RuntimeError("NVML Shared Library Not Found")


class _Idle:
    name = "fixed"

    def idle_seconds(self) -> float:
        return 1.0


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def _card(root: Path, card: str, driver: str | None, vendor: str, files: dict[str, str]) -> Path:
    """/sys/class/drm/<card>/device -> /sys/devices/pci0000:00/<card>, as the kernel links it."""
    device = root / "devices" / "pci0000:00" / card
    device.mkdir(parents=True)
    (root / "class" / "drm" / card).mkdir(parents=True)
    os.symlink(device, root / "class" / "drm" / card / "device")
    if driver is not None:
        target = root / "bus" / "pci" / "drivers" / driver
        target.mkdir(parents=True, exist_ok=True)
        os.symlink(target, device / "driver")
    _write(device / "vendor", vendor + "\n")
    for rel, text in files.items():
        _write(device / rel, text)
    return device


def _tree(root: Path) -> None:
    # card0: an amdgpu card with every figure; edge is not temp1 here, to prove the label wins
    _card(
        root,
        "card0",
        "amdgpu",
        "0x1002",
        {
            "product_name": "AMD Radeon RX 7900 XTX\n",
            "gpu_busy_percent": "35\n",
            "mem_info_vram_used": f"{12 * 2**30}\n",
            "mem_info_vram_total": f"{24 * 2**30}\n",
            "hwmon/hwmon3/name": "amdgpu\n",
            "hwmon/hwmon3/temp1_label": "junction\n",
            "hwmon/hwmon3/temp1_input": "81000\n",
            "hwmon/hwmon3/temp2_label": "edge\n",
            "hwmon/hwmon3/temp2_input": "64000\n",
            "hwmon/hwmon3/power1_average": "210500000\n",
        },
    )
    # card1: another vendor's card (NVIDIA, nouveau), with files that would parse: skipped
    _card(
        root,
        "card1",
        "nouveau",
        "0x10de",
        {
            "gpu_busy_percent": "99\n",
            "hwmon/hwmon4/temp1_input": "90000\n",
        },
    )
    # card2: AMD by vendor id only (no driver link), unlabelled hwmon, no power1_average but a
    # power1_input, garbage VRAM used, busy percent out of range, no product name
    _card(
        root,
        "card2",
        None,
        "0x1002",
        {
            "device": "0x73bf\n",
            "gpu_busy_percent": "250\n",
            "mem_info_vram_used": "lots\n",
            "mem_info_vram_total": f"{16 * 2**30}\n",
            "hwmon/hwmon5/temp1_input": "51500\n",
            "hwmon/hwmon5/power1_input": "30000000\n",
        },
    )
    # card3: amdgpu, every figure file bad in its own way
    device = _card(
        root,
        "card3",
        "amdgpu",
        "0x1002",
        {
            "product_name": "bad\x1bname\n",
            "gpu_busy_percent": "-5\n",
            "mem_info_vram_used": "1_000\n",  # int() would take it; sysfs never writes it
            "mem_info_vram_total": "9" * 200 + "\n",  # longer than any sysfs figure
            "hwmon/hwmon6/temp1_input": "inf\n",
        },
    )
    (device / "hwmon" / "hwmon6" / "power1_average").mkdir()  # a directory, not a file
    _write(device / "hwmon" / "hwmon6" / "power1_input", b"\xff\xfe\n")  # not text
    # a connector entry: not a card
    (root / "class" / "drm" / "card0-DP-1").mkdir()


def test_amdgpu_figures_from_sysfs(tmp_path: Path) -> None:
    _tree(tmp_path)
    gpu = AmdSysfsGpu(tmp_path)
    readings = gpu.read()
    assert readings == [
        GpuReading("AMD Radeon RX 7900 XTX", 64.0, 35.0, 12 * 1024, 24 * 1024, 210.5),
        GpuReading("AMD GPU 0x73bf (card2)", 51.5, None, None, 16 * 1024, 30.0),
        GpuReading("AMD GPU (card3)", None, None, None, None, None),
    ]
    assert gpu.problem is None
    assert readings[0].summary() == "AMD Radeon RX 7900 XTX: 64 °C, 35 %, 12.0/24.0 GB, 210 W"
    assert readings[1].summary() == "AMD GPU 0x73bf (card2): 52 °C, 30 W"


def test_no_amd_card_is_said_not_guessed(tmp_path: Path) -> None:
    gpu = AmdSysfsGpu(tmp_path)  # no class/drm at all
    assert gpu.read() == []
    assert gpu.problem is not None and gpu.problem.startswith("no AMD GPU sensor")
    _card(tmp_path, "card0", "nouveau", "0x10de", {"gpu_busy_percent": "99\n"})
    assert gpu.read() == []
    _card(tmp_path, "card1", "amdgpu", "0x1002", {"gpu_busy_percent": "7\n"})
    # found on the next read: the scan is repeated
    assert [r.util_pct for r in gpu.read()] == [7.0]
    assert gpu.problem is None


def test_amd_chosen_after_nvml_finds_no_nvidia_gpu(tmp_path: Path) -> None:
    _tree(tmp_path)
    chain = FirstGpuSensor([NvmlGpu(_NoNvml()), AmdSysfsGpu(tmp_path)])
    snap = Sensors(idle=_Idle(), processes=frozenset, battery=lambda: False, gpu=chain).read()
    assert [g.name for g in snap.gpus] == [
        "AMD Radeon RX 7900 XTX",
        "AMD GPU 0x73bf (card2)",
        "AMD GPU (card3)",
    ]
    assert chain.name == "amdgpu sysfs"
    # the temperature rule sees the hottest AMD card (edge of card0)
    assert snap.readings.gpu_temp_c == 64.0
    assert snap.gpu_problem is None


def test_nvml_wins_when_it_finds_a_gpu(tmp_path: Path) -> None:
    _tree(tmp_path)

    class OneNvidia:
        name = "NVML"
        problem = None

        def read(self) -> list[GpuReading]:
            return [GpuReading("NVIDIA GeForce RTX 4090", 70.0)]

    chain = FirstGpuSensor([OneNvidia(), AmdSysfsGpu(tmp_path)])
    assert [g.name for g in chain.read()] == ["NVIDIA GeForce RTX 4090"]
    assert chain.name == "NVML"


def test_neither_sensor_says_no_nvidia_or_amd(tmp_path: Path) -> None:
    class Broken:
        name = "broken"

        def read(self) -> list[GpuReading]:
            raise OSError("sensor exploded")

    chain = FirstGpuSensor([NvmlGpu(_NoNvml()), AmdSysfsGpu(tmp_path), Broken()])
    snap = Sensors(idle=_Idle(), processes=frozenset, battery=lambda: False, gpu=chain).read()
    assert snap.gpus == ()
    assert snap.readings.gpu_temp_c is None
    assert snap.gpu_problem is not None
    assert snap.gpu_problem.startswith("no NVIDIA or AMD GPU sensor (")
    assert "NVML Shared Library Not Found" in snap.gpu_problem
    assert "no amdgpu card" in snap.gpu_problem


def test_default_sensor_asks_nvml_then_amd_under_sys() -> None:
    chain = default_gpu_sensor()
    kinds = [type(s) for s in chain.sensors]
    if sys.platform.startswith("linux"):
        assert kinds == [NvmlGpu, AmdSysfsGpu]
        assert chain.sensors[1].root == "/sys"
    else:
        assert kinds == [NvmlGpu]
