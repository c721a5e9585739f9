"""The tray app's entry point: checks that a display can be used, then one QApplication whose
event loop is also the asyncio loop (qasync) the agent runs in.

Start-up order: display check (before any Qt import, so a headless box gets one clear line
instead of Qt's abort) -> logging -> QApplication -> single instance -> event loop and
excepthook -> tray (or the status window where no tray exists) -> agent.
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
            print(self.fatal_line(message), file=sys.stderr, flush=True)
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


def main(args: argparse.Namespace) -> int:
    problem = display_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2

    from usepod_desktop.core.logsetup import setup_logging

    setup_logging(getattr(args, "log_level", None) or "info")
    quiet_loggers()
    messages = QtMessages()
    messages.install()

    import qasync
    from PySide6.QtCore import QCoreApplication, QTimer
    from PySide6.QtWidgets import QApplication

    from usepod_desktop import __version__
    from usepod_desktop.gui.controller import AppController, StartOptions
    from usepod_desktop.gui.errors import ExceptionReporter
    from usepod_desktop.gui.icons import app_icon
    from usepod_desktop.gui.prefs import APPLICATION, ORGANIZATION
    from usepod_desktop.gui.single_instance import SingleInstance

    QCoreApplication.setOrganizationName(ORGANIZATION)
    QCoreApplication.setApplicationName(APPLICATION)
    QCoreApplication.setApplicationVersion(__version__)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    messages.started()
    assert isinstance(app, QApplication)
    app.setQuitOnLastWindowClosed(False)
    app.setApplicationDisplayName("Use Pod")
    app.setWindowIcon(app_icon())
    app.setDesktopFileName(APPLICATION)

    instance = SingleInstance()
    if not instance.acquire():
        if instance.notify_running():
            print("Use Pod is already running; its window was brought forward.")
            return 0
        print(
            f"usepod-desktop: another copy holds {instance.lock_path} but does not answer; "
            "if it is stuck, end it and start again.",
            file=sys.stderr,
        )
        return 1

    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    reporter = ExceptionReporter()
    reporter.install(loop)
    controller = AppController()
    instance.activated.connect(controller.show_main)

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
