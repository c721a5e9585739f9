"""`usepod-desktop autostart` and `usepod-desktop service`, run as a user would (a subprocess with
the test's temporary HOME / XDG dirs): what they print and what they leave on disk."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES
from usepod_desktop.core import autostart, service


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ.copy()
    env["PATH"] = "/nonexistent"  # nothing here may call systemctl / launchctl
    return subprocess.run(
        [sys.executable, "-m", "usepod_desktop", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _program() -> list[str]:
    # The subprocess runs the same interpreter, so it computes the same launch command.
    return autostart.launch_command(platform="linux")


def test_autostart_off_by_default_then_on_status_off(isolated_home: Path) -> None:
    entry = isolated_home / ".config" / "autostart" / "usepod-desktop.desktop"
    out = cli("autostart", "status")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "start at login: off"
    assert "(absent)" in out.stdout
    assert not entry.exists()

    out = cli("autostart", "on")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "start at login: on"
    assert lines[1] == f"wrote {entry}:"
    written = entry.read_text().splitlines()
    # It prints exactly what it wrote.
    assert lines[2 : 2 + len(written)] == [f"  {line}" for line in written]
    assert f"Exec={autostart.desktop_exec(_program())}" in written
    assert lines[-1] == f"at login it runs: {shlex.join(_program())}"

    out = cli("autostart", "status")
    assert out.stdout.splitlines()[:3] == [
        "start at login: on",
        f"entry: XDG autostart entry {entry}",
        f"runs: {shlex.join(_program())}",
    ]

    out = cli("autostart", "off")
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        "start at login: off",
        f"removed XDG autostart entry {entry}",
    ]
    assert not entry.exists()
    assert cli("autostart", "off").stdout.startswith("start at login: off (it was not on)")


def test_autostart_status_reports_a_stale_entry(isolated_home: Path) -> None:
    autostart.enable("linux", command=["/old/place/usepod-desktop"])
    out = cli("autostart", "status")
    assert "runs: /old/place/usepod-desktop" in out.stdout
    assert "points at another copy" in out.stdout


def test_autostart_rejects_unknown_action() -> None:
    out = cli("autostart", "maybe")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_service_install_prints_file_commands_and_logs(isolated_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text((FIXTURES / "agent.example.toml").read_text())
    unit = isolated_home / ".config" / "systemd" / "user" / "usepod-desktop.service"
    out = cli("service", "install", "--config", str(config))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"wrote {unit}:"
    written = unit.read_text().splitlines()
    assert lines[1 : 1 + len(written)] == [f"  {line}" for line in written]
    command = [*_program(), "run", "--config", str(config)]
    assert f"ExecStart={' '.join(service.systemd_quote(a) for a in command)}" in written
    assert f"it runs: {shlex.join(command)}" in lines
    assert (
        "enable and start it: systemctl --user daemon-reload && "
        "systemctl --user enable --now usepod-desktop"
    ) in lines
    assert "read its logs: journalctl --user -u usepod-desktop -n 100 -f" in lines
    assert not any(line.startswith("ran:") for line in lines)

    out = cli("service", "status")
    assert out.stdout.splitlines()[:2] == [
        f"service: installed ({unit})",
        f"runs: {shlex.join(command)}",
    ]

    out = cli("service", "uninstall")
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        f"removed {unit}",
        "stop it if it is running: systemctl --user stop usepod-desktop && "
        "systemctl --user daemon-reload",
    ]
    assert not unit.exists()
    assert cli("service", "status").stdout.startswith(f"service: not installed ({unit})")


def test_service_install_start_reports_a_failing_systemctl(
    isolated_home: Path, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text((FIXTURES / "agent.example.toml").read_text())
    # PATH has no systemctl: --start tries to run it and says so instead of crashing.
    out = cli("service", "install", "--start", "--config", str(config))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "ran: systemctl --user daemon-reload (exit 127)" in out.stdout
    assert "systemctl: command not found" in out.stderr
    assert "starting the service failed" in out.stderr


def test_autostart_on_with_config_keeps_it_and_a_refresh_keeps_it_too(
    isolated_home: Path, tmp_path: Path
) -> None:
    """Issue 19 item 15: `autostart on --config F` starts the app with F at login."""
    config = tmp_path / "my agent.toml"
    out = cli("autostart", "on", "--config", str(config))
    assert out.returncode == 0, out.stderr
    expected = [*_program(), "--config", str(config)]
    assert out.stdout.splitlines()[-1] == f"at login it runs: {shlex.join(expected)}"
    assert autostart.current_command("linux") == expected
    # every launch repoints a stale entry at this program: the option stays
    assert not autostart.is_stale("linux")
    assert autostart.refresh("linux", command=["/new/place/usepod-desktop"]) is True
    assert autostart.current_command("linux") == [
        "/new/place/usepod-desktop",
        "--config",
        str(config),
    ]
