"""The earnings ledger: one SQLite row per job that reached a terminal state.

Money
-----
Every amount is an **integer of nano-USD**; columns and attributes holding one end in `_nusd`.
Gross, earnings and upstream cost are computed by `core/money.py` (exact, rounded half to
even to the nano-dollar; its docstring has the rule), and it turns them into dollars. All of
these are **estimates**: the coordinator bills from its own token count.

Which jobs earn: only `done` jobs of source `coordinator` (or `sandbox`) carry gross and
earnings; `error` and `cancelled` rows keep their token counts but earn 0 (a failed or cancelled
job is not taken as billed). The upstream cost of a BYOK backend (OpenRouter, Venice: the
operator pays it whatever the outcome) is stored when its price is known, else NULL.

Times are UTC epoch milliseconds; periods use local-time day boundaries (injectable clock and
time zone). A row is attributed to the moment its job ended.

Writing never stops the agent: :meth:`Ledger.record` and the writer thread swallow every error,
log it once and set :attr:`Ledger.problem` (one line: the path and what to do). Rows that could
not be written are kept in memory (up to :data:`MAX_UNSAVED`) and retried. One bad row never
blocks the others: counts are clamped to [0, :data:`MAX_TOKENS`] and money to SQLite's 64-bit
range when a row is built (logged), and when a batch still fails its rows are written one by
one: a row the database refuses for its own content is dropped with a log line naming its job,
the others are written (or kept for a retry when the database itself is the problem).

Group commit: rows queued with :meth:`Ledger.submit` are committed by the writer thread, every
row queued at that moment in one transaction, and at most one commit per
:data:`COMMIT_INTERVAL_S` while rows keep coming (a row after a quiet spell is committed at
once; a busy agent commits ~20 times a second instead of once per job, each commit being an
fsync with `synchronous=FULL`). :meth:`Ledger.flush` and :meth:`Ledger.close` commit what is
queued without waiting for the interval, so a clean stop loses nothing; a row is durable once
its commit returned (:meth:`Ledger.record` commits before it returns).

Usage from the agent (the writer thread keeps the event loop off the disk)::

    ledger = Ledger()                 # data_dir()/ledger.sqlite3
    detach = agent.events.subscribe(JobFinished, job_recorder(ledger))
    ...
    detach(); ledger.close()          # flushes what is queued

Reading (the dashboard): :meth:`Ledger.dashboard` gathers everything a window shows in one
call; run it with `await asyncio.to_thread(ledger.dashboard)` from the GUI.
"""

from __future__ import annotations

import enum
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from usepod_desktop.core import paths
from usepod_desktop.core.config import REMOTE_KINDS
from usepod_desktop.core.errors import LedgerError
from usepod_desktop.core.listeners import Listeners
from usepod_desktop.core.money import UpstreamRates as _UpstreamPrice
from usepod_desktop.core.money import (
    earnings_nusd,
    gross_nusd,
    nusd_to_usd,
    upstream_cost_nusd,
    usd_text,
)

if TYPE_CHECKING:
    from usepod_desktop.core.events import JobFinished
    from usepod_desktop.core.executor import JobOutcome

__all__ = [
    "DEFAULT_SOURCES",
    "ESTIMATE_NOTE",
    "LEDGER_FILE_NAME",
    "Dashboard",
    "DayTotals",
    "JobRow",
    "Ledger",
    "LedgerError",
    "ModelTotals",
    "Totals",
    "default_ledger_path",
    "job_recorder",
]

log = logging.getLogger(__name__)

LEDGER_FILE_NAME = "ledger.sqlite3"
ESTIMATE_NOTE = "estimated: the coordinator settles the payout from its own token count"
#: Sources whose jobs count in the aggregates unless told otherwise ("test" jobs from
#: "Send test job" and "sandbox" jobs from the local demo coordinator are not paid).
DEFAULT_SOURCES: tuple[str, ...] = ("coordinator",)
SOURCES: tuple[str, ...] = ("coordinator", "sandbox", "test")
OUTCOMES: tuple[str, ...] = ("done", "error", "cancelled")
#: Sources whose done jobs carry gross and earnings (a test job is never billed).
BILLED_SOURCES = frozenset({"coordinator", "sandbox"})
#: Rows kept in memory while the database cannot be written.
MAX_UNSAVED = 10_000
#: While rows wait in memory, the writer thread retries this often (seconds).
RETRY_S = 30.0
#: The writer thread commits at most this often while rows keep coming (seconds): the rows
#: queued meanwhile go in the next commit (group commit). flush() and close() do not wait.
COMMIT_INTERVAL_S = 0.05
#: Most rows in one transaction of the writer thread.
MAX_BATCH = 1000
#: The writer connection's SQLite page cache (KiB). Appending rows touches few pages (the
#: tails of the table and the time indexes, one leaf of the job-id index), so SQLite's 2 MiB
#: default only grew the agent's memory with the file (~1.3 MB over 10,000 jobs); the file
#: stays in the OS cache either way.
WRITER_CACHE_KIB = 256
BUSY_TIMEOUT_MS = 5_000
#: Largest token count a row stores (a backend's wrapped -1 is 2**64-1): larger is clamped.
MAX_TOKENS = 2**31 - 1
#: SQLite INTEGER range: money outside it is clamped (only absurd prices get there).
INT64_MAX = 2**63 - 1
_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _UseDefault(enum.Enum):
    TOKEN = 0


