"""`config.problems`: every problem of a draft at once, each with its field path; the rules
that used to live only in the settings window (markup bound, key-name syntax, tokens-per-minute
bound, duplicates) are the core's now, for the strict loader, `validate`, the save and the GUI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from usepod_desktop.core import config as cfg
from usepod_desktop.core.config import (
    BackendConfig,
    ConfigError,
    ConfigProblem,
    ConfigProblemsError,
    LimitsConfig,
    parse_config,
    parse_toml,
    problems,
    save_config,
)

MINIMAL = """
[coordinator]
url = "wss://coord.example/provider/connect"

[pricing]
default_input_per_1m = 500_000
default_output_per_1m = 750_000
"""

OPENROUTER = 'kind = "openrouter"\napi_key_env = "OPENROUTER_API_KEY"'


def with_backends(*entries: str) -> str:
    return MINIMAL + "".join(f"\n[[backends]]\n{e}\n" for e in entries)


def paths(text: str) -> list[str]:
    return [p.path for p in problems(parse_toml(text))]


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        # the GUI capped markup at 1000 %, the core took any number >= 0
        (with_backends(OPENROUTER + "\nmarkup = 10.5"), "backends[0].markup", "at most 10"),
        # the GUI asked for an environment-variable name, the core took any string
        (
            with_backends('kind = "venice"\napi_key_env = "MY KEY"'),
            "backends[0].api_key_env",
            "letters, digits and _",
        ),
        (
            with_backends('kind = "venice"\napi_key_env = "1KEY"'),
            "backends[0].api_key_env",
            "not starting with a digit",
        ),
        # the GUI refused more than a trillion tokens per minute, the core took any int > 0
        (
            MINIMAL + "[limits]\nmax_tokens_per_minute = 1_000_000_000_001\n",
            "limits.max_tokens_per_minute",
            "at most 1_000_000_000_000",
        ),
        # duplicates: the GUI checked them on its own before Apply
        (
            with_backends(OPENROUTER, 'kind = "vllm"\nurl = "http://x:1"', OPENROUTER),
            "backends[2]",
            "duplicate of backends[0]",
        ),
    ],
)
def test_each_rule_moved_from_the_gui_is_a_core_problem_with_its_path(
    text: str, path: str, words: str
) -> None:
    found = problems(parse_toml(text))
    assert [p.path for p in found] == [path]
    assert found[0].message.startswith(f"{path}: ") and words in found[0].message
    assert words in found[0].detail and not found[0].detail.startswith(path)
    with pytest.raises(ConfigError) as raised:  # the strict loader: the same rule, one line
        parse_config(text)
    assert raised.value.field == path and "\n" not in raised.value.message


def test_the_bounds_themselves_are_valid() -> None:
    text = with_backends(OPENROUTER + "\nmarkup = 10") + (
        "[limits]\nmax_tokens_per_minute = 1_000_000_000_000\n"
    )
    assert problems(parse_toml(text)) == []
    c = parse_config(text)
    assert c.backends[0].markup == 10.0
    assert c.limits.max_tokens_per_minute == 10**12
    assert paths(with_backends('kind = "venice"\napi_key_env = "_My_Key9"')) == []


def test_every_problem_comes_at_once_each_with_its_field_path() -> None:
    text = (
        with_backends(
            'kind = "vllm"\nurl = "http://127.0.0.1:8000"',
            'kind = "ollama"\nurl = "not a url"',
            OPENROUTER + "\nmarkup = 50",
        )
        + '\n[pricing.models."org/m"]\ninput_per_1m = 5\n'
        + '[pricing.models."qwen"]\ninput_per_1m = -1\noutput_per_1m = 2\n'
        + "\n[limits]\nmax_concurrent = 999\n"
        + '\n[serving]\n[[serving.schedule]]\nstart = "25:00"\nend = "07:00"\n'
    )
    found = problems(parse_toml(text))
    assert [p.path for p in found] == [
        "backends[1].url",
        "backends[2].markup",
        'pricing.models."org/m".output_per_1m',
        "pricing.models.qwen.input_per_1m",
        "limits.max_concurrent",
        "serving.schedule[0].start",
    ]
    assert all(p.message.startswith(p.path + ": ") for p in found)
    with pytest.raises(ConfigError) as raised:  # strict: the first of them
        parse_config(text)
    assert raised.value.field == "backends[1].url"


def test_a_problem_is_reported_once_per_field() -> None:
    """Setting an invalid URL aside makes it missing ("required"): still one problem."""
    assert paths(with_backends('kind = "vllm"\nurl = "ftp://x"')) == ["backends[0].url"]


def test_a_valid_draft_has_no_problems_and_a_config_is_checked_as_written(
    reference_toml: str,
) -> None:
    assert problems(parse_toml(reference_toml)) == []
    config = parse_config(reference_toml)  # the reference example keeps loading unchanged
    assert problems(config) == []
    assert cfg.config_from_dict(cfg.config_to_dict(config)) == config
    bad = config.replace(
        limits=LimitsConfig(max_concurrent=0),
        backends=(*config.backends, BackendConfig(kind="ollama", url="nope")),
    )
    assert [p.path for p in problems(bad)] == ["backends[2].url", "limits.max_concurrent"]


def test_ws_is_a_problem_unless_insecure_is_allowed() -> None:
    raw = parse_toml(MINIMAL.replace("wss://", "ws://"))
    assert [p.path for p in problems(raw)] == ["coordinator.url"]
    assert problems(raw, allow_insecure=True) == []


def test_problems_does_not_change_the_draft_it_checks() -> None:
    raw = parse_toml(with_backends('kind = "vllm"\nurl = "bad"') + "[limits]\nmax_concurrent=0\n")
    before = repr(raw)
    assert len(problems(raw)) == 2
    assert repr(raw) == before


def test_check_backend_gives_every_problem_of_one_entry() -> None:
    found = cfg.check_backend({"kind": "venice", "api_key_env": "A B", "markup": -1}, 3)
    assert [p.path for p in found] == ["backends[3].api_key_env", "backends[3].markup"]
    found = cfg.check_backend({"kind": "ollama", "url": "x", "markup": 99})
    assert [p.path for p in found] == ["backends[0].url", "backends[0].markup"]
    assert cfg.check_backend({"kind": "vllm"}) == [
        ConfigProblem("backends[0].url", "backends[0].url: required for kind 'vllm'")
    ]
    assert cfg.check_backend({"kind": "openrouter", "api_key_env": "K", "markup": 0.2}) == []


def test_a_failed_save_names_every_problem_and_leaves_the_file_byte_identical(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agent.toml"
    text = with_backends(OPENROUTER) + "# keep me\n"
    path.write_bytes(text.encode())
    config = cfg.load_config(path)
    bad = config.replace(
        backends=(BackendConfig("openrouter", api_key_env="OPENROUTER_API_KEY", markup=20.0),),
        limits=LimitsConfig(max_concurrent=8, max_tokens_per_minute=10**13),
    )
    with pytest.raises(ConfigProblemsError) as raised:
        save_config(bad, path)
    assert [p.path for p in raised.value.problems] == [
        "backends[0].markup",
        "limits.max_tokens_per_minute",
    ]
    assert raised.value.field == "backends[0].markup" and "(and 1 more)" in str(raised.value)
    assert path.read_bytes() == text.encode()
    save_config(config.replace(limits=LimitsConfig(max_concurrent=3)), path)  # still savable
    assert cfg.load_config(path).limits.max_concurrent == 3


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usepod_desktop", "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_validate_prints_every_problem_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        with_backends('kind = "ollama"\nurl = "x"', OPENROUTER + "\nmarkup = 11")
        + "[limits]\nmax_concurrent = 0\n"
    )
    out = _validate(path)
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == [
        "backends[0].url",
        "backends[1].markup",
        "limits.max_concurrent",
    ]
    assert all(line.startswith("error: ") for line in lines)
