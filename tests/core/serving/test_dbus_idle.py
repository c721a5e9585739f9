"""Idle time over D-Bus (GNOME Mutter, org.freedesktop.ScreenSaver) against a real private
session bus (dbus-daemon started here) with a test service answering as those desktops do."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator

import pytest

from usepod_desktop.core.serving.sensors import (
    ChainIdle,
    FreedesktopScreenSaverIdle,
    MutterIdle,
)


@pytest.fixture
def session_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if not shutil.which("dbus-daemon"):
        pytest.fail("dbus-daemon is required (scripts/test installs dbus)")
    proc = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    assert address, "dbus-daemon printed no address"
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
    try:
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class IdleService:
    """Owns `name` on the bus and answers `interface.method` at `path` with `value` (ms)."""

    def __init__(self, name: str, path: str, interface: str, method: str, sig: str) -> None:
        from jeepney.io.blocking import open_dbus_connection

        self.value = 0
        self.calls = 0
        self.conn = open_dbus_connection(bus="SESSION")
        from jeepney.bus_messages import message_bus

        reply = self.conn.send_and_get_reply(message_bus.RequestName(name), timeout=5)
        assert reply.body[0] == 1  # primary owner
        self.path, self.interface, self.method, self.sig = path, interface, method, sig
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        from jeepney import HeaderFields, MessageType, new_error, new_method_return

        while not self._stop:
            try:
                msg = self.conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            except Exception:
                return
            hdr = msg.header
            if hdr.message_type != MessageType.method_call:
                continue
            fields = hdr.fields
            if (
                fields.get(HeaderFields.path) == self.path
                and fields.get(HeaderFields.interface) == self.interface
                and fields.get(HeaderFields.member) == self.method
            ):
                self.calls += 1
                self.conn.send(new_method_return(msg, self.sig, (self.value,)))
            else:
                self.conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))

    def close(self) -> None:
        self._stop = True
        self.thread.join(timeout=5)
        self.conn.close()


def test_mutter_idle_monitor(session_bus: str) -> None:
    service = IdleService(
        "org.gnome.Mutter.IdleMonitor",
        "/org/gnome/Mutter/IdleMonitor/Core",
        "org.gnome.Mutter.IdleMonitor",
        "GetIdletime",
        "t",
    )
    source = MutterIdle()
    try:
        service.value = 125_000
        assert source.idle_seconds() == 125.0
        service.value = 40  # input just now
        assert source.idle_seconds() == 0.04
        assert service.calls == 2
    finally:
        source.close()
        service.close()


def test_freedesktop_screensaver_and_the_chain_fall_through(session_bus: str) -> None:
    service = IdleService(
        "org.freedesktop.ScreenSaver",
        "/org/freedesktop/ScreenSaver",
        "org.freedesktop.ScreenSaver",
        "GetSessionIdleTime",
        "u",
    )
    chain = ChainIdle([MutterIdle(), FreedesktopScreenSaverIdle()])  # no Mutter on this bus
    try:
        service.value = 7_000
        assert chain.idle_seconds() == 7.0
        assert chain.name == "org.freedesktop.ScreenSaver"
    finally:
        for source in chain.sources:
            source.close()
        service.close()


def test_no_service_is_unknown(session_bus: str) -> None:
    source = MutterIdle()
    assert source.idle_seconds() is None
    assert source.idle_seconds() is None  # remembered: not asked every tick


def test_no_session_bus_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    assert FreedesktopScreenSaverIdle().idle_seconds() is None


def test_a_desktop_service_that_starts_later_is_found(
    session_bus: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from usepod_desktop.core.serving import sensors

    source = MutterIdle()
    assert source.idle_seconds() is None  # GNOME Shell not up yet
    service = IdleService(
        "org.gnome.Mutter.IdleMonitor",
        "/org/gnome/Mutter/IdleMonitor/Core",
        "org.gnome.Mutter.IdleMonitor",
        "GetIdletime",
        "t",
    )
    try:
        service.value = 3_000
        assert source.idle_seconds() is None  # not asked again right away
        monkeypatch.setattr(sensors, "RETRY_AFTER_S", 0.0)
        assert source.idle_seconds() == 3.0
    finally:
        source.close()
        service.close()
