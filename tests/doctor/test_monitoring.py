"""Fleet monitoring: the alert rules pass promtool (syntax and a unit test per alert), and every
metric the rules and the Grafana dashboard use exists in a real /metrics scrape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from usepod_desktop.core.agent import Agent
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    ObservabilityConfig,
    PricingConfig,
)
from usepod_desktop.core.serving.sensors import GpuReading, Sensors
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "packaging" / "monitoring"
RULES = MONITORING / "alerts.yml"
RULES_TEST = MONITORING / "alerts.test.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
_NAME = re.compile(r"\b(usepod_[a-z0-9_]+)")


class InjectedGpu:
    """A GPU sensor with known readings, so the GPU metric names exist in the scrape."""

    problem = None

    def read(self) -> list[GpuReading]:
        return [GpuReading("Test GPU", 64, 35, 12 * 1024, 24 * 1024, 210)]


class NoIdle:
    name = "test idle"

    def idle_seconds(self) -> float | None:
        return None


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (scripts/test does)"
    return found


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_promtool_unit_tests_fire_each_alert() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULES_TEST.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=MONITORING,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULES_TEST.read_text()))
    defined = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    assert tested == defined


def _dashboard_exprs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_dashboard_exprs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_dashboard_exprs(value))
    return found


def used_metric_names() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = _dashboard_exprs(dashboard)
    names = {n for e in exprs for n in _NAME.findall(e)}
    names |= set(_NAME.findall(RULES.read_text()))
    return names


async def test_every_metric_used_exists_in_a_real_scrape(tmp_path: Path) -> None:
    used = used_metric_names()
    assert {"usepod_jobs_total", "usepod_coordinator_connected"} <= used
    assert {
        "usepod_estimated_earnings_usd_total",
        "usepod_gpu_temperature_celsius",
        "usepod_gpu_memory_used_bytes",
        "usepod_gpu_memory_total_bytes",
        "usepod_gpu_utilization_ratio",
        "usepod_gpu_power_watts",
    } <= used
    async with (
        SandboxCoordinator(ws_heartbeat=None) as coord,
        FakeBackend("vllm", ["m1"], output_tokens=5) as fake,
    ):
        config = Config(
            coordinator=CoordinatorConfig(url=coord.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig("vllm", fake.url),),
            identity_key_path=str(tmp_path / "identity.key"),
            observability=ObservabilityConfig(prometheus_addr="127.0.0.1:0"),
        )
        agent = Agent(config, allow_insecure=True)
        agent.serving.sensors = Sensors(
            idle=NoIdle(), processes=frozenset, battery=lambda: False, gpu=InjectedGpu()
        )
        await agent.start()
        try:
            await coord.wait_for_capabilities(10)
            handle = await coord.dispatch("m1", {"messages": [{"role": "user", "content": "hi"}]})
            await handle.wait(30)
            assert agent.metrics is not None and agent.metrics.url is not None
            async with aiohttp.ClientSession() as s, s.get(agent.metrics.url) as response:
                text = await response.text()
        finally:
            await agent.stop(grace=0.1)
    scraped = {
        line.split("{", 1)[0].split(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    missing = sorted(used - scraped)
    assert missing == [], f"used by the dashboard/rules but not in /metrics: {missing}"
    # and docs/metrics.md documents every family the agent exports
    doc = METRICS_DOC.read_text()
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in scraped}
    for family in families:
        if family.startswith("usepod_"):
            assert f"`{family}" in doc, f"{family} is not in docs/metrics.md"


def test_dashboard_covers_n_rigs() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["instance"]["multi"] and variables["instance"]["includeAll"]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert 'instance=~"$instance"' in target["expr"], panel["title"]


@pytest.mark.parametrize("name", ["alerts.yml", "alerts.test.yml", "grafana-dashboard.json"])
def test_monitoring_files_exist(name: str) -> None:
    assert (MONITORING / name).is_file()
