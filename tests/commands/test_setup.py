"""`usepod-desktop setup` run as a user would (a real subprocess) against the sandbox coordinator,
approved from the test or typed at the `sandbox --pairing` prompt."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.pairing_support import BadCoordinator, Scripted, expected_config, probe_ports
from usepod_desktop.commands.setup import Screen, big_text, parse_probe_ports
from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core import paths
from usepod_desktop.core.config import load_config
from usepod_desktop.core.discovery import ProbeResult
from usepod_desktop.core.pairing.values import (
    BackendsDetected,
    CoordinatorUnreachable,
    IdentityReady,
    PairCode,
    WaitingForApproval,
)
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend
from usepod_desktop.sandbox.pairing import ApprovedModel, PairingDesk, enable_pairing

REPO = Path(__file__).resolve().parents[2]
CODE_LINE = re.compile(r"2\. Enter the code\s+(\S+)")


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[SandboxCoordinator, PairingDesk]]:
    """The sandbox playing the real coordinator (no `"sandbox": true` in its answers)."""
    coord = SandboxCoordinator(ws_heartbeat=None)
    coord.announce_sandbox = False
    desk = enable_pairing(coord)
    await coord.start()
    yield coord, desk
    await coord.stop()


@pytest.fixture
async def vllm() -> AsyncIterator[FakeBackend]:
    async with FakeBackend("vllm", ["model-a", "model-b"]) as fake:
        yield fake


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


def env(keyring_file: Path) -> dict[str, str]:
    environ = os.environ.copy()  # the isolated home of tests/conftest.py
    environ["PYTHON_KEYRING_BACKEND"] = "tests.file_keyring.FileKeyring"
    environ["USEPOD_TEST_KEYRING_FILE"] = str(keyring_file)
    environ["PYTHONPATH"] = str(REPO)
    environ["PYTHONUNBUFFERED"] = "1"
    return environ


def stored_secrets(keyring_file: Path) -> dict[str, str]:
    """What the command stored in the test keyring."""
    if not keyring_file.exists():
        return {}
    return dict(json.loads(keyring_file.read_text()))


def probe_args(**found: int | None) -> list[str]:
    return [arg for k, p in probe_ports(**found).items() for arg in ("--probe-port", f"{k}={p}")]


async def start(keyring_file: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "usepod_desktop",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env(keyring_file),
        cwd=REPO,
    )


class Output:
    """Lines a subprocess printed, read as the test needs them."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def until(self, pattern: str | re.Pattern[str], within: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        for line in self.lines:
            if match := regex.search(line):
                return match
        assert self.proc.stdout is not None
        async with asyncio.timeout(within):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    err = b""
                    if self.proc.stderr is not None:
                        err = await self.proc.stderr.read()
                    raise AssertionError(
                        f"{regex.pattern!r} never printed; stdout:\n{self.text}\nstderr:\n"
                        + err.decode()
                    )
                line = raw.decode()
                self.lines.append(line)
                if match := regex.search(line):
                    return match

    async def finish(self, within: float = 20.0) -> tuple[int, str, str]:
        async with asyncio.timeout(within):
            out, err = await self.proc.communicate()
        self.lines += out.decode().splitlines(keepends=True)
        assert self.proc.returncode is not None
        return self.proc.returncode, self.text, err.decode()

    @property
    def text(self) -> str:
        return "".join(self.lines)


@pytest.fixture
async def procs() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for proc in started:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_setup_pairs_with_the_sandbox_approved_from_the_test(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    vllm: FakeBackend,
    keyring_file: Path,
    procs: list[asyncio.subprocess.Process],
) -> None:
    coord, desk = sandbox
    config_path = paths.default_config_path()
    proc = await start(
        keyring_file, "setup", "--coordinator", coord.http_url, *probe_args(vllm=vllm.port)
    )
    procs.append(proc)
    out = Output(proc)
    await out.until(rf"vllm\s+at http://localhost:{vllm.port}\s+\(2 model\(s\): model-a, model-b\)")
    await out.until(rf"1\. Open\s+{re.escape(coord.http_url)}/host/pair")
    code = (await out.until(CODE_LINE)).group(1)
    await out.until(re.escape(" ".join(code)))  # spaced out, below the big letters
    assert any("█" in line for line in out.lines)
    await out.until(r"Waiting for approval\.\.\. (9:5\d|10:00) left")
    request = await desk.wait_for_request(10, polled=True)
    assert request.pair_code == code
    assert not config_path.exists()

    desk.approve(code, [ApprovedModel("model-a", 300_000, 450_000, max_concurrent=3)])
    status, text, err = await out.finish()
    assert status == 0, err
    assert f"Paired as provider {request.provider_id}" in text
    assert re.search(r"model-a\s+\$0\.30 / \$0\.45", text)
    assert f"Wrote {config_path}" in text
    assert "Host token saved in the OS keyring." in text
    assert "usepod-desktop run --allow-insecure" in text  # ws:// sandbox: the next command
    assert "--config" not in text.split("Start serving:")[1]  # the default location

    identity_path = paths.default_identity_path()
    assert load_config(config_path, allow_insecure=True) == expected_config(
        coord.port, identity_path, [("vllm", vllm.port or 0)], {"model-a": (300_000, 450_000)}, 3
    )
    assert identity_mod.load(identity_path).provider_id == request.provider_id
    assert stored_secrets(keyring_file) == {"usepod-agent/usepod-host-token": request.host_token}
    assert request.host_token and request.host_token not in config_path.read_text()
    assert request.host_token not in text + err


