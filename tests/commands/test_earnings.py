"""`usepod-desktop earnings`, run as a user would: a subprocess against the ledger in the test's
own data dir (USEPOD_DATA_DIR, set by conftest)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from usepod_desktop.core.backends.base import UpstreamPrice
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.ledger import Ledger, default_ledger_path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usepod_desktop", "earnings", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )


def outcome(job_id: str, ended_at: datetime, **kw: Any) -> JobOutcome:
    fields: dict[str, Any] = dict(
        job_id=job_id,
        model_id="Qwen/Qwen3-8B",
        backend="vllm",
        format="openai",
        started_at=ended_at - timedelta(seconds=1),
        ended_at=ended_at,
        ttfb_ms=100.0,
        duration_ms=1000,
        input_tokens=1_000_000,
        output_tokens=500_000,
        bytes_relayed=1,
        input_per_1m=400_000,
        output_per_1m=1_000_000,
    )
    fields.update(kw)
    return JobOutcome(**fields)


@pytest.fixture
def filled(isolated_home: Path) -> Path:
    """A ledger in the data dir: today a $0.90 job (earns $0.72), an error, a test job, a BYOK
    job; 40 days ago a $0.90 job on another model."""
    path = default_ledger_path()
    assert path == isolated_home / "data" / "ledger.sqlite3"
    now = datetime.now(UTC)
    with Ledger(path) as book:
        book.record(outcome("today-1", now))
        book.record(outcome("today-err", now, error_code="backend_timeout"))
        book.record(outcome("today-test", now, source="test"))
        book.record(
            outcome(
                "today-byok",
                now,
                model_id="or/llama",
                backend="openrouter",
                input_tokens=1000,
                output_tokens=1000,
            ),
            upstream_price=UpstreamPrice(Decimal("300000"), Decimal("500000")),
        )
        book.record(outcome("old", now - timedelta(days=40), model_id="old-model"))
    return path


def test_empty_ledger_prints_zeros_and_creates_nothing(isolated_home: Path) -> None:
    out = cli()
    assert out.returncode == 0, out.stderr
    assert "estimated: the coordinator settles the payout from its own token count" in out.stdout
    assert "Today" in out.stdout and "All time" in out.stdout
    assert "$0.000000" in out.stdout
    assert "(no jobs recorded yet)" in out.stdout
    data = json.loads(cli("--json").stdout)
    assert data["periods"]["all_time"]["jobs"] == 0
    assert data["periods"]["today"]["earnings_usd"] == "0.000000000"
    assert data["per_model"] == []
    assert not default_ledger_path().exists()


def test_json_has_periods_and_per_model(filled: Path) -> None:
    out = cli("--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert "coordinator settles" in data["note"]
    assert data["ledger"] == str(filled)
    today = data["periods"]["today"]
    # coordinator jobs only: the $0.90 job, the error, the BYOK job (the test job is left out)
    assert (today["jobs"], today["done"], today["errors"]) == (3, 2, 1)
    # $0.72 + 0.8 x (1000 x 0.4 + 1000 x 1.0 micro) = 720000 + 1120 micro
    assert today["earnings_nusd"] == 721_120_000
    assert today["earnings_usd"] == "0.721120000"
    assert today["gross_nusd"] == 901_400_000
    assert today["upstream_cost_nusd"] == 800_000  # 1000 x 0.3 + 1000 x 0.5 micro
    assert today["net_nusd"] == 721_120_000 - 800_000
    assert data["periods"]["last_7_days"]["jobs"] == 3
    assert data["periods"]["all_time"]["jobs"] == 4
    assert data["periods"]["all_time"]["earnings_nusd"] == 721_120_000 + 720_000_000
    models = {m["model_id"]: m for m in data["per_model"]}
    assert set(models) == {"Qwen/Qwen3-8B", "or/llama", "old-model"}
    assert models["Qwen/Qwen3-8B"]["success_rate"] == 0.5
    assert models["Qwen/Qwen3-8B"]["median_ttfb_ms"] == 100.0


def test_text_shows_dollars_labelled_as_estimates(filled: Path) -> None:
    out = cli()
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "estimated" in lines[0]
    today = next(line for line in lines if line.strip().startswith("Today"))
    assert "$0.901400" in today and "$0.721120" in today
    assert "$0.000800" in today  # upstream cost column (a BYOK job is there)
    assert "$0.720320" in today  # net
    assert any(line.strip().startswith("Qwen/Qwen3-8B") for line in lines)
    assert "Per model (all time):" in out.stdout


def test_since_limits_the_model_table(filled: Path) -> None:
    since = (datetime.now() - timedelta(days=2)).date().isoformat()
    data = json.loads(cli("--json", "--since", since).stdout)
    assert data["since"]["date"] == since
    assert data["since"]["jobs"] == 3
    assert {m["model_id"] for m in data["per_model"]} == {"Qwen/Qwen3-8B", "or/llama"}
    text = cli("--since", since).stdout
    assert f"Since {since}" in text and f"Per model (since {since}):" in text


@pytest.mark.parametrize("bad", ["2024-13-01", "yesterday", "2024-1-1", ""])
def test_bad_since_is_one_line_exit_2(filled: Path, bad: str) -> None:
    out = cli("--since", bad)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--since" in lines[0] and "YYYY-MM-DD" in lines[0]


def test_csv_exports_every_job_row(filled: Path, tmp_path: Path) -> None:
    target = tmp_path / "jobs.csv"
    out = cli("--csv", str(target))
    assert out.returncode == 0, out.stderr
    assert "wrote 5 job(s)" in out.stdout
    with target.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["job_id"] for r in rows] == [
        "old",
        "today-1",
        "today-err",
        "today-test",
        "today-byok",
    ]
    first = {r["job_id"]: r for r in rows}["today-1"]
    assert first["earnings_usd"] == "0.720000000" and first["gross_usd"] == "0.900000000"
    assert first["input_per_1m"] == "400000" and first["outcome"] == "done"
    assert {r["job_id"]: r for r in rows}["today-test"]["source"] == "test"
    assert {r["job_id"]: r for r in rows}["today-byok"]["upstream_cost_usd"] == "0.000800000"

    since = (datetime.now() - timedelta(days=2)).date().isoformat()
    out = cli("--csv", "-", "--since", since, "--source", "coordinator")
    assert out.returncode == 0, out.stderr
    ids = [r["job_id"] for r in csv.DictReader(out.stdout.splitlines())]
    assert ids == ["today-1", "today-err", "today-byok"]


def test_source_test_counts_test_jobs(filled: Path) -> None:
    data = json.loads(cli("--json", "--source", "test").stdout)
    assert data["sources"] == ["test"]
    assert data["periods"]["today"]["jobs"] == 1
    assert data["periods"]["today"]["earnings_nusd"] == 0  # test jobs are never billed


def test_corrupt_ledger_is_one_line(isolated_home: Path) -> None:
    path = default_ledger_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage" * 1000)
    out = cli("--json")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "move the file aside" in lines[0]
