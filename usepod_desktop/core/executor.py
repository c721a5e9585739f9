"""Job executor: admission, routing, the streaming relay, deadlines, cancel.

This is the hot path. Per upstream chunk the relay does one base64 encode, one f-string and one
socket write: no JSON parse (usage is scanned on the side by the backend), no per-chunk task.
Chunks read together (one `recv` holding several SSE events) are coalesced into one `job_chunk`
by a flush task that runs when the read loop yields; the first chunk is sent at once.

Rules (docs/protocol.md, "Jobs"):
- more than `limits.max_concurrent` jobs in flight -> `job_error` `out_of_capacity`;
- a model with no route -> `model_not_loaded`; both with `tokens_emitted` 0; refusals are not
  counted as errors in the heartbeat figures (:meth:`JobStats.record_refusal`);
- a `job` frame that cannot be served -> `invalid_request` (:meth:`Executor.reject`);
- exactly one terminal frame per accepted job; none at all after a `job_cancel`, which frees
  the job's slot at once (a job right behind the cancel is admitted);
- the whole job is bounded by `deadline_ms` -> `backend_timeout`;
- a chunk the socket does not take within 5 s ends the job (`internal`);
- the request's `model` is always the routed model id;
- a `job` whose id is running gets `job_error` `invalid_request` (the running job goes on); an
  id reused after its job ended is served as a new job (logged; the ledger keeps both runs);
- `limits.max_tokens_per_minute`: see :class:`TokenBudget`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from usepod_desktop.core import protocol
from usepod_desktop.core.backends.base import BackendError, JobRequest, UpstreamPrice, Usage
from usepod_desktop.core.listeners import Listeners
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.core.stats import JobStats
from usepod_desktop.core.text import safe_remote_text

if TYPE_CHECKING:
    from usepod_desktop.core.discovery import AdvertisedModel

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0
#: How many finished job ids are remembered to log a reused one.
FINISHED_IDS_KEPT = 4096
#: Largest coalesced job_chunk payload, and the queued bytes above which a job stops reading its
#: backend until they are sent (an adapter's own larger chunk still goes alone, unsplit).
COALESCE_MAX_BYTES = 256 * 1024
TERMINAL_SEND_TIMEOUT_S = 5.0

#: Sends one text frame to the coordinator; raises when the connection is gone.
Sender = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class JobOutcome:
    """What happened to one job: for stats, the ledger and the UI.

    `backend` is the backend's kind as on the wire; `backend_kind`, `backend_label` and
    `upstream` (the BYOK upstream price, None for a local backend or when unknown) are taken
    from the route that served the job when it started, so readers never look them up again."""

    job_id: str
    model_id: str
    backend: str
    format: str
    started_at: datetime
    ended_at: datetime
    ttfb_ms: float | None
    duration_ms: int
    input_tokens: int
    output_tokens: int
    bytes_relayed: int
    error_code: str | None = None
    message: str | None = None
    input_per_1m: int = 0
    output_per_1m: int = 0
    cancelled: bool = False
    source: str = "coordinator"  # or "test" for "Send test job"
    backend_kind: str = ""
    backend_label: str = ""
    upstream: UpstreamPrice | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None and not self.cancelled


class TokenBudget:
    """`limits.max_tokens_per_minute` (beyond the reference, which only declares it).

    Counted: input + output tokens as reported by the backend's usage, for every job that
    finished in the last 60 s. A new job is refused (`out_of_capacity`, so the coordinator routes
    it elsewhere) while that sum is at or above the limit; running jobs are never cut off, so the
    limit can be overshot by what the jobs already running produce.
    """

    def __init__(self, limit: int | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._spent: deque[tuple[float, int]] = deque()
        self._total = 0

    def used(self) -> int:
        cutoff = self._clock() - 60.0
        while self._spent and self._spent[0][0] <= cutoff:
            self._total -= self._spent.popleft()[1]
        return self._total

    def exhausted(self) -> bool:
        return self.limit is not None and self.used() >= self.limit

    def spend(self, tokens: int) -> None:
        if self.limit is None or tokens <= 0:
            return  # nothing to enforce: keep nothing (this ran once per job, forever)
        self._spent.append((self._clock(), tokens))
        self._total += tokens
        self.used()  # prune, so memory stays bounded by one minute of jobs


@dataclass(slots=True)
class _Running:
    job: protocol.Job
    task: asyncio.Task[None] | None = None
    #: set by `_run` on its first step; a job cancelled before it never starts upstream
    started: bool = False
    cancelled_by_coordinator: bool = False
    shutdown_message: str | None = None
    #: loop time when the chunk being sent was handed to the socket; None between sends
    send_since: float | None = None
    send_timed_out: bool = False


OutcomeListener = Callable[[JobOutcome], None]
StartListener = Callable[[protocol.Job, str], None]


@dataclass
class Executor:
    """Runs jobs against the routed backends and relays their bytes to a :data:`Sender`."""

    max_concurrent: int = 8
    max_tokens_per_minute: int | None = None
    stats: JobStats = field(default_factory=JobStats)
    #: Called with each finished job's outcome (a failing listener is logged, never raised).
    on_outcome: Listeners[[JobOutcome]] = field(
        default_factory=lambda: Listeners("job outcome listener", log)
    )
    #: Called with each started job and its backend's label.
    on_start: Listeners[[protocol.Job, str]] = field(
        default_factory=lambda: Listeners("job start listener", log)
    )

    def __post_init__(self) -> None:
        self.routes: dict[str, AdvertisedModel] = {}
        self.accepting = True
        self.refuse_reason = "provider is paused"
        self._running: dict[str, _Running] = {}
        #: cancelled jobs still unwinding (closing upstream); their slots are already free
        self._unwinding: set[asyncio.Task[None]] = set()
        self.budget = TokenBudget(self.max_tokens_per_minute)
        self._background: set[asyncio.Task[None]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        #: Ids of the last finished jobs (a reused one is logged when it comes back).
        self._finished_ids: dict[str, None] = {}

    # ---- configuration -----------------------------------------------------------------

    def set_routes(self, models: list[AdvertisedModel]) -> None:
        """New jobs route by this table; running jobs finish on their backend."""
        self.routes = {m.model_id: m for m in models}

    def set_limits(self, max_concurrent: int, max_tokens_per_minute: int | None) -> None:
        self.max_concurrent = max_concurrent
        self.max_tokens_per_minute = max_tokens_per_minute
        self.budget.limit = max_tokens_per_minute

    @property
    def running(self) -> int:
        return len(self._running)

    def running_jobs(self) -> list[protocol.Job]:
        return [r.job for r in self._running.values()]

    # ---- coordinator frames ------------------------------------------------------------

    def submit(self, job: protocol.Job, send: Sender) -> asyncio.Task[None] | None:
        """Admit and start a job, or refuse it at once with a `job_error`."""
        if job.job_id in self._running:
            return self._refuse_duplicate(job, send)
        if job.job_id in self._finished_ids:
            log.warning(
                "job %s: job id reused after its earlier run ended; served anew", job.job_id
            )
        refusal = self._admission(job)
        if refusal is not None:
            code, message = refusal
            log.info("job %s refused: %s (%s)", job.job_id, code, message)
            return self.reject(job.job_id, code, message, send)
        route = self.routes[job.model_id]
        running = _Running(job)
        running.task = asyncio.get_running_loop().create_task(
            self._run(job, route, send, running), name=f"job-{job.job_id}"
        )
        self._running[job.job_id] = running
        task = running.task
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(
                self._send_watchdog(), name="send-watchdog"
            )
        self.on_start.emit(job, route.backend)
        return task

    def _refuse_duplicate(self, job: protocol.Job, send: Sender) -> asyncio.Task[None]:
        """A `job` frame whose id is running: answered with a terminal `job_error`
        (`invalid_request`); the running job goes on and keeps its own terminal frame."""
        log.warning("job %s: refused, a job with this id is already running", job.job_id)
        return self.reject(
            job.job_id,
            ErrorCode.INVALID_REQUEST,
            "duplicate job id: a job with this id is already running here",
            send,
        )

    def reject(self, job_id: str, code: str, message: str, send: Sender) -> asyncio.Task[None]:
        """Answer a job that is not run with its one terminal `job_error` (`tokens_emitted` 0).

        Counted as a refusal, not an error (docs/protocol.md, "Heartbeat")."""
        self.stats.record_refusal(code)
        frame = protocol.job_error(job_id, code, message, 0)
        refusal_task = asyncio.ensure_future(self._send_quietly(send, frame, job_id))
        self._background.add(refusal_task)
        refusal_task.add_done_callback(self._background.discard)
        return refusal_task

    def _admission(self, job: protocol.Job) -> tuple[str, str] | None:
        if not self.accepting:
            return ErrorCode.OUT_OF_CAPACITY, self.refuse_reason
        if job.model_id not in self.routes:
            shown = safe_remote_text(job.model_id, 120)
            return ErrorCode.MODEL_NOT_LOADED, f"model '{shown}' is not served here"
        if len(self._running) >= self.max_concurrent:
            return (
                ErrorCode.OUT_OF_CAPACITY,
                f"at capacity: {len(self._running)} of {self.max_concurrent} jobs running",
            )
        if self.budget.exhausted():
            return (
                ErrorCode.OUT_OF_CAPACITY,
                f"token budget of {self.max_tokens_per_minute}/min is used up",
            )
        return None

    def cancel(self, job_id: str) -> bool:
        """`job_cancel`: stop the job upstream, send nothing more for it, and free its slot
        now, before the next frame is read (the reference does the same): a job sent right
        behind the cancel must not be refused for capacity while this one unwinds."""
        running = self._running.pop(job_id, None)
        if running is None:
            return False
        self._stop(running)
        return True

    def abort_all(self) -> int:
        """The connection dropped: stop every job upstream. No frames (there is no socket).

        The jobs stay counted in `running` until they have unwound (their upstream requests
        closed): nothing can be admitted on a dead connection anyway."""
        for running in self._running.values():
            self._stop(running)
        return len(self._running)

    def _stop(self, running: _Running) -> None:
        running.cancelled_by_coordinator = True
        task = running.task
        assert task is not None
        if not task.done() and self._running.get(running.job.job_id) is not running:
            self._unwinding.add(task)  # its slot is already free: still wait for it on stop
            task.add_done_callback(self._unwinding.discard)
        if running.started:
            task.cancel()
        # else: `_run` has not taken its first step; it sees the flag and ends at once (a
        # task cancelled before it starts would skip its cleanup and outcome entirely)

    async def shutdown(self, grace_s: float, message: str = "agent is shutting down") -> None:
        """Refuse new jobs, give running ones `grace_s`, then end them with a terminal
        `job_error` (`internal`, saying the agent shut down)."""
        self.accepting = False
        self.refuse_reason = message
        tasks = self._tasks()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for running in list(self._running.values()):
            running.shutdown_message = message
            if running.task is not None:
                running.task.cancel()
        leftover = self._tasks()
        if leftover:
            await asyncio.wait(leftover, timeout=TERMINAL_SEND_TIMEOUT_S + 1)

    def _tasks(self) -> list[asyncio.Task[None]]:
        """Running jobs' tasks plus cancelled ones still unwinding."""
        tasks = [r.task for r in self._running.values() if r.task is not None]
        return tasks + [t for t in self._unwinding if t not in tasks]

    async def wait_idle(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        tasks = self._tasks()
        if not tasks:
            return True
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending

    # ---- the relay ---------------------------------------------------------------------

    async def _run(
        self, job: protocol.Job, route: AdvertisedModel, send: Sender, running: _Running
    ) -> None:
        running.started = True
        started_wall = datetime.now(UTC)
        started = time.perf_counter()
        first_byte: float | None = None
        relayed = 0
        job_id = job.job_id
        chunk_frame = protocol.job_chunk
        loop_time = asyncio.get_running_loop().time

        # Coalescing: the first chunk goes out the moment it is read. Later chunks are queued
        # and sent by a flush task that runs once the read loop yields to the event loop, i.e.
        # when the bytes of the current `recv` are all parsed: several SSE events read together
        # travel as one job_chunk (the wire allows any split; the coordinator concatenates).
        # The latency budget is that one event-loop iteration; nothing waits on a timer.
        pending: list[bytes] = []
        pending_bytes = 0
        flusher: asyncio.Task[None] | None = None
        create_task = asyncio.get_running_loop().create_task

        async def flush() -> None:
            nonlocal pending_bytes, relayed
            while pending and not running.cancelled_by_coordinator:
                if len(pending) == 1 or pending_bytes <= COALESCE_MAX_BYTES:
                    data = b"".join(pending) if len(pending) > 1 else pending[0]
                    pending.clear()
                else:  # a frame stays below the cap (unless one chunk alone is larger)
                    size = n = 0
                    while n < len(pending) and (
                        n == 0 or size + len(pending[n]) <= COALESCE_MAX_BYTES
                    ):
                        size += len(pending[n])
                        n += 1
                    data = b"".join(pending[:n])
                    del pending[:n]
                pending_bytes -= len(data)
                relayed += len(data)  # handed to the socket: counts even if the send stalls
                running.send_since = loop_time()
                await send(chunk_frame(job_id, data))
                running.send_since = None

        async def sink(data: bytes) -> None:
            # Per upstream chunk: no timer objects here. The 5 s send limit is enforced by
            # _send_watchdog, which reads `send_since` (a plain float write per chunk).
            nonlocal first_byte, relayed, flusher, pending_bytes
            if not data:
                return
            if first_byte is None:
                first_byte = time.perf_counter()
                relayed += len(data)  # handed to the socket: counts even if the send stalls
                running.send_since = loop_time()
                await send(chunk_frame(job_id, data))
                running.send_since = None
                return
            pending.append(data)
            pending_bytes += len(data)
            if flusher is None:
                flusher = create_task(flush())
            elif flusher.done():
                flusher.result()  # a failed send ends the job, as an inline send did
                flusher = create_task(flush())
            elif pending_bytes > COALESCE_MAX_BYTES:
                await flusher  # the socket is slow: stop reading until it has taken the queue

        async def drain() -> None:
            """Send what is still queued (before the terminal frame)."""
            if flusher is not None:
                await flusher
            await flush()

        usage = Usage()
        code: str | None = None
        message: str | None = None
        terminal: str | None = None
        served_as = route.served_as  # the backend's own id ([model_aliases] may rename it)
        request = JobRequest(job_id, served_as, job.request, job.format)
        try:
            try:
                if running.cancelled_by_coordinator:  # cancelled before this first step
                    raise asyncio.CancelledError
                async with asyncio.timeout(job.deadline_ms / 1000):
                    usage = await route.backend_ref.execute(request, sink)
                    await drain()
            except TimeoutError:
                code = ErrorCode.BACKEND_TIMEOUT
                message = f"job exceeded its deadline of {job.deadline_ms} ms"
            except BackendError as exc:
                code, message = exc.code, exc.message
            except asyncio.CancelledError:
                if running.send_timed_out:
                    code = ErrorCode.INTERNAL
                    message = f"coordinator did not accept a chunk within {SEND_TIMEOUT_S:g} s"
                elif running.shutdown_message is not None:
                    code, message = ErrorCode.INTERNAL, running.shutdown_message
                elif running.cancelled_by_coordinator:
                    code, message = "cancelled", "cancelled by the coordinator"
                else:
                    raise
            except Exception as exc:  # a bug must still end the job with its terminal frame
                log.exception("job %s: unexpected error", job_id)
                code, message = ErrorCode.INTERNAL, f"agent error: {type(exc).__name__}"
            if code not in (None, "cancelled") and not running.send_timed_out:
                # An error after some chunks: what was read before it still goes out first
                # (bounded; `relayed` counts what was handed to the socket, for `tokens_emitted`).
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(TERMINAL_SEND_TIMEOUT_S):
                        await drain()
            duration_ms = int((time.perf_counter() - started) * 1000)
            usage = _sane_usage(usage, job_id)
            try:
                if code is None:
                    terminal = protocol.job_done(
                        job_id, usage.input_tokens, usage.output_tokens, duration_ms
                    )
                elif code != "cancelled":
                    terminal = protocol.job_error(job_id, code, message or code, relayed)
            except Exception as exc:  # never a job without its terminal frame
                log.exception("job %s: cannot build its terminal frame", job_id)
                code, message = ErrorCode.INTERNAL, f"agent error: {type(exc).__name__}"
                terminal = protocol.job_error(job_id, code, message, relayed)
            if terminal is not None:
                await self._send_quietly(send, terminal, job_id)
        finally:
            if flusher is not None and not flusher.done():
                flusher.cancel()
            if self._running.get(job_id) is running:  # a cancel may have freed it already
                del self._running[job_id]
            self._finished_ids[job_id] = None
            if len(self._finished_ids) > FINISHED_IDS_KEPT:
                del self._finished_ids[next(iter(self._finished_ids))]
        ttfb_ms = None if first_byte is None else (first_byte - started) * 1000
        cancelled = code == "cancelled"
        try:  # figures only: a failure here must not keep the job from being reported
            self.budget.spend(usage.input_tokens + usage.output_tokens)
            if not cancelled:
                self.stats.record(
                    ttfb_ms=ttfb_ms,
                    output_tokens=usage.output_tokens,
                    duration_s=duration_ms / 1000,
                    error_code=code,
                )
        except Exception:
            log.exception("job %s: statistics not updated", job_id)
        outcome = JobOutcome(
            job_id=job_id,
            model_id=route.model_id,
            backend=route.backend,
            format=job.format,
            started_at=started_wall,
            ended_at=datetime.now(UTC),
            ttfb_ms=ttfb_ms,
            duration_ms=duration_ms,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            bytes_relayed=relayed,
            error_code=None if cancelled else code,
            message=message,
            input_per_1m=route.input_per_1m,
            output_per_1m=route.output_per_1m,
            cancelled=cancelled,
            source=getattr(send, "source", "coordinator"),
            backend_kind=route.backend,
            backend_label=route.backend_label,
            upstream=route.upstream,
        )
        if code is None:
            log.debug("job %s done: %d+%d tokens", job_id, usage.input_tokens, usage.output_tokens)
        else:
            log.info("job %s ended: %s (%s)", job_id, code, message)
        self.on_outcome.emit(outcome)

    async def _send_watchdog(self) -> None:
        """End jobs whose current chunk has not been taken by the socket within SEND_TIMEOUT_S.

        One task for all jobs, ticking while any job runs: cheaper than a timer per chunk."""
        loop = asyncio.get_running_loop()
        tick = min(0.5, SEND_TIMEOUT_S / 5)
        while self._running:
            await asyncio.sleep(tick)
            now = loop.time()
            for running in list(self._running.values()):
                since = running.send_since
                if (
                    since is not None
                    and now - since >= SEND_TIMEOUT_S
                    and not running.send_timed_out
                    and running.task is not None
                ):
                    running.send_timed_out = True
                    running.task.cancel()

    async def _send_quietly(self, send: Sender, frame: str, job_id: str) -> None:
        try:
            async with asyncio.timeout(TERMINAL_SEND_TIMEOUT_S):
                await send(frame)
        except Exception as exc:
            log.warning("job %s: could not send terminal frame (%s)", job_id, type(exc).__name__)


#: Largest token count the executor passes on (stats, budget, ledger); backends clamp already.
MAX_TOKEN_COUNT = 2**31 - 1


def _sane_usage(usage: object, job_id: str) -> Usage:
    """`usage` with both counts integers within [0, MAX_TOKEN_COUNT] (a bad value is logged;
    whatever a backend returned, this never raises)."""
    raw = [getattr(usage, "input_tokens", 0), getattr(usage, "output_tokens", 0)]
    counts = []
    for value in raw:
        if not isinstance(value, int) or isinstance(value, bool):
            value = 0
        counts.append(min(max(value, 0), MAX_TOKEN_COUNT))
    if isinstance(usage, Usage) and counts == raw:
        return usage
    log.warning("job %s: token counts missing or out of range; taken as %s", job_id, counts)
    return Usage(counts[0], counts[1])
