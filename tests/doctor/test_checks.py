"""Each doctor check against a real sandbox coordinator, fake backends on loopback and a fake
market price list, in the states that produce OK, WARN and FAIL."""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.doctor.feeds import FeedServer, closed_port_url, feed_server
from usepod_desktop import __version__
from usepod_desktop.cli import main
from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core.agent import internals_for_tests
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    ModelPrice,
    PricingConfig,
    save_config,
)
from usepod_desktop.core.doctor import DoctorOptions, Report, Status, run_doctor
from usepod_desktop.core.doctor.checks import looks_like_local_tag, sanitize
from usepod_desktop.core.doctor.market import MarketPrices
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.ledger import Ledger
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FailMode, FakeBackend

MARKET = {
    "data": [
        {
            "id": "qwen/qwen3-8b",
            "canonical_slug": "qwen/qwen3-8b-04-28",
            "hugging_face_id": "Qwen/Qwen3-8B",
            "pricing": {"prompt": "0.000001", "completion": "0.000002"},  # $1 / $2 per 1M
        },
        {
            "id": "qwen/qwen3-8b:free",
            "hugging_face_id": "Qwen/Qwen3-8B",
            "pricing": {"prompt": "0", "completion": "0"},  # free variants are no cap
        },
        {"id": "broken", "pricing": {"prompt": "abc", "completion": "1"}},
        {"id": 42, "pricing": {}},
        "not an object",
    ]
}


@dataclass
class Rig:
    coord: SandboxCoordinator
    fake: FakeBackend
    feeds: FeedServer
    tmp: Path
    key_path: Path
    config_path: Path = field(init=False)
    config: Config = field(init=False)

    def write(self, config: Config) -> Path:
        self.config = config
        self.config_path = self.tmp / "agent.toml"
        save_config(config, self.config_path)
        return self.config_path

    def base_config(self, **changes: Any) -> Config:
        config = Config(
            coordinator=CoordinatorConfig(url=self.coord.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig("vllm", self.fake.url),),
            identity_key_path=str(self.key_path),
            limits=LimitsConfig(max_concurrent=4),
        )
        return config.replace(**changes)

    async def doctor(self, **kw: Any) -> Report:
        kw.setdefault("config_path", self.config_path)
        kw.setdefault("allow_insecure", True)
        kw.setdefault("timeout", 5.0)
        return await run_doctor(DoctorOptions(**kw))


@pytest.fixture
def feeds(monkeypatch: pytest.MonkeyPatch) -> Iterator[FeedServer]:
    with feed_server() as server:
        server.routes["/models"] = (200, json.dumps(MARKET).encode())
        server.routes["/pypi"] = (200, json.dumps({"info": {"version": __version__}}).encode())
        monkeypatch.setenv("USEPOD_MARKET_PRICES_URL", server.url("/models"))
        monkeypatch.setenv("USEPOD_UPDATE_FEED_URL", server.url("/pypi"))
        yield server


@pytest.fixture
async def rig(tmp_path: Path, feeds: FeedServer) -> AsyncIterator[Rig]:
    key_path = tmp_path / "identity.key"
    ident = identity_mod.create(key_path)
    async with (
        SandboxCoordinator(ws_heartbeat=None) as coord,
        FakeBackend("vllm", ["Qwen/Qwen3-8B"]) as fake,
    ):
        coord.announce_sandbox = False  # playing the real coordinator (no "sandbox": true)
        coord.provider_ids[ident.public_key_b64] = "prov_doctor"
        ident.set_provider_id("prov_doctor")
        r = Rig(coord, fake, feeds, tmp_path, key_path)
        r.write(r.base_config())
        yield r


def by_name(report: Report) -> dict[str, Any]:
    return {c.name: c for c in report.checks}