#: For a `sources` argument: the ledger's own default (`None` means every source).
USE_DEFAULT = _UseDefault.TOKEN
SourcesArg = Iterable[str] | None | _UseDefault

# ---------------------------------------------------------------------------------------------
# Rows


def _to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MS


def _from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _clamp(value: int, low: int, high: int, job_id: str, name: str) -> int:
    """`value` within [low, high]; a value outside is logged (with its job) and clamped."""
    if low <= value <= high:
        return value
    clamped = min(max(value, low), high)
    shown = str(value) if abs(value) < 10**30 else f"a {len(str(abs(value)))}-digit number"
    log.warning("ledger: job %s: %s %s out of range; recorded as %d", job_id, name, shown, clamped)
    return clamped


@dataclass(frozen=True, slots=True)
class JobRow:
    """One ledger row. Money in nano-USD, prices in micro-USD per 1M tokens, times UTC."""

    job_id: str
    model_id: str
    backend: str
    backend_kind: str
    source: str
    format: str
    started_at: datetime
    ended_at: datetime
    ttfb_ms: float | None
    duration_ms: int
    input_tokens: int
    output_tokens: int
    bytes_relayed: int
    outcome: str  # done / error / cancelled
    error_code: str | None
    error_message: str | None
    input_per_1m: int
    output_per_1m: int
    gross_nusd: int
    earnings_nusd: int
    upstream_cost_nusd: int | None

    @classmethod
    def from_outcome(
        cls,
        outcome: JobOutcome,
        *,
        source: str | None = None,
        backend_kind: str | None = None,
        upstream_price: _UpstreamPrice | None = None,
    ) -> JobRow:
        """The row for a finished job. `source` overrides `outcome.source` (the sandbox demo
        passes "sandbox"); `backend_kind` and `upstream_price` override the outcome's own
        (the executor sets them from the route that served the job)."""
        src = source or outcome.source or "coordinator"
        if outcome.cancelled:
            result = "cancelled"
        elif outcome.error_code is not None:
            result = "error"
        else:
            result = "done"
        job = outcome.job_id
        tokens = (
            _clamp(outcome.input_tokens, 0, MAX_TOKENS, job, "input_tokens"),
            _clamp(outcome.output_tokens, 0, MAX_TOKENS, job, "output_tokens"),
        )
        prices = (
            _clamp(outcome.input_per_1m, 0, INT64_MAX, job, "input_per_1m"),
            _clamp(outcome.output_per_1m, 0, INT64_MAX, job, "output_per_1m"),
        )
        billed = result == "done" and src in BILLED_SOURCES
        kind = backend_kind or outcome.backend_kind or outcome.backend
        if upstream_price is None:
            upstream_price = outcome.upstream
        upstream: int | None = None
        if upstream_price is not None:
            try:
                upstream = upstream_cost_nusd(*tokens, upstream_price)
            except (ArithmeticError, ValueError):  # a non-finite upstream price
                log.warning("ledger: job %s: upstream cost not computable; left unknown", job)
            else:
                upstream = _clamp(upstream, 0, INT64_MAX, job, "upstream_cost_nusd")
        gross = gross_nusd(*tokens, *prices) if billed else 0
        earned = earnings_nusd(*tokens, *prices) if billed else 0
        return cls(
            job_id=outcome.job_id,
            model_id=outcome.model_id,
            backend=outcome.backend,
            backend_kind=kind,
            source=src,
            format=outcome.format,
            started_at=outcome.started_at,
            ended_at=outcome.ended_at,
            ttfb_ms=outcome.ttfb_ms,
            duration_ms=_clamp(int(outcome.duration_ms), 0, INT64_MAX, job, "duration_ms"),
            input_tokens=tokens[0],
            output_tokens=tokens[1],
            bytes_relayed=_clamp(outcome.bytes_relayed, 0, INT64_MAX, job, "bytes_relayed"),
            outcome=result,
            error_code=None if outcome.cancelled else outcome.error_code,
            error_message=outcome.message if result != "done" else None,
            input_per_1m=prices[0],
            output_per_1m=prices[1],
            gross_nusd=_clamp(gross, 0, INT64_MAX, job, "gross_nusd"),
            earnings_nusd=_clamp(earned, 0, INT64_MAX, job, "earnings_nusd"),
            upstream_cost_nusd=upstream,
        )

    @property
    def byok(self) -> bool:
        return self.backend_kind in REMOTE_KINDS

    @property
    def net_nusd(self) -> int:
        """Earnings less the known upstream cost."""
        return self.earnings_nusd - (self.upstream_cost_nusd or 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ISO times, money as exact dollar strings plus the nano-USD integers."""
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat()
        data["ended_at"] = self.ended_at.isoformat()
        for key in ("gross", "earnings", "upstream_cost"):
            data[f"{key}_usd"] = usd_text(data[f"{key}_nusd"])
        return data

    def _params(self) -> tuple[Any, ...]:
        return (
            self.job_id,
            self.model_id,
            self.backend,
            self.backend_kind,
            self.source,
            self.format,
            _to_ms(self.started_at),
            _to_ms(self.ended_at),
            self.ttfb_ms,
            self.duration_ms,
            self.input_tokens,
            self.output_tokens,
            self.bytes_relayed,
            self.outcome,
            self.error_code,
            self.error_message,
            self.input_per_1m,
            self.output_per_1m,
            self.gross_nusd,
            self.earnings_nusd,
            self.upstream_cost_nusd,
        )


_ROW_COLUMNS = (
    "job_id, model_id, backend, backend_kind, source, format, started_at_ms, ended_at_ms, "
    "ttfb_ms, duration_ms, input_tokens, output_tokens, bytes_relayed, outcome, error_code, "
    "error_message, input_per_1m, output_per_1m, gross_nusd, earnings_nusd, upstream_cost_nusd"
)
_INSERT = f"INSERT OR IGNORE INTO jobs ({_ROW_COLUMNS}) VALUES ({', '.join('?' * 21)})"


def _row_from_db(r: Sequence[Any]) -> JobRow:
    return JobRow(
        job_id=r[0],
        model_id=r[1],
        backend=r[2],
        backend_kind=r[3],
        source=r[4],
        format=r[5],
        started_at=_from_ms(r[6]),
        ended_at=_from_ms(r[7]),
        ttfb_ms=r[8],
        duration_ms=r[9],
        input_tokens=r[10],
        output_tokens=r[11],
        bytes_relayed=r[12],
        outcome=r[13],
        error_code=r[14],
        error_message=r[15],
        input_per_1m=r[16],
        output_per_1m=r[17],
        gross_nusd=r[18],
        earnings_nusd=r[19],
        upstream_cost_nusd=r[20],
    )


# ---------------------------------------------------------------------------------------------
# Schema: MIGRATIONS[i] takes the database from user_version i to i + 1, in one transaction.

#: The columns of schema version 1 (copied by migration 2; frozen, whatever _ROW_COLUMNS becomes).
_V1_COLUMNS = (
    "id, job_id, model_id, backend, backend_kind, source, format, started_at_ms, ended_at_ms, "
    "ttfb_ms, duration_ms, input_tokens, output_tokens, bytes_relayed, outcome, error_code, "
    "error_message, input_per_1m, output_per_1m, gross_nusd, earnings_nusd, upstream_cost_nusd"
)
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """
        CREATE TABLE jobs (
            id                 INTEGER PRIMARY KEY,
            job_id             TEXT    NOT NULL UNIQUE,
            model_id           TEXT    NOT NULL,
            backend            TEXT    NOT NULL,
            backend_kind       TEXT    NOT NULL,
            source             TEXT    NOT NULL,
            format             TEXT    NOT NULL DEFAULT 'openai',
            started_at_ms      INTEGER NOT NULL,
            ended_at_ms        INTEGER NOT NULL,
            ttfb_ms            REAL,
            duration_ms        INTEGER NOT NULL DEFAULT 0,
            input_tokens       INTEGER NOT NULL DEFAULT 0,
            output_tokens      INTEGER NOT NULL DEFAULT 0,
            bytes_relayed      INTEGER NOT NULL DEFAULT 0,
            outcome            TEXT    NOT NULL CHECK (outcome IN ('done','error','cancelled')),
            error_code         TEXT,
            error_message      TEXT,
            input_per_1m       INTEGER NOT NULL,   -- micro-USD per 1M tokens, in force
            output_per_1m      INTEGER NOT NULL,
            gross_nusd         INTEGER NOT NULL,   -- nano-USD, estimated
            earnings_nusd      INTEGER NOT NULL,   -- nano-USD, provider share, estimated
            upstream_cost_nusd INTEGER             -- nano-USD, BYOK upstream bill when known
        )
        """,
        "CREATE INDEX jobs_ended ON jobs (ended_at_ms)",
        "CREATE INDEX jobs_model_ended ON jobs (model_id, ended_at_ms)",
    ),
    # 2: a job id may come back (the coordinator reuses it after the first job ended): one row
    # per run, keyed by (job_id, started_at_ms, ended_at_ms); the same run written twice is
    # still one row.
    (
        """
        CREATE TABLE jobs_v2 (
            id                 INTEGER PRIMARY KEY,
            job_id             TEXT    NOT NULL,
            model_id           TEXT    NOT NULL,
            backend            TEXT    NOT NULL,
            backend_kind       TEXT    NOT NULL,
            source             TEXT    NOT NULL,
            format             TEXT    NOT NULL DEFAULT 'openai',
            started_at_ms      INTEGER NOT NULL,
            ended_at_ms        INTEGER NOT NULL,
            ttfb_ms            REAL,
            duration_ms        INTEGER NOT NULL DEFAULT 0,
            input_tokens       INTEGER NOT NULL DEFAULT 0,
            output_tokens      INTEGER NOT NULL DEFAULT 0,
            bytes_relayed      INTEGER NOT NULL DEFAULT 0,
            outcome            TEXT    NOT NULL CHECK (outcome IN ('done','error','cancelled')),
            error_code         TEXT,
            error_message      TEXT,
            input_per_1m       INTEGER NOT NULL,   -- micro-USD per 1M tokens, in force
            output_per_1m      INTEGER NOT NULL,
            gross_nusd         INTEGER NOT NULL,   -- nano-USD, estimated
            earnings_nusd      INTEGER NOT NULL,   -- nano-USD, provider share, estimated
            upstream_cost_nusd INTEGER,            -- nano-USD, BYOK upstream bill when known
            UNIQUE (job_id, started_at_ms, ended_at_ms)
        )
        """,
        f"INSERT INTO jobs_v2 ({_V1_COLUMNS}) SELECT {_V1_COLUMNS} FROM jobs",
        "DROP TABLE jobs",
        "ALTER TABLE jobs_v2 RENAME TO jobs",
        "CREATE INDEX jobs_ended ON jobs (ended_at_ms)",
        "CREATE INDEX jobs_model_ended ON jobs (model_id, ended_at_ms)",
        "CREATE INDEX jobs_job_id ON jobs (job_id)",
    ),
]

SCHEMA_VERSION = len(MIGRATIONS)


def default_ledger_path() -> Path:
    return paths.data_dir() / LEDGER_FILE_NAME


def _describe(path: Path, exc: BaseException) -> str:
    """One line for the operator: the file, what went wrong, what to do."""
    text = str(exc).strip() or type(exc).__name__
    lower = text.lower()
    if "locked" in lower or "busy" in lower:
        return (
            f"earnings ledger {path} is locked by another program: close the other "
            "usepod-desktop (or the tool that has it open); jobs are kept in memory until then"
        )
    if "full" in lower:
        return f"earnings ledger {path}: the disk is full; free some space so jobs are recorded"
    if isinstance(exc, _NewerSchema):
        return (
            f"earnings ledger {path} was written by a newer usepod-desktop ({text}); "
            "update the app or move the file aside to start a new ledger"
        )
    if isinstance(exc, sqlite3.DatabaseError) and (
        "not a database" in lower or "malformed" in lower or "corrupt" in lower
    ):
        return (
            f"earnings ledger {path} is damaged ({text}): quit the app and move the file "
            "aside to start a new ledger; served jobs are not recorded until then"
        )
    return (
        f"cannot use earnings ledger {path} ({text}): check that its folder exists and is "
        "writable; served jobs are not recorded until then"
    )


class _NewerSchema(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Aggregates


@dataclass(frozen=True, slots=True)
class Totals:
    """Figures over a set of jobs. Money in nano-USD (estimates)."""

    jobs: int = 0
    done: int = 0
    errors: int = 0
    cancelled: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    gross_nusd: int = 0
    earnings_nusd: int = 0
    #: None when no job in the set has a known upstream cost (no BYOK job, or prices unknown).
    upstream_cost_nusd: int | None = None
    median_ttfb_ms: float | None = None

    @property
    def success_rate(self) -> float | None:
        """done / (done + errors); cancelled jobs are neither. None without such jobs."""
        finished = self.done + self.errors
        return None if finished == 0 else self.done / finished

    @property
    def net_nusd(self) -> int:
        """Estimated earnings less the known upstream cost (the BYOK margin)."""
        return self.earnings_nusd - (self.upstream_cost_nusd or 0)

    @property
    def gross_usd(self) -> Decimal:
        return nusd_to_usd(self.gross_nusd)

    @property
    def earnings_usd(self) -> Decimal:
        return nusd_to_usd(self.earnings_nusd)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["success_rate"] = self.success_rate
        data["net_nusd"] = self.net_nusd
        for key in ("gross", "earnings", "upstream_cost", "net"):
            data[f"{key}_usd"] = usd_text(data[f"{key}_nusd"])
        return data


@dataclass(frozen=True, slots=True)
class ModelTotals:
    model_id: str
    totals: Totals

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, **self.totals.to_dict()}


@dataclass(frozen=True, slots=True)
class DayTotals:
    day: date  # local calendar day
    totals: Totals

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), **self.totals.to_dict()}


PERIODS: tuple[str, ...] = ("today", "last_7_days", "last_30_days", "all_time")
PERIOD_LABELS: dict[str, str] = {
    "today": "Today",
    "last_7_days": "Last 7 days",
    "last_30_days": "Last 30 days",
    "all_time": "All time",
}


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Everything the earnings window shows, read in one go."""

    generated_at: datetime
    periods: dict[str, Totals]  # keys: PERIODS
    per_model: list[ModelTotals]  # all time, highest earnings first
    per_day: list[DayTotals]  # the last 30 local days, oldest first, zeros filled
    recent: list[JobRow]  # newest first
    problem: str | None
    note: str = ESTIMATE_NOTE

    def to_dict(self) -> dict[str, Any]:
        return {
            "note": self.note,
            "generated_at": self.generated_at.isoformat(),
            "periods": {k: v.to_dict() for k, v in self.periods.items()},
            "per_model": [m.to_dict() for m in self.per_model],
            "per_day": [d.to_dict() for d in self.per_day],
            "recent": [r.to_dict() for r in self.recent],
            "problem": self.problem,
        }


_SELECT_STATS = """
    SELECT k,
        COUNT(*),
        COALESCE(SUM(outcome = 'done'), 0),
        COALESCE(SUM(outcome = 'error'), 0),
        COALESCE(SUM(outcome = 'cancelled'), 0),
        COALESCE(SUM(input_tokens), 0),
        COALESCE(SUM(output_tokens), 0),
        COALESCE(SUM(gross_nusd), 0),
        COALESCE(SUM(earnings_nusd), 0),
        SUM(upstream_cost_nusd)
    FROM sel GROUP BY k
"""
_SELECT_MEDIAN = """
    SELECT k, AVG(ttfb_ms) FROM (
        SELECT k, ttfb_ms,
            ROW_NUMBER() OVER (PARTITION BY k ORDER BY ttfb_ms) AS rn,
            COUNT(*) OVER (PARTITION BY k) AS n
        FROM sel WHERE ttfb_ms IS NOT NULL
    ) WHERE rn IN ((n + 1) / 2, (n + 2) / 2) GROUP BY k
"""


def _totals_from(row: Sequence[Any], median: float | None) -> Totals:
    return Totals(
        jobs=row[1],
        done=row[2],
        errors=row[3],
        cancelled=row[4],
        input_tokens=row[5],
        output_tokens=row[6],
        gross_nusd=row[7],
        earnings_nusd=row[8],
        upstream_cost_nusd=row[9],
        median_ttfb_ms=median,
    )


# ---------------------------------------------------------------------------------------------
# The ledger


class _FlushMarker:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _row_of(
    outcome: JobOutcome | JobRow,
    source: str | None,
    upstream_price: _UpstreamPrice | None,
    backend_kind: str | None,
) -> JobRow | None:
    """The ledger row of a finished job; None (logged) when it cannot be built."""
    if isinstance(outcome, JobRow):
        return outcome
    try:
        return JobRow.from_outcome(
            outcome, source=source, upstream_price=upstream_price, backend_kind=backend_kind
        )
    except Exception:
        log.exception("ledger: cannot build a row for a finished job")
        return None


def job_recorder(ledger: Ledger, *, source: str | None = None) -> Callable[[JobFinished], None]:
    """The `JobFinished` handler that queues each finished job on `ledger` (through its writer
    thread): `agent.events.subscribe(JobFinished, job_recorder(ledger))`. `source="sandbox"`
    marks coordinator jobs as sandbox jobs (the demo mode); test jobs stay "test"."""

    def record(event: JobFinished) -> None:
        outcome = event.outcome
        src = source if source is not None and outcome.source == "coordinator" else None
        ledger.submit(outcome, source=src)

    return record


#: Errors that come from a row's content rather than from the database file.
_ROW_ERRORS: tuple[type[BaseException], ...] = (
    OverflowError,
    ValueError,
    TypeError,
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
)


def _safe_id(job_id: object) -> str:
    return repr(job_id)[:60] if not isinstance(job_id, str) or not job_id.isprintable() else job_id


class Ledger:
    """The job ledger in one SQLite file (WAL, `synchronous=FULL`: a committed row survives a
    crash of the process and of the machine).

    `path`: default `data_dir()/ledger.sqlite3`. `create=False` leaves a missing file alone and
    reads as empty (the `earnings` command). `clock` returns an aware UTC "now"; `tz` is the
    zone for day boundaries (None: the system's local time). `sources`: the sources the
    aggregates count by default (None: all). `retention_days`: rows older than this are pruned
    when the ledger opens (None: keep everything). `busy_timeout_ms`: how long a write waits
    for another program's lock before the row is kept in memory and :attr:`problem` is set.
    `commit_interval_s`: the writer thread's group commit (at most one commit this often while
    submitted rows keep coming; :meth:`flush` and :meth:`close` do not wait for it).

    Thread safety: writes go through one connection under a lock, reads through another; any
    thread may call any method. Aggregates block on disk: from the GUI use `asyncio.to_thread`.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        create: bool = True,
        clock: Callable[[], datetime] = _utc_now,
        tz: tzinfo | None = None,
        sources: Iterable[str] | None = DEFAULT_SOURCES,
        retention_days: float | None = None,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        commit_interval_s: float = COMMIT_INTERVAL_S,
    ) -> None:
        self.path = Path(path) if path is not None else default_ledger_path()
        if str(self.path) == ":memory:":
            raise ValueError("the ledger needs a file (it uses two connections)")
        self.create = create
        self.clock = clock
        self.tz = tz
        self.sources: tuple[str, ...] | None = None if sources is None else tuple(sources)
        self.retention_days = retention_days
        self.busy_timeout_ms = busy_timeout_ms
        self.commit_interval_s = commit_interval_s
        #: One line (the file and what to do) while the ledger cannot be used, else None.
        self.problem: str | None = None
        #: Called with the new `problem` (a str, or None when it clears), from any thread.
        self.on_problem: Listeners[[str | None]] = Listeners("ledger problem callback", log)
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._writer_conn: sqlite3.Connection | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self._reader_is_empty = False
        self._unsaved: deque[JobRow] = deque(maxlen=MAX_UNSAVED)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        #: Set by flush() and close(): the writer thread commits without waiting the interval.
        self._hurry = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Rows the database refused for their content (dropped, each logged).
        self.dropped_rows = 0
        #: Transactions that wrote rows and committed (each is one fsync).
        self.commits = 0

    # ---- opening -----------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    def _connect(self, *, reading: bool = False) -> sqlite3.Connection:
        """Open (creating and migrating as needed) a connection; raises sqlite3.Error/OSError.
        For reading, a missing file with `create=False` gives an empty in-memory ledger."""
        if reading and not self.create and not self.path.exists():
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            _migrate(conn)
            self._reader_is_empty = True
            return conn
        # 0600 in a 0700 directory (POSIX): the ledger tells who earns what from which model;
        # SQLite gives its -wal / -shm files the database file's mode.
        paths.create_private_file(self.path)
        conn = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.busy_timeout_ms / 1000,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.debug("ledger %s: journal mode %s", self.path, mode)
            conn.execute("PRAGMA synchronous = FULL")
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _writer(self) -> sqlite3.Connection:
        if self._writer_conn is None:
            self._writer_conn = self._connect()
            self._writer_conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            if self.retention_days is not None:
                self._prune_locked(self.retention_days)
        return self._writer_conn

    def _reader(self) -> sqlite3.Connection:
        if self._reader_conn is not None and self._reader_is_empty and self.path.exists():
            self._reader_conn.close()  # the file appeared since: read it
            self._reader_conn = None
        if self._reader_conn is None:
            self._reader_is_empty = False
            self._reader_conn = self._connect(reading=True)
        return self._reader_conn

    def check(self) -> str | None:
        """Open the database now (creating/migrating it); returns :attr:`problem`."""
        with self._write_lock:
            try:
                self._writer()
                self._set_problem(None)
            except Exception as exc:
                self._fail_write(exc)
        return self.problem

    # ---- problems ----------------------------------------------------------------------

    def _set_problem(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        self.problem = problem
        if problem is None:
            log.info("earnings ledger %s: recording again", self.path)
        else:
            log.warning("%s", problem)
        self.on_problem.emit(problem)

    def _fail_write(self, exc: BaseException) -> None:
        conn, self._writer_conn = self._writer_conn, None
        if conn is not None:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            conn.close()
        self._set_problem(_describe(self.path, exc))

    # ---- writing -----------------------------------------------------------------------

    def record(
        self,
        outcome: JobOutcome | JobRow,
        *,
        source: str | None = None,
        upstream_price: _UpstreamPrice | None = None,
        backend_kind: str | None = None,
    ) -> bool:
        """Write one finished job and commit, in the calling thread (blocks on disk: the agent
        subscribes :func:`job_recorder`, which writes from a thread). Never raises: on failure logs,
        sets :attr:`problem`, keeps the row for a retry and returns False."""
        row = _row_of(outcome, source, upstream_price, backend_kind)
        if row is None:
            return False
        return self._write([row])

    def record_many(self, rows: Iterable[JobOutcome | JobRow]) -> bool:
        """Write several jobs in one transaction (imports, tests)."""
        built = [r if isinstance(r, JobRow) else JobRow.from_outcome(r) for r in rows]
        return self._write(built)

    def submit(
        self,
        outcome: JobOutcome | JobRow,
        *,
        source: str | None = None,
        upstream_price: _UpstreamPrice | None = None,
        backend_kind: str | None = None,
    ) -> None:
        """Queue a job for the writer thread and return at once (safe on the event loop).
        It is committed within :attr:`commit_interval_s` (group commit, see the module
        docstring); :meth:`flush` commits what is queued at once and waits for that."""
        row = _row_of(outcome, source, upstream_price, backend_kind)
        if row is None:
            return
        if self._closed:
            log.warning("ledger closed: job %s written synchronously", row.job_id)
            self._write([row])
            return
        self._ensure_thread()
        self._queue.put(row)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until every submitted job was written (or failed); False on timeout."""
        if self._thread is None or not self._thread.is_alive():
            return True
        marker = _FlushMarker()
        self._queue.put(marker)
        self._hurry.set()
        return marker.done.wait(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._writer_main, name="ledger-writer", daemon=True)
        self._thread.start()

    def _writer_main(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        last_commit = -float("inf")
        while True:
            try:
                item = get(timeout=RETRY_S if self._unsaved else None)
            except queue.Empty:
                self._write([])  # retry what waits in memory
                continue
            batch = [item]
            # Group commit: let rows gather until `commit_interval_s` after the last commit (a
            # row after a quiet spell goes at once), then take every queued one. One sleep, not
            # a wake-up per row; flush() and close() end the sleep (they set `_hurry` after
            # queueing their marker, so the marker is always taken below).
            if not (isinstance(item, _FlushMarker) or item is _STOP):
                wait = last_commit + self.commit_interval_s - time.monotonic()
                if wait > 0:
                    self._hurry.wait(wait)
            self._hurry.clear()
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            rows = [x for x in batch if type(x) is JobRow]
            if rows or self._unsaved:
                self._write(rows)
                # a full batch leaves more behind: the next one goes without waiting
                last_commit = time.monotonic() if len(batch) < MAX_BATCH else -float("inf")
            for x in batch:
                if isinstance(x, _FlushMarker):
                    x.done.set()
            if any(x is _STOP for x in batch):
                return

    def _write(self, rows: list[JobRow]) -> bool:
        with self._write_lock:
            pending = [*self._unsaved, *rows]
            if not pending:
                return True
            try:
                conn = self._writer()
            except Exception as exc:  # the file, not the rows: keep them for a retry
                self._fail_write(exc)
                self._unsaved.extend(rows)
                return False
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_INSERT, [r._params() for r in pending])
                conn.execute("COMMIT")
                self.commits += 1
            except _ROW_ERRORS:
                # Something in the rows (not the database) was refused: write them one by one
                # so the bad one cannot hold the others back.
                self._rollback()
                return self._write_each(pending)
            except Exception as exc:
                self._fail_write(exc)
                self._unsaved.extend(rows)
                return False
            self._unsaved.clear()
            self._set_problem(None)
            return True

    def _rollback(self) -> None:
        conn = self._writer_conn
        if conn is not None and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._fail_write(sqlite3.OperationalError("rollback failed"))

    def _write_each(self, pending: list[JobRow]) -> bool:
        """Write `pending` one row per transaction (under the write lock). A row refused for
        its content is dropped and logged; a database failure keeps the unwritten rows."""
        self._unsaved.clear()
        for i, row in enumerate(pending):
            try:
                conn = self._writer()
            except Exception as exc:
                self._fail_write(exc)
                self._unsaved.extend(pending[i:])
                return False
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(_INSERT, row._params())
                conn.execute("COMMIT")
                self.commits += 1
            except _ROW_ERRORS as exc:
                self._rollback()
                self.dropped_rows += 1
                log.error(
                    "ledger %s: job %s not recorded, the database refused its row (%s: %s)",
                    self.path,
                    _safe_id(row.job_id),
                    type(exc).__name__,
                    str(exc)[:200],
                )
            except Exception as exc:
                self._fail_write(exc)
                self._unsaved.extend(pending[i:])
                return False
        self._set_problem(None)
        return True

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran (a later row is then written synchronously)."""
        return self._closed

    @property
    def unsaved(self) -> int:
        """Rows waiting in memory because the database could not be written."""
        return len(self._unsaved)

    def prune(self, older_than_days: float) -> int:
        """Delete rows whose job ended more than `older_than_days` ago; returns how many.
        Raises LedgerError when the database cannot be used."""
        with self._write_lock:
            try:
                self._writer()
                return self._prune_locked(older_than_days)
            except LedgerError:
                raise
            except Exception as exc:
                self._fail_write(exc)
                raise LedgerError(self.problem or str(exc)) from exc

    def _prune_locked(self, older_than_days: float) -> int:
        assert self._writer_conn is not None
        cutoff = _to_ms(self.clock() - timedelta(days=older_than_days))
        cur = self._writer_conn.execute("DELETE FROM jobs WHERE ended_at_ms < ?", (cutoff,))
        return cur.rowcount

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the writer thread, close the files."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._hurry.set()
            self._thread.join(timeout)
        with self._write_lock:
            if self._unsaved:
                log.warning(
                    "ledger %s: %d job(s) could not be recorded", self.path, len(self._unsaved)
                )
            if self._writer_conn is not None:
                self._writer_conn.close()
                self._writer_conn = None
        with self._read_lock:
            if self._reader_conn is not None:
                self._reader_conn.close()
                self._reader_conn = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading -----------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._read([(sql, params)])[0]

    def _read(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
        """Run read statements in one transaction (one consistent snapshot). Raises
        LedgerError (and sets :attr:`problem`) when the database cannot be read."""
        with self._read_lock:
            try:
                conn = self._reader()
                conn.execute("BEGIN")
                try:
                    return [conn.execute(sql, params).fetchall() for sql, params in statements]
                finally:
                    conn.execute("COMMIT")
            except Exception as exc:
                conn_, self._reader_conn = self._reader_conn, None
                if conn_ is not None:
                    conn_.close()
                message = _describe(self.path, exc)
                self._set_problem(message)
                raise LedgerError(message) from exc

    def _source_filter(self, sources: SourcesArg) -> tuple[str, list[Any]]:
        chosen = self.sources if sources is USE_DEFAULT else sources
        if chosen is None:
            return "", []
        values = list(chosen)
        return f" AND source IN ({', '.join('?' * len(values))})", values

    def _aggregate(self, sel_sql: str, params: Sequence[Any]) -> dict[Any, Totals]:
        with_sel = f"WITH sel AS ({sel_sql}) "
        stats, medians = self._read(
            [(with_sel + _SELECT_STATS, params), (with_sel + _SELECT_MEDIAN, params)]
        )
        median_of = {k: m for k, m in medians}
        return {row[0]: _totals_from(row, median_of.get(row[0])) for row in stats}

    def totals(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        sources: SourcesArg = USE_DEFAULT,
    ) -> Totals:
        """Figures for the jobs that ended in [since, until) (open ends when None)."""
        where, params = self._range(since, until, sources)
        found = self._aggregate(f"SELECT 0 AS k, * FROM jobs WHERE 1{where}", params)
        return found.get(0, Totals())

    def _range(
        self,
        since: datetime | None,
        until: datetime | None,
        sources: SourcesArg,
    ) -> tuple[str, list[Any]]:
        where, params = "", []
        if since is not None:
            where += " AND ended_at_ms >= ?"
            params.append(_to_ms(since))
        if until is not None:
            where += " AND ended_at_ms < ?"
            params.append(_to_ms(until))
        src_where, src_params = self._source_filter(sources)
        return where + src_where, params + src_params

    # periods, in local time

    def now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)

    def local_today(self) -> date:
        now = self.now()
        return (now.astimezone(self.tz) if self.tz is not None else now.astimezone()).date()

    def local_midnight(self, day: date) -> datetime:
        """The start of a local calendar day, as an aware datetime."""
        if self.tz is not None:
            return datetime(day.year, day.month, day.day, tzinfo=self.tz)
        return datetime(day.year, day.month, day.day).astimezone()

    def since_days(self, days: int) -> datetime:
        """The start of the local day `days - 1` days ago: `days=1` is today's midnight,
        `days=7` covers today and the 6 days before."""
        return self.local_midnight(self.local_today() - timedelta(days=days - 1))

    def today(self, *, sources: SourcesArg = USE_DEFAULT) -> Totals:
        return self.totals(self.since_days(1), sources=sources)

    def last_7_days(self, *, sources: SourcesArg = USE_DEFAULT) -> Totals:
        return self.totals(self.since_days(7), sources=sources)

    def last_30_days(self, *, sources: SourcesArg = USE_DEFAULT) -> Totals:
        return self.totals(self.since_days(30), sources=sources)

    def all_time(self, *, sources: SourcesArg = USE_DEFAULT) -> Totals:
        return self.totals(sources=sources)

    def periods(self, *, sources: SourcesArg = USE_DEFAULT) -> dict[str, Totals]:
        """Today, last 7 days, last 30 days and all time, keyed as in :data:`PERIODS`."""
        return {
            "today": self.today(sources=sources),
            "last_7_days": self.last_7_days(sources=sources),
            "last_30_days": self.last_30_days(sources=sources),
            "all_time": self.all_time(sources=sources),
        }

    def per_model(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        sources: SourcesArg = USE_DEFAULT,
    ) -> list[ModelTotals]:
        """Figures per model for the jobs that ended in [since, until), highest estimated
        earnings first (then most jobs, then model id)."""
        where, params = self._range(since, until, sources)
        found = self._aggregate(f"SELECT model_id AS k, * FROM jobs WHERE 1{where}", params)
        models = [ModelTotals(k, t) for k, t in found.items()]
        models.sort(key=lambda m: (-m.totals.earnings_nusd, -m.totals.jobs, m.model_id))
        return models

    def per_day(self, days: int = 30, *, sources: SourcesArg = USE_DEFAULT) -> list[DayTotals]:
        """One entry per local calendar day, the last `days` days (today included), oldest
        first; days without jobs are zeros."""
        if days < 1:
            return []
        today = self.local_today()
        day_list = [today - timedelta(days=i) for i in range(days - 1, -1, -1)]
        bounds: list[Any] = []
        for i, day in enumerate(day_list):
            bounds += [
                i,
                _to_ms(self.local_midnight(day)),
                _to_ms(self.local_midnight(day + timedelta(days=1))),
            ]
        values = ", ".join(["(?, ?, ?)"] * len(day_list))
        src_where, src_params = self._source_filter(sources)
        sel = (
            f"WITH days(d, lo, hi) AS (VALUES {values}) "
            "SELECT days.d AS k, jobs.* FROM days JOIN jobs "
            f"ON jobs.ended_at_ms >= days.lo AND jobs.ended_at_ms < days.hi WHERE 1{src_where}"
        )
        # `WITH sel AS (WITH days ...)`: SQLite accepts a nested WITH in a CTE body.
        found = self._aggregate(sel, bounds + src_params)
        return [DayTotals(day, found.get(i, Totals())) for i, day in enumerate(day_list)]

    def recent(self, limit: int = 50, *, sources: SourcesArg = USE_DEFAULT) -> list[JobRow]:
        """The last `limit` jobs, newest first."""
        src_where, src_params = self._source_filter(sources)
        rows = self._query(
            f"SELECT {_ROW_COLUMNS} FROM jobs WHERE 1{src_where} "
            "ORDER BY ended_at_ms DESC, id DESC LIMIT ?",
            [*src_params, limit],
        )
        return [_row_from_db(r) for r in rows]

    def rows(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        sources: SourcesArg = None,
    ) -> Iterator[JobRow]:
        """Every row that ended in [since, until), oldest first (exports). All sources unless
        told otherwise."""
        where, params = self._range(since, until, sources)
        for r in self._query(
            f"SELECT {_ROW_COLUMNS} FROM jobs WHERE 1{where} ORDER BY ended_at_ms, id", params
        ):
            yield _row_from_db(r)

    def count(self) -> int:
        """Rows in the ledger, every source."""
        return int(self._query("SELECT COUNT(*) FROM jobs")[0][0])

    def dashboard(self, *, recent: int = 50, days: int = 30) -> Dashboard:
        """Everything the earnings window shows. Raises LedgerError (one line) when the
        database cannot be read."""
        return Dashboard(
            generated_at=self.now(),
            periods=self.periods(),
            per_model=self.per_model(),
            per_day=self.per_day(days),
            recent=self.recent(recent),
            problem=self.problem,
        )


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply MIGRATIONS in order from the file's `user_version`, each in one transaction."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise _NewerSchema(f"schema {version}, this version knows {len(MIGRATIONS)}")
    for target in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # re-read under the write lock: another process may have migrated meanwhile
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current >= target:
                conn.execute("COMMIT")
                continue
            for statement in MIGRATIONS[target - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.debug("ledger schema migrated to version %d", target)
