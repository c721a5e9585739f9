"""Start-up: the display checks, one copy per user, the whole app in a subprocess, and the
sandbox mode."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import qasync
from PySide6.QtWidgets import QApplication

from tests.gui.conftest import run, spin, until
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui.app import MISSING_XCB_CURSOR, NO_DISPLAY, display_problem
from usepod_desktop.gui.controller import NOT_PAIRED, AppController, StartOptions
from usepod_desktop.gui.single_instance import SHOWN, SingleInstance

pytestmark = pytest.mark.gui

ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    env.update(
        HOME=str(home),
        USEPOD_CONFIG_DIR=str(home / "cfg"),
        USEPOD_DATA_DIR=str(home / "data"),
        USEPOD_LOG_DIR=str(home / "log"),
        XDG_CONFIG_HOME=str(home / ".config"),
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


@pytest.mark.parametrize(
    "environ, has_lib, expected",
    [
        ({}, True, NO_DISPLAY),
        ({"DISPLAY": ":0"}, True, None),
        ({"DISPLAY": ":0"}, False, MISSING_XCB_CURSOR),
        ({"WAYLAND_DISPLAY": "wayland-0"}, False, None),
        ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "w", "XDG_SESSION_TYPE": "wayland"}, False, None),
        ({"QT_QPA_PLATFORM": "offscreen"}, False, None),
        ({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}, False, MISSING_XCB_CURSOR),
    ],
)
def test_display_problem(environ: dict[str, str], has_lib: bool, expected: str | None) -> None:
    assert display_problem(environ, "linux", lambda _name: has_lib) == expected
    assert display_problem(environ, "darwin", lambda _name: has_lib) is None


def test_the_missing_library_line_names_the_package_and_the_headless_command() -> None:
    assert "libxcb-cursor.so.0" in MISSING_XCB_CURSOR
    assert "sudo apt install libxcb-cursor0" in MISSING_XCB_CURSOR
    assert "`usepod-desktop run`" in MISSING_XCB_CURSOR and "\n" not in MISSING_XCB_CURSOR


def test_no_display_exits_2_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "usepod_desktop"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [NO_DISPLAY], done.stderr
    assert "usepod-desktop run" in lines[0] and "no display" in lines[0]


def test_qt_failing_to_open_the_display_is_one_line_not_an_abort(tmp_path: Path) -> None:
    env = _env(tmp_path, QT_QPA_PLATFORM="xcb", DISPLAY=":93")  # nothing listens there
    done = subprocess.run(
        [sys.executable, "-m", "usepod_desktop"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "usepod-desktop run" in lines[0] and "Qt could not start" in lines[0]
    # the windowed Windows / macOS builds have no console: the log file has it all
    logged = (tmp_path / "log" / "usepod-desktop.log").read_text()
    assert f"CRITICAL usepod_desktop.gui: {lines[0]}" in logged
    assert "could not connect to display :93" in logged


def test_a_fatal_start_up_error_shows_a_message_box_on_windows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from usepod_desktop.gui.app import report_fatal

    shown: list[tuple[str, str]] = []
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers.clear()
    try:
        report_fatal(
            "the line",
            ["qt said this"],
            platform="win32",
            message_box=lambda t, m: shown.append((t, m)),
        )
        report_fatal("second", platform="linux", message_box=lambda t, m: shown.append((t, m)))
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved
    assert shown == [("Use Pod could not start", "the line")]
    assert capsys.readouterr().err == "the line\nsecond\n"
    logged = (Path(os.environ["USEPOD_LOG_DIR"]) / "usepod-desktop.log").read_text()
    assert "qt: qt said this" in logged and "CRITICAL usepod_desktop.gui: the line" in logged


async def _notify_from_another_process(key: str, lock_dir: Path) -> str | None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from PySide6.QtCore import QCoreApplication\n"
        "from usepod_desktop.gui.single_instance import SingleInstance\n"
        "app = QCoreApplication([])\n"
        f"s = SingleInstance(key={key!r}, lock_dir=Path({str(lock_dir)!r}))\n"
        "print(s.notify_running(5000))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=_env(lock_dir, QT_QPA_PLATFORM="offscreen"),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    text = out.decode().strip()
    return None if text == "None" else text


def test_single_instance_brings_the_first_copy_forward(
    qloop: qasync.QEventLoop, tmp_path: Path
) -> None:
    first = SingleInstance(key=f"usepod-test-{os.getpid()}", lock_dir=tmp_path)
    second = SingleInstance(key=first.key, lock_dir=tmp_path)
    activations: list[bool] = []
    first.activated.connect(lambda: activations.append(True))
    assert first.acquire()
    assert not second.acquire()
    # the second copy is another process, blocked on the answer while this one serves it
    answer = run(qloop, _notify_from_another_process(first.key, tmp_path))
    assert answer == SHOWN  # confirmed by the first copy after its window was shown
    assert activations == [True]
    first.release()
    assert SingleInstance(key=first.key, lock_dir=tmp_path).notify_running(300) is None
    assert second.acquire()
    second.release()


def test_a_crashed_copy_never_blocks_start_up(qloop: qasync.QEventLoop, tmp_path: Path) -> None:
    key = f"usepod-test-crash-{os.getpid()}"
    crash = (
        "import os, signal\n"
        "from pathlib import Path\n"
        "from PySide6.QtCore import QCoreApplication\n"
        "from usepod_desktop.gui.single_instance import SingleInstance\n"
        "app = QCoreApplication([])\n"
        f"s = SingleInstance(key={key!r}, lock_dir=Path({str(tmp_path)!r}))\n"
        "assert s.acquire()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", crash],
        env=_env(tmp_path, QT_QPA_PLATFORM="offscreen"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert (tmp_path / "gui.lock").exists()  # the dead copy's lock file is still there
    fresh = SingleInstance(key=key, lock_dir=tmp_path)
    assert fresh.acquire()  # stale lock taken over, stale socket removed
    activations: list[bool] = []
    fresh.activated.connect(lambda: activations.append(True))
    assert run(qloop, _notify_from_another_process(key, tmp_path)) == SHOWN
    assert activations == [True]
    fresh.release()


def test_the_app_runs_once_per_user_and_quits_on_sigterm(tmp_path: Path) -> None:
    env = _env(tmp_path, QT_QPA_PLATFORM="offscreen")
    log_file = tmp_path / "log" / "usepod-desktop.log"
    first = subprocess.Popen(
        [sys.executable, "-m", "usepod_desktop"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while "tray app running" not in (log_file.read_text() if log_file.exists() else ""):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.05)
        text = log_file.read_text()
        assert "Needs pairing: not paired yet; choose “Pair this computer…”" in text
        # the second launch hands over before it sets up logging: it never opens a log file
        second = subprocess.run(
            [sys.executable, "-m", "usepod_desktop"],
            env={**env, "USEPOD_LOG_DIR": str(tmp_path / "second-log")},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 0, second.stderr
        assert second.stdout.strip() == f"Use Pod is already running; {SHOWN}"
        assert not (tmp_path / "second-log").exists()
        deadline = time.monotonic() + 10
        while "brought forward" not in log_file.read_text():
            assert time.monotonic() < deadline, "the first copy was not brought forward"
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGTERM)
        _out, err = first.communicate(timeout=20)
    assert first.returncode == 0, err


def test_agent_toml_saved_as_utf16_shows_the_error_state(qloop: qasync.QEventLoop) -> None:
    """Issue 19 item 2: the tray app shows its error state, never nothing."""
    from usepod_desktop.core import paths

    path = paths.default_config_path()
    path.parent.mkdir(parents=True)
    path.write_bytes('[coordinator]\nurl = "wss://x"\n'.encode("utf-16"))
    controller = AppController(open_url=lambda _u: True)
    controller.show_ui(tray_available=True)
    run(qloop, controller.start(StartOptions()))
    assert controller.agent is None
    assert controller.state == AgentState.ERROR
    assert "saved as UTF-16, not UTF-8" in controller.reason
    assert controller.tray is not None and controller.tray.icon_key[0] == AgentState.ERROR


def test_an_invalid_agent_toml_is_watched_and_reloaded_once_fixed(
    qloop: qasync.QEventLoop,
) -> None:
    """Issue 19 item 5: the tray app is not stuck after an invalid agent.toml: it shows the
    file, offers to open and reload it, and picks up a fixed file by itself."""
    from tests.gui.conftest import write_config
    from usepod_desktop.core import paths
    from usepod_desktop.core.config import BackendConfig
    from usepod_desktop.sandbox.coordinator import SandboxCoordinator
    from usepod_desktop.sandbox.fakes import FakeBackend

    coord = SandboxCoordinator(ws_heartbeat=None)
    fake = FakeBackend("vllm", ["m"])
    run(qloop, coord.start())
    run(qloop, fake.start())
    opened: list[str] = []
    controller = AppController(open_url=lambda u: bool(opened.append(u.toLocalFile())) or True)
    try:
        path = write_config(coord.url, (BackendConfig("vllm", fake.url),))
        good = path.read_text()
        path.write_text(good + "\n[limits]\nmax_concurrent = 999\n")
        assert path == paths.default_config_path()
        controller.show_ui(tray_available=True)
        run(qloop, controller.start(StartOptions(allow_insecure=True)))
        assert controller.agent is None and controller.state == AgentState.ERROR
        assert "limits.max_concurrent" in controller.reason
        assert controller.config_problem_path == path
        tray = controller.tray
        assert tray is not None
        tray.menu.aboutToShow.emit()
        open_action = tray.action("action_open_config")
        assert open_action is not None and str(path) in open_action.toolTip()
        open_action.trigger()
        assert opened == [str(path)]
        assert tray.action("action_reload_config") is not None
        # fixed in an editor: picked up without a restart
        path.write_text(good)
        until(qloop, lambda: controller.agent is not None, what="the agent to start")
        until(qloop, lambda: controller.state == AgentState.SERVING, what="serving")
        assert controller.config_problem_path is None
        tray.menu.aboutToShow.emit()
        assert tray.action("action_reload_config") is None
    finally:
        with contextlib.suppress(Exception):
            run(qloop, controller.shutdown(), 20)
        run(qloop, fake.stop())
        run(qloop, coord.stop())


def test_no_agent_toml_means_needs_pairing(qloop: qasync.QEventLoop) -> None:
    controller = AppController(open_url=lambda _u: True)
    controller.show_ui(tray_available=True)
    run(qloop, controller.start(StartOptions()))
    assert controller.agent is None
    assert controller.state == AgentState.NEEDS_PAIRING
    assert controller.reason == NOT_PAIRED
    tray = controller.tray
    assert tray is not None and tray.icon_key[0] == AgentState.NEEDS_PAIRING
    tray.menu.aboutToShow.emit()
    status = tray.action("action_status").text()
    assert status == f"Needs pairing: {NOT_PAIRED}"  # GUI words, not a command line
    assert "`" not in status and len(status) <= 64
    assert not tray.action("action_settings").isEnabled()
    assert not tray.action("action_pause").isEnabled()
    assert tray.action("action_quit").isEnabled()
    tray.action("action_pair").trigger()  # the pairing wizard, never modal
    wizards = [
        w
        for w in QApplication.topLevelWidgets()
        if type(w).__name__ == "PairingWizard" and w.isVisible()
    ]
    assert len(wizards) == 1 and not wizards[0].isModal()
    wizards[0].reject()
    run(qloop, controller.shutdown())


def test_an_invalid_agent_toml_is_an_error_state_with_its_message(qloop: qasync.QEventLoop) -> None:
    from usepod_desktop.core import paths

    paths.default_config_path().parent.mkdir(parents=True)
    paths.default_config_path().write_text('[coordinator]\nurl = "http://nope"\n')
    controller = AppController(open_url=lambda _u: True)
    run(qloop, controller.start(StartOptions()))
    assert controller.state == AgentState.ERROR
    assert "coordinator.url" in controller.reason


def test_sandbox_mode_serves_demo_jobs_and_says_so(qloop: qasync.QEventLoop) -> None:
    from usepod_desktop.core import paths

    controller = AppController(open_url=lambda _u: True)
    controller.show_ui(tray_available=True)
    run(qloop, controller.start(StartOptions(sandbox=True, demo_interval_s=0.2, grace_s=1)), 30)
    try:
        agent = controller.agent
        assert agent is not None and agent.allow_insecure
        until(qloop, lambda: controller.state == AgentState.SERVING, what="sandbox serving")
        assert controller.status_text().startswith("Sandbox · Serving")
        assert "(sandbox)" in controller.tray.toolTip()
        # the sandbox writes its own agent.toml, never the user's
        assert agent.config_path != paths.default_config_path()
        assert not paths.default_config_path().exists()
        if controller.demo_labels:  # no local server answered: the demo backend is used
            settings = controller.open_settings("backends")
            assert "(demo)" in settings.backends_tab.table.item(0, 0).text()
            assert "sandbox" in settings.windowTitle()
        until(qloop, lambda: controller.today.jobs >= 1, timeout=15, what="a demo job")
        spin(qloop, 0.6)
        assert controller.today_summary()[0] >= 1  # counted as sandbox jobs in the ledger
        assert (
            "demo" in controller.figures_text() and "no real earnings" in controller.figures_text()
        )
    finally:
        run(qloop, controller.shutdown(), 20)


def test_qt_fatal_line_names_libxcb_cursor_only_when_it_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from usepod_desktop.gui import app

    messages = app.QtMessages()
    messages.buffer = [
        "From 6.5.0, xcb-cursor0 or libxcb-cursor0 is needed to load the Qt xcb platform plugin.",
        'Could not load the Qt platform plugin "xcb" in "" even though it was found.',
    ]
    fatal = "This application failed to start because no Qt platform plugin could be initialized."
    monkeypatch.setattr(app, "library_available", lambda _name: False)
    assert messages.fatal_line(fatal) == MISSING_XCB_CURSOR
    monkeypatch.setattr(app, "library_available", lambda _name: True)
    line = messages.fatal_line(fatal)
    assert "Could not load the Qt platform plugin" in line and "usepod-desktop run" in line


def test_qt_ending_its_loop_stops_gracefully_and_the_running_job_gets_its_terminal_frame(
    rig_factory, qapp: QApplication, qtbot
) -> None:  # type: ignore[no-untyped-def]
    """Log out / shut down / the macOS Quit menu end Qt's event loop without our Quit: the
    aboutToQuit handler runs the graceful stop, so the coordinator gets the job's terminal
    frame instead of waiting for its own timeout."""
    from PySide6.QtCore import QTimer

    from usepod_desktop.gui.app import stop_gracefully_on_quit

    rig = rig_factory(tokens_per_second=4, output_tokens=400)  # a job of ~100 s
    rig.controller.options.grace_s = 0.5
    prompt = {"messages": [{"role": "user", "content": "a long answer"}]}
    handle = rig.run(rig.coordinator.dispatch("alpha", prompt))
    rig.until(lambda: handle.chunks, what="the job to stream")
    assert handle.terminal is None
    disconnect = stop_gracefully_on_quit(qapp, rig.controller)
    try:
        with qtbot.waitSignal(qapp.aboutToQuit, timeout=15000):
            QTimer.singleShot(0, qapp.quit)  # what the session manager / Cmd-Q do
            # the loop ends at the quit; this returns only because the handler ran the stop
            rig.loop.run_until_complete(rig.controller.wait_quit())
    finally:
        disconnect()
    assert rig.controller.stopping
    assert handle.terminal is not None, handle.lost  # a terminal frame, not a lost job
    assert handle.lost is None


class RecordingActivity:
    """The App Nap seam: what MacActivity would do on macOS, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def begin(self, reason: str) -> object:
        token = object()
        self.calls.append(("begin", token))
        return token

    def end(self, token: object) -> None:
        self.calls.append(("end", token))


