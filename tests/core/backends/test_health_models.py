"""Health checks and model lists of each adapter against its fake server."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.core.backends.conftest import ALL_KINDS, LOCAL_KINDS, MakeBackend, MakeFake
from usepod_desktop.core.backends.base import BackendError, ModelInfo, UpstreamPrice
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.sandbox.fakes import FailMode, FakeModel

HEALTH_ROUTE = {
    "vllm": ("GET", "/health"),
    "llamacpp": ("GET", "/health"),
    "lmstudio": ("GET", "/v1/models"),
    "ollama": ("GET", "/api/tags"),
    "openrouter": ("GET", "/api/v1/models"),
    "venice": ("GET", "/api/v1/models"),
}


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_healthy_backend_uses_its_health_route(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind)
    backend = make_backend(fake)
    health = await backend.health()
    assert health.ok and health.status == "ok" and health.state == "ok"
    assert health.latency_ms is not None and health.latency_ms >= 0
    assert [(r.method, r.path) for r in fake.requests] == [HEALTH_ROUTE[kind]]


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_refused_connection_is_unreachable(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind)
    backend = make_backend(fake)
    await fake.set_fail_mode(FailMode.REFUSE)
    health = await backend.health()
    assert not health.ok
    assert health.status == "connection refused"
    assert health.state == "unreachable"
    with pytest.raises(BackendError) as info:
        await backend.list_models()
    assert info.value.code is ErrorCode.BACKEND_UNREACHABLE


async def test_llamacpp_loading_is_not_healthy_and_says_loading(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("llamacpp", fail_mode=FailMode.LOADING)
    health = await make_backend(fake).health()
    assert (health.ok, health.status, health.state) == (False, "loading model (503)", "loading")


async def test_vllm_dead_engine_503_is_not_healthy(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("vllm", fail_mode=FailMode.ERROR_STATUS)
    health = await make_backend(fake).health()
    assert not health.ok and "503" in health.status and health.state == "error"


async def test_vllm_loading_refuses_connections(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("vllm", fail_mode=FailMode.LOADING)
    health = await make_backend(fake).health()
    assert (health.ok, health.state) == (False, "unreachable")


@pytest.mark.parametrize(
    ("mode", "state"), [(FailMode.ERROR_STATUS, "error"), (FailMode.LOADING, "loading")]
)
async def test_lmstudio_200_with_error_body_is_not_healthy(
    mode: FailMode, state: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("lmstudio", fail_mode=mode)
    backend = make_backend(fake)
    health = await backend.health()
    assert not health.ok
    assert health.status.startswith("LM Studio error: ")
    assert health.state == state
    with pytest.raises(BackendError, match="LM Studio error"):
        await backend.list_models()


async def test_health_timeout_is_bounded(make_backend: MakeBackend, make_fake: MakeFake) -> None:
    import asyncio
    import time

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fake = await make_fake("vllm")
    backend = make_backend(fake)
    backend.health_url = f"http://127.0.0.1:{port}/health"  # type: ignore[attr-defined]
    backend.probe_timeout = 0.3  # type: ignore[attr-defined]
    started = time.monotonic()
    health = await backend.health()
    elapsed = time.monotonic() - started
    server.close()
    assert (health.ok, health.state) == (False, "timeout")
    assert "timed out" in health.status
    assert elapsed < 3.0


# ------------------------------------------------------------------ model lists


async def test_vllm_models_and_max_model_len(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(
        "vllm", [FakeModel("Qwen/Qwen3-8B", 32768), FakeModel("my-lora", context_length=None)]
    )
    models = await make_backend(fake).list_models()
    assert models == [ModelInfo("Qwen/Qwen3-8B", 32768), ModelInfo("my-lora", None)]


async def test_llamacpp_context_from_meta_n_ctx_train_and_null_meta(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(
        "llamacpp", [FakeModel("smollm2.gguf", 8192), FakeModel("loading.gguf", None)]
    )
    models = await make_backend(fake).list_models()
    assert models == [ModelInfo("smollm2.gguf", 8192), ModelInfo("loading.gguf", None)]


async def test_lmstudio_context_from_the_v0_api(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("lmstudio", [FakeModel("qwen/qwen3-4b", 40960)])
    models = await make_backend(fake).list_models()
    assert models == [ModelInfo("qwen/qwen3-4b", 40960)]
    assert ("GET", "/api/v0/models") in [(r.method, r.path) for r in fake.requests]


async def test_ollama_context_via_api_show_for_each_model(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(
        "ollama", [FakeModel("llama3.2:latest", 131072), FakeModel("qwen3:8b", 40960)]
    )
    models = await make_backend(fake).list_models()
    assert models == [ModelInfo("llama3.2:latest", 131072), ModelInfo("qwen3:8b", 40960)]
    shows = sorted(r.json["model"] for r in fake.requests if r.path == "/api/show")
    assert shows == ["llama3.2:latest", "qwen3:8b"]


async def test_openrouter_context_and_exact_prices(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(
        "openrouter",
        [
            FakeModel("a/one", 128000, prompt_price=0.000001, completion_price=0.000002),
            FakeModel("b/two", 32000, prompt_price=3e-7, completion_price=1.5e-6),
            FakeModel("c/free", 8000, prompt_price=0.0, completion_price=0.0),
            FakeModel("d/unpriced", 8000),
        ],
    )
    backend = make_backend(fake)
    assert (await backend.health()).ok
    models = await backend.list_models()
    assert models == [
        ModelInfo("a/one", 128000, UpstreamPrice(Decimal(1_000_000), Decimal(2_000_000))),
        ModelInfo("b/two", 32000, UpstreamPrice(Decimal(300_000), Decimal(1_500_000))),
        ModelInfo("c/free", 8000, UpstreamPrice(Decimal(0), Decimal(0))),
        ModelInfo("d/unpriced", 8000, None),
    ]
    # The health check's body was reused: one GET /models for health + list.
    assert [r.path for r in fake.requests] == ["/api/v1/models"]
    # Every request carries the key and the attribution headers.
    headers = fake.requests[0].headers
    assert headers["authorization"].startswith("Bearer sk-or-v1-test")
    assert headers["http-referer"] == "https://usepod.ai"
    assert headers["x-title"] == "Use Pod provider"


async def test_venice_context_and_exact_prices(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(
        "venice",
        [
            FakeModel("llama-3.3-70b", 65536, prompt_price=7e-7, completion_price=2.8e-6),
            FakeModel("no-price", 32768),
        ],
    )
    models = await make_backend(fake).list_models()
    assert models == [
        ModelInfo("llama-3.3-70b", 65536, UpstreamPrice(Decimal(700_000), Decimal(2_800_000))),
        ModelInfo("no-price", 32768, None),
    ]
    assert "http-referer" not in fake.requests[0].headers


@pytest.mark.parametrize("kind", LOCAL_KINDS)
async def test_local_kinds_send_no_authorization(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind)
    backend = make_backend(fake)
    await backend.health()
    await backend.list_models()
    assert fake.requests and all("authorization" not in r.headers for r in fake.requests)
    assert all(r.headers.get("accept-encoding") == "identity" for r in fake.requests)
