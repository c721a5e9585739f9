"""Agent.snapshot(): the read-only view the GUI and metrics use; Agent.save_config's
`allow_insecure` (the GUI never writes agent attributes)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from usepod_desktop.core.agent import Agent
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.core.errors import ConfigError
from usepod_desktop.core.events import AgentState, JobFinished
from usepod_desktop.core.protocol import JobDone
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
T = 15.0


async def test_snapshot_shows_state_models_reports_and_live_figures(tmp_path: Path) -> None:
    async with (
        SandboxCoordinator(ws_heartbeat=None) as coord,
        FakeBackend("vllm", ["model-a"], output_tokens=5) as fake,
    ):
        config = Config(
            coordinator=CoordinatorConfig(url=coord.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=fake.url),),
            identity_key_path=str(tmp_path / "identity.key"),
        )
        agent = Agent(config, allow_insecure=True)
        before = agent.snapshot()
        assert (before.state, before.discovered, before.models, before.reports) == (
            AgentState.OFFLINE,
            False,
            (),
            (),
        )
        finished: asyncio.Queue[object] = asyncio.Queue()
        agent.events.subscribe(JobFinished, finished.put_nowait)
        await agent.start()
        try:
            await coord.wait_for_capabilities(T)
            handle = await coord.dispatch("model-a", CHAT)
            assert isinstance(await handle.wait(T), JobDone)
            await asyncio.wait_for(finished.get(), T)
            view = agent.snapshot()
        finally:
            await agent.stop(grace=0.1)
    assert view.state == AgentState.SERVING and view.reason == "1 model(s) advertised"
    assert view.discovered and not view.paused
    (model,) = view.models
    assert (model.model_id, model.backend, model.input_per_1m, model.output_per_1m) == (
        "model-a",
        "vllm",
        500_000,
        750_000,
    )
    assert model.backend_label == f"vllm @ {fake.url}" and model.upstream is None
    (report,) = view.reports
    assert report.status == "ok" and report.models_advertised == ["model-a"]
    assert (view.jobs_running, view.running_job_ids) == (0, ())
    assert view.jobs_in_window == 1 and view.live.error_rate_60s == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.paused = True  # type: ignore[misc]


async def test_save_config_takes_allow_insecure_only_when_the_file_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.toml"
    secure = Config(
        coordinator=CoordinatorConfig(url="wss://127.0.0.1:9/ws"),
        pricing=PricingConfig(500_000, 750_000),
        backends=(),
        identity_key_path=str(tmp_path / "identity.key"),
    )
    save_config(secure, path, allow_insecure=False)
    agent = Agent(secure, config_path=path)
    plain = dataclasses.replace(secure, coordinator=CoordinatorConfig(url="ws://127.0.0.1:9/ws"))
    with pytest.raises(ConfigError, match="ws:// is unencrypted"):
        await agent.save_config(plain)  # the current setting: refused
    assert not agent.allow_insecure and "wss://" in path.read_text()
    await agent.save_config(plain, allow_insecure=True)
    assert agent.allow_insecure and "ws://127.0.0.1:9/ws" in path.read_text()
    assert agent.config.coordinator.url == "ws://127.0.0.1:9/ws"