async def test_healthy_rig_is_all_ok(rig: Rig) -> None:
    report = await rig.doctor()
    checks = by_name(report)
    bad = [c for c in report.checks if c.status != Status.OK]
    assert bad == [], report.render()
    assert report.exit_code == 0
    assert "provider id prov_doctor" in checks["paired"].reason
    assert checks["DNS"].reason.startswith("127.0.0.1 -> 127.0.0.1")
    assert "accepts connections" in checks["TCP"].reason
    assert "auth_ok as prov_doctor" in checks["handshake"].reason
    assert "serves 1 model(s): Qwen/Qwen3-8B" in checks[f"vllm @ {rig.fake.url}"].reason
    # $0.50 / $0.75 against the $1 / $2 cap: 50% (the larger share); the free variant is no cap
    assert (
        "at 50% of the cap $1.00 in / $2.00 out (qwen/qwen3-8b)" in checks["Qwen/Qwen3-8B"].reason
    )
    assert "up to date" in checks["update"].reason
    assert report.capabilities is not None
    assert json.loads(report.capabilities)["models"][0]["model_id"] == "Qwen/Qwen3-8B"
    # a real authentication reached the coordinator, and it was closed after auth_ok
    assert rig.coord.sessions and rig.coord.sessions[-1].provider_id == "prov_doctor"
    # section order is the README's
    sections = list(dict.fromkeys(c.section for c in report.checks))
    assert sections == [
        "Configuration",
        "Coordinator",
        "Serving",
        "Backends",
        "Prices",
        "Recent work",
        "Versions",
    ]


async def test_auth_rejection_is_a_fail_with_the_sanitised_reason(rig: Rig) -> None:
    rig.coord.reject_auth = "provider suspended\x1b[31m: bond\nslashed sk-abcdefghijklmnopqrstu"
    report = await rig.doctor()
    check = by_name(report)["handshake"]
    assert check.status == Status.FAIL
    assert check.reason == "auth_failed: provider suspended [31m: bond slashed [REDACTED]"
    assert check.action is not None and check.action.value == "pair"
    assert report.exit_code == 1
    # the rest still ran
    assert by_name(report)["Qwen/Qwen3-8B"].status == Status.OK


async def test_dead_backend_fails(rig: Rig) -> None:
    await rig.fake.set_fail_mode(FailMode.REFUSE)
    report = await rig.doctor()
    checks = by_name(report)
    backend = checks[f"vllm @ {rig.fake.url}"]
    assert backend.status == Status.FAIL and "unreachable" in backend.reason
    assert checks["advertised"].status == Status.FAIL
    assert checks["market"].reason == "skipped: no advertised model to compare"
    assert report.exit_code == 1


async def test_model_id_mismatch_and_local_tags(rig: Rig, tmp_path: Path) -> None:
    async with FakeBackend("ollama", ["llama3.1:8b", "qwen2.5-7b-instruct-q4_k_m"]) as ollama:
        rig.write(
            rig.base_config(
                backends=(
                    BackendConfig("vllm", rig.fake.url, models=("qwen/qwen3-8b",)),
                    BackendConfig("ollama", ollama.url),
                ),
                pricing=PricingConfig(
                    500_000, 750_000, {"Qwen3-8B-Instruct": ModelPrice(400_000, 600_000)}
                ),
            )
        )
        report = await rig.doctor()
    checks = by_name(report)
    mismatch = checks["model qwen/qwen3-8b"]
    assert mismatch.status == Status.FAIL
    assert "not served under exactly that id; it serves 'Qwen/Qwen3-8B'" in mismatch.reason
    assert checks["model Qwen3-8B-Instruct"].status == Status.WARN
    tag = checks["model llama3.1:8b"]
    assert tag.status == Status.WARN and "a local tag" in tag.reason
    quant = checks["model qwen2.5-7b-instruct-q4_k_m"]
    assert quant.status == Status.WARN and "quantisation suffix" in quant.reason
    assert report.exit_code == 1


async def test_price_above_the_market_cap_fails(rig: Rig) -> None:
    rig.write(rig.base_config(pricing=PricingConfig(1_500_000, 1_000_000)))
    report = await rig.doctor()
    check = by_name(report)["Qwen/Qwen3-8B"]
    assert check.status == Status.FAIL
    assert "above the cap" in check.reason and "you will get no marketplace jobs" in check.reason
    assert check.action is not None and check.action.value == "settings:pricing"
    assert report.exit_code == 1


async def test_no_public_price_is_said_plainly(rig: Rig) -> None:
    rig.feeds.routes["/models"] = (200, json.dumps({"data": []}).encode())
    report = await rig.doctor()
    check = by_name(report)["Qwen/Qwen3-8B"]
    assert check.status == Status.OK and "no public price found" in check.reason


