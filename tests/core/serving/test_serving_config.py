"""The `[serving]` table of agent.toml: parsing, every validation rule, comment-keeping saves."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from usepod_desktop.core.config import (
    WEEKDAYS,
    ConfigError,
    ScheduleWindow,
    ServingConfig,
    parse_config,
    render_config,
    save_config,
)

MINIMAL = """
[coordinator]
url = "wss://coord.example/provider/connect"

[pricing]
default_input_per_1m = 500_000
default_output_per_1m = 750_000
"""

FULL = (
    MINIMAL
    + """
[serving]
when = "idle"                   # serve only while I am away
idle_minutes = 0.5
pause_when_running = ["steam", "obs64.exe"]
on_battery = "serve"
gpu_temp_pause_c = 85
gpu_temp_resume_c = 75
free_gpu_memory_on_pause = true
min_switch_s = 30

[[serving.schedule]]
days = ["mon", "TUE"]
start = "22:00"
end = "07:00"

[[serving.schedule]]
start = "12:00"
end = "13:30"
"""
)


def test_absent_table_gives_the_defaults(reference_toml: str) -> None:
    assert parse_config(MINIMAL).serving == ServingConfig()
    assert parse_config(reference_toml).serving == ServingConfig()
    d = ServingConfig()
    assert (d.when, d.on_battery, d.min_switch_s, d.schedule) == ("always", "pause", 60.0, ())


def test_full_table_parses() -> None:
    s = parse_config(FULL).serving
    assert s.when == "idle"
    assert s.idle_minutes == 0.5
    assert s.pause_when_running == ("steam", "obs64.exe")
    assert s.on_battery == "serve"
    assert (s.gpu_temp_pause_c, s.gpu_temp_resume_c, s.effective_resume_c) == (85, 75, 75)
    assert s.free_gpu_memory_on_pause is True
    assert s.min_switch_s == 30
    assert s.schedule == (
        ScheduleWindow("22:00", "07:00", ("mon", "tue")),
        ScheduleWindow("12:00", "13:30", WEEKDAYS),
    )


def test_resume_threshold_defaults_to_five_below() -> None:
    s = parse_config(MINIMAL + "\n[serving]\ngpu_temp_pause_c = 80\n").serving
    assert s.effective_resume_c == 75


@pytest.mark.parametrize(
    ("body", "field", "needle"),
    [
        ('when = "sometimes"', "serving.when", '"always" or "idle"'),
        ("idle_minutes = 0", "serving.idle_minutes", "> 0"),
        ("idle_minutes = -3", "serving.idle_minutes", "within"),
        ('idle_minutes = "ten"', "serving.idle_minutes", "number"),
        ('pause_when_running = "steam"', "serving.pause_when_running", "array"),
        ('pause_when_running = [""]', "serving.pause_when_running", "non-empty"),
        ('on_battery = "maybe"', "serving.on_battery", '"pause" or "serve"'),
        ("gpu_temp_pause_c = 500", "serving.gpu_temp_pause_c", "within"),
        (
            "gpu_temp_pause_c = 80\ngpu_temp_resume_c = 85",
            "serving.gpu_temp_resume_c",
            "below",
        ),
        ('free_gpu_memory_on_pause = "yes"', "serving.free_gpu_memory_on_pause", "true or false"),
        ("min_switch_s = -1", "serving.min_switch_s", "within"),
        ("colour = 1", "serving.colour", "unknown key"),
        ('schedule = "nights"', "serving.schedule", "array of tables"),
        ('[[serving.schedule]]\nstart = "22:00"', "serving.schedule[0].end", "missing"),
        (
            '[[serving.schedule]]\nstart = "25:00"\nend = "07:00"',
            "serving.schedule[0].start",
            "HH:MM",
        ),
        ('[[serving.schedule]]\nstart = "7:00"\nend = "08:00"', "serving.schedule[0].start", "HH"),
        (
            '[[serving.schedule]]\nstart = "07:00"\nend = "07:00"',
            "serving.schedule[0].end",
            "differ",
        ),
        (
            '[[serving.schedule]]\ndays = ["monday"]\nstart = "07:00"\nend = "08:00"',
            "serving.schedule[0].days",
            "mon, tue",
        ),
        (
            '[[serving.schedule]]\ndays = []\nstart = "07:00"\nend = "08:00"',
            "serving.schedule[0].days",
            "non-empty",
        ),
        (
            '[[serving.schedule]]\nstart = "07:00"\nend = "08:00"\nevery = 2',
            "serving.schedule[0].every",
            "unknown key",
        ),
    ],
)
def test_each_rule_names_its_field(body: str, field: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + "\n[serving]\n" + body + "\n")
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith("serving")
    assert needle in message
    assert "\n" not in message


def test_default_serving_is_not_written(reference_toml: str) -> None:
    c = parse_config(reference_toml)
    assert "[serving]" not in render_config(c, reference_toml)
    assert "[serving]" not in render_config(c)


def test_round_trip_keeps_comments_and_int_spelling(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(FULL, encoding="utf-8")
    c = parse_config(FULL)
    assert render_config(c, FULL) == FULL  # nothing changed: byte-identical
    changed = c.replace(serving=dataclasses.replace(c.serving, min_switch_s=90.0))
    save_config(changed, path)
    text = path.read_text(encoding="utf-8")
    assert "min_switch_s = 90\n" in text
    assert "# serve only while I am away" in text
    assert parse_config(text) == changed


def test_new_schedule_and_rules_are_saved_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    base = parse_config(MINIMAL)
    serving = ServingConfig(
        when="idle",
        idle_minutes=2.5,
        pause_when_running=("Game.exe",),
        schedule=(ScheduleWindow("23:00", "06:00", ("sat", "sun")),),
    )
    save_config(base.replace(serving=serving), path)
    assert parse_config(path.read_text(encoding="utf-8")).serving == serving
    # back to the defaults: the schedule goes, keys already present stay (with default values)
    save_config(base, path)
    assert parse_config(path.read_text(encoding="utf-8")).serving == ServingConfig()
    assert "schedule" not in path.read_text(encoding="utf-8")
