"""The yardstick of the CPU cost ratio: a plain httpx client merely reading SSE streams.

`python benchmarks/plain_reader.py URL CONCURRENCY SECONDS TOKENS` runs CONCURRENCY workers, each
streaming chat completions back to back from URL for SECONDS, and prints one JSON line: jobs,
chunks read, and this process's CPU seconds (user + system, all threads) over the window.
The requests are the ones the agent sends for a benchmark job (same body, same backend)."""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

import httpx


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main() -> None:
    url, concurrency, seconds, tokens = (
        sys.argv[1],
        int(sys.argv[2]),
        float(sys.argv[3]),
        int(sys.argv[4]),
    )
    body = {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "benchmark prompt words"}],
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    jobs = chunks = 0
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one() -> int:
            n = 0
            async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                async for _ in resp.aiter_bytes():
                    n += 1
            return n

        for _ in range(5):
            await one()
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal jobs, chunks
            while time.perf_counter() < stop_at:
                n = await one()  # not `chunks += await ...`: that loses concurrent updates
                chunks += n
                jobs += 1

        c0, t0 = cpu(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        used = cpu() - c0
    print(json.dumps({"jobs": jobs, "chunks": chunks, "cpu_s": used, "wall_s": wall}))


if __name__ == "__main__":
    asyncio.run(main())
