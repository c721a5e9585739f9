"""Sensors for the serving rules, behind one interface: user idle time, running processes,
battery, GPU figures. Each says "unknown" (None) rather than guess; an unknown idle time is
never taken for "the user is away".

Idle time, by platform (the first source that answers wins and is kept):
- X11: the XScreenSaver extension (libXss through ctypes), skipped under Wayland because
  XWayland only sees input sent to X clients;
- GNOME (X11 or Wayland): `org.gnome.Mutter.IdleMonitor.GetIdletime` on the session bus;
- KDE and others: `org.freedesktop.ScreenSaver.GetSessionIdleTime` on the session bus;
- fallback: systemd-logind's `IdleHint`/`IdleSinceHint` of our session (system bus);
- Windows: `GetLastInputInfo`; macOS: `CGEventSourceSecondsSinceLastEventType`.

Processes and battery: psutil. GPU: NVML (nvidia-ml-py) where an NVIDIA driver is present,
else on Linux the amdgpu driver's sysfs files; read only (we never set clocks or power limits);
elsewhere the status says no GPU sensor.
Every read is blocking: call :meth:`Sensors.read` from a worker thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from usepod_desktop.core.serving.policy import Readings

log = logging.getLogger(__name__)

DBUS_TIMEOUT_S = 1.0
RETRY_AFTER_S = 60.0  # a source that failed is asked again after this (a desktop may start late)


class IdleSource(Protocol):
    name: str

    def idle_seconds(self) -> float | None:
        """Seconds since the last user input, or None when this source cannot tell."""


class _Retrying:
    """`_failed` is true for RETRY_AFTER_S after a failure, then the source is tried again."""

    _failed_at: float | None = None

    @property
    def _failed(self) -> bool:
        if self._failed_at is None:
            return False
        if time.monotonic() - self._failed_at >= RETRY_AFTER_S:
            self._failed_at = None
            return False
        return True

    @_failed.setter
    def _failed(self, value: bool) -> None:
        self._failed_at = time.monotonic() if value else None


# ---------------------------------------------------------------------------- X11


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = (
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),
        ("eventMask", ctypes.c_ulong),
    )


class X11Idle(_Retrying):
    """XScreenSaverQueryInfo on `display` (default $DISPLAY): what xprintidle reports."""

    name = "X11 XScreenSaver"

    def __init__(self, display: str | None = None) -> None:
        self.display_name = display if display is not None else os.environ.get("DISPLAY", "")
        self._lock = threading.Lock()
        self._x11: Any = None
        self._xss: Any = None
        self._dpy: int | None = None
        self._info: Any = None
        self._failed = False

    def _open(self) -> bool:
        if self._dpy is not None:
            return True
        if self._failed or not self.display_name:
            return False
        x11_path = ctypes.util.find_library("X11")
        xss_path = ctypes.util.find_library("Xss")
        if not x11_path or not xss_path:
            self._failed = True
            return False
        x11 = ctypes.cdll.LoadLibrary(x11_path)
        xss = ctypes.cdll.LoadLibrary(xss_path)
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        x11.XDefaultRootWindow.restype = ctypes.c_ulong
        x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        x11.XFree.argtypes = [ctypes.c_void_p]
        xss.XScreenSaverQueryExtension.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_int),
        ]
        xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
        xss.XScreenSaverQueryInfo.argtypes = [
            ctypes.c_void_p,
            ctypes.c_ulong,
            ctypes.POINTER(_XScreenSaverInfo),
        ]
        dpy = x11.XOpenDisplay(self.display_name.encode())
        if not dpy:
            self._failed = True  # no X server there; do not retry every few seconds
            return False
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        if not xss.XScreenSaverQueryExtension(
            dpy, ctypes.byref(event_base), ctypes.byref(error_base)
        ):
            x11.XCloseDisplay(dpy)
            self._failed = True
            return False
        self._x11, self._xss, self._dpy = x11, xss, dpy
        self._info = xss.XScreenSaverAllocInfo()
        return True

    def idle_seconds(self) -> float | None:
        with self._lock:
            try:
                if not self._open():
                    return None
                root = self._x11.XDefaultRootWindow(self._dpy)
                if not self._xss.XScreenSaverQueryInfo(self._dpy, root, self._info):
                    return None
                return self._info.contents.idle / 1000.0
            except OSError:
                self._failed = True
                return None

    def close(self) -> None:
        with self._lock:
            if self._dpy is not None:
                if self._info is not None:
                    self._x11.XFree(self._info)
                self._x11.XCloseDisplay(self._dpy)
                self._dpy = None
                self._info = None


# ---------------------------------------------------------------------------- D-Bus


class _DBusIdle(_Retrying):
    """One D-Bus method call answering the idle time in milliseconds."""

    name = ""
    bus = "SESSION"
    destination = ""
    path = ""
    interface = ""
    method = ""

    def __init__(self) -> None:
        self._conn: Any = None
        self._failed = False
        self._lock = threading.Lock()

    def _call(self, msg: Any) -> Any:
        from jeepney.io.blocking import open_dbus_connection

        if self._conn is None:
            self._conn = open_dbus_connection(bus=self.bus)
        return self._conn.send_and_get_reply(msg, timeout=DBUS_TIMEOUT_S)

    def idle_seconds(self) -> float | None:
        if self._failed:
            return None
        with self._lock:
            try:
                from jeepney import DBusAddress, new_method_call
                from jeepney.wrappers import DBusErrorResponse, unwrap_msg

                addr = DBusAddress(self.path, bus_name=self.destination, interface=self.interface)
                reply = self._call(new_method_call(addr, self.method))
                try:
                    body = unwrap_msg(reply)
                except DBusErrorResponse:
                    self._failed = True  # service or method absent on this desktop
                    return None
                return self._convert(body)
            except Exception as exc:  # no bus, timeout, jeepney missing
                log.debug("%s idle source unavailable: %s", self.name, exc)
                self._failed = True
                self.close()
                return None

    def _convert(self, body: Any) -> float | None:
        value = body[0] if body else None
        if isinstance(value, int) and value >= 0:
            return value / 1000.0
        return None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


class MutterIdle(_DBusIdle):
    name = "GNOME Mutter IdleMonitor"
    destination = "org.gnome.Mutter.IdleMonitor"
    path = "/org/gnome/Mutter/IdleMonitor/Core"
    interface = "org.gnome.Mutter.IdleMonitor"
    method = "GetIdletime"


class FreedesktopScreenSaverIdle(_DBusIdle):
    name = "org.freedesktop.ScreenSaver"
    destination = "org.freedesktop.ScreenSaver"
    path = "/org/freedesktop/ScreenSaver"
    interface = "org.freedesktop.ScreenSaver"
    method = "GetSessionIdleTime"


class LogindIdle(_DBusIdle):
    """logind's IdleHint of this session: coarse (set by the desktop after its own idle delay),
    so "not idle" may mean "idle for less than the desktop's delay"."""

    name = "systemd-logind IdleHint"
    bus = "SYSTEM"
    destination = "org.freedesktop.login1"
    path = "/org/freedesktop/login1/session/auto"
    interface = "org.freedesktop.DBus.Properties"

    def idle_seconds(self) -> float | None:
        if self._failed:
            return None
        with self._lock:
            try:
                from jeepney import DBusAddress
                from jeepney.bus_messages import Properties
                from jeepney.wrappers import DBusErrorResponse, unwrap_msg

                addr = DBusAddress(
                    self.path,
                    bus_name=self.destination,
                    interface="org.freedesktop.login1.Session",
                )
                props = Properties(addr)
                try:
                    hint = unwrap_msg(self._call(props.get("IdleHint")))[0][1]
                    since = unwrap_msg(self._call(props.get("IdleSinceHint")))[0][1]
                except DBusErrorResponse:
                    self._failed = True
                    return None
                if not hint:
                    return 0.0
                if not since:
                    return None
                return max(0.0, time.time() - since / 1_000_000)
            except Exception as exc:
                log.debug("logind idle source unavailable: %s", exc)
                self._failed = True
                self.close()
                return None


# ---------------------------------------------------------------------------- Windows, macOS


class WindowsIdle:
    name = "Windows GetLastInputInfo"

    def idle_seconds(self) -> float | None:  # pragma: no cover - Windows only
        if sys.platform != "win32":
            return None

        class LASTINPUTINFO(ctypes.Structure):
            _fields_ = (("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint))

        info = LASTINPUTINFO()
        info.cbSize = ctypes.sizeof(info)
        user32 = ctypes.windll.user32  # type: ignore[attr-defined]
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        if not user32.GetLastInputInfo(ctypes.byref(info)):
            return None
        ticks = kernel32.GetTickCount() & 0xFFFFFFFF
        return ((ticks - info.dwTime) & 0xFFFFFFFF) / 1000.0


class MacIdle:
    name = "macOS CGEventSource"

    def idle_seconds(self) -> float | None:  # pragma: no cover - macOS only
        if sys.platform != "darwin":
            return None
        path = ctypes.util.find_library("CoreGraphics") or (
            "/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics"
        )
        try:
            cg = ctypes.cdll.LoadLibrary(path)
        except OSError:
            return None
        fn = cg.CGEventSourceSecondsSinceLastEventType
        fn.argtypes = [ctypes.c_int32, ctypes.c_uint32]
        fn.restype = ctypes.c_double
        # kCGEventSourceStateCombinedSessionState = 0, kCGAnyInputEventType = ~0
        value = fn(0, 0xFFFFFFFF)
        return value if value >= 0 else None


class ChainIdle:
    """The first source that answers; the one that answered is kept (and named in the status)."""

    def __init__(self, sources: list[Any]) -> None:
        self.sources = sources
        self.active: Any = None

    @property
    def name(self) -> str:
        return self.active.name if self.active is not None else "none"

    def idle_seconds(self) -> float | None:
        if self.active is not None:
            value = self.active.idle_seconds()
            if value is not None:
                return value
            self.active = None
        for source in self.sources:
            value = source.idle_seconds()
            if value is not None:
                self.active = source
                return value
        return None


def default_idle_source() -> ChainIdle:
    if sys.platform == "win32":
        return ChainIdle([WindowsIdle()])
    if sys.platform == "darwin":
        return ChainIdle([MacIdle()])
    dbus_sources: list[Any] = [MutterIdle(), FreedesktopScreenSaverIdle()]
    if os.environ.get("WAYLAND_DISPLAY"):
        return ChainIdle([*dbus_sources, LogindIdle()])
    return ChainIdle([X11Idle(), *dbus_sources, LogindIdle()])


# ---------------------------------------------------------------------------- processes, battery


def running_process_names() -> frozenset[str]:
    """Lower-cased names of this computer's processes (the executable name where known)."""
    import psutil

    names: set[str] = set()
    for proc in psutil.process_iter(["name", "exe"]):
        info = proc.info
        for value in (info.get("name"), os.path.basename(info.get("exe") or "")):
            if value:
                names.add(value.lower())
    return frozenset(names)