async def test_offline_price_list_is_a_warning_not_a_crash(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USEPOD_MARKET_PRICES_URL", closed_port_url("/models"))
    report = await rig.doctor()
    check = by_name(report)["market"]
    assert check.status == Status.WARN
    assert check.reason.startswith("skipped: cannot reach the price list")
    assert report.exit_code == 0


async def test_price_list_is_cached_for_a_day(rig: Rig) -> None:
    await rig.doctor()
    await rig.doctor()
    assert rig.feeds.hits["/models"] == 1
    now = datetime.now(UTC).timestamp()
    await rig.doctor(now=now + 86400 + 60)  # a day later: asked again
    assert rig.feeds.hits["/models"] == 2


async def test_bad_price_list_answer_is_a_warning(rig: Rig) -> None:
    rig.feeds.routes["/models"] = (200, b'{"data": "nope"}')
    report = await rig.doctor()
    check = by_name(report)["market"]
    assert check.status == Status.WARN and "no `data` array" in check.reason


async def test_unreachable_coordinator(rig: Rig) -> None:
    rig.write(
        rig.base_config(coordinator=CoordinatorConfig(closed_port_url("/c").replace("http", "ws")))
    )
    report = await rig.doctor()
    checks = by_name(report)
    assert checks["DNS"].status == Status.OK
    assert checks["TCP"].status == Status.FAIL and "connection refused" in checks["TCP"].reason
    assert checks["handshake"].status == Status.FAIL
    assert checks["handshake"].reason == "skipped: no TCP connection"


async def test_tls_certificate_error_is_named(rig: Rig, tmp_path: Path) -> None:
    from tests.core.test_link_tls import self_signed

    cert, key = self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        rig.write(rig.base_config(coordinator=CoordinatorConfig(f"wss://127.0.0.1:{port}/c")))
        report = await rig.doctor()
    finally:
        server.close()
        await server.wait_closed()
    tls = by_name(report)["TLS"]
    assert tls.status == Status.FAIL
    assert tls.reason == "certificate rejected: self-signed certificate"


async def test_proxy_in_use_is_reported_without_credentials(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    # "DNS" for the coordinator's name answers 127.0.0.1 (no lookup leaves the machine)
    real = socket.getaddrinfo

    def resolve(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == "coordinator.example" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    closed = int(closed_port_url().rsplit(":", 1)[1].strip("/"))
    rig.write(
        rig.base_config(coordinator=CoordinatorConfig(f"wss://coordinator.example:{closed}/c"))
    )
    proxy_port = int(closed_port_url().rsplit(":", 1)[1].strip("/"))
    monkeypatch.setenv("HTTPS_PROXY", f"http://alice:s3cretpw@127.0.0.1:{proxy_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    report = await rig.doctor(timeout=3.0)
    checks = by_name(report)
    assert f"through the proxy http://127.0.0.1:{proxy_port}" in checks["proxy"].reason
    assert "s3cretpw" not in report.render() and "alice" not in report.render()
    assert checks["DNS"].reason == "coordinator.example -> 127.0.0.1"
    # behind a proxy a refused direct connection is only a warning; the handshake goes
    # through the proxy, which refuses here
    assert checks["TCP"].status == Status.WARN
    assert checks["handshake"].status == Status.FAIL


async def test_configuration_and_identity_states(rig: Rig) -> None:
    os.chmod(rig.key_path, 0o644)
    checks = by_name(await rig.doctor())
    assert checks["identity"].status == Status.WARN and "mode 0644" in checks["identity"].reason
    assert checks["identity"].fix == f"chmod 600 {rig.key_path}"

    rig.key_path.unlink()
    checks = by_name(await rig.doctor())
    assert (
        checks["identity"].status == Status.FAIL and "no identity key" in checks["identity"].reason
    )

    identity_mod.create(rig.key_path)  # a new key, never paired
    checks = by_name(await rig.doctor())
    assert checks["paired"].status == Status.FAIL and "not paired" in checks["paired"].reason

    rig.config_path.write_text("[coordinator]\nurl = 3\n", encoding="utf-8")
    report = await rig.doctor()
    checks = by_name(report)
    assert (
        checks["agent.toml"].status == Status.FAIL
        and "coordinator.url" in checks["agent.toml"].reason
    )
    assert checks["coordinator"].reason == "skipped: no valid agent.toml"
    assert report.exit_code == 1


def _outcome(i: int, *, error: str | None = None, minutes_ago: float = 5) -> JobOutcome:
    ended = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return JobOutcome(
        job_id=f"00000000-0000-4000-8000-{i:012d}",
        model_id="Qwen/Qwen3-8B",
        backend="vllm @ x",
        format="openai",
        started_at=ended - timedelta(seconds=2),
        ended_at=ended,
        ttfb_ms=300.0,
        duration_ms=2000,
        input_tokens=10,
        output_tokens=20,
        bytes_relayed=100,
        error_code=error,
        input_per_1m=500_000,
        output_per_1m=750_000,
    )


async def test_recent_work_from_the_ledger(rig: Rig) -> None:
    ledger = Ledger()
    try:
        for i in range(6):
            assert ledger.record(_outcome(i), source="coordinator")
        assert ledger.record(_outcome(6, error="backend_timeout"), source="coordinator")
        assert ledger.record(_outcome(7, error="backend_error"), source="coordinator")
        assert ledger.record(_outcome(8, minutes_ago=300), source="coordinator")
        assert ledger.record(_outcome(9), source="test")  # test jobs do not count
    finally:
        ledger.close()
    checks = by_name(await rig.doctor())
    assert checks["jobs"].reason.startswith("8 in the last hour, 9 in the last 24 h (7 done, 2")
    rate = checks["error rate"]
    assert rate.status == Status.WARN
    assert rate.reason.startswith("22% errors, 11% timeouts over 24 h")
    assert checks["first byte"].status == Status.OK


async def test_no_jobs_while_connected_and_under_the_cap_says_demand_may_be_low(rig: Rig) -> None:
    checks = by_name(await rig.doctor())
    assert checks["demand"].status == Status.OK
    assert "demand for your models may simply be low" in checks["demand"].reason


async def test_update_available_is_a_warning(rig: Rig) -> None:
    rig.feeds.routes["/pypi"] = (200, json.dumps({"info": {"version": "99.0"}}).encode())
    check = by_name(await rig.doctor())["update"]
    assert check.status == Status.WARN and "99.0 is available" in check.reason
    assert "pip install --upgrade usepod-desktop==99.0" in check.fix


async def test_live_agent_is_used_instead_of_a_second_handshake(rig: Rig) -> None:
    from usepod_desktop.core.agent import Agent

    agent = Agent(rig.config, config_path=rig.config_path, allow_insecure=True)
    await agent.start()
    try:
        await rig.coord.wait_for_capabilities(10)
        connections = len(rig.coord.sessions)
        report = await run_doctor(DoctorOptions(agent=agent, timeout=5.0))
        checks = by_name(report)
        assert checks["handshake"].status == Status.OK
        assert checks["handshake"].reason.startswith("connected now, 1 session(s)")
        assert len(rig.coord.sessions) == connections  # no second authentication
        assert checks["live"].reason.startswith("0 running; last 60 s")
        await agent.pause()
        checks = by_name(await run_doctor(DoctorOptions(agent=agent, timeout=5.0)))
        assert checks["state"].status == Status.WARN
        assert checks["state"].action is not None and checks["state"].action.value == "resume"
    finally:
        await agent.stop(grace=0.1)


async def test_live_agent_says_when_the_last_heartbeat_went_out(rig: Rig) -> None:
    from usepod_desktop.core.agent import Agent

    # a session whose first heartbeat is not due yet: said, not a failure
    agent = Agent(
        rig.config, config_path=rig.config_path, allow_insecure=True, heartbeat_interval=3600
    )
    await agent.start()
    try:
        await rig.coord.wait_for_capabilities(10)
        assert agent.heartbeat_age_s is None
        beat = by_name(await run_doctor(DoctorOptions(agent=agent, timeout=5.0)))["heartbeat"]
        assert beat.status == Status.OK
        assert beat.reason == "none sent yet in this session (the first is due within 1 h 0 min)"
    finally:
        await agent.stop(grace=0.1)

    agent = Agent(
        rig.config, config_path=rig.config_path, allow_insecure=True, heartbeat_interval=0.3
    )
    await agent.start()
    try:
        await rig.coord.wait_for_heartbeat(10)
        link = internals_for_tests(agent).link
        assert link is not None
        age = agent.heartbeat_age_s
        assert age is not None and 0 <= age < 2
        beat = by_name(await run_doctor(DoctorOptions(agent=agent, timeout=5.0)))["heartbeat"]
        assert beat.status == Status.OK
        assert re.fullmatch(r"last heartbeat sent [0-2] s ago \(every 0.3 s\)", beat.reason)
        # heartbeats stop (a long interval from the next one on) and 2 h pass: a warning
        link.heartbeat_interval = 3600
        sent = len(rig.coord.sessions[-1].heartbeats)
        await rig.coord.wait_for_heartbeat(10, after=sent)  # the one already due goes out
        later = link.clock() + 2 * 3600 + 120
        link.clock = lambda: later
        beat = by_name(await run_doctor(DoctorOptions(agent=agent, timeout=5.0)))["heartbeat"]
        assert beat.status == Status.WARN
        assert beat.reason.startswith("last heartbeat sent 2 h 2 min ago (due every 1 h 0 min)")
        assert "coordinator may drop this session" in beat.reason
    finally:
        await agent.stop(grace=0.1)
    assert agent.heartbeat_age_s is None  # not connected: no figure


async def test_cli_exit_codes_and_json(rig: Rig) -> None:
    args = ["doctor", "--json", "--config", str(rig.config_path), "--allow-insecure"]
    code = await asyncio.to_thread(main, args)
    assert code == 0
    rig.coord.reject_auth = "nope"
    code = await asyncio.to_thread(main, args)
    assert code == 1


async def test_cli_json_document(rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["doctor", "--json", "--config", str(rig.config_path), "--allow-insecure"]
    assert await asyncio.to_thread(main, args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["counts"]["FAIL"] == 0
    assert {c["status"] for c in data["checks"]} == {"OK"}


def test_market_matching_is_case_insensitive_hf_and_openrouter_style() -> None:
    market = MarketPrices(MARKET["data"])  # type: ignore[arg-type]
    assert market.size == 1  # the free variant and the broken entries are not prices
    for name in ("Qwen/Qwen3-8B", "qwen/qwen3-8b", "QWEN/QWEN3-8B", "qwen3-8b", "Qwen3-8B"):
        found = market.cheapest(name)
        assert found is not None and found.market_id == "qwen/qwen3-8b", name
    assert market.cheapest("qwen/qwen3-8b-04-28") is not None  # canonical slug
    assert market.cheapest("meta-llama/llama-3-8b") is None
    cheaper = MarketPrices(
        [
            *MARKET["data"],  # type: ignore[list-item]
            {"id": "other/qwen3-8b", "pricing": {"prompt": "0.0000001", "completion": "0.0000002"}},
        ]
    )
    found = cheaper.cheapest("qwen3-8b")
    assert found is not None and found.market_id == "other/qwen3-8b"


@pytest.mark.parametrize(
    ("model_id", "flagged"),
    [
        ("llama3.1:8b", "a local tag (name:tag)"),
        ("qwen2.5:latest", "a local tag (name:tag)"),
        ("Meta-Llama-3-8B-Instruct.Q4_K_M.gguf", "a file name"),
        ("/models/llama.gguf", "a file name"),
        ("/srv/models/llama", "a file path"),
        ("C:\\models\\x", "a file path"),
        ("qwen2.5-7b-instruct-q4_k_m", "a quantisation suffix"),
        ("Llama-3-8B-IQ3_XS", "a quantisation suffix"),
        ("mistral-7b-f16", "a quantisation suffix"),
        ("Qwen/Qwen3-8B", None),
        ("meta-llama/Llama-3.1-8B-Instruct", None),
        ("Qwen/Qwen2.5-7B-Instruct-AWQ", None),
        ("deepseek-ai/DeepSeek-V3", None),
    ],
)
def test_local_tag_heuristic(model_id: str, flagged: str | None) -> None:
    assert looks_like_local_tag(model_id) == flagged


def test_sanitize_removes_control_characters_credentials_and_cuts() -> None:
    assert sanitize("a\x00b\r\nc  d") == "a b c d"
    assert sanitize("see wss://bob:hunter22@h.example/x") == "see wss://h.example/x"
    assert len(sanitize("x" * 1000)) == 300


def test_connection_history_counts_reconnects_in_the_last_hour() -> None:
    from usepod_desktop.core.doctor.history import ConnectionHistory, format_duration
    from usepod_desktop.core.events import AgentState, EventBus, StateChanged

    now = [1000.0]

    class FakeAgent:
        state = AgentState.CONNECTING
        events = EventBus()

    agent = FakeAgent()
    history = ConnectionHistory.attach(agent, clock=lambda: now[0])
    assert history.connected_for() is None
    agent.events.emit(StateChanged(AgentState.SERVING, "1 model(s) advertised"))
    now[0] += 30
    agent.events.emit(StateChanged(AgentState.PAUSED, "paused"))  # still connected
    assert history.connected_for() == 30 and history.reconnects_last_hour() == 0
    for _ in range(3):  # three drops, three reconnects
        agent.events.emit(StateChanged(AgentState.OFFLINE, "connection lost"))
        now[0] += 5
        agent.events.emit(StateChanged(AgentState.SERVING, "back"))
    assert history.reconnects_last_hour() == 3 and history.connected_for() == 0
    now[0] += 3700
    assert history.reconnects_last_hour() == 0
    assert format_duration(history.connected_for() or 0) == "1 h 1 min"
    history.detach()
    agent.events.emit(StateChanged(AgentState.OFFLINE, "gone"))
    assert history.connected_since is not None  # detached: no longer updated


async def test_skip_handshake_does_not_authenticate(rig: Rig) -> None:
    before = len(rig.coord.sessions)
    checks = by_name(await rig.doctor(handshake=False))
    assert checks["handshake"].reason == "skipped (--skip-handshake)"
    assert len(rig.coord.sessions) == before


async def test_unpaired_with_an_enrollment_code_does_not_spend_it(rig: Rig) -> None:
    rig.key_path.unlink()
    fresh = identity_mod.create(rig.key_path)  # unknown to the coordinator
    rig.coord.require_enrollment_code = "CODE-1234"
    rig.write(
        rig.base_config(coordinator=CoordinatorConfig(rig.coord.url, enrollment_code="CODE-1234"))
    )
    before = len(rig.coord.sessions)
    checks = by_name(await rig.doctor())
    assert checks["paired"].status == Status.WARN
    assert checks["handshake"].status == Status.WARN
    assert checks["handshake"].reason.startswith("skipped: not paired yet")
    assert len(rig.coord.sessions) == before
    assert fresh.public_key_b64 not in rig.coord.provider_ids
    # without a code, the attempt shows the coordinator's reason
    rig.write(rig.base_config())
    checks = by_name(await rig.doctor())
    assert checks["handshake"].reason == "auth_failed: enrollment code required"


def _unpaired(rig: Rig) -> None:
    """A fresh identity without a provider id, no enrollment code (a sandbox's), and the
    coordinator a sandbox that says so."""
    rig.coord.announce_sandbox = True
    rig.key_path.unlink()
    identity_mod.create(rig.key_path)
    rig.write(rig.base_config())


async def test_live_agent_on_a_sandbox_says_the_session_s_state_not_unpaired(rig: Rig) -> None:
    """The sandbox needs no pairing: while the agent is connected to one, "paired" shows the
    session's throw-away provider id, not a "not paired" FAIL; once the session is gone it
    says so (a warning, not a pairing failure)."""
    from usepod_desktop.core.agent import Agent
    from usepod_desktop.core.events import AgentState, StateChanged

    _unpaired(rig)
    agent = Agent(rig.config, config_path=rig.config_path, allow_insecure=True)
    states: asyncio.Queue[StateChanged] = asyncio.Queue()
    agent.events.subscribe(StateChanged, states.put_nowait)
    await agent.start()
    try:
        session = await rig.coord.wait_for_provider(10)
        await rig.coord.wait_for_capabilities(10)
        report = await run_doctor(DoctorOptions(agent=agent, timeout=5.0))
        paired = by_name(report)["paired"]
        assert paired.status == Status.OK, report.render()
        assert paired.reason == (
            f"sandbox session: provider id {session.provider_id} (the local sandbox's, for "
            "this session only; never stored)"
        )
        assert [c.name for c in report.checks].count("paired") == 1
        # the sandbox refuses the next session: said as the session's state
        rig.coord.reject_auth = "sandbox closed for the test"
        await rig.coord.kick()
        while agent.state not in (AgentState.ERROR, AgentState.NEEDS_PAIRING):
            await asyncio.wait_for(states.get(), 10)
        paired = by_name(await run_doctor(DoctorOptions(agent=agent, timeout=5.0)))["paired"]
        assert paired.status == Status.WARN
        assert paired.reason.startswith("sandbox session: not connected now (")
        assert "sandbox closed for the test" in paired.reason
    finally:
        await agent.stop(grace=0.1)


async def test_standalone_doctor_on_a_sandbox_s_agent_toml_is_no_pairing_failure(rig: Rig) -> None:
    _unpaired(rig)
    report = await rig.doctor()
    paired = by_name(report)["paired"]
    assert paired.status == Status.OK, report.render()
    assert paired.reason.startswith("sandbox session: provider id prov_")
    assert by_name(report)["handshake"].status == Status.OK
    # a real coordinator (no "sandbox": true) with the same identity: still not paired
    rig.coord.announce_sandbox = False
    paired = by_name(await rig.doctor())["paired"]
    assert paired.status == Status.FAIL and paired.reason.startswith("not paired")
