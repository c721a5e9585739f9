"""The earnings ledger: real SQLite files in tmp dirs, rows and aggregates from JobOutcome."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from usepod_desktop.core import ledger as ledger_mod
from usepod_desktop.core.agent import Agent
from usepod_desktop.core.backends.base import UpstreamPrice
from usepod_desktop.core.config import BackendConfig, Config, CoordinatorConfig, PricingConfig
from usepod_desktop.core.events import AgentState, EventBus, JobFinished, StateChanged
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.ledger import (
    SCHEMA_VERSION,
    JobRow,
    Ledger,
    LedgerError,
    Totals,
    default_ledger_path,
    job_recorder,
)
from usepod_desktop.core.metrics import MetricsServer
from usepod_desktop.core.money import nusd_to_micro
from usepod_desktop.core.protocol import JobDone, JobError
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FailMode, FakeBackend

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)  # 13:00 in Berlin


def outcome(
    job_id: str,
    *,
    ended_at: datetime = NOW,
    model: str = "Qwen/Qwen3-8B",
    backend: str = "vllm",
    tokens: tuple[int, int] = (1000, 500),
    prices: tuple[int, int] = (400_000, 1_000_000),
    ttfb_ms: float | None = 120.0,
    error_code: str | None = None,
    cancelled: bool = False,
    source: str = "coordinator",
) -> JobOutcome:
    return JobOutcome(
        job_id=job_id,
        model_id=model,
        backend=backend,
        format="openai",
        started_at=ended_at - timedelta(seconds=2),
        ended_at=ended_at,
        ttfb_ms=ttfb_ms,
        duration_ms=2000,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        bytes_relayed=4096,
        error_code=error_code,
        message=None if error_code is None else f"{error_code} happened",
        input_per_1m=prices[0],
        output_per_1m=prices[1],
        cancelled=cancelled,
        source=source,
    )


def exact_gross_micro(tokens: tuple[int, int], prices: tuple[int, int]) -> Fraction:
    """tokens x price in micro-USD, exact (docs/files.md, "The marketplace's money rules")."""
    return Fraction(tokens[0] * prices[0] + tokens[1] * prices[1], 1_000_000)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def ledger(db: Path) -> Any:
    book = Ledger(db, clock=lambda: NOW, tz=BERLIN)
    yield book
    book.close()


# ---- rows -----------------------------------------------------------------------------------


def test_row_holds_every_field_and_survives_reopening(db: Path) -> None:
    book = Ledger(db, clock=lambda: NOW, tz=BERLIN)
    assert book.record(outcome("job-1", tokens=(1234, 567), ttfb_ms=87.5))
    book.close()
    assert db.is_file()

    again = Ledger(db, clock=lambda: NOW, tz=BERLIN)
    try:
        [row] = again.recent()
    finally:
        again.close()
    assert row.job_id == "job-1"
    assert row.model_id == "Qwen/Qwen3-8B"
    assert (row.backend, row.backend_kind, row.source) == ("vllm", "vllm", "coordinator")
    assert row.started_at == NOW - timedelta(seconds=2) and row.ended_at == NOW
    assert (row.ttfb_ms, row.duration_ms) == (87.5, 2000)
    assert (row.input_tokens, row.output_tokens) == (1234, 567)
    assert (row.outcome, row.error_code) == ("done", None)
    assert (row.input_per_1m, row.output_per_1m) == (400_000, 1_000_000)
    assert row.gross_nusd == 1_060_600
    assert row.earnings_nusd == 848_480
    assert row.upstream_cost_nusd is None
    # WAL, schema version set
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_default_path_is_in_the_data_dir(isolated_home: Path) -> None:
    assert default_ledger_path() == isolated_home / "data" / "ledger.sqlite3"
    book = Ledger(clock=lambda: NOW)
    try:
        assert book.record(outcome("j"))
    finally:
        book.close()
    assert (isolated_home / "data" / "ledger.sqlite3").is_file()


def test_cancelled_errors_and_test_jobs_earn_nothing(ledger: Ledger) -> None:
    ledger.record_many(
        [
            outcome("done"),
            outcome("err", error_code="backend_timeout"),
            outcome("cancel", cancelled=True),
            outcome("test", source="test"),
        ]
    )
    rows = {r.job_id: r for r in ledger.recent(sources=None)}
    assert rows["err"].outcome == "error" and rows["err"].error_code == "backend_timeout"
    assert rows["err"].error_message == "backend_timeout happened"
    assert rows["cancel"].outcome == "cancelled" and rows["cancel"].error_code is None
    assert rows["cancel"].input_tokens == 1000  # tokens are kept
    for job in ("err", "cancel", "test"):
        assert (rows[job].gross_nusd, rows[job].earnings_nusd) == (0, 0)
    assert rows["done"].earnings_nusd == 720_000  # (400 + 500) micro x 0.8

    coordinator = ledger.all_time()
    assert (coordinator.jobs, coordinator.done, coordinator.errors, coordinator.cancelled) == (
        3,
        1,
        1,
        1,
    )
    assert coordinator.success_rate == 0.5  # cancelled jobs are neither success nor failure
    assert coordinator.earnings_nusd == 720_000
    everything = ledger.all_time(sources=None)
    assert everything.jobs == 4


def test_duplicate_job_id_is_counted_once(ledger: Ledger) -> None:
    assert ledger.record(outcome("same"))
    assert ledger.record(outcome("same"))
    assert ledger.count() == 1


def test_price_change_mid_day_counts_each_job_at_its_own_price(ledger: Ledger) -> None:
    morning = NOW - timedelta(hours=3)
    ledger.record(outcome("a", ended_at=morning, tokens=(1_000_000, 0), prices=(400_000, 0)))
    ledger.record(outcome("b", ended_at=NOW, tokens=(1_000_000, 0), prices=(250_000, 0)))
    ledger.record(outcome("c", ended_at=NOW, tokens=(0, 3), prices=(0, 333_333)))
    today = ledger.today()
    # $0.40 + $0.25 + 3 x 0.333333 micro
    gross = Fraction(400_000) + Fraction(250_000) + Fraction(999_999, 1_000_000)
    assert today.gross_nusd == round(gross * 1000) == 650_001_000
    assert nusd_to_micro(today.gross_nusd) == round(gross)
    assert nusd_to_micro(today.earnings_nusd) == round(gross * Fraction(4, 5)) == 520_001
    rows = {r.job_id: r for r in ledger.recent()}
    assert rows["a"].input_per_1m == 400_000 and rows["b"].input_per_1m == 250_000


def test_upstream_cost_and_net_margin(ledger: Ledger) -> None:
    price = UpstreamPrice(Decimal("300000"), Decimal("900000"))
    ledger.record(
        outcome("byok", backend="openrouter", prices=(500_000, 1_500_000)),
        upstream_price=price,
    )
    ledger.record(outcome("local"))
    [row] = [r for r in ledger.recent() if r.job_id == "byok"]
    assert row.backend_kind == "openrouter" and row.byok
    assert row.upstream_cost_nusd == 750_000  # 1000 x 0.3 + 500 x 0.9 micro
    assert row.earnings_nusd == 1_000_000  # 0.8 x (500 + 750)
    total = ledger.all_time()
    assert total.upstream_cost_nusd == 750_000
    assert total.net_nusd == total.earnings_nusd - 750_000 == 1_000_000 + 720_000 - 750_000
    per_model = ledger.per_model()
    assert [m.totals.upstream_cost_nusd for m in per_model] == [750_000]  # one model, both jobs


# ---- aggregates -----------------------------------------------------------------------------


def test_periods_use_local_day_boundaries(db: Path) -> None:
    # 00:30 in Berlin on 10 March = 23:30 UTC on 9 March
    now = datetime(2025, 3, 9, 23, 30, tzinfo=UTC)
    with Ledger(db, clock=lambda: now, tz=BERLIN) as book:
        book.record_many(
            [
                outcome("after-local-midnight", ended_at=datetime(2025, 3, 9, 23, 10, tzinfo=UTC)),
                outcome("before-local-midnight", ended_at=datetime(2025, 3, 9, 22, 50, tzinfo=UTC)),
                # 7 days = today and the 6 days before: from 4 March 00:00 Berlin (23:00 UTC 3rd)
                outcome("in-7", ended_at=datetime(2025, 3, 3, 23, 5, tzinfo=UTC)),
                outcome("out-7", ended_at=datetime(2025, 3, 3, 22, 55, tzinfo=UTC)),
                outcome("in-30", ended_at=datetime(2025, 2, 8, 23, 5, tzinfo=UTC)),
                outcome("out-30", ended_at=datetime(2025, 2, 8, 22, 55, tzinfo=UTC)),
            ]
        )
        periods = book.periods()
        assert [periods[k].jobs for k in periods] == [1, 3, 5, 6]
        assert list(periods) == ["today", "last_7_days", "last_30_days", "all_time"]
        assert book.local_today() == date(2025, 3, 10)
        since = datetime(2025, 3, 9, 23, 0, tzinfo=UTC)
        until = datetime(2025, 3, 9, 23, 20, tzinfo=UTC)
        assert book.totals(since, until).jobs == 1


def test_per_day_fills_every_day_and_follows_dst(db: Path) -> None:
    # Berlin moves to summer time on 30 March 2025 (that local day has 23 hours)
    now = datetime(2025, 3, 31, 10, 0, tzinfo=UTC)
    with Ledger(db, clock=lambda: now, tz=BERLIN) as book:
        book.record_many(
            [
                # 23:30 local on the 30th (CEST, UTC+2) -> the 30th
                outcome("late-30", ended_at=datetime(2025, 3, 30, 21, 30, tzinfo=UTC)),
                # 00:30 local on the 31st -> the 31st
                outcome("early-31", ended_at=datetime(2025, 3, 30, 22, 30, tzinfo=UTC)),
                # 23:30 local on the 29th (CET, UTC+1) -> the 29th
                outcome("late-29", ended_at=datetime(2025, 3, 29, 22, 30, tzinfo=UTC)),
                outcome("old", ended_at=datetime(2025, 1, 1, tzinfo=UTC)),
            ]
        )
        days = book.per_day(30)
        assert len(days) == 30
        assert [d.day for d in days] == [date(2025, 3, 2) + timedelta(days=i) for i in range(30)]
        by_day = {d.day: d.totals.jobs for d in days}
        assert by_day[date(2025, 3, 29)] == 1
        assert by_day[date(2025, 3, 30)] == 1
        assert by_day[date(2025, 3, 31)] == 1
        assert sum(by_day.values()) == 3
        assert days[0].totals == Totals()  # zeros filled
        assert days[-1].totals.earnings_nusd == 720_000
        assert book.per_day(0) == []


def test_median_ttfb_per_set_and_per_model(ledger: Ledger) -> None:
    for i, ttfb in enumerate([50.0, 10.0, 30.0, 20.0]):
        ledger.record(outcome(f"a{i}", model="A", ttfb_ms=ttfb))
    for i, ttfb in enumerate([300.0, 100.0, 200.0]):
        ledger.record(outcome(f"b{i}", model="B", ttfb_ms=ttfb))
    ledger.record(outcome("b-none", model="B", ttfb_ms=None, error_code="internal"))
    models = {m.model_id: m.totals for m in ledger.per_model()}
    assert models["A"].median_ttfb_ms == 25.0  # (20 + 30) / 2
    assert models["B"].median_ttfb_ms == 200.0  # the job without a first byte is left out
    assert ledger.all_time().median_ttfb_ms == 50.0  # 10 20 30 50 100 200 300
    assert ledger.totals(until=NOW - timedelta(days=1)).median_ttfb_ms is None


def test_per_model_orders_by_earnings_and_honours_since(ledger: Ledger) -> None:
    ledger.record(outcome("small", model="small", tokens=(10, 10)))
    ledger.record(outcome("big", model="big", tokens=(10_000, 10_000)))
    ledger.record(outcome("old", model="old", ended_at=NOW - timedelta(days=40)))
    assert [m.model_id for m in ledger.per_model()] == ["big", "old", "small"]
    assert [m.model_id for m in ledger.per_model(ledger.since_days(30))] == ["big", "small"]
    big = ledger.per_model()[0].totals
    assert (big.input_tokens, big.output_tokens) == (10_000, 10_000)
    assert big.gross_nusd == 14_000_000  # 10k x 0.4 + 10k x 1.0 micro = 14000 micro


def test_recent_is_newest_first_and_limited(ledger: Ledger) -> None:
    for i in range(5):
        ledger.record(outcome(f"j{i}", ended_at=NOW - timedelta(minutes=10 - i)))
    assert [r.job_id for r in ledger.recent(3)] == ["j4", "j3", "j2"]


def test_sandbox_jobs_are_kept_apart(db: Path) -> None:
    with Ledger(db, clock=lambda: NOW, sources=("sandbox",)) as book:
        book.record(outcome("demo"), source="sandbox")
        book.record(outcome("real"))
        assert [r.job_id for r in book.recent()] == ["demo"]
        assert book.all_time().earnings_nusd == 720_000  # sandbox jobs show demo earnings
        assert book.all_time(sources=("coordinator",)).jobs == 1


def test_dashboard_is_json_ready(ledger: Ledger) -> None:
    ledger.record(outcome("one"))
    board = ledger.dashboard()
    data = json.loads(json.dumps(board.to_dict()))
    assert data["periods"]["today"]["earnings_nusd"] == 720_000
    assert data["periods"]["today"]["earnings_usd"] == "0.000720000"
    assert data["per_model"][0]["model_id"] == "Qwen/Qwen3-8B"
    assert len(data["per_day"]) == 30
    assert data["recent"][0]["job_id"] == "one"
    assert "coordinator settles" in data["note"]


def test_prune_and_retention(db: Path) -> None:
    with Ledger(db, clock=lambda: NOW) as book:
        book.record(outcome("new", ended_at=NOW - timedelta(days=1)))
        book.record(outcome("old", ended_at=NOW - timedelta(days=100)))
        book.record(outcome("older", ended_at=NOW - timedelta(days=400)))
        assert book.prune(365) == 1
        assert {r.job_id for r in book.recent()} == {"new", "old"}
    with Ledger(db, clock=lambda: NOW, retention_days=30) as book:
        book.record(outcome("newest"))
        assert {r.job_id for r in book.recent()} == {"new", "newest"}


def test_missing_file_reads_as_empty_without_creating_it(db: Path) -> None:
    with Ledger(db, create=False, clock=lambda: NOW) as book:
        assert book.all_time() == Totals()
        assert book.per_model() == []
        assert len(book.per_day(7)) == 7
        assert book.recent() == []
    assert not db.exists()


# ---- the agent and the writer thread --------------------------------------------------------


def test_job_recorder_records_job_finished_events_with_the_outcomes_route_facts(
    db: Path,
) -> None:
    events = EventBus()
    price = UpstreamPrice(Decimal("100000"), Decimal("200000"))
    book = Ledger(db, clock=lambda: NOW)
    detach = events.subscribe(JobFinished, job_recorder(book, source="sandbox"))
    try:
        events.emit(StateChanged(AgentState.SERVING, "ok"))  # other events: ignored
        byok = outcome("c1", model="or/model", backend="openrouter")
        byok.backend_kind, byok.upstream = "openrouter", price  # as the executor sets them
        events.emit(JobFinished(byok))
        events.emit(JobFinished(outcome("t1", source="test")))
        events.emit(JobFinished(outcome("local", model="or/model", backend="venice")))
        assert book.flush(5)
        rows = {r.job_id: r for r in book.recent(sources=None)}
        assert rows["c1"].source == "sandbox"  # coordinator jobs of the sandbox demo
        assert rows["c1"].backend_kind == "openrouter"
        assert rows["c1"].upstream_cost_nusd == 200_000  # 1000 x 0.1 + 500 x 0.2 micro
        assert rows["t1"].source == "test"  # "Send test job" stays a test
        assert rows["local"].upstream_cost_nusd is None  # no upstream price on the outcome
        assert rows["local"].backend_kind == "venice"
        detach()
        events.emit(JobFinished(outcome("after-detach")))
        assert book.flush(5)
        assert book.count() == 3
    finally:
        book.close()


def test_submit_never_waits_for_the_disk(db: Path) -> None:
    book = Ledger(db, clock=lambda: NOW)
    try:
        book.check()
        with book._write_lock:  # a writer stuck on disk
            started = time.perf_counter()
            book.submit(outcome("queued"))
            assert time.perf_counter() - started < 0.5
            assert book.count() == 0  # not written yet: the write is waiting
        assert book.flush(5)
        assert book.count() == 1
    finally:
        book.close()


def test_close_writes_what_is_queued(db: Path) -> None:
    book = Ledger(db, clock=lambda: NOW)
    for i in range(20):
        book.submit(outcome(f"q{i}"))
    book.close()
    with Ledger(db, clock=lambda: NOW) as again:
        assert again.count() == 20


def _trace_commits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every COMMIT any ledger connection runs from now on, seen by SQLite's trace hook."""
    commits: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        return conn

    monkeypatch.setattr(ledger_mod.sqlite3, "connect", traced)
    return commits


