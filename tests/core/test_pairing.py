"""Device-flow pairing (docs/protocol.md, "Pairing requests") against the sandbox
coordinator over real HTTP on
127.0.0.1, with fake backends found by the local probe, and against a coordinator that answers
badly on purpose."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from keyring.backends import fail

from tests.conftest import MemoryKeyring
from tests.pairing_support import (
    BadCoordinator,
    Scripted,
    expected_config,
    free_port,
    probe_ports,
)
from usepod_desktop import PROTOCOL_VERSION
from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core import paths
from usepod_desktop.core.agent import Agent
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import ModelPrice, load_config
from usepod_desktop.core.logsetup import redact
from usepod_desktop.core.pairing import (
    HOST_TOKEN_KEY,
    Activation,
    CodeExpired,
    CodeIssued,
    CoordinatorUnreachable,
    IdentityReady,
    PairCode,
    Paired,
    PairingCancelled,
    PairingError,
    PairingEvent,
    PairingExpired,
    PairingFlow,
    PollExpired,
    WaitingForApproval,
    coordinator_ws_url,
    normalize_base,
    pair_page_url,
)
from usepod_desktop.core.secrets import SecretStore
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend
from usepod_desktop.sandbox.pairing import ApprovedModel, PairingDesk, enable_pairing

FAST = {"initial": 0.02, "maximum": 0.1}


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
async def ollama() -> AsyncIterator[FakeBackend]:
    async with FakeBackend("ollama", ["llama3.2:latest"]) as fake:
        yield fake


class Recorder:
    def __init__(self) -> None:
        self.events: list[PairingEvent] = []

    def __call__(self, event: PairingEvent) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "conf" / "agent.toml", tmp_path / "keys" / "identity.key"


def make_flow(
    base: str,
    files: tuple[Path, Path],
    ports: dict[str, int] | None = None,
    **kwargs: Any,
) -> tuple[PairingFlow, Recorder]:
    config_path, identity_path = files
    recorder = Recorder()
    kwargs.setdefault("identity_path", identity_path)
    kwargs.setdefault("backoff", Backoff(**FAST))
    kwargs.setdefault("poll_interval", 0.02)
    flow = PairingFlow(
        base,
        config_path=config_path,
        probe_ports=ports if ports is not None else probe_ports(),
        on_event=recorder,
        **kwargs,
    )
    return flow, recorder


def host_token(ring: MemoryKeyring | None) -> str | None:
    assert ring is not None
    return ring.store.get(("usepod-agent", HOST_TOKEN_KEY))


def assert_nothing_written(files: tuple[Path, Path], ring: MemoryKeyring | None) -> None:
    config_path, identity_path = files
    assert not config_path.exists()
    assert not identity_path.exists()
    if config_path.parent.exists():
        assert list(config_path.parent.iterdir()) == []  # no backup, no temp file either
    assert host_token(ring) is None


async def until(predicate: Callable[[], object], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (polling a plain condition)
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- the happy path


async def test_pending_then_active_writes_agent_toml_and_the_agent_authenticates(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    vllm: FakeBackend,
    ollama: FakeBackend,
    files: tuple[Path, Path],
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk = sandbox
    config_path, identity_path = files
    flow, rec = make_flow(coord.http_url, files, probe_ports(vllm=vllm.port, ollama=ollama.port))
    task = asyncio.create_task(flow.run())
    request = await desk.wait_for_request(10, polled=True)
    await until(lambda: len(rec.of(WaitingForApproval)) >= 2)

    # what the agent told the coordinator while waiting
    assert request.capabilities == {
        "backends": [
            {
                "kind": "vllm",
                "url": f"http://localhost:{vllm.port}",
                "models": ["model-a", "model-b"],
            },
            {
                "kind": "ollama",
                "url": f"http://localhost:{ollama.port}",
                "models": ["llama3.2:latest"],
            },
        ],
        "agent_version": PROTOCOL_VERSION,
    }
    [ready] = rec.of(IdentityReady)
    assert ready.new and ready.path == identity_path and request.agent_pubkey == ready.public_key
    [issued] = rec.of(CodeIssued)
    assert issued.code.pair_code == request.pair_code
    assert issued.code.page_url == f"{coord.http_url}/host/pair"
    assert 590 < flow.remaining(issued.code) <= 600
    assert_nothing_written(files, memory_keyring)  # nothing before the approval

    desk.approve(
        request.pair_code,
        [ApprovedModel("model-b", 300_000, 450_000, max_concurrent=6), "llama3.2:latest"],
    )
    result = await asyncio.wait_for(task, 10)

    assert result.provider_id == request.provider_id
    assert coord.provider_ids[request.agent_pubkey] == result.provider_id
    assert [m.model_id for m in result.models] == ["model-b", "llama3.2:latest"]
    assert result.backup_path is None and result.token_stored and result.insecure
    assert rec.of(Paired)[0].result == result

    config = load_config(config_path, allow_insecure=True)
    assert config == expected_config(
        coord.port,
        identity_path,
        [("vllm", vllm.port or 0), ("ollama", ollama.port or 0)],
        {"model-b": (300_000, 450_000), "llama3.2:latest": (400_000, 800_000)},
        max_concurrent=6,
    )
    assert result.config == config
    ident = identity_mod.load(identity_path)
    assert ident.provider_id == result.provider_id
    assert ident.public_key_b64 == request.agent_pubkey
    assert stat.S_IMODE(os.stat(identity_path).st_mode) == 0o600
    assert host_token(memory_keyring) == request.host_token
    assert request.host_token and request.host_token not in config_path.read_text()

    # The paired agent authenticates with the id the pairing handed out, and serves.
    agent = Agent(
        config,
        config_path=config_path,
        allow_insecure=True,
        backoff=Backoff(initial=0.05, maximum=0.4),
    )
    await agent.start()
    try:
        session = await coord.wait_for_provider(10)
        assert session.provider_id == result.provider_id
        assert not session.sent_enrollment_code
        caps = await coord.wait_for_capabilities(10)
        prices = {m["model_id"]: (m["input_per_1m"], m["output_per_1m"]) for m in caps.models}
        assert prices == {
            "model-a": (500_000, 1_000_000),
            "model-b": (300_000, 450_000),
            "llama3.2:latest": (400_000, 800_000),
        }
        assert {m["max_concurrent"] for m in caps.models} == {6}
    finally:
        await agent.stop(grace=0.1)


async def test_no_activated_model_gives_defaults_and_max_concurrent_4(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    files: tuple[Path, Path],
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk = sandbox
    flow, _ = make_flow(coord.http_url, files)  # nothing detected
    task = asyncio.create_task(flow.run())
    request = await desk.wait_for_request(10, polled=True)
    assert request.capabilities == {"backends": [], "agent_version": PROTOCOL_VERSION}
    desk.approve(request.pair_code, [])
    result = await asyncio.wait_for(task, 10)
    assert load_config(files[0], allow_insecure=True) == expected_config(
        coord.port, files[1], [], {}, max_concurrent=4
    )
    assert result.models == ()


async def test_repairing_reuses_the_identity_the_config_points_at_and_keeps_a_backup(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    tmp_path: Path,
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk = sandbox
    config_path = paths.default_config_path()
    key_path = tmp_path / "elsewhere" / "my.key"
    old_identity = identity_mod.create(key_path)
    old_text = (
        "# my own notes\n"
        '[coordinator]\nurl = "wss://old.example/provider/connect"\n'
        f'[identity]\nkey_path = "{key_path}"\n'
        "[pricing]\ndefault_input_per_1m = 1\ndefault_output_per_1m = 2\n"
    )
    config_path.parent.mkdir(parents=True)
    config_path.write_text(old_text)
    fixed = datetime(2026, 5, 2, 10, 11, 12, tzinfo=UTC)
    # No identity_path: the flow finds the key through the existing agent.toml.
    flow = PairingFlow(
        coord.http_url,
        probe_ports=probe_ports(),
        poll_interval=0.02,
        wall_clock=lambda: fixed,
    )
    assert flow.config_path == config_path
    task = asyncio.create_task(flow.run())
    request = await desk.wait_for_request(10)
    assert request.agent_pubkey == old_identity.public_key_b64
    desk.approve(request.pair_code, ["m"])
    result = await asyncio.wait_for(task, 10)

    stamp = fixed.astimezone().strftime("%Y%m%d-%H%M%S")
    assert result.backup_path == config_path.with_name(f"agent.toml.bak-{stamp}")
    assert result.backup_path.read_text() == old_text
    assert "old.example" not in config_path.read_text()
    assert load_config(config_path, allow_insecure=True).key_path == key_path
    assert identity_mod.load(key_path).provider_id == result.provider_id
    assert [p.name for p in config_path.parent.iterdir() if p.name.startswith(".")] == []

    # Pairing again within the same second keeps both backups.
    again = PairingFlow(
        coord.http_url, probe_ports=probe_ports(), poll_interval=0.02, wall_clock=lambda: fixed
    )
    task = asyncio.create_task(again.run())
    request = await desk.wait_for_request(10, after=1)
    desk.approve(request.pair_code, ["m"])
    second = await asyncio.wait_for(task, 10)
    assert second.backup_path == config_path.with_name(f"agent.toml.bak-{stamp}-2")
    assert second.provider_id == result.provider_id  # same key, same provider
    assert result.backup_path.read_text() == old_text


# --------------------------------------------------------------------------- expiry


async def test_expired_code_is_reported_and_a_new_code_works(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    files: tuple[Path, Path],
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk = sandbox
    flow, rec = make_flow(coord.http_url, files)
    await flow.prepare()
    code = await flow.issue()
    waiting = asyncio.create_task(flow.wait(code))
    await desk.wait_for_request(10, polled=True)
    desk.expire(code.pair_code)
    outcome = await asyncio.wait_for(waiting, 10)
    assert outcome == PollExpired(code)
    assert [e.code for e in rec.of(CodeExpired)] == [code]
    assert_nothing_written(files, memory_keyring)

    second = await flow.issue()
    assert second.pair_code != code.pair_code
    waiting = asyncio.create_task(flow.wait(second))
    request = await desk.wait_for_request(10, after=1, polled=True)
    assert request.pair_code == second.pair_code
    with pytest.raises(ValueError, match="expired"):
        desk.approve(code.pair_code, [])
    desk.approve(second.pair_code, ["m"])
    activation = await asyncio.wait_for(waiting, 10)
    assert isinstance(activation, Activation)
    result = await flow.complete(activation)
    assert files[0].exists() and result.provider_id == request.provider_id


async def test_run_raises_pairing_expired_when_the_lifetime_runs_out(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    files: tuple[Path, Path],
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk = sandbox
    desk.lifetime = 0.3
    flow, _ = make_flow(coord.http_url, files)
    with pytest.raises(PairingExpired, match="expired before it was approved") as info:
        await asyncio.wait_for(flow.run(), 10)
    assert "\n" not in str(info.value)
    assert_nothing_written(files, memory_keyring)


# --------------------------------------------------------------------------- unreachable


async def test_unreachable_coordinator_is_retried_and_reported_until_it_starts(
    files: tuple[Path, Path], memory_keyring: MemoryKeyring
) -> None:
    port = free_port()
    flow, rec = make_flow(f"http://127.0.0.1:{port}", files)
    issuing = asyncio.create_task(flow.issue())
    await until(lambda: len(rec.of(CoordinatorUnreachable)) >= 3)
    failures = rec.of(CoordinatorUnreachable)
    assert [f.attempt for f in failures[:3]] == [1, 2, 3]
    assert all(f.detail == "connection refused" for f in failures)
    assert all(f.url == f"http://127.0.0.1:{port}" and f.retry_in >= 0 for f in failures)
    assert not issuing.done()

    coord = SandboxCoordinator(port=port, ws_heartbeat=None)
    desk = enable_pairing(coord)
    await coord.start()
    try:
        code = await asyncio.wait_for(issuing, 10)
        assert desk.get(code.pair_code).agent_pubkey == flow.identity.public_key_b64  # type: ignore[union-attr]
        waiting = asyncio.create_task(flow.wait(code))
        await desk.wait_for_request(10, polled=True)
        desk.approve(code.pair_code, ["m"])
        assert isinstance(await asyncio.wait_for(waiting, 10), Activation)
    finally:
        await coord.stop()


async def test_outage_while_polling_is_retried_then_the_approval_arrives(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    files: tuple[Path, Path],
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk = sandbox
    flow, rec = make_flow(coord.http_url, files)
    task = asyncio.create_task(flow.run())
    request = await desk.wait_for_request(10, polled=True)
    desk.outage = 503
    await until(lambda: len(rec.of(CoordinatorUnreachable)) >= 2)
    assert rec.of(CoordinatorUnreachable)[0].detail == "HTTP 503 Service Unavailable"
    desk.approve(request.pair_code, ["m"])
    desk.outage = None
    result = await asyncio.wait_for(task, 10)
    assert result.provider_id == request.provider_id and files[0].exists()


async def test_unreachable_past_the_codes_deadline_is_an_expiry(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    files: tuple[Path, Path],
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk = sandbox
    skew = [0.0]
    loop = asyncio.get_running_loop()
    flow, rec = make_flow(coord.http_url, files, clock=lambda: loop.time() + skew[0])
    await flow.prepare()
    code = await flow.issue()
    waiting = asyncio.create_task(flow.wait(code))
    await desk.wait_for_request(10, polled=True)
    await coord.stop()
    await until(lambda: rec.of(CoordinatorUnreachable))
    assert not waiting.done()
    skew[0] = 601.0  # ten minutes later, still no coordinator
    assert await asyncio.wait_for(waiting, 10) == PollExpired(code)
    assert flow.remaining(code) == 0
    assert_nothing_written(files, memory_keyring)


async def test_unreachable_for_too_long_gives_a_clear_error(
    files: tuple[Path, Path], memory_keyring: MemoryKeyring
) -> None:
    port = free_port()
    flow, rec = make_flow(f"http://127.0.0.1:{port}", files, unreachable_timeout=0.3)
    with pytest.raises(PairingError) as info:
        await asyncio.wait_for(flow.run(), 10)
    assert str(info.value) == (
        f"cannot reach the coordinator at http://127.0.0.1:{port}: connection refused"
    )
    assert rec.of(CoordinatorUnreachable)
    assert_nothing_written(files, memory_keyring)


# --------------------------------------------------------------------------- bad answers


BAD_ISSUES = [
    (
        Scripted(500, b"boom", "text/plain"),
        "answered HTTP 500 Internal Server Error to POST /v1/host/pair/issue: boom",
    ),
    (
        Scripted(404, {"error": "no such route"}),
        "answered HTTP 404 Not Found to POST /v1/host/pair/issue: no such route",
    ),
    (
        Scripted(200, b"<html>oops", "text/html"),
        "answer to POST /v1/host/pair/issue is not JSON (<html>oops)",
    ),
    (Scripted(200, [1, 2]), "is not a JSON object (got list)"),
    (
        Scripted(200, {"poll_token": "abcdefgh"}),
        "answer to POST /v1/host/pair/issue has no pair_code",
    ),
    (Scripted(200, {"pair_code": "X", "poll_token": ""}), "has no poll_token"),
]


@pytest.mark.parametrize(("answer", "message"), BAD_ISSUES)
async def test_bad_issue_answers_are_one_clear_line(
    answer: Scripted, message: str, files: tuple[Path, Path], memory_keyring: MemoryKeyring
) -> None:
    bad = await BadCoordinator(issue=answer).start()
    try:
        flow, _ = make_flow(bad.url, files)
        with pytest.raises(PairingError) as info:
            await asyncio.wait_for(flow.run(), 10)
    finally:
        await bad.stop()
    text = str(info.value)
    assert message in text and "\n" not in text
    assert_nothing_written(files, memory_keyring)


BAD_POLLS = [
    (
        Scripted(body={"status": "weird"}),
        "unknown pairing status 'weird' (expected pending, active or expired)",
    ),
    (Scripted(body={"status": 7}), "unknown pairing status '7'"),
    (Scripted(body={}), "answer to POST /v1/host/pair/poll has no status"),
    (
        Scripted(401, {"error": "bad poll token"}),
        "answered HTTP 401 Unauthorized to POST /v1/host/pair/poll: bad poll token",
    ),
    (
        Scripted(200, b"{truncated", "application/json"),
        "answer to POST /v1/host/pair/poll is not JSON",
    ),
    (Scripted(body={"status": "active", "provider_id": "p"}), "`active` answer has no host_token"),
    (
        Scripted(body={"status": "active", "host_token": "tok-123456"}),
        "`active` answer has no provider_id",
    ),
]


@pytest.mark.parametrize(("answer", "message"), BAD_POLLS)
async def test_bad_poll_answers_are_one_clear_line(
    answer: Scripted, message: str, files: tuple[Path, Path], memory_keyring: MemoryKeyring
) -> None:
    bad = await BadCoordinator(polls=[Scripted(body={"status": "pending"}), answer]).start()
    try:
        flow, rec = make_flow(bad.url, files)
        with pytest.raises(PairingError) as info:
            await asyncio.wait_for(flow.run(), 10)
    finally:
        await bad.stop()
    text = str(info.value)
    assert message in text and "\n" not in text
    assert len(rec.of(WaitingForApproval)) == 1
    assert_nothing_written(files, memory_keyring)
    assert [kind for kind, _ in bad.seen] == ["issue", "poll", "poll"]
    assert bad.seen[1][1]["poll_token"] == "poll-token-123456"


async def test_odd_model_config_entries_are_skipped_and_limits_clamped(
    files: tuple[Path, Path], memory_keyring: MemoryKeyring
) -> None:
    active = {
        "status": "active",
        "host_token": "tok-abcdefgh",
        "provider_id": "prov_x",
        "model_config": [
            {"model_id": "big", "input_per_1m": 1, "output_per_1m": 2, "max_concurrent": 1000},
            {"input_per_1m": 5},
            "nonsense",
            {"model_id": "neg", "input_per_1m": -1, "output_per_1m": 2},
            {"model_id": "free", "input_per_1m": 0},
        ],
    }
    bad = await BadCoordinator(polls=[Scripted(body=active)]).start()
    try:
        flow, rec = make_flow(bad.url, files)
        result = await asyncio.wait_for(flow.run(), 10)
    finally:
        await bad.stop()
    # expires_at was nonsense: the code lives the documented 10 minutes
    [issued] = rec.of(CodeIssued)
    assert 590 < (issued.code.expires_at - datetime.now(UTC)).total_seconds() <= 600
    assert [(m.model_id, m.input_per_1m, m.output_per_1m) for m in result.models] == [
        ("big", 1, 2),
        ("free", 0, 0),
    ]
    assert len(result.warnings) == 3
    config = load_config(files[0], allow_insecure=True)
    assert config.limits.max_concurrent == 256
    assert config.pricing.models["free"] == ModelPrice(0, 0)


# --------------------------------------------------------------------------- cancel


async def test_cancel_while_waiting_writes_nothing(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    files: tuple[Path, Path],
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk = sandbox
    flow, rec = make_flow(coord.http_url, files)
    task = asyncio.create_task(flow.run())
    request = await desk.wait_for_request(10, polled=True)
    flow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    desk.approve(request.pair_code, ["m"])  # approving afterwards changes nothing here
    await asyncio.sleep(0.1)
    assert_nothing_written(files, memory_keyring)
    assert not rec.of(Paired)
    with pytest.raises(PairingCancelled):
        await flow.issue()


async def test_cancel_while_the_coordinator_is_unreachable_writes_nothing(
    files: tuple[Path, Path], memory_keyring: MemoryKeyring
) -> None:
    flow, rec = make_flow(f"http://127.0.0.1:{free_port()}", files)
    task = asyncio.create_task(flow.run())
    await until(lambda: rec.of(CoordinatorUnreachable))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_written(files, memory_keyring)


# --------------------------------------------------------------------------- the host token


async def test_host_token_only_in_the_keyring_never_in_agent_toml_or_logs(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    files: tuple[Path, Path],
    memory_keyring: MemoryKeyring,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    coord, desk = sandbox
    flow, rec = make_flow(coord.http_url, files)
    task = asyncio.create_task(flow.run())
    request = await desk.wait_for_request(10, polled=True)
    desk.approve(request.pair_code, ["m"])
    result = await asyncio.wait_for(task, 10)
    token = request.host_token
    assert token and host_token(memory_keyring) == token and result.token_stored
    assert token not in files[0].read_text()
    assert token not in files[1].read_text()
    assert token not in caplog.text
    assert token not in repr(result) and token not in repr(rec.events)
    # The log redactor knows it (and the poll token) from now on.
    assert redact(f"token {token} leaked") == "token [REDACTED] leaked"
    assert request.poll_token not in redact(f"x {request.poll_token} y")
    assert any(r.getMessage().startswith("paired as provider") for r in caplog.records)


async def test_without_a_keyring_pairing_still_works_with_a_warning(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    files: tuple[Path, Path],
) -> None:
    coord, desk = sandbox
    flow, _ = make_flow(coord.http_url, files, secrets=SecretStore(backend=fail.Keyring()))
    task = asyncio.create_task(flow.run())
    request = await desk.wait_for_request(10, polled=True)
    desk.approve(request.pair_code, ["m"])
    result = await asyncio.wait_for(task, 10)
    assert not result.token_stored
    assert result.warnings and "host token was not saved" in result.warnings[0]
    assert request.host_token not in result.warnings[0]
    assert load_config(files[0], allow_insecure=True).pricing.models.keys() == {"m"}


async def test_an_identity_created_meanwhile_by_another_program_is_not_overwritten(
    sandbox: tuple[SandboxCoordinator, PairingDesk],
    files: tuple[Path, Path],
    memory_keyring: MemoryKeyring,
) -> None:
    coord, desk = sandbox
    flow, _ = make_flow(coord.http_url, files)
    task = asyncio.create_task(flow.run())
    request = await desk.wait_for_request(10, polled=True)
    other = identity_mod.create(files[1])  # e.g. the reference agent started meanwhile
    desk.approve(request.pair_code, ["m"])
    with pytest.raises(PairingError, match="created by another program"):
        await asyncio.wait_for(task, 10)
    assert identity_mod.load(files[1]).public_key_b64 == other.public_key_b64
    assert not files[0].exists()


# --------------------------------------------------------------------------- URLs


def test_urls() -> None:
    assert pair_page_url("https://api.usepod.ai") == "https://usepod.ai/host/pair"
    assert pair_page_url("http://127.0.0.1:8787") == "http://127.0.0.1:8787/host/pair"
    assert pair_page_url("https://staging.usepod.ai/") == "https://staging.usepod.ai/host/pair"
    assert coordinator_ws_url("https://api.usepod.ai") == "wss://api.usepod.ai/provider/connect"
    assert coordinator_ws_url("http://127.0.0.1:9/") == "ws://127.0.0.1:9/provider/connect"
    assert normalize_base(" https://api.usepod.ai/ ") == "https://api.usepod.ai"
    assert normalize_base("wss://api.usepod.ai/provider/connect") == "https://api.usepod.ai"
    assert normalize_base("ws://127.0.0.1:9/provider/connect") == "http://127.0.0.1:9"
    for bad in ("api.usepod.ai", "ftp://x", ""):
        with pytest.raises(PairingError, match="coordinator URL"):
            normalize_base(bad)


def test_pair_code_repr_hides_the_poll_token() -> None:
    code = PairCode("AB", "u", datetime.now(UTC), 1.0, poll_token="secret-poll-token")
    assert "secret-poll-token" not in repr(code)