def on_battery(sensors_battery: Callable[[], Any] | None = None) -> bool | None:
    """True on battery power, False on mains or with no battery, None when unknown."""
    if sensors_battery is None:
        import psutil

        sensors_battery = getattr(psutil, "sensors_battery", None)
        if sensors_battery is None:
            return None
    try:
        battery = sensors_battery()
    except Exception:
        return None
    if battery is None:
        return False  # no battery: a desktop on mains
    plugged = getattr(battery, "power_plugged", None)
    if plugged is None:
        return None
    return not plugged


# ---------------------------------------------------------------------------- GPU


@dataclass(frozen=True, slots=True)
class GpuReading:
    name: str
    temp_c: float | None = None
    util_pct: float | None = None
    vram_used_mb: float | None = None
    vram_total_mb: float | None = None
    power_w: float | None = None

    @classmethod
    def from_status(cls, g: Mapping[str, Any]) -> GpuReading:
        """Back from one entry of the serving status' `gpus` list (`status --json`)."""
        return cls(
            name=str(g.get("name", "GPU")),
            temp_c=g.get("temperature_c"),
            util_pct=g.get("utilization_pct"),
            vram_used_mb=g.get("vram_used_mb"),
            vram_total_mb=g.get("vram_total_mb"),
            power_w=g.get("power_w"),
        )

    def summary(self, *, labelled: bool = False) -> str:
        """ "RTX 4090: 64 °C, 35 %, 12.0/24.0 GB, 210 W"; `labelled` (what people read: the
        tray, the dashboard, `status`): "RTX 4090: 64 °C, 35 % busy, VRAM 12.0/24.0 GB, 210 W"."""
        parts: list[str] = []
        if self.temp_c is not None:
            parts.append(f"{self.temp_c:.0f} °C")
        if self.util_pct is not None:
            parts.append(f"{self.util_pct:.0f} %" + (" busy" if labelled else ""))
        if self.vram_used_mb is not None and self.vram_total_mb:
            vram = f"{self.vram_used_mb / 1024:.1f}/{self.vram_total_mb / 1024:.1f} GB"
            parts.append(f"VRAM {vram}" if labelled else vram)
        if self.power_w is not None:
            parts.append(f"{self.power_w:.0f} W")
        return f"{self.name}: {', '.join(parts) or 'no figures'}"