def test_a_burst_of_submitted_rows_is_committed_in_a_few_transactions(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commits = _trace_commits(monkeypatch)
    # A long interval makes the grouping deterministic: the first row is committed at once,
    # every later one waits for the next commit, which flush() asks for.
    book = Ledger(db, clock=lambda: NOW, commit_interval_s=60)
    try:
        book.check()
        before = len(commits)  # the schema migration's own transactions
        for i in range(200):
            book.submit(outcome(f"burst-{i}"))
        assert book.flush(10)
        written = len(commits) - before
        assert 1 <= written <= 2, written
        assert book.commits == written
        assert book.count() == 200
        assert {r.job_id for r in book.rows()} == {f"burst-{i}" for i in range(200)}
    finally:
        book.close()


def test_grouped_rows_are_committed_alone_after_a_quiet_spell_and_on_close(db: Path) -> None:
    book = Ledger(db, clock=lambda: NOW, commit_interval_s=60)
    try:
        book.submit(outcome("first"))
        deadline = time.monotonic() + 10
        while book.count() < 1 and time.monotonic() < deadline:  # no flush: written at once
            time.sleep(0.01)
        assert book.count() == 1
        book.submit(outcome("second"))  # inside the interval: waits for the next commit
    finally:
        book.close()  # a clean stop commits it without waiting for the interval
    with Ledger(db, clock=lambda: NOW) as again:
        assert {r.job_id for r in again.rows()} == {"first", "second"}


def test_the_writers_page_cache_is_bounded_also_after_reconnecting(db: Path) -> None:
    """SQLite's 2 MiB default page cache grew the agent's memory with the file (~1.3 MB over
    10,000 jobs); appending needs few pages."""
    expected = -ledger_mod.WRITER_CACHE_KIB
    with Ledger(db, clock=lambda: NOW) as book:
        assert book.record(outcome("one"))
        assert book._writer_conn is not None
        assert book._writer_conn.execute("PRAGMA cache_size").fetchone()[0] == expected
        book._fail_write(sqlite3.OperationalError("disk I/O error"))  # the connection dropped
        assert book.record(outcome("two"))  # reopened
        assert book._writer_conn.execute("PRAGMA cache_size").fetchone()[0] == expected
        assert book.count() == 2


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from usepod_desktop.core.executor import JobOutcome
    from usepod_desktop.core.ledger import Ledger

    book = Ledger(sys.argv[1])
    now = datetime.now(UTC)
    for i in range(int(sys.argv[2])):
        o = JobOutcome(f"job-{i}", "m", "vllm", "openai", now, now, 10.0, 5, 100, 50, 10,
                       input_per_1m=400000, output_per_1m=1000000)
        if i % 2:
            book.submit(o)
            book.flush()
        else:
            assert book.record(o)
        print(f"committed {i}", flush=True)
    print("idle", flush=True)
    time.sleep(60)
    """
)


def test_killed_process_keeps_committed_rows(db: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(db), "6"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "idle":
                break
        assert lines[-1] == "idle", lines
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with Ledger(db) as book:
        assert book.count() == 6
        assert book.all_time().earnings_nusd == 6 * 72_000


# ---- problems -------------------------------------------------------------------------------


def test_corrupt_file_is_reported_and_never_raises(db: Path, caplog: Any) -> None:
    db.write_bytes(b"this is not a database at all, just garbage " * 200)
    book = Ledger(db, clock=lambda: NOW)
    seen: list[str | None] = []
    book.on_problem.append(seen.append)
    try:
        assert book.record(outcome("lost-for-now")) is False
        book.submit(outcome("queued"))  # the writer thread swallows it too
        assert book.flush(5)
        problem = book.problem
        assert problem is not None
        assert "\n" not in problem
        assert str(db) in problem and "move the file aside" in problem
        assert seen == [problem]  # reported once, not once per job
        assert sum(problem in r.getMessage() for r in caplog.records) == 1
        with pytest.raises(LedgerError) as info:
            book.dashboard()
        assert str(info.value) == problem
        assert book.unsaved == 2

        # the operator moves the file aside: the rows kept in memory are written
        db.rename(db.with_suffix(".broken"))
        assert book.record(outcome("after"))
        assert book.problem is None and seen[-1] is None
        assert {r.job_id for r in book.recent()} == {"lost-for-now", "queued", "after"}
    finally:
        book.close()


def test_locked_database_is_reported_then_recovers(db: Path) -> None:
    book = Ledger(db, clock=lambda: NOW, busy_timeout_ms=50)
    try:
        book.check()
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            assert book.record(outcome("waiting")) is False
            assert book.problem is not None and "locked" in book.problem
            assert str(db) in book.problem
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert book.record(outcome("next"))
        assert book.problem is None
        assert book.count() == 2
    finally:
        book.close()


def test_newer_schema_is_refused_clearly(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with Ledger(db, clock=lambda: NOW) as book:
        assert book.record(outcome("x")) is False
        assert book.problem is not None and "newer usepod-desktop" in book.problem


# ---- migrations -----------------------------------------------------------------------------


def _version(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_migrates_from_version_0(db: Path) -> None:
    with sqlite3.connect(db) as conn:  # an existing, empty, version-0 file
        conn.execute("CREATE TABLE unrelated (x)")
    assert _version(db) == 0
    with Ledger(db, clock=lambda: NOW) as book:
        assert book.record(outcome("first"))
    assert _version(db) == SCHEMA_VERSION == len(ledger_mod.MIGRATIONS)
    with sqlite3.connect(db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"jobs", "jobs_ended", "jobs_model_ended", "unrelated"} <= names


def test_later_migrations_apply_in_order_and_a_failed_one_rolls_back(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ledger(db, clock=lambda: NOW) as book:
        book.record(outcome("v1-row"))
    extra = [
        *ledger_mod.MIGRATIONS,
        ("ALTER TABLE jobs ADD COLUMN note TEXT", "UPDATE jobs SET note = 'migrated'"),
        ("CREATE TABLE second (x)", "THIS IS NOT SQL"),
    ]
    monkeypatch.setattr(ledger_mod, "MIGRATIONS", extra)
    with Ledger(db, clock=lambda: NOW) as book:
        assert book.record(outcome("x")) is False
        assert book.problem is not None
    # the good migration stays, the broken one left nothing behind
    assert _version(db) == SCHEMA_VERSION + 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT note FROM jobs").fetchall() == [("migrated",)]
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "second" not in names

    monkeypatch.setattr(ledger_mod, "MIGRATIONS", extra[:-1])
    with Ledger(db, clock=lambda: NOW) as book:
        assert book.record(outcome("y"))
        assert book.count() == 2


def test_row_round_trip_through_to_dict() -> None:
    row = JobRow.from_outcome(outcome("d"), upstream_price=UpstreamPrice(Decimal(1), Decimal(1)))
    data = row.to_dict()
    assert data["ended_at"] == NOW.isoformat()
    assert data["gross_usd"] == "0.000900000"
    assert data["upstream_cost_usd"] == "0.000000002"  # 1500 tokens at 1 micro/1M = 1.5 -> 2 nano


# ---- end to end: a real Agent serving jobs from the sandbox coordinator ---------------------

CHAT = {"messages": [{"role": "user", "content": "hello there agent"}], "max_tokens": 6}


async def test_jobs_served_through_the_sandbox_coordinator_are_recorded(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    async with (
        SandboxCoordinator(ws_heartbeat=None) as coord,
        FakeBackend("vllm", ["model-a"], output_tokens=6) as fake,
    ):
        coord.announce_sandbox = False  # playing the real coordinator: real earnings
        config = Config(
            coordinator=CoordinatorConfig(url=coord.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=fake.url),),
            identity_key_path=str(tmp_path / "identity.key"),
        )
        agent = Agent(config, allow_insecure=True)
        book = Ledger(db)
        detach = agent.events.subscribe(JobFinished, job_recorder(book))
        metrics = MetricsServer("127.0.0.1:0", agent)
        finished: list[JobOutcome] = []
        agent.events.subscribe(
            lambda e: finished.append(e.outcome) if isinstance(e, JobFinished) else None
        )
        await agent.start()
        assert await metrics.start()
        try:
            await coord.wait_for_capabilities(10)
            done = [await coord.dispatch("model-a", CHAT) for _ in range(3)]
            terminals = [await h.wait(10) for h in done]
            assert all(isinstance(t, JobDone) for t in terminals)
            fake.fail_mode = FailMode.ERROR_STATUS
            failed = await coord.dispatch("model-a", CHAT)
            assert isinstance(await failed.wait(10), JobError)
            fake.fail_mode = FailMode.NONE
            await agent.run_test_job("model-a", CHAT)
            for _ in range(500):
                if len(finished) == 5:
                    break
                await asyncio.sleep(0.01)
            assert len(finished) == 5
            assert await asyncio.to_thread(book.flush, 5)
            assert metrics.url is not None
            async with aiohttp.ClientSession() as session, session.get(metrics.url) as response:
                scraped = await response.text()
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(scraped)
                for s in family.samples
            }
            done_key = (("backend", "vllm"), ("model", "model-a"), ("outcome", "done"))
            assert samples[("usepod_jobs_total", done_key)] == 4  # 3 + the test job
        finally:
            await metrics.stop()
            await agent.stop(grace=0.1)
            detach()
            await asyncio.to_thread(book.close)

    with Ledger(db) as again:
        rows = {r.job_id: r for r in again.rows()}
        assert len(rows) == 5
        for handle, terminal in zip(done, terminals, strict=True):
            assert isinstance(terminal, JobDone)
            row = rows[handle.job_id]
            assert (row.source, row.outcome, row.model_id, row.backend_kind) == (
                "coordinator",
                "done",
                "model-a",
                "vllm",
            )
            # the agent's own counts match what it reported in job_done
            assert (row.input_tokens, row.output_tokens) == (
                terminal.input_tokens,
                terminal.output_tokens,
            )
            assert row.output_tokens == 6
            assert (row.input_per_1m, row.output_per_1m) == (500_000, 750_000)
            exact = exact_gross_micro((row.input_tokens, row.output_tokens), (500_000, 750_000))
            assert row.gross_nusd == round(exact * 1000)
            assert nusd_to_micro(row.earnings_nusd) == round(exact * Fraction(4, 5))
            assert row.ttfb_ms is not None and row.ttfb_ms > 0
        error_row = rows[failed.job_id]
        assert error_row.outcome == "error" and error_row.earnings_nusd == 0
        [test_row] = [r for r in rows.values() if r.source == "test"]
        assert test_row.outcome == "done" and test_row.earnings_nusd == 0
        coordinator_total = again.all_time()
        assert (coordinator_total.jobs, coordinator_total.done) == (4, 3)
        assert coordinator_total.earnings_nusd == sum(rows[h.job_id].earnings_nusd for h in done)
