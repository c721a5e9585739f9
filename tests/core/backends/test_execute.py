"""Executing jobs: byte-exact relay, request rewriting, usage, and every failure mode."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable

import httpx
import pytest

from tests.core.backends.conftest import (
    ALL_KINDS,
    ANTHROPIC_KINDS,
    KEY,
    LOCAL_KINDS,
    MakeBackend,
    MakeFake,
    Sink,
    chat_request,
)
from usepod_desktop.core.backends.base import BackendError, JobRequest
from usepod_desktop.core.config import REMOTE_KINDS, BackendConfig
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.sandbox.fakes import FailMode, FakeBackend

CHAT_PATH = {k: "/v1/chat/completions" for k in LOCAL_KINDS} | {
    "openrouter": "/api/v1/chat/completions",
    "venice": "/api/v1/chat/completions",
}
MESSAGES_PATH = {k: "/v1/messages" for k in LOCAL_KINDS} | {"openrouter": "/api/v1/messages"}


def job(request: dict | None = None, *, model: str = "m1", fmt: str = "openai") -> JobRequest:
    return JobRequest("0b7e8a52-5f7c-4cf4-9d1e-1f1b5d0f0a11", model, request or chat_request(), fmt)


async def direct_read(fake: FakeBackend, path: str, body: dict) -> bytes:
    """What the fake answers to exactly this body, read straight with httpx."""
    headers = {"Accept-Encoding": "identity"}
    if fake.kind in REMOTE_KINDS:
        headers["Authorization"] = f"Bearer {KEY}"
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        response = await client.post(
            f"http://127.0.0.1:{fake.port}{path}", json=body, headers=headers
        )
    assert response.status_code == 200
    return response.content


# ------------------------------------------------------------------ relay and rewriting


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_openai_stream_relayed_byte_for_byte_with_usage(
    kind: str,
    make_fake: MakeFake,
    make_backend: MakeBackend,
    deterministic: Callable[[FakeBackend], None],
) -> None:
    fake = await make_fake(kind, output_tokens=20)
    deterministic(fake)
    backend = make_backend(fake)
    sink = Sink()
    usage = await backend.execute(job(), sink)

    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", CHAT_PATH[kind])
    assert len(sink.chunks) > 1  # relayed as it came, not as one blob
    assert sink.data == await direct_read(fake, sent.path, sent.json)
    assert fake.expected_text(20).split()[-1].encode() in sink.data
    assert usage.input_tokens == fake.count_prompt_tokens(sent.json) > 0
    assert usage.output_tokens == 20


@pytest.mark.parametrize("kind", ANTHROPIC_KINDS)
async def test_anthropic_job_goes_to_messages_with_usage(
    kind: str,
    make_fake: MakeFake,
    make_backend: MakeBackend,
    deterministic: Callable[[FakeBackend], None],
) -> None:
    fake = await make_fake(kind, output_tokens=7)
    deterministic(fake)
    backend = make_backend(fake)
    sink = Sink()
    request = {"max_tokens": 100, "system": "be brief", "messages": chat_request()["messages"][1:]}
    usage = await backend.execute(job(request, fmt="anthropic"), sink)

    sent = fake.requests[-1]
    assert (sent.method, sent.path) == ("POST", MESSAGES_PATH[kind])
    assert sent.json["model"] == "m1" and sent.json["stream"] is True
    assert "stream_options" not in sent.json  # an OpenAI field; Anthropic servers may refuse it
    assert sink.data == await direct_read(fake, sent.path, sent.json)
    assert b"event: message_start" in sink.data
    assert usage.input_tokens == fake.count_prompt_tokens(sent.json) > 0
    assert usage.output_tokens == 7


async def test_venice_rejects_anthropic_jobs_without_a_request(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("venice")
    backend = make_backend(fake)
    sink = Sink()
    with pytest.raises(BackendError) as info:
        await backend.execute(job({"max_tokens": 10, "messages": []}, fmt="anthropic"), sink)
    assert info.value.code is ErrorCode.INTERNAL
    assert info.value.message.startswith("venice has no Anthropic Messages endpoint")
    assert fake.requests == [] and sink.chunks == []


async def test_request_rewriting_forces_model_stream_and_usage(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("venice", ["llama-3.3-70b"])
    backend = make_backend(fake)
    request = chat_request(
        model="whatever-the-user-asked",
        stream=False,
        stream_options={"include_usage": False, "continuous_usage_stats": True},
        venice_parameters={"include_venice_system_prompt": False, "character_slug": "x"},
        temperature=0.25,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
    )
    original = copy.deepcopy(request)
    await backend.execute(job(request, model="llama-3.3-70b"), Sink())

    sent = fake.requests[-1].json
    assert sent["model"] == "llama-3.3-70b"
    assert sent["stream"] is True
    # BYOK: stream_options is reduced to include_usage (test_byok_requests.py); a local
    # backend keeps the rest (test_local_stream_options_keep_the_other_keys).
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["venice_parameters"] == original["venice_parameters"]
    assert sent["temperature"] == 0.25 and sent["tools"] == original["tools"]
    assert sent["messages"] == original["messages"]
    assert request == original  # the job's own request is not mutated
    assert fake.requests[-1].headers["accept-encoding"] == "identity"


async def test_local_stream_options_keep_the_other_keys(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("vllm")
    options = {"include_usage": False, "continuous_usage_stats": True}
    await make_backend(fake).execute(job(chat_request(stream_options=options)), Sink())
    sent = fake.requests[-1].json
    assert sent["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}


async def test_include_usage_added_when_stream_options_absent(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("llamacpp", output_tokens=3)  # llama.cpp defaults it to false
    usage = await make_backend(fake).execute(job(), Sink())
    assert fake.requests[-1].json["stream_options"] == {"include_usage": True}
    assert usage.output_tokens == 3


async def test_chunks_reach_the_sink_before_the_stream_ends(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    """A stream that stalls after two chunks: those chunks must already be relayed."""
    fake = await make_fake(
        "vllm", fail_mode=FailMode.HANG_MID_STREAM, fail_after_chunks=2, output_tokens=10
    )
    backend = make_backend(fake)
    sink = Sink()
    task = asyncio.create_task(backend.execute(job(), sink))
    await asyncio.wait_for(sink.first.wait(), 10)
    await asyncio.sleep(0)
    assert b"tok1" in sink.data and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# ------------------------------------------------------------------ failure modes


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_refused_is_backend_unreachable(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind)
    backend = make_backend(fake)
    await fake.set_fail_mode(FailMode.REFUSE)
    sink = Sink()
    with pytest.raises(BackendError) as info:
        await backend.execute(job(), sink)
    assert info.value.code is ErrorCode.BACKEND_UNREACHABLE
    assert "connection refused" in info.value.message
    assert sink.chunks == []


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_unknown_model_is_model_not_loaded(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind)
    with pytest.raises(BackendError) as info:
        await make_backend(fake).execute(job(model="not-here"), Sink())
    assert info.value.code is ErrorCode.MODEL_NOT_LOADED


@pytest.mark.parametrize("kind", ANTHROPIC_KINDS)
async def test_unknown_model_on_messages_is_model_not_loaded(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind)
    with pytest.raises(BackendError) as info:
        await make_backend(fake).execute(
            job({"max_tokens": 5, "messages": []}, model="not-here", fmt="anthropic"), Sink()
        )
    assert info.value.code is ErrorCode.MODEL_NOT_LOADED


@pytest.mark.parametrize("kind", REMOTE_KINDS)
async def test_wrong_key_is_auth_rejected_and_never_shown(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind)
    wrong = "sk-wrong-key-abcdefghijkl"
    with pytest.raises(BackendError) as info:
        await make_backend(fake, key=wrong).execute(job(), Sink())
    assert info.value.code is ErrorCode.AUTH_REJECTED_BY_BACKEND
    assert info.value.status == 401
    assert wrong not in info.value.message and KEY not in info.value.message


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_http_500_is_internal_with_status_and_body(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind, fail_mode=FailMode.ERROR_STATUS, error_status=500)
    with pytest.raises(BackendError) as info:
        await make_backend(fake).execute(job(), Sink())
    err = info.value
    assert err.code is ErrorCode.INTERNAL and err.status == 500
    assert f"{kind}: HTTP 500: " in err.message
    assert "\n" not in err.message and len(err.message) <= 300


async def test_openrouter_out_of_credits_is_internal_with_the_reason(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("openrouter", fail_mode=FailMode.ERROR_STATUS, error_status=402)
    with pytest.raises(BackendError) as info:
        await make_backend(fake).execute(job(), Sink())
    assert info.value.code is ErrorCode.INTERNAL
    assert "HTTP 402" in info.value.message and "credits" in info.value.message


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_error_event_mid_stream_after_relaying_the_bytes(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind, fail_mode=FailMode.ERROR_EVENT, fail_after_chunks=3)
    sink = Sink()
    with pytest.raises(BackendError) as info:
        await make_backend(fake).execute(job(), sink)
    assert info.value.code is ErrorCode.INTERNAL
    assert info.value.message.startswith(f"{kind} stream error: ")
    assert b"tok2" in sink.data  # the content before the error was relayed
    assert b'"error"' in sink.data  # and so was the error event itself
    error_line = next(
        line
        for line in sink.data.split(b"\n")
        if line.startswith(b"data: {") and b'"error"' in line
    )
    event = json.loads(error_line[6:])
    message = event["error"]["message"] if isinstance(event["error"], dict) else event["error"]
    assert message in info.value.message


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_connection_dropped_mid_stream_is_internal(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind, fail_mode=FailMode.DIE_MID_STREAM, fail_after_chunks=2)
    sink = Sink()
    with pytest.raises(BackendError) as info:
        await make_backend(fake).execute(job(), sink)
    assert info.value.code is ErrorCode.INTERNAL
    assert "dropped mid-stream" in info.value.message
    assert f"after {len(sink.data)} bytes" in info.value.message
    assert b"tok1" in sink.data


@pytest.mark.parametrize("kind", ["vllm", "ollama", "openrouter"])
async def test_hang_then_deadline_cancels_cleanly(
    kind: str, make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake(kind, fail_mode=FailMode.HANG)
    backend = make_backend(fake)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await backend.execute(job(), Sink())
    assert time.monotonic() - started < 5
    assert backend.inflight == 0  # type: ignore[attr-defined]
    # The adapter is still usable afterwards.
    fake.fail_mode = FailMode.NONE
    usage = await backend.execute(job(), Sink())
    assert usage.output_tokens == fake.output_tokens


async def test_cancellation_closes_the_upstream_connection(make_backend: MakeBackend) -> None:
    """The upstream server must see the connection close when the job is cancelled."""
    server, port, closed = await stalling_upstream(
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
    )
    try:
        fake_like = FakeBackend("vllm")
        fake_like._port = port  # only its URL is used
        backend = make_backend(fake_like)
        sink = Sink()
        task = asyncio.create_task(backend.execute(job(), sink))
        await asyncio.wait_for(sink.first.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 5)
        assert backend.inflight == 0  # type: ignore[attr-defined]
    finally:
        server.close()


async def stalling_upstream(
    first: bytes,
) -> tuple[asyncio.Server, int, asyncio.Event]:
    """A raw HTTP/1.1 server that sends `first` as a chunked SSE body, then stalls until the
    client closes the connection (which sets the returned event)."""
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        while await reader.read(65536):  # until the client closes
            pass
        closed.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1]), closed


async def test_error_event_ends_the_job_at_once_even_if_the_stream_stays_open(
    make_backend: MakeBackend,
) -> None:
    """OpenRouter-style error chunk, then the upstream keeps the connection open: the job must
    end right after relaying the event, not wait for the stream to finish."""
    event = (
        b'data: {"choices":[{"delta":{"content":"partial"}}]}\n\n'
        b'data: {"error":{"code":"server_error","message":"Provider disconnected"},'
        b'"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]}\n\n'
    )
    server, port, closed = await stalling_upstream(event)
    try:
        fake_like = FakeBackend("vllm")
        fake_like._port = port  # only its URL is used
        backend = make_backend(fake_like)
        sink = Sink()
        with pytest.raises(BackendError) as info:
            async with asyncio.timeout(5):
                await backend.execute(job(), sink)
        assert info.value.code is ErrorCode.INTERNAL
        assert "Provider disconnected" in info.value.message
        assert sink.data == event
        await asyncio.wait_for(closed.wait(), 5)  # and the upstream request was closed
    finally:
        server.close()


async def test_sink_failure_propagates_and_closes_the_upstream(
    make_fake: MakeFake, make_backend: MakeBackend
) -> None:
    fake = await make_fake("vllm", output_tokens=50)
    backend = make_backend(fake)

    class Stop(Exception):
        pass

    async def sink(chunk: bytes) -> None:
        raise Stop

    with pytest.raises(Stop):
        await backend.execute(job(), sink)
    assert backend.inflight == 0  # type: ignore[attr-defined]
    assert (await backend.execute(job(), Sink())).output_tokens == 50


async def test_lmstudio_old_build_without_messages_gives_a_clear_error() -> None:
    """LM Studio < 0.4.1 answers /v1/messages with 200 {"error": "Unexpected endpoint..."}."""
    from usepod_desktop.core.backends.lmstudio import LmStudioBackend

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"error": f"Unexpected endpoint or method. (POST {request.url.path})"}
        )

    backend = LmStudioBackend(
        BackendConfig("lmstudio", url="http://lmstudio.test:1234"),
        transport=httpx.MockTransport(handler),
    )
    sink = Sink()
    with pytest.raises(BackendError) as info:
        await backend.execute(job({"max_tokens": 5, "messages": []}, fmt="anthropic"), sink)
    await backend.aclose()
    assert info.value.code is ErrorCode.INTERNAL
    assert "no Anthropic Messages endpoint" in info.value.message
    assert sink.chunks == []