class NvmlGpu:
    """NVIDIA GPUs through NVML (read only). `nvml` is the pynvml module (injectable)."""

    name = "NVML"

    def __init__(self, nvml: Any = None) -> None:
        self._nvml = nvml
        self._ready = False
        self.problem: str | None = None
        self.reason: str | None = None  # the short why, for a status naming several sensors

    def _init(self) -> bool:
        if self._ready:
            return True
        if self.problem is not None:
            return False
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:
                self.problem = "no GPU sensor: nvidia-ml-py is not installed"
                self.reason = "nvidia-ml-py is not installed"
                return False
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
        except Exception as exc:
            self.reason = str(exc)[:80] or type(exc).__name__
            self.problem = f"no NVIDIA GPU sensor ({self.reason})"
            return False
        self._ready = True
        return True

    def read(self) -> list[GpuReading]:
        if not self._init():
            return []
        nvml = self._nvml
        out: list[GpuReading] = []
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception as exc:
            self.problem = f"NVML: {exc}"
            self.reason = str(exc)[:80] or type(exc).__name__
            return []
        for i in range(min(count, 16)):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(handle)
            except Exception:
                continue
            if isinstance(name, bytes):
                name = name.decode(errors="replace")
            out.append(
                GpuReading(
                    str(name)[:64],
                    _safe(lambda h=handle: nvml.nvmlDeviceGetTemperature(h, 0)),
                    _safe(lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                    _safe(lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20),
                    _safe(lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h).total / 2**20),
                    _safe(lambda h=handle: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
                )
            )
        return out


def _safe(fn: Callable[[], Any]) -> float | None:
    try:
        value = float(fn())
    except Exception:
        return None
    return value if value == value and value >= 0 else None  # NaN/negative -> unknown


AMD_VENDOR_ID = "0x1002"
_SYSFS_MAX_BYTES = 128  # every amdgpu figure is one short line; a longer file is not one
_SYSFS_INT = re.compile(r"[0-9]{1,20}")
_CARD_DIR = re.compile(r"card[0-9]{1,3}")  # card0, not the connectors (card0-DP-1)


def _sysfs_text(path: str) -> str | None:
    """The first line of a sysfs file, or None (absent, unreadable, not text, too long)."""
    try:
        with open(path, "rb") as f:
            data = f.read(_SYSFS_MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > _SYSFS_MAX_BYTES:
        return None
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        return None


def _sysfs_int(path: str) -> int | None:
    """A sysfs file holding one non-negative integer, or None for anything else."""
    text = _sysfs_text(path)
    if text is None or not _SYSFS_INT.fullmatch(text):
        return None
    return int(text)


class AmdSysfsGpu:
    """AMD GPUs through the amdgpu driver's sysfs files (Linux, read only).

    A card is /sys/class/drm/cardN/device whose `driver` link ends in `amdgpu` or whose
    `vendor` is 0x1002. Figures: temperature from the hwmon sensor labelled "edge" (temp1 where
    there are no labels; the card's surface temperature, the figure closest to what NVML calls
    the GPU temperature; "junction" runs 10-20 °C hotter and would trip thresholds set with an
    NVIDIA card in mind), utilisation from gpu_busy_percent, VRAM from mem_info_vram_used and
    mem_info_vram_total (bytes), power from hwmon power1_average or else power1_input
    (microwatts). A file that is absent or holds anything but an integer gives None for that
    figure. `root` is the sysfs mount (injectable for tests)."""

    name = "amdgpu sysfs"

    def __init__(self, root: str | os.PathLike[str] = "/sys") -> None:
        self.root = os.fspath(root)
        self.problem: str | None = None
        self.reason: str | None = None

    def _cards(self) -> list[tuple[str, str]]:
        drm = os.path.join(self.root, "class", "drm")
        try:
            entries = os.listdir(drm)
        except OSError:
            return []
        cards = sorted((e for e in entries if _CARD_DIR.fullmatch(e)), key=lambda e: int(e[4:]))
        out: list[tuple[str, str]] = []
        for card in cards[:16]:
            device = os.path.join(drm, card, "device")
            try:
                driver = os.path.basename(os.readlink(os.path.join(device, "driver")))
            except OSError:
                driver = ""
            vendor = (_sysfs_text(os.path.join(device, "vendor")) or "").lower()
            if driver == "amdgpu" or vendor == AMD_VENDOR_ID:
                out.append((card, device))
        return out

    def read(self) -> list[GpuReading]:
        cards = self._cards()
        if not cards:
            self.reason = "no amdgpu card under /sys/class/drm"
            self.problem = f"no AMD GPU sensor ({self.reason})"
            return []
        self.problem = self.reason = None
        return [self._read_card(card, device) for card, device in cards]

    def _read_card(self, card: str, device: str) -> GpuReading:
        hwmon = self._hwmon(device)
        temp_mc = power_uw = None
        if hwmon is not None:
            temp_mc = _sysfs_int(os.path.join(hwmon, f"{self._temp_sensor(hwmon)}_input"))
            power_uw = _sysfs_int(os.path.join(hwmon, "power1_average"))
            if power_uw is None:
                power_uw = _sysfs_int(os.path.join(hwmon, "power1_input"))
        util = _sysfs_int(os.path.join(device, "gpu_busy_percent"))
        used = _sysfs_int(os.path.join(device, "mem_info_vram_used"))
        total = _sysfs_int(os.path.join(device, "mem_info_vram_total"))
        return GpuReading(
            self._card_name(card, device),
            temp_mc / 1000.0 if temp_mc is not None else None,
            float(util) if util is not None and util <= 100 else None,
            used / 2**20 if used is not None else None,
            total / 2**20 if total is not None else None,
            power_uw / 1_000_000.0 if power_uw is not None else None,
        )

    @staticmethod
    def _hwmon(device: str) -> str | None:
        """The device's hwmon directory (the one named "amdgpu" when there are several)."""
        base = os.path.join(device, "hwmon")
        try:
            entries = sorted(e for e in os.listdir(base) if e.startswith("hwmon"))
        except OSError:
            return None
        for entry in entries:
            if _sysfs_text(os.path.join(base, entry, "name")) == "amdgpu":
                return os.path.join(base, entry)
        return os.path.join(base, entries[0]) if entries else None

    @staticmethod
    def _temp_sensor(hwmon: str) -> str:
        """ "tempN" of the sensor labelled "edge"; temp1 (edge on every amdgpu card) otherwise."""
        for n in range(1, 8):
            if _sysfs_text(os.path.join(hwmon, f"temp{n}_label")) == "edge":
                return f"temp{n}"
        return "temp1"

    @staticmethod
    def _card_name(card: str, device: str) -> str:
        product = _sysfs_text(os.path.join(device, "product_name"))
        if product and product.isprintable():
            return product[:64]
        pci_id = _sysfs_text(os.path.join(device, "device"))
        if pci_id and re.fullmatch(r"0x[0-9a-fA-F]{4}", pci_id):
            return f"AMD GPU {pci_id.lower()} ({card})"
        return f"AMD GPU ({card})"


class FirstGpuSensor:
    """The first sensor that finds a GPU: NVML, then (Linux) amdgpu's sysfs files, asked in that
    order on every read (NVML keeps a failed start; the sysfs scan is repeated). The sensors
    share `read() -> list[GpuReading]` and `problem`, so the rules, tray, dashboard and metrics
    do not care which one answered."""

    def __init__(self, sensors: list[Any]) -> None:
        self.sensors = sensors
        self.active: Any = None
        self.problem: str | None = None

    @property
    def name(self) -> str:
        return getattr(self.active, "name", "none")

    def read(self) -> list[GpuReading]:
        for sensor in self.sensors:
            try:
                readings = sensor.read()
            except Exception as exc:  # a sensor never takes the serving rules down
                log.debug("GPU sensor %s failed: %s", getattr(sensor, "name", sensor), exc)
                readings = []
            if readings:
                self.active, self.problem = sensor, None
                return readings
        self.active = None
        names = " or ".join(getattr(s, "name", "?") for s in self.sensors)
        if len(self.sensors) == 1:
            self.problem = getattr(self.sensors[0], "problem", None) or f"no GPU sensor ({names})"
        else:
            details = "; ".join(
                f"{getattr(s, 'name', '?')}: {getattr(s, 'reason', None) or 'no GPU found'}"
                for s in self.sensors
            )
            self.problem = f"no NVIDIA or AMD GPU sensor ({details})"
        return []


def default_gpu_sensor() -> FirstGpuSensor:
    if sys.platform.startswith("linux"):
        return FirstGpuSensor([NvmlGpu(), AmdSysfsGpu()])
    return FirstGpuSensor([NvmlGpu()])


# ---------------------------------------------------------------------------- all together


@dataclass(frozen=True, slots=True)
class Snapshot:
    readings: Readings
    gpus: tuple[GpuReading, ...] = ()
    idle_source: str = "none"
    gpu_problem: str | None = None
    read_at: float = field(default_factory=time.time)


class Sensors:
    """Reads every sensor the rules need. Each part is injectable (tests, other platforms)."""

    def __init__(
        self,
        *,
        idle: Any = None,
        processes: Callable[[], frozenset[str]] | None = None,
        battery: Callable[[], bool | None] | None = None,
        gpu: Any = None,
    ) -> None:
        self.idle = idle if idle is not None else default_idle_source()
        self.processes = processes or running_process_names
        self.battery = battery or on_battery
        self.gpu = gpu if gpu is not None else default_gpu_sensor()

    def read(self, *, need_idle: bool = True, need_processes: bool = True) -> Snapshot:
        idle = self.idle.idle_seconds() if need_idle else None
        try:
            procs = self.processes() if need_processes else frozenset()
        except Exception as exc:
            log.debug("process list failed: %s", exc)
            procs = frozenset()
        gpus = tuple(self.gpu.read())
        temps = [g.temp_c for g in gpus if g.temp_c is not None]
        readings = Readings(
            idle_s=idle,
            processes=procs,
            on_battery=self.battery(),
            gpu_temp_c=max(temps) if temps else None,
        )
        return Snapshot(
            readings,
            gpus,
            getattr(self.idle, "name", "none") if need_idle else "not needed",
            getattr(self.gpu, "problem", None),
        )
