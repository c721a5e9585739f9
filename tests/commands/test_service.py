"""`usepod-desktop service ...` as a user runs it (a subprocess), with recording fakes of
`systemctl`, `journalctl` and `launchctl` first on PATH: real processes that write their argv to
a file and exit with the code the test chose. Nothing here reaches the real service managers."""

from __future__ import annotations

import json
import os
import plistlib
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from usepod_desktop.core import service

UNIT_NAME = "usepod-desktop.service"


class FakeTools:
    """A bin directory of fake service-manager executables, and what they were called with.
    `FAKE_EXIT_<TOOL>_<VERB>` (e.g. FAKE_EXIT_SYSTEMCTL_START=5) sets one command's exit code."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "fakebin"
        self.bin.mkdir()
        self.record = root / "calls.jsonl"
        self.codes: dict[str, int] = {}

    def add(self, name: str) -> None:
        script = self.bin / name
        script.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            "name = os.path.basename(sys.argv[0])\n"
            f"with open({str(self.record)!r}, 'a') as fh:\n"
            "    fh.write(json.dumps([name, *sys.argv[1:]]) + '\\n')\n"
            "verb = next((a for a in sys.argv[1:] if not a.startswith('-')), '')\n"
            "key = ('FAKE_EXIT_' + name + '_' + verb).upper().replace('-', '_')\n"
            "sys.exit(int(os.environ.get(key, os.environ.get('FAKE_EXIT_' + name.upper(), '0'))))\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[list[str]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def env(self, **codes: int) -> dict[str, str]:
        env = os.environ.copy()
        env["PATH"] = str(self.bin)  # only the fakes: a real systemctl must never run
        for key, code in codes.items():
            env[f"FAKE_EXIT_{key.upper()}"] = str(code)
        return env


@pytest.fixture
def tools(tmp_path: Path) -> FakeTools:
    fake = FakeTools(tmp_path)
    for name in ("systemctl", "journalctl", "launchctl"):
        fake.add(name)
    return fake


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text((FIXTURES / "agent.example.toml").read_text())
    return path


def cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usepod_desktop", *args],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cwd=cwd,
        timeout=60,
    )


def _unit(home: Path) -> Path:
    return home / ".config" / "systemd" / "user" / UNIT_NAME


def test_status_not_installed_exits_3(isolated_home: Path, tools: FakeTools) -> None:
    out = cli(tools.env(), "service", "status")
    assert out.returncode == 3, out.stderr
    assert out.stdout.startswith(f"service: not installed ({_unit(isolated_home)})")
    assert tools.calls() == []


def test_start_stop_restart_logs_run_systemctl_and_journalctl(
    isolated_home: Path, tools: FakeTools, config: Path
) -> None:
    env = tools.env()
    out = cli(env, "service", "install", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert tools.calls() == []  # install without --start runs nothing

    assert cli(env, "service", "start").returncode == 0
    assert cli(env, "service", "stop").returncode == 0
    assert cli(env, "service", "restart").returncode == 0
    assert cli(env, "service", "logs").returncode == 0
    out = cli(env, "service", "logs", "-f")
    assert out.returncode == 0, out.stderr
    assert tools.calls() == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "start", "usepod-desktop"],
        ["systemctl", "--user", "stop", "usepod-desktop"],
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "restart", "usepod-desktop"],
        ["journalctl", "--user", "-u", "usepod-desktop", "-n", "100", "--no-pager"],
        ["journalctl", "--user", "-u", "usepod-desktop", "-n", "100", "-f"],
    ]


def test_a_failing_systemctl_start_exits_1_naming_the_command(
    isolated_home: Path, tools: FakeTools, config: Path
) -> None:
    assert cli(tools.env(), "service", "install", "--config", str(config)).returncode == 0
    out = cli(tools.env(systemctl_start=5), "service", "start")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: `systemctl --user start usepod-desktop` failed (exit 5)"
    ]


def test_control_without_an_installed_service_exits_3(
    isolated_home: Path, tools: FakeTools
) -> None:
    for action in ("start", "stop", "restart"):
        out = cli(tools.env(), "service", action)
        assert out.returncode == 3, (action, out.stderr)
        assert "not installed" in out.stderr and "service install" in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert tools.calls() == []


def test_no_service_manager_is_one_line_not_invalid_choice(
    isolated_home: Path, tmp_path: Path, config: Path
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    assert cli(env, "service", "install", "--config", str(config)).returncode == 0
    for args in (["start"], ["stop"], ["restart"], ["logs", "-f"]):
        out = cli(env, "service", *args)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "not found on PATH" in lines[0], out.stderr
        assert "invalid choice" not in out.stderr and "Traceback" not in out.stderr


def test_unknown_action_is_one_line(isolated_home: Path, tools: FakeTools) -> None:
    out = cli(tools.env(), "service", "reload")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: unknown service action 'reload'; use one of: "
        "install, uninstall, status, start, stop, restart, logs"
    ]


def test_install_refuses_a_missing_or_invalid_agent_toml(
    isolated_home: Path, tools: FakeTools, tmp_path: Path
) -> None:
    out = cli(tools.env(), "service", "install", "--start", cwd=tmp_path)
    assert out.returncode == 2
    assert "not installing: no agent.toml found" in out.stderr
    assert "restart in a loop" in out.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[coordinator]\nurl = 'http://example.invalid'\n")
    out = cli(tools.env(), "service", "install", "--config", str(broken))
    assert out.returncode == 2 and "not installing:" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not _unit(isolated_home).exists()
    assert tools.calls() == []


def test_install_passes_a_config_found_in_the_working_directory(
    isolated_home: Path, tools: FakeTools, config: Path
) -> None:
    # ./agent.toml is found now, but the service runs in another directory: pin the path.
    out = cli(tools.env(), "service", "install", cwd=config.parent)
    assert out.returncode == 0, out.stderr
    assert service.installed_command("linux")[-2:] == ["--config", str(config.resolve())]


def test_uninstall_reports_a_failed_systemctl(
    isolated_home: Path, tools: FakeTools, config: Path
) -> None:
    assert cli(tools.env(), "service", "install", "--config", str(config)).returncode == 0
    out = cli(tools.env(systemctl_disable=1), "service", "uninstall", "--stop")
    assert out.returncode == 1
    assert "ran: systemctl --user disable --now usepod-desktop (exit 1)" in out.stdout
    assert "`systemctl --user disable --now usepod-desktop` failed (exit 1)" in out.stderr
    assert ["systemctl", "--user", "disable", "--now", "usepod-desktop"] in tools.calls()

    assert cli(tools.env(), "service", "install", "--config", str(config)).returncode == 0
    out = cli(tools.env(), "service", "uninstall", "--stop")
    assert out.returncode == 0, out.stderr
    assert not _unit(isolated_home).exists()


def test_install_start_with_fake_systemctl(
    isolated_home: Path, tools: FakeTools, config: Path
) -> None:
    out = cli(tools.env(), "service", "install", "--start", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert tools.calls() == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", "--now", "usepod-desktop"],
    ]


# --- macOS: the same control functions against a fake launchctl (run for real on PATH) ----


def _launchctl_env(tools: FakeTools, monkeypatch: pytest.MonkeyPatch, **codes: int) -> None:
    monkeypatch.setenv("PATH", str(tools.bin))
    for key in [k for k in os.environ if k.startswith("FAKE_EXIT_")]:
        monkeypatch.delenv(key)
    for key, code in codes.items():
        monkeypatch.setenv(f"FAKE_EXIT_{key.upper()}", str(code))


def test_macos_start_stop_restart_with_fake_launchctl(
    isolated_home: Path, tools: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = os.getuid()
    target = f"gui/{uid}/ai.usepod.usepod-desktop.agent"
    plist = service.install("darwin", base=["/Applications/Use Pod.app/Contents/MacOS/x"]).path
    assert plistlib.loads(plist.read_bytes())["ProcessType"] == "Standard"

    _launchctl_env(tools, monkeypatch, launchctl_print=113)  # not loaded
    result = service.control("start", "darwin")
    assert result.ok
    assert result.ran == [(f"launchctl bootstrap gui/{uid} {plist}", 0)]
    stopped = service.control("stop", "darwin")
    assert stopped.ok and stopped.ran == [] and "was not running" in stopped.message

    _launchctl_env(tools, monkeypatch)  # loaded
    assert service.control("restart", "darwin").ok
    assert service.control("stop", "darwin").ok
    assert service.control("start", "darwin").ok
    _launchctl_env(tools, monkeypatch, launchctl_bootout=5)
    failed = service.control("stop", "darwin")
    assert not failed.ok and failed.ran == [(f"launchctl bootout {target}", 5)]

    calls = [c for c in tools.calls() if c[1] != "print"]
    assert calls == [
        ["launchctl", "bootstrap", f"gui/{uid}", str(plist)],
        ["launchctl", "kickstart", "-k", target],
        ["launchctl", "bootout", target],
        ["launchctl", "kickstart", target],
        ["launchctl", "bootout", target],
    ]
    assert all(c[1] not in ("load", "unload") for c in tools.calls())


def test_macos_install_start_boots_out_then_bootstraps(
    isolated_home: Path, tools: FakeTools, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = os.getuid()
    _launchctl_env(tools, monkeypatch, launchctl_bootout=3)  # "No such process": not loaded
    result = service.install("darwin", base=["/x/usepod-desktop"], start=True)
    assert not service.failed(result.ran, result.start)
    assert tools.calls() == [
        ["launchctl", "bootout", f"gui/{uid}/ai.usepod.usepod-desktop.agent"],
        ["launchctl", "bootstrap", f"gui/{uid}", str(result.path)],
    ]
    _launchctl_env(tools, monkeypatch, launchctl_bootstrap=5)
    again = service.install("darwin", base=["/x/usepod-desktop"], start=True)
    assert service.failed(again.ran, again.start)
