"""`usepod-desktop pause / resume / status` against a real headless agent (`usepod-desktop run`
in a subprocess) connected to a real sandbox coordinator, over the 0600 control socket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.core.serving.control import ControlServer, request
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="Unix socket")


@pytest.fixture
def short_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short path: a Unix socket path must fit in 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="upd-", dir="/tmp") as tmp:
        path = Path(tmp) / "rt"
        monkeypatch.setenv("USEPOD_RUNTIME_DIR", str(path))
        yield path


async def cli(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:  # noqa: ASYNC109
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "usepod_desktop",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def wait_for(predicate: Any, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def headless(
    tmp_path: Path, short_runtime_dir: Path
) -> AsyncIterator[tuple[SandboxCoordinator, Path]]:
    async with SandboxCoordinator(ws_heartbeat=None) as coord, FakeBackend("vllm", ["m"]) as fake:
        config = Config(
            coordinator=CoordinatorConfig(url=coord.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=fake.url),),
            identity_key_path=str(tmp_path / "identity.key"),
        )
        path = tmp_path / "agent.toml"
        save_config(config, path)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "usepod_desktop",
            "run",
            "--config",
            str(path),
            "--allow-insecure",
            "--grace",
            "1",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            sock = short_runtime_dir / "control.sock"
            await wait_for(sock.exists)
            yield coord, sock
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()[-2000:]
        assert not sock.exists()  # removed on a clean stop


def ids(caps: Any) -> list[str]:
    return [m["model_id"] for m in caps.models]


async def test_pause_status_resume_against_a_running_headless_agent(
    headless: tuple[SandboxCoordinator, Path],
) -> None:
    coord, sock = headless
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
    assert ids(await coord.wait_for_capabilities(30)) == ["m"]

    code, out, _ = await cli("status", "--json")
    assert code == 0
    status = json.loads(out)
    assert status["state"] == "serving"
    assert status["paused_by"] == [] and status["models"] == ["m"]
    assert status["jobs_running"] == 0 and status["resumes_at"] is None
    # seconds since the session's last heartbeat (None before the first, due every 15 s)
    beat = status["last_heartbeat_s_ago"]
    assert beat is None or 0 <= beat <= 16

    code, out, err = await cli("pause", "--for", "30m")
    assert code == 0, err
    assert "paused by: manual" in out
    assert ids(await coord.wait_for_capabilities(10, after=1)) == []
    code, out, _ = await cli("status", "--json")
    status = json.loads(out)
    assert status["state"] == "paused" and status["paused_by"] == ["manual"]
    assert status["models"] == []
    resumes = time.time() + 1800
    assert abs(_ts(status["resumes_at"]) - resumes) < 60

    code, out, _ = await cli("status")
    assert code == 0 and "state: paused (you paused it until" in out

    code, out, err = await cli("pause", "--until", "25:00")
    assert code == 2 and "HH:MM" in err and out == ""

    code, out, err = await cli("resume", "--json")
    assert code == 0, err
    assert json.loads(out)["paused_by"] == []
    assert ids(await coord.wait_for_capabilities(10, after=2)) == ["m"]

    code, out, _ = await cli("pause")  # until resumed
    assert code == 0
    status = await asyncio.to_thread(request, {"cmd": "status"}, address=str(sock))
    assert status["status"]["resumes_at"] is None
    assert status["status"]["paused_because"] == "you paused it until you resume"


async def test_no_agent_running_is_one_line_and_exit_3(short_runtime_dir: Path) -> None:
    for args in (("status",), ("status", "--json"), ("pause", "--for", "1h"), ("resume",)):
        code, out, err = await cli(*args)
        assert code == 3, (args, err)
        assert out == ""
        assert err.count("\n") == 1 and "no usepod-desktop agent is running" in err


async def test_bad_requests_get_one_line_errors(short_runtime_dir: Path) -> None:
    from usepod_desktop.core.agent import Agent

    config = Config(
        coordinator=CoordinatorConfig(url="ws://127.0.0.1:9/x"),
        pricing=PricingConfig(500_000, 750_000),
    )
    agent = Agent(config, allow_insecure=True)
    server = ControlServer(agent.serving, str(short_runtime_dir / "c.sock"))
    assert await server.start()
    try:
        # a second server on the same path refuses to steal the socket
        assert not await ControlServer(agent.serving, server.address).start()
        for line, needle in [
            (b"not json\n", "not JSON"),
            (b"[1]\n", "JSON object"),
            (b'{"cmd": "explode"}\n', "unknown cmd"),
            (b'{"cmd": "pause", "until": "2001-01-01T00:00:00+00:00"}\n', "in the past"),
            (b'{"cmd": "pause", "until": "2999-01-01T00:00:00+00:00"}\n', "a year"),
            (b'{"cmd": "pause", "until": "2030-01-01T00:00:00"}\n', "UTC offset"),
            (b"\n", "empty"),
        ]:
            answer = await server.dispatch(line)
            assert answer["ok"] is False and needle in answer["error"], (line, answer)
        # an oversized line is cut off, not buffered without bound
        reader, writer = await asyncio.open_unix_connection(server.address)
        writer.write(b"x" * 100_000 + b"\n")
        await writer.drain()
        answer = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert answer["ok"] is False
        writer.close()
        assert not agent.paused
    finally:
        await server.stop()
        await agent.serving.stop()
    # a socket left by a crashed agent is replaced
    stale = short_runtime_dir / "stale.sock"
    import socket as socket_mod

    s = socket_mod.socket(socket_mod.AF_UNIX)
    s.bind(str(stale))
    s.close()
    server = ControlServer(agent.serving, str(stale))
    assert await server.start()
    answer = await asyncio.to_thread(request, {"cmd": "status"}, address=str(stale))
    assert answer["ok"] and answer["status"]["state"] == "offline"
    await server.stop()


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
