"""Coalescing in the relay: the first chunk goes out at once, chunks read together travel as one
`job_chunk`, queued chunks precede an error's terminal frame and never follow a `job_cancel`."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.core.test_executor import ScriptedBackend, Wire, make_executor, make_job
from usepod_desktop.core import protocol
from usepod_desktop.core.backends.base import BackendError, ChunkSink, JobRequest, Usage
from usepod_desktop.core.protocol import ErrorCode

EVENTS = [f'data: {{"n":{i}}}\n\n'.encode() for i in range(10)]


def chunks_of(wire: Wire, job_id: str) -> list[bytes]:
    return [f.data for f in wire.for_job(job_id) if isinstance(f, protocol.JobChunk)]


async def test_chunks_read_without_yielding_travel_as_one_frame_after_the_first() -> None:
    # ScriptedBackend hands all chunks over without waiting for I/O, as httpx does with the
    # SSE events of one `recv`: the first goes alone, the other nine as one job_chunk.
    backend = ScriptedBackend(chunks=EVENTS)
    ex, outcomes = make_executor(backend)
    wire = Wire()
    job = make_job()
    task = ex.submit(job, wire)
    assert task is not None
    await task
    assert chunks_of(wire, job.job_id) == [EVENTS[0], b"".join(EVENTS[1:])]
    assert isinstance(wire.for_job(job.job_id)[-1], protocol.JobDone)
    assert outcomes[0].bytes_relayed == sum(map(len, EVENTS))


class ProbingBackend:
    """Records what was on the wire right after each sink call, and yields to the loop
    between reads (a new `recv`) after the third chunk."""

    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.on_wire_after: list[int] = []

    async def execute(self, job: JobRequest, sink: ChunkSink) -> Usage:
        for i, chunk in enumerate(EVENTS):
            await sink(chunk)
            self.on_wire_after.append(len(chunks_of(self.wire, job.job_id)))
            if i == 3:
                await asyncio.sleep(0.01)  # the next bytes arrive later: a separate read
        return Usage(1, 1)


async def test_first_chunk_is_on_the_wire_before_the_next_read() -> None:
    wire = Wire()
    backend = ProbingBackend(wire)
    ex, _ = make_executor(backend)
    job = make_job()
    task = ex.submit(job, wire)
    assert task is not None
    await task
    assert backend.on_wire_after[0] == 1  # not held back for coalescing
    assert (
        chunks_of(wire, job.job_id)
        == [
            EVENTS[0],
            b"".join(EVENTS[1:4]),  # flushed while the backend waited for more bytes
            b"".join(EVENTS[4:]),
        ]
    )


class FailingAfterQueue:
    async def execute(self, job: JobRequest, sink: ChunkSink) -> Usage:
        for chunk in EVENTS:
            await sink(chunk)
        raise BackendError(ErrorCode.INTERNAL, "upstream said boom")


async def test_queued_chunks_go_out_before_the_error_and_count_in_tokens_emitted() -> None:
    ex, _ = make_executor(FailingAfterQueue())
    wire = Wire()
    job = make_job()
    task = ex.submit(job, wire)
    assert task is not None
    await task
    frames = wire.for_job(job.job_id)
    assert b"".join(chunks_of(wire, job.job_id)) == b"".join(EVENTS)
    err = frames[-1]
    assert isinstance(err, protocol.JobError)
    assert err.tokens_emitted == sum(map(len, EVENTS))


class CancelledWhileQueued:
    def __init__(self) -> None:
        self.ex: Any = None

    async def execute(self, job: JobRequest, sink: ChunkSink) -> Usage:
        for chunk in EVENTS:
            await sink(chunk)
        assert self.ex.cancel(job.job_id)  # job_cancel arrives before the queue is flushed
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_nothing_queued_is_sent_after_a_job_cancel() -> None:
    backend = CancelledWhileQueued()
    ex, outcomes = make_executor(backend)
    backend.ex = ex
    wire = Wire()
    job = make_job()
    task = ex.submit(job, wire)
    assert task is not None
    await task
    await asyncio.sleep(0)  # a stray flush would run here
    assert chunks_of(wire, job.job_id) == [EVENTS[0]]
    assert wire.terminal(job.job_id) == []
    assert outcomes[0].cancelled and outcomes[0].bytes_relayed == len(EVENTS[0])


async def test_a_failed_send_of_a_queued_chunk_ends_the_job() -> None:
    sent: list[str] = []
    failed: list[str] = []

    async def flaky(text: str) -> None:
        if sent and '"job_chunk"' in text:
            failed.append(text)
            raise ConnectionError("socket gone")
        sent.append(text)

    backend = ScriptedBackend(chunks=EVENTS)
    ex, outcomes = make_executor(backend)
    job = make_job()
    task = ex.submit(job, flaky)
    assert task is not None
    await task
    assert outcomes[0].error_code == ErrorCode.INTERNAL
    assert len(failed) == 1  # the queue is not retried after the socket failed
    assert '"job_error"' in sent[-1]
