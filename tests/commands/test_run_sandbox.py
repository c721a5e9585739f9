"""`usepod-desktop run --sandbox`: try it without an account, headless, as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from usepod_desktop.core.ledger import Ledger


def test_run_sandbox_serves_demo_jobs_and_records_them_as_sandbox(
    tmp_path: Path, isolated_home: Path
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "usepod_desktop",
            "run",
            "--sandbox",
            "--demo-interval",
            "0.3",
            "--grace",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if sum("[sandbox] job " in x and "-> ok" in x for x in lines) >= 2:
                break
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    served = [x for x in lines if "[sandbox] job demo/tiny-chat -> ok" in x]
    assert len(served) >= 2, output  # no agent.toml, no local server: the demo backend serves
    assert "Serving" in output
    # the real config and identity are untouched; sandbox jobs are kept apart in the ledger
    assert not (isolated_home / ".usepod-agent" / "identity.key").exists()
    assert not (isolated_home / ".config" / "usepod-agent" / "agent.toml").exists()
    ledger = Ledger(create=False, sources=("sandbox",))
    rows = ledger.recent(10)
    ledger.close()
    assert len(rows) >= 2 and {r.outcome for r in rows} >= {"done"}