def test_app_nap_is_held_while_the_agent_runs_and_ended_when_it_stops(rig_factory) -> None:  # type: ignore[no-untyped-def]
    from usepod_desktop.core.power import ActivityGuard
    from usepod_desktop.gui.app import keep_out_of_app_nap

    rig = rig_factory()
    activity = RecordingActivity()
    guard = keep_out_of_app_nap(rig.controller, ActivityGuard("darwin", activity))
    assert guard.held and [c[0] for c in activity.calls] == ["begin"]
    rig.controller.pause()  # still connected: heartbeats go on
    rig.until(lambda: rig.controller.paused, what="paused")
    assert guard.held and len(activity.calls) == 1
    rig.controller.request_quit()
    rig.run(rig.controller.wait_quit(), 20)
    assert not guard.held
    assert [c[0] for c in activity.calls] == ["begin", "end"]
    assert activity.calls[0][1] is activity.calls[1][1]  # the same assertion ended
    # never on other systems
    other = ActivityGuard("linux")
    other.update(True)
    assert not other.held


def test_macos_reopen_shows_the_window_when_none_is_open(
    qloop: qasync.QEventLoop, qapp: QApplication
) -> None:
    """Opening the app again on macOS activates the running copy instead of starting a second
    one: with no window open it shows its main window, as a second launch does elsewhere."""
    from PySide6.QtCore import Qt

    from usepod_desktop.gui.app import show_on_reopen

    controller = AppController(open_url=lambda _u: True)
    shown: list[bool] = []
    controller.show_main = lambda: shown.append(True)  # type: ignore[method-assign]
    assert show_on_reopen(qapp, controller, platform="linux") is None
    qapp.applicationStateChanged.emit(Qt.ApplicationState.ApplicationActive)
    assert shown == []  # elsewhere the single-instance socket does this
    disconnect = show_on_reopen(qapp, controller, platform="darwin")
    assert disconnect is not None
    try:
        qapp.applicationStateChanged.emit(Qt.ApplicationState.ApplicationInactive)
        assert shown == []
        qapp.applicationStateChanged.emit(Qt.ApplicationState.ApplicationActive)
        assert shown == [True]
        controller.stopping = True  # quitting: never pop a window
        qapp.applicationStateChanged.emit(Qt.ApplicationState.ApplicationActive)
        assert shown == [True]
    finally:
        disconnect()
