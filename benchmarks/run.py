"""The performance harness: `python benchmarks/run.py [--quick] [--only NAME ...]`.

Everything runs on 127.0.0.1, each part in its own process, as in production:

- a fake vLLM backend (`python -m usepod_desktop.sandbox.fakes`), unpaced: the physical limit;
- the agent (`usepod-desktop run`, or the GUI app for the GUI figures);
- the sandbox coordinator, in this process, which dispatches jobs and timestamps what comes back.

Results go to `benchmarks/results/latest.json` and are printed as a Markdown table; the method
and the figures of the last run on record are in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from usepod_desktop.core.config import (  # noqa: E402
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.core.protocol import JobDone  # noqa: E402
from usepod_desktop.sandbox.coordinator import JobHandle, SandboxCoordinator  # noqa: E402

MODEL = "bench-model"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def wait_http(url: str, timeout: float = 20.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            try:
                await client.get(url, timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


class Rig:
    """Fake backend + agent processes around a coordinator in this process."""

    def __init__(
        self,
        tmp: Path,
        *,
        output_tokens: int,
        max_concurrent: int = 256,
        gui: bool = False,
        tokens_per_second: float | None = None,
        loop: str | None = None,
    ) -> None:
        self.tmp = tmp
        self.loop = loop  # `run --loop`; None: the agent's default
        self.tokens_per_second = tokens_per_second
        self.output_tokens = output_tokens
        self.max_concurrent = max_concurrent
        self.gui = gui
        self.coord = SandboxCoordinator(ws_heartbeat=None)
        self.backend_proc: subprocess.Popen[bytes] | None = None
        self.agent_proc: subprocess.Popen[bytes] | None = None
        self.backend_url = ""
        self.spawned_at = 0.0

    async def start_backend(self) -> None:
        port = free_port()
        self.backend_proc = subprocess.Popen(  # noqa: ASYNC220 (spawn is instant)
            [
                PY,
                "-m",
                "usepod_desktop.sandbox.fakes",
                "vllm",
                "--port",
                str(port),
                "--model",
                MODEL,
                "--output-tokens",
                str(self.output_tokens),
                *(["--tps", str(self.tokens_per_second)] if self.tokens_per_second else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.backend_url = f"http://127.0.0.1:{port}"
        await wait_http(f"{self.backend_url}/health")

    async def start_agent(self, extra_env: dict[str, str] | None = None) -> float:
        """Spawn the agent; returns seconds from spawn to authenticated (capabilities seen)."""
        url = await self.coord.start()
        config = Config(
            coordinator=CoordinatorConfig(url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=self.backend_url),),
            identity_key_path=str(self.tmp / "identity.key"),
            limits=LimitsConfig(max_concurrent=self.max_concurrent),
        )
        cfg_path = self.tmp / "agent.toml"
        save_config(config, cfg_path)
        env = {
            **os.environ,
            "HOME": str(self.tmp),
            "USEPOD_CONFIG_DIR": str(self.tmp),
            "USEPOD_DATA_DIR": str(self.tmp / "data"),
            "USEPOD_LOG_DIR": str(self.tmp / "log"),
            **(extra_env or {}),
        }
        args = [
            PY,
            "-m",
            "usepod_desktop",
            "--allow-insecure",
            "--config",
            str(cfg_path),
            "--log-level",
            "warning",
        ]
        if not self.gui:
            args.append("run")
            if self.loop is not None:
                args += ["--loop", self.loop]
        self.spawned_at = time.perf_counter()
        log = (self.tmp / "agent.stderr").open("wb")
        self.agent_proc = subprocess.Popen(  # noqa: ASYNC220 (spawn is instant)
            args, env=env, stdout=subprocess.DEVNULL, stderr=log
        )
        await self.coord.wait_for_capabilities(60)
        return time.perf_counter() - self.spawned_at

    @property
    def agent(self) -> psutil.Process:
        assert self.agent_proc is not None
        return psutil.Process(self.agent_proc.pid)

    def agent_cpu(self) -> float:
        t = self.agent.cpu_times()
        return t.user + t.system

    async def stop(self) -> None:
        for proc in (self.agent_proc, self.backend_proc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        await self.coord.stop()


@asynccontextmanager
async def rig(**kwargs: Any):  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory(prefix="usepod-bench-") as tmp:
        r = Rig(Path(tmp), **kwargs)
        try:
            await r.start_backend()
            yield r
        finally:
            await r.stop()


def chat(max_tokens: int) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "benchmark prompt words"}],
        "max_tokens": max_tokens,
    }


async def run_job(r: Rig, max_tokens: int) -> JobHandle:
    handle = await r.coord.dispatch(MODEL, chat(max_tokens))
    await handle.wait(120)
    r.coord.forget(handle.job_id)
    return handle


# ------------------------------------------------------------------ relay overhead


async def bench_overhead(n: int) -> dict[str, Any]:
    tokens = 20
    async with rig(output_tokens=tokens) as r:
        await r.start_agent()
        direct_ttfb: list[float] = []
        direct_total: list[float] = []
        relay_ttfb: list[float] = []
        relay_total: list[float] = []
        body = {
            **chat(tokens),
            "model": MODEL,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with httpx.AsyncClient(base_url=r.backend_url, timeout=30) as client:
            for _ in range(20):  # warm up both paths
                await run_job(r, tokens)
                async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    async for _ in resp.aiter_raw():
                        pass
            for _ in range(n):
                t0 = time.perf_counter()
                first = None
                async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    async for _ in resp.aiter_raw():
                        if first is None:
                            first = time.perf_counter()
                end = time.perf_counter()
                direct_ttfb.append((first or end) - t0)
                direct_total.append(end - t0)
                handle = await run_job(r, tokens)
                assert isinstance(handle.terminal, JobDone), handle.terminal
                assert handle.first_chunk_at is not None and handle.terminal_at is not None
                relay_ttfb.append(handle.first_chunk_at - handle.dispatched_at)
                relay_total.append(handle.terminal_at - handle.dispatched_at)
    ms = 1000.0
    return {
        "jobs": n,
        "output_tokens": tokens,
        "direct_ttfb_p50_ms": statistics.median(direct_ttfb) * ms,
        "direct_ttfb_p99_ms": pct(direct_ttfb, 99) * ms,
        "relay_ttfb_p50_ms": statistics.median(relay_ttfb) * ms,
        "relay_ttfb_p99_ms": pct(relay_ttfb, 99) * ms,
        "added_ttfb_p50_ms": (statistics.median(relay_ttfb) - statistics.median(direct_ttfb)) * ms,
        "added_ttfb_p99_ms": (pct(relay_ttfb, 99) - pct(direct_ttfb, 99)) * ms,
        "direct_total_p50_ms": statistics.median(direct_total) * ms,
        "relay_total_p50_ms": statistics.median(relay_total) * ms,
        "added_total_p50_ms": (statistics.median(relay_total) - statistics.median(direct_total))
        * ms,
    }


# ------------------------------------------------------------------ throughput


async def bench_throughput(concurrency: int, seconds: float, tokens: int) -> dict[str, Any]:
    async with rig(output_tokens=tokens, max_concurrent=max(concurrency, 1)) as r:
        await r.start_agent()
        for _ in range(5):
            await run_job(r, tokens)
        frames = 0
        payload = 0
        jobs = 0
        errors: dict[str, int] = {}
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal frames, payload, jobs
            while time.perf_counter() < stop_at:
                handle = await run_job(r, tokens)
                jobs += 1
                frames += len(handle.chunks)
                payload += handle.bytes_received
                if not isinstance(handle.terminal, JobDone):
                    code = getattr(handle.terminal, "error_code", str(handle.lost))
                    errors[code] = errors.get(code, 0) + 1

        cpu0, t0 = r.agent_cpu(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        cpu = r.agent_cpu() - cpu0
    return {
        "concurrency": concurrency,
        "jobs": jobs,
        "errors": errors,
        "tokens_per_job": tokens,
        "chunk_frames": frames,
        "upstream_events": jobs * (tokens + 3),
        "frames_per_s": frames / wall,
        "upstream_events_per_s": jobs * (tokens + 3) / wall,
        "mb_per_s": payload / wall / 1e6,
        "agent_cpu_share": cpu / wall,
        "agent_cpu_s_per_10k_frames": cpu / max(frames, 1) * 10_000,
    }


# ------------------------------------------------------------------ CPU cost ratio


async def bench_cpu_ratio(
    concurrency: int, seconds: float, rounds: int, loop: str | None = None
) -> dict[str, Any]:
    """Agent CPU per relayed upstream event / a plain httpx reader's CPU per event read.

    Same fake backend, same 200-token streams, same run: windows alternate agent, reader,
    agent, reader... CPU is process time (user + system, all threads), so the figure holds on
    a loaded machine where wall-clock throughput does not. Normalised per upstream SSE event
    (jobs x events per stream), so coalescing several events into one frame is neither
    rewarded nor punished; CPU per chunk frame is reported beside it."""
    tokens = 200
    events_per_job = tokens + 3  # role chunk, tokens, finish chunk, usage chunk ([DONE] rides)
    agent_runs: list[dict[str, float]] = []
    reader_runs: list[dict[str, float]] = []
    async with rig(output_tokens=tokens, max_concurrent=max(concurrency, 1), loop=loop) as r:
        await r.start_agent()
        for _ in range(5):
            await run_job(r, tokens)
        for _ in range(rounds):
            frames = jobs = 0
            stop_at = time.perf_counter() + seconds

            async def worker(stop_at: float) -> None:
                nonlocal frames, jobs
                while time.perf_counter() < stop_at:
                    handle = await run_job(r, tokens)
                    assert isinstance(handle.terminal, JobDone), handle.terminal
                    jobs += 1
                    frames += len(handle.chunks)

            cpu0, t0 = r.agent_cpu(), time.perf_counter()
            await asyncio.gather(*(worker(stop_at) for _ in range(concurrency)))
            wall = time.perf_counter() - t0
            cpu = r.agent_cpu() - cpu0
            agent_runs.append({"jobs": jobs, "frames": frames, "cpu_s": cpu, "wall_s": wall})
            proc = await asyncio.create_subprocess_exec(
                PY,
                str(ROOT / "benchmarks" / "plain_reader.py"),
                r.backend_url,
                str(concurrency),
                str(seconds),
                str(tokens),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            reader_runs.append(json.loads(out))
    ratios = []
    for a, b in zip(agent_runs, reader_runs, strict=True):
        agent_per_event = a["cpu_s"] / max(a["jobs"] * events_per_job, 1)
        reader_per_event = b["cpu_s"] / max(b["jobs"] * events_per_job, 1)
        ratios.append(agent_per_event / reader_per_event)
    a_cpu = sum(a["cpu_s"] for a in agent_runs)
    a_jobs = sum(a["jobs"] for a in agent_runs)
    a_frames = sum(a["frames"] for a in agent_runs)
    b_cpu = sum(b["cpu_s"] for b in reader_runs)
    b_jobs = sum(b["jobs"] for b in reader_runs)
    b_chunks = sum(b["chunks"] for b in reader_runs)
    return {
        "concurrency": concurrency,
        "loop": loop or "default",
        "cost_ratio": statistics.median(ratios),
        "cost_ratio_per_round": ratios,
        "agent_cpu_s_per_10k_events": a_cpu / max(a_jobs * events_per_job, 1) * 10_000,
        "reader_cpu_s_per_10k_events": b_cpu / max(b_jobs * events_per_job, 1) * 10_000,
        "agent_cpu_s_per_10k_frames": a_cpu / max(a_frames, 1) * 10_000,
        "reader_cpu_s_per_10k_chunks": b_cpu / max(b_chunks, 1) * 10_000,
        "agent_frames_per_job": a_frames / max(a_jobs, 1),
        "reader_chunks_per_job": b_chunks / max(b_jobs, 1),
        "agent_events_per_s": a_jobs
        * events_per_job
        / max(sum(a["wall_s"] for a in agent_runs), 1e-9),
        "agent_jobs": a_jobs,
        "reader_jobs": b_jobs,
    }


# ------------------------------------------------------------------ first byte, other parties


class WsCoordinator:
    """A minimal coordinator on the `websockets` library (not the sandbox's aiohttp one).

    It does the handshake without checking the signature (the benchmark's agent is trusted),
    then the benchmark dispatches one job at a time and reads the answers itself. Timestamps
    are `time.monotonic_ns()` (CLOCK_MONOTONIC), comparable with the backend's."""

    def __init__(self) -> None:
        self.url = ""
        self.conn: Any = None
        self._ready: asyncio.Future[Any] | None = None
        self._done = asyncio.Event()
        self._server: Any = None

    async def start(self) -> str:
        from websockets.asyncio.server import serve

        from usepod_desktop.core import protocol

        self._ready = asyncio.get_running_loop().create_future()

        async def handler(conn: Any) -> None:
            await conn.send(protocol.auth_challenge(os.urandom(32)))
            await conn.recv()  # auth_response
            await conn.send(protocol.auth_ok("bench-provider"))
            while True:
                raw = await conn.recv()
                if json.loads(raw).get("type") == "capabilities":
                    break
            assert self._ready is not None
            if not self._ready.done():
                self._ready.set_result(conn)
            await self._done.wait()

        self._server = await serve(
            handler, "127.0.0.1", 0, compression=None, max_size=16 * 2**20, ping_interval=None
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/provider/connect"
        return self.url

    async def wait_for_capabilities(self, timeout: float) -> None:  # noqa: ASYNC109
        assert self._ready is not None
        self.conn = await asyncio.wait_for(self._ready, timeout)

    async def run_job(self, body: dict[str, Any]) -> tuple[int, int, bytes]:
        """Dispatch one job; returns (send ns, first job_chunk ns, first chunk's bytes)."""
        import base64
        import uuid

        from usepod_desktop.core import protocol

        job_id = str(uuid.uuid4())
        frame = protocol.job(job_id, MODEL, body)
        t_send = time.monotonic_ns()
        await self.conn.send(frame)
        t_first = 0
        first = b""
        while True:
            raw = await self.conn.recv()
            t = time.monotonic_ns()
            obj = json.loads(raw)
            if obj.get("job_id") != job_id:
                continue
            kind = obj.get("type")
            if kind == "job_chunk" and not t_first:
                t_first, first = t, base64.b64decode(obj["data"])
            elif kind == "job_done":
                return t_send, t_first, first
            elif kind == "job_error":
                raise RuntimeError(f"job_error: {obj}")

    async def stop(self) -> None:
        self._done.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _recv_ns(first: bytes) -> int | None:
    marker = first.find(b'"x_recv_ns":')
    if marker < 0:
        return None
    end = first.find(b",", marker)
    return int(first[marker + 12 : end])


async def bench_first_byte_ws(n: int, backend: str, agent_env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Added first byte with a `websockets` coordinator, against `backend`: "stdlib" (the
    stdlib's ThreadingHTTPServer, benchmarks/stdlib_backend.py, with the split) or "stdlib-ka"
    (the same, HTTP/1.1 keep-alive) or "aiohttp" (the sandbox's fake vLLM)."""
    tokens = 20
    with tempfile.TemporaryDirectory(prefix="usepod-bench-") as tmp:
        r = Rig(Path(tmp), output_tokens=tokens)
        coord = WsCoordinator()
        r.coord = coord  # type: ignore[assignment]
        if backend == "aiohttp":
            await r.start_backend()
        else:
            port = free_port()
            r.backend_proc = subprocess.Popen(  # noqa: ASYNC220
                [
                    PY,
                    str(ROOT / "benchmarks" / "stdlib_backend.py"),
                    str(port),
                    str(tokens),
                    *(["--keep-alive"] if backend == "stdlib-ka" else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            r.backend_url = f"http://127.0.0.1:{port}"
            await wait_http(f"{r.backend_url}/health")
        try:
            await r.start_agent(agent_env)
            body = {**chat(tokens)}
            direct_body = {
                **chat(tokens),
                "model": MODEL,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            direct: list[float] = []
            relay: list[float] = []
            to_backend: list[float] = []
            backend_to_first: list[float] = []
            direct_to_backend: list[float] = []
            limits = httpx.Limits(max_keepalive_connections=8)
            async with httpx.AsyncClient(base_url=r.backend_url, timeout=30, limits=limits) as c:

                async def direct_once() -> tuple[int, int, bytes]:
                    t0 = time.monotonic_ns()
                    t1 = 0
                    first = b""
                    async with c.stream("POST", "/v1/chat/completions", json=direct_body) as resp:
                        async for chunk in resp.aiter_raw():
                            if not t1:
                                t1, first = time.monotonic_ns(), chunk
                    return t0, t1, first

                for _ in range(20):
                    await direct_once()
                    await coord.run_job(body)
                for _ in range(n):
                    t0, t1, first = await direct_once()
                    direct.append((t1 - t0) / 1e6)
                    recv = _recv_ns(first)
                    if recv is not None:
                        direct_to_backend.append((recv - t0) / 1e6)
                    t0, t1, first = await coord.run_job(body)
                    relay.append((t1 - t0) / 1e6)
                    recv = _recv_ns(first)
                    if recv is not None:
                        to_backend.append((recv - t0) / 1e6)
                        backend_to_first.append((t1 - recv) / 1e6)
        finally:
            await r.stop()
    med = statistics.median
    out: dict[str, Any] = {
        "coordinator": "websockets",
        "backend": backend,
        "jobs": n,
        "direct_ttfb_p50_ms": med(direct),
        "direct_ttfb_p99_ms": pct(direct, 99),
        "relay_ttfb_p50_ms": med(relay),
        "relay_ttfb_p99_ms": pct(relay, 99),
        "added_ttfb_p50_ms": med(relay) - med(direct),
        "added_ttfb_p99_ms": pct(relay, 99) - pct(direct, 99),
    }
    if to_backend:
        out |= {
            "relay_send_to_backend_p50_ms": med(to_backend),
            "relay_backend_to_first_chunk_p50_ms": med(backend_to_first),
            "direct_send_to_backend_p50_ms": med(direct_to_backend),
            "direct_backend_to_first_byte_p50_ms": med(direct) - med(direct_to_backend),
        }
    return out


# ------------------------------------------------------------------ memory, idle, start-up


async def bench_headless_memory(
    jobs: int, idle_s: float, warmup: int | None = None
) -> dict[str, Any]:
    async with rig(output_tokens=16, max_concurrent=64) as r:
        startup = await r.start_agent()
        await asyncio.sleep(2)
        idle_rss = r.agent.memory_info().rss
        cpu0, t0 = r.agent_cpu(), time.perf_counter()
        await asyncio.sleep(idle_s)
        idle_cpu = (r.agent_cpu() - cpu0) / (time.perf_counter() - t0)

        async def batch(n: int) -> None:
            sem = asyncio.Semaphore(32)

            async def one() -> None:
                async with sem:
                    await run_job(r, 16)

            await asyncio.gather(*(one() for _ in range(n)))

        # Warm-up: long enough to fill what is bounded by design (the 60 s stats window, the
        # SQLite page cache of the ledger, connection pools), then two equal runs.
        warmup_jobs = max(3000, jobs // 3) if warmup is None else warmup
        await batch(warmup_jobs)
        await asyncio.sleep(1)
        warm_rss = r.agent.memory_info().rss
        await batch(jobs)
        await asyncio.sleep(1)
        after_rss = r.agent.memory_info().rss
        await batch(jobs)
        await asyncio.sleep(1)
        after2_rss = r.agent.memory_info().rss
    return {
        "startup_to_authenticated_s": startup,
        "idle_rss_mb": idle_rss / 2**20,
        "idle_cpu_percent_of_core": idle_cpu * 100,
        "idle_window_s": idle_s,
        "warmup_jobs": warmup_jobs,
        "rss_after_warmup_mb": warm_rss / 2**20,
        "rss_after_jobs_mb": after_rss / 2**20,
        "jobs": jobs,
        "rss_growth_percent": (after_rss - warm_rss) / warm_rss * 100,
        "rss_after_2x_jobs_mb": after2_rss / 2**20,
        "rss_growth_second_run_percent": (after2_rss - after_rss) / after_rss * 100,
    }


async def bench_gui(lag_seconds: float, tokens_per_second: float | None) -> dict[str, Any]:
    """GUI figures: idle RSS, start-up to tray shown, and event-loop lag while 64 jobs stream.

    The GUI process runs `benchmarks/gui_probe.py`, which starts the real tray app offscreen
    and reports the lag of a 10 ms QTimer on stdout. `tokens_per_second` paces each stream
    (None: as fast as the fake backend can write, which saturates the agent's core)."""
    tokens = 200 if tokens_per_second is None else int(tokens_per_second * 2)
    async with rig(
        output_tokens=tokens, max_concurrent=64, tokens_per_second=tokens_per_second
    ) as r:
        url = await r.coord.start()
        config = Config(
            coordinator=CoordinatorConfig(url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=r.backend_url),),
            identity_key_path=str(r.tmp / "identity.key"),
            limits=LimitsConfig(64),
        )
        save_config(config, r.tmp / "agent.toml")
        env = {
            **os.environ,
            "HOME": str(r.tmp),
            "USEPOD_DATA_DIR": str(r.tmp / "data"),
            "USEPOD_LOG_DIR": str(r.tmp / "log"),
            "QT_QPA_PLATFORM": "offscreen",
        }
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            PY,
            str(ROOT / "benchmarks" / "gui_probe.py"),
            str(r.tmp / "agent.toml"),
            str(lag_seconds),
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        shown_line = await asyncio.wait_for(proc.stdout.readline(), 60)
        shown = json.loads(shown_line)
        await r.coord.wait_for_capabilities(60)
        authenticated = time.perf_counter() - t0
        await asyncio.sleep(2)
        idle_rss = psutil.Process(proc.pid).memory_info().rss
        stop_at = time.perf_counter() + lag_seconds + 2

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                await run_job(r, tokens)

        ready = json.loads(await proc.stdout.readline())  # probe starts measuring
        workers = asyncio.gather(*(worker() for _ in range(64)))
        result = json.loads(await asyncio.wait_for(proc.stdout.readline(), lag_seconds + 60))
        await workers
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    return {
        "tokens_per_second_per_job": tokens_per_second or "unpaced",
        "startup_to_tray_shown_s": shown["tray_shown_s"],
        "startup_to_authenticated_s": authenticated,
        "idle_rss_mb": idle_rss / 2**20,
        "lag_ticks": result["ticks"],
        "lag_p50_ms": result["p50_ms"],
        "lag_p99_ms": result["p99_ms"],
        "lag_max_ms": result["max_ms"],
        "jobs_streamed_during_window": result.get("jobs_finished"),
        "probe_ready": ready,
    }


# ------------------------------------------------------------------ main


BENCHES: dict[str, Callable[[argparse.Namespace], Awaitable[Any]]] = {
    "overhead": lambda a: bench_overhead(100 if a.quick else 500),
    "throughput": lambda a: _throughput_all(a),
    "memory": lambda a: bench_headless_memory(
        2000 if a.quick else 10_000, 10 if a.quick else 60, a.warmup
    ),
    "gui": lambda a: _gui_both(a),
    "ratio": lambda a: _ratio_all(a),
    "firstbyte": lambda a: _first_byte_all(a),
}


async def _ratio_all(a: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for loop in a.loops:
        for c in a.concurrency or (1, 16, 64, 256):
            out.append(await bench_cpu_ratio(c, 2 if a.quick else 5, 1 if a.quick else 3, loop))
            print(json.dumps(out[-1]), flush=True)
    return out


async def _first_byte_all(a: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for backend in ("stdlib", "stdlib-ka", "aiohttp"):
        out.append(await bench_first_byte_ws(100 if a.quick else 500, backend))
        print(json.dumps(out[-1]), flush=True)
    return out


async def _gui_both(a: argparse.Namespace) -> dict[str, Any]:
    seconds = 5 if a.quick else 15
    return {
        "paced_50_tps": await bench_gui(seconds, 50.0),
        "unpaced": await bench_gui(seconds, None),
    }


async def _throughput_all(a: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for c in a.concurrency or (1, 16, 64, 256):
        out.append(await bench_throughput(c, 3 if a.quick else 10, 200))
        print(json.dumps(out[-1]), flush=True)
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, for a smoke check")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run these only")
    parser.add_argument(
        "--loops",
        nargs="*",
        default=[None],
        metavar="LOOP",
        help="ratio: the agent's `run --loop` values to measure (default: its default)",
    )
    parser.add_argument(
        "--concurrency",
        nargs="*",
        type=int,
        default=None,
        metavar="JOBS",
        help="ratio, throughput: the concurrent job counts to measure (default: 1 16 64 256)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        metavar="JOBS",
        help="memory: jobs run before the RSS baseline (default: max(3000, jobs / 3))",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
    }
    for name in args.only or list(BENCHES):
        print(f"== {name}", flush=True)
        results[name] = await BENCHES[name](args)
        print(json.dumps(results[name], indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
