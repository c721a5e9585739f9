"""The sandbox coordinator's pairing endpoints and desk, over real HTTP (httpx) on 127.0.0.1."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.pairing import (
    DESK_KEY,
    ApprovedModel,
    DeskEvent,
    PairingDesk,
    describe_event,
    enable_pairing,
)

PUBKEY = base64.b64encode(bytes(range(32))).decode()
CAPS = {
    "backends": [
        {"kind": "vllm", "url": "http://localhost:8000", "models": ["model-a", "model-b"]},
        {"kind": "ollama", "url": "http://localhost:11434", "models": ["model-b", "llama3"]},
    ],
    "agent_version": "0.3.2",
}


@pytest.fixture
async def desk() -> AsyncIterator[PairingDesk]:
    coord = SandboxCoordinator(ws_heartbeat=None)
    desk = enable_pairing(coord)
    await coord.start()
    yield desk
    await coord.stop()


@pytest.fixture
async def http(desk: PairingDesk) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=desk.coordinator.http_url) as client:
        yield client


async def issue(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.post("/v1/host/pair/issue", json={"agent_pubkey": PUBKEY})
    assert response.status_code == 200
    return response.json()


async def poll(http: httpx.AsyncClient, token: str) -> dict[str, object]:
    response = await http.post(
        "/v1/host/pair/poll", json={"poll_token": token, "capabilities": CAPS}
    )
    assert response.status_code == 200
    return response.json()


async def test_issue_poll_approve(desk: PairingDesk, http: httpx.AsyncClient) -> None:
    events: list[DeskEvent] = []
    desk.add_listener(events.append)
    issued = await issue(http)
    code = issued["pair_code"]
    assert len(code) == 9 and code[4] == "-"
    assert issued["expires_at"].endswith("Z")
    assert [r.pair_code for r in desk.pending] == [code]
    assert await poll(http, issued["poll_token"]) == {"status": "pending"}
    request = desk.get(code.lower().replace("-", ""))  # case and dash do not matter
    assert request.offered_models == ["model-a", "model-b", "llama3"]
    assert request.polls == 1

    desk.approve(code, [ApprovedModel("model-a", 1, 2, 3), ("model-b", 4, 5), "llama3"])
    answer = await poll(http, issued["poll_token"])
    assert answer == {
        "status": "active",
        "host_token": request.host_token,
        "provider_id": request.provider_id,
        "model_config": [
            {"model_id": "model-a", "input_per_1m": 1, "output_per_1m": 2, "max_concurrent": 3},
            {"model_id": "model-b", "input_per_1m": 4, "output_per_1m": 5, "max_concurrent": 4},
            {
                "model_id": "llama3",
                "input_per_1m": 400_000,
                "output_per_1m": 800_000,
                "max_concurrent": 4,
            },
        ],
    }
    assert desk.coordinator.provider_ids[PUBKEY] == request.provider_id
    assert desk.pending == []
    assert [e.kind for e in events] == ["issued", "offered", "approved"]
    assert desk.coordinator.app[DESK_KEY] is desk
    with pytest.raises(ValueError, match="active, not pending"):
        desk.approve(code)


async def test_approve_without_models_takes_every_offered_one_and_keeps_a_known_id(
    desk: PairingDesk, http: httpx.AsyncClient
) -> None:
    desk.coordinator.provider_ids[PUBKEY] = "prov_known"
    issued = await issue(http)
    await poll(http, issued["poll_token"])
    request = desk.approve(issued["pair_code"])
    assert request.provider_id == "prov_known"
    assert [m.model_id for m in request.models] == ["model-a", "model-b", "llama3"]


async def test_expiry_by_time_and_by_hand(desk: PairingDesk, http: httpx.AsyncClient) -> None:
    now = [1000.0]
    desk.clock = lambda: now[0]
    desk.lifetime = 60
    first, second = await issue(http), await issue(http)
    now[0] += 61
    assert await poll(http, first["poll_token"]) == {"status": "expired"}
    desk.lifetime = 600
    third = await issue(http)
    desk.expire(third["pair_code"])
    assert await poll(http, third["poll_token"]) == {"status": "expired"}
    assert desk.pending == []
    with pytest.raises(ValueError, match="expired"):
        desk.approve(second["pair_code"])


async def test_bad_requests_and_outage(desk: PairingDesk, http: httpx.AsyncClient) -> None:
    for body in ({"agent_pubkey": "short"}, {"agent_pubkey": 5}, {}):
        response = await http.post("/v1/host/pair/issue", json=body)
        assert response.status_code == 400 and "agent_pubkey" in response.json()["error"]
    response = await http.post("/v1/host/pair/issue", content=b"not json")
    assert response.status_code == 400
    response = await http.post("/v1/host/pair/poll", json={"poll_token": "nope"})
    assert response.status_code == 404 and response.json() == {"error": "unknown poll_token"}
    desk.outage = 503
    response = await http.post("/v1/host/pair/issue", json={"agent_pubkey": PUBKEY})
    assert response.status_code == 503
    desk.outage = None
    await issue(http)
    with pytest.raises(KeyError, match="no pairing code 'ZZZZ-ZZZZ'"):
        desk.get("ZZZZ-ZZZZ")


async def test_terminal_commands(desk: PairingDesk, http: httpx.AsyncClient) -> None:
    assert desk.command("hello there") is None
    assert desk.command("codes") == "no pairing code is waiting for approval"
    issued = await issue(http)
    code = issued["pair_code"]
    await poll(http, issued["poll_token"])
    listing = desk.command("codes")
    assert listing is not None and code in listing and "model-a, model-b, llama3" in listing
    assert desk.command("approve") == "usage: approve CODE [MODEL[=IN/OUT] ...]"
    assert (
        desk.command("approve NOPE-NOPE")
        == "cannot approve: no pairing code 'NOPE-NOPE' was issued here"
    )
    reply = desk.command(f"approve {code} model-a=0.30/$0.45 model-b=x")
    assert reply is not None and reply.startswith("cannot approve: 'model-b=x'")
    reply = desk.command(f"APPROVE {code.lower()} model-a=0.30/$0.45 llama3")
    request = desk.get(code)
    assert reply == (
        f"pairing code {code} approved as provider {request.provider_id}; "
        "models: model-a ($0.30 / $0.45), llama3 ($0.40 / $0.80)"
    )
    assert request.models == (ApprovedModel("model-a", 300_000, 450_000), ApprovedModel("llama3"))
    assert desk.command(f"expire {code}") == f"pairing code {code} is already active"

    other = await issue(http)
    assert desk.command(f"expire {other['pair_code']}") == ""
    assert desk.get(other["pair_code"]).status == "expired"


async def test_event_lines(desk: PairingDesk, http: httpx.AsyncClient) -> None:
    lines: list[str | None] = []
    desk.add_listener(lambda e: lines.append(describe_event(e)))
    issued = await issue(http)
    code = issued["pair_code"]
    await poll(http, issued["poll_token"])
    desk.expire(code)
    assert lines == [
        f"pairing code {code} requested; type `approve {code}` to approve it",
        f"pairing code {code}: the agent offers vllm at http://localhost:8000 (model-a, model-b); "
        "ollama at http://localhost:11434 (model-b, llama3)",
        f"pairing code {code} expired",
    ]


async def test_enable_pairing_refuses_a_running_coordinator() -> None:
    async with SandboxCoordinator(ws_heartbeat=None) as coord:
        with pytest.raises(RuntimeError, match="before the coordinator starts"):
            enable_pairing(coord)
