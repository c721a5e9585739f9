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
