"""The first CLI commands, run as a user would: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from usepod_desktop import __version__


def cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "usepod_desktop", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=os.environ.copy(),
        cwd=cwd,
        timeout=60,
    )


@pytest.fixture
def config_file(tmp_path: Path, reference_toml: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(reference_toml)
    return path


def test_version_both_ways() -> None:
    assert cli("--version").stdout.strip() == f"usepod-desktop {__version__}"
    assert cli("version").stdout.strip() == f"usepod-desktop {__version__}"


def test_validate_ok_and_global_flags_either_side(config_file: Path) -> None:
    for args in (
        ("--config", str(config_file), "validate"),
        ("validate", "--config", str(config_file)),
    ):
        out = cli(*args)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "ok: parsed 2 backend(s)"


def test_validate_invalid_prints_one_line(config_file: Path) -> None:
    config_file.write_text(
        config_file.read_text().replace("max_concurrent        = 8", "max_concurrent = 999")
    )
    out = cli("validate", "--config", str(config_file))
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "limits.max_concurrent" in lines[0]


def test_validate_missing_config(tmp_path: Path) -> None:
    out = cli("validate", cwd=tmp_path)
    assert out.returncode != 0
    assert "no agent.toml found" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "usepod-desktop setup" in out.stderr
    out = cli("run", "--config", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "usepod-desktop setup" in out.stderr


@pytest.mark.parametrize("command", ["validate", "run", "discover", "enroll"])
def test_config_saved_as_utf16_is_one_line_naming_the_encoding(
    config_file: Path, command: str
) -> None:
    """What Notepad's "Unicode" writes: one line, never a UnicodeDecodeError traceback."""
    config_file.write_bytes(config_file.read_text().encode("utf-16"))
    out = cli(command, "--config", str(config_file))
    # validate exits 1 on an invalid file, as the reference does; the others 2
    assert out.returncode == (1 if command == "validate" else 2), out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "saved as UTF-16, not UTF-8" in lines[0] and "Traceback" not in out.stderr
    config_file.write_bytes("# caf\xe9\n".encode("latin-1") + b"[coordinator]\n")
    out = cli(command, "--config", str(config_file))
    assert out.returncode == (1 if command == "validate" else 2)
    assert "is not UTF-8 text (byte 0xe9 at offset 5)" in out.stderr


def test_config_with_a_utf8_bom_is_accepted(config_file: Path) -> None:
    config_file.write_bytes(b"\xef\xbb\xbf" + config_file.read_bytes())
    out = cli("validate", "--config", str(config_file))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok: parsed 2 backend(s)"


def test_validate_ws_needs_allow_insecure(config_file: Path) -> None:
    config_file.write_text(config_file.read_text().replace("wss://", "ws://"))
    assert cli("validate", "--config", str(config_file)).returncode != 0
    assert cli("--allow-insecure", "validate", "--config", str(config_file)).returncode == 0


def test_enroll_creates_identity_and_prints(config_file: Path, isolated_home: Path) -> None:
    out = cli("enroll", "--config", str(config_file))
    assert out.returncode == 0, out.stderr
    key = isolated_home / ".usepod-agent" / "identity.key"
    assert key.is_file()
    lines = out.stdout.splitlines()
    assert lines[0].startswith("public_key: ") and len(lines[0]) == len("public_key: ") + 44
    assert lines[1] == "provider_id: <not yet enrolled>"
    assert lines[2] == "enrollment_code: POD-ENROLL-7K9X4LM2"
    assert cli("enroll", "--config", str(config_file)).stdout == out.stdout  # same key next time


def test_keys_status_without_key() -> None:
    out = cli("keys", "status", "VENICE_API_KEY")
    assert out.returncode == 0
    assert "VENICE_API_KEY" in out.stdout and "no key" in out.stdout


def test_keys_set_warns_for_a_name_no_backend_uses(config_file: Path) -> None:
    """Issue 19 item 16: a typo in NAME is said, not silently stored for nothing."""
    assert 'api_key_env = "OPENROUTER_API_KEY"' in config_file.read_text()
    typo = cli("keys", "set", "OPENROUTR_API_KEY", "--config", str(config_file), stdin="sk-x\n")
    assert typo.returncode == 0, typo.stderr
    assert "warning: no backend in" in typo.stderr and "OPENROUTR_API_KEY" in typo.stderr
    assert "they use OPENROUTER_API_KEY" in typo.stderr
    assert "sk-x" not in typo.stderr + typo.stdout
    right = cli("keys", "set", "OPENROUTER_API_KEY", "--config", str(config_file), stdin="sk-y\n")
    assert right.returncode == 0 and "warning" not in right.stderr
    assert "stored OPENROUTER_API_KEY" in right.stdout


@pytest.mark.parametrize("command", ["enroll", "version"])
def test_every_command_help_has_a_description(command: str) -> None:
    out = cli(command, "--help")
    assert out.returncode == 0
    _usage, _, rest = out.stdout.partition("\n\n")
    description = rest.split("\n\n")[0].strip()
    assert description and not description.startswith(("options:", "positional")), out.stdout


def test_short_config_flag_either_side(config_file: Path) -> None:
    for args in (("-c", str(config_file), "validate"), ("validate", "-c", str(config_file))):
        out = cli(*args)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "ok: parsed 2 backend(s)"


@pytest.mark.parametrize(
    "breakage",
    [
        ("max_concurrent        = 8", "max_concurrent = 999"),  # a bad value
        ("[pricing]", "[pricing"),  # not TOML
        ('kind = "vllm"', 'kind = "gpu-cluster"'),  # unknown backend kind
    ],
)
def test_validate_invalid_exits_1_with_one_line(
    config_file: Path, breakage: tuple[str, str]
) -> None:
    text = config_file.read_text()
    assert breakage[0] in text
    config_file.write_text(text.replace(breakage[0], breakage[1], 1))
    out = cli("validate", "-c", str(config_file))
    assert out.returncode == 1, out.stderr  # the reference's exit code for an invalid file
    assert out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith("error: ") and "Traceback" not in out.stderr


def test_validate_missing_file_exits_1(tmp_path: Path) -> None:
    out = cli("validate", "-c", str(tmp_path / "nope.toml"))
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--log-level", "loud", "version"), "invalid log level 'loud'"),
        (("version", "--log-level", "loud"), "invalid log level 'loud'"),
        (("run", "--grace", "-3"), "--grace: must be at least 0 seconds"),
        (("run", "--grace", "nan"), "--grace: must be at least 0 seconds"),
        (("run", "--grace", "soon"), "--grace: expected a number of seconds"),
        (("run", "--demo-interval", "0"), "--demo-interval: must be more than 0 seconds"),
        (("run", "--demo-interval", "-1"), "--demo-interval: must be more than 0 seconds"),
    ],
)
def test_bad_values_are_argparse_errors(args: tuple[str, ...], message: str) -> None:
    out = cli(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("level", ["DEBUG", "warn", "Error", "info", "warning"])
def test_good_log_levels_are_accepted(config_file: Path, level: str) -> None:
    out = cli("--log-level", level, "validate", "-c", str(config_file))
    assert out.returncode == 0, out.stderr
