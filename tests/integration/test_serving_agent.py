"""The serving rules applied to a real agent connected to a real sandbox coordinator: rule
pauses advertise nothing and refuse jobs with `out_of_capacity`, resuming re-advertises, the
manual pause survives a restart, and a local backend that goes down is withdrawn within
seconds and re-advertised when it answers again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import FAST_BACKOFF, make_config
from usepod_desktop.core import protocol
from usepod_desktop.core.agent import Agent, internals_for_tests
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import BackendConfig, Config, ServingConfig, save_config
from usepod_desktop.core.events import AgentState
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.core.serving.controller import (
    BACKEND_CHECK_TIMEOUT_S,
    DEFAULT_BACKEND_INTERVAL_S,
    ServingChanged,
)
from usepod_desktop.core.serving.sensors import GpuReading, Sensors
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

CHAT = {"messages": [{"role": "user", "content": "hello there agent"}], "max_tokens": 6}


class Idle:
    name = "test idle"

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def idle_seconds(self) -> float | None:
        return self.seconds


class Gpu:
    problem = None

    def __init__(self, temp: float | None = 50.0) -> None:
        self.temp = temp

    def read(self) -> list[GpuReading]:
        return [GpuReading("Test GPU", self.temp, 10, 1000, 8000, 50)]


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


Factory = Callable[..., Any]


@pytest.fixture
async def serving_agent(tmp_path: Path) -> AsyncIterator[Factory]:
    agents: list[Agent] = []

    async def factory(
        config: Config,
        *,
        idle: Idle,
        gpu: Gpu | None = None,
        start: bool = True,
        name: str | None = None,
        **ctl: Any,
    ) -> Agent:
        path = tmp_path / (name or f"agent-{len(agents)}.toml")
        save_config(config, path)
        agent = Agent(
            config, config_path=path, allow_insecure=True, backoff=Backoff(**FAST_BACKOFF)
        )
        agent.serving.sensors = Sensors(
            idle=idle, processes=frozenset, battery=lambda: False, gpu=gpu or Gpu()
        )
        agent.serving.interval = ctl.pop("interval", 0.05)
        for key, value in ctl.items():
            setattr(agent.serving, key, value)
        agents.append(agent)
        if start:
            await agent.start()
        return agent

    yield factory
    for agent in agents:
        await agent.stop(grace=0.1)


def ids(caps: Any) -> list[str]:
    return [m["model_id"] for m in caps.models]


async def test_idle_rule_pauses_refuses_and_resumes(
    coordinator: SandboxCoordinator, serving_agent: Factory, tmp_path: Path
) -> None:
    idle = Idle(0.0)  # the owner is at the keyboard
    serving = ServingConfig(when="idle", idle_minutes=5, min_switch_s=0)
    async with FakeBackend("vllm", ["m"]) as fake:
        config = make_config(coordinator.url, [BackendConfig("vllm", fake.url)], tmp_path)
        agent = await serving_agent(config.replace(serving=serving), idle=idle)
        events: list[ServingChanged] = []
        agent.events.subscribe(
            lambda e: events.append(e) if isinstance(e, ServingChanged) else None
        )
        caps = await coordinator.wait_for_capabilities(10)
        assert ids(caps) == []  # paused from the first frame on: nothing advertised
        await wait_until(lambda: agent.state == AgentState.PAUSED)
        assert agent.reason == "you are using the computer; resumes after 5 idle minutes"
        refused = await coordinator.dispatch("m", CHAT)
        terminal = await refused.wait(5)
        assert isinstance(terminal, protocol.JobError)
        assert terminal.error_code == ErrorCode.OUT_OF_CAPACITY
        assert "paused" in terminal.message and "using the computer" in terminal.message
        status = agent.serving.status()
        assert status["paused_by"] == ["idle"] and status["models"] == []
        # the owner leaves: serving starts by itself
        idle.seconds = 301.0
        caps = await coordinator.wait_for_capabilities(10, after=1)
        assert ids(caps) == ["m"]
        assert agent.state == AgentState.SERVING
        assert events[-1].serving and not events[-1].manual
        handle = await coordinator.dispatch("m", CHAT)
        assert isinstance(await handle.wait(10), protocol.JobDone)
        # ...and comes back: paused again at once
        idle.seconds = 1.0
        caps = await coordinator.wait_for_capabilities(10, after=2)
        assert ids(caps) == []
        assert events[-1] == ServingChanged(
            False, ("idle",), agent.reason, events[-1].resumes_at, manual=False
        )


async def test_temperature_pause_waits_for_the_resume_threshold(
    coordinator: SandboxCoordinator, serving_agent: Factory, tmp_path: Path
) -> None:
    gpu = Gpu(60.0)
    serving = ServingConfig(gpu_temp_pause_c=85, gpu_temp_resume_c=75, min_switch_s=0)
    async with FakeBackend("vllm", ["m"]) as fake:
        config = make_config(coordinator.url, [BackendConfig("vllm", fake.url)], tmp_path)
        agent = await serving_agent(config.replace(serving=serving), idle=Idle(None), gpu=gpu)
        assert ids(await coordinator.wait_for_capabilities(10)) == ["m"]
        gpu.temp = 88.0
        assert ids(await coordinator.wait_for_capabilities(10, after=1)) == []
        assert agent.serving.status()["paused_by"] == ["temperature"]
        gpu.temp = 80.0  # cooler, but not below the resume threshold: still paused
        checks = agent.serving.memory
        await wait_until(lambda: agent.serving.memory is not checks)
        await asyncio.sleep(0.2)
        assert agent.paused
        gpu.temp = 74.0
        assert ids(await coordinator.wait_for_capabilities(10, after=2)) == ["m"]


async def test_manual_pause_survives_a_restart_and_resume_ends_it(
    coordinator: SandboxCoordinator, serving_agent: Factory, tmp_path: Path
) -> None:
    async with FakeBackend("vllm", ["m"]) as fake:
        config = make_config(coordinator.url, [BackendConfig("vllm", fake.url)], tmp_path)
        config = config.replace(serving=ServingConfig(min_switch_s=600))
        agent = await serving_agent(config, idle=Idle(None), name="agent.toml")
        assert ids(await coordinator.wait_for_capabilities(10)) == ["m"]
        await agent.pause()
        assert ids(await coordinator.wait_for_capabilities(10, after=1)) == []
        assert agent.reason == "you paused it until you resume"
        await agent.stop(grace=0.1)
        # another agent.toml (the sandbox's, say) has its own pause: it serves
        other = await serving_agent(config, idle=Idle(None), name="sandbox.toml")
        await wait_until(lambda: other.state == AgentState.SERVING)
        assert not other.paused
        await other.stop(grace=0.1)
        # a new process with the same agent.toml: still paused, from its first frame on
        again = await serving_agent(config, idle=Idle(None), name="agent.toml")
        await wait_until(lambda: len(coordinator.sessions) == 3)
        caps = await coordinator.wait_for_capabilities(10, provider=coordinator.sessions[-1])
        assert ids(caps) == []
        assert again.serving.status()["paused_by"] == ["manual"]
        await again.resume()  # immediate despite min_switch_s = 600
        caps = await coordinator.wait_for_capabilities(
            10, after=1, provider=coordinator.sessions[-1]
        )
        assert ids(caps) == ["m"]


async def test_a_backend_that_goes_down_is_withdrawn_and_comes_back(
    coordinator: SandboxCoordinator, serving_agent: Factory, tmp_path: Path
) -> None:
    """Default timings: checked every 2 s (2 s health timeout), not at the 5-minute pass."""
    async with FakeBackend("vllm", ["a"]) as one, FakeBackend("ollama", ["b:latest"]) as two:
        backends = [BackendConfig("vllm", one.url), BackendConfig("ollama", two.url)]
        agent = await serving_agent(
            make_config(coordinator.url, backends, tmp_path), idle=Idle(None), interval=3.0
        )
        assert ids(await coordinator.wait_for_capabilities(10)) == ["a", "b:latest"]
        port = two.port
        await two.stop()
        down_at = time.monotonic()
        caps = await coordinator.wait_for_capabilities(10, after=1)
        withdrawn_s = time.monotonic() - down_at
        assert ids(caps) == ["a"]
        assert withdrawn_s < DEFAULT_BACKEND_INTERVAL_S + BACKEND_CHECK_TIMEOUT_S + 1.0, withdrawn_s
        await two.start(port=port or 0)
        up_at = time.monotonic()
        caps = await coordinator.wait_for_capabilities(10, after=2)
        back_s = time.monotonic() - up_at
        assert ids(caps) == ["a", "b:latest"]
        assert back_s < DEFAULT_BACKEND_INTERVAL_S + 1.0, back_s
        assert agent.state == AgentState.SERVING
        print(f"withdrawn after {withdrawn_s:.2f} s, re-advertised after {back_s:.2f} s")


async def test_free_gpu_memory_on_pause_unloads_and_warms_up_before_advertising(
    coordinator: SandboxCoordinator, serving_agent: Factory, tmp_path: Path
) -> None:
    serving = ServingConfig(free_gpu_memory_on_pause=True, min_switch_s=0)
    async with FakeBackend(
        "ollama", ["llama3.2:latest"], tokens_per_second=20, output_tokens=10
    ) as fake:
        config = make_config(coordinator.url, [BackendConfig("ollama", fake.url)], tmp_path)
        agent = await serving_agent(
            config.replace(serving=serving), idle=Idle(None), pause_grace_s=0.2
        )
        assert ids(await coordinator.wait_for_capabilities(10)) == ["llama3.2:latest"]
        loaded_when_advertised: list[set[str]] = []

        def on_event(event: Any) -> None:
            session = event.session
            if event.kind == "capabilities" and session.capabilities[-1].models:
                loaded_when_advertised.append(set(fake.loaded))

        coordinator.add_listener(on_event)
        # a job still running when the pause comes: it gets the grace, then its terminal frame
        running = await coordinator.dispatch("llama3.2:latest", CHAT)
        await wait_until(lambda: agent.jobs_running == 1)
        await agent.pause()
        assert ids(await coordinator.wait_for_capabilities(10, after=1)) == []
        terminal = await running.wait(10)
        assert isinstance(terminal, protocol.JobError)
        assert "free GPU memory" in terminal.message
        await wait_until(lambda: fake.loaded == set())
        await wait_until(lambda: bool(agent.serving.status()["gpu_memory"]))
        assert agent.serving.status()["gpu_memory"] == [
            f"ollama @ {fake.url}: unloaded llama3.2:latest"
        ]
        await agent.resume()
        assert ids(await coordinator.wait_for_capabilities(10, after=2)) == ["llama3.2:latest"]
        assert loaded_when_advertised == [{"llama3.2:latest"}]  # loaded before advertised
        handle = await coordinator.dispatch("llama3.2:latest", CHAT)
        assert isinstance(await handle.wait(10), protocol.JobDone)


async def test_health_ok_but_model_list_failing_does_not_rediscover_every_tick(
    coordinator: SandboxCoordinator, serving_agent: Factory, tmp_path: Path
) -> None:
    from usepod_desktop.core.backends.base import BackendError

    async with FakeBackend("vllm", ["a"]) as fake:
        agent = await serving_agent(
            make_config(coordinator.url, [BackendConfig("vllm", fake.url)], tmp_path),
            idle=Idle(None),
            backend_interval=3600.0,  # the test drives the checks itself
        )
        assert ids(await coordinator.wait_for_capabilities(10)) == ["a"]
        backend = internals_for_tests(agent).pool.backends[0]

        async def broken() -> Any:
            raise BackendError(ErrorCode.INTERNAL, "model list failed")

        backend.list_models = broken  # type: ignore[method-assign]
        await agent.rediscover()
        assert ids(await coordinator.wait_for_capabilities(10, after=1)) == []
        assert agent.snapshot().reports[0].status == "error"
        passes: list[object] = []
        agent.events.subscribe(
            lambda e: passes.append(e) if type(e).__name__ == "DiscoveryCompleted" else None
        )
        assert await agent.serving.check_backends() is True  # health answers: one more try
        for _ in range(3):
            assert await agent.serving.check_backends() is False
        assert len(passes) == 1


async def test_new_rules_in_agent_toml_apply_at_once(
    coordinator: SandboxCoordinator, serving_agent: Factory, tmp_path: Path
) -> None:
    async with FakeBackend("vllm", ["a"]) as fake:
        config = make_config(coordinator.url, [BackendConfig("vllm", fake.url)], tmp_path)
        agent = await serving_agent(config, idle=Idle(0.0), interval=3600.0)
        assert ids(await coordinator.wait_for_capabilities(10)) == ["a"]
        await agent.reload_config(
            agent.config.replace(serving=ServingConfig(when="idle", min_switch_s=0))
        )
        started = time.monotonic()
        assert ids(await coordinator.wait_for_capabilities(5, after=1)) == []
        assert time.monotonic() - started < 2.0
        assert agent.serving.status()["paused_by"] == ["idle"]
