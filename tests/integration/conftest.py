"""Fixtures for end-to-end tests: a real sandbox coordinator on 127.0.0.1, real fake backend
servers, and a real Agent connected over a WebSocket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from usepod_desktop.core.agent import Agent
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

FAST_BACKOFF = {"initial": 0.05, "maximum": 0.4}


@pytest.fixture
async def coordinator() -> AsyncIterator[SandboxCoordinator]:
    async with SandboxCoordinator(ws_heartbeat=None) as coord:
        coord.announce_sandbox = False  # playing the real coordinator (no "sandbox": true)
        yield coord


@pytest.fixture
async def fake() -> AsyncIterator[FakeBackend]:
    async with FakeBackend("vllm", ["model-a", "model-b"], output_tokens=6) as backend:
        yield backend


def make_config(coord_url: str, backends: list[BackendConfig], tmp: Path, **limits: Any) -> Config:
    return Config(
        coordinator=CoordinatorConfig(url=coord_url),
        pricing=PricingConfig(500_000, 750_000),
        backends=tuple(backends),
        identity_key_path=str(tmp / "identity.key"),
        limits=LimitsConfig(**limits) if limits else LimitsConfig(),
    )


AgentFactory = Callable[..., Awaitable[Agent]]


@pytest.fixture
async def start_agent(tmp_path: Path) -> AsyncIterator[AgentFactory]:
    agents: list[Agent] = []

    async def factory(config: Config, **kwargs: Any) -> Agent:
        path = tmp_path / f"agent-{len(agents)}.toml"
        save_config(config, path)
        kwargs.setdefault("backoff", Backoff(**FAST_BACKOFF))
        agent = Agent(config, config_path=path, allow_insecure=True, **kwargs)
        agents.append(agent)
        await agent.start()
        return agent

    yield factory
    for agent in agents:
        await agent.stop(grace=0.1)
