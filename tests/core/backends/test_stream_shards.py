"""Streaming requests spread over httpx clients of at most STREAM_SHARD_SIZE running requests
(httpcore's pool walks all its connections on every request start and end)."""

from __future__ import annotations

import asyncio

from tests.core.backends.conftest import MakeBackend, Sink, chat_request
from usepod_desktop.core.backends import http as backend_http
from usepod_desktop.core.backends.base import JobRequest
from usepod_desktop.sandbox.fakes import FakeBackend


def job(i: int) -> JobRequest:
    return JobRequest(f"0b7e8a52-5f7c-4cf4-9d1e-{i:012d}", "m1", chat_request(), "openai")


async def test_streams_beyond_two_full_clients_use_a_third(
    make_backend: MakeBackend,
) -> None:
    size = backend_http.STREAM_SHARD_SIZE
    n = 2 * size + size // 2 + 1
    async with FakeBackend("vllm", ["m1"], output_tokens=5, tokens_per_second=50) as fake:
        backend = make_backend(fake)
        seen: list[list[int]] = []

        class Snapshot(Sink):
            async def __call__(self, chunk: bytes) -> None:
                # all n executes took their client before their first await (the connect)
                seen.append(list(backend._shard_running))  # type: ignore[attr-defined]
                await super().__call__(chunk)

        sinks = [Snapshot() for _ in range(n)]
        usages = await asyncio.gather(
            *(backend.execute(job(i), sinks[i]) for i in range(n))  # type: ignore[attr-defined]
        )
        assert seen[0] == [size, size, n - 2 * size]
        assert all(u.output_tokens == 5 for u in usages)
        assert all(b"[DONE]" in b"".join(s.chunks) for s in sinks)
        assert backend._shard_running == [0, 0, 0]  # type: ignore[attr-defined]
        clients = list(backend._shards)  # type: ignore[attr-defined]
        assert len(clients) == 3 and clients[0] is backend._client  # type: ignore[attr-defined]
        # one TLS context for all of them (httpx would load the CA bundle again per client)
        contexts = {id(c._transport._pool._ssl_context) for c in clients}  # type: ignore[attr-defined]
        assert len(contexts) == 1

        # a second wave reuses the clients (and their kept-alive connections)
        await asyncio.gather(
            *(backend.execute(job(i), Sink()) for i in range(n))  # type: ignore[attr-defined]
        )
        assert list(backend._shards) == clients  # type: ignore[attr-defined]

        await backend.aclose()  # type: ignore[attr-defined]
        assert all(c.is_closed for c in clients)
