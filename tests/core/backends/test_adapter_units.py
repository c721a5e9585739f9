"""Small unit tests with httpx.MockTransport for shapes the fakes do not produce (they add to
the loopback tests, not replace them), plus build_backend and key handling."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import httpx
import pytest

from tests.core.backends.conftest import Sink
from usepod_desktop.core.backends import build_backend
from usepod_desktop.core.backends.base import (
    BackendError,
    JobRequest,
    MissingKeyError,
    ModelInfo,
)
from usepod_desktop.core.backends.llamacpp import LlamaCppBackend
from usepod_desktop.core.backends.ollama import OllamaBackend, context_from_show
from usepod_desktop.core.backends.openai_compat import classify_http_error, error_message_of
from usepod_desktop.core.backends.vllm import VllmBackend
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.logsetup import redact
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.core.secrets import SecretStore

Handler = Callable[[httpx.Request], httpx.Response]
JOB = JobRequest("j", "m1", {"messages": [{"role": "user", "content": "hi"}]})


def mock(cls: type, kind: str, handler: Handler) -> object:
    return cls(
        BackendConfig(kind, url=f"http://{kind}.test:1"), transport=httpx.MockTransport(handler)
    )


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (401, {"error": "Unauthorized"}, ErrorCode.AUTH_REJECTED_BY_BACKEND),
        (403, {"error": {"message": "flagged", "code": 403}}, ErrorCode.AUTH_REJECTED_BY_BACKEND),
        (404, {"detail": "Not Found"}, ErrorCode.MODEL_NOT_LOADED),
        (
            400,
            {"error": {"message": "x/y is not a valid model ID", "code": 400}},
            ErrorCode.MODEL_NOT_LOADED,
        ),
        (400, {"error": {"message": "model 'q' not found"}}, ErrorCode.MODEL_NOT_LOADED),
        (503, {"error": {"message": "Loading model", "code": 503}}, ErrorCode.MODEL_NOT_LOADED),
        (
            400,
            {"error": {"message": "the request exceeds the available context size"}},
            ErrorCode.INTERNAL,
        ),
        (504, "gateway timeout", ErrorCode.BACKEND_TIMEOUT),
        (408, {"error": {"message": "Your request timed out"}}, ErrorCode.BACKEND_TIMEOUT),
        (429, {"error": {"message": "Rate limit exceeded"}}, ErrorCode.INTERNAL),
        (503, {"error": "The model is currently offline (MODEL_OFFLINE)."}, ErrorCode.INTERNAL),
    ],
)
def test_http_error_classification(status: int, body: object, code: ErrorCode) -> None:
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    err = classify_http_error("vllm", status, raw)
    assert err.code is code
    assert err.status == status
    assert err.message.startswith(f"vllm: HTTP {status}: ")


def test_anthropic_route_missing_is_internal_not_model_not_loaded() -> None:
    err = classify_http_error("ollama", 404, b"404 page not found", anthropic=True)
    assert err.code is ErrorCode.INTERNAL
    assert "no Anthropic Messages endpoint" in err.message


def test_error_message_is_one_short_line_and_never_a_key() -> None:
    key = "sk-or-v1-" + "a" * 40
    body = json.dumps({"error": {"message": f"bad key {key}\n\ntrace:\n" + "x " * 500}})
    message = error_message_of(body.encode())
    assert "\n" not in message and len(message) <= 200 and key not in message
    err = BackendError(ErrorCode.INTERNAL, f"Authorization: Bearer {key}\nmore")
    assert key not in err.message and "\n" not in err.message


async def test_json_answer_to_a_stream_is_relayed_with_its_usage() -> None:
    answer = {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2},
    }
    backend = mock(VllmBackend, "vllm", lambda r: httpx.Response(200, json=answer))
    sink = Sink()
    usage = await backend.execute(JOB, sink)  # type: ignore[attr-defined]
    await backend.aclose()  # type: ignore[attr-defined]
    assert json.loads(sink.data) == answer
    assert (usage.input_tokens, usage.output_tokens) == (11, 2)


async def test_read_timeout_is_backend_timeout_and_connect_timeout_unreachable() -> None:
    def read_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def connect_timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("no route", request=request)

    for handler, code in (
        (read_timeout, ErrorCode.BACKEND_TIMEOUT),
        (connect_timeout, ErrorCode.BACKEND_UNREACHABLE),
    ):
        backend = mock(VllmBackend, "vllm", handler)
        with pytest.raises(BackendError) as info:
            await backend.execute(JOB, Sink())  # type: ignore[attr-defined]
        await backend.aclose()  # type: ignore[attr-defined]
        assert info.value.code is code


async def test_llamacpp_older_build_bare_model_object() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"id": "/models/smollm2.gguf", "object": "model"})
        return httpx.Response(404, json={"error": {"message": "File Not Found", "code": 404}})

    backend = mock(LlamaCppBackend, "llamacpp", handler)
    assert await backend.list_models() == [ModelInfo("/models/smollm2.gguf", None)]  # type: ignore[attr-defined]
    await backend.aclose()  # type: ignore[attr-defined]


async def test_llamacpp_runtime_context_caps_the_trained_one() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(
                200, json={"data": [{"id": "q.gguf", "meta": {"n_ctx_train": 32768}}]}
            )
        assert request.url.path == "/props"
        return httpx.Response(200, json={"default_generation_settings": {"n_ctx": 4096}})

    backend = mock(LlamaCppBackend, "llamacpp", handler)
    assert await backend.list_models() == [ModelInfo("q.gguf", 4096)]  # type: ignore[attr-defined]
    await backend.aclose()  # type: ignore[attr-defined]


async def test_ollama_show_failures_are_tolerated() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "good:latest"}, {"id": "bad:latest"}]})
        name = json.loads(request.content)["model"]
        if name == "bad:latest":
            return httpx.Response(500, json={"error": "boom"})
        return httpx.Response(
            200,
            json={
                "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                "parameters": "num_ctx 4096\nstop x",
            },
        )

    backend = mock(OllamaBackend, "ollama", handler)
    models = await backend.list_models()  # type: ignore[attr-defined]
    await backend.aclose()  # type: ignore[attr-defined]
    assert models == [ModelInfo("good:latest", 4096), ModelInfo("bad:latest", None)]


def test_context_from_show_shapes() -> None:
    info = {"general.architecture": "qwen3", "qwen3.context_length": 40960}
    assert context_from_show({"model_info": info}) == 40960
    assert context_from_show({"model_info": {"gemma3.context_length": 131072}}) == 131072
    assert context_from_show({"model_info": {}}) is None
    assert context_from_show(None) is None


# ------------------------------------------------------------------ build_backend and keys


def test_remote_without_key_names_where_it_looked() -> None:
    cfg = BackendConfig("openrouter", api_key_env="OPENROUTER_API_KEY")
    with pytest.raises(MissingKeyError) as info:
        build_backend(cfg, SecretStore(environ={}))
    message = str(info.value)
    assert "OS keyring" in message and "usepod-agent" in message
    assert "$OPENROUTER_API_KEY" in message


async def test_key_from_keyring_first_then_env_and_registered_for_redaction(
    memory_keyring: object,
) -> None:
    ring_key = "sk-from-the-keyring-123456"
    env_key = "sk-from-the-environment-7890"
    store = SecretStore(environ={"VENICE_API_KEY": env_key})
    store.set("VENICE_API_KEY", ring_key)
    backend = build_backend(BackendConfig("venice", api_key_env="VENICE_API_KEY"), store)
    assert backend._client.headers["authorization"] == f"Bearer {ring_key}"  # type: ignore[attr-defined]
    await backend.aclose()
    assert ring_key not in redact(f"key is {ring_key}")
    env_only = build_backend(
        BackendConfig("venice", api_key_env="VENICE_API_KEY"),
        SecretStore(environ={"VENICE_API_KEY": env_key}, backend=_EmptyRing()),
    )
    assert env_only._client.headers["authorization"] == f"Bearer {env_key}"  # type: ignore[attr-defined]
    await env_only.aclose()


class _EmptyRing:
    def get_password(self, service: str, name: str) -> None:
        return None


def test_default_remote_base_urls_and_test_override(monkeypatch: pytest.MonkeyPatch) -> None:
    store = SecretStore(environ={"K": "sk-abcdefgh"})
    monkeypatch.delenv("USEPOD_OPENROUTER_BASE_URL", raising=False)
    monkeypatch.delenv("USEPOD_VENICE_BASE_URL", raising=False)
    orr = build_backend(BackendConfig("openrouter", api_key_env="K", url="http://ignored:1"), store)
    ven = build_backend(BackendConfig("venice", api_key_env="K"), store)
    assert orr.base_url == "https://openrouter.ai/api/v1"
    assert orr.chat_url == "https://openrouter.ai/api/v1/chat/completions"  # type: ignore[attr-defined]
    assert orr.messages_url == "https://openrouter.ai/api/v1/messages"  # type: ignore[attr-defined]
    assert ven.base_url == "https://api.venice.ai/api/v1"
    assert (orr.native, ven.native, ven.supports_anthropic) == (False, False, False)
    monkeypatch.setenv("USEPOD_VENICE_BASE_URL", "http://127.0.0.1:9/api/v1")
    ven2 = build_backend(BackendConfig("venice", api_key_env="K"), store)
    assert ven2.base_url == "http://127.0.0.1:9/api/v1"


@pytest.mark.parametrize(
    ("url", "chat"),
    [
        ("http://h:8000", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1", "http://h:8000/v1/chat/completions"),
        ("http://h/proxy/vllm/", "http://h/proxy/vllm/v1/chat/completions"),
    ],
)
def test_local_url_forms(url: str, chat: str) -> None:
    backend = build_backend(BackendConfig("vllm", url=url), SecretStore(environ={}))
    assert backend.chat_url == chat  # type: ignore[attr-defined]
    assert backend.native and backend.supports_anthropic


async def test_health_never_raises_on_a_broken_adapter_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("surprise")

    backend = mock(VllmBackend, "vllm", handler)
    with caplog.at_level(logging.DEBUG):
        health = await backend.health()  # type: ignore[attr-defined]
    await backend.aclose()  # type: ignore[attr-defined]
    assert (health.ok, health.state) == (False, "error")
    assert "surprise" in health.status
