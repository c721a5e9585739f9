"""A read-only picture of the agent at one moment (:meth:`Agent.snapshot`).

The GUI, the metrics server and the diagnostics read this instead of the agent's working parts
(discovery result, executor, statistics): frozen values, taken on the event loop, safe to keep
and to hand to another thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from usepod_desktop.core.events import AgentState
from usepod_desktop.core.protocol import HeartbeatFigures

if TYPE_CHECKING:
    from usepod_desktop.core.backends.base import UpstreamPrice
    from usepod_desktop.core.discovery import AdvertisedModel, BackendReport
    from usepod_desktop.core.link import LinkState

__all__ = ["AgentView", "JobTotals", "LinkView", "ModelView"]


@dataclass(frozen=True, slots=True)
class ModelView:
    """One advertised model: its price, where it runs, and the BYOK facts."""

    model_id: str
    input_per_1m: int
    output_per_1m: int
    max_concurrent: int
    #: The backend's kind, as on the wire (`vllm`, `openrouter`).
    backend: str
    backend_label: str
    context_window: int | None
    #: What the BYOK backend charges upstream, None for a local backend or when unknown.
    upstream: UpstreamPrice | None
    below_cost: bool

    @classmethod
    def of(cls, model: AdvertisedModel) -> ModelView:
        return cls(
            model_id=model.model_id,
            input_per_1m=model.input_per_1m,
            output_per_1m=model.output_per_1m,
            max_concurrent=model.max_concurrent,
            backend=model.backend,
            backend_label=model.backend_label,
            context_window=model.context_window,
            upstream=model.upstream,
            below_cost=model.below_cost,
        )


@dataclass(frozen=True, slots=True)
class LinkView:
    """The coordinator session as the doctor and the settings show it."""

    state: LinkState
    #: What the state is about: the URL while connecting, the provider id once connected,
    #: the reason of the last drop or refusal.
    detail: str
    #: Seconds until the next attempt, while waiting to reconnect.
    retry_in_s: float | None
    #: A session is up (authenticated, capabilities sent).
    connected: bool
    #: Completed handshakes since the agent started.
    sessions: int
    #: The coordinator's reason of the last `auth_failed` (None once a later `auth_ok` came).
    last_auth_failure: str | None
    heartbeat_interval_s: float
    #: The coordinator said `"sandbox": true` (docs/sandbox.md).
    sandbox: bool
    #: The provider id the coordinator gave the current session (a sandbox's is never stored).
    session_provider_id: str | None
    #: Sessions dropped because the socket stopped draining (docs/protocol.md, flow control).
    stalled_sessions: int


@dataclass(frozen=True, slots=True)
class JobTotals:
    """Counts since the agent started (the heartbeat figures cover the last 60 s only)."""

    jobs: int = 0
    #: Jobs that ended with a backend error or a timeout.
    errors: int = 0
    #: Jobs refused at admission (capacity, unknown model, unservable frame): not errors.
    refused: int = 0


@dataclass(frozen=True, slots=True)
class AgentView:
    """The agent's state, what it advertises, its backends and its live figures."""

    state: AgentState
    reason: str
    paused: bool
    jobs_running: int
    #: Ids of the jobs running now.
    running_job_ids: tuple[str, ...]
    #: What the agent advertises (empty before the first discovery; all of them while paused).
    models: tuple[ModelView, ...]
    #: The last discovery pass, one report per `[[backends]]` entry (read them, never change
    #: them); empty before the first pass.
    reports: tuple[BackendReport, ...]
    #: What the next heartbeat will report.
    live: HeartbeatFigures
    #: Jobs counted in the live figures' 60 s window.
    jobs_in_window: int
    #: False before the first discovery pass.
    discovered: bool
    #: Seconds since the coordinator session's last heartbeat went out (None: not connected,
    #: or the session's first is not due yet).
    heartbeat_age_s: float | None = None
    #: The coordinator session (None before the agent started, or after it stopped).
    link: LinkView | None = None
    totals: JobTotals = JobTotals()
