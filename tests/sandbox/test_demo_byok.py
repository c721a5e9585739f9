"""`--sandbox` demo jobs never spend the user's money (issue 12, item 7): the user's BYOK
backends (the user's own key pays upstream) get no demo jobs unless opted in per backend with
`--demo-remote`. Before, the sandbox copied every backend of agent.toml and picked demo models
at random among all of them, the dearest included. Fake vLLM and OpenRouter on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.conftest import MakeFake
from usepod_desktop.cli import build_parser
from usepod_desktop.core.agent import Agent
from usepod_desktop.core.config import BackendConfig, Config, CoordinatorConfig, PricingConfig
from usepod_desktop.core.events import JobFinished
from usepod_desktop.sandbox.demo import SandboxSession
from usepod_desktop.sandbox.fakes import FakeModel

PAID = FakeModel("openai/o1-pro", 8192, prompt_price=0.00015, completion_price=0.0006)


async def user_config(
    make_fake: MakeFake, monkeypatch: pytest.MonkeyPatch
) -> tuple[Config, Any, Any]:
    local = await make_fake("vllm", ["local-model"], output_tokens=4)
    paid = await make_fake("openrouter", [PAID], output_tokens=4)
    monkeypatch.setenv("USEPOD_OPENROUTER_BASE_URL", paid.url)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-user-own-key-000000000000")
    base = Config(
        coordinator=CoordinatorConfig("wss://coordinator.invalid/provider/connect"),
        pricing=PricingConfig(500_000, 750_000),
        backends=(
            BackendConfig("openrouter", api_key_env="OPENROUTER_API_KEY"),
            BackendConfig("vllm", url=local.url),
        ),
    )
    return base, local, paid


def chat_posts(fake: Any) -> int:
    return sum(1 for r in fake.requests if r.method == "POST")


async def test_demo_jobs_never_reach_a_byok_backend(
    make_fake: MakeFake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    base, local, paid = await user_config(make_fake, monkeypatch)
    session = SandboxSession()
    config = await session.start(base)
    assert [b.kind for b in config.backends] == ["vllm"]
    assert session.left_out == ["openrouter (OPENROUTER_API_KEY)"]
    assert "opt in with --demo-remote openrouter" in caplog.text
    agent = Agent(config, config_path=session.config_path, allow_insecure=True)
    served: list[str] = []
    enough = asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, JobFinished) and event.outcome.ok:
            served.append(event.outcome.model_id)
            if len(served) >= 6:
                enough.set()

    agent.events.subscribe(on_event)
    await agent.start()
    try:
        caps = await session.coordinator.wait_for_capabilities(timeout=15)
        assert [m["model_id"] for m in caps.models] == ["local-model"]
        session.start_demo_jobs(interval_s=0.05)
        await asyncio.wait_for(enough.wait(), 30)
    finally:
        await agent.stop(grace=0.5)
        await session.stop()
    assert set(served) == {"local-model"}
    assert chat_posts(paid) == 0 and paid.requests == []  # not even its model list
    assert chat_posts(local) >= 6


@pytest.mark.parametrize("name", ["openrouter", "OPENROUTER_API_KEY"])
async def test_a_byok_backend_opted_in_by_kind_or_key_name_serves_demo_jobs(
    name: str, make_fake: MakeFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, _local, paid = await user_config(make_fake, monkeypatch)
    session = SandboxSession(demo_remote=[name])
    try:
        config = await session.start(base)
    finally:
        await session.stop()
    assert {b.kind for b in config.backends} == {"openrouter", "vllm"}
    assert session.left_out == []
    assert paid.requests  # probed: it takes part


def test_demo_remote_flag_is_in_the_cli_and_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(["run", "--sandbox", "--demo-remote", "openrouter"])
    assert args.demo_remote == ["openrouter"]
    assert parser.parse_args(["run", "--sandbox"]).demo_remote == []
    gui = parser.parse_args(["--sandbox", "--demo-remote", "venice", "--demo-remote", "X_KEY"])
    assert gui.demo_remote == ["venice", "X_KEY"]
    assert "--demo-remote" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--help"])
    assert "never go to a backend your own API key pays for" in capsys.readouterr().out
