"""Executor unit tests with an in-process backend: admission, relay, terminal frames, cancel,
deadline, send timeout, shutdown, token budget. (The loopback tests against fake servers and
the sandbox coordinator live in tests/integration.)"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from usepod_desktop.core import executor as executor_mod
from usepod_desktop.core import protocol
from usepod_desktop.core.backends.base import BackendError, ChunkSink, JobRequest, Usage
from usepod_desktop.core.executor import Executor, JobOutcome
from usepod_desktop.core.protocol import ErrorCode


@dataclass
class ScriptedBackend:
    """Streams `chunks`, optionally waits forever or fails after them."""

    chunks: list[bytes] = field(default_factory=lambda: [b"data: a\n\n", b"data: b\n\n"])
    usage: Usage = field(default_factory=lambda: Usage(3, 2))
    hang: bool = False
    fail: BackendError | None = None
    seen: list[JobRequest] = field(default_factory=list)
    cancelled: int = 0
    kind: str = "vllm"

    async def execute(self, job: JobRequest, sink: ChunkSink) -> Usage:
        self.seen.append(job)
        try:
            for chunk in self.chunks:
                await sink(chunk)
            if self.hang:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail is not None:
            raise self.fail
        return self.usage


@dataclass
class Route:
    model_id: str
    backend_ref: Any
    backend: str = "vllm"
    input_per_1m: int = 500_000
    output_per_1m: int = 750_000
    backend_label: str = "vllm @ http://127.0.0.1:8000"
    upstream: Any = None

    @property
    def served_as(self) -> str:  # as AdvertisedModel: the backend's own id
        return self.model_id


class Wire:
    """Collects what the executor sends, parsed with the coordinator-side parser."""

    def __init__(self, block: bool = False) -> None:
        self.frames: list[protocol.OutboundFrame] = []
        self.block = block

    async def __call__(self, text: str) -> None:
        if self.block:
            await asyncio.Event().wait()
        self.frames.append(protocol.parse_outbound(text))

    def for_job(self, job_id: str) -> list[protocol.OutboundFrame]:
        return [f for f in self.frames if getattr(f, "job_id", None) == job_id]

    def terminal(self, job_id: str) -> list[protocol.OutboundFrame]:
        return [
            f for f in self.for_job(job_id) if isinstance(f, protocol.JobDone | protocol.JobError)
        ]


def make_job(model: str = "m", deadline_ms: int = 60_000, **request: Any) -> protocol.Job:
    return protocol.Job(
        str(uuid.uuid4()), model, {"messages": [], **request}, "openai", deadline_ms
    )


def make_executor(backend: Any, **kwargs: Any) -> tuple[Executor, list[JobOutcome]]:
    ex = Executor(**kwargs)
    ex.set_routes([Route("m", backend)])  # type: ignore[list-item]
    outcomes: list[JobOutcome] = []
    ex.on_outcome.append(outcomes.append)
    return ex, outcomes


async def test_relays_bytes_and_sends_one_job_done() -> None:
    backend = ScriptedBackend()
    ex, outcomes = make_executor(backend)
    wire = Wire()
    job = make_job()
    task = ex.submit(job, wire)
    assert task is not None and ex.running == 1
    await task
    frames = wire.for_job(job.job_id)
    chunks = [f for f in frames if isinstance(f, protocol.JobChunk)]
    assert b"".join(c.data for c in chunks) == b"".join(backend.chunks)
    assert isinstance(frames[-1], protocol.JobDone)
    assert (frames[-1].input_tokens, frames[-1].output_tokens) == (3, 2)
    assert len(wire.terminal(job.job_id)) == 1
    assert backend.seen[0].model_id == "m"
    assert ex.running == 0
    assert outcomes[0].ok and outcomes[0].bytes_relayed == sum(map(len, backend.chunks))
    assert outcomes[0].ttfb_ms is not None and outcomes[0].input_per_1m == 500_000


async def test_job_chunk_wire_format_is_base64_of_raw_bytes() -> None:
    raw = bytes(range(256))
    ex, _ = make_executor(ScriptedBackend(chunks=[raw]))
    sent: list[str] = []

    async def capture(text: str) -> None:
        sent.append(text)

    job = make_job()
    task = ex.submit(job, capture)
    assert task is not None
    await task
    first = json.loads(sent[0])
    assert first == {
        "type": "job_chunk",
        "job_id": job.job_id,
        "data": base64.b64encode(raw).decode(),
    }


async def test_capacity_and_unknown_model_are_refused_with_zero_emitted() -> None:
    backend = ScriptedBackend(hang=True)
    ex, _ = make_executor(backend, max_concurrent=1)
    wire = Wire()
    first, second, unknown = make_job(), make_job(), make_job("nope")
    ex.submit(first, wire)
    refused = ex.submit(second, wire)
    assert refused is not None
    await refused
    ex.submit(unknown, wire)
    await asyncio.sleep(0.01)
    (err,) = wire.terminal(second.job_id)
    assert isinstance(err, protocol.JobError)
    assert (err.error_code, err.tokens_emitted) == (ErrorCode.OUT_OF_CAPACITY, 0)
    (err2,) = wire.terminal(unknown.job_id)
    assert isinstance(err2, protocol.JobError)
    assert (err2.error_code, err2.tokens_emitted) == (ErrorCode.MODEL_NOT_LOADED, 0)
    assert ex.running == 1
    ex.cancel(first.job_id)
    await ex.wait_idle(1)


async def test_cancel_stops_upstream_frees_slot_and_sends_nothing_more() -> None:
    backend = ScriptedBackend(hang=True)
    ex, outcomes = make_executor(backend, max_concurrent=1)
    wire = Wire()
    job = make_job()
    task = ex.submit(job, wire)
    await asyncio.sleep(0.01)
    before = len(wire.for_job(job.job_id))
    assert before == 2  # the two chunks
    assert ex.cancel(job.job_id) is True
    assert task is not None
    await task
    await asyncio.sleep(0.01)
    assert len(wire.for_job(job.job_id)) == before
    assert backend.cancelled == 1
    assert ex.running == 0 and outcomes[0].cancelled
    assert ex.cancel(job.job_id) is False  # unknown ids are ignored
    backend.hang = False
    again = ex.submit(make_job(), wire)  # the slot is free again
    assert again is not None
    await again
    assert isinstance(wire.frames[-1], protocol.JobDone)


async def test_deadline_gives_backend_timeout_with_bytes_emitted() -> None:
    backend = ScriptedBackend(hang=True)
    ex, _ = make_executor(backend)
    wire = Wire()
    job = make_job(deadline_ms=50)
    task = ex.submit(job, wire)
    assert task is not None
    await task
    (err,) = wire.terminal(job.job_id)
    assert isinstance(err, protocol.JobError)
    assert err.error_code == ErrorCode.BACKEND_TIMEOUT
    assert err.tokens_emitted == sum(map(len, backend.chunks))
    assert backend.cancelled == 1


async def test_backend_error_mid_stream_keeps_relayed_bytes() -> None:
    backend = ScriptedBackend(fail=BackendError(ErrorCode.INTERNAL, "upstream said boom"))
    ex, outcomes = make_executor(backend)
    wire = Wire()
    job = make_job()
    task = ex.submit(job, wire)
    assert task is not None
    await task
    frames = wire.for_job(job.job_id)
    assert [type(f).__name__ for f in frames] == ["JobChunk", "JobChunk", "JobError"]
    err = frames[-1]
    assert isinstance(err, protocol.JobError) and err.message == "upstream said boom"
    assert err.tokens_emitted == sum(map(len, backend.chunks))
    assert outcomes[0].error_code == ErrorCode.INTERNAL


async def test_chunk_not_taken_within_send_timeout_ends_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(executor_mod, "SEND_TIMEOUT_S", 0.05)
    monkeypatch.setattr(executor_mod, "TERMINAL_SEND_TIMEOUT_S", 0.05)
    ex, outcomes = make_executor(ScriptedBackend())
    task = ex.submit(make_job(), Wire(block=True))
    assert task is not None
    await task
    assert outcomes[0].error_code == ErrorCode.INTERNAL
    assert "did not accept a chunk" in (outcomes[0].message or "")
    assert ex.running == 0


async def test_shutdown_ends_running_jobs_with_terminal_frames() -> None:
    backend = ScriptedBackend(hang=True)
    ex, _ = make_executor(backend)
    wire = Wire()
    jobs = [make_job() for _ in range(3)]
    for job in jobs:
        ex.submit(job, wire)
    await asyncio.sleep(0.01)
    await ex.shutdown(grace_s=0.05)
    for job in jobs:
        (err,) = wire.terminal(job.job_id)
        assert isinstance(err, protocol.JobError)
        assert err.error_code == ErrorCode.INTERNAL and "shutting down" in err.message
    late = make_job()
    refused = ex.submit(late, wire)
    assert refused is not None
    await refused
    (err,) = wire.terminal(late.job_id)
    assert isinstance(err, protocol.JobError) and err.error_code == ErrorCode.OUT_OF_CAPACITY


async def test_shutdown_lets_jobs_finish_within_grace() -> None:
    ex, _ = make_executor(ScriptedBackend())
    wire = Wire()
    job = make_job()
    ex.submit(job, wire)
    await ex.shutdown(grace_s=1)
    (done,) = wire.terminal(job.job_id)
    assert isinstance(done, protocol.JobDone)


async def test_token_budget_refuses_new_jobs_once_spent() -> None:
    now = [1000.0]
    ex, _ = make_executor(ScriptedBackend(usage=Usage(6, 6)), max_tokens_per_minute=10)
    ex.budget._clock = lambda: now[0]
    wire = Wire()
    first = ex.submit(make_job(), wire)
    assert first is not None
    await first
    second = make_job()
    refused = ex.submit(second, wire)
    assert refused is not None
    await refused
    (err,) = wire.terminal(second.job_id)
    assert isinstance(err, protocol.JobError) and err.error_code == ErrorCode.OUT_OF_CAPACITY
    assert "token budget" in err.message
    now[0] += 61  # a minute later the budget is back
    third = ex.submit(make_job(), wire)
    assert third is not None
    await third
    assert isinstance(wire.frames[-1], protocol.JobDone)


def test_token_budget_keeps_only_one_minute_of_jobs() -> None:
    now = [0.0]
    unlimited = executor_mod.TokenBudget(None, clock=lambda: now[0])
    limited = executor_mod.TokenBudget(10**9, clock=lambda: now[0])
    for _ in range(1000):
        now[0] += 1.0
        unlimited.spend(5)
        limited.spend(5)
    assert len(unlimited._spent) == 0  # no limit: nothing to remember
    assert len(limited._spent) == 60 and limited.used() == 60 * 5  # the last 60 s


async def test_abort_all_sends_nothing() -> None:
    ex, _ = make_executor(ScriptedBackend(hang=True))
    wire = Wire()
    job = make_job()
    task = ex.submit(job, wire)
    await asyncio.sleep(0.01)
    assert ex.abort_all() == 1
    assert task is not None
    await task
    assert wire.terminal(job.job_id) == []
    assert ex.running == 0


async def test_stats_feed_heartbeat_figures() -> None:
    ex, _ = make_executor(ScriptedBackend(fail=BackendError(ErrorCode.BACKEND_UNREACHABLE, "x")))
    task = ex.submit(make_job(), Wire())
    assert task is not None
    await task
    fig = ex.stats.snapshot(queue_depth=ex.running)
    assert fig.error_rate_60s == 1.0 and fig.last_error_code == ErrorCode.BACKEND_UNREACHABLE


async def test_cancel_frees_the_slot_before_the_next_frame_is_read() -> None:
    """The reference frees the slot in `cancel` itself; a job handled right after the cancel
    (the next frame of the same burst, no event-loop turn in between) is admitted."""
    backend = ScriptedBackend(hang=True)
    ex, outcomes = make_executor(backend, max_concurrent=1)
    wire = Wire()
    first, second = make_job(), make_job()
    ex.submit(first, wire)
    await asyncio.sleep(0.01)  # streaming
    assert ex.cancel(first.job_id) is True
    assert ex.running == 0  # at once, while the cancelled task is still unwinding
    task = ex.submit(second, wire)  # same tick
    assert task is not None and ex.running == 1
    await asyncio.sleep(0.01)
    assert wire.terminal(second.job_id) == []  # not refused: it runs
    assert len(wire.for_job(second.job_id)) == 2
    assert backend.cancelled == 1 and [o.job_id for o in outcomes] == [first.job_id]
    assert outcomes[0].cancelled and wire.terminal(first.job_id) == []
    ex.cancel(second.job_id)
    assert await ex.wait_idle(1)


async def test_cancel_before_the_job_started_ends_it_without_going_upstream() -> None:
    backend = ScriptedBackend(hang=True)
    ex, outcomes = make_executor(backend)
    wire = Wire()
    job = make_job()
    task = ex.submit(job, wire)
    assert ex.cancel(job.job_id) is True  # before the task took its first step
    assert task is not None
    await task
    assert backend.seen == []  # never sent upstream
    assert [o.cancelled for o in outcomes] == [True]  # but its outcome is reported
    assert wire.for_job(job.job_id) == []


async def test_a_reused_id_after_a_cancel_is_not_removed_by_the_old_task() -> None:
    backend = ScriptedBackend(hang=True)
    ex, _ = make_executor(backend)
    wire = Wire()
    job = make_job()
    old = ex.submit(job, wire)
    await asyncio.sleep(0.01)
    ex.cancel(job.job_id)
    new = ex.submit(job, wire)  # the coordinator reuses the id right away
    assert old is not None and new is not None and new is not old
    await old  # the old task unwinds ...
    assert ex.running == 1  # ... and leaves the new job's slot alone
    assert ex.cancel(job.job_id) is True
    await new


async def test_refusals_are_not_errors_in_the_heartbeat_figures() -> None:
    ex, _ = make_executor(ScriptedBackend(hang=True), max_concurrent=1)
    wire = Wire()
    busy = make_job()
    ex.submit(busy, wire)
    refused = [ex.submit(make_job(), wire) for _ in range(3)]
    refused.append(ex.submit(make_job("nope"), wire))
    refused.append(ex.reject(str(uuid.uuid4()), ErrorCode.INVALID_REQUEST, "bad frame", wire))
    await asyncio.gather(*(t for t in refused if t is not None))
    fig = ex.stats.snapshot(queue_depth=ex.running)
    assert fig.error_rate_60s == 0.0
    assert (fig.last_error_at, fig.last_error_code) == (None, None)
    assert ex.stats.total_refused == 5 and ex.stats.total_jobs == 0
    assert ex.stats.refused_by_code == {
        ErrorCode.OUT_OF_CAPACITY: 3,
        ErrorCode.MODEL_NOT_LOADED: 1,
        ErrorCode.INVALID_REQUEST: 1,
    }
    ex.cancel(busy.job_id)
    await ex.wait_idle(1)


async def test_outcome_carries_the_serving_routes_kind_label_and_upstream_price() -> None:
    """The ledger reads these from the outcome: a re-route while the job runs changes nothing."""
    from decimal import Decimal

    from usepod_desktop.core.backends.base import UpstreamPrice

    price = UpstreamPrice(Decimal("100000"), Decimal("200000"))
    backend = ScriptedBackend(kind="openrouter")
    gate = asyncio.Event()
    original = backend.execute

    async def gated(job: JobRequest, sink: ChunkSink) -> Usage:
        await gate.wait()
        return await original(job, sink)

    backend.execute = gated  # type: ignore[method-assign]
    ex = Executor()
    label = "openrouter (OPENROUTER_API_KEY)"
    ex.set_routes([Route("m", backend, "openrouter", backend_label=label, upstream=price)])  # type: ignore[list-item]
    outcomes: list[JobOutcome] = []
    ex.on_outcome.append(outcomes.append)
    task = ex.submit(make_job(), Wire())
    assert task is not None
    await asyncio.sleep(0)
    ex.set_routes([Route("m", ScriptedBackend(), "vllm")])  # type: ignore[list-item]
    gate.set()
    await task
    (outcome,) = outcomes
    assert (outcome.backend, outcome.backend_kind, outcome.backend_label) == (
        "openrouter",
        "openrouter",
        label,
    )
    assert outcome.upstream is price
