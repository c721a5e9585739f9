"""The pure serving decision: every rule, schedules across midnight and DST, hysteresis,
min_switch_s and manual pauses, with no sensor and no real clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from usepod_desktop.core.config import ScheduleWindow, ServingConfig
from usepod_desktop.core.serving.policy import (
    ManualPause,
    Memory,
    Paused,
    Readings,
    Serve,
    decide,
    in_schedule,
    manual_until,
    next_window_start,
    parse_duration,
)

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=PARIS)  # a Wednesday
NIGHTS = (ScheduleWindow("22:00", "07:00", ("mon", "tue", "wed", "thu", "fri")),)
AWAY = Readings(idle_s=3600.0, processes=frozenset(), on_battery=False, gpu_temp_c=50.0)


def rules(**kw: object) -> ServingConfig:
    kw.setdefault("min_switch_s", 0.0)
    return ServingConfig(**kw)  # type: ignore[arg-type]


def run(
    r: ServingConfig, readings: Readings = AWAY, now: datetime = NOW, **kw: object
) -> Serve | Paused:
    decision, _ = decide(r, readings, now, tz=PARIS, **kw)  # type: ignore[arg-type]
    return decision


def test_defaults_serve() -> None:
    assert isinstance(run(ServingConfig()), Serve)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide(ServingConfig(), AWAY, datetime(2026, 1, 1))


@pytest.mark.parametrize(
    ("local", "inside"),
    [
        (datetime(2026, 11, 25, 21, 59), False),  # wed before start
        (datetime(2026, 11, 25, 22, 0), True),  # wed at start
        (datetime(2026, 11, 26, 3, 0), True),  # thu 03:00 belongs to wed's window
        (datetime(2026, 11, 26, 6, 59), True),
        (datetime(2026, 11, 26, 7, 0), False),  # end is exclusive
        (datetime(2026, 11, 28, 23, 0), False),  # sat: not a listed day
        (datetime(2026, 11, 28, 3, 0), True),  # sat 03:00: fri's window
        (datetime(2026, 11, 29, 3, 0), False),  # sun 03:00: sat has no window
    ],
)
def test_schedule_across_midnight(local: datetime, inside: bool) -> None:
    assert in_schedule(NIGHTS, local.replace(tzinfo=PARIS)) is inside
    decision = run(rules(schedule=NIGHTS), now=local.replace(tzinfo=PARIS))
    assert isinstance(decision, Serve) is inside
    if not inside:
        assert isinstance(decision, Paused) and decision.kinds == ["schedule"]


def test_schedule_resume_time_and_text() -> None:
    decision = run(rules(schedule=NIGHTS))
    assert isinstance(decision, Paused)
    assert decision.resumes_at == datetime(2026, 11, 25, 22, 0, tzinfo=PARIS)
    assert decision.text == "outside the serving schedule; resumes at 22:00"
    # friday noon -> next start is friday 22:00; saturday noon -> monday 22:00
    sat = datetime(2026, 11, 28, 12, 0, tzinfo=PARIS)
    sat_decision = run(rules(schedule=NIGHTS), now=sat)
    assert isinstance(sat_decision, Paused)
    assert sat_decision.resumes_at == datetime(2026, 11, 30, 22, 0, tzinfo=PARIS)
    assert "Mon 22:00" in sat_decision.text


def test_schedule_follows_the_wall_clock_across_dst() -> None:
    # Europe/Paris leaves DST on 2026-10-25 at 03:00 local (01:00 UTC): the night window
    # 22:00-07:00 of saturday 24th is 9 wall-clock hours but 10 real ones.
    window = (ScheduleWindow("22:00", "07:00"),)
    ends_at = datetime(2026, 10, 25, 6, 0, tzinfo=UTC)  # 07:00 CET
    assert in_schedule(window, (ends_at - timedelta(minutes=1)).astimezone(PARIS))
    assert not in_schedule(window, ends_at.astimezone(PARIS))
    # the next start, seen from sunday 12:00 CET, is 22:00 CET = 21:00 UTC (it was 20:00 UTC
    # the day before, in CEST)
    sunday = datetime(2026, 10, 25, 11, 0, tzinfo=UTC).astimezone(PARIS)
    assert next_window_start(window, sunday) == datetime(2026, 10, 25, 21, 0, tzinfo=UTC)
    saturday = datetime(2026, 10, 24, 10, 0, tzinfo=UTC).astimezone(PARIS)
    assert next_window_start(window, saturday) == datetime(2026, 10, 24, 20, 0, tzinfo=UTC)
    # spring forward (2026-03-29 02:00 -> 03:00): a window starting at 02:30 never sees 02:30;
    # serving starts with the new offset's hour, and the window still ends at its wall time
    spring = (ScheduleWindow("02:30", "05:00"),)
    assert in_schedule(spring, datetime(2026, 3, 29, 1, 30, tzinfo=UTC).astimezone(PARIS))
    assert not in_schedule(spring, datetime(2026, 3, 29, 3, 0, tzinfo=UTC).astimezone(PARIS))


def test_idle_rule() -> None:
    r = rules(when="idle", idle_minutes=10)
    busy = run(r, Readings(idle_s=30.0))
    assert isinstance(busy, Paused) and busy.kinds == ["idle"]
    assert busy.text == "you are using the computer; resumes after 10 idle minutes"
    assert busy.resumes_at == NOW.astimezone(UTC) + timedelta(seconds=570)
    assert isinstance(run(r, Readings(idle_s=600.0)), Serve)
    assert isinstance(run(rules(idle_minutes=10), Readings(idle_s=1.0)), Serve)  # when=always


def test_unknown_idle_time_never_counts_as_away() -> None:
    decision = run(rules(when="idle"), Readings(idle_s=None))
    assert isinstance(decision, Paused) and decision.kinds == ["idle"]
    assert "unknown" in decision.text and decision.resumes_at is None


def test_process_rule_is_case_insensitive_and_exe_agnostic() -> None:
    r = rules(pause_when_running=("Steam", "obs64.exe"))
    decision = run(r, Readings(processes=frozenset({"steam.exe", "bash"})))
    assert isinstance(decision, Paused) and decision.kinds == ["process"]
    assert decision.text == "Steam running" and decision.resumes_at is None
    both = run(r, Readings(processes=frozenset({"obs64", "steam"})))
    assert isinstance(both, Paused) and both.text == "Steam, obs64.exe running"
    assert isinstance(run(r, Readings(processes=frozenset({"steamwebhelper"}))), Serve)


def test_battery_rule() -> None:
    on_battery = Readings(on_battery=True)
    decision = run(rules(on_battery="pause"), on_battery)
    assert isinstance(decision, Paused) and decision.kinds == ["battery"]
    assert isinstance(run(rules(on_battery="serve"), on_battery), Serve)
    assert isinstance(run(rules(on_battery="pause"), Readings(on_battery=None)), Serve)


def test_temperature_hysteresis() -> None:
    r = rules(gpu_temp_pause_c=85, gpu_temp_resume_c=75)
    memory = Memory()
    seen = []
    for temp in (70, 84, 85, 80, 76, 75, 80, 84, 86):
        decision, memory = decide(r, Readings(gpu_temp_c=temp), NOW, memory, tz=PARIS)
        seen.append(decision.serving)
    assert seen == [True, True, False, False, False, True, True, True, False]
    assert isinstance(decision, Paused) and decision.kinds == ["temperature"]
    assert decision.text == "GPU at 86 °C; resumes at 75 °C or below"


def test_unknown_temperature_does_not_pause_but_says_so() -> None:
    decision = run(rules(gpu_temp_pause_c=85), Readings(gpu_temp_c=None))
    assert isinstance(decision, Serve)
    assert decision.notes and "unknown" in decision.notes[0]


def test_every_reason_is_reported_in_order() -> None:
    r = rules(
        schedule=NIGHTS,
        when="idle",
        pause_when_running=("game",),
        on_battery="pause",
        gpu_temp_pause_c=80,
    )
    readings = Readings(idle_s=0.0, processes=frozenset({"game"}), on_battery=True, gpu_temp_c=90)
    decision = run(r, readings, manual=ManualPause(None))
    assert isinstance(decision, Paused)
    assert decision.kinds == ["manual", "schedule", "idle", "process", "battery", "temperature"]
    assert decision.resumes_at is None  # the manual pause has no end


def test_resumes_at_is_the_latest_known_end() -> None:
    until = NOW.astimezone(UTC) + timedelta(hours=3)  # 15:00
    r = rules(schedule=(ScheduleWindow("14:00", "18:00"),))
    decision = run(r, manual=ManualPause(until))
    assert isinstance(decision, Paused) and decision.kinds == ["manual", "schedule"]
    assert decision.resumes_at == until
    assert "you paused it until 15:00" in decision.text


def test_manual_pause_expires_and_never_expires() -> None:
    until = NOW.astimezone(UTC) + timedelta(minutes=15)
    assert isinstance(run(rules(), manual=ManualPause(until)), Paused)
    assert isinstance(
        run(rules(), now=NOW + timedelta(minutes=15), manual=ManualPause(until)), Serve
    )
    forever = run(rules(), now=NOW + timedelta(days=400), manual=ManualPause(None))
    assert isinstance(forever, Paused) and forever.text == "you paused it until you resume"


def test_min_switch_holds_resume_but_not_pause() -> None:
    r = rules(when="idle", idle_minutes=1, min_switch_s=60)
    t0 = NOW
    d, m = decide(r, Readings(idle_s=120.0), t0, tz=PARIS)
    assert isinstance(d, Serve)  # the first decision is never held
    # the user comes back 5 s later: pausing is immediate
    d, m = decide(r, Readings(idle_s=0.0), t0 + timedelta(seconds=5), m, tz=PARIS)
    assert isinstance(d, Paused) and not d.held
    # idle again (readings say away) 30 s after the pause: held until 60 s have passed
    d, m = decide(r, Readings(idle_s=120.0), t0 + timedelta(seconds=35), m, tz=PARIS)
    assert isinstance(d, Paused) and d.held and d.kinds == ["idle"]
    assert d.resumes_at == (t0 + timedelta(seconds=65)).astimezone(UTC)
    assert "min_switch_s = 60 s" in d.text
    d, m = decide(r, Readings(idle_s=120.0), t0 + timedelta(seconds=64), m, tz=PARIS)
    assert isinstance(d, Paused) and d.held
    d, m = decide(r, Readings(idle_s=120.0), t0 + timedelta(seconds=65), m, tz=PARIS)
    assert isinstance(d, Serve)


def test_manual_resume_is_immediate_despite_min_switch() -> None:
    r = rules(min_switch_s=600)
    d, m = decide(r, AWAY, NOW, manual=ManualPause(None), tz=PARIS)
    assert isinstance(d, Paused)
    d, m = decide(r, AWAY, NOW + timedelta(seconds=1), m, manual=ManualPause(None), tz=PARIS)
    d, m = decide(r, AWAY, NOW + timedelta(seconds=2), m, manual=None, tz=PARIS)
    assert isinstance(d, Serve)


def test_manual_pause_ends() -> None:
    now = datetime(2026, 11, 25, 21, 30, tzinfo=PARIS)
    utc = now.astimezone(UTC)
    assert manual_until(now, for_s=900, tz=PARIS) == utc + timedelta(minutes=15)
    assert manual_until(now, for_s=3600, tz=PARIS) == utc + timedelta(hours=1)
    assert manual_until(now, tomorrow=True, tz=PARIS) == datetime(2026, 11, 26, 6, 0, tzinfo=PARIS)
    early = datetime(2026, 11, 26, 2, 0, tzinfo=PARIS)  # still "tonight": 06:00 the same day
    assert manual_until(early, tomorrow=True, tz=PARIS) == datetime(
        2026, 11, 26, 6, 0, tzinfo=PARIS
    )
    assert manual_until(now, until="18:00", tz=PARIS) == datetime(2026, 11, 26, 18, 0, tzinfo=PARIS)
    assert manual_until(now, until="23:00", tz=PARIS) == datetime(2026, 11, 25, 23, 0, tzinfo=PARIS)
    assert manual_until(now, tz=PARIS) is None
    with pytest.raises(ValueError, match="HH:MM"):
        manual_until(now, until="6pm", tz=PARIS)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("90s", 90), ("15", 900), ("1d", 86400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "10x", "1h30", "0m", "-5m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
