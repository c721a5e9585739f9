"""One bad number must not stop the ledger (issue 12, item 4).

A backend reporting `prompt_tokens = 2**64-1` (a C++ server's wrapped -1) or a 401-digit
count, and a price of 10**30, used to make the ledger write fail and the bad row be retried
with every later batch (nothing more recorded until a restart), or raise inside the executor
after the terminal frame (`Task exception was never retrieved`), leaving
`usepod_jobs_in_flight` at 1. The hostile backend is a raw HTTP server on 127.0.0.1 written
here; everything else is real (the vLLM adapter, the executor, the SQLite ledger, the
Prometheus gauge)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_executor import Route
from usepod_desktop.core import protocol
from usepod_desktop.core.backends import build_backend, sse
from usepod_desktop.core.backends.base import Usage
from usepod_desktop.core.config import BackendConfig, ConfigError, parse_config
from usepod_desktop.core.events import JobFinished, JobStarted
from usepod_desktop.core.executor import Executor, JobOutcome
from usepod_desktop.core.ledger import INT64_MAX, MAX_TOKENS, JobRow, Ledger
from usepod_desktop.core.metrics import AgentMetrics
from usepod_desktop.core.money import MAX_MICRO
from usepod_desktop.core.secrets import SecretStore

HUGE_COUNTS: list[int] = [2**64 - 1, 10**400]


class HostileUsageServer:
    """An OpenAI-compatible SSE endpoint whose n-th answer reports `counts[n]` as both token
    counts (then 7 and 3 once the list is used up)."""

    def __init__(self, counts: list[int]) -> None:
        self.counts = list(counts)
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        self.bodies.append(await reader.readexactly(length))
        if self.counts:
            n = self.counts.pop(0)
            prompt, completion = n, n
        else:
            prompt, completion = 7, 3
        # json.dumps of a 401-digit int is exact JSON: the number a hostile server can send
        usage = f'{{"prompt_tokens":{prompt},"completion_tokens":{completion}}}'
        events = [
            b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
            f'data: {{"choices":[],"usage":{usage}}}\n\n'.encode(),
            b"data: [DONE]\n\n",
        ]
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            + b"".join(events)
        )
        await writer.drain()
        writer.close()


class Wire:
    def __init__(self) -> None:
        self.frames: list[protocol.OutboundFrame] = []

    async def __call__(self, text: str) -> None:
        self.frames.append(protocol.parse_outbound(text))

    def terminal(self, job_id: str) -> list[protocol.OutboundFrame]:
        return [
            f
            for f in self.frames
            if isinstance(f, protocol.JobDone | protocol.JobError) and f.job_id == job_id
        ]


def in_flight(metrics: AgentMetrics) -> float:
    value = metrics.registry.get_sample_value("usepod_jobs_in_flight")
    assert value is not None
    return value


@pytest.mark.parametrize("price", [500_000, 10**30])
async def test_absurd_token_counts_never_stop_the_ledger_nor_leave_a_job_in_flight(
    tmp_path: Path, price: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING)
    monkeypatch.setattr(sse, "_clamp_logged", False)
    upstream = HostileUsageServer(HUGE_COUNTS)
    url = await upstream.start()
    backend = build_backend(BackendConfig("vllm", url=url), SecretStore(environ={}))
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    metrics = AgentMetrics()
    executor = Executor()
    executor.set_routes([Route("m", backend, input_per_1m=price)])  # type: ignore[list-item]
    executor.on_start.append(
        lambda job, name: metrics.on_job_started(JobStarted(job.job_id, "m", name))
    )
    executor.on_outcome.append(lambda o: metrics.on_job_finished(JobFinished(o)))
    executor.on_outcome.append(ledger.submit)
    outcomes: list[JobOutcome] = []
    executor.on_outcome.append(outcomes.append)
    wire = Wire()
    jobs = [
        protocol.Job(str(uuid.uuid4()), "m", {"messages": []}, "openai", 30_000) for _ in range(5)
    ]
    try:
        for job in jobs:  # one at a time: the hostile answers are the first two
            task = executor.submit(job, wire)
            assert task is not None
            await task
            assert in_flight(metrics) == 0
        assert await asyncio.to_thread(ledger.flush, 10)
        rows = list(ledger.rows())
    finally:
        await backend.aclose()
        await upstream.stop()
        await asyncio.to_thread(ledger.close)

    for job in jobs:
        assert len(wire.terminal(job.job_id)) == 1
    assert all(o.ok for o in outcomes) and len(outcomes) == 5
    assert [(o.input_tokens, o.output_tokens) for o in outcomes[:2]] == [(MAX_TOKENS,) * 2] * 2
    assert len(rows) == 5  # both bad rows recorded (clamped), and every row after them
    assert {r.job_id for r in rows} == {j.job_id for j in jobs}
    by_id = {r.job_id: r for r in rows}
    assert by_id[jobs[0].job_id].input_tokens == MAX_TOKENS
    assert by_id[jobs[4].job_id].input_tokens == 7
    assert all(0 <= r.gross_nusd <= INT64_MAX for r in rows)
    assert ledger.problem is None
    done = [f for f in wire.frames if isinstance(f, protocol.JobDone)]
    assert done[0].input_tokens == MAX_TOKENS
    assert "token count of about 2**64; counts above 2147483647 are clamped" in caplog.text


def _row(job_id: str, input_tokens: int = 100) -> JobRow:
    now = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    base = JobRow.from_outcome(
        JobOutcome(
            job_id=job_id,
            model_id="m",
            backend="vllm",
            format="openai",
            started_at=now - timedelta(seconds=1),
            ended_at=now,
            ttfb_ms=10.0,
            duration_ms=1000,
            input_tokens=100,
            output_tokens=50,
            bytes_relayed=10,
            input_per_1m=400_000,
            output_per_1m=1_000_000,
        )
    )
    return replace(base, input_tokens=input_tokens)


def test_a_row_the_database_refuses_is_dropped_and_the_rest_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row built around the clamps (an import, a future bug) that SQLite cannot store does
    not block the batch it is in, nor any later batch."""
    db = tmp_path / "ledger.sqlite3"
    with Ledger(db) as ledger:
        bad = _row("bad", input_tokens=2**64 - 1)  # OverflowError inside executemany
        assert ledger.record_many([_row("a"), bad, _row("b")]) is True
        assert ledger.record(_row("c")) is True
        for i in range(100):
            ledger.submit(_row(f"later-{i}"))
        assert ledger.flush(10)
        assert ledger.count() == 103
        assert ledger.unsaved == 0 and ledger.dropped_rows == 1 and ledger.problem is None
    assert "job bad not recorded" in caplog.text
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs WHERE job_id = 'bad'").fetchone() == (0,)