async def test_setup_expired_code_exits_1_with_one_line(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    keyring_file: Path,
    procs: list[asyncio.subprocess.Process],
    tmp_path: Path,
) -> None:
    coord, desk = sandbox
    target = tmp_path / "custom" / "agent.toml"
    proc = await start(
        keyring_file,
        "setup",
        "--coordinator",
        coord.http_url,
        "--config",
        str(target),
        *probe_args(),
    )
    procs.append(proc)
    out = Output(proc)
    await out.until("No local backend detected")
    await out.until("vLLM:")
    code = (await out.until(CODE_LINE)).group(1)
    await desk.wait_for_request(10, polled=True)
    desk.expire(code)
    status, _, err = await out.finish()
    assert status == 1
    assert err.strip().splitlines() == [
        f"error: pair code {code} expired before it was approved; run `usepod-desktop setup "
        f"--coordinator {coord.http_url} --config {target}` again for a new code"
    ]
    assert not target.exists() and not paths.default_identity_path().exists()
    assert stored_secrets(keyring_file) == {}


async def test_setup_ctrl_c_cancels_and_writes_nothing(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    keyring_file: Path,
    procs: list[asyncio.subprocess.Process],
) -> None:
    coord, desk = sandbox
    proc = await start(keyring_file, "setup", "--coordinator", coord.http_url, *probe_args())
    procs.append(proc)
    out = Output(proc)
    code = (await out.until(CODE_LINE)).group(1)
    await desk.wait_for_request(10, polled=True)
    proc.send_signal(signal.SIGINT)
    status, _, err = await out.finish()
    assert status == 130
    assert "pairing cancelled; nothing was written" in err
    assert "Traceback" not in err
    desk.approve(code, ["m"])
    assert not paths.default_config_path().exists()
    assert not paths.default_identity_path().exists()
    assert stored_secrets(keyring_file) == {}


async def test_setup_failure_is_one_line_and_exit_1(
    keyring_file: Path, procs: list[asyncio.subprocess.Process]
) -> None:
    bad = await BadCoordinator(polls=[Scripted(body={"status": "approved?"})]).start()
    try:
        proc = await start(keyring_file, "setup", "--coordinator", bad.url, *probe_args())
        procs.append(proc)
        status, _, err = await Output(proc).finish()
    finally:
        await bad.stop()
    assert status == 1
    assert err.strip().splitlines() == [
        "error: the coordinator sent an unknown pairing status 'approved?' "
        "(expected pending, active or expired)"
    ]
    assert not paths.default_config_path().exists()


async def test_setup_refuses_bad_arguments(
    keyring_file: Path, procs: list[asyncio.subprocess.Process]
) -> None:
    for args, message in (
        (["--probe-port", "vllm"], "--probe-port 'vllm': expected KIND=PORT"),
        (["--probe-port", "vllm=99999"], "99999 is not a port number"),
        (["--coordinator", "api.usepod.ai"], "coordinator URL must look like https://"),
    ):
        proc = await start(keyring_file, "setup", *args)
        procs.append(proc)
        status, _, err = await Output(proc).finish()
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1


async def test_sandbox_pairing_prompt_then_the_agent_runs_as_the_paired_provider(
    vllm: FakeBackend,
    keyring_file: Path,
    procs: list[asyncio.subprocess.Process],
    tmp_path: Path,
) -> None:
    """The whole terminal journey: `sandbox --pairing`, `setup`, `approve CODE ...` typed at the
    sandbox prompt, then `run` connects as the provider the approval created."""
    sandbox = await start(keyring_file, "sandbox", "--port", "0", "--pairing")
    procs.append(sandbox)
    box = Output(sandbox)
    base = (await box.until(r"usepod-desktop setup --coordinator (http://\S+)")).group(1)
    await box.until(r"--config sandbox\.toml")  # never the real agent.toml
    await box.until("`codes` lists waiting codes")

    target = tmp_path / "paired.toml"
    setup = await start(
        keyring_file,
        "setup",
        "--coordinator",
        base,
        "--config",
        str(target),
        *probe_args(vllm=vllm.port),
    )
    procs.append(setup)
    out = Output(setup)
    code = (await out.until(r"sandbox's terminal: type\s+approve (\S+)")).group(1)
    await box.until(f"pairing code {code} requested")
    await box.until(f"pairing code {code}: the agent offers vllm at http://localhost:{vllm.port}")
    assert sandbox.stdin is not None
    sandbox.stdin.write(f"approve {code} model-b=0.25/0.5\n".encode())
    await sandbox.stdin.drain()
    provider = (await box.until(rf"pairing code {code} approved as provider (\S+);")).group(1)
    status, text, err = await out.finish()
    assert status == 0, err
    assert f"Paired as provider {provider}" in text
    assert f"usepod-desktop run --config {target} --allow-insecure" in text
    config = load_config(target, allow_insecure=True)
    assert dict(config.pricing.models) == {"model-b": config.pricing.for_model("model-b")}
    assert config.pricing.for_model("model-b").input_per_1m == 250_000

    agent = await start(keyring_file, "run", "--config", str(target), "--allow-insecure")
    procs.append(agent)
    await box.until(rf"provider {re.escape(provider)} connected")
    await box.until(r"model-b\s+\(vllm, input \$0\.25 / output \$0\.50")
    agent.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        await agent.wait()
    sandbox.stdin.close()
    status, _, err = await box.finish()
    assert status == 0, err


