"""`run`: the headless agent.

SIGINT / SIGTERM stop it gracefully: no new jobs, running jobs get a grace period, then they are
ended with their terminal frames, and the process exits 0. On Windows also Ctrl-Break
(SIGBREAK) and closing the console window, logging off or shutting down (console control
events, :func:`install_stop_handlers`); `run --sandbox` uses the same handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from usepod_desktop.cli import seconds
from usepod_desktop.commands.common import handle_user_errors, load_config
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.core.events import JobFinished, StateChanged
from usepod_desktop.core.stopping import (  # re-exported: tests and callers use this module
    ConsoleHandler,
    StopHandlers,
    install_stop_handlers,
    set_console_ctrl_handler,
)

if TYPE_CHECKING:
    from usepod_desktop.core.config import Config

__all__ = [
    "ConsoleHandler",
    "StopHandlers",
    "add_parser",
    "install_stop_handlers",
    "process_kind",
    "run",
    "set_console_ctrl_handler",
]

log = logging.getLogger("usepod_desktop.run")

LOOP_CHOICES = ("auto", "asyncio", "uvloop")


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
        type=seconds(minimum=0, inclusive=True),
        default=10.0,
        metavar="SECONDS",
        help="how long running jobs may finish on shutdown (default 10)",
    )
    p.add_argument(
        "--loop",
        choices=LOOP_CHOICES,
        default="asyncio",
        help="event loop: asyncio (the standard library's, default), uvloop (the optional "
        "'fast' extra, not on Windows; measured no faster, see BENCHMARKS.md), or auto: "
        "uvloop when installed",
    )
    p.add_argument(
        "--sandbox",
        action="store_true",
        help="try it without an account: start a local sandbox coordinator in this "
        "process (with a demo backend if none is reachable) and send demo jobs",
    )
    p.add_argument(
        "--demo-interval",
        type=seconds(minimum=0, inclusive=False),
        default=5.0,
        metavar="SECONDS",
        help="with --sandbox: seconds between demo jobs (default 5)",
    )
    p.add_argument(
        "--demo-remote",
        action="append",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="with --sandbox: also send demo jobs to this BYOK backend of your agent.toml "
        "(its kind, e.g. openrouter, or its api_key_env; repeatable). Without it demo jobs "
        "never go to a backend your own API key pays for",
    )


def process_kind(environ: dict[str, str] | None = None) -> str:
    """`service` when the user service started us (its unit / plist sets the variable), else
    `run`: each writes its own log file."""
    from usepod_desktop.core.logsetup import PROCESS_KIND_ENV

    env = os.environ if environ is None else environ
    return "service" if env.get(PROCESS_KIND_ENV) == "service" else "run"


#: States worth a WARNING in the journal (connected but useless, or stuck).
_WARN_STATES = {"no_models", "error", "needs_pairing"}
#: States the coordinator link already logs (one line per reconnect).
_LINK_LOGS = {"offline", "connecting"}


def log_state(event: StateChanged) -> None:
    """The journal's view of the agent's state (WARNING when connected but useless)."""
    if event.state.value in _LINK_LOGS:
        return  # the link logs each reconnect once, with its reason and delay
    level = logging.WARNING if event.state.value in _WARN_STATES else logging.INFO
    log.log(level, "state: %s (%s)", event.state.value, event.reason)


def log_job(event: JobFinished) -> None:
    """One INFO line per finished job."""
    log.info("%s", job_line(event.outcome))


def job_line(outcome: object) -> str:
    """`job 3f2a9c1e done: model m1, 12+34 tokens, 1.25 s, ≈ $0.000021 estimated`."""
    from usepod_desktop.core.money import earnings_nusd, format_amount

    o: Any = outcome
    what = "done" if o.ok else ("cancelled" if o.cancelled else f"failed ({o.error_code})")
    nusd = (
        earnings_nusd(o.input_tokens, o.output_tokens, o.input_per_1m, o.output_per_1m)
        if o.ok
        else 0
    )
    source = "" if o.source == "coordinator" else f" [{o.source}]"
    return (
        f"job {o.job_id[:8]} {what}{source}: model {o.model_id}, "
        f"{o.input_tokens}+{o.output_tokens} tokens, {o.duration_ms / 1000:.2f} s, "
        f"≈ {format_amount(nusd)} estimated"
    )


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    from usepod_desktop.core.logsetup import setup_logging

    if getattr(args, "sandbox", False):
        from usepod_desktop.sandbox.demo import run_headless_sandbox

        setup_logging(args.log_level or "info", kind="run")
        return run_headless_sandbox(args)
    config = load_config(args)
    setup_logging(args.log_level or config.observability.log_level or "info", kind=process_kind())
    loop_factory = event_loop_factory(getattr(args, "loop", "asyncio"))
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(args, config))


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop for `run --loop CHOICE`: uvloop's factory, or None for asyncio's default.

    `auto` takes uvloop when it imports (the optional `fast` extra; it has no Windows build)
    and asyncio otherwise; `uvloop` without it installed is a one-line error."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise UserFacingError(
                "--loop uvloop: uvloop is not installed (pip install 'usepod-desktop[fast]')"
            ) from None
        return None
    return uvloop.new_event_loop


async def serve(args: argparse.Namespace, config: Config) -> int:
    from usepod_desktop.core.host import AgentHost, HostOptions

    options = HostOptions(
        config=args.config,
        allow_insecure=bool(args.allow_insecure),
        # named to a second process on this identity
        agent_kwargs={"instance_kind": process_kind()},
    )
    host = await AgentHost.open(options, config=config)
    agent = host.agent
    assert agent is not None
    if host.ledger is not None and host.ledger.problem:  # reported; never stops serving
        log.warning("earnings ledger: %s", host.ledger.problem)
    agent.events.subscribe(StateChanged, log_state)
    agent.events.subscribe(JobFinished, log_job)
    stop = asyncio.Event()
    handlers = install_stop_handlers(asyncio.get_running_loop(), stop)
    try:
        await host.start()  # IdentityInUse etc.: one line; `finally` closes the ledger
        await agent.serving.start_control()  # `usepod-desktop pause/resume/status`
        log.info("agent started (public key %s); Ctrl-C to stop", agent.public_key_b64)
        await stop.wait()
        grace = handlers.grace(args.grace)
        log.info("stopping: %d job(s) running, grace %.1f s", agent.jobs_running, grace)
        await host.stop(grace=grace)
        log.info("stopped")
    finally:
        await host.close()
        handlers.stopped()
    return 0
