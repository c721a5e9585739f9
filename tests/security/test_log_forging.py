"""Issue 12 item 9: remote text can neither forge log records nor wipe the log.

A hostile coordinator (written here, on 127.0.0.1) answers `auth_failed` with a reason that
holds line breaks of every kind, a fake record, terminal escapes and megabytes of filler; a
hostile backend does the same in its error body. The log file must keep exactly the real
records, escaped and bounded, and nothing may rotate away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from tests.security.hostile import http_server
from usepod_desktop.core import identity, logsetup, protocol
from usepod_desktop.core.backends.base import BackendError, JobRequest
from usepod_desktop.core.backends.vllm import VllmBackend
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.executor import Executor
from usepod_desktop.core.link import Link, LinkState
from usepod_desktop.core.text import safe_remote_text

RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
FORGED = "2026-11-29 12:00:00,000 INFO    usepod_desktop.core.ledger: payout sent to attacker"
HOSTILE = (
    "denied"
    + "".join(f"{sep}{FORGED}" for sep in ("\n", "\r", "\r\n", "\u2028", "\x85", "\x0b"))
    + "\x1b[2J\x1b]0;owned\x07\u202e"
    + "A" * (3 * 1024 * 1024)
)


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = logsetup.setup_logging("debug", directory=tmp_path / "logs")
    assert path is not None
    yield path
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "_usepod", False):
            logging.getLogger().removeHandler(handler)
            handler.close()


def records(path: Path) -> list[str]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text(encoding="utf-8").split("\n")


def assert_clean(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not any(line.startswith("2026-11-29 12:00:00,000") for line in text.split("\n"))
    assert "\x1b" not in text and "\r" not in text and "\u2028" not in text
    assert "\x85" not in text and "\u202e" not in text
    assert len(text) < 64 * 1024, len(text)
    assert list(path.parent.glob("*.log.1")) == []  # nothing rotated away


async def test_auth_failed_reason_cannot_forge_or_wipe_the_log(
    log_file: Path, tmp_path: Path
) -> None:
    async def coordinator(ws: ServerConnection) -> None:
        await ws.send(protocol.auth_challenge(b"n" * 32))
        await ws.recv()
        await ws.send(protocol.auth_failed(HOSTILE))

    logging.getLogger("secb.test").info("first real record")
    async with serve(coordinator, "127.0.0.1", 0, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]

        async def never() -> str:
            raise AssertionError("no capabilities after auth_failed")

        link = Link(
            f"ws://127.0.0.1:{port}/provider/connect",
            identity.load_or_create(tmp_path / "id.key"),
            Executor(),
            never,
            allow_insecure=True,
            backoff=Backoff(initial=5.0),
        )
        failed = asyncio.Event()
        link.on_status = lambda s: failed.set() if s.state == LinkState.AUTH_FAILED else None
        task = asyncio.create_task(link.run_forever())
        try:
            async with asyncio.timeout(10):
                await failed.wait()
        finally:
            await link.stop()
            await asyncio.gather(task, return_exceptions=True)
    logging.getLogger("secb.test").info("last real record")
    assert_clean(log_file)
    lines = records(log_file)
    assert "first real record" in lines[0]
    assert any("last real record" in line for line in lines)
    shown = link.last_auth_failure or ""
    assert shown.startswith("denied\\n2026-11-29") and "\\u2028" in shown
    assert len(shown) < 600 and shown.isprintable()
    assert f"[{len(HOSTILE)} chars]" in shown


async def test_backend_error_body_cannot_forge_or_rewrite_the_terminal(log_file: Path) -> None:
    async def chat(request: web.Request) -> web.Response:
        body = (
            '{"error":{"message":' + json.dumps("\x1b[2J\x1b]0;owned\x07" + HOSTILE[:4000]) + "}}"
        )
        return web.Response(status=500, text=body, content_type="application/json")

    async with http_server({("POST", "/v1/chat/completions"): chat}) as base:
        backend = VllmBackend(BackendConfig("vllm", base))
        try:
            with pytest.raises(BackendError) as info:

                async def sink(_: bytes) -> None:
                    return None

                await backend.execute(
                    JobRequest("00000000-0000-4000-8000-000000000001", "m", {"messages": []}),
                    sink,
                )
        finally:
            await backend.aclose()
    message = info.value.message
    assert message.isprintable() and "\x1b" not in message and len(message) <= 300
    logging.getLogger("usepod_desktop.core.executor").info("job x ended: %s", message)
    assert_clean(log_file)


def test_filter_escapes_and_bounds_any_record(log_file: Path) -> None:
    logging.getLogger("secb.test").warning("remote said: %s", HOSTILE)
    assert_clean(log_file)
    lines = records(log_file)
    continuation = [line for line in lines if line.startswith("    | ")]
    assert continuation and all(not RECORD.match(line) for line in continuation)
    assert "[cut: " in "".join(lines)


def test_safe_remote_text_is_one_bounded_printable_line() -> None:
    out = safe_remote_text(HOSTILE)
    assert out.isprintable() and len(out) < 530
    assert out.startswith("denied\\n2026-11-29 12:00:00,000 INFO")
    assert "\\u2028" in out and "\\x85" in out and "\\x1b" not in out[:20]
    assert safe_remote_text(b"\xff\x1b[1m") == "\ufffd\\x1b[1m"
    assert safe_remote_text("short") == "short"
