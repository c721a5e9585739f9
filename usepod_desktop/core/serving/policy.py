"""The serving decision: rules + sensor readings + clock -> serve, or paused with the reasons.

Pure: no sensor, no I/O, no global clock; the caller passes everything in, including the small
:class:`Memory` the previous call returned (temperature hysteresis latch, last switch time).

Rules (agent.toml `[serving]`):

- manual pause ("manual"): until a time, or until the user resumes (never resumes by itself);
- schedule ("schedule"): if any window exists, serve only inside one; windows are local
  wall-clock times, `end` before `start` crosses midnight and belongs to the day it starts on;
  evaluated on the local wall clock, so a DST change moves nothing ("22:00" stays 22:00);
- idle ("idle"): `when = "idle"` serves only after `idle_minutes` without user input; an
  unknown idle time pauses (we never pretend the user is away);
- process ("process"): any `pause_when_running` name (case-insensitive, with or without `.exe`);
- battery ("battery"): `on_battery = "pause"` pauses while on battery power;
- temperature ("temperature"): at or above `gpu_temp_pause_c` pause, and stay paused until the
  GPU is at or below the resume threshold (hysteresis); an unknown temperature does not pause.

Anti-flip-flop (`min_switch_s`): pausing is immediate (the owner needs the GPU now, or it is too
hot); resuming waits until the pause is at least `min_switch_s` old, so the advertised list
changes at most twice per `min_switch_s`. A manual resume is immediate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from usepod_desktop.core.config import WEEKDAYS, ScheduleWindow, ServingConfig, parse_clock

#: The pause reasons, in the order they are reported.
REASONS: tuple[str, ...] = ("manual", "schedule", "idle", "process", "battery", "temperature")

TOMORROW_AT = time(6, 0)


@dataclass(frozen=True, slots=True)
class Readings:
    """What the sensors say now. `None` = unknown on this computer."""

    idle_s: float | None = None
    processes: frozenset[str] = frozenset()  # lower-cased names of running processes
    on_battery: bool | None = None
    gpu_temp_c: float | None = None


@dataclass(frozen=True, slots=True)
class ManualPause:
    """A pause the user asked for; `until` None = until they resume."""

    until: datetime | None = None
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    kind: str  # one of REASONS
    text: str  # "you are using the computer; resumes after 10 idle minutes"
    resumes_at: datetime | None = None  # when this reason ends by itself, if known


@dataclass(frozen=True, slots=True)
class Serve:
    notes: tuple[str, ...] = ()  # e.g. "GPU temperature unknown: the temperature rule is off"

    @property
    def serving(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Paused:
    reasons: tuple[Reason, ...]
    resumes_at: datetime | None = None  # None: not known (depends on the user, a process...)
    notes: tuple[str, ...] = ()
    held: bool = False  # the rules allow serving but min_switch_s holds the pause a bit longer

    @property
    def serving(self) -> bool:
        return False

    @property
    def kinds(self) -> list[str]:
        return [r.kind for r in self.reasons]

    @property
    def text(self) -> str:
        return "; ".join(dict.fromkeys(r.text for r in self.reasons))


Decision = Serve | Paused


@dataclass(frozen=True, slots=True)
class Memory:
    """State carried from one decision to the next."""

    serving: bool | None = None  # None: no decision yet
    changed_at: datetime | None = None
    hot: bool = False
    extra: dict[str, object] = field(default_factory=dict)


def decide(
    rules: ServingConfig,
    readings: Readings,
    now: datetime,
    memory: Memory = Memory(),
    *,
    manual: ManualPause | None = None,
    tz: tzinfo | None = None,
) -> tuple[Decision, Memory]:
    """The decision for `now` (an aware datetime) and the memory for the next call.

    `tz`: the local time zone of the schedule (None: the system's)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now_utc = now.astimezone(UTC)
    local = now.astimezone(tz) if tz is not None else now.astimezone()
    reasons: list[Reason] = []
    notes: list[str] = []

    if manual is not None and (manual.until is None or manual.until > now_utc):
        if manual.until is None:
            text = "you paused it until you resume"
        else:
            text = f"you paused it until {_when(manual.until, local)}"
        reasons.append(Reason("manual", text, manual.until))

    if rules.schedule and not in_schedule(rules.schedule, local):
        start = next_window_start(rules.schedule, local)
        at = f"; resumes at {_when(start, local)}" if start is not None else ""
        reasons.append(Reason("schedule", f"outside the serving schedule{at}", start))

    if rules.when == "idle":
        needed = rules.idle_minutes * 60.0
        minutes = f"{rules.idle_minutes:g} idle minute{'s' if rules.idle_minutes != 1 else ''}"
        if readings.idle_s is None:
            reasons.append(
                Reason("idle", "idle time is unknown on this desktop; cannot tell you are away")
            )
        elif readings.idle_s < needed:
            reasons.append(
                Reason(
                    "idle",
                    f"you are using the computer; resumes after {minutes}",
                    now_utc + timedelta(seconds=needed - readings.idle_s),
                )
            )

    running = matching_processes(rules.pause_when_running, readings.processes)
    if running:
        reasons.append(Reason("process", f"{', '.join(running)} running"))

    if rules.on_battery == "pause" and readings.on_battery:
        reasons.append(Reason("battery", "on battery power"))

    hot = False
    if rules.gpu_temp_pause_c > 0:
        resume_c = rules.effective_resume_c
        t = readings.gpu_temp_c
        if t is None:
            hot = memory.hot
            if not hot:
                notes.append("GPU temperature unknown: the temperature rule cannot apply")
        elif t >= rules.gpu_temp_pause_c:
            hot = True
        elif memory.hot:
            hot = t > resume_c
        if hot:
            shown = f"GPU at {t:.0f} °C" if t is not None else "GPU was too hot"
            reasons.append(Reason("temperature", f"{shown}; resumes at {resume_c:g} °C or below"))

    want_serving = not reasons
    manual_active = any(r.kind == "manual" for r in reasons)
    # the end of a manual pause (the user resumed, or its time came) is never held
    manual_ended = memory.extra.get("manual_active") is True and not manual_active

    decision: Decision
    if want_serving:
        decision = Serve(tuple(notes))
        if memory.serving is False and memory.changed_at is not None and not manual_ended:
            hold_until = memory.changed_at + timedelta(seconds=rules.min_switch_s)
            if now_utc < hold_until:
                text = (
                    f"resuming at {_when(hold_until, local)} "
                    f"(no switch faster than min_switch_s = {rules.min_switch_s:g} s)"
                )
                kinds = [r.kind for r in _last_reasons(memory)]
                held = tuple(Reason(k, text, hold_until) for k in dict.fromkeys(kinds))
                decision = Paused(held, hold_until, tuple(notes), held=True)
    else:
        decision = Paused(tuple(reasons), _resumes_at(reasons), tuple(notes))

    serving = decision.serving
    changed_at = memory.changed_at
    if memory.serving is None or serving != memory.serving:
        changed_at = now_utc
    extra: dict[str, object] = {"manual_active": manual_active}
    if isinstance(decision, Paused):
        extra["reasons"] = decision.reasons
    return decision, Memory(serving, changed_at, hot, extra)


def _last_reasons(memory: Memory) -> tuple[Reason, ...]:
    last = memory.extra.get("reasons")
    if isinstance(last, tuple) and last:
        return last
    return (Reason("manual", ""),)


def _resumes_at(reasons: list[Reason]) -> datetime | None:
    """When every reason has ended by itself: the latest end, or None if one has no known end."""
    ends = [r.resumes_at for r in reasons]
    if not ends or any(e is None for e in ends):
        return None
    return max(e for e in ends if e is not None)


def matching_processes(names: tuple[str, ...], running: frozenset[str]) -> list[str]:
    """The configured names found among the running processes ("steam" matches "steam.exe")."""
    if not names or not running:
        return []
    normalised = {_stem(p) for p in running}
    return [n for n in names if _stem(n) in normalised]


def _stem(name: str) -> str:
    name = name.strip().lower()
    return name[:-4] if name.endswith(".exe") else name


def _minutes(hhmm: str) -> int:
    parsed = parse_clock(hhmm)
    assert parsed is not None
    return parsed[0] * 60 + parsed[1]


def in_schedule(windows: tuple[ScheduleWindow, ...], local: datetime) -> bool:
    """Whether the local wall-clock time `local` is inside one of the windows."""
    minute = local.hour * 60 + local.minute
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    for w in windows:
        start, end = _minutes(w.start), _minutes(w.end)
        if start < end:
            if today in w.days and start <= minute < end:
                return True
        else:  # crosses midnight: the part after midnight belongs to the day it started on
            if today in w.days and minute >= start:
                return True
            if yesterday in w.days and minute < end:
                return True
    return False


def next_window_start(windows: tuple[ScheduleWindow, ...], local: datetime) -> datetime | None:
    """The next time (UTC) a window opens, on the local wall clock of `local`'s zone."""
    tz = local.tzinfo
    best: datetime | None = None
    for offset in range(0, 8):
        day: date = local.date() + timedelta(days=offset)
        name = WEEKDAYS[day.weekday()]
        for w in windows:
            if name not in w.days:
                continue
            h, m = divmod(_minutes(w.start), 60)
            candidate = datetime.combine(day, time(h, m), tzinfo=tz).astimezone(UTC)
            if candidate > local.astimezone(UTC) and (best is None or candidate < best):
                best = candidate
        if best is not None:
            return best
    return best


def manual_until(
    now: datetime,
    *,
    for_s: float | None = None,
    until: str | None = None,
    tomorrow: bool = False,
    tz: tzinfo | None = None,
) -> datetime | None:
    """The end of a manual pause: `for_s` seconds, the next local `until` ("HH:MM"), the next
    local 06:00 (`tomorrow`), or None (until resumed)."""
    now_utc = now.astimezone(UTC)
    local = now.astimezone(tz) if tz is not None else now.astimezone()
    if for_s is not None:
        return now_utc + timedelta(seconds=for_s)
    target: time | None = None
    if until is not None:
        parsed = parse_clock(until)
        if parsed is None:
            raise ValueError(f'expected a 24-hour time "HH:MM", got {until!r}')
        target = time(*parsed)
    elif tomorrow:
        target = TOMORROW_AT
    if target is None:
        return None
    for offset in range(0, 3):
        day = local.date() + timedelta(days=offset)
        candidate = datetime.combine(day, target, tzinfo=local.tzinfo).astimezone(UTC)
        if candidate > now_utc:
            return candidate
    return None  # unreachable


def _when(at: datetime, local_now: datetime) -> str:
    """ "18:00", or "tomorrow 06:00", or "Sat 22:00" in the local zone of `local_now`."""
    local = at.astimezone(local_now.tzinfo)
    days = (local.date() - local_now.date()).days
    hhmm = local.strftime("%H:%M")
    if days == 0:
        return hhmm
    if days == 1:
        return f"tomorrow {hhmm}"
    return f"{WEEKDAYS[local.weekday()].capitalize()} {hhmm}"


def parse_duration(text: str) -> float:
    """ "30m", "1h", "90s", "1h30m", "45" (minutes) -> seconds. Raises ValueError."""
    text = text.strip().lower()
    if not text:
        raise ValueError("empty duration")
    if text.replace(".", "", 1).isdigit():
        return float(text) * 60.0
    total = 0.0
    number = ""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    for ch in text:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
        else:
            raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 1h, 1h30m)")
    if number or total <= 0:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30m, 1h, 1h30m)")
    return total
