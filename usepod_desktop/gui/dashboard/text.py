"""The dashboard's words and number formats: fixed texts and how counts, rates, times and
money are written."""

from __future__ import annotations

from datetime import datetime, tzinfo

from usepod_desktop.core.ledger import ESTIMATE_NOTE, JobRow
from usepod_desktop.core.money import format_amount

#: Shown when the sensor layer found no GPU and gave no reason.
NO_GPU_TEXT = "no NVIDIA or AMD GPU sensor"
#: "Estimated: the coordinator settles the payout from its own token count."
ESTIMATE_TEXT = ESTIMATE_NOTE[:1].upper() + ESTIMATE_NOTE[1:] + "."
SANDBOX_TEXT = (
    "Sandbox mode: these are sandbox (demo) figures from the local sandbox coordinator and "
    "fake backends. Nothing here is paid."
)
NO_LEDGER_TEXT = (
    "No earnings ledger yet.\n\nThe ledger opens when the agent starts; every job it serves "
    "is then recorded here with its estimated earnings."
)
DASH = "—"


def money_text(nusd: int) -> str:
    """Nano-USD as dollars, small amounts with enough decimals to be seen (`$0.000312`)."""
    return format_amount(nusd, places=None)


def exact_money_text(nusd: int) -> str:
    """Nano-USD as exact dollars, 9 decimals (`$0.000312000`), for tooltips."""
    return format_amount(nusd, places=9)


def count_text(n: int) -> str:
    return f"{n:,}"


def rate_text(rate: float | None) -> str:
    return DASH if rate is None else f"{rate * 100:.1f} %"


def ms_text(ms: float | None) -> str:
    if ms is None:
        return DASH
    return f"{ms / 1000:.2f} s" if ms >= 10_000 else f"{ms:.0f} ms"


def duration_text(ms: float) -> str:
    return f"{ms / 1000:.2f} s"


def outcome_text(row: JobRow) -> str:
    """`done`, `error: <code>` or `cancelled`."""
    if row.outcome == "error":
        return f"error: {row.error_code}" if row.error_code else "error"
    return row.outcome


def local_time(moment: datetime, tz: tzinfo | None) -> datetime:
    return moment.astimezone(tz) if tz is not None else moment.astimezone()
