"""The agent facade: the one object the GUI and the headless runner talk to.

It owns the config, the identity, the backend pool and discovery, the coordinator link and the
executor; it derives one observable state (offline, connecting, serving, no models offered,
paused, error, needs pairing) and publishes events on :attr:`Agent.events`. No Qt here.

The working parts are private: readers take :meth:`Agent.snapshot` (core/view.py), the serving
controller gets a `ServedAgent` (core/serving/controller.py), tests reach the parts through
:func:`internals_for_tests` (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core import protocol
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import BackendConfig, Config, load_config
from usepod_desktop.core.discovery import BackendPool, BackendReport, DiscoveryResult, discover
from usepod_desktop.core.events import (
    AgentState,
    BackendStatusChanged,
    CapabilitiesSent,
    ConfigReloaded,
    DiscoveryCompleted,
    EventBus,
    JobFinished,
    JobStarted,
    StateChanged,
)
from usepod_desktop.core.executor import Executor, JobOutcome
from usepod_desktop.core.identity import Identity
from usepod_desktop.core.identity_lock import IdentityLock
from usepod_desktop.core.link import Link, LinkState, LinkStatus
from usepod_desktop.core.logsetup import register_secret
from usepod_desktop.core.secrets import SecretStore
from usepod_desktop.core.serving.controller import ServingController
from usepod_desktop.core.stats import JobStats

if TYPE_CHECKING:
    from usepod_desktop.core.backends.base import Backend
    from usepod_desktop.core.metrics import MetricsServer
    from usepod_desktop.core.view import AgentView

log = logging.getLogger(__name__)

REDISCOVERY_INTERVAL_S = 300.0
#: A new session reuses a discovery result younger than this instead of running discovery
#: again, so a coordinator that closes right after `capabilities` (reconnect about every second)
#: does not cost the backends a discovery pass per reconnect.
DISCOVERY_REUSE_S = 60.0
DEFAULT_GRACE_S = 10.0

__all__ = ["Agent", "AgentInternals", "AgentState", "TestJobResult", "internals_for_tests"]


@dataclass(slots=True)
class TestJobResult:
    outcome: JobOutcome
    body: bytes


@dataclass(slots=True)
class BackendTest:
    """Result of "Test" on one backend entry in the settings window."""

    backend: BackendConfig
    ok: bool
    latency_ms: float | None
    detail: str
    models: list[str]


def no_models_reason(result: DiscoveryResult) -> str:
    """Why nothing is advertised, naming each backend that is down and what to do."""
    if not result.reports:
        return "no backend is configured: add one in Settings (or agent.toml)"
    down = [r for r in result.reports if r.status != "ok"]
    if not down:
        return (
            "the backends answer but list no model: load a model in the backend, "
            "or check the model filters in Settings"
        )
    parts = []
    for report in down[:3]:
        if report.status == "no_key":
            hint = f"set {report.config.api_key_env} with `usepod-desktop keys set` or in Settings"
        elif report.status == "loading":
            hint = "wait for it to finish loading"
        else:
            hint = "start it, or fix its URL in Settings"
        parts.append(f"{report.config.label} is down ({report.detail}): {hint}")
    more = f" (and {len(down) - 3} more)" if len(down) > 3 else ""
    return "; ".join(parts) + more


class _LocalSender:
    """A Sender for "Send test job": collects the frames the executor would send."""

    source = "test"

    def __init__(self, on_chunk: Callable[[bytes], None] | None) -> None:
        self.body = bytearray()
        self.terminal: protocol.OutboundFrame | None = None
        self.done = asyncio.Event()
        self._on_chunk = on_chunk

    async def __call__(self, text: str) -> None:
        frame = protocol.parse_outbound(text)
        if isinstance(frame, protocol.JobChunk):
            self.body += frame.data
            if self._on_chunk is not None:
                self._on_chunk(frame.data)
        else:
            self.terminal = frame
            self.done.set()


class Agent:
    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        allow_insecure: bool = False,
        secrets: SecretStore | None = None,
        rediscovery_interval: float = REDISCOVERY_INTERVAL_S,
        heartbeat_interval: float | None = None,
        backoff: Backoff | None = None,
        instance_kind: str = "run",
    ) -> None:
        """Build with :class:`~usepod_desktop.core.host.AgentHost`, which also records the jobs
        in the ledger. Prometheus metrics are served while the agent runs when
        `observability.prometheus_addr` is set. `instance_kind` ("tray", "run", "service")
        names this process in the one-process-per-identity lock's message to a second one
        (core/identity_lock.py)."""
        self.config = config
        self.config_path = config_path
        self.allow_insecure = allow_insecure
        self.secrets = secrets or SecretStore()
        self.events = EventBus()
        self._stats = JobStats()
        self._pool = BackendPool(self.secrets)
        self._executor = Executor(
            max_concurrent=config.limits.max_concurrent,
            max_tokens_per_minute=config.limits.max_tokens_per_minute,
            stats=self._stats,
        )
        self._executor.on_start.append(self._job_started)
        self._executor.on_outcome.append(self._job_finished)
        self.rediscovery_interval = rediscovery_interval
        self.heartbeat_interval = heartbeat_interval
        self.backoff = backoff or Backoff()
        self.identity: Identity | None = None
        self._link: Link | None = None
        self._discovery: DiscoveryResult | None = None
        self._discovered_at: float | None = None
        self.paused = False
        self.pause_reason = ""
        #: The `[serving]` rules, the manual pause and the backend watch (core/serving); it
        #: sees the agent through the narrow `ServedAgent` interface only.
        self.serving = ServingController(_ServingPort(self))
        self.state = AgentState.OFFLINE
        self.reason = "not started"
        self.started_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._discovery_lock = asyncio.Lock()
        self._sent_key: tuple[Any, ...] | None = None
        self._backend_up: dict[str, bool] = {}
        self._running = False
        self.metrics: MetricsServer | None = None
        self.instance_kind = instance_kind
        self.identity_lock: IdentityLock | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load (or create) the identity and connect; returns once the link task runs."""
        if self._running:
            return
        lock = IdentityLock(self.config.key_path, self.instance_kind)
        await asyncio.to_thread(lock.acquire)  # IdentityInUse: another process serves as us
        self.identity_lock = lock
        self._running = True
        self.started_at = time.monotonic()
        try:
            self.identity = await asyncio.to_thread(
                identity_mod.load_or_create, self.config.key_path
            )
        except BaseException:
            self._running = False
            self._release_identity_lock()
            raise
        if self.config.observability.prometheus_addr:
            # imported only when configured: aiohttp + prometheus_client cost ~15 MB of RSS
            from usepod_desktop.core.metrics import MetricsServer

            self.metrics = MetricsServer(self.config.observability.prometheus_addr, self)
            await self.metrics.start()
        self._start_link()
        self._tasks.append(asyncio.create_task(self._rediscovery_loop(), name="rediscovery"))
        await self.serving.start()

    def _start_link(self) -> None:
        assert self.identity is not None
        kwargs: dict[str, Any] = {}
        if self.heartbeat_interval is not None:
            kwargs["heartbeat_interval"] = self.heartbeat_interval
        self._link = Link(
            self.config.coordinator.url,
            self.identity,
            self._executor,
            self._capabilities_for_new_session,
            enrollment_code=self.config.coordinator.enrollment_code,
            allow_insecure=self.allow_insecure,
            stats=self._stats,
            on_status=self._link_status,
            backoff=self.backoff,
            **kwargs,
        )
        link = self._link
        self._link_task = asyncio.create_task(link.run_forever(), name="coordinator-link")

    async def _stop_link(self) -> None:
        link, self._link = self._link, None
        if link is None:
            return
        await link.stop()
        self._link_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._link_task

    async def stop(self, grace: float = DEFAULT_GRACE_S) -> None:
        """Graceful stop: no new jobs, running jobs get `grace` seconds, then they are ended
        with their terminal frames; then the connection closes."""
        if not self._running:
            return
        self._running = False
        await self.serving.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self._executor.shutdown(grace)
        await self._stop_link()
        await self._pool.aclose()
        if self.metrics is not None:
            await self.metrics.stop()
            self.metrics = None
        self._release_identity_lock()
        self._set_state(AgentState.OFFLINE, "stopped")

    def _release_identity_lock(self) -> None:
        lock, self.identity_lock = self.identity_lock, None
        if lock is not None:
            lock.release()

    # ---- serving controls --------------------------------------------------------------

    async def pause(self, until: datetime | None = None) -> None:
        """Pause by hand until `until` (aware datetime) or until :meth:`resume`: advertise no
        models, refuse new jobs; running jobs finish. Kept across restarts."""
        await self.serving.pause(until)

    async def resume(self) -> None:
        """End a manual pause (the `[serving]` rules may still keep serving paused)."""
        await self.serving.resume()

    async def _set_paused(self, paused: bool, reason: str) -> None:
        """Applied by the serving controller: the one place that pauses or resumes."""
        self.pause_reason = reason if paused else ""
        if paused == self.paused:
            self._refresh_state()
            return
        self.paused = paused
        self._executor.accepting = not paused
        self._executor.refuse_reason = f"provider is paused: {reason}" if paused else ""
        await self._send_capabilities_if_changed()
        self._refresh_state()

    def _set_pause_reason(self, reason: str) -> None:
        if self.paused and reason != self.pause_reason:
            self.pause_reason = reason
            self._executor.refuse_reason = f"provider is paused: {reason}"
            self._refresh_state()

    async def reload_config(self, config: Config | None = None) -> None:
        """Apply a new config without a restart: backends, prices, limits take effect now;
        a new coordinator URL or enrollment code reconnects."""
        if config is None:
            config = await asyncio.to_thread(
                load_config, self.config_path, allow_insecure=self.allow_insecure
            )
        old = self.config
        self.config = config
        self._discovered_at = None  # a new session must not reuse a result of the old config
        self._executor.set_limits(config.limits.max_concurrent, config.limits.max_tokens_per_minute)
        self.events.emit(ConfigReloaded())
        if not self._running:
            return
        if old.coordinator != config.coordinator or old.key_path != config.key_path:
            if old.key_path != config.key_path:
                lock = IdentityLock(config.key_path, self.instance_kind)
                await asyncio.to_thread(lock.acquire)  # before the old one goes
                self._release_identity_lock()
                self.identity_lock = lock
                self.identity = await asyncio.to_thread(
                    identity_mod.load_or_create, config.key_path
                )
            await self._stop_link()
            self._sent_key = None
            self._start_link()
        else:
            await self.rediscover()

    async def rediscover(self) -> DiscoveryResult:
        """Run discovery now; send capabilities only when the advertised list changed."""
        result = await self._discover()
        await self._send_capabilities_if_changed()
        return result

    # ---- test jobs ---------------------------------------------------------------------

    async def run_test_job(
        self,
        model_id: str,
        request: dict[str, Any],
        *,
        format: str = "openai",
        deadline_ms: int = 120_000,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> TestJobResult:
        """Run a job through the same executor path as coordinator jobs, locally."""
        if self._discovery is None:
            await self._discover()
        sender = _LocalSender(on_chunk)
        job = protocol.Job(
            str(uuid.uuid4()),
            model_id,
            request,
            format,  # type: ignore[arg-type]
            deadline_ms,
        )
        outcomes: list[JobOutcome] = []

        def grab(outcome: JobOutcome) -> None:
            if outcome.job_id == job.job_id:
                outcomes.append(outcome)

        self._executor.on_outcome.append(grab)
        try:
            task = self._executor.submit(job, sender)
            if task is not None:
                await task
            await sender.done.wait()
        finally:
            self._executor.on_outcome.remove(grab)
        if outcomes:
            return TestJobResult(outcomes[0], bytes(sender.body))
        # refused at admission: synthesise the outcome from the error frame
        frame = sender.terminal
        assert isinstance(frame, protocol.JobError)
        from datetime import UTC, datetime

        now = datetime.now(UTC)
        return TestJobResult(
            JobOutcome(
                job.job_id,
                model_id,
                "",
                format,
                now,
                now,
                None,
                0,
                0,
                0,
                0,
                frame.error_code,
                frame.message,
                source="test",
            ),
            b"",
        )

    # ---- internals ---------------------------------------------------------------------

    async def _discover(self) -> DiscoveryResult:
        async with self._discovery_lock:
            result = await discover(self.config, self._pool)
            self._discovery = result
            self._discovered_at = time.monotonic()
            self._executor.set_routes(result.models)
            for report in result.reports:
                label = report.config.label
                up = report.status == "ok"
                if self._backend_up.get(label) != up:
                    self._backend_up[label] = up
                    self.events.emit(BackendStatusChanged(label, up, report.detail))
            self.events.emit(DiscoveryCompleted(result))
            if self._link is not None:
                self._refresh_state()
            return result

    def _advertised_key(self) -> tuple[Any, ...]:
        assert self._discovery is not None
        return (
            self._discovery.advertised_key(),
            self.paused,
            self.config.limits.max_concurrent,
            self.config.limits.max_tokens_per_minute,
        )

    async def _capabilities_for_new_session(self) -> str:
        at, result = self._discovered_at, self._discovery
        if result is None or at is None or time.monotonic() - at >= DISCOVERY_REUSE_S:
            result = await self._discover()
        self._sent_key = self._advertised_key()
        self._emit_capabilities(result)
        return result.capabilities_frame(self.config, paused=self.paused)

    async def _send_capabilities_if_changed(self) -> None:
        if self._discovery is None or self._link is None or not self._link.connected:
            return
        key = self._advertised_key()
        if key == self._sent_key:
            return
        frame = self._discovery.capabilities_frame(self.config, paused=self.paused)
        if await self._link.send_capabilities(frame):
            self._sent_key = key
            self._emit_capabilities(self._discovery)

    def _emit_capabilities(self, result: DiscoveryResult) -> None:
        models = () if self.paused else tuple(m.model_id for m in result.models)
        self.events.emit(CapabilitiesSent(models, self.paused))

    async def _rediscovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rediscovery_interval)
            if self._link is not None and self._link.connected:
                try:
                    await self.rediscover()
                except Exception:
                    log.exception("periodic re-discovery failed")

    def _job_started(self, job: protocol.Job, backend: str) -> None:
        self.events.emit(JobStarted(job.job_id, job.model_id, backend))

    def _job_finished(self, outcome: JobOutcome) -> None:
        self.events.emit(JobFinished(outcome))

    def _link_status(self, status: LinkStatus) -> None:
        self._refresh_state(status)

    def _refresh_state(self, status: LinkStatus | None = None) -> None:
        if status is None:
            status = self._link.status if self._link is not None else LinkStatus(LinkState.OFFLINE)
        if status.state == LinkState.CONNECTED:
            if self.paused:
                self._set_state(AgentState.PAUSED, self.pause_reason or "not taking new jobs")
            elif self._discovery is not None and not self._discovery.models:
                self._set_state(AgentState.NO_MODELS, no_models_reason(self._discovery))
            else:
                n = len(self._discovery.models) if self._discovery else 0
                self._set_state(AgentState.SERVING, f"{n} model(s) advertised")
        elif status.state in (LinkState.CONNECTING, LinkState.AUTHENTICATING):
            self._set_state(AgentState.CONNECTING, f"connecting to {self.config.coordinator.url}")
        elif status.state == LinkState.AUTH_FAILED:
            unpaired = (self.identity is None or not self.identity.provider_id) and not (
                self.config.coordinator.enrollment_code
            )
            if unpaired:
                self._set_state(
                    AgentState.NEEDS_PAIRING, f"this computer is not paired: {status.detail}"
                )
            else:
                self._set_state(AgentState.ERROR, status.detail)
        else:
            retry = f"; retrying in {status.retry_in_s:.0f} s" if status.retry_in_s else ""
            self._set_state(AgentState.OFFLINE, f"{status.detail}{retry}")

    def _set_state(self, state: AgentState, reason: str) -> None:
        if state == self.state and reason == self.reason:
            return
        self.state, self.reason = state, reason
        self.events.emit(StateChanged(state, reason))

    # ---- settings support (the GUI never opens sockets or files itself) ----------------

    async def save_config(self, config: Config, *, allow_insecure: bool | None = None) -> None:
        """Validate and write agent.toml atomically (comments kept), then apply it.
        `allow_insecure`: the new `--allow-insecure` setting (ws:// coordinator URLs), taken
        once the file is written (None: keep the current one).

        Raises ConfigError (one line naming the field) and leaves the file and the setting
        untouched when the new config is invalid."""
        from usepod_desktop.core.config import save_config

        path = self.config_path
        if path is None:
            from usepod_desktop.core import paths

            path = paths.default_config_path()
            self.config_path = path
        insecure = self.allow_insecure if allow_insecure is None else allow_insecure
        await asyncio.to_thread(save_config, config, path, allow_insecure=insecure)
        self.allow_insecure = insecure
        await self.reload_config(config)

    async def test_backend(self, backend: BackendConfig) -> BackendTest:
        """Health, latency and models of one backend entry (not necessarily saved yet)."""
        from usepod_desktop.core.backends import BackendError, build_backend

        try:
            instance = await asyncio.to_thread(build_backend, backend, self.secrets)
        except Exception as exc:
            return BackendTest(backend, False, None, str(exc), [])
        try:
            health = await instance.health()
            if not health.ok:
                return BackendTest(backend, False, health.latency_ms, health.status, [])
            try:
                models = await instance.list_models()
            except BackendError as exc:
                return BackendTest(backend, False, health.latency_ms, exc.message, [])
            return BackendTest(
                backend, True, health.latency_ms, health.status, [m.model_id for m in models]
            )
        finally:
            await instance.aclose()

    async def probe_local(self) -> list[Any]:
        """Backends answering on the four well-known local ports (for "Detect")."""
        from usepod_desktop.core.discovery import probe_local

        return await probe_local()

    async def set_api_key(self, name: str, value: str) -> None:
        """Store a BYOK key in the OS keyring (raises SecretStoreError), then re-discover."""
        register_secret(value)  # before it crosses a thread boundary that might log it
        await asyncio.to_thread(self.secrets.set, name, value)
        if self._running:  # the pool notices the new key and rebuilds that backend
            await self.rediscover()

    async def delete_api_key(self, name: str) -> bool:
        removed = await asyncio.to_thread(self.secrets.delete, name)
        if self._running:
            await self.rediscover()
        return removed

    async def key_status(self, name: str) -> Any:
        return await asyncio.to_thread(self.secrets.status, name)

    # ---- read-only views for the UI ----------------------------------------------------

    @property
    def public_key_b64(self) -> str | None:
        return self.identity.public_key_b64 if self.identity else None

    @property
    def provider_id(self) -> str | None:
        return self.identity.provider_id if self.identity else None

    @property
    def jobs_running(self) -> int:
        return self._executor.running

    def snapshot(self) -> AgentView:
        """A frozen picture of the agent now: state, advertised models with their prices,
        backend reports, live heartbeat figures, totals and the coordinator session (for the
        GUI, metrics, diagnostics, the serving controller)."""
        from usepod_desktop.core.view import AgentView, JobTotals, LinkView, ModelView

        discovery = self._discovery
        running = self._executor.running
        stats = self._stats
        link = self._link
        link_view = None
        if link is not None:
            status = link.status
            link_view = LinkView(
                state=status.state,
                detail=status.detail,
                retry_in_s=status.retry_in_s,
                connected=link.connected,
                sessions=link.sessions,
                last_auth_failure=link.last_auth_failure,
                heartbeat_interval_s=link.heartbeat_interval,
                sandbox=link.sandbox,
                session_provider_id=link.session_provider_id,
                stalled_sessions=link.stalled_sessions,
            )
        return AgentView(
            state=self.state,
            reason=self.reason,
            paused=self.paused,
            jobs_running=running,
            running_job_ids=tuple(job.job_id for job in self._executor.running_jobs()),
            models=tuple(ModelView.of(m) for m in discovery.models) if discovery else (),
            reports=tuple(discovery.reports) if discovery else (),
            live=stats.snapshot(queue_depth=running),
            jobs_in_window=stats.jobs_in_window(),
            discovered=discovery is not None,
            heartbeat_age_s=self.heartbeat_age_s,
            link=link_view,
            totals=JobTotals(stats.total_jobs, stats.total_errors, stats.total_refused),
        )

    @property
    def sandbox_provider_id(self) -> str | None:
        """The provider id a sandbox coordinator gave the current session (never written into
        the identity file, docs/sandbox.md); None when not connected to a sandbox."""
        link = self._link
        if link is None or not link.connected or not link.sandbox:
            return None
        return link.session_provider_id

    @property
    def heartbeat_age_s(self) -> float | None:
        """Seconds since the coordinator session's last heartbeat was sent; None when not
        connected or before the session's first heartbeat."""
        link = self._link
        return link.heartbeat_age_s if link is not None and link.connected else None


