"""The fake backends behave like the real servers on the wire (docs/backends.md), and fast."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from usepod_desktop.sandbox.fakes import FailMode, FakeBackend, FakeModel

ALL_KINDS = ("vllm", "llamacpp", "lmstudio", "ollama", "openrouter", "venice")
MESSAGES_KINDS = ("vllm", "llamacpp", "lmstudio", "ollama", "openrouter")
REPO = Path(__file__).resolve().parents[2]

MakeFake = Callable[..., Awaitable[FakeBackend]]


# ------------------------------------------------------------------ helpers


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=5.0) as c:
        yield c


def root(fake: FakeBackend) -> str:
    return f"http://127.0.0.1:{fake.port}"


def api(fake: FakeBackend, suffix: str) -> str:
    """OpenAI-compatible route: /v1/... on local kinds, /api/v1/... on hosted ones."""
    return fake.url + ("" if fake.kind in ("openrouter", "venice") else "/v1") + suffix


def chat_body(
    model: str = "m1", *, stream: bool = True, usage: bool | None = None, **kw: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there big world"},
        ],
        "stream": stream,
    }
    if usage is not None:
        body["stream_options"] = {"include_usage": usage}
    body.update(kw)
    return body


def frames(text: str) -> list[str]:
    return [f for f in text.split("\n\n") if f]


def data_events(text: str) -> list[Any]:
    """Payloads of the `data:` lines in order; "[DONE]" stays a string."""
    out: list[Any] = []
    for frame in frames(text):
        for line in frame.split("\n"):
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def content_of(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


def content_chunks(events: list[Any]) -> list[Any]:
    return [
        e
        for e in events
        if isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content")
    ]


def anthropic_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for frame in frames(text):
        lines = frame.split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), frame
        out.append((lines[0][7:], json.loads(lines[1][6:])))
    return out


async def read_stream_lines(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], *, read_timeout: float = 5.0
) -> tuple[list[str], BaseException | None]:
    """Stream a POST; return the lines received and the exception that ended it (if any)."""
    lines: list[str] = []
    try:
        async with client.stream("POST", url, json=body, timeout=read_timeout) as resp:
            assert resp.status_code == 200
            async for line in resp.aiter_lines():
                lines.append(line)
    except (httpx.RemoteProtocolError, httpx.ReadTimeout, httpx.ReadError) as exc:
        return lines, exc
    return lines, None


# ------------------------------------------------------------------ common stream shape


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_stream_shape_content_and_usage(
    make_fake: MakeFake, client: httpx.AsyncClient, kind: str
) -> None:
    fake = await make_fake(kind, output_tokens=5)
    body = chat_body(usage=True)
    resp = await client.post(api(fake, "/chat/completions"), json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = data_events(resp.text)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if isinstance(e, dict)]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"m1"}
    assert len({c["id"] for c in chunks}) == 1
    assert all(isinstance(c["created"], int) for c in chunks)
    assert content_of(events) == fake.expected_text(5) == "tok0 tok1 tok2 tok3 tok4"
    assert len(content_chunks(events)) == 5
    finishes = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [f["choices"][0]["finish_reason"] for f in finishes] == ["stop"]
    usage = chunks[-1]
    assert usage["choices"] == []
    n_prompt = fake.count_prompt_tokens(body)
    assert n_prompt == 4 + 2 + 4 + 4
    assert usage["usage"]["prompt_tokens"] == n_prompt
    assert usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["total_tokens"] == n_prompt + 5


@pytest.mark.parametrize(
    ("kind", "include_usage", "request_usage", "expected"),
    [
        ("vllm", "auto", None, False),
        ("vllm", "auto", True, True),
        ("llamacpp", "auto", None, False),
        ("lmstudio", "auto", False, False),
        ("lmstudio", "auto", True, True),
        ("ollama", "auto", None, False),
        ("venice", "auto", None, False),
        ("openrouter", "auto", None, True),  # OpenRouter always sends usage
        ("openrouter", "auto", False, True),
        ("vllm", "always", None, True),
        ("openrouter", "never", True, False),
    ],
)
async def test_usage_presence_rules(
    make_fake: MakeFake,
    client: httpx.AsyncClient,
    kind: str,
    include_usage: str,
    request_usage: bool | None,
    expected: bool,
) -> None:
    fake = await make_fake(kind, include_usage=include_usage)
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body(usage=request_usage))
    events = data_events(resp.text)
    with_usage = [e for e in events if isinstance(e, dict) and "usage" in e]
    assert bool(with_usage) is expected
    assert events[-1] == "[DONE]"


async def test_max_tokens_truncates_with_finish_length(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("vllm", output_tokens=8)
    resp = await client.post(
        api(fake, "/chat/completions"), json=chat_body(usage=True, max_tokens=3)
    )
    events = data_events(resp.text)
    assert content_of(events) == "tok0 tok1 tok2"
    finish = [
        e
        for e in events
        if isinstance(e, dict) and e["choices"] and e["choices"][0]["finish_reason"]
    ]
    assert finish[0]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_non_stream_completion(
    make_fake: MakeFake, client: httpx.AsyncClient, kind: str
) -> None:
    fake = await make_fake(kind, output_tokens=4)
    body = chat_body(stream=False)
    resp = await client.post(api(fake, "/chat/completions"), json=body)
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "m1"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "tok0 tok1 tok2 tok3"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {
        "prompt_tokens": fake.count_prompt_tokens(body),
        "completion_tokens": 4,
        "total_tokens": fake.count_prompt_tokens(body) + 4,
    } | ({"cost": data["usage"]["cost"]} if "cost" in data["usage"] else {})


def test_count_prompt_tokens_and_expected_text() -> None:
    fake = FakeBackend("vllm")
    chat = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hello big world"}, {"type": "image_url"}],
            },
        ]
    }
    assert fake.count_prompt_tokens(chat) == (4 + 2) + (4 + 3)
    anthropic = {"system": "be brief", "messages": [{"role": "user", "content": "hi you"}]}
    assert fake.count_prompt_tokens(anthropic) == (4 + 2) + (4 + 2)
    assert fake.expected_text(0) == ""
    assert fake.expected_text(3) == "tok0 tok1 tok2"


def test_rejects_unknown_kind_and_usage_option() -> None:
    with pytest.raises(ValueError):
        FakeBackend("tgi")
    with pytest.raises(ValueError):
        FakeBackend("vllm", include_usage="sometimes")


# ------------------------------------------------------------------ unknown models


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        (
            "vllm",
            404,
            {
                "error": {
                    "message": "The model `nope` does not exist.",
                    "type": "NotFoundError",
                    "param": None,
                    "code": 404,
                }
            },
        ),
        (
            "llamacpp",
            404,
            {
                "error": {
                    "code": 404,
                    "message": "model 'nope' not found",
                    "type": "not_found_error",
                }
            },
        ),
        (
            "ollama",
            404,
            {
                "error": {
                    "message": "model 'nope' not found",
                    "type": "api_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
        ("openrouter", 400, {"error": {"message": "nope is not a valid model ID", "code": 400}}),
        ("venice", 404, {"error": "Specified model not found"}),
    ],
)
async def test_unknown_model_bodies(
    make_fake: MakeFake, client: httpx.AsyncClient, kind: str, status: int, expected: dict[str, Any]
) -> None:
    fake = await make_fake(kind)
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body("nope"))
    assert resp.status_code == status
    assert resp.json() == expected


async def test_lmstudio_unknown_model(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("lmstudio")
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body("nope"))
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"
    assert '"nope"' in resp.json()["error"]["message"]


# ------------------------------------------------------------------ vLLM


async def test_vllm_health_and_models(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("vllm", [FakeModel("Qwen/Qwen3-8B", 32768), FakeModel("my-lora", None)])
    assert fake.url == root(fake)
    health = await client.get(fake.url + "/health")
    assert (health.status_code, health.content) == (200, b"")
    models = (await client.get(fake.url + "/v1/models")).json()
    assert models["object"] == "list"
    base, lora = models["data"]
    assert base["id"] == "Qwen/Qwen3-8B" and base["max_model_len"] == 32768
    assert base["owned_by"] == "vllm" and base["parent"] is None
    assert lora["id"] == "my-lora" and "max_model_len" not in lora
    missing = await client.get(fake.url + "/nope")
    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})


async def test_vllm_error_status_fails_health_and_chat(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("vllm", fail_mode=FailMode.ERROR_STATUS, error_status=500)
    assert (await client.get(fake.url + "/health")).status_code == 503
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body())
    assert resp.status_code == 500
    assert resp.json()["error"]["type"] == "InternalServerError"
    assert resp.json()["error"]["code"] == 500


async def test_vllm_loading_refuses_connections_then_recovers(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("vllm")
    url = fake.url
    assert (await client.get(url + "/health")).status_code == 200
    await fake.set_fail_mode(FailMode.LOADING)
    with pytest.raises(httpx.ConnectError):
        await client.get(url + "/health")
    await fake.set_fail_mode(FailMode.NONE)
    assert fake.url == url
    assert (await client.get(url + "/health")).status_code == 200


async def test_vllm_context_overflow(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("vllm", [FakeModel("m1", 20)])
    ok = await client.post(api(fake, "/chat/completions"), json=chat_body(max_tokens=4))
    assert ok.status_code == 200
    too_long = await client.post(api(fake, "/chat/completions"), json=chat_body(max_tokens=50))
    assert too_long.status_code == 400
    err = too_long.json()["error"]
    assert err["type"] == "BadRequestError" and "maximum context length is 20" in err["message"]


# ------------------------------------------------------------------ llama.cpp


async def test_llamacpp_health_and_models(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake(
        "llamacpp", [FakeModel("/models/smollm2.gguf", 8192), FakeModel("x", None)]
    )
    assert (await client.get(fake.url + "/health")).json() == {"status": "ok"}
    models = (await client.get(fake.url + "/v1/models")).json()
    assert [d["id"] for d in models["data"]] == ["/models/smollm2.gguf", "x"]
    assert models["data"][0]["meta"]["n_ctx_train"] == 8192
    assert models["data"][1]["meta"] is None
    assert [m["name"] for m in models["models"]] == ["/models/smollm2.gguf", "x"]


async def test_llamacpp_loading_answers_every_route_503(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("llamacpp", fail_mode=FailMode.LOADING)
    expected = {"error": {"message": "Loading model", "type": "unavailable_error", "code": 503}}
    for method, path in [
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/x"),
    ]:
        resp = await client.request(
            method, fake.url + path, json=chat_body() if method == "POST" else None
        )
        assert (resp.status_code, resp.json()) == (503, expected), path
    fake.fail_mode = FailMode.NONE
    assert (await client.get(fake.url + "/health")).status_code == 200


async def test_llamacpp_usage_chunk_carries_timings(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("llamacpp", output_tokens=3)
    events = data_events(
        (await client.post(api(fake, "/chat/completions"), json=chat_body(usage=True))).text
    )
    last = events[-2]
    assert events[-1] == "[DONE]"
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3
    assert last["timings"]["predicted_n"] == 3
    assert last["timings"]["prompt_n"] == last["usage"]["prompt_tokens"]
    assert "predicted_per_second" in last["timings"]


async def test_llamacpp_context_overflow_body(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("llamacpp", [FakeModel("m1", 10)])
    body = chat_body()
    resp = await client.post(api(fake, "/chat/completions"), json=body)
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == 400 and err["type"] == "exceed_context_size_error"
    assert err["n_prompt_tokens"] == fake.count_prompt_tokens(body) == 14
    assert err["n_ctx"] == 10
    assert isinstance(err["message"], str)


async def test_llamacpp_error_event_ends_without_done(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("llamacpp", fail_mode=FailMode.ERROR_EVENT, fail_after_chunks=2)
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body())
    assert resp.status_code == 200
    events = data_events(resp.text)
    assert len(content_chunks(events)) == 2
    assert "[DONE]" not in events
    assert events[-1]["error"]["code"] == 500 and events[-1]["error"]["message"]


# ------------------------------------------------------------------ LM Studio


async def test_lmstudio_routes(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("lmstudio", [FakeModel("qwen/qwen3-4b", 32768)])
    health = await client.get(fake.url + "/health")
    assert health.status_code == 200
    assert health.json() == {"error": "Unexpected endpoint or method. (GET /health)"}
    models = (await client.get(fake.url + "/v1/models")).json()
    assert models == {
        "data": [{"id": "qwen/qwen3-4b", "object": "model", "owned_by": "organization_owner"}],
        "object": "list",
    }
    v0 = (await client.get(fake.url + "/api/v0/models")).json()["data"][0]
    assert v0["state"] == "loaded" and v0["max_context_length"] == 32768


@pytest.mark.parametrize("mode", [FailMode.LOADING, FailMode.ERROR_STATUS])
async def test_lmstudio_fails_models_with_200_error_body(
    make_fake: MakeFake, client: httpx.AsyncClient, mode: FailMode
) -> None:
    fake = await make_fake("lmstudio", fail_mode=mode)
    for path in ("/v1/models", "/api/v0/models"):
        resp = await client.get(fake.url + path)
        assert resp.status_code == 200
        assert isinstance(resp.json()["error"], str) and "data" not in resp.json()


async def test_lmstudio_error_status_on_chat(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("lmstudio", fail_mode=FailMode.ERROR_STATUS, error_status=500)
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body())
    assert resp.status_code == 500
    assert isinstance(resp.json()["error"], str)


@pytest.mark.parametrize("kind", ["lmstudio", "ollama"])
async def test_loading_blocks_inference_until_loaded(
    make_fake: MakeFake, client: httpx.AsyncClient, kind: str
) -> None:
    fake = await make_fake(kind, fail_mode=FailMode.LOADING, output_tokens=2)
    task = asyncio.create_task(client.post(api(fake, "/chat/completions"), json=chat_body()))
    await asyncio.sleep(0.15)
    assert not task.done()
    fake.fail_mode = FailMode.NONE
    resp = await asyncio.wait_for(task, 2)
    assert resp.status_code == 200 and content_of(data_events(resp.text)) == "tok0 tok1"


# ------------------------------------------------------------------ Ollama


async def test_ollama_native_routes(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("ollama", [FakeModel("qwen3:8b", 40960)])
    rootresp = await client.get(fake.url + "/")
    assert (rootresp.status_code, rootresp.text) == (200, "Ollama is running")
    assert "version" in (await client.get(fake.url + "/api/version")).json()
    tag = (await client.get(fake.url + "/api/tags")).json()["models"][0]
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(tag)
    assert tag["name"] == "qwen3:8b"
    v1 = (await client.get(fake.url + "/v1/models")).json()
    assert v1["object"] == "list"
    assert v1["data"][0]["id"] == "qwen3:8b" and v1["data"][0]["owned_by"] == "library"
    assert not any("context" in key for key in v1["data"][0])
    show = (await client.post(fake.url + "/api/show", json={"model": "qwen3:8b"})).json()
    arch = show["model_info"]["general.architecture"]
    assert show["model_info"][f"{arch}.context_length"] == 40960
    missing = await client.post(fake.url + "/api/show", json={"model": "nope"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})
    assert (await client.get(fake.url + "/nope")).text == "404 page not found"


async def test_ollama_latest_alias_and_stream_order(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("ollama", ["llama3.2:latest"], output_tokens=2)
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body("llama3.2", usage=True))
    assert resp.status_code == 200
    events = data_events(resp.text)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"  # no separate role chunk
    assert content_of(events) == "tok0 tok1"
    finish, usage, done = events[-3:]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2
    assert done == "[DONE]"


# ------------------------------------------------------------------ OpenRouter


async def test_openrouter_models_public_with_string_prices(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake(
        "openrouter",
        [FakeModel("openai/gpt-4o-mini", 128000, 1e-6, 2e-6), FakeModel("free/model", 8192)],
        api_key="sk-or-test",
    )
    assert fake.url == root(fake) + "/api/v1"
    resp = await client.get(fake.url + "/models")  # no key: the list is public
    assert resp.status_code == 200
    priced, free = resp.json()["data"]
    assert priced["context_length"] == 128000
    assert (
        priced["pricing"]["prompt"] == "0.000001" and priced["pricing"]["completion"] == "0.000002"
    )
    assert "pricing" not in free
    assert (await client.get(root(fake) + "/v1/models")).status_code == 404


async def test_openrouter_auth(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("openrouter", api_key="sk-or-good")
    url = api(fake, "/chat/completions")
    missing = await client.post(url, json=chat_body())
    assert (missing.status_code, missing.json()) == (
        401,
        {"error": {"message": "No auth credentials found", "code": 401}},
    )
    wrong = await client.post(url, json=chat_body(), headers={"Authorization": "Bearer sk-or-bad"})
    assert wrong.status_code == 401
    good = await client.post(url, json=chat_body(), headers={"Authorization": "Bearer sk-or-good"})
    assert good.status_code == 200 and data_events(good.text)[-1] == "[DONE]"


async def test_openrouter_comment_lines_before_first_chunk(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("openrouter", ttft_s=0.05)
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body())
    first = frames(resp.text)[0]
    assert first == ": OPENROUTER PROCESSING"
    assert content_of(data_events(resp.text)) == fake.expected_text(8)


async def test_openrouter_error_event_keeps_200_and_done(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("openrouter", fail_mode=FailMode.ERROR_EVENT, fail_after_chunks=1)
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body())
    assert resp.status_code == 200
    events = data_events(resp.text)
    assert len(content_chunks(events)) == 1
    err = events[-2]
    assert err["error"]["message"] and err["choices"][0]["finish_reason"] == "error"
    assert events[-1] == "[DONE]"


async def test_openrouter_402_and_429(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("openrouter", fail_mode=FailMode.ERROR_STATUS, error_status=402)
    url = api(fake, "/chat/completions")
    resp = await client.post(url, json=chat_body())
    assert resp.status_code == 402
    assert resp.json()["error"]["code"] == 402 and "credits" in resp.json()["error"]["message"]
    fake.error_status = 429
    limited = await client.post(url, json=chat_body())
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"


async def test_openrouter_messages_route_exists(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("openrouter", api_key="k", output_tokens=2)
    body = {
        "model": "m1",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    }
    resp = await client.post(
        fake.url + "/messages", json=body, headers={"Authorization": "Bearer k"}
    )
    assert resp.status_code == 200
    assert anthropic_events(resp.text)[-1][0] == "message_stop"


# ------------------------------------------------------------------ Venice


async def test_venice_models_body(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("venice", [FakeModel("llama-3.3-70b", 65536, 7e-7, 2.8e-6)])
    assert fake.url == root(fake) + "/api/v1"
    body = (await client.get(fake.url + "/models")).json()
    assert body["object"] == "list" and body["type"] == "text"
    model = body["data"][0]
    assert model["id"] == "llama-3.3-70b" and model["context_length"] == 65536
    spec = model["model_spec"]
    assert spec["pricing"]["input"]["usd"] == pytest.approx(0.7)
    assert spec["pricing"]["output"]["usd"] == pytest.approx(2.8)
    assert spec["availableContextTokens"] == 65536


async def test_venice_errors_are_plain_strings(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("venice", api_key="vk")
    url = api(fake, "/chat/completions")
    denied = await client.post(url, json=chat_body(), headers={"Authorization": "Bearer wrong"})
    assert (denied.status_code, denied.json()) == (401, {"error": "Authentication failed"})
    fake.fail_mode = FailMode.ERROR_STATUS
    fake.error_status = 503
    offline = await client.post(url, json=chat_body(), headers={"Authorization": "Bearer vk"})
    assert offline.status_code == 503
    assert isinstance(offline.json()["error"], str) and "MODEL_OFFLINE" in offline.json()["error"]


async def test_venice_has_no_messages_and_keeps_venice_parameters(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("venice")
    no_msgs = await client.post(fake.url + "/messages", json={"model": "m1", "messages": []})
    assert no_msgs.status_code == 404
    params = {"include_venice_system_prompt": False, "enable_web_search": "off"}
    resp = await client.post(
        api(fake, "/chat/completions"), json=chat_body(venice_parameters=params)
    )
    assert resp.status_code == 200 and data_events(resp.text)[-1] == "[DONE]"
    assert fake.requests[-1].json["venice_parameters"] == params


# ------------------------------------------------------------------ Anthropic /v1/messages


@pytest.mark.parametrize("kind", MESSAGES_KINDS)
async def test_anthropic_stream_events(
    make_fake: MakeFake, client: httpx.AsyncClient, kind: str
) -> None:
    fake = await make_fake(kind, output_tokens=3)
    body = {
        "model": "m1",
        "max_tokens": 100,
        "system": "be brief",
        "messages": [{"role": "user", "content": "say something nice"}],
        "stream": True,
    }
    resp = await client.post(api(fake, "/messages"), json=body)
    assert resp.status_code == 200
    events = anthropic_events(resp.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["usage"] == {"input_tokens": fake.count_prompt_tokens(body), "output_tokens": 1}
    assert start["model"] == "m1"
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == fake.expected_text(3)
    delta = events[-2][1]
    assert delta["usage"]["output_tokens"] == 3 and delta["delta"]["stop_reason"] == "end_turn"


async def test_anthropic_non_stream_and_error_event(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("vllm", output_tokens=2)
    body = {"model": "m1", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    data = (await client.post(fake.url + "/v1/messages", json=body)).json()
    assert data["type"] == "message" and data["content"] == [{"type": "text", "text": "tok0"}]
    assert data["stop_reason"] == "max_tokens"
    assert data["usage"] == {"input_tokens": 5, "output_tokens": 1}
    fake.fail_mode = FailMode.ERROR_EVENT
    fake.fail_after_chunks = 1
    resp = await client.post(
        fake.url + "/v1/messages", json=body | {"max_tokens": 10, "stream": True}
    )
    names = [n for n, _ in anthropic_events(resp.text)]
    assert names == ["message_start", "content_block_start", "content_block_delta", "error"]
    missing = await client.post(fake.url + "/v1/messages", json=body | {"model": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


# ------------------------------------------------------------------ fail modes


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_die_mid_stream_breaks_the_connection(
    make_fake: MakeFake, client: httpx.AsyncClient, kind: str
) -> None:
    fake = await make_fake(kind, fail_mode=FailMode.DIE_MID_STREAM, fail_after_chunks=3)
    lines, exc = await read_stream_lines(client, api(fake, "/chat/completions"), chat_body())
    assert isinstance(exc, httpx.RemoteProtocolError)  # no chunked terminator
    events = data_events("\n".join(lines))
    assert len(content_chunks(events)) == 3
    assert "[DONE]" not in events
    # the server itself is fine: the next request works
    fake.fail_mode = FailMode.NONE
    ok = await client.post(api(fake, "/chat/completions"), json=chat_body())
    assert ok.status_code == 200


async def test_die_without_stream_closes_connection(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("vllm", fail_mode=FailMode.DIE_MID_STREAM)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(api(fake, "/chat/completions"), json=chat_body(stream=False))


async def test_vllm_error_event_then_done(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake(
        "vllm", fail_mode=FailMode.ERROR_EVENT, fail_after_chunks=5, output_tokens=3
    )
    events = data_events((await client.post(api(fake, "/chat/completions"), json=chat_body())).text)
    assert len(content_chunks(events)) == 3  # shorter answer: fails after all its chunks
    assert events[-2]["error"]["type"] == "InternalServerError"
    assert events[-1] == "[DONE]"


async def test_hang_never_answers_but_health_works_and_stop_is_fast(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("vllm", fail_mode=FailMode.HANG)
    with pytest.raises(httpx.ReadTimeout):
        await client.post(api(fake, "/chat/completions"), json=chat_body(), timeout=0.3)
    assert (await client.get(fake.url + "/health")).status_code == 200
    hanging = asyncio.create_task(
        client.post(api(fake, "/chat/completions"), json=chat_body(), timeout=5)
    )
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    await fake.stop()
    assert time.perf_counter() - t0 < 1.0
    with pytest.raises(httpx.HTTPError):
        await asyncio.wait_for(hanging, 2)


async def test_hang_mid_stream(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("ollama", fail_mode=FailMode.HANG_MID_STREAM, fail_after_chunks=2)
    lines, exc = await read_stream_lines(
        client, api(fake, "/chat/completions"), chat_body(), read_timeout=0.3
    )
    assert isinstance(exc, httpx.ReadTimeout)
    assert content_of(data_events("\n".join(lines))) == "tok0 tok1"


async def test_refuse_by_assignment_drops_connections_and_recovers(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("llamacpp")
    port = fake.port
    assert (
        await client.get(fake.url + "/health")
    ).status_code == 200  # a pooled keep-alive connection
    fake.fail_mode = FailMode.REFUSE  # takes effect at once, open connections included
    with pytest.raises(httpx.ConnectError):
        await client.get(fake.url + "/health")
    fake.fail_mode = FailMode.NONE  # listening again at once, on the same port
    assert fake.port == port
    assert (await client.get(fake.url + "/health")).status_code == 200


async def test_refuse_from_the_start(client: httpx.AsyncClient) -> None:
    async with FakeBackend("ollama", fail_mode=FailMode.REFUSE) as fake:
        assert fake.port
        with pytest.raises(httpx.ConnectError):
            await client.get(fake.url + "/api/tags")
        await fake.set_fail_mode(FailMode.NONE)
        assert (await client.get(fake.url + "/api/tags")).status_code == 200


async def test_stop_then_start_on_same_port(client: httpx.AsyncClient) -> None:
    fake = FakeBackend("ollama")
    await fake.start()
    port = fake.port
    assert port is not None
    await fake.stop()
    with pytest.raises(httpx.ConnectError):
        await client.get(fake.url + "/")
    assert await fake.start(port=port) == f"http://127.0.0.1:{port}"
    try:
        assert (await client.get(fake.url + "/")).text == "Ollama is running"
    finally:
        await fake.stop()


# ------------------------------------------------------------------ auth, recording


async def test_local_kinds_with_api_key(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("llamacpp", api_key="s3cret")
    url = api(fake, "/chat/completions")
    denied = await client.post(url, json=chat_body())
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
    ok = await client.post(url, json=chat_body(), headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200


async def test_requests_are_recorded(make_fake: MakeFake, client: httpx.AsyncClient) -> None:
    fake = await make_fake("openrouter")
    body = chat_body()
    await client.post(
        api(fake, "/chat/completions"),
        json=body,
        headers={
            "Authorization": "Bearer k",
            "HTTP-Referer": "https://usepod.example",
            "X-Title": "Use Pod",
        },
    )
    await client.get(fake.url + "/models")
    first, second = fake.requests
    assert (first.method, first.path, first.json) == ("POST", "/api/v1/chat/completions", body)
    assert first.headers["Authorization"] == "Bearer k" == first.headers["authorization"]
    assert first.headers.get("x-title") == "Use Pod"
    assert (second.method, second.path, second.json) == ("GET", "/api/v1/models", None)


# ------------------------------------------------------------------ pacing, speed, hygiene


async def test_tokens_per_second_paces_the_stream(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("vllm", tokens_per_second=50, output_tokens=6)
    t0 = time.perf_counter()
    resp = await client.post(api(fake, "/chat/completions"), json=chat_body())
    elapsed = time.perf_counter() - t0
    assert content_of(data_events(resp.text)) == fake.expected_text(6)
    assert elapsed >= 5 / 50 * 0.9


async def test_ttft_delays_first_content_chunk(
    make_fake: MakeFake, client: httpx.AsyncClient
) -> None:
    fake = await make_fake("llamacpp", ttft_s=0.15, output_tokens=2)
    t0 = time.perf_counter()
    first_content: float | None = None
    async with client.stream("POST", api(fake, "/chat/completions"), json=chat_body()) as resp:
        async for line in resp.aiter_lines():
            if '"content":"tok0"' in line and first_content is None:
                first_content = time.perf_counter() - t0
    assert first_content is not None and first_content >= 0.14
    t0 = time.perf_counter()
    await client.post(api(fake, "/chat/completions"), json=chat_body(stream=False))
    assert time.perf_counter() - t0 >= 0.14


async def test_unpaced_streams_are_fast(make_fake: MakeFake) -> None:
    fake = await make_fake("vllm", output_tokens=2000)
    url = api(fake, "/chat/completions")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def count_chunks(n_tokens: int) -> int:
            n = 0
            async with session.post(url, json=chat_body(max_tokens=n_tokens)) as resp:
                async for chunk in resp.content.iter_any():
                    n += chunk.count(b"data: ")
            return n

        t0 = time.perf_counter()
        assert await count_chunks(2000) == 2000 + 3  # role, 2000 content, finish, [DONE]
        assert time.perf_counter() - t0 < 1.0  # no per-chunk sleeping
        counts = await asyncio.gather(*(count_chunks(200) for _ in range(128)))
    assert counts == [200 + 3] * 128


async def test_client_disconnect_is_quiet(
    make_fake: MakeFake, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = await make_fake("vllm", tokens_per_second=200, output_tokens=100)
    hang = await make_fake("vllm", fail_mode=FailMode.HANG)
    async with client.stream("POST", api(fake, "/chat/completions"), json=chat_body()) as resp:
        async for line in resp.aiter_lines():
            if "tok1" in line:
                break  # leaving the block closes the connection mid-stream
    with pytest.raises(httpx.ReadTimeout):
        await client.post(api(hang, "/chat/completions"), json=chat_body(), timeout=0.1)
    pending = asyncio.create_task(client.post(api(hang, "/chat/completions"), json=chat_body()))
    await asyncio.sleep(0.05)
    await hang.stop()  # ends the hanging request
    with pytest.raises(httpx.HTTPError):
        await asyncio.wait_for(pending, 2)
    await asyncio.sleep(0.1)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert noisy == []
    assert (
        await client.post(api(fake, "/chat/completions"), json=chat_body(max_tokens=1))
    ).status_code == 200


async def test_only_loopback(make_fake: MakeFake) -> None:
    fake = await make_fake("venice")
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake._server is not None
    assert {s.getsockname()[0] for s in fake._server.sockets} == {"127.0.0.1"}


async def test_command_line_runs_a_fake() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "usepod_desktop.sandbox.fakes",
        "ollama",
        "--port",
        "0",
        "--model",
        "llama3.2:latest",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(trust_env=False) as c:
            assert (await c.get(url + "/")).text == "Ollama is running"
            assert (await c.get(url + "/v1/models")).json()["data"][0]["id"] == "llama3.2:latest"
    finally:
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.wait_for(proc.wait(), 10)
    assert rc == 0
