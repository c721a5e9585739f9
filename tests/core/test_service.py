"""The headless service: the systemd unit and the launchd plist written into the test's temporary
home, the commands printed (never run unless asked, and then only through the runner seam)."""

from __future__ import annotations

import os
import plistlib
from collections.abc import Sequence
from pathlib import Path

import pytest

from usepod_desktop.core import autostart, service
from usepod_desktop.core.errors import UserFacingError

PROGRAM = "/opt/usepod-desktop/usepod-desktop"


class Recorder:
    def __init__(self, code: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.code = code

    def __call__(self, argv: Sequence[str]) -> int:
        self.calls.append(list(argv))
        return self.code


def _never(argv: Sequence[str]) -> int:
    raise AssertionError(f"ran {argv} without being asked")


def _unit_values(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current[key] = value
    return sections


def test_systemd_unit_written_in_the_home(isolated_home: Path) -> None:
    result = service.install("linux", base=[PROGRAM], runner=_never)
    path = isolated_home / ".config" / "systemd" / "user" / "usepod-desktop.service"
    assert result.path == path
    text = path.read_text()
    assert text == result.content
    unit = _unit_values(text)
    assert unit["Service"]["ExecStart"] == f"{PROGRAM} run"
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Service"]["RestartSec"] == "5"
    assert unit["Install"]["WantedBy"] == "default.target"
    assert result.command == [PROGRAM, "run"]
    assert result.start.text == (
        "systemctl --user daemon-reload && systemctl --user enable --now usepod-desktop"
    )
    assert result.logs == "journalctl --user -u usepod-desktop -n 100 -f"
    assert result.ran == []
    assert any("enable-linger" in n for n in result.notes)


def test_systemd_unit_uses_current_program_and_extra_args(isolated_home: Path) -> None:
    cfg = "/home/me/my configs/agent.toml"
    result = service.install("linux", extra_args=["--config", cfg, "--allow-insecure"])
    expected = [*autostart.launch_command(platform="linux"), "run", "--config", cfg]
    assert result.command == [*expected, "--allow-insecure"]
    exec_start = _unit_values(result.path.read_text())["Service"]["ExecStart"]
    assert f'"{cfg}"' in exec_start
    assert service.installed_command("linux") == result.command


def test_systemd_quoting_round_trips() -> None:
    argv = ["/a b/usepod-desktop", "run", "--config", '/x/100%/$HOME/"q"\\z']
    line = " ".join(service.systemd_quote(a) for a in argv)
    assert "100%%" in line and "$$HOME" in line
    assert service.parse_exec_start(line) == argv


def test_install_start_runs_the_commands_through_the_runner(isolated_home: Path) -> None:
    rec = Recorder()
    result = service.install("linux", base=[PROGRAM], start=True, runner=rec)
    assert rec.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "usepod-desktop"],
    ]
    assert result.ran == [
        ("systemctl --user daemon-reload", 0),
        ("systemctl --user enable --now usepod-desktop", 0),
    ]
    failing = Recorder(code=1)
    again = service.install("linux", base=[PROGRAM], start=True, runner=failing)
    assert len(failing.calls) == 1 and again.ran == [("systemctl --user daemon-reload", 1)]
    assert any("replaced an existing service file" in n for n in again.notes)


def test_install_warns_when_autostart_is_also_on(isolated_home: Path) -> None:
    assert not any("autostart off" in n for n in service.install("linux", base=[PROGRAM]).notes)
    autostart.enable("linux", command=[PROGRAM])
    assert any("autostart off" in n for n in service.install("linux", base=[PROGRAM]).notes)


def test_systemd_uninstall_removes_file_and_wants_link(isolated_home: Path) -> None:
    result = service.install("linux", base=[PROGRAM], runner=_never)
    wants = result.path.parent / "default.target.wants" / "usepod-desktop.service"
    wants.parent.mkdir()
    wants.symlink_to(result.path)  # what `systemctl --user enable` makes
    removed = service.uninstall("linux", runner=_never)
    assert removed.removed is True
    assert not result.path.exists() and not wants.is_symlink()
    assert removed.stop.text == (
        "systemctl --user stop usepod-desktop && systemctl --user daemon-reload"
    )
    assert service.uninstall("linux", runner=_never).removed is False


