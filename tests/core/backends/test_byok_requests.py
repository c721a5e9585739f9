"""BYOK cost amplification (issue 12, item 2): a job routed to a remote backend (the operator's
key pays upstream) is reduced to the standard chat-completion fields; a local backend gets the
request as sent. The upstream is the faithful fake on 127.0.0.1, which records every body it
receives; the hostile party is the marketplace user's request, written here."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.core.backends.conftest import MakeBackend, MakeFake, Sink, chat_request
from usepod_desktop.core.backends.base import BackendError, JobRequest
from usepod_desktop.core.backends.openai_compat import (
    BYOK_ANTHROPIC_FIELDS,
    BYOK_OPENAI_FIELDS,
    DEFAULT_BYOK_MAX_TOKENS,
    byok_request,
)
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.sandbox.fakes import FakeModel

JOB_ID = "0b7e8a52-5f7c-4cf4-9d1e-1f1b5d0f0a11"
CONTEXT = 8192

#: What a user would add to put the operator's key on something dearer than the advertised
#: model at the advertised price.
HOSTILE: dict[str, Any] = {
    "models": ["openai/o1-pro", "anthropic/claude-opus-4"],  # fallback list, billed as used
    "route": "fallback",
    "provider": {"order": ["expensive-host"], "allow_fallbacks": True},
    "plugins": [{"id": "web", "max_results": 25}],
    "web_search_options": {"search_context_size": "high"},
    "transforms": ["middle-out"],
    "modalities": ["image", "text"],
    "service_tier": "priority",
    "prediction": {"type": "content", "content": "x" * 100},
    "usage": {"include": True},
    "max_tokens": 1_000_000_000,
    "max_completion_tokens": 10**12,
}


def openai_job(request: dict[str, Any], model: str = "m1") -> JobRequest:
    return JobRequest(JOB_ID, model, request, "openai")


@pytest.mark.parametrize("kind", ["openrouter", "venice"])
async def test_remote_backend_gets_only_standard_fields_and_capped_max_tokens(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind, [FakeModel("m1", context_length=CONTEXT)], output_tokens=3)
    backend = make_backend(fake)
    await backend.list_models()  # discovery does this first: the context length is known
    request = chat_request(
        temperature=0.3,
        seed=7,
        stop=["\n\n"],
        stream_options={"include_usage": False, "continuous_usage_stats": True},
        tools=[
            {"type": "function", "function": {"name": "f", "parameters": {}}},
            {"type": "web_search_preview"},  # a server-side tool, billed per call
        ],
        **HOSTILE,
    )
    original = copy.deepcopy(request)
    usage = await backend.execute(openai_job(request), Sink())

    sent = fake.requests[-1].json
    assert set(sent) <= BYOK_OPENAI_FIELDS
    for key in ("models", "route", "provider", "plugins", "web_search_options", "transforms"):
        assert key not in sent
    assert "modalities" not in sent and "service_tier" not in sent and "usage" not in sent
    assert sent["max_tokens"] == CONTEXT and sent["max_completion_tokens"] == CONTEXT
    assert sent["tools"] == [original["tools"][0]]
    assert sent["stream_options"] == {"include_usage": True}
    assert (sent["temperature"], sent["seed"], sent["stop"]) == (0.3, 7, ["\n\n"])
    assert sent["messages"] == original["messages"] and sent["model"] == "m1"
    assert request == original  # the job's own request is not mutated
    assert usage.output_tokens == 3


@pytest.mark.parametrize("n", [2, 128, "3", 0])
@pytest.mark.parametrize("kind", ["openrouter", "venice"])
async def test_remote_backend_refuses_n_other_than_one_without_a_request(
    kind: str, n: Any, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind)
    backend = make_backend(fake)
    sink = Sink()
    with pytest.raises(BackendError) as info:
        await backend.execute(openai_job(chat_request(n=n)), sink)
    assert info.value.code is ErrorCode.INVALID_REQUEST
    assert "n=" in info.value.message
    assert [r for r in fake.requests if r.method == "POST"] == [] and sink.chunks == []


async def test_remote_backend_accepts_n_one(make_fake: MakeFake, make_backend: MakeBackend) -> None:
    fake = await make_fake("openrouter", output_tokens=2)
    usage = await make_backend(fake).execute(openai_job(chat_request(n=1)), Sink())
    assert usage.output_tokens == 2 and "n" not in fake.requests[-1].json


async def test_unknown_context_length_uses_the_configured_cap(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("openrouter", [FakeModel("m1", context_length=None)])
    backend = make_backend(fake)
    await backend.list_models()
    await backend.execute(openai_job(chat_request(max_tokens=10**9)), Sink())
    assert fake.requests[-1].json["max_tokens"] == DEFAULT_BYOK_MAX_TOKENS
    backend.max_tokens_cap = 500  # the per-backend cap wins when it is lower
    await backend.execute(openai_job(chat_request(max_tokens=10**9)), Sink())
    assert fake.requests[-1].json["max_tokens"] == 500
    await backend.execute(openai_job(chat_request(max_tokens=40)), Sink())
    assert fake.requests[-1].json["max_tokens"] == 40  # a small value is left alone


async def test_anthropic_job_on_openrouter_keeps_only_messages_fields(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("openrouter", [FakeModel("m1", context_length=CONTEXT)])
    backend = make_backend(fake)
    await backend.list_models()
    client_tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    request = {
        "max_tokens": 10**9,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello there"}],
        "metadata": {"user_id": "u1", "trace": "x"},
        "tools": [client_tool, {"type": "web_search_20250305", "name": "web_search"}],
        "mcp_servers": [{"type": "url", "url": "https://mcp.example/sse", "name": "x"}],
        "service_tier": "priority",
        "provider": {"order": ["expensive-host"]},
        "models": ["anthropic/claude-opus-4"],
    }
    await backend.execute(JobRequest(JOB_ID, "m1", request, "anthropic"), Sink())
    sent = fake.requests[-1].json
    assert fake.requests[-1].path.endswith("/messages")
    assert set(sent) <= BYOK_ANTHROPIC_FIELDS
    assert sent["tools"] == [client_tool]
    assert sent["metadata"] == {"user_id": "u1"}
    assert sent["max_tokens"] == CONTEXT and sent["system"] == "be brief"


async def test_venice_keeps_its_model_features_but_not_paid_web_search(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("venice")
    params = {
        "include_venice_system_prompt": False,
        "character_slug": "x",
        "enable_web_search": "on",
        "enable_web_scraping": True,
    }
    await make_backend(fake).execute(openai_job(chat_request(venice_parameters=params)), Sink())
    assert fake.requests[-1].json["venice_parameters"] == {
        "include_venice_system_prompt": False,
        "character_slug": "x",
    }


@pytest.mark.parametrize("kind", ["vllm", "llamacpp", "lmstudio", "ollama"])
async def test_local_backend_gets_the_request_as_sent(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind, [FakeModel("m1", context_length=None)])
    request = chat_request(n=2, provider={"x": 1}, custom_field=[1, 2], max_tokens=5)
    await make_backend(fake).execute(openai_job(request), Sink())
    sent = fake.requests[-1].json
    assert {k: v for k, v in sent.items() if k not in ("model", "stream", "stream_options")} == (
        request
    )


def test_byok_request_is_pure_and_names_what_it_dropped() -> None:
    request = {"messages": [], "provider": {}, "n": 1, "max_tokens": 99}
    body, dropped = byok_request(request, anthropic=False, max_tokens_cap=10)
    assert body == {"messages": [], "max_tokens": 10}
    assert dropped == ["provider", "max_tokens>10"]
    assert request == {"messages": [], "provider": {}, "n": 1, "max_tokens": 99}
