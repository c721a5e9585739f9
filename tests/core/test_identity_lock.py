"""One serving process per identity (issue 19 item 9): the tray app, `run` and a service never
serve under one identity at once, and the second one is told which process holds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from usepod_desktop.core.agent import Agent, internals_for_tests
from usepod_desktop.core.config import load_config
from usepod_desktop.core.identity_lock import IdentityInUse, IdentityLock


def test_second_holder_is_told_who_serves_then_takes_over(tmp_path: Path) -> None:
    key = tmp_path / "identity.key"
    first = IdentityLock(key, "tray")
    first.acquire()
    second = IdentityLock(key, "run")
    with pytest.raises(IdentityInUse) as caught:
        second.acquire()
    message = str(caught.value)
    assert f"the tray app (pid {os.getpid()}) is already serving" in message
    assert str(key) in message and "\n" not in message
    other = IdentityLock(tmp_path / "other.key", "run")  # another identity: no conflict
    other.acquire()
    first.release()
    second.acquire()  # free again
    assert second.held
    second.release()
    other.release()


async def test_two_agents_on_one_identity(tmp_path: Path, reference_toml: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(reference_toml)
    config = load_config(path)
    first = Agent(config, config_path=path, instance_kind="service")
    second = Agent(config, config_path=path)
    await first.start()
    try:
        with pytest.raises(IdentityInUse, match=r"the service \(pid \d+\) is already serving"):
            await second.start()
        assert (
            second.identity is None and internals_for_tests(second).link is None
        )  # it never connected
    finally:
        await first.stop(grace=0.1)
    await second.start()  # the first one stopped: the identity is free
    await second.stop(grace=0.1)


def test_run_refuses_while_the_tray_app_serves(tmp_path: Path, reference_toml: str) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(reference_toml)
    lock = IdentityLock(load_config(path).key_path, "tray")
    lock.acquire()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "usepod_desktop", "run", "--config", str(path)],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            timeout=60,
        )
    finally:
        lock.release()
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"the tray app (pid {os.getpid()}) is already serving under the identity" in lines[0]
