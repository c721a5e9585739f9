"""`earnings`: what the served jobs earned, from the local ledger (estimates).

Prints today / last 7 days / last 30 days / all time and a per-model table; `--json` prints the
same data as JSON; `--csv FILE` exports the job rows (`-` for stdout), text cells that a
spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) prefixed with `'`.
Money is in dollars and labelled as estimated: the coordinator settles the payout from its
own token count.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from usepod_desktop.commands.common import fail, handle_user_errors, init_logging

if TYPE_CHECKING:
    from usepod_desktop.core.ledger import Ledger, ModelTotals, Totals

SOURCE_CHOICES = ("coordinator", "sandbox", "test", "all")


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "earnings",
        parents=parents,
        help="show estimated earnings from the local job ledger",
        description="Estimated earnings of the jobs this computer served: today, the last 7 and "
        "30 days, all time, and per model. Estimated: the coordinator settles the payout from "
        "its own token count.",
    )
    p.add_argument(
        "--since",
        metavar="YYYY-MM-DD",
        help="also total the jobs since this local date; the per-model table and --csv cover "
        "the same range",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument(
        "--csv",
        metavar="FILE",
        help="export the job rows to FILE as CSV ('-' for stdout); text cells starting "
        "with = + - @ are prefixed with ' so spreadsheets do not run them",
    )
    p.add_argument(
        "--source",
        choices=SOURCE_CHOICES,
        default=None,
        help="which jobs to count: coordinator (default for the figures), sandbox (the local "
        "demo), test ('Send test job') or all (default for --csv)",
    )
    p.add_argument("--ledger", metavar="PATH", help=argparse.SUPPRESS)  # tests, support


def _parse_since(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


@handle_user_errors
def run(args: argparse.Namespace) -> int:
    init_logging(args, default="error")  # ledger problems are printed as the error line
    since_day: date | None = None
    if args.since is not None:
        since_day = _parse_since(args.since.strip())
        if since_day is None:
            return fail(f"--since: expected a date as YYYY-MM-DD, got {args.since!r}")
    if args.csv == "-" and args.json:
        return fail("--csv - and --json both write to stdout: give --csv a file name")

    from usepod_desktop.core.ledger import Ledger

    chosen = args.source or "coordinator"
    sources = None if chosen == "all" else (chosen,)
    ledger = Ledger(args.ledger, create=False, sources=sources)
    try:
        since = ledger.local_midnight(since_day) if since_day is not None else None
        if args.csv is not None:
            csv_sources = None if args.source in (None, "all") else (args.source,)
            count = _export_csv(ledger, args.csv, since, csv_sources)
            if args.csv != "-":
                print(f"wrote {count} job(s) to {args.csv}", file=sys.stderr if args.json else None)
            if not args.json:
                return 0
        figures = _Figures.read(ledger, since_day)
        if args.json:
            json.dump(figures.to_dict(ledger, sources), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            _print_text(figures, ledger, chosen)
    finally:
        ledger.close()
    return 0


@dataclass(frozen=True, slots=True)
class _Figures:
    since_day: date | None
    periods: dict[str, Totals]
    since: Totals | None
    per_model: list[ModelTotals]

    @classmethod
    def read(cls, ledger: Ledger, since_day: date | None) -> _Figures:
        since = ledger.local_midnight(since_day) if since_day is not None else None
        return cls(
            since_day=since_day,
            periods=ledger.periods(),
            since=None if since is None else ledger.totals(since),
            per_model=ledger.per_model(since),
        )

    def to_dict(self, ledger: Ledger, sources: tuple[str, ...] | None) -> dict[str, Any]:
        from usepod_desktop.core.ledger import ESTIMATE_NOTE

        data: dict[str, Any] = {
            "note": ESTIMATE_NOTE,
            "ledger": str(ledger.path),
            "generated_at": ledger.now().isoformat(),
            "sources": None if sources is None else list(sources),
            "periods": {name: totals.to_dict() for name, totals in self.periods.items()},
        }
        if self.since_day is not None and self.since is not None:
            data["since"] = {"date": self.since_day.isoformat(), **self.since.to_dict()}
        data["per_model_since"] = None if self.since_day is None else self.since_day.isoformat()
        data["per_model"] = [m.to_dict() for m in self.per_model]
        return data


# ---- text ---------------------------------------------------------------------------------


def _print_text(figures: _Figures, ledger: Ledger, source: str) -> None:
    from usepod_desktop.core.ledger import ESTIMATE_NOTE, PERIOD_LABELS

    rows: list[tuple[str, Totals]] = [(PERIOD_LABELS[k], v) for k, v in figures.periods.items()]
    if figures.since_day is not None and figures.since is not None:
        rows.append((f"Since {figures.since_day.isoformat()}", figures.since))
    byok = any(t.upstream_cost_nusd is not None for _, t in rows)

    what = "" if source == "coordinator" else f" ({source} jobs)"
    print(f"Earnings{what} - {ESTIMATE_NOTE}")
    print()
    print(_table(["period", *_HEADERS], [[label, *_cells(t, byok)] for label, t in rows], byok))
    print()
    since_day = figures.since_day
    scope = "all time" if since_day is None else f"since {since_day.isoformat()}"
    print(f"Per model ({scope}):")
    if figures.per_model:
        # Model ids come from the coordinator's jobs: escaped, they cannot drive the terminal.
        from usepod_desktop.core.text import escape_controls

        table = _model_table(figures.per_model, byok)
        print("\n".join(escape_controls(line) for line in table.split("\n")))
    else:
        print("  (no jobs recorded yet)")
    print()
    print(f"ledger: {ledger.path}" + ("" if ledger.exists else " (not created yet)"))


_HEADERS = ["jobs", "success", "tokens in", "tokens out", "est. gross", "est. earnings"]
_BYOK_HEADERS = ["upstream cost", "net"]


def _cells(t: Totals, byok: bool) -> list[str]:
    from usepod_desktop.core.money import format_amount

    rate = "-" if t.success_rate is None else f"{t.success_rate * 100:.1f}%"
    cells = [
        f"{t.jobs:,}",
        rate,
        f"{t.input_tokens:,}",
        f"{t.output_tokens:,}",
        format_amount(t.gross_nusd),
        format_amount(t.earnings_nusd),
    ]
    if byok:
        cells += [format_amount(t.upstream_cost_nusd), format_amount(t.net_nusd)]
    return cells


def _model_table(models: list[ModelTotals], byok: bool) -> str:
    rows = []
    for m in models:
        ttfb = m.totals.median_ttfb_ms
        rows.append([m.model_id, *_cells(m.totals, byok), "-" if ttfb is None else f"{ttfb:.0f}"])
    return _table(["model", *_HEADERS], rows, byok, extra=["median TTFB ms"])


def _table(
    headers: list[str], rows: list[list[str]], byok: bool, extra: list[str] | None = None
) -> str:
    heads = headers + (_BYOK_HEADERS if byok else []) + (extra or [])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  " + "  ".join([first, *rest]).rstrip()

    return "\n".join([line(heads), *(line(r) for r in rows)])


# ---- CSV ----------------------------------------------------------------------------------

CSV_FIELDS = (
    "job_id",
    "ended_at",
    "started_at",
    "source",
    "model_id",
    "backend",
    "backend_kind",
    "format",
    "outcome",
    "error_code",
    "error_message",
    "ttfb_ms",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "bytes_relayed",
    "input_per_1m",
    "output_per_1m",
    "gross_usd",
    "earnings_usd",
    "upstream_cost_usd",
    "gross_nusd",
    "earnings_nusd",
    "upstream_cost_nusd",
)


def _csv_safe(data: dict[str, Any]) -> dict[str, Any]:
    """The row with every text cell neutralised for spreadsheets (a model id or error code
    from the coordinator or a backend starting with `=`, `+`, `-`, `@`, tab or CR gets a
    leading `'`). Numbers, and the exact dollar amounts (`*_usd`), are numbers: untouched."""
    from usepod_desktop.core.text import csv_cell

    return {
        key: csv_cell(value) if isinstance(value, str) and not key.endswith("_usd") else value
        for key, value in data.items()
    }


def _export_csv(ledger: Ledger, target: str, since: datetime | None, sources: Any) -> int:
    def write(out: TextIO) -> int:
        writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        count = 0
        for row in ledger.rows(since, sources=sources):
            cells = row.to_dict()
            if isinstance(cells.get("ttfb_ms"), float):  # 0.1 ms, not 12.300000000000001
                cells["ttfb_ms"] = round(cells["ttfb_ms"], 1)
            writer.writerow(_csv_safe(cells))
            count += 1
        return count

    if target == "-":
        return write(sys.stdout)
    path = Path(target)
    try:
        with path.open("w", newline="", encoding="utf-8") as out:
            return write(out)
    except OSError as exc:
        from usepod_desktop.core.errors import UserFacingError

        raise UserFacingError(f"cannot write {path}: {exc.strerror or exc}") from exc
