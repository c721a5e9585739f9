"""Issue 12 item 14: `earnings --csv` never writes a cell a spreadsheet would execute.

The hostile model ids and error text are what a coordinator (model_id of a job) or a
backend could have put into the ledger; the export runs as a user would (a subprocess)."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.commands.test_earnings import cli, outcome
from usepod_desktop.core.ledger import Ledger, default_ledger_path
from usepod_desktop.core.text import csv_cell

FORMULAS = [
    '=HYPERLINK("http://127.0.0.1/x?"&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "\uff1d1+1",  # full-width equals sign
]


@pytest.mark.parametrize("value", FORMULAS, ids=repr)
def test_csv_cell_neutralises_formulas(value: str) -> None:
    assert csv_cell(value) == "'" + value


def test_ordinary_text_is_unchanged() -> None:
    for value in ("Qwen/Qwen3-8B", "llama3.2:latest", "done", "", "vllm"):
        assert csv_cell(value) == value


def test_earnings_csv_export_neutralises_hostile_cells(isolated_home: Path, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    with Ledger(default_ledger_path()) as book:
        for i, formula in enumerate(FORMULAS):
            book.record(outcome(f"job-{i}", now, model_id=formula, error_code=formula))
        book.record(outcome("plain", now))
    target = tmp_path / "jobs.csv"
    out = cli("--csv", str(target))
    assert out.returncode == 0, out.stderr
    with target.open(newline="", encoding="utf-8") as f:
        rows = {r["job_id"]: r for r in csv.DictReader(f)}
    for i, formula in enumerate(FORMULAS):
        row = rows[f"job-{i}"]
        assert row["model_id"] == "'" + formula
        assert row["error_code"] == "'" + formula
        assert row["input_tokens"] == "1000000" and row["gross_usd"] == "0.000000000"
    assert rows["plain"]["model_id"] == "Qwen/Qwen3-8B"
    # Every text cell of the file: none starts like a formula.
    with target.open(newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r", "\uff1d")), cell


def test_earnings_table_escapes_model_ids(isolated_home: Path) -> None:
    with Ledger(default_ledger_path()) as book:
        book.record(outcome("job-esc", datetime.now(UTC), model_id="evil\x1b]0;owned\x07m"))
    out = cli()
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "evil\\x1b]0;owned\\x07m" in out.stdout
