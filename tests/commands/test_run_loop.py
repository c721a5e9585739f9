"""`usepod-desktop run --loop`: the headless agent on uvloop or asyncio's own loop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from usepod_desktop.commands.run import event_loop_factory
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.core.protocol import JobDone
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend


def test_asyncio_and_auto_without_uvloop_use_the_default_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert event_loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    assert event_loop_factory("auto") is None


def test_uvloop_asked_for_but_missing_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(UserFacingError, match=r"--loop uvloop: uvloop is not installed"):
        event_loop_factory("uvloop")


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop has no Windows build")
async def test_run_on_uvloop_serves_a_job_and_stops_gracefully(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")  # the dev extra installs it on Linux and macOS
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    async with (
        SandboxCoordinator() as coord,
        FakeBackend("vllm", ["m1"], output_tokens=30) as fake,
    ):
        config = Config(
            coordinator=CoordinatorConfig(coord.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=fake.url),),
            identity_key_path=str(tmp_path / "identity.key"),
        )
        save_config(config, tmp_path / "agent.toml")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "usepod_desktop",
            "--allow-insecure",
            "--config",
            str(tmp_path / "agent.toml"),
            "run",
            "--loop",
            "uvloop",
            "--grace",
            "1",
            env={**os.environ, "USEPOD_DATA_DIR": str(tmp_path / "data")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            await coord.wait_for_capabilities(60)
            handle = await coord.dispatch("m1", {"messages": [{"role": "user", "content": "hi"}]})
            assert isinstance(await handle.wait(30), JobDone)
            assert handle.text.count("data: ") >= 30
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
