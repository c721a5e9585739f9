"""The tray app's entry point: checks that a display can be used, then one QApplication whose
event loop is also the asyncio loop (qasync) the agent runs in.

Start-up order: display check (before any Qt import, so a headless box gets one clear line
instead of Qt's abort) -> macOS translocation check -> QApplication (Qt's messages buffered) ->
single instance (a second launch hands over and exits before it opens the log file) ->
logging -> event loop and excepthook -> tray (or the status window where no tray exists) ->
agent.

Leaving: the tray's Quit, SIGINT / SIGTERM, and also everything that ends Qt's event loop
without asking us first (logging out, shutting down, the macOS Quit menu / Dock / Cmd-Q) go
through the controller's graceful stop (:func:`stop_gracefully_on_quit`): running jobs get
their grace period and their terminal frames.

A fatal Qt error at start-up (a missing platform plugin: the typical fault of a build never run
on that OS) is written to the log file first, then to stderr, and on Windows, where the
windowed build has no console, shown in a message box.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("usepod_desktop.gui")

HEADLESS_HINT = "use `usepod-desktop run` for the headless agent"
NO_DISPLAY = (
    "usepod-desktop: no display found (neither DISPLAY nor WAYLAND_DISPLAY is set), so the "
    f"tray app cannot start; {HEADLESS_HINT}."
)
MISSING_XCB_CURSOR = (
    "usepod-desktop: Qt's X11 (xcb) display plugin needs libxcb-cursor.so.0, which is not "
    f"installed: run `sudo apt install libxcb-cursor0`, or {HEADLESS_HINT}."
)
XCB_CURSOR_SONAME = "libxcb-cursor.so.0"


def library_available(soname: str) -> bool:
    """Whether the dynamic loader can find `soname` (tries to load it, then asks ldconfig)."""
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        pass
    stem = soname.removeprefix("lib").split(".so")[0]
    return ctypes.util.find_library(stem) is not None


def display_problem(
    environ: Mapping[str, str] | None = None,
    platform: str | None = None,
    has_library: Callable[[str], bool] = library_available,
) -> str | None:
    """One line saying why the GUI cannot start here, or None. Linux only: Qt aborts there
    when no display or the xcb plugin's libraries are missing."""
    env = os.environ if environ is None else environ
    platform = platform or sys.platform
    if not platform.startswith("linux"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").strip()
    if qpa:
        first = qpa.split(";")[0].split(":")[0]
        if first == "xcb" and not has_library(XCB_CURSOR_SONAME):
            return MISSING_XCB_CURSOR
        return None  # offscreen, wayland, vnc...: the user chose; Qt reports its own problems
    x11, wayland = bool(env.get("DISPLAY")), bool(env.get("WAYLAND_DISPLAY"))
    if not x11 and not wayland:
        return NO_DISPLAY
    uses_xcb = x11 and not (wayland and env.get("XDG_SESSION_TYPE", "") == "wayland")
    if uses_xcb and not has_library(XCB_CURSOR_SONAME):
        return MISSING_XCB_CURSOR
    return None


def quiet_loggers() -> None:
    """qasync logs every executor call with its arguments at DEBUG, which would put an API key
    given to `asyncio.to_thread(secrets.set, name, value)` into a debug log: keep it at INFO."""
    logging.getLogger("qasync").setLevel(logging.INFO)


class QtMessages:
    """Qt's own messages: buffered while QApplication starts (so a failure prints one line,
    not Qt's wall of text), then sent to the log. A fatal message (Qt is about to abort)
    prints one line with what to do and exits with status 2."""

    def __init__(self) -> None:
        self.buffer: list[str] = []
        self.starting = True
        self.log = logging.getLogger("qt")

    def install(self) -> None:
        from PySide6.QtCore import qInstallMessageHandler

        qInstallMessageHandler(self.handle)

    def started(self) -> None:
        self.starting = False
        for message in self.buffer:
            self.log.debug("%s", message)
        self.buffer.clear()

    def handle(self, mode: Any, _context: Any, message: str) -> None:
        from PySide6.QtCore import QtMsgType

        if mode == QtMsgType.QtFatalMsg:
            report_fatal(self.fatal_line(message), [*self.buffer, message])
            os._exit(2)
        if self.starting:
            self.buffer.append(message)
            return
        level = {
            QtMsgType.QtDebugMsg: logging.DEBUG,
            QtMsgType.QtInfoMsg: logging.INFO,
            QtMsgType.QtWarningMsg: logging.WARNING,
            QtMsgType.QtCriticalMsg: logging.ERROR,
        }.get(mode, logging.WARNING)
        if "This plugin does not support" in message:
            level = logging.DEBUG  # the offscreen / minimal plugins say this about every window
        self.log.log(level, "%s", message)

    def fatal_line(self, message: str) -> str:
        seen = [*self.buffer, message]
        display = next((m for m in seen if "connect to display" in m), None)
        if display is None and any("xcb-cursor" in m or "xcb_cursor" in m for m in seen):
            if not library_available(XCB_CURSOR_SONAME):
                return MISSING_XCB_CURSOR
        detail = display or next((m for m in seen if "Could not load" in m), message)
        detail = " ".join(detail.split())
        if len(detail) > 160:
            detail = detail[:157] + "..."
        return (
            f"usepod-desktop: Qt could not start its display plugin ({detail}); check the "
            f"display or install the missing libraries, or {HEADLESS_HINT}."
        )


def report_fatal(
    line: str,
    details: list[str] | None = None,
    *,
    platform: str | None = None,
    message_box: Callable[[str, str], None] | None = None,
) -> None:
    """A start-up failure the user must see: to the log file first (set up here if it is not
    yet), then stderr, then a native message box on Windows (the windowed build has no console
    and the user would otherwise see nothing at all)."""
    try:
        root = logging.getLogger()
        if not any(getattr(h, "_usepod", False) for h in root.handlers):
            from usepod_desktop.core.logsetup import setup_logging

            setup_logging("info", kind="app", stderr=False)  # stderr gets one line below
        for detail in details or []:
            logging.getLogger("qt").error("%s", detail)
        log.critical("%s", line)
        for handler in root.handlers:
            handler.flush()
    except Exception:  # never let the report hide the failure
        pass
    print(line, file=sys.stderr, flush=True)
    if (platform or sys.platform) == "win32":
        try:
            (message_box or windows_message_box)("Use Pod could not start", line)
        except Exception:
            pass


def windows_message_box(title: str, text: str) -> None:
    """MessageBoxW with an error icon (Windows only; the platform seam of :func:`report_fatal`)."""
    mb_ok, mb_iconerror, mb_setforeground = 0x0, 0x10, 0x10000
    user32 = ctypes.windll.user32  # type: ignore[attr-defined,unused-ignore]
    user32.MessageBoxW(None, text, title, mb_ok | mb_iconerror | mb_setforeground)


def translocation_problem(executable: str | None = None, platform: str | None = None) -> str | None:
    """macOS, frozen .app only: one line when the app runs from a path that is gone after a
    reboot (see :func:`usepod_desktop.core.autostart.macos_translocation_problem`), else None."""
    if (platform or sys.platform) != "darwin":
        return None
    if executable is None:
        if not getattr(sys, "frozen", False):
            return None  # a Python install (pip / venv), not an .app bundle
        executable = sys.executable
    from usepod_desktop.core.autostart import macos_translocation_problem

    return macos_translocation_problem(executable)


def stop_gracefully_on_quit(
    app: Any, controller: Any, *, timeout_s: float | None = None
) -> Callable[[], None]:
    """When Qt's event loop is ending without our Quit (log out, shut down, the macOS Quit
    menu / Dock / Cmd-Q all end in `QCoreApplication.aboutToQuit`), run the controller's
    graceful stop before returning: running jobs get their grace period and their terminal
    frames. The stop runs in a nested Qt event loop (the asyncio loop is Qt's, so the agent's
    tasks keep running there). Returns a function that disconnects the handler."""
    from PySide6.QtCore import QEventLoop, QTimer

    def about_to_quit() -> None:
        if not controller.stopping:
            log.warning("the application is being closed (log out, shut down or Quit): stopping")
        controller.request_quit()  # no-op when the stop is already under way
        try:
            done = asyncio.ensure_future(controller.wait_quit())
        except RuntimeError:  # no asyncio loop any more: nothing left to wait for
            return
        waiter = QEventLoop()
        done.add_done_callback(lambda _f: waiter.quit())
        limit = timeout_s if timeout_s is not None else controller.options.grace_s + 10.0
        QTimer.singleShot(int(limit * 1000), waiter.quit)
        if not done.done():
            waiter.exec()
        if not done.done():
            done.cancel()
            log.error("the graceful stop did not finish within %.0f s", limit)

    app.aboutToQuit.connect(about_to_quit)
    return lambda: app.aboutToQuit.disconnect(about_to_quit)


def keep_out_of_app_nap(controller: Any, guard: Any = None) -> Any:
    """macOS: hold an activity assertion while the agent runs (connected or reconnecting), so
    App Nap never delays the heartbeat or the job relay of a windowless tray app
    (:mod:`usepod_desktop.core.power`; a no-op elsewhere). Returns the guard (release it at
    exit)."""
    from usepod_desktop.core.power import ActivityGuard

    guard = guard or ActivityGuard()

    def check() -> None:
        guard.update(controller.agent is not None and not controller.stopping)

    controller.statusChanged.connect(check)
    controller.agentChanged.connect(check)
    check()
    return guard


def show_on_reopen(
    app: Any, controller: Any, platform: str | None = None
) -> Callable[[], None] | None:
    """macOS: opening the app again (Finder, Launchpad, Spotlight) does not start a second
    copy, it activates this one; with no window open, show the main window then (what a second
    launch does elsewhere through :class:`SingleInstance`). Returns a function that
    disconnects it (None elsewhere)."""
    if (platform or sys.platform) != "darwin":
        return None
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    def changed(state: Qt.ApplicationState) -> None:
        if state != Qt.ApplicationState.ApplicationActive or controller.stopping:
            return
        if not any(w.isVisible() for w in QApplication.topLevelWidgets() if w.isWindow()):
            controller.show_main()

    app.applicationStateChanged.connect(changed)
    return lambda: app.applicationStateChanged.disconnect(changed)


def main(args: argparse.Namespace) -> int:
    problem = display_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2

    quiet_loggers()
    messages = QtMessages()
    messages.install()

    from PySide6.QtCore import QCoreApplication, QTimer
    from PySide6.QtWidgets import QApplication

    from usepod_desktop import __version__
    from usepod_desktop.gui.controller import AppController, StartOptions
    from usepod_desktop.gui.errors import ExceptionReporter
    from usepod_desktop.gui.icons import app_icon
    from usepod_desktop.gui.loop import SlicedQEventLoop
    from usepod_desktop.gui.prefs import APPLICATION, ORGANIZATION
    from usepod_desktop.gui.single_instance import SingleInstance

    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    QCoreApplication.setApplicationVersion(__version__)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)

    moved = translocation_problem()
    if moved is not None:  # macOS: refuse to run (and to register start at login) from there
        from PySide6.QtWidgets import QMessageBox

        report_fatal(moved)
        QMessageBox.warning(None, "Move Use Pod to Applications", moved)
        return 2

    # Before the log file is opened: a second launch must not touch the first one's log.
    instance = SingleInstance()
    if not instance.acquire():
        answer = instance.notify_running()
        if answer is not None:
            print(f"Use Pod is already running; {answer}")
            return 0
        print(
            f"usepod-desktop: another copy holds {instance.lock_path} but does not answer; "
            "if it is stuck, end it and start again.",
            file=sys.stderr,
        )
        return 1

    from usepod_desktop.core.logsetup import setup_logging

    setup_logging(getattr(args, "log_level", None) or "info", kind="app")
    quiet_loggers()
    messages.started()
    app.setQuitOnLastWindowClosed(False)
    app.setApplicationDisplayName("Use Pod")
    app.setWindowIcon(app_icon())
    app.setDesktopFileName(APPLICATION)

    loop = SlicedQEventLoop(app)
    asyncio.set_event_loop(loop)
    reporter = ExceptionReporter()
    reporter.install(loop)
    controller = AppController()
    instance.activated.connect(controller.show_main)
    stop_gracefully_on_quit(app, controller)
    show_on_reopen(app, controller)
    nap_guard = keep_out_of_app_nap(controller)

    # Python runs signal handlers only between bytecodes: a timer lets Ctrl-C / SIGTERM in.
    wake = QTimer()
    wake.start(250)
    wake.timeout.connect(lambda: None)
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, lambda *_: QTimer.singleShot(0, controller.request_quit))

    options = StartOptions(
        config=getattr(args, "config", None),
        allow_insecure=bool(getattr(args, "allow_insecure", False)),
        sandbox=bool(getattr(args, "sandbox", False)),
        demo_remote=tuple(getattr(args, "demo_remote", None) or ()),
    )

    async def run() -> None:
        controller.show_ui()
        await controller.start(options)
        if controller.agent is None and controller.needs_pairing:
            controller.open_pairing()  # first launch: no agent.toml yet
        await asyncio.to_thread(_refresh_autostart)
        log.info("tray app running (%s)", controller.status_text())
        await controller.wait_quit()

    try:
        with loop:
            loop.run_until_complete(run())
    finally:
        wake.stop()
        nap_guard.release()
        reporter.uninstall()
        instance.release()
    return 0


def _refresh_autostart() -> None:
    """Start at login points at this program even after it moved (never switches it on)."""
    try:
        from usepod_desktop.core import autostart

        if autostart.refresh():
            log.info("start at login now points at this program")
    except Exception:
        log.exception("could not check the start-at-login entry")
