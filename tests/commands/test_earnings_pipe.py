"""`earnings --csv -` into a reader that stops early (`| head`), and its number formatting: run
as a user would, a subprocess against a ledger in the test's data dir."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.ledger import Ledger, default_ledger_path


def outcome(job_id: str, ended_at: datetime, ttfb_ms: float | None) -> JobOutcome:
    return JobOutcome(
        job_id=job_id,
        model_id="Qwen/Qwen3-8B",
        backend="vllm",
        format="openai",
        started_at=ended_at - timedelta(seconds=1),
        ended_at=ended_at,
        ttfb_ms=ttfb_ms,
        duration_ms=1000,
        input_tokens=1000,
        output_tokens=500,
        bytes_relayed=1,
        input_per_1m=400_000,
        output_per_1m=1_000_000,
    )


def fill(rows: int, ttfb_ms: float | None = 12.3) -> None:
    now = datetime.now(UTC)
    with Ledger(default_ledger_path()) as book:
        for i in range(rows):
            book.record(outcome(f"job-{i:05d}", now - timedelta(seconds=rows - i), ttfb_ms))


def test_csv_to_a_reader_that_stops_early_ends_quietly(isolated_home: Path) -> None:
    fill(3000)  # ~1 MB of CSV: far more than a pipe holds
    proc = subprocess.Popen(
        [sys.executable, "-m", "usepod_desktop", "earnings", "--csv", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    header = proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    code = proc.wait(timeout=60)
    assert header.startswith(b"job_id,")
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    assert code == 141  # as a program killed by SIGPIPE, what shells expect from `| head`


def test_csv_ttfb_has_no_float_noise(isolated_home: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    noisy = 0.1 + 0.2  # 0.30000000000000004
    with Ledger(default_ledger_path()) as book:
        book.record(outcome("noisy", now, noisy * 41))  # 12.300000000000002
        book.record(outcome("none", now, None))
        book.record(outcome("long", now, 1234.56789))
    target = tmp_path / "jobs.csv"
    out = subprocess.run(
        [sys.executable, "-m", "usepod_desktop", "earnings", "--csv", str(target)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    with target.open(newline="") as f:
        ttfb = {r["job_id"]: r["ttfb_ms"] for r in csv.DictReader(f)}
    assert ttfb == {"noisy": "12.3", "none": "", "long": "1234.6"}
