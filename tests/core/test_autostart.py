"""Start at login: the entry each OS gets, written into the test's temporary home (Linux, macOS)
or an in-memory registry (Windows), and the rules: off by default, on only when asked, refresh
repoints a moved program but never switches it on."""

from __future__ import annotations

import plistlib
import sys
from pathlib import Path

import pytest

from usepod_desktop.core import autostart

PROGRAM = "/opt/usepod-desktop/usepod-desktop"
MOVED = "/home/me/Apps/usepod-desktop/usepod-desktop"
WIN_PROGRAM = r"C:\Program Files\Use Pod Desktop\usepod-desktop.exe"
WIN_MOVED = r"D:\Apps\UsePod\usepod-desktop.exe"


class FakeRunKey:
    """HKCU\\...\\Run and StartupApproved\\Run, in memory."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.disabled_in_task_manager: set[str] = set()

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def set(self, name: str, value: str) -> None:
        self.values[name] = value

    def delete(self, name: str) -> bool:
        return self.values.pop(name, None) is not None

    def approved(self, name: str) -> bool:
        return name not in self.disabled_in_task_manager

    def clear_approval(self, name: str) -> None:
        self.disabled_in_task_manager.discard(name)


# ---------------------------------------------------------------------------- launch command


def test_launch_command_frozen_is_the_executable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPIMAGE", raising=False)
    assert autostart.launch_command(platform="linux", executable=PROGRAM, frozen=True) == [PROGRAM]
    assert autostart.launch_command(platform="win32", executable=WIN_PROGRAM, frozen=True) == [
        WIN_PROGRAM
    ]


def test_launch_command_frozen_appimage_uses_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPIMAGE", "/home/me/UsePod.AppImage")
    argv = autostart.launch_command(
        platform="linux", executable="/tmp/.mount_x/usr/bin/u", frozen=True
    )
    assert argv == ["/home/me/UsePod.AppImage"]


def test_launch_command_console_script_next_to_python(tmp_path: Path) -> None:
    bindir = tmp_path / "venv" / "bin"
    bindir.mkdir(parents=True)
    python = bindir / "python"
    python.touch()
    assert autostart.launch_command(platform="linux", executable=str(python), frozen=False) == [
        str(python),
        "-m",
        "usepod_desktop",
    ]
    (bindir / "usepod-desktop").touch()
    assert autostart.launch_command(platform="linux", executable=str(python), frozen=False) == [
        str(bindir / "usepod-desktop")
    ]


def test_launch_command_defaults_to_this_interpreter() -> None:
    argv = autostart.launch_command()
    script = Path(sys.executable).parent / "usepod-desktop"
    if script.is_file():
        assert argv == [str(script)]
    else:
        assert argv == [sys.executable, "-m", "usepod_desktop"]


# ---------------------------------------------------------------------------- Linux (XDG)


def test_off_by_default(isolated_home: Path) -> None:
    assert autostart.enabled("linux") is False
    assert autostart.current_command("linux") is None
    assert not (isolated_home / ".config" / "autostart").exists()


def test_linux_enable_writes_xdg_entry(isolated_home: Path) -> None:
    entry = autostart.enable("linux", command=[PROGRAM])
    path = isolated_home / ".config" / "autostart" / "usepod-desktop.desktop"
    assert entry.path == path
    text = path.read_text()
    assert text == entry.content
    lines = text.splitlines()
    assert lines[0] == "[Desktop Entry]"
    assert "Type=Application" in lines
    assert f"Exec={PROGRAM}" in lines
    assert "X-GNOME-Autostart-enabled=true" in lines
    assert "Terminal=false" in lines
    assert autostart.enabled("linux") is True
    assert autostart.current_command("linux") == [PROGRAM]
    assert str(path) in autostart.describe("linux")


def test_linux_honours_xdg_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "xdgconf"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(elsewhere))
    autostart.enable("linux", command=[PROGRAM])
    assert (elsewhere / "autostart" / "usepod-desktop.desktop").is_file()


def test_linux_enable_uses_the_current_program(isolated_home: Path) -> None:
    entry = autostart.enable("linux")
    assert entry.command == autostart.launch_command(platform="linux")
    assert autostart.current_command("linux") == autostart.launch_command(platform="linux")


def test_linux_exec_quoting_round_trips(isolated_home: Path) -> None:
    argv = ['/home/me/My Apps/use$pod "x"/usepod-desktop', "--log-level", "100%", "a\\b"]
    exec_value = autostart.desktop_exec(argv)
    assert "100%%" in exec_value
    assert exec_value.startswith('"/home/me/My Apps/use\\\\$pod')
    assert autostart.parse_desktop_exec(exec_value) == argv
    autostart.enable("linux", command=argv)
    assert autostart.current_command("linux") == argv


def test_linux_disable_removes(isolated_home: Path) -> None:
    autostart.enable("linux", command=[PROGRAM])
    assert autostart.disable("linux") is True
    assert not autostart.desktop_entry_path().exists()
    assert autostart.enabled("linux") is False
    assert autostart.disable("linux") is False


@pytest.mark.parametrize("switch", ["Hidden=true", "X-GNOME-Autostart-enabled=false"])
def test_linux_switched_off_by_the_desktop_counts_as_off(isolated_home: Path, switch: str) -> None:
    autostart.enable("linux", command=[PROGRAM])
    path = autostart.desktop_entry_path()
    path.write_text(path.read_text().replace("X-GNOME-Autostart-enabled=true", switch))
    assert autostart.enabled("linux") is False
    # ...and refresh leaves the user's choice alone, even from a new location.
    before = path.read_text()
    assert autostart.refresh("linux", command=[MOVED]) is False
    assert path.read_text() == before


def test_linux_refresh_rewrites_a_moved_program(isolated_home: Path) -> None:
    autostart.enable("linux", command=[PROGRAM])
    assert autostart.is_stale("linux", command=[MOVED]) is True
    assert autostart.refresh("linux", command=[MOVED]) is True
    assert autostart.current_command("linux") == [MOVED]
    assert f"Exec={MOVED}" in autostart.desktop_entry_path().read_text().splitlines()
    assert autostart.enabled("linux") is True
    # Already current: nothing to do, file untouched.
    mtime = autostart.desktop_entry_path().stat().st_mtime_ns
    assert autostart.refresh("linux", command=[MOVED]) is False
    assert autostart.desktop_entry_path().stat().st_mtime_ns == mtime


def test_linux_refresh_never_enables(isolated_home: Path) -> None:
    assert autostart.refresh("linux", command=[MOVED]) is False
    assert autostart.refresh("linux") is False
    assert not autostart.desktop_entry_path().exists()
    assert not (isolated_home / ".config" / "autostart").exists()
    assert autostart.enabled("linux") is False


def test_linux_refresh_with_defaults_repoints_to_this_program(isolated_home: Path) -> None:
    autostart.enable("linux", command=["/old/place/usepod-desktop"])
    assert autostart.refresh("linux") is True
    assert autostart.current_command("linux") == autostart.launch_command(platform="linux")


# ---------------------------------------------------------------------------- macOS


def test_macos_launch_agent_plist(isolated_home: Path) -> None:
    program = "/Applications/Use Pod Desktop.app/Contents/MacOS/usepod-desktop"
    entry = autostart.enable("darwin", command=[program])
    path = isolated_home / "Library" / "LaunchAgents" / "ai.usepod.usepod-desktop.plist"
    assert entry.path == path
    plist = plistlib.loads(path.read_bytes())
    assert plist["Label"] == "ai.usepod.usepod-desktop"
    assert plist["ProgramArguments"] == [program]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] is False
    assert plistlib.loads(entry.content.encode()) == plist
    assert autostart.enabled("darwin") is True
    assert "LaunchAgents" in autostart.describe("darwin")


def test_macos_off_refresh_and_disable(isolated_home: Path) -> None:
    assert autostart.enabled("darwin") is False
    assert autostart.refresh("darwin", command=[MOVED]) is False
    assert not autostart.launch_agent_path().exists()
    autostart.enable("darwin", command=[PROGRAM, "--sandbox"])
    assert autostart.refresh("darwin", command=[MOVED]) is True
    assert plistlib.loads(autostart.launch_agent_path().read_bytes())["ProgramArguments"] == [MOVED]
    assert autostart.refresh("darwin", command=[MOVED]) is False
    assert autostart.disable("darwin") is True
    assert autostart.enabled("darwin") is False


def test_macos_disabled_key_counts_as_off(isolated_home: Path) -> None:
    autostart.enable("darwin", command=[PROGRAM])
    path = autostart.launch_agent_path()
    plist = plistlib.loads(path.read_bytes())
    plist["Disabled"] = True
    path.write_bytes(plistlib.dumps(plist))
    assert autostart.enabled("darwin") is False
    assert autostart.refresh("darwin", command=[MOVED]) is False
    assert plistlib.loads(path.read_bytes())["ProgramArguments"] == [PROGRAM]


# ---------------------------------------------------------------------------- Windows


def test_windows_run_value_text() -> None:
    reg = FakeRunKey()
    entry = autostart.enable("win32", registry=reg, command=[WIN_PROGRAM])
    assert entry.path is None
    assert reg.values == {"UsePodDesktop": f'"{WIN_PROGRAM}"'}
    assert entry.content == f'"{WIN_PROGRAM}"'
    assert autostart.enabled("win32", registry=reg) is True
    assert autostart.current_command("win32", registry=reg) == [WIN_PROGRAM]
    assert autostart.describe("win32") == (
        r"registry value HKCU\Software\Microsoft\Windows\CurrentVersion\Run\UsePodDesktop"
    )


def test_windows_not_frozen_value_quotes_python_and_args() -> None:
    reg = FakeRunKey()
    python = r"C:\Users\Me Too\venv\Scripts\python.exe"
    autostart.enable("win32", registry=reg, command=[python, "-m", "usepod_desktop", "a b"])
    assert reg.values["UsePodDesktop"] == f'"{python}" -m usepod_desktop "a b"'
    assert autostart.current_command("win32", registry=reg) == [
        python,
        "-m",
        "usepod_desktop",
        "a b",
    ]


def test_windows_refresh_and_disable() -> None:
    reg = FakeRunKey()
    assert autostart.enabled("win32", registry=reg) is False
    assert autostart.refresh("win32", registry=reg, command=[WIN_MOVED]) is False
    assert reg.values == {}
    autostart.enable("win32", registry=reg, command=[WIN_PROGRAM])
    assert autostart.refresh("win32", registry=reg, command=[WIN_MOVED]) is True
    assert reg.values["UsePodDesktop"] == f'"{WIN_MOVED}"'
    assert autostart.refresh("win32", registry=reg, command=[WIN_MOVED]) is False
    assert autostart.disable("win32", registry=reg) is True
    assert reg.values == {}
    assert autostart.disable("win32", registry=reg) is False


def test_windows_task_manager_disabled_is_respected_until_turned_on_here() -> None:
    reg = FakeRunKey()
    autostart.enable("win32", registry=reg, command=[WIN_PROGRAM])
    reg.disabled_in_task_manager.add("UsePodDesktop")
    assert autostart.enabled("win32", registry=reg) is False
    assert autostart.refresh("win32", registry=reg, command=[WIN_MOVED]) is False
    assert reg.values["UsePodDesktop"] == f'"{WIN_PROGRAM}"'
    autostart.enable("win32", registry=reg, command=[WIN_MOVED])
    assert autostart.enabled("win32", registry=reg) is True


def test_windows_command_line_parser_handles_backslashes_and_quotes() -> None:
    argv = [r"C:\a b\x.exe", r"C:\dir with space\\", 'say "hi"', ""]
    line = autostart.windows_command_line(argv)
    assert autostart.parse_windows_command_line(line) == argv
    assert autostart.parse_windows_command_line(r"C:\plain\x.exe --flag") == [
        r"C:\plain\x.exe",
        "--flag",
    ]


def test_render_covers_every_platform() -> None:
    assert autostart.render([PROGRAM], "linux").startswith("[Desktop Entry]\n")
    assert plistlib.loads(autostart.render([PROGRAM], "darwin").encode())["RunAtLoad"] is True
    assert autostart.render([WIN_PROGRAM], "win32") == f'"{WIN_PROGRAM}"'


# ---------------------------------------------------------------------------- Windows: windowed


def _files(*names: str):  # type: ignore[no-untyped-def]
    present = set(names)
    return lambda path: path in present


def test_windows_frozen_console_twin_registers_the_windowed_exe() -> None:
    folder = r"C:\Program Files\Use Pod Desktop"
    cli = rf"{folder}\usepod-desktop-cli.exe"
    gui = rf"{folder}\usepod-desktop.exe"
    argv = autostart.launch_command(
        platform="win32", executable=cli, frozen=True, isfile=_files(cli, gui)
    )
    assert argv == [gui]
    # the service (not on Windows, but the rule) keeps the console program
    assert autostart.launch_command(
        platform="win32", executable=cli, frozen=True, windowed=False, isfile=_files(cli, gui)
    ) == [cli]


def test_windows_pip_install_registers_the_gui_script_or_pythonw() -> None:
    venv = r"C:\Users\me\venv\Scripts"
    python = rf"{venv}\python.exe"
    console = rf"{venv}\usepod-desktop.exe"
    gui = rf"{venv}\usepod-desktop-gui.exe"
    pythonw = rf"{venv}\pythonw.exe"
    assert autostart.launch_command(
        platform="win32", executable=python, frozen=False, isfile=_files(console, gui, pythonw)
    ) == [gui]
    # an older install without the gui script: pythonw, never python.exe or the console script
    assert autostart.launch_command(
        platform="win32", executable=python, frozen=False, isfile=_files(console, pythonw)
    ) == [pythonw, "-m", "usepod_desktop"]
    # a system Python keeps its scripts in Scripts\
    system = r"C:\Python311\python.exe"
    scripts_gui = r"C:\Python311\Scripts\usepod-desktop-gui.exe"
    assert autostart.launch_command(
        platform="win32", executable=system, frozen=False, isfile=_files(scripts_gui)
    ) == [scripts_gui]
    # the Run value quotes it
    registry = FakeRunKey()
    autostart.enable("win32", registry=registry, command=[pythonw, "-m", "usepod_desktop"])
    assert registry.values["UsePodDesktop"] == f'"{pythonw}" -m usepod_desktop'


def test_gui_scripts_entry_point_is_declared() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    target = meta["project"]["gui-scripts"]["usepod-desktop-gui"]
    module, _, func = target.partition(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), func))


@pytest.mark.parametrize(
    "program",
    [
        "/private/var/folders/xy/abc123/T/AppTranslocation/6F1A-22/d/Use Pod Desktop.app"
        "/Contents/MacOS/usepod-desktop",
        "/Volumes/Use Pod Desktop/Use Pod Desktop.app/Contents/MacOS/usepod-desktop",
    ],
)
def test_macos_translocated_or_dmg_app_is_refused(isolated_home: Path, program: str) -> None:
    problem = autostart.macos_translocation_problem(program)
    assert problem is not None and "Applications folder" in problem
    with pytest.raises(autostart.AutostartError, match="Applications folder"):
        autostart.enable("darwin", command=[program])
    assert not autostart.launch_agent_path().exists()
    # an entry made from /Applications is never repointed at the temporary copy
    good = "/Applications/Use Pod Desktop.app/Contents/MacOS/usepod-desktop"
    autostart.enable("darwin", command=[good])
    assert autostart.refresh("darwin", command=[program]) is False
    assert autostart.current_command("darwin") == [good]
    assert autostart.macos_translocation_problem(good) is None


def test_the_app_refuses_to_start_translocated() -> None:
    from usepod_desktop.gui.app import translocation_problem

    moved = "/private/var/folders/q/T/AppTranslocation/X/d/U.app/Contents/MacOS/usepod-desktop"
    assert "Applications" in (translocation_problem(moved, "darwin") or "")
    assert translocation_problem(moved, "linux") is None
    assert translocation_problem("/Applications/U.app/Contents/MacOS/x", "darwin") is None


def test_the_gui_script_refuses_subcommands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usepod-desktop-gui run` would be an invisible headless agent without a console."""
    from usepod_desktop import cli
    from usepod_desktop.commands import gui

    started: list[object] = []
    monkeypatch.setattr(gui, "run", started.append)
    assert cli.gui_main(["run"]) == 2
    assert "use `usepod-desktop run`" in capsys.readouterr().err
    cli.gui_main(["--sandbox"])
    assert len(started) == 1 and started[0].sandbox is True  # type: ignore[attr-defined]
