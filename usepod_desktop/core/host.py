"""The composition root: the one place that builds and wires the agent's parts.

`usepod-desktop run`, the tray app and both sandbox modes start through :class:`AgentHost`
(the model is FeelUOwn's `create_app`: one factory, whatever the front end). It

- finds and loads agent.toml (or, in sandbox mode, starts the sandbox session and uses the
  config it builds);
- builds the :class:`~usepod_desktop.core.agent.Agent` (which serves Prometheus metrics itself
  when `observability.prometheus_addr` is set) and the earnings :class:`Ledger`, and records
  every finished job there (source "sandbox" for the sandbox coordinator's jobs);
- owns their lifecycle: :meth:`start`, :meth:`stop` (graceful, with a grace period),
  :meth:`close` (flushes and closes the ledger);
- offers the app-level services the front ends need: start at login, today's ledger figures,
  and :meth:`adopt_pairing` (serve with the agent.toml and identity a pairing just wrote).

One host lives as long as the process; :meth:`load` may be called again (after pairing) and
replaces the agent, keeping the ledger. No Qt here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usepod_desktop.core.config import Config, find_config, load_config
from usepod_desktop.core.errors import ConfigError, UserFacingError
from usepod_desktop.core.events import JobFinished

if TYPE_CHECKING:  # imported when first used: the tray paints before the agent is built
    from usepod_desktop.core.agent import Agent
    from usepod_desktop.core.ledger import Ledger, Totals
    from usepod_desktop.core.pairing.values import PairingResult
    from usepod_desktop.sandbox.demo import SandboxSession

log = logging.getLogger(__name__)

__all__ = ["Adopted", "AgentHost", "ConfigNotFound", "HostOptions"]


class ConfigNotFound(ConfigError):
    """No agent.toml where it was looked for (`--config`, the config dir, the working dir)."""


@dataclass(frozen=True, slots=True)
class HostOptions:
    """How to build the agent: `config` is `--config` (None: the usual lookup)."""

    config: str | Path | None = None
    allow_insecure: bool = False
    #: The embedded sandbox coordinator and demo jobs instead of the real coordinator.
    sandbox: bool = False
    #: BYOK backends opted in for sandbox demo jobs (`--demo-remote`: kind or api_key_env).
    demo_remote: tuple[str, ...] = ()
    #: Passed on to :class:`Agent` (test seams: intervals, backoff).
    agent_kwargs: dict[str, Any] = field(default_factory=dict)


class Adopted(StrEnum):
    """What :meth:`AgentHost.adopt_pairing` did."""

    #: Sandbox mode: the new agent.toml is used on the next start.
    LATER = "later"
    #: The running agent already used that agent.toml: its config was reloaded in place.
    RELOADED = "reloaded"
    #: A new agent was built from the new agent.toml (the previous one stopped) and started.
    STARTED = "started"


class AgentHost:
    """Builds the agent and its ledger, and owns them (see the module docstring).

    `ledger`: use this ledger (the caller keeps it and closes it); else the host opens the
    default one on first need and closes it in :meth:`close`. `sandbox`: what sandbox mode
    runs, called as `sandbox(demo_remote=...)` (the front end passes
    `sandbox.demo.SandboxSession`: the core does not import the sandbox package)."""

    def __init__(
        self,
        *,
        ledger: Ledger | None = None,
        sandbox: Callable[..., SandboxSession] | None = None,
    ) -> None:
        self._sandbox_factory = sandbox
        self.agent: Agent | None = None
        self.options = HostOptions()
        self.sandbox_session: SandboxSession | None = None
        #: The agent.toml the last :meth:`load` found (None in sandbox mode or when missing),
        #: also when it then turned out invalid.
        self.config_path: Path | None = None
        self._ledger = ledger
        self._owns_ledger = False
        self._detach: Callable[[], None] | None = None

    @classmethod
    async def open(
        cls,
        options: HostOptions,
        *,
        config: Config | None = None,
        sandbox: Callable[..., SandboxSession] | None = None,
    ) -> AgentHost:
        """A host with its agent built (not started): `AgentHost.open(options)`."""
        host = cls(sandbox=sandbox)
        await host.load(options, config=config)
        return host

    # ---- building ----------------------------------------------------------------------

    async def load(self, options: HostOptions, *, config: Config | None = None) -> Agent:
        """Build the agent for `options` and record its jobs in the ledger; returns it (not
        started). `config`: already loaded from `options.config` (the CLI reads it first for
        its log level). A previous agent is stopped and replaced; the ledger stays.

        Raises :class:`ConfigNotFound` when there is no agent.toml (outside the sandbox),
        ConfigError when it is invalid, and the sandbox session's errors."""
        from usepod_desktop.core.agent import Agent
        from usepod_desktop.core.ledger import Ledger

        await self._drop_agent()
        self.options = options
        self.config_path = None
        if options.sandbox:
            agent = await self._sandbox_agent(options)
        else:
            try:
                path = await asyncio.to_thread(find_config, options.config)
            except ConfigError as exc:
                raise ConfigNotFound(exc.message, field=exc.field) from None
            self.config_path = path
            if config is None:
                config = await asyncio.to_thread(
                    load_config, path, allow_insecure=options.allow_insecure
                )
            agent = Agent(
                config,
                config_path=path,
                allow_insecure=options.allow_insecure,
                **options.agent_kwargs,
            )
        if self._ledger is None:
            self._ledger = await asyncio.to_thread(Ledger)
            self._owns_ledger = True
        self.agent = agent
        self._detach = self.record_jobs(agent, sandbox=options.sandbox)
        return agent

    async def _sandbox_agent(self, options: HostOptions) -> Agent:
        from usepod_desktop.core.agent import Agent

        if self._sandbox_factory is None:
            raise UserFacingError("sandbox mode is not available here", title="Sandbox")
        try:  # the user's local backends, when their agent.toml has any
            base: Config | None = await asyncio.to_thread(
                load_config, options.config, allow_insecure=True
            )
        except ConfigError:
            base = None
        session = self._sandbox_factory(demo_remote=options.demo_remote)
        config = await session.start(base)
        self.sandbox_session = session
        return Agent(
            config, config_path=session.config_path, allow_insecure=True, **options.agent_kwargs
        )

    def record_jobs(self, agent: Agent, *, sandbox: bool = False) -> Callable[[], None]:
        """Record every job `agent` finishes in the ledger (opened now if need be); the
        coordinator's jobs count as "sandbox" jobs when `sandbox`. Returns the detach."""
        from usepod_desktop.core.ledger import Ledger, job_recorder

        ledger = self.ledger
        if ledger is None:
            ledger = self._ledger = Ledger()
            self._owns_ledger = True
        source = "sandbox" if sandbox else None
        return agent.events.subscribe(JobFinished, job_recorder(ledger, source=source))

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the agent (loads the identity, connects); returns once the link task runs."""
        if self.agent is None:
            raise RuntimeError("AgentHost.start before load")
        await self.agent.start()

    async def stop(self, grace: float = 10.0) -> None:
        """Graceful stop: running jobs get `grace` seconds; then the sandbox session stops."""
        if self.agent is not None:
            await self.agent.stop(grace=grace)
        session, self.sandbox_session = self.sandbox_session, None
        if session is not None:
            await session.stop()

    async def close(self) -> None:
        """Stop (at once) what still runs, stop recording and close the ledger (flushed)."""
        await self._drop_agent()
        ledger, owned = self._ledger, self._owns_ledger
        if ledger is not None and owned:
            self._ledger, self._owns_ledger = None, False
            await asyncio.to_thread(ledger.close)

    async def _drop_agent(self) -> None:
        if self.agent is not None or self.sandbox_session is not None:
            await self.stop(grace=0)
        if self._detach is not None:
            self._detach()
            self._detach = None
        self.agent = None

    # ---- pairing -----------------------------------------------------------------------

    async def adopt_pairing(
        self,
        result: PairingResult,
        *,
        grace: float = 10.0,
        on_agent: Callable[[Agent | None], None] | None = None,
    ) -> Adopted:
        """Serve with what a pairing just wrote (`result`: its agent.toml and identity).

        In sandbox mode nothing changes now (:attr:`Adopted.LATER`). An agent already running
        on that agent.toml reloads it in place (RELOADED; a new coordinator URL reconnects).
        Otherwise the running agent, if any, stops (jobs get `grace` seconds), and a new one
        is built from the new file and started (STARTED); a `ws://` coordinator (a local
        sandbox paired on purpose) allows insecure URLs. `on_agent` is told when the old agent
        is gone (None) and the new one is built, before it starts (the GUI shows it then).

        Raises what :meth:`load` and :meth:`start` raise; after a failed reload the running
        agent keeps its previous config."""
        from usepod_desktop.core import paths

        if self.options.sandbox:
            log.info("paired while in sandbox mode: the new agent.toml is used on the next start")
            return Adopted.LATER
        agent = self.agent
        new_path = Path(result.config_path)
        if agent is not None and agent.config_path is not None:
            if Path(agent.config_path) == new_path:
                await agent.reload_config()
                return Adopted.RELOADED
        if agent is not None:
            await self.stop(grace=grace)
            if on_agent is not None:
                on_agent(None)
        options = self.options
        # Keep the usual lookup (None) when it finds the new file: `--config` is only set
        # when it was given or the file lives elsewhere (e.g. the wizard was given a path).
        if new_path != paths.default_config_path() or options.config is not None:
            options = dataclasses.replace(options, config=new_path)
        if result.insecure and not options.allow_insecure:
            options = dataclasses.replace(options, allow_insecure=True)
        agent = await self.load(options)
        if on_agent is not None:
            on_agent(agent)
        await self.start()
        return Adopted.STARTED

    # ---- app-level services ------------------------------------------------------------

    @property
    def ledger(self) -> Ledger | None:
        return self._ledger

    def use_sandbox(self, sandbox: Callable[..., SandboxSession]) -> None:
        """What sandbox mode runs from now on (see the class docstring)."""
        self._sandbox_factory = sandbox

    def use_ledger(self, ledger: Ledger | None) -> None:
        """Use this ledger from now on (the caller keeps it and closes it)."""
        self._ledger, self._owns_ledger = ledger, False

    async def ledger_today(self, sources: Iterable[str] | None) -> Totals | None:
        """Today's totals for `sources` once what is queued is written; None without ledger.
        Raises LedgerError when the database cannot be read."""
        ledger = self._ledger
        if ledger is None:
            return None
        await asyncio.to_thread(ledger.flush, 5.0)
        return await asyncio.to_thread(ledger.today, sources=sources)

    @staticmethod
    def autostart_enabled() -> bool:
        """Whether the app starts at login (blocking: call it off the event loop)."""
        from usepod_desktop.core import autostart

        return bool(autostart.enabled())

    @staticmethod
    async def enable_autostart(config: str | Path | None = None) -> None:
        """Start at login (the user asked); `config`: with this agent.toml (`--config`)."""
        from usepod_desktop.core import autostart

        def enable() -> None:
            command = autostart.launch_command()
            if config is not None:
                command += ["--config", str(Path(config).expanduser().absolute())]
            autostart.enable(command=command)

        await asyncio.to_thread(enable)

    @staticmethod
    async def disable_autostart() -> None:
        from usepod_desktop.core import autostart

        await asyncio.to_thread(autostart.disable)

    async def refresh_autostart(self) -> bool:
        """:meth:`autostart_enabled`, read in a thread."""
        return await asyncio.to_thread(self.autostart_enabled)
