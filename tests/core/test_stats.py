"""JobStats: rolling 60 s window feeding the heartbeat figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from usepod_desktop.core import protocol
from usepod_desktop.core.protocol import HeartbeatFigures
from usepod_desktop.core.stats import MIN_GENERATION_S, JobStats, percentile

T0 = datetime(2026, 5, 2, 10, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.wall = T0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.wall += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stats(clock: FakeClock) -> JobStats:
    return JobStats(clock=clock, wall_clock=lambda: clock.wall)


def ok(stats: JobStats, *, ttfb_ms: float | None = 100.0, tokens: int = 0, dur: float = 1.0):
    stats.record(ttfb_ms=ttfb_ms, output_tokens=tokens, duration_s=dur, error_code=None)


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([7], 0.5) == 7.0
    assert percentile([7], 0.95) == 7.0
    assert percentile([1, 2, 3, 4], 0.5) == 2.0
    values = list(range(1, 21))
    assert percentile(values, 0.5) == 10.0
    assert percentile(values, 0.95) == 19.0
    assert percentile(values, 1.0) == 20.0


def test_empty_snapshot_is_zeros(stats: JobStats) -> None:
    assert stats.snapshot(queue_depth=0) == HeartbeatFigures()
    assert stats.jobs_in_window() == 0
    assert (stats.total_jobs, stats.total_errors) == (0, 0)


def test_queue_depth_passed_through(stats: JobStats) -> None:
    assert stats.snapshot(queue_depth=5).queue_depth == 5
    assert stats.snapshot(queue_depth=-3).queue_depth == 0


def test_latency_percentiles(stats: JobStats) -> None:
    for ms in [20, 5, 13, 1, 17, 9, 3, 11, 15, 7, 19, 2, 4, 6, 8, 10, 12, 14, 16, 18]:
        ok(stats, ttfb_ms=float(ms))
    ok(stats, ttfb_ms=None)  # no first byte: not part of the latency figures
    fig = stats.snapshot(queue_depth=0)
    assert (fig.p50_latency_ms, fig.p95_latency_ms) == (10, 19)
    assert isinstance(fig.p50_latency_ms, int) and isinstance(fig.p95_latency_ms, int)


def test_latency_rounds_to_ms(stats: JobStats) -> None:
    ok(stats, ttfb_ms=12.6)
    fig = stats.snapshot(0)
    assert (fig.p50_latency_ms, fig.p95_latency_ms) == (13, 13)


def test_tokens_per_sec_uses_generation_time(stats: JobStats) -> None:
    ok(stats, ttfb_ms=500.0, tokens=100, dur=2.5)  # 100 tokens in 2.0 s of generation
    assert stats.snapshot(0).tokens_per_sec_p50 == pytest.approx(50.0)


def test_tokens_per_sec_without_ttfb_uses_duration(stats: JobStats) -> None:
    ok(stats, ttfb_ms=None, tokens=100, dur=4.0)
    assert stats.snapshot(0).tokens_per_sec_p50 == pytest.approx(25.0)


def test_tokens_per_sec_all_at_once_uses_whole_duration(stats: JobStats) -> None:
    # the whole body arrived with the first byte (non-streaming backend)
    ok(stats, ttfb_ms=2000.0, tokens=100, dur=2.0 + MIN_GENERATION_S / 2)
    assert stats.snapshot(0).tokens_per_sec_p50 == pytest.approx(100 / (2.0 + MIN_GENERATION_S / 2))


def test_tokens_per_sec_median_over_jobs(stats: JobStats) -> None:
    for rate in (10, 40, 20, 30, 50):
        ok(stats, ttfb_ms=None, tokens=rate, dur=1.0)
    assert stats.snapshot(0).tokens_per_sec_p50 == pytest.approx(30.0)


def test_jobs_without_tokens_or_with_errors_give_no_rate(stats: JobStats) -> None:
    ok(stats, tokens=0, dur=1.0)
    ok(stats, ttfb_ms=None, tokens=10, dur=0.0)
    stats.record(ttfb_ms=None, output_tokens=999, duration_s=1.0, error_code="internal")
    assert stats.snapshot(0).tokens_per_sec_p50 == 0.0
    ok(stats, ttfb_ms=None, tokens=8, dur=2.0)
    assert stats.snapshot(0).tokens_per_sec_p50 == pytest.approx(4.0)


def test_error_rate(stats: JobStats) -> None:
    ok(stats)
    ok(stats)
    ok(stats)
    stats.record(ttfb_ms=None, output_tokens=0, duration_s=0.1, error_code="backend_unreachable")
    fig = stats.snapshot(0)
    assert fig.error_rate_60s == pytest.approx(0.25)
    assert fig.last_error_code == "backend_unreachable"
    assert fig.last_error_at == T0
    assert (stats.total_jobs, stats.total_errors) == (4, 1)


def test_error_job_with_ttfb_counts_in_latency(stats: JobStats) -> None:
    stats.record(ttfb_ms=40.0, output_tokens=3, duration_s=1.0, error_code="internal")
    fig = stats.snapshot(0)
    assert (fig.p50_latency_ms, fig.error_rate_60s, fig.tokens_per_sec_p50) == (40, 1.0, 0.0)


def test_window_expiry(stats: JobStats, clock: FakeClock) -> None:
    ok(stats, ttfb_ms=100.0, tokens=10, dur=1.1)
    clock.advance(30)
    ok(stats, ttfb_ms=300.0, tokens=10, dur=1.3)
    assert stats.jobs_in_window() == 2
    clock.advance(29.9)
    assert stats.jobs_in_window() == 2
    clock.advance(0.1)  # first job now exactly 60 s old: expired
    assert stats.jobs_in_window() == 1
    fig = stats.snapshot(0)
    assert (fig.p50_latency_ms, fig.p95_latency_ms) == (300, 300)
    assert fig.tokens_per_sec_p50 == pytest.approx(10.0)
    clock.advance(30)
    assert stats.jobs_in_window() == 0
    assert stats.snapshot(0) == HeartbeatFigures()
    assert (stats.total_jobs, stats.total_errors) == (2, 0)


def test_custom_window(clock: FakeClock) -> None:
    stats = JobStats(window_s=5.0, clock=clock, wall_clock=lambda: clock.wall)
    ok(stats)
    clock.advance(4.9)
    assert stats.jobs_in_window() == 1
    clock.advance(0.2)
    assert stats.jobs_in_window() == 0


def test_last_error_is_not_windowed_and_is_the_latest(stats: JobStats, clock: FakeClock) -> None:
    stats.record(ttfb_ms=None, output_tokens=0, duration_s=1, error_code="backend_timeout")
    clock.advance(10)
    stats.record(ttfb_ms=None, output_tokens=0, duration_s=1, error_code="model_not_loaded")
    clock.advance(5)
    ok(stats)
    fig = stats.snapshot(0)
    assert fig.last_error_code == "model_not_loaded"
    assert fig.last_error_at == T0 + timedelta(seconds=10)
    assert fig.error_rate_60s == pytest.approx(2 / 3)
    clock.advance(3600)
    fig = stats.snapshot(0)
    assert fig.error_rate_60s == 0.0
    assert fig.last_error_code == "model_not_loaded"
    assert fig.last_error_at == T0 + timedelta(seconds=10)
    assert stats.last_error_code == "model_not_loaded"
    assert (stats.total_jobs, stats.total_errors) == (3, 2)


def test_old_entries_are_pruned_on_record(stats: JobStats, clock: FakeClock) -> None:
    for _ in range(100):
        ok(stats)
        clock.advance(1.0)
    assert len(stats._entries) == 60
    assert stats.total_jobs == 100


def test_max_entries_bounds_memory(clock: FakeClock) -> None:
    stats = JobStats(clock=clock, max_entries=10)
    for i in range(25):
        ok(stats, ttfb_ms=float(i))
    assert stats.jobs_in_window() == 10
    assert stats.snapshot(0).p50_latency_ms == 19  # oldest 15 dropped: 15..24
    assert stats.total_jobs == 25


def test_a_busy_window_keeps_exact_figures_through_pruning_and_compaction(
    clock: FakeClock,
) -> None:
    stats = JobStats(clock=clock)
    for i in range(5000):  # 20 jobs a second: the 60 s window holds the last 1,200
        stats.record(
            ttfb_ms=float(i),
            output_tokens=10,
            duration_s=1.0,
            error_code="backend_error" if i % 10 == 0 else None,
        )
        clock.advance(0.05)
    kept = range(3800, 5000)
    assert stats.jobs_in_window() == len(kept)
    fig = stats.snapshot(0)
    assert fig.p50_latency_ms == percentile([float(i) for i in kept], 0.5)
    assert fig.p95_latency_ms == percentile([float(i) for i in kept], 0.95)
    assert fig.error_rate_60s == sum(1 for i in kept if i % 10 == 0) / len(kept)
    assert stats.total_jobs == 5000


def test_the_window_holds_ten_thousand_jobs_in_under_half_a_megabyte(clock: FakeClock) -> None:
    """A tuple of Python floats per job took ~160 bytes (1.6 MB for a minute of 10,000 jobs:
    most of the agent's memory growth in the benchmark's first 10,000 jobs)."""
    import tracemalloc

    stats = JobStats(clock=clock)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            ok(stats, tokens=10)
            clock.advance(0.001)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert stats.jobs_in_window() == 10_000
    assert grown < 500_000, grown


def test_default_wall_clock_is_utc() -> None:
    stats = JobStats()
    stats.record(ttfb_ms=None, output_tokens=0, duration_s=0.0, error_code="internal")
    at = stats.snapshot(0).last_error_at
    assert at is not None and at.utcoffset() == timedelta(0)
    assert abs((datetime.now(UTC) - at).total_seconds()) < 60


def test_invalid_window() -> None:
    with pytest.raises(ValueError):
        JobStats(window_s=0)


def test_snapshot_feeds_a_valid_heartbeat_frame(stats: JobStats) -> None:
    ok(stats, ttfb_ms=120.0, tokens=50, dur=1.12)
    stats.record(ttfb_ms=None, output_tokens=0, duration_s=0.5, error_code="internal")
    fig = stats.snapshot(queue_depth=2)
    parsed = protocol.parse_outbound(protocol.heartbeat(fig))
    assert isinstance(parsed, protocol.Heartbeat)
    assert parsed.figures.queue_depth == 2
    assert parsed.figures.p50_latency_ms == 120
    assert parsed.figures.error_rate_60s == 0.5
    assert parsed.figures.tokens_per_sec_p50 == pytest.approx(50.0)
    assert parsed.figures.last_error_code == "internal"
    assert parsed.figures.last_error_at == T0