def test_probe_port_parsing_and_big_letters() -> None:
    assert parse_probe_ports([]) is None
    ports = parse_probe_ports(["vllm=8001", "OLLAMA=1"])
    assert ports == {"vllm": 8001, "llamacpp": 8080, "lmstudio": 1234, "ollama": 1}
    with pytest.raises(ValueError, match="KIND one of vllm, llamacpp, lmstudio, ollama"):
        parse_probe_ports(["openrouter=1"])
    art = big_text("AB-12", "#")
    assert len(art) == 5 and art[2].startswith("#####  #### ")
    assert big_text("a?") == []


async def test_setup_with_a_local_sandbox_keeps_the_real_config_and_identity(
    keyring_file: Path, procs: list[asyncio.subprocess.Process], tmp_path: Path
) -> None:
    """Issue 19 items 3 and 6: a standalone `usepod-desktop sandbox --pairing` says it is one;
    setup then never replaces the real agent.toml or writes its provider id into the identity,
    and prints instructions that work against it."""
    real_config = paths.default_config_path()
    real_config.parent.mkdir(parents=True)
    real_config.write_text('[coordinator]\nurl = "wss://api.usepod.ai/provider/connect"\n')
    before = real_config.read_bytes()
    real_identity = identity_mod.load_or_create(paths.default_identity_path())
    real_identity.set_provider_id("prov_real")
    identity_bytes = paths.default_identity_path().read_bytes()
    coord = SandboxCoordinator(ws_heartbeat=None)
    desk = enable_pairing(coord)
    await coord.start()
    try:
        # without --config: refused before anything is written
        proc = await start(keyring_file, "setup", "--coordinator", coord.http_url, *probe_args())
        procs.append(proc)
        status, text, err = await Output(proc).finish()
        assert status == 1, text + err
        assert "is a local sandbox coordinator" in err and "--config" in err
        assert real_config.read_bytes() == before

        target = tmp_path / "sandbox.toml"
        proc = await start(
            keyring_file,
            "setup",
            "--coordinator",
            coord.http_url,
            "--config",
            str(target),
            *probe_args(),
        )
        procs.append(proc)
        out = Output(proc)
        await out.until("local sandbox coordinator: no account, no real earnings")
        code = (await out.until(r"sandbox's terminal: type\s+approve (\S+)")).group(1)
        await desk.wait_for_request(10, polled=True)
        desk.approve(code, ["m"])
        status, text, err = await out.finish()
        assert status == 0, err
        assert "/host/pair" not in text  # the sandbox has no such page
        run_line = f"usepod-desktop run --config {target} --allow-insecure"
        assert run_line in text
        assert f"start the tray app: usepod-desktop --config {target} --allow-insecure" in text
    finally:
        await coord.stop()
    assert real_config.read_bytes() == before
    assert paths.default_identity_path().read_bytes() == identity_bytes  # no sandbox id in it
    assert identity_mod.load(paths.default_identity_path()).provider_id == "prov_real"


def test_screen_prints_each_pairing_event_it_knows_and_ignores_the_others(tmp_path: Path) -> None:
    out = io.StringIO()
    screen = Screen(out)
    screen.on_event(IdentityReady("PUBKEY=", tmp_path / "identity.key", new=True))
    screen.on_event(BackendsDetected((ProbeResult("vllm", "http://localhost:8000", ["m"]),)))
    screen.on_event(CoordinatorUnreachable("https://user:pw@example.test", "timed out", 1, 2.0))
    code = PairCode("ABCD-2345", "https://x/host/pair", datetime.now(UTC), 0.0, "tok")
    before = out.getvalue()
    screen.on_event(WaitingForApproval(code, 30.0, 1))  # the countdown shows this instead
    assert out.getvalue() == before
    lines = before.splitlines()
    assert lines[0] == "Agent key: PUBKEY= (new; saved once paired)"
    assert lines[1].strip() == str(tmp_path / "identity.key")
    assert any(
        re.search(r"vllm\s+at http://localhost:8000\s+\(1 model\(s\): m\)", x) for x in lines
    )
    unreachable = [x for x in lines if x.startswith("Cannot reach")]
    assert len(unreachable) == 1 and "retrying in 2 s" in unreachable[0]
    assert "pw" not in unreachable[0]  # the URL's credentials are not printed