def test_database_failure_still_keeps_rows_for_a_retry(tmp_path: Path) -> None:
    """The per-row fallback is for rows, not for a broken file: rows wait in memory."""
    db = tmp_path / "ledger.sqlite3"
    with Ledger(db, busy_timeout_ms=50) as ledger:
        assert ledger.record(_row("first"))
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            assert ledger.record(_row("waits")) is False
            assert ledger.unsaved == 1 and ledger.dropped_rows == 0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert ledger.record(_row("next"))
        assert ledger.count() == 3


@pytest.mark.parametrize("value", [MAX_MICRO + 1, 10**30, 10**400])
@pytest.mark.parametrize(
    "key", ["default_input_per_1m", "default_output_per_1m", 'models."a/b".input_per_1m']
)
def test_absurd_prices_are_refused_with_the_field(key: str, value: int) -> None:
    prices = {"default_input_per_1m": 1, "default_output_per_1m": 1}
    model = {"input_per_1m": 1, "output_per_1m": 1}
    if key.startswith("models"):
        model["input_per_1m"] = value
    else:
        prices[key] = value
    text = (
        '[coordinator]\nurl = "wss://x"\n[pricing]\n'
        + "".join(f"{k} = {v}\n" for k, v in prices.items())
        + '[pricing.models."a/b"]\n'
        + "".join(f"{k} = {v}\n" for k, v in model.items())
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.field == f"pricing.{key}"
    assert len(str(info.value)) < 200  # a 401-digit number is not printed
    assert json.dumps(str(info.value))


def test_the_highest_accepted_price_loads() -> None:
    text = (
        '[coordinator]\nurl = "wss://x"\n[pricing]\n'
        f"default_input_per_1m = {MAX_MICRO}\ndefault_output_per_1m = {MAX_MICRO}\n"
    )
    assert parse_config(text).pricing.default_input_per_1m == MAX_MICRO == 10**11


@pytest.mark.parametrize(
    "usage",
    [Usage(2**64 - 1, 10**400), Usage(-5, -1), None, Usage(True, 3.5)],  # type: ignore[arg-type]
)
async def test_whatever_usage_a_backend_returns_the_job_ends_once_and_is_reported(
    usage: Any,
) -> None:
    """An adapter (a future one, a bug) returning absurd or no usage: one terminal frame, one
    outcome, counts within [0, 2**31-1]."""

    class OddBackend:
        async def execute(self, job: Any, sink: Any) -> Any:
            await sink(b"data: x\n\n")
            return usage

    executor = Executor()
    executor.set_routes([Route("m", OddBackend())])  # type: ignore[list-item]
    outcomes: list[JobOutcome] = []
    executor.on_outcome.append(outcomes.append)
    wire = Wire()
    job = protocol.Job(str(uuid.uuid4()), "m", {"messages": []}, "openai", 30_000)
    task = executor.submit(job, wire)
    assert task is not None
    await task
    (terminal,) = wire.terminal(job.job_id)
    assert isinstance(terminal, protocol.JobDone)
    assert len(outcomes) == 1 and executor.running == 0
    for count in (outcomes[0].input_tokens, outcomes[0].output_tokens):
        assert isinstance(count, int) and 0 <= count <= MAX_TOKENS
