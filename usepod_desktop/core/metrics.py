"""Prometheus metrics at `observability.prometheus_addr` (beyond the reference, which declares the
key and never serves it).

Served only when the key is set, on exactly the configured `host:port`, by a small aiohttp server
on the agent's event loop, from a private :class:`prometheus_client.CollectorRegistry` (never the
global one, so several agents can live in one process, as in the tests). Everything is fed by
the agent's events:

- `usepod_jobs_total{model,outcome,backend}`: finished jobs; outcome done / error / cancelled
- `usepod_tokens_total{model,direction}`: tokens read from the streams; direction input / output
- `usepod_jobs_in_flight`: jobs running now
- `usepod_time_to_first_byte_seconds`: histogram, job start to first relayed byte
- `usepod_coordinator_connected`: 1 while connected (serving or paused), else 0
- `usepod_backend_up{backend}`: 1 / 0 per backend (its label), from each discovery
- `usepod_estimated_earnings_usd_total{model}`: the provider's share of finished billed jobs,
  computed as the ledger computes it (an estimate: the coordinator settles the payout)
- `usepod_gpu_temperature_celsius`, `usepod_gpu_memory_used_bytes`,
  `usepod_gpu_memory_total_bytes`, `usepod_gpu_utilization_ratio`, `usepod_gpu_power_watts`
  `{gpu,name}`: read at scrape time from the serving rules' last sensor reading (the same one
  the tray menu and the dashboard show); absent when there is no GPU sensor

A bad address or a port in use gives one warning line; the agent keeps serving without metrics.

Wiring (the headless runner and the GUI)::

    metrics = MetricsServer.from_agent(agent)   # None when prometheus_addr is not set
    if metrics is not None:
        await metrics.start()
    ...
    if metrics is not None:
        await metrics.stop()
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from usepod_desktop.core.events import (
    AgentState,
    BackendStatusChanged,
    EventBus,
    JobFinished,
    JobStarted,
    StateChanged,
)
from usepod_desktop.core.ledger import JobRow
from usepod_desktop.core.money import NANO_PER_USD
from usepod_desktop.core.text import redact_url

if TYPE_CHECKING:
    from usepod_desktop.core.view import AgentView

__all__ = ["AgentMetrics", "MetricsServer", "parse_addr"]

log = logging.getLogger(__name__)

#: Time to first byte of an inference job: from tens of ms (a warm local model) to a minute.
TTFB_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONNECTED_STATES = frozenset({AgentState.SERVING, AgentState.NO_MODELS, AgentState.PAUSED})


def parse_addr(addr: str) -> tuple[str, int]:
    """`"127.0.0.1:9090"` / `"[::1]:9090"` / `"localhost:9090"` -> (host, port).
    Raises ValueError with a one-line reason."""
    text = addr.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:9090), got {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:9090, got {addr!r}")
    if not host:
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:9090), got {addr!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number in {addr!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range in {addr!r}")
    return host, port


#: (metric name, help, GpuReading attribute, factor to the metric's unit)
GPU_GAUGES: tuple[tuple[str, str, str, float], ...] = (
    ("usepod_gpu_temperature_celsius", "GPU temperature.", "temp_c", 1.0),
    ("usepod_gpu_memory_used_bytes", "GPU memory (VRAM) in use.", "vram_used_mb", 2.0**20),
    ("usepod_gpu_memory_total_bytes", "GPU memory (VRAM) in all.", "vram_total_mb", 2.0**20),
    ("usepod_gpu_utilization_ratio", "GPU utilisation, 0 to 1.", "util_pct", 0.01),
    ("usepod_gpu_power_watts", "GPU power draw.", "power_w", 1.0),
)


class GpuCollector:
    """The GPU gauges, read at scrape time from `snapshot()` (the serving rules' last sensor
    reading, memory only: a scrape never reads a GPU sensor). No GPU, no samples."""

    def __init__(self) -> None:
        self.snapshot: Callable[[], Any] = lambda: None

    def describe(self) -> list[Metric]:
        return [
            GaugeMetricFamily(name, doc, labels=["gpu", "name"]) for name, doc, _a, _f in GPU_GAUGES
        ]

    def collect(self) -> list[Metric]:
        try:
            gpus = tuple(getattr(self.snapshot(), "gpus", None) or ())
        except Exception:
            gpus = ()
        families: list[Metric] = []
        for name, doc, attr, factor in GPU_GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["gpu", "name"])
            for index, reading in enumerate(gpus):
                value = getattr(reading, attr, None)
                if value is not None:
                    family.add_metric([str(index), str(reading.name)], float(value) * factor)
            if family.samples:
                families.append(family)
        return families


def _outcome_label(outcome: Any) -> str:
    if outcome.cancelled:
        return "cancelled"
    return "error" if outcome.error_code is not None else "done"


class AgentMetrics:
    """The metric families on a private registry, updated from agent events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "usepod_jobs",
            "Jobs that finished, by model, outcome and backend.",
            ["model", "outcome", "backend"],
            registry=r,
        )
        self.tokens = Counter(
            "usepod_tokens",
            "Tokens of finished jobs as read from the streams (estimates).",
            ["model", "direction"],
            registry=r,
        )
        self.jobs_in_flight = Gauge("usepod_jobs_in_flight", "Jobs running now.", registry=r)
        self.ttfb = Histogram(
            "usepod_time_to_first_byte_seconds",
            "Time from a job's start to its first relayed byte.",
            buckets=TTFB_BUCKETS,
            registry=r,
        )
        self.coordinator_connected = Gauge(
            "usepod_coordinator_connected",
            "1 while connected to the coordinator, else 0.",
            registry=r,
        )
        self.backend_up = Gauge(
            "usepod_backend_up",
            "1 when the backend passed its last health check, else 0.",
            ["backend"],
            registry=r,
        )
        self.earnings = Counter(
            "usepod_estimated_earnings_usd",
            "Estimated earnings (the provider's share) of finished billed jobs, in USD.",
            ["model"],
            registry=r,
        )
        self.gpus = GpuCollector()
        r.register(self.gpus)
        self._in_flight: set[str] = set()

    def seed(self, view: AgentView) -> None:
        """Take the agent's current state (for a server started after the agent)."""
        self.coordinator_connected.set(1 if view.state in CONNECTED_STATES else 0)
        self._in_flight = set(view.running_job_ids)
        self.jobs_in_flight.set(len(self._in_flight))
        for report in view.reports:
            label = redact_url(report.config.label)
            self.backend_up.labels(label).set(1 if report.status == "ok" else 0)

    def subscribe(self, bus: EventBus) -> Callable[[], None]:
        """Follow `bus` (one handler per event type); returns the unsubscribe function."""
        offs = [
            bus.subscribe(JobStarted, self.on_job_started),
            bus.subscribe(JobFinished, self.on_job_finished),
            bus.subscribe(StateChanged, self.on_state),
            bus.subscribe(BackendStatusChanged, self.on_backend),
        ]

        def unsubscribe() -> None:
            for off in offs:
                off()

        return unsubscribe

    def on_job_started(self, event: JobStarted) -> None:
        self._in_flight.add(event.job_id)
        self.jobs_in_flight.set(len(self._in_flight))

    def on_job_finished(self, event: JobFinished) -> None:
        o = event.outcome
        self._in_flight.discard(o.job_id)
        self.jobs_in_flight.set(len(self._in_flight))
        self.jobs.labels(o.model_id, _outcome_label(o), o.backend or "none").inc()
        if o.input_tokens:
            self.tokens.labels(o.model_id, "input").inc(o.input_tokens)
        if o.output_tokens:
            self.tokens.labels(o.model_id, "output").inc(o.output_tokens)
        if o.ttfb_ms is not None:
            self.ttfb.observe(o.ttfb_ms / 1000)
        try:
            earned = JobRow.from_outcome(o).earnings_nusd  # 0 unless done and billed
        except Exception:  # a malformed outcome never breaks the metrics
            earned = 0
        if earned:
            self.earnings.labels(o.model_id).inc(earned / NANO_PER_USD)

    def on_state(self, event: StateChanged) -> None:
        self.coordinator_connected.set(1 if event.state in CONNECTED_STATES else 0)

    def on_backend(self, event: BackendStatusChanged) -> None:
        self.backend_up.labels(redact_url(event.label)).set(1 if event.up else 0)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when asked for)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class MetricsServer:
    """`GET /metrics` on `addr` for one agent. :meth:`start` never raises."""

    def __init__(self, addr: str, agent: Any) -> None:
        self.addr = addr
        self.agent = agent
        self.metrics = AgentMetrics()
        #: One line when the server could not start, else None.
        self.problem: str | None = None
        self._runner: web.AppRunner | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.bound: tuple[str, int] | None = None

    @classmethod
    def from_agent(cls, agent: Any) -> MetricsServer | None:
        """A server for the agent's `observability.prometheus_addr`, or None when unset."""
        addr = agent.config.observability.prometheus_addr
        return cls(addr, agent) if addr else None

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def url(self) -> str | None:
        """`http://host:port/metrics` once listening (the real port when asked for port 0)."""
        if self.bound is None:
            return None
        host, port = self.bound
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/metrics"

    async def start(self) -> bool:
        """Subscribe to the agent's events and listen. False (and one warning line) when the
        address is bad or taken: the agent keeps serving without metrics."""
        if self._runner is not None:
            return True
        try:
            host, port = parse_addr(self.addr)
        except ValueError as exc:
            return self._warn(f"observability.prometheus_addr: {exc}")
        app = web.Application()
        app.router.add_get("/metrics", self._handle_metrics)
        app.router.add_get("/", self._handle_index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            reason = exc.strerror or str(exc)
            return self._warn(
                f"metrics: cannot listen on {self.addr} ({reason}); change "
                "observability.prometheus_addr. The agent keeps serving without metrics"
            )
        self._runner = runner
        self.bound = self._bound_address(runner, host, port)
        self.metrics.seed(self.agent.snapshot())
        serving = getattr(self.agent, "serving", None)
        if serving is not None:  # the GPU gauges read its last sensor reading at each scrape
            self.metrics.gpus.snapshot = lambda: getattr(serving, "snapshot", None)
        self._unsubscribe = self.metrics.subscribe(self.agent.events)
        self.problem = None
        log.info("Prometheus metrics at %s", self.url)
        return True

    @staticmethod
    def _bound_address(runner: web.AppRunner, host: str, port: int) -> tuple[str, int]:
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return str(address[0]), int(address[1])
        return host, port

    def _warn(self, message: str) -> bool:
        self.problem = message
        log.warning("%s", message)
        return False

    async def stop(self) -> None:
        """Stop listening and unsubscribe. Safe to call twice or without start()."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.bound = None

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _handle_index(self, request: web.Request) -> web.Response:
        return web.Response(text="usepod-desktop agent: metrics at /metrics\n")
