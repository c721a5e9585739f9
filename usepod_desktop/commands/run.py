"""`run`: the headless agent.

SIGINT / SIGTERM stop it gracefully: no new jobs, running jobs get a grace period, then they are
ended with their terminal frames, and the process exits 0. On Windows also Ctrl-Break
(SIGBREAK) and closing the console window, logging off or shutting down (console control
events, :func:`install_stop_handlers`); `run --sandbox` uses the same handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from usepod_desktop.commands.common import handle_user_errors, load_config

log = logging.getLogger("usepod_desktop.run")


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        parents=parents,
        help="run the agent headless (no GUI)",
        description="Connect to the coordinator and serve jobs from the configured backends "
        "until SIGINT/SIGTERM (on Windows also Ctrl-Break or closing the console window), then "
        "stop gracefully: running jobs get the grace period and their terminal frames. Logs go "
        "to usepod-desktop-run.log (usepod-desktop-service.log when run by the service).",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long running jobs may finish on shutdown (default 10)",
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="try it without an account: start a local sandbox coordinator in this "
        "process (with a demo backend if none is reachable) and send demo jobs",
    )
    p.add_argument(
        "--demo-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="with --sandbox: seconds between demo jobs (default 5)",
    )


#: Windows console control events (wincon.h).
CTRL_C_EVENT, CTRL_BREAK_EVENT, CTRL_CLOSE_EVENT = 0, 1, 2
CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT = 5, 6
#: Windows ends the process 5 s after a close / logoff / shutdown event whatever the handler
#: does: the stop must be done before that.
CONSOLE_CLOSE_BUDGET_S = 4.5
#: The grace running jobs get when the console is closing (the rest of the budget is for their
#: terminal frames and the ledger).
CONSOLE_CLOSE_GRACE_S = 2.5

ConsoleHandler = Callable[[int], bool]


class StopHandlers:
    """Turns every way of asking a headless agent to stop into one `asyncio.Event`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        self.loop = loop
        self.stop = stop
        #: The console is closing: Windows kills the process within 5 s.
        self.hurry = False
        self._done = threading.Event()
        self._keep: list[Any] = []  # the ctypes callback must outlive the registration

    def request(self) -> None:
        """Thread-safe: ask the loop to stop (signal handlers, console handler thread)."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self.loop.call_soon_threadsafe(self.stop.set)

    def stopped(self) -> None:
        """The graceful stop is complete: a blocked console handler may let Windows end us."""
        self._done.set()

    def grace(self, requested: float) -> float:
        return min(requested, CONSOLE_CLOSE_GRACE_S) if self.hurry else requested

    def console_event(self, event: int) -> bool:
        """The `SetConsoleCtrlHandler` routine (called on a thread Windows creates). For a
        close / logoff / shutdown event it blocks until the stop is complete (returning lets
        Windows end the process at once), at most :data:`CONSOLE_CLOSE_BUDGET_S`."""
        closing = event in (CTRL_CLOSE_EVENT, CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT)
        if closing:
            self.hurry = True
        self.request()
        if closing:
            self._done.wait(CONSOLE_CLOSE_BUDGET_S)
        return True  # handled: no default handler (which would end the process now)


def set_console_ctrl_handler(handler: ConsoleHandler, keep: list[Any]) -> bool:
    """Register `handler` with `SetConsoleCtrlHandler` (Windows only, through ctypes)."""
    import ctypes
    from ctypes import wintypes

    routine_type = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.DWORD)  # type: ignore[attr-defined,unused-ignore]
    routine = routine_type(lambda event: bool(handler(int(event))))
    keep.append(routine)
    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined,unused-ignore]
    return bool(kernel32.SetConsoleCtrlHandler(routine, True))


def install_stop_handlers(
    loop: asyncio.AbstractEventLoop,
    stop: asyncio.Event,
    *,
    platform: str | None = None,
    register_console: Callable[[ConsoleHandler, list[Any]], bool] | None = None,
) -> StopHandlers:
    """SIGINT, SIGTERM and (Windows) SIGBREAK set `stop`: through the loop where it supports
    signal handlers, else (Windows' proactor loop) through `signal.signal`, which the loop
    wakes up for. On Windows the console control handler covers Ctrl-Break and closing the
    console window, logging off and shutting down. `register_console` is the seam for tests."""
    handlers = StopHandlers(loop, stop)
    signals = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGBREAK"):
        signals.append(signal.SIGBREAK)
    for sig in signals:
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            with contextlib.suppress(ValueError, OSError):  # not the main thread
                signal.signal(sig, lambda *_: handlers.request())
    if (platform or sys.platform) == "win32":
        try:
            (register_console or set_console_ctrl_handler)(handlers.console_event, handlers._keep)
        except Exception:  # no console (pythonw): nothing to close
            log.debug("no console control handler", exc_info=True)
    return handlers


def process_kind(environ: dict[str, str] | None = None) -> str:
    """`service` when the user service started us (its unit / plist sets the variable), else
    `run`: each writes its own log file."""
    from usepod_desktop.core.logsetup import PROCESS_KIND_ENV

    env = os.environ if environ is None else environ
    return "service" if env.get(PROCESS_KIND_ENV) == "service" else "run"


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core.logsetup import setup_logging

    if getattr(args, "sandbox", False):
        from usepod_desktop.sandbox.demo import run_headless_sandbox

        setup_logging(args.log_level or "info", kind="run")
        return run_headless_sandbox(args)
    config = load_config(args)
    setup_logging(args.log_level or config.observability.log_level or "info", kind=process_kind())
    return asyncio.run(serve(args, config))


async def serve(args: argparse.Namespace, config: object) -> int:
    from usepod_desktop.core.agent import Agent
    from usepod_desktop.core.config import find_config
    from usepod_desktop.core.events import StateChanged
    from usepod_desktop.core.ledger import Ledger

    ledger = Ledger()  # a broken database is reported and never stops serving
    if ledger.problem:
        log.warning("earnings ledger: %s", ledger.problem)
    agent = Agent(
        config,
        config_path=find_config(args.config),  # type: ignore[arg-type]
        allow_insecure=bool(args.allow_insecure),
        ledger=ledger,
    )
    agent.events.subscribe(
        lambda e: (
            log.info("state: %s (%s)", e.state.value, e.reason)
            if isinstance(e, StateChanged)
            else None
        )
    )
    stop = asyncio.Event()
    handlers = install_stop_handlers(asyncio.get_running_loop(), stop)
    try:
        await agent.start()
        log.info("agent started (public key %s); Ctrl-C to stop", agent.public_key_b64)
        await stop.wait()
        grace = handlers.grace(args.grace)
        log.info("stopping: %d job(s) running, grace %.1f s", agent.jobs_running, grace)
        await agent.stop(grace=grace)
        await asyncio.to_thread(ledger.close)
        log.info("stopped")
    finally:
        handlers.stopped()
    return 0
