"""Prometheus metrics: scraped over HTTP on 127.0.0.1, fed only by agent events."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from usepod_desktop.core.config import BackendConfig, ObservabilityConfig
from usepod_desktop.core.discovery import BackendReport
from usepod_desktop.core.events import (
    AgentState,
    BackendStatusChanged,
    EventBus,
    JobFinished,
    JobStarted,
    StateChanged,
)
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.metrics import MetricsServer, parse_addr
from usepod_desktop.core.protocol import HeartbeatFigures
from usepod_desktop.core.serving.policy import Readings
from usepod_desktop.core.serving.sensors import GpuReading, Snapshot
from usepod_desktop.core.view import AgentView

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


class FakeAgent:
    """What MetricsServer uses of the Agent facade."""

    def __init__(self, prometheus_addr: str | None = None) -> None:
        self.events = EventBus()
        self.state = AgentState.OFFLINE
        self.config = type("Config", (), {})()
        self.config.observability = ObservabilityConfig(prometheus_addr=prometheus_addr)
        self.running_job_ids: tuple[str, ...] = ()
        self.reports: tuple[Any, ...] = ()

    def snapshot(self) -> AgentView:
        return AgentView(
            state=self.state,
            reason="",
            paused=False,
            jobs_running=len(self.running_job_ids),
            running_job_ids=self.running_job_ids,
            models=(),
            reports=self.reports,
            live=HeartbeatFigures(),
            jobs_in_window=0,
            discovered=bool(self.reports),
        )


def finished(
    job_id: str,
    *,
    model: str = "m1",
    backend: str = "vllm",
    ttfb_ms: float | None = 200.0,
    error_code: str | None = None,
    cancelled: bool = False,
    prices: tuple[int, int] = (0, 0),
    source: str = "coordinator",
) -> JobFinished:
    return JobFinished(
        JobOutcome(
            job_id=job_id,
            model_id=model,
            backend=backend,
            format="openai",
            started_at=NOW - timedelta(seconds=1),
            ended_at=NOW,
            ttfb_ms=ttfb_ms,
            duration_ms=1000,
            input_tokens=100,
            output_tokens=40,
            bytes_relayed=10,
            error_code=error_code,
            cancelled=cancelled,
            input_per_1m=prices[0],
            output_per_1m=prices[1],
            source=source,
        )
    )


async def scrape(server: MetricsServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert server.url is not None
    async with aiohttp.ClientSession() as session, session.get(server.url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


@pytest.fixture
async def served() -> AsyncIterator[tuple[FakeAgent, MetricsServer]]:
    agent = FakeAgent()
    server = MetricsServer("127.0.0.1:0", agent)
    assert await server.start()
    yield agent, server
    await server.stop()


async def test_metrics_follow_the_events(served: tuple[FakeAgent, MetricsServer]) -> None:
    agent, server = served
    assert server.bound is not None and server.bound[0] == "127.0.0.1" and server.bound[1] > 0
    emit = agent.events.emit
    emit(StateChanged(AgentState.SERVING, "2 model(s) advertised"))
    emit(BackendStatusChanged("vllm @ http://localhost:8000", True, "ok"))
    emit(BackendStatusChanged("ollama @ http://localhost:11434", False, "connection refused"))
    for job in ("a", "b", "c", "d"):
        emit(JobStarted(job, "m1", "vllm"))
    emit(finished("a", ttfb_ms=200.0))
    emit(finished("b", ttfb_ms=3000.0))
    emit(finished("c", error_code="backend_timeout", ttfb_ms=None))

    m = await scrape(server)
    assert (
        m[("usepod_jobs_total", (("backend", "vllm"), ("model", "m1"), ("outcome", "done")))] == 2
    )
    assert (
        m[("usepod_jobs_total", (("backend", "vllm"), ("model", "m1"), ("outcome", "error")))] == 1
    )
    assert m[("usepod_tokens_total", (("direction", "input"), ("model", "m1")))] == 300
    assert m[("usepod_tokens_total", (("direction", "output"), ("model", "m1")))] == 120
    assert m[("usepod_jobs_in_flight", ())] == 1  # d is still running
    assert m[("usepod_time_to_first_byte_seconds_count", ())] == 2
    assert m[("usepod_time_to_first_byte_seconds_sum", ())] == pytest.approx(3.2)
    assert m[("usepod_time_to_first_byte_seconds_bucket", (("le", "0.25"),))] == 1
    assert m[("usepod_time_to_first_byte_seconds_bucket", (("le", "5.0"),))] == 2
    assert m[("usepod_coordinator_connected", ())] == 1
    assert m[("usepod_backend_up", (("backend", "vllm @ http://localhost:8000"),))] == 1
    assert m[("usepod_backend_up", (("backend", "ollama @ http://localhost:11434"),))] == 0

    emit(finished("d", cancelled=True))
    emit(StateChanged(AgentState.OFFLINE, "connection lost"))
    emit(BackendStatusChanged("vllm @ http://localhost:8000", False, "down"))
    m = await scrape(server)
    cancelled = (
        "usepod_jobs_total",
        (("backend", "vllm"), ("model", "m1"), ("outcome", "cancelled")),
    )
    assert m[cancelled] == 1
    assert m[("usepod_jobs_in_flight", ())] == 0
    assert m[("usepod_coordinator_connected", ())] == 0
    assert m[("usepod_backend_up", (("backend", "vllm @ http://localhost:8000"),))] == 0


async def test_paused_counts_as_connected(served: tuple[FakeAgent, MetricsServer]) -> None:
    agent, server = served
    agent.events.emit(StateChanged(AgentState.PAUSED, "not taking new jobs"))
    assert (await scrape(server))[("usepod_coordinator_connected", ())] == 1


async def test_openmetrics_when_asked(served: tuple[FakeAgent, MetricsServer]) -> None:
    agent, server = served
    agent.events.emit(finished("x"))
    assert server.url is not None
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with aiohttp.ClientSession() as session, session.get(server.url, headers=headers) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await r.text()).rstrip().endswith("# EOF")


async def test_each_agent_has_its_own_registry() -> None:
    one, two = FakeAgent(), FakeAgent()
    s1, s2 = MetricsServer("127.0.0.1:0", one), MetricsServer("127.0.0.1:0", two)
    assert await s1.start() and await s2.start()
    try:
        one.events.emit(finished("only-on-one"))
        key = ("usepod_jobs_total", (("backend", "vllm"), ("model", "m1"), ("outcome", "done")))
        assert (await scrape(s1))[key] == 1
        assert key not in await scrape(s2)
        labels = {"backend": "vllm", "model": "m1", "outcome": "done"}
        assert REGISTRY.get_sample_value("usepod_jobs_total", labels) is None  # not the global
    finally:
        await s1.stop()
        await s2.stop()


async def test_stop_closes_the_port_and_unsubscribes() -> None:
    agent = FakeAgent()
    server = MetricsServer("127.0.0.1:0", agent)
    assert await server.start()
    assert server.bound is not None
    port = server.bound[1]
    await server.stop()
    await server.stop()  # twice is fine
    assert server.url is None
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    agent.events.emit(finished("after-stop"))
    labels = {"backend": "vllm", "model": "m1", "outcome": "done"}
    assert server.metrics.registry.get_sample_value("usepod_jobs_total", labels) is None


async def test_port_in_use_is_one_warning_and_no_exception(caplog: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(f"127.0.0.1:{port}", FakeAgent())
        with caplog.at_level(logging.WARNING, logger="usepod_desktop.core.metrics"):
            assert await server.start() is False
        assert not server.running and server.url is None
        assert server.problem is not None and "\n" not in server.problem
        assert f"127.0.0.1:{port}" in server.problem
        assert [r.getMessage() for r in caplog.records] == [server.problem]
        await server.stop()


@pytest.mark.parametrize("addr", ["9090", "127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":9"])
async def test_bad_address_is_one_warning(addr: str) -> None:
    server = MetricsServer(addr, FakeAgent())
    assert await server.start() is False
    assert server.problem is not None and "prometheus_addr" in server.problem
    await server.stop()


def test_parse_addr() -> None:
    assert parse_addr("127.0.0.1:9090") == ("127.0.0.1", 9090)
    assert parse_addr("[::1]:9464") == ("::1", 9464)
    assert parse_addr("localhost:0") == ("localhost", 0)
    with pytest.raises(ValueError, match="brackets"):
        parse_addr("::1:9090")


async def test_only_when_configured() -> None:
    assert MetricsServer.from_agent(FakeAgent()) is None
    server = MetricsServer.from_agent(FakeAgent("127.0.0.1:0"))
    assert server is not None and server.addr == "127.0.0.1:0"


async def test_seeds_from_a_running_agent() -> None:
    agent = FakeAgent()
    agent.state = AgentState.SERVING
    agent.running_job_ids = ("j1", "j2")
    up = BackendReport(BackendConfig("vllm", "http://127.0.0.1:8000"), "ok", "ok")
    down = BackendReport(BackendConfig("ollama", "http://127.0.0.1:11434"), "down", "refused")
    agent.reports = (up, down)
    server = MetricsServer("127.0.0.1:0", agent)
    assert await server.start()
    try:
        samples = await scrape(server)
        assert samples[("usepod_coordinator_connected", ())] == 1
        assert samples[("usepod_jobs_in_flight", ())] == 2
        assert samples[("usepod_backend_up", (("backend", up.config.label),))] == 1
        assert samples[("usepod_backend_up", (("backend", down.config.label),))] == 0
        agent.events.emit(finished("j1"))  # a seeded job that ends leaves the gauge
        assert (await scrape(server))[("usepod_jobs_in_flight", ())] == 1
    finally:
        await server.stop()


async def test_estimated_earnings_count_billed_jobs_only(
    served: tuple[FakeAgent, MetricsServer],
) -> None:
    agent, server = served
    emit = agent.events.emit
    # 100 input + 40 output tokens at $0.50 / $2.00 per 1M: billed $0.00013, the share 80%
    prices = (500_000, 2_000_000)
    emit(finished("a", prices=prices))
    emit(finished("b", prices=prices, model="m2"))
    emit(finished("c", prices=prices, error_code="backend_timeout"))  # not billed
    emit(finished("d", prices=prices, cancelled=True))  # not billed
    emit(finished("e", prices=prices, source="test"))  # "Send test job": not billed
    m = await scrape(server)
    expected = (100 * 0.5 + 40 * 2.0) / 1e6 * 0.8
    assert m[("usepod_estimated_earnings_usd_total", (("model", "m1"),))] == pytest.approx(
        expected, rel=1e-12
    )
    assert m[("usepod_estimated_earnings_usd_total", (("model", "m2"),))] == pytest.approx(
        expected, rel=1e-12
    )


class FakeServing:
    def __init__(self, snapshot: Any) -> None:
        self.snapshot = snapshot


async def test_gpu_gauges_from_the_serving_rules_reading() -> None:
    agent = FakeAgent()
    agent.serving = FakeServing(None)  # type: ignore[attr-defined]
    server = MetricsServer("127.0.0.1:0", agent)
    assert await server.start()
    try:
        m = await scrape(server)
        assert not any(name.startswith("usepod_gpu_") for name, _l in m)  # no reading yet
        agent.serving.snapshot = Snapshot(  # type: ignore[attr-defined]
            Readings(),
            (
                GpuReading("RTX 4090", 64, 35, 12 * 1024, 24 * 1024, 210),
                GpuReading("RTX 3060", 51, None, 1536, 12 * 1024, None),
            ),
        )
        m = await scrape(server)
        g0 = (("gpu", "0"), ("name", "RTX 4090"))
        g1 = (("gpu", "1"), ("name", "RTX 3060"))
        assert m[("usepod_gpu_temperature_celsius", g0)] == 64
        assert m[("usepod_gpu_temperature_celsius", g1)] == 51
        assert m[("usepod_gpu_memory_used_bytes", g0)] == 12 * 2**30
        assert m[("usepod_gpu_memory_total_bytes", g0)] == 24 * 2**30
        assert m[("usepod_gpu_memory_used_bytes", g1)] == 1536 * 2**20
        assert m[("usepod_gpu_utilization_ratio", g0)] == pytest.approx(0.35)
        assert m[("usepod_gpu_power_watts", g0)] == 210
        # a figure the sensor could not read is absent, not 0
        assert ("usepod_gpu_utilization_ratio", g1) not in m
        assert ("usepod_gpu_power_watts", g1) not in m
        # the sensor found no GPU: no GPU series at all
        agent.serving.snapshot = Snapshot(  # type: ignore[attr-defined]
            Readings(), (), gpu_problem="no NVIDIA GPU sensor"
        )
        m = await scrape(server)
        assert not any(name.startswith("usepod_gpu_") for name, _l in m)
    finally:
        await server.stop()
