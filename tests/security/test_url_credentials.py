"""Issue 12 item 11: a backend URL with credentials (`http://user:pass@host`) never shows
its userinfo in /metrics, `discover` output (table and --json), the log or a label.

The backends here are loopback fakes; one URL carries credentials, one points at a closed
port with credentials (so the error path that names the URL is exercised too).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tests.commands.test_discover import MakeFake, run_cli, write_config
from tests.core.test_metrics import FakeAgent, scrape
from tests.pairing_support import free_port
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.events import BackendStatusChanged
from usepod_desktop.core.logsetup import redact
from usepod_desktop.core.metrics import MetricsServer
from usepod_desktop.core.text import redact_url
from usepod_desktop.sandbox.fakes import FakeModel

PASSWORD = "hunter2-Secret-Pw"


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://operator:{PASSWORD}@", 1)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://u:{PASSWORD}@127.0.0.1:8000/v1", "http://***@127.0.0.1:8000/v1"),
        (f"https://{PASSWORD}@example.invalid", "https://***@example.invalid"),
        (f"http://u:{PASSWORD}@[::1]:8000", "http://***@[::1]:8000"),
        (f"http://u:p@ss:{PASSWORD}@127.0.0.1", "http://***@127.0.0.1"),
        ("http://127.0.0.1:8000/a@b", "http://127.0.0.1:8000/a@b"),
        ("http://localhost:8000", "http://localhost:8000"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert PASSWORD not in redact(f"GET {url} failed")


async def test_metrics_never_export_url_credentials() -> None:
    agent = FakeAgent()
    server = MetricsServer("127.0.0.1:0", agent)
    assert await server.start()
    try:
        label = BackendConfig("vllm", with_credentials("http://127.0.0.1:8000")).label
        agent.events.emit(BackendStatusChanged(label, True, "ok"))
        raw = f"llamacpp @ {with_credentials('http://127.0.0.1:8080')}"
        agent.events.emit(BackendStatusChanged(raw, False, "down"))
        samples = await scrape(server)
    finally:
        await server.stop()
    labels = [dict(key[1]).get("backend", "") for key in samples]
    assert PASSWORD not in repr(samples)
    assert "vllm @ http://***@127.0.0.1:8000" in labels
    assert "llamacpp @ http://***@127.0.0.1:8080" in labels


async def test_discover_output_never_shows_url_credentials(
    make_fake: MakeFake, tmp_path: Path
) -> None:
    vllm = await make_fake("vllm", [FakeModel("Qwen/Qwen3-8B", 32768)])
    closed = f"http://127.0.0.1:{free_port()}"
    path = write_config(
        tmp_path / "agent.toml",
        f'[[backends]]\nkind = "vllm"\nurl = "{with_credentials(vllm.url)}"\n\n'
        f'[[backends]]\nkind = "llamacpp"\nurl = "{with_credentials(closed)}"\n',
    )
    code, out, err = await run_cli("discover", "--config", str(path), "--allow-insecure")
    assert code == 0, err
    assert PASSWORD not in out + err
    assert "vllm @ http://***@127.0.0.1" in out and "Qwen/Qwen3-8B" in out
    code, out, err = await run_cli(
        "discover", "--json", "--log-level", "debug", "--config", str(path), "--allow-insecure"
    )
    assert code == 0, err
    assert PASSWORD not in out + err
    assert re.search(r"llamacpp @ http://(\*\*\*|\[REDACTED\])@127\.0\.0\.1", err), err


def test_log_lines_never_show_url_credentials(caplog: pytest.LogCaptureFixture) -> None:
    from usepod_desktop.core.logsetup import RedactingFilter

    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "probe %s failed", (with_credentials("http://h:1"),), None
    )
    RedactingFilter().filter(record)
    assert PASSWORD not in record.getMessage()
    assert "http://[REDACTED]@h:1" in record.getMessage()


async def test_discover_table_escapes_what_a_backend_reports(
    make_fake: MakeFake, tmp_path: Path
) -> None:
    """A backend whose model id carries terminal escapes cannot drive the terminal."""
    hostile = "evil\x1b]0;owned\x07\x1b[2Jmodel"
    vllm = await make_fake("vllm", [FakeModel(hostile, 32768)])
    path = write_config(
        tmp_path / "agent.toml", f'[[backends]]\nkind = "vllm"\nurl = "{vllm.url}"\n'
    )
    code, out, err = await run_cli("discover", "--config", str(path), "--allow-insecure")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert "evil\\x1b]0;owned\\x07\\x1b[2Jmodel" in out
