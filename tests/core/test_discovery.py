"""Discovery passes against fake backends on 127.0.0.1: allow-lists, prices, dedupe, skips,
concurrency, the capabilities frame, the backend pool and the local probe."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from usepod_desktop import PROTOCOL_VERSION, __version__
from usepod_desktop.core import protocol
from usepod_desktop.core.backends.base import BackendError, JobRequest
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    ModelPrice,
    PricingConfig,
)
from usepod_desktop.core.discovery import BackendPool, DiscoveryResult, discover, probe_local
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.core.secrets import SecretStore
from usepod_desktop.sandbox.fakes import FailMode, FakeBackend, FakeModel

KEY = "sk-or-v1-discovery-test-key"
MakeFake = Callable[..., Awaitable[FakeBackend]]


def make_config(
    *backends: BackendConfig,
    prices: dict[str, tuple[int, int]] | None = None,
    defaults: tuple[int, int] = (500_000, 750_000),
    max_concurrent: int = 4,
    tpm: int | None = 120_000,
) -> Config:
    return Config(
        coordinator=CoordinatorConfig("wss://coordinator.test/provider/connect"),
        pricing=PricingConfig(*defaults, {m: ModelPrice(*p) for m, p in (prices or {}).items()}),
        backends=tuple(backends),
        limits=LimitsConfig(max_concurrent, tpm),
    )


def local(fake: FakeBackend, **kw: Any) -> BackendConfig:
    return BackendConfig(fake.kind, url=fake.url, **kw)


@pytest.fixture
async def pool() -> AsyncIterator[BackendPool]:
    p = BackendPool(SecretStore())
    yield p
    await p.aclose()


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeBackend], BackendConfig]:
    """Point a remote kind at its fake (test-only base-URL override) with a key in the env."""

    def _remote(fake: FakeBackend, **kw: Any) -> BackendConfig:
        env = "OPENROUTER_API_KEY" if fake.kind == "openrouter" else "VENICE_API_KEY"
        monkeypatch.setenv(f"USEPOD_{fake.kind.upper()}_BASE_URL", fake.url)
        monkeypatch.setenv(env, KEY)
        return BackendConfig(fake.kind, api_key_env=env, **kw)

    return _remote


@pytest.fixture
async def hanging_port() -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """Servers that accept connections and never answer."""
    release = asyncio.Event()
    servers: list[asyncio.Server] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    async def _start() -> int:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield _start
    release.set()
    for server in servers:
        server.close()
    await asyncio.sleep(0.01)


def by_id(result: DiscoveryResult) -> dict[str, dict[str, Any]]:
    return {m.model_id: m.to_wire() for m in result.models}


# ------------------------------------------------------------------ the pass


async def test_models_prices_context_and_routes(make_fake: MakeFake, pool: BackendPool) -> None:
    vllm = await make_fake("vllm", [FakeModel("b-model", 32768), FakeModel("a-lora", None)])
    ollama = await make_fake("ollama", [FakeModel("llama3.2:latest", 131072)])
    config = make_config(local(vllm), local(ollama), prices={"b-model": (300_000, 450_000)})
    result = await discover(config, pool)

    assert [m.model_id for m in result.models] == ["a-lora", "b-model", "llama3.2:latest"]
    assert by_id(result) == {
        "a-lora": {
            "model_id": "a-lora",
            "input_per_1m": 500_000,
            "output_per_1m": 750_000,
            "max_concurrent": 4,
            "backend": "vllm",
        },  # no context_window key at all when unknown
        "b-model": {
            "model_id": "b-model",
            "input_per_1m": 300_000,
            "output_per_1m": 450_000,
            "max_concurrent": 4,
            "backend": "vllm",
            "context_window": 32768,
        },
        "llama3.2:latest": {
            "model_id": "llama3.2:latest",
            "input_per_1m": 500_000,
            "output_per_1m": 750_000,
            "max_concurrent": 4,
            "backend": "ollama",
            "context_window": 131072,
        },
    }
    assert result.routes["b-model"].base_url == vllm.url
    assert result.routes["llama3.2:latest"].base_url == ollama.url
    assert [(r.config.kind, r.status) for r in result.reports] == [("vllm", "ok"), ("ollama", "ok")]
    assert result.reports[0].models_found == ["b-model", "a-lora"]
    assert result.reports[0].models_advertised == ["a-lora", "b-model"]
    assert all(r.latency_ms is not None for r in result.reports)


async def test_allow_list_filters_and_warns_about_missing_models(
    make_fake: MakeFake, pool: BackendPool
) -> None:
    fake = await make_fake("vllm", ["keep", "drop", "also-drop"])
    result = await discover(make_config(local(fake, models=("keep", "ghost"))), pool)
    assert [m.model_id for m in result.models] == ["keep"]
    report = result.reports[0]
    assert report.models_found == ["keep", "drop", "also-drop"]
    assert report.models_advertised == ["keep"]
    assert any("ghost" in w and "allow-list" in w for w in report.warnings)


async def test_empty_allow_list_advertises_nothing(make_fake: MakeFake, pool: BackendPool) -> None:
    fake = await make_fake("llamacpp", ["m1", "m2"])
    result = await discover(make_config(local(fake, models=())), pool)
    assert result.models == [] and result.routes == {}
    assert result.reports[0].status == "ok"
    assert result.reports[0].models_found == ["m1", "m2"]


async def test_zero_price_drops_the_model(make_fake: MakeFake, pool: BackendPool) -> None:
    fake = await make_fake("lmstudio", ["free-in", "free-out", "paid"])
    config = make_config(local(fake), prices={"free-in": (0, 5), "free-out": (5, 0)})
    result = await discover(config, pool)
    assert [m.model_id for m in result.models] == ["paid"]
    warnings = " | ".join(result.reports[0].warnings)
    assert "free-in: price is 0" in warnings and "free-out: price is 0" in warnings


async def test_same_model_on_vllm_and_ollama_is_advertised_once_as_vllm(
    make_fake: MakeFake, pool: BackendPool
) -> None:
    ollama = await make_fake("ollama", ["shared", "only-ollama"])
    vllm = await make_fake("vllm", [FakeModel("shared", 8192)])
    result = await discover(make_config(local(ollama), local(vllm)), pool)
    assert [(m.model_id, m.backend) for m in result.models] == [
        ("only-ollama", "ollama"),
        ("shared", "vllm"),
    ]
    assert result.routes["shared"].base_url == vllm.url
    ollama_report, vllm_report = result.reports
    assert ollama_report.models_advertised == ["only-ollama"]
    assert vllm_report.models_advertised == ["shared"]
    assert any("shared: served by vllm" in w for w in ollama_report.warnings)


async def test_priority_tie_first_configured_wins(make_fake: MakeFake, pool: BackendPool) -> None:
    first = await make_fake("vllm", [FakeModel("m", 1000)])
    second = await make_fake("vllm", [FakeModel("m", 2000)])
    result = await discover(make_config(local(first), local(second)), pool)
    assert [m.context_window for m in result.models] == [1000]
    assert result.routes["m"].base_url == first.url


async def test_unreachable_and_loading_backends_are_skipped_others_discovered(
    make_fake: MakeFake, pool: BackendPool
) -> None:
    dead = await make_fake("vllm", ["dead-model"], fail_mode=FailMode.REFUSE)
    loading = await make_fake("llamacpp", ["loading-model"], fail_mode=FailMode.LOADING)
    lms = await make_fake("lmstudio", ["lms-model"], fail_mode=FailMode.ERROR_STATUS)
    good = await make_fake("ollama", ["good-model"])
    config = make_config(local(dead), local(loading), local(lms), local(good))
    result = await discover(config, pool)
    assert [m.model_id for m in result.models] == ["good-model"]
    statuses = [(r.status, r.detail) for r in result.reports]
    assert statuses[0] == ("unreachable", "connection refused")
    assert statuses[1] == ("loading", "loading model (503)")
    assert statuses[2][0] == "error" and statuses[2][1].startswith("LM Studio error")
    assert statuses[3] == ("ok", "ok")
    assert any("skipped" in w for w in result.reports[0].warnings)


async def test_a_hanging_backend_costs_only_its_own_timeout(
    make_fake: MakeFake, hanging_port: Callable[[], Awaitable[int]]
) -> None:
    pool = BackendPool(SecretStore(), probe_timeout=1.0)
    good = await make_fake("vllm", ["fast-model"])
    hanging = [
        BackendConfig("vllm", url=f"http://127.0.0.1:{await hanging_port()}") for _ in range(4)
    ]
    config = make_config(hanging[0], hanging[1], local(good), hanging[2], hanging[3])
    started = time.monotonic()
    try:
        result = await discover(config, pool)
    finally:
        await pool.aclose()
    elapsed = time.monotonic() - started
    # Sequential checks would take >= 4 s (four 1 s timeouts); concurrent ones about 1 s.
    assert elapsed < 3.0, elapsed
    assert [m.model_id for m in result.models] == ["fast-model"]
    assert [r.status for r in result.reports] == ["unreachable"] * 2 + ["ok"] + ["unreachable"] * 2
    assert result.reports[0].detail == "timed out after 1 s"


async def test_remote_without_key_is_skipped_with_where_it_looked(
    make_fake: MakeFake, pool: BackendPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    good = await make_fake("vllm", ["m1"])
    config = make_config(BackendConfig("openrouter", api_key_env="OPENROUTER_API_KEY"), local(good))
    result = await discover(config, pool)
    assert [m.model_id for m in result.models] == ["m1"]
    report = result.reports[0]
    assert report.status == "no_key"
    (warning,) = report.warnings
    assert "OS keyring" in warning and "$OPENROUTER_API_KEY" in warning
    assert "usepod-agent" in warning  # the keyring service name


async def test_key_added_later_is_picked_up_by_the_next_pass(
    make_fake: MakeFake,
    pool: BackendPool,
    remote: Callable[..., BackendConfig],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = await make_fake("venice", [FakeModel("v", 1000, 1e-6, 1e-6)], api_key=KEY)
    cfg = remote(fake)
    monkeypatch.delenv("VENICE_API_KEY")
    first = await discover(make_config(cfg), pool)
    assert first.reports[0].status == "no_key"
    monkeypatch.setenv("VENICE_API_KEY", KEY)
    second = await discover(make_config(cfg), pool)
    assert second.reports[0].status == "ok" and [m.model_id for m in second.models] == ["v"]


# ------------------------------------------------------------------ BYOK pricing


async def test_openrouter_byok_pricing(
    make_fake: MakeFake, pool: BackendPool, remote: Callable[..., BackendConfig]
) -> None:
    fake = await make_fake(
        "openrouter",
        [
            FakeModel("vendor/auto-priced", 128000, 0.000001, 0.000002),
            FakeModel("vendor/explicit-cheap", 64000, 0.000003, 0.000015),
            FakeModel("vendor/explicit-fine", 64000, 0.000001, 0.000001),
            FakeModel("vendor/unknown-price", 32000),
            FakeModel("vendor/free", 32000, 0.0, 0.0),
        ],
        api_key=KEY,
    )
    config = make_config(
        remote(fake, markup=0.05),
        prices={
            "vendor/explicit-cheap": (1_000_000, 2_000_000),
            "vendor/explicit-fine": (5_000_000, 5_000_000),
        },
    )
    result = await discover(config, pool)
    models = {m.model_id: m for m in result.models}
    assert sorted(models) == ["vendor/auto-priced", "vendor/explicit-cheap", "vendor/explicit-fine"]

    auto = models["vendor/auto-priced"]
    # 1_000_000 / 0.8 * 1.05 = 1_312_500 ; 2_000_000 / 0.8 * 1.05 = 2_625_000
    assert (auto.input_per_1m, auto.output_per_1m) == (1_312_500, 2_625_000)
    assert auto.backend == "openrouter" and auto.context_window == 128000
    assert auto.upstream is not None and auto.upstream.input_per_1m == 1_000_000
    assert not auto.below_cost

    cheap = models["vendor/explicit-cheap"]
    assert (cheap.input_per_1m, cheap.output_per_1m) == (1_000_000, 2_000_000)
    assert cheap.below_cost
    fine = models["vendor/explicit-fine"]
    assert (fine.input_per_1m, fine.below_cost) == (5_000_000, False)

    warnings = result.reports[0].warnings
    (below,) = [w for w in warnings if "below cost" in w]
    assert below.startswith("vendor/explicit-cheap:") and "$3.00" in below
    assert any(w.startswith("vendor/unknown-price: upstream price unknown") for w in warnings)
    assert any(w.startswith("vendor/free: free upstream") for w in warnings)


async def test_an_implausible_upstream_price_is_never_advertised(
    make_fake: MakeFake, pool: BackendPool, remote: Callable[..., BackendConfig]
) -> None:
    # the upstream's model list is an untrusted answer: 1e30 USD per token, or a price just
    # over the ceiling once divided by the share, must not reach the capabilities
    fake = await make_fake(
        "openrouter",
        [
            FakeModel("vendor/hostile", 8000, 1e30, 1e30),
            FakeModel("vendor/just-over", 8000, 0.1, 0.000001),  # $125,000 / 1M after the share
            FakeModel("vendor/fine", 8000, 0.000001, 0.000002),
        ],
        api_key=KEY,
    )
    result = await discover(make_config(remote(fake)), pool)
    assert [m.model_id for m in result.models] == ["vendor/fine"]
    warnings = result.reports[0].warnings
    for model in ("vendor/hostile", "vendor/just-over"):
        (line,) = [w for w in warnings if w.startswith(model + ":")]
        assert "upstream price implausible" in line and "$100,000" in line


async def test_venice_byok_pricing_is_exact_and_rounds_up(
    make_fake: MakeFake, pool: BackendPool, remote: Callable[..., BackendConfig]
) -> None:
    fake = await make_fake(
        "venice",
        [FakeModel("llama-3.3-70b", 65536, 7e-7, 2.8e-6), FakeModel("odd", 4096, 1e-12, 3e-12)],
        api_key=KEY,
    )
    result = await discover(make_config(remote(fake)), pool)
    prices = {m.model_id: (m.input_per_1m, m.output_per_1m) for m in result.models}
    # 700_000 / 0.8 = 875_000 exactly; 2_800_000 / 0.8 = 3_500_000; 1 / 0.8 = 1.25 -> 2
    assert prices == {"llama-3.3-70b": (875_000, 3_500_000), "odd": (2, 4)}


async def test_local_beats_venice_beats_openrouter(
    make_fake: MakeFake, pool: BackendPool, remote: Callable[..., BackendConfig]
) -> None:
    orr = await make_fake(
        "openrouter",
        [FakeModel("x", 1000, 1e-6, 1e-6), FakeModel("y", 1000, 1e-6, 1e-6)],
        api_key=KEY,
    )
    ven = await make_fake(
        "venice", [FakeModel("x", 1000, 1e-6, 1e-6), FakeModel("y", 1000, 1e-6, 1e-6)], api_key=KEY
    )
    ollama = await make_fake("ollama", ["y"])
    config = make_config(remote(orr), remote(ven), local(ollama))
    result = await discover(config, pool)
    assert [(m.model_id, m.backend) for m in result.models] == [("x", "venice"), ("y", "ollama")]
    # Local kinds use the configured defaults, not a BYOK price.
    assert by_id(result)["y"]["input_per_1m"] == 500_000


# ------------------------------------------------------------------ frame, key, pool


async def test_capabilities_frame(make_fake: MakeFake, pool: BackendPool) -> None:
    fake = await make_fake("vllm", [FakeModel("m1", 4096)])
    config = make_config(local(fake), max_concurrent=6, tpm=None)
    result = await discover(config, pool)
    frame = json.loads(result.capabilities_frame(config))
    assert frame == {
        "type": "capabilities",
        "models": [
            {
                "model_id": "m1",
                "input_per_1m": 500_000,
                "output_per_1m": 750_000,
                "max_concurrent": 6,
                "backend": "vllm",
                "context_window": 4096,
            }
        ],
        "limits": {"max_concurrent_total": 6, "max_tokens_per_minute": None},
        "metadata": {"agent_version": PROTOCOL_VERSION, "client": f"usepod-desktop/{__version__}"},
    }
    parsed = protocol.parse_outbound(result.capabilities_frame(config))
    assert isinstance(parsed, protocol.Capabilities)
    paused = json.loads(result.capabilities_frame(config, paused=True))
    assert paused["models"] == [] and paused["limits"] == frame["limits"]


async def test_no_backend_still_gives_a_frame_with_no_models(pool: BackendPool) -> None:
    config = make_config()
    result = await discover(config, pool)
    assert result.reports == [] and result.models == []
    assert json.loads(result.capabilities_frame(config))["models"] == []


async def test_advertised_key_compares_passes(make_fake: MakeFake, pool: BackendPool) -> None:
    fake = await make_fake("vllm", ["m1", "m2"])
    config = make_config(local(fake))
    first = await discover(config, pool)
    second = await discover(config, pool)
    assert first.advertised_key() == second.advertised_key()
    repriced = await discover(make_config(local(fake), prices={"m2": (1, 2)}), pool)
    assert repriced.advertised_key() != first.advertised_key()
    fake.models.append(FakeModel("m3"))
    grown = await discover(config, pool)
    assert grown.advertised_key() != first.advertised_key()


async def test_pool_reuses_adapters_and_rebuilds_only_changed_entries(
    make_fake: MakeFake, pool: BackendPool
) -> None:
    one = await make_fake("vllm", ["a"])
    two = await make_fake("ollama", ["b"])
    config = make_config(local(one), local(two))
    first = await discover(config, pool)
    a, b = first.routes["a"], first.routes["b"]
    # Same config: the very same adapters (and so the same pooled connections).
    second = await discover(config, pool)
    assert second.routes["a"] is a and second.routes["b"] is b
    # Only the allow-list changed: still the same adapter, with the new entry attached.
    narrowed = make_config(local(one, models=("a",)), local(two))
    third = await discover(narrowed, pool)
    assert third.routes["a"] is a and a.config.models == ("a",)
    # The URL changed: a new adapter; the old one is closed.
    moved = await make_fake("ollama", ["b"])
    fourth = await discover(make_config(local(one), local(moved)), pool)
    assert fourth.routes["a"] is a
    assert fourth.routes["b"] is not b and fourth.routes["b"].base_url == moved.url
    assert pool.backends == [a, fourth.routes["b"]]
    # The old adapter stays open until a later pass (the routes published before this pass
    # could still send it a job), then it is closed.
    assert not b.closed  # type: ignore[attr-defined]
    await discover(make_config(local(one), local(moved)), pool)
    assert b.closed  # type: ignore[attr-defined]
    with pytest.raises(BackendError) as info:
        await b.execute(JobRequest("j", "b", {"messages": []}), lambda chunk: asyncio.sleep(0))
    assert info.value.code is ErrorCode.INTERNAL and "closed" in info.value.message


async def test_retired_adapter_with_a_running_job_is_closed_only_when_idle(
    make_fake: MakeFake, pool: BackendPool
) -> None:
    fake = await make_fake("vllm", ["a"], fail_mode=FailMode.HANG)
    first = await discover(make_config(local(fake)), pool)
    old = first.routes["a"]
    job_task = asyncio.create_task(
        old.execute(JobRequest("j", "a", {"messages": []}), lambda chunk: asyncio.sleep(0))
    )
    await asyncio.sleep(0)  # the job starts and waits for an answer that never comes
    assert old.inflight == 1  # type: ignore[attr-defined]
    pool.sync(make_config(local(fake)), force=True)
    await discover(make_config(local(fake)), pool)
    await discover(make_config(local(fake)), pool)
    assert not old.closed  # type: ignore[attr-defined]
    job_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job_task
    await discover(make_config(local(fake)), pool)
    assert old.closed  # type: ignore[attr-defined]


async def test_pool_sync_force_rebuilds(make_fake: MakeFake, pool: BackendPool) -> None:
    fake = await make_fake("vllm", ["a"])
    config = make_config(local(fake))
    pool.sync(config)
    (before,) = pool.backends
    pool.sync(config, force=True)
    (after,) = pool.backends
    assert after is not before
    await discover(config, pool)
    await discover(config, pool)
    assert before.closed and not after.closed  # type: ignore[attr-defined]


# ------------------------------------------------------------------ local probe


async def test_probe_local_finds_servers_with_models(
    make_fake: MakeFake, hanging_port: Callable[[], Awaitable[int]]
) -> None:
    vllm = await make_fake("vllm", ["Qwen/Qwen3-8B"])
    ollama = await make_fake("ollama", ["llama3.2:latest", "qwen3:8b"])
    lms = await make_fake("lmstudio", ["x"], fail_mode=FailMode.ERROR_STATUS)  # 200 + error
    empty = await make_fake("llamacpp", [])
    slow = await hanging_port()
    started = time.monotonic()
    found = await probe_local(
        "127.0.0.1",
        {
            "vllm": vllm.port or 0,
            "llamacpp": empty.port or 0,
            "lmstudio": lms.port or 0,
            "ollama": ollama.port or 0,
            "slow": slow,
        },
        timeout=0.8,
    )
    assert time.monotonic() - started < 3.0
    assert [(p.kind, p.url, p.models) for p in found] == [
        ("vllm", f"http://127.0.0.1:{vllm.port}", ["Qwen/Qwen3-8B"]),
        ("ollama", f"http://127.0.0.1:{ollama.port}", ["llama3.2:latest", "qwen3:8b"]),
    ]
    assert [r.path for r in ollama.requests] == ["/api/tags"]
    assert [r.path for r in vllm.requests] == ["/v1/models"]
