"""free_gpu_memory_on_pause: each backend's own unload / load / sleep API against its fake
server (which answers as the real server documents), and llama.cpp's "no unload" said so."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from usepod_desktop.core.backends.registry import build_backend
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.kinds import GPU_RELEASE_METHODS, KINDS
from usepod_desktop.core.secrets import SecretStore
from usepod_desktop.core.serving.gpu_memory import unload, warm_up
from usepod_desktop.sandbox.fakes import FakeBackend


async def adapter(fake: FakeBackend) -> Any:
    return build_backend(BackendConfig(kind=fake.kind, url=fake.url), SecretStore())


async def test_ollama_keep_alive_zero_unloads_and_empty_generate_loads(make_fake: Any) -> None:
    fake = await make_fake("ollama", ["llama3.2:latest", "qwen3:8b"])
    backend = await adapter(fake)
    try:
        result = await unload(backend, ["llama3.2:latest", "qwen3:8b"])
        assert result.done and fake.loaded == set()
        assert result.text == f"ollama @ {fake.url}: unloaded llama3.2:latest, qwen3:8b"
        calls = [r.json for r in fake.requests if r.path == "/api/generate"]
        assert calls == [
            {"model": "llama3.2:latest", "keep_alive": 0},
            {"model": "qwen3:8b", "keep_alive": 0},
        ]
        result = await warm_up(backend, ["llama3.2:latest"])
        assert result.done and fake.loaded == {"llama3.2:latest"}
        assert [r.json for r in fake.requests if r.path == "/api/generate"][-1] == {
            "model": "llama3.2:latest"
        }
        # a model the server does not have: said, not hidden
        result = await unload(backend, ["gone:latest"])
        assert not result.done and "gone:latest: HTTP 404" in result.text
    finally:
        await backend.aclose()


async def test_lmstudio_unloads_its_loaded_instances_and_loads_by_key(make_fake: Any) -> None:
    fake = await make_fake("lmstudio", ["qwen/qwen3-4b", "google/gemma-3-1b"])
    backend = await adapter(fake)
    try:
        result = await unload(backend, ["qwen/qwen3-4b"])
        assert result.done and fake.loaded == {"google/gemma-3-1b"}
        unloads = [r.json for r in fake.requests if r.path == "/api/v1/models/unload"]
        assert unloads == [{"instance_id": "qwen/qwen3-4b"}]
        # nothing loaded any more: nothing to unload (no blind calls)
        again = await unload(backend, ["qwen/qwen3-4b"])
        assert not again.done and "nothing to unload" in again.text
        result = await warm_up(backend, ["qwen/qwen3-4b"])
        assert result.done and "qwen/qwen3-4b" in fake.loaded
        loads = [r.json for r in fake.requests if r.path == "/api/v1/models/load"]
        assert loads == [{"model": "qwen/qwen3-4b"}]
    finally:
        await backend.aclose()


async def test_vllm_sleep_and_wake_up_when_sleep_mode_is_on(make_fake: Any) -> None:
    fake = await make_fake("vllm", ["m"], sleep_mode=True)
    backend = await adapter(fake)
    try:
        result = await unload(backend, ["m"])
        assert result.done and fake.sleeping
        assert [(r.method, r.path) for r in fake.requests][-1] == ("POST", "/sleep")
        result = await warm_up(backend, ["m"])
        assert result.done and not fake.sleeping
        assert [(r.method, r.path) for r in fake.requests][-1] == ("POST", "/wake_up")
    finally:
        await backend.aclose()


async def test_vllm_without_sleep_mode_says_how_to_enable_it(make_fake: Any) -> None:
    fake = await make_fake("vllm", ["m"])  # the routes are absent, as in a default vLLM
    backend = await adapter(fake)
    try:
        result = await unload(backend, ["m"])
        assert not result.done
        assert "--enable-sleep-mode" in result.text and "VLLM_SERVER_DEV_MODE=1" in result.text
    finally:
        await backend.aclose()


@pytest.mark.parametrize("kind", ["llamacpp"])
async def test_llamacpp_has_no_unload_and_says_so(make_fake: Any, kind: str) -> None:
    fake = await make_fake(kind, ["smol"])
    backend = await adapter(fake)
    try:
        before = len(fake.requests)
        result = await unload(backend, ["smol"])
        assert not result.done
        assert "llama.cpp has no unload API" in result.text
        assert len(fake.requests) == before  # nothing was sent
    finally:
        await backend.aclose()


async def test_unreachable_server_is_a_one_line_failure(make_fake: Any) -> None:
    fake = await make_fake("ollama", ["a:latest"])
    backend = await adapter(fake)
    await fake.stop()
    try:
        result = await unload(backend, ["a:latest"])
        assert not result.done and "unload failed" in result.text and "\n" not in result.text
    finally:
        await backend.aclose()


async def test_the_release_method_is_the_kind_table_s_not_the_adapter_class(
    make_fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a kind is one table row: its `gpu_release` decides, whatever its adapter class.
    Here the llama.cpp row is given vLLM's sleep mode, and a llama.cpp adapter is put to sleep."""
    monkeypatch.setitem(KINDS, "llamacpp", replace(KINDS["llamacpp"], gpu_release="vllm_sleep"))
    fake = await make_fake("vllm", ["m"], sleep_mode=True)
    backend = build_backend(BackendConfig(kind="llamacpp", url=fake.url), SecretStore())
    try:
        result = await unload(backend, ["m"])
        assert result.done and fake.sleeping, result.text
        result = await warm_up(backend, ["m"])
        assert result.done and not fake.sleeping, result.text
    finally:
        await backend.aclose()
    # and a row without a method says so, in the row's own words, sending nothing
    monkeypatch.setitem(KINDS, "ollama", replace(KINDS["ollama"], gpu_release=None))
    ollama = await make_fake("ollama", ["a:latest"])
    backend = await adapter(ollama)
    try:
        result = await unload(backend, ["a:latest"])
        assert not result.done and "Ollama has no unload API" in result.text
        assert ollama.loaded == {"a:latest"} and ollama.requests == []
    finally:
        await backend.aclose()


def test_every_kind_names_a_known_release_method_or_none() -> None:
    for spec in KINDS.values():
        assert spec.gpu_release is None or spec.gpu_release in GPU_RELEASE_METHODS, spec.name
        if spec.remote:
            assert spec.gpu_release is None, spec.name  # no local GPU
    # every method is used by some kind (none is dead)
    assert {s.gpu_release for s in KINDS.values()} - {None} == set(GPU_RELEASE_METHODS)


async def test_a_remote_backend_has_no_local_gpu_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test-not-a-real-key")
    backend = build_backend(
        BackendConfig(
            kind="openrouter", url="http://127.0.0.1:9", api_key_env="OPENROUTER_API_KEY"
        ),
        SecretStore(),
    )
    try:
        result = await unload(backend, ["x"])
        assert not result.done and result.text.endswith("remote backend, no local GPU memory")
        assert (await warm_up(backend, ["x"])).text.endswith("nothing to warm up")
    finally:
        await backend.aclose()
