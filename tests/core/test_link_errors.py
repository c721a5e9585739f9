"""Coordinator connection errors in the operator's words, one log line per reconnect
(issue 19 item 11)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
from pathlib import Path

from usepod_desktop.core.link_session import describe_failure


def test_errors_read_like_pairing_not_like_python() -> None:
    gai = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert describe_failure(gai) == "cannot resolve host name"
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert describe_failure(refused) == "connection refused"
    unreachable = OSError(errno.ENETUNREACH, "Network is unreachable")
    assert describe_failure(unreachable) == "host unreachable"
    for exc in (gai, unreachable):
        assert "Errno" not in describe_failure(exc) and "gaierror" not in describe_failure(exc)


async def test_run_logs_each_reconnect_once(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[coordinator]\nurl = "ws://127.0.0.1:{port}/provider/connect"\n'
        "[pricing]\ndefault_input_per_1m = 1\ndefault_output_per_1m = 1\n"
        f'[identity]\nkey_path = "{tmp_path / "id.key"}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "usepod_desktop",
        "run",
        "--allow-insecure",
        "--config",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while sum("reconnecting in" in line for line in lines) < 2:
                raw = await proc.stderr.readline()
                assert raw, "".join(lines)
                lines.append(raw.decode())
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
    text = "".join(lines)
    attempts = [line for line in lines if "connection refused" in line]
    assert len(attempts) == 2, text  # one line per reconnect, nothing repeating it
    assert all("reconnecting in" in line for line in attempts), text
    assert "state: offline" not in text and "state: connecting" not in text
    assert "Errno" not in text