def test_uninstall_stop_disables_before_removing(isolated_home: Path) -> None:
    service.install("linux", base=[PROGRAM])
    seen: list[tuple[list[str], bool]] = []

    def runner(argv: Sequence[str]) -> int:
        seen.append((list(argv), service.unit_path().exists()))
        return 0

    service.uninstall("linux", stop=True, runner=runner)
    assert seen == [
        (["systemctl", "--user", "disable", "--now", "usepod-desktop"], True),
        (["systemctl", "--user", "daemon-reload"], False),
    ]


def test_status_reads_the_file_and_spots_a_moved_program(isolated_home: Path) -> None:
    st = service.status("linux", base=[PROGRAM])
    assert st.installed is False and st.command is None and st.stale is False
    service.install("linux", base=[PROGRAM], extra_args=["--config", "/etc/agent.toml"])
    st = service.status("linux", base=[PROGRAM])
    assert st.installed is True
    assert st.command == [PROGRAM, "run", "--config", "/etc/agent.toml"]
    assert st.stale is False
    assert st.check.text == "systemctl --user status usepod-desktop"
    assert service.status("linux", base=["/new/place/usepod-desktop"]).stale is True


def test_launchd_plist(isolated_home: Path) -> None:
    program = "/Applications/Use Pod Desktop.app/Contents/MacOS/usepod-desktop"
    result = service.install("darwin", base=[program], runner=_never)
    path = isolated_home / "Library" / "LaunchAgents" / "ai.usepod.usepod-desktop.agent.plist"
    assert result.path == path
    plist = plistlib.loads(path.read_bytes())
    assert plistlib.loads(result.content.encode()) == plist
    assert plist["Label"] == "ai.usepod.usepod-desktop.agent"
    assert plist["ProgramArguments"] == [program, "run"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    logs = Path(plist["StandardErrorPath"]).parent
    assert Path(plist["StandardOutPath"]).parent == logs
    assert logs.is_dir()
    # Standard, not Background: launchd throttles Background jobs' CPU and I/O
    assert plist["ProcessType"] == "Standard"
    target = f"gui/{os.getuid()}/ai.usepod.usepod-desktop.agent"
    assert result.start.steps == [
        ["launchctl", "bootout", target],
        ["launchctl", "bootstrap", f"gui/{os.getuid()}", str(path)],
    ]
    assert result.start.may_fail == {0}  # not loaded yet: bootout fails harmlessly
    assert not any("load" in step[1:2] for step in result.start.steps)
    assert service.logs_command("darwin") == [
        "tail",
        "-n",
        "100",
        str(logs / "agent.err.log"),
        str(logs / "agent.out.log"),
    ]
    # says plainly that a LaunchAgent is not a headless boot-time service
    assert service.MACOS_SCOPE in result.notes
    assert "log in" in service.MACOS_SCOPE and "does not run at boot" in service.MACOS_SCOPE
    assert result.log_files == [logs / "agent.out.log", logs / "agent.err.log"]
    assert service.installed_command("darwin") == [program, "run"]


def test_launchd_default_log_dir_is_library_logs(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("USEPOD_LOG_DIR")
    plist = plistlib.loads(service.install("darwin", base=[PROGRAM]).content.encode())
    assert plist["StandardErrorPath"] == str(
        isolated_home / "Library" / "Logs" / "usepod-desktop" / "agent.err.log"
    )


def test_launchd_uninstall(isolated_home: Path) -> None:
    service.install("darwin", base=[PROGRAM])
    rec = Recorder()
    removed = service.uninstall("darwin", stop=True, runner=rec, probe=Recorder(0))
    target = f"gui/{os.getuid()}/ai.usepod.usepod-desktop.agent"
    assert rec.calls == [["launchctl", "bootout", target]]
    assert removed.removed and not service.plist_path().exists()
    # not loaded in launchd: nothing to boot out (bootout would fail), the file still goes
    service.install("darwin", base=[PROGRAM])
    rec = Recorder()
    removed = service.uninstall("darwin", stop=True, runner=rec, probe=Recorder(113))
    assert rec.calls == [] and removed.ran == [] and removed.removed


def test_windows_has_no_service() -> None:
    with pytest.raises(UserFacingError, match="autostart on"):
        service.install("win32", base=[PROGRAM], runner=_never)
