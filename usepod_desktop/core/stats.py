"""Rolling statistics of finished jobs, feeding the real `heartbeat` figures (docs/protocol.md,
"Heartbeat").

Admission refusals (`out_of_capacity`, `model_not_loaded` for a model this agent does not
serve, an unservable `job` frame) are counted apart with :meth:`JobStats.record_refusal`: they
are not backend failures and never enter `error_rate_60s` or `last_error_*`, which feed the
coordinator's reputation score.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from usepod_desktop.core.protocol import HeartbeatFigures

__all__ = ["JobStats", "percentile"]

#: Below this much time after the first byte, a job's output is taken as arriving at
#: once (a non-streaming backend): its tokens/s is then computed over the whole job.
MIN_GENERATION_S = 0.05


def _utc_now() -> datetime:
    return datetime.now(UTC)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (`p` in (0, 1]) of an ascending sequence; 0.0 when empty."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    rank = max(1, math.ceil(p * n))
    return float(sorted_values[min(rank, n) - 1])


_NONE = math.nan  # a missing ttfb / tokens-per-second in the window's arrays


class _Window:
    """The jobs in the window, one slot per job in flat arrays (25 bytes a job; a tuple of
    Python floats per job took ~160, i.e. ~1.5 MB more at 10,000 jobs a minute). Oldest first:
    `start` is the first live slot; the dead head is cut off once it is the larger half."""

    __slots__ = ("at", "errors", "start", "tps", "ttfb")

    def __init__(self) -> None:
        self.at = array("d")
        self.ttfb = array("d")  # NaN: no first byte
        self.tps = array("d")  # NaN: no rate
        self.errors = array("b")
        self.start = 0

    def __len__(self) -> int:
        return len(self.at) - self.start

    def append(self, at: float, ttfb: float | None, tps: float | None, is_error: bool) -> None:
        self.at.append(at)
        self.ttfb.append(_NONE if ttfb is None else ttfb)
        self.tps.append(_NONE if tps is None else tps)
        self.errors.append(is_error)

    def drop_oldest(self, count: int = 1) -> None:
        self.start = min(self.start + count, len(self.at))
        if self.start >= 1024 and self.start * 2 >= len(self.at):
            for column in (self.at, self.ttfb, self.tps, self.errors):
                del column[: self.start]
            self.start = 0

    def prune(self, horizon: float) -> None:
        """Drop the jobs recorded at or before `horizon` (from the oldest on)."""
        at, i, n = self.at, self.start, len(self.at)
        while i < n and at[i] <= horizon:
            i += 1
        if i != self.start:
            self.drop_oldest(i - self.start)

    def values(self) -> tuple[list[float], list[float], int, int]:
        """(ttfbs, rates, errors, jobs) of the live slots (NaNs left out)."""
        s = self.start
        ttfbs = [x for x in self.ttfb[s:] if x == x]
        rates = [x for x in self.tps[s:] if x == x]
        return ttfbs, rates, sum(self.errors[s:]), len(self)


class JobStats:
    """Job outcomes over the last `window_s` seconds (of `clock`), plus totals since start.

    `record` is O(1); `snapshot` sorts the jobs in the window. Expired entries are
    pruned on every call; at most `max_entries` are kept (oldest dropped first).
    Thread-safe.
    """

    def __init__(
        self,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utc_now,
        max_entries: int = 100_000,
    ) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._clock = clock
        self._wall_clock = wall_clock
        self.max_entries = max_entries
        self._entries = _Window()
        self._lock = threading.Lock()
        self._total_jobs = 0
        self._total_errors = 0
        self._total_refused = 0
        #: admission refusals since start, per error code
        self.refused_by_code: dict[str, int] = {}
        self._last_error_at: datetime | None = None
        self._last_error_code: str | None = None

    def record(
        self,
        *,
        ttfb_ms: float | None,
        output_tokens: int,
        duration_s: float,
        error_code: str | None,
    ) -> None:
        """Record one finished job.

        `ttfb_ms`: time to the first relayed byte, None when nothing was relayed.
        Successful jobs with output tokens get tokens/s = output_tokens / (duration -
        ttfb), or over the whole duration when that is under MIN_GENERATION_S.
        A job with an `error_code` counts as an error and gives no tokens/s.
        """
        is_error = error_code is not None
        tps: float | None = None
        if not is_error and output_tokens > 0:
            duration = max(float(duration_s), 0.0)
            generation = duration
            if ttfb_ms is not None:
                generation = duration - max(float(ttfb_ms), 0.0) / 1000.0
                if generation < MIN_GENERATION_S:
                    generation = duration
            if generation > 0.0 and math.isfinite(generation):
                try:
                    tps = output_tokens / generation
                except OverflowError:  # an absurd count (the executor clamps them)
                    tps = None
        ttfb = None
        if ttfb_ms is not None and math.isfinite(ttfb_ms):
            ttfb = max(float(ttfb_ms), 0.0)
        with self._lock:
            now = self._clock()
            self._prune(now)
            self._entries.append(now, ttfb, tps, is_error)
            if len(self._entries) > self.max_entries:
                self._entries.drop_oldest()
            self._total_jobs += 1
            if is_error:
                self._total_errors += 1
                self._last_error_at = self._wall_clock()
                self._last_error_code = str(error_code)

    def record_refusal(self, error_code: str) -> None:
        """Count a job refused at admission (no backend involved). Not part of the window,
        the error rate or the last error: see the module docstring."""
        with self._lock:
            self._total_refused += 1
            self.refused_by_code[error_code] = self.refused_by_code.get(error_code, 0) + 1

    def snapshot(self, queue_depth: int) -> HeartbeatFigures:
        """Heartbeat figures over the window; last error fields are not windowed."""
        with self._lock:
            self._prune(self._clock())
            ttfbs, rates, errors, jobs = self._entries.values()
            last_at, last_code = self._last_error_at, self._last_error_code
        rates.sort()
        ttfbs.sort()
        return HeartbeatFigures(
            queue_depth=max(int(queue_depth), 0),
            tokens_per_sec_p50=percentile(rates, 0.50),
            p50_latency_ms=round(percentile(ttfbs, 0.50)),
            p95_latency_ms=round(percentile(ttfbs, 0.95)),
            error_rate_60s=errors / jobs if jobs else 0.0,
            last_error_at=last_at,
            last_error_code=last_code,
        )

    def jobs_in_window(self) -> int:
        """Number of jobs recorded within the window."""
        with self._lock:
            self._prune(self._clock())
            return len(self._entries)

    @property
    def total_jobs(self) -> int:
        """Jobs recorded since start."""
        return self._total_jobs

    @property
    def total_errors(self) -> int:
        """Error jobs recorded since start."""
        return self._total_errors

    @property
    def total_refused(self) -> int:
        """Jobs refused at admission since start (not in `total_jobs`)."""
        return self._total_refused

    @property
    def last_error_at(self) -> datetime | None:
        return self._last_error_at

    @property
    def last_error_code(self) -> str | None:
        return self._last_error_code

    def _prune(self, now: float) -> None:
        self._entries.prune(now - self.window_s)
