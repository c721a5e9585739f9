"""The log filter redacts keys, bearer tokens and identity secrets in every handler."""

from __future__ import annotations

import logging
from pathlib import Path

from usepod_desktop.core import logsetup


def test_file_and_stderr_are_redacted(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = logsetup.setup_logging("debug", directory=tmp_path)
    assert path is not None
    logsetup.register_secret("custom-registered-key-value")
    log = logging.getLogger("t")
    log.info("calling with Authorization: Bearer abcdefghijklmnop123")
    log.info("key %s loaded", "sk-or-v1-0123456789abcdefghij")
    log.info("identity secret: nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    log.warning("host_token=ht_abcdefghijklmnop and custom-registered-key-value")
    try:
        raise ValueError("failed with sk-abcdefghijklmnopqrst")
    except ValueError:
        log.exception("boom")
    for handler in logging.getLogger().handlers:
        handler.flush()
    text = path.read_text() + capsys.readouterr().err
    for leaked in (
        "abcdefghijklmnop123",
        "sk-or-v1-0123456789",
        "nWGxne/9WmC6hEr0",
        "ht_abcdefghijklmnop",
        "custom-registered-key-value",
        "sk-abcdefghijklmnopqrst",
    ):
        assert leaked not in text
    assert text.count(logsetup.REDACTED) >= 6
    assert "calling with Authorization: Bearer [REDACTED]" in text
    logging.getLogger().handlers.clear()


def test_qasync_debug_chatter_is_kept_out(tmp_path: Path) -> None:
    logsetup.setup_logging("debug", directory=tmp_path)
    assert logging.getLogger("qasync").getEffectiveLevel() == logging.INFO
    logging.getLogger().handlers.clear()


def test_ordinary_text_is_untouched() -> None:
    line = "backend vllm @ http://127.0.0.1:8000 healthy in 3 ms, 2 models"
    assert logsetup.redact(line) == line


def test_each_process_kind_rotates_its_own_file(tmp_path: Path) -> None:
    """The tray app, `run` and the service never share a rotating file (on Windows the
    rotation of a shared file fails and one process loses every later record)."""
    from usepod_desktop.commands.run import process_kind
    from usepod_desktop.core import service

    files = {
        kind: logsetup.setup_logging("info", directory=tmp_path, kind=kind)
        for kind in ("app", "run", "service")
    }
    logging.getLogger().handlers.clear()
    assert len(set(files.values())) == 3
    assert files["app"] == tmp_path / logsetup.LOG_FILE_NAME  # what the "View log" window reads
    assert process_kind({}) == "run"
    assert process_kind({logsetup.PROCESS_KIND_ENV: "service"}) == "service"
    # the service's unit and plist tell `run` it is the service
    unit = service.render_systemd_unit(["/x/usepod-desktop", "run"])
    assert f"Environment={logsetup.PROCESS_KIND_ENV}=service" in unit.splitlines()
    assert f"<key>{logsetup.PROCESS_KIND_ENV}</key>" in service.render_launchd_plist(["/x"])


def test_a_registered_prefix_of_a_key_leaves_no_tail() -> None:
    """A registered secret that is only the start of a longer key-shaped token (another key
    of the same vendor) must not leave the rest of that token in the text."""
    logsetup.register_secret("sk-prefix01")
    out = logsetup.redact("upstream said: bad key sk-prefix01qrstuvwxyz0123")
    assert "qrstuvwxyz" not in out and "prefix01" not in out
    assert out == "upstream said: bad key [REDACTED]"
