"""No keyring read on the event loop: starting the sandbox reads the user's API keys (for
their BYOK backends) in a worker thread, never on the loop thread (a locked keyring can
block for a long time: the whole GUI would freeze)."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import MakeFake
from usepod_desktop.core.config import BackendConfig, Config, CoordinatorConfig, PricingConfig
from usepod_desktop.core.secrets import KeyLookup, SecretStore
from usepod_desktop.sandbox.demo import SandboxSession
from usepod_desktop.sandbox.fakes import FakeModel


async def test_sandbox_start_reads_keys_off_the_loop_thread(
    make_fake: MakeFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    paid = await make_fake(
        "openrouter",
        [FakeModel("openai/o1", 8192, prompt_price=0.00015, completion_price=0.0006)],
        output_tokens=4,
    )
    monkeypatch.setenv("USEPOD_OPENROUTER_BASE_URL", paid.url)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-user-own-key-000000000000")
    loop_thread = threading.current_thread()
    reads: list[threading.Thread] = []
    real_get = SecretStore.get

    def recording_get(self: SecretStore, name: str) -> KeyLookup:
        reads.append(threading.current_thread())
        return real_get(self, name)

    monkeypatch.setattr(SecretStore, "get", recording_get)
    base = Config(
        coordinator=CoordinatorConfig("wss://coordinator.invalid/provider/connect"),
        pricing=PricingConfig(500_000, 750_000),
        backends=(BackendConfig("openrouter", api_key_env="OPENROUTER_API_KEY"),),
    )
    session = SandboxSession(demo_remote=["openrouter"])
    try:
        config = await session.start(base)
    finally:
        await session.stop()
    assert [b.kind for b in config.backends] == ["openrouter"]
    assert reads, "the key was never read"
    assert loop_thread not in reads