class _ServingPort:
    """The agent as the serving controller sees it (`ServedAgent` in
    core/serving/controller.py): what it reads, and the few things it does (pause and resume,
    drain running jobs, re-discover). The controller never holds the agent itself."""

    __slots__ = ("_agent",)

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    @property
    def config(self) -> Config:
        return self._agent.config

    @property
    def config_path(self) -> Path | None:
        return self._agent.config_path

    @property
    def events(self) -> EventBus:
        return self._agent.events

    @property
    def paused(self) -> bool:
        return self._agent.paused

    @property
    def connected(self) -> bool:
        link = self._agent._link
        return link is not None and link.connected

    @property
    def jobs_running(self) -> int:
        return self._agent._executor.running

    def snapshot(self) -> AgentView:
        return self._agent.snapshot()

    def backend_reports(self) -> list[tuple[BackendReport, Backend | None]]:
        """Each `[[backends]]` entry of the last discovery pass with its adapter (None when it
        has none: no key, bad config); empty before the first pass."""
        agent = self._agent
        discovery = agent._discovery
        if discovery is None:
            return []
        return [(report, agent._pool.get(report.config)[0]) for report in discovery.reports]

    def advertised_backends(self) -> list[tuple[Backend, list[str]]]:
        """The adapters behind the advertised models, each with its model ids."""
        discovery = self._agent._discovery
        if discovery is None:
            return []
        by_backend: dict[int, tuple[Backend, list[str]]] = {}
        for model in discovery.models:
            entry = by_backend.setdefault(id(model.backend_ref), (model.backend_ref, []))
            entry[1].append(model.model_id)
        return list(by_backend.values())

    async def set_paused(self, paused: bool, reason: str) -> None:
        await self._agent._set_paused(paused, reason)

    def set_pause_reason(self, reason: str) -> None:
        self._agent._set_pause_reason(reason)

    async def drain(self, grace_s: float, message: str) -> None:
        """Refuse new jobs; running ones get `grace_s`, then end with their terminal frame
        (`message` in it). Accepting again is :meth:`set_paused`'s (on resume)."""
        await self._agent._executor.shutdown(grace_s, message)

    async def rediscover(self) -> DiscoveryResult:
        return await self._agent.rediscover()


@dataclass(frozen=True, slots=True)
class AgentInternals:
    """The agent's working parts, for tests that inject faults or move clocks (replace a
    backend's method, slow the link's heartbeat, reach its socket) and for `wait_idle`.

    Product code never uses this: it reads :meth:`Agent.snapshot` and acts through the facade's
    methods (tests/core/test_agent_surface.py checks both)."""

    link: Link | None
    pool: BackendPool
    executor: Executor
    stats: JobStats
    discovery: DiscoveryResult | None


def internals_for_tests(agent: Agent) -> AgentInternals:
    """The test seam: the agent's link, backend pool, executor, statistics and last discovery
    result as they are now (a reconnect keeps the link; a new coordinator URL replaces it)."""
    return AgentInternals(agent._link, agent._pool, agent._executor, agent._stats, agent._discovery)
