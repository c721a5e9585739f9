"""Hostile loopback peers shared by the security tests (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

CHUNK = b'{"data":[' + b'{"id":"m","object":"model"},' * 2000  # ~56 KiB of a model list


@dataclass
class Endless:
    """Counts what an endless-body server sent before the client hung up."""

    bytes_sent: int = 0
    chunks_sent: int = 0
    #: Stop after this many bytes anyway, so old (unbounded) code fails instead of hanging.
    give_up_after: int = 96 * 1024 * 1024


async def endless_body(request: web.Request, counter: Endless) -> web.StreamResponse:
    """A 200 JSON answer that never ends (chunked, written as fast as the client reads)."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)
    try:
        while counter.bytes_sent < counter.give_up_after:
            await response.write(CHUNK)
            counter.bytes_sent += len(CHUNK)
            counter.chunks_sent += 1
    except (ConnectionError, asyncio.CancelledError):
        pass
    return response


@asynccontextmanager
async def http_server(
    routes: dict[tuple[str, str], Callable[[web.Request], Awaitable[web.StreamResponse]]],
) -> AsyncIterator[str]:
    """An aiohttp server on 127.0.0.1 with `routes` ((method, path) -> handler); yields its
    base URL."""
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def peak_memory(call: Awaitable[Any]) -> tuple[Any, BaseException | None, int]:
    """Run `call` under tracemalloc: (result, exception or None, peak bytes allocated)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    result: Any = None
    error: BaseException | None = None
    try:
        result = await call
    except Exception as exc:  # the caller asserts on it
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return result, error, peak
