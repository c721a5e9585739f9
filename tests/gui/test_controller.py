"""gui/controller.py: today's figures counted from JobFinished events when there is no ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from usepod_desktop.core.events import JobFinished
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.ledger import Ledger
from usepod_desktop.gui.controller import TodayCounter

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def finished(job_id: str, prices: tuple[int, int], *, source: str = "coordinator") -> JobFinished:
    return JobFinished(
        JobOutcome(
            job_id=job_id,
            model_id="m",
            backend="vllm",
            format="openai",
            started_at=NOW - timedelta(seconds=1),
            ended_at=NOW,
            ttfb_ms=10.0,
            duration_ms=1000,
            input_tokens=1,
            output_tokens=0,
            bytes_relayed=10,
            input_per_1m=prices[0],
            output_per_1m=prices[1],
            source=source,
        )
    )


def test_today_counter_agrees_with_the_ledger_to_the_nano_dollar(tmp_path: Path) -> None:
    # 1 token at 3125 micro-USD per 1M earns 2.5 nano-USD: the ledger stores 2 (half to even)
    events = [finished(f"job-{i}", (3125, 0)) for i in range(3)]
    events.append(finished("test", (3125, 0), source="test"))  # test jobs earn nothing
    today = NOW.astimezone().date()
    counter = TodayCounter(today=lambda: today)
    ledger = Ledger(tmp_path / "ledger.sqlite3", clock=lambda: NOW)
    try:
        for event in events:
            counter.add(event)
            assert ledger.record(event.outcome)
        totals = ledger.today()
    finally:
        ledger.close()
    assert counter.summary() == (3, 6) == (totals.done, totals.earnings_nusd)


def test_today_counter_starts_again_on_a_new_day() -> None:
    day = [NOW.astimezone().date()]
    counter = TodayCounter(today=lambda: day[0])
    counter.add(finished("a", (1_000_000, 0)))
    assert counter.summary() == (1, 800)
    day[0] = day[0] + timedelta(days=1)
    assert counter.summary() == (0, 0)
