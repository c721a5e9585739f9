"""Issue 12 items 1 and 10: a hostile pairing server cannot write into the identity file nor
print terminal escapes through the pair code. The server is scripted here (127.0.0.1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.conftest import MemoryKeyring
from tests.pairing_support import BadCoordinator, Scripted, probe_ports
from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.pairing import PairingError, PairingFlow, parse_activation


def flow_for(base: str, tmp_path: Path) -> PairingFlow:
    return PairingFlow(
        base,
        config_path=tmp_path / "conf" / "agent.toml",
        identity_path=tmp_path / "keys" / "identity.key",
        probe_ports=probe_ports(),
        backoff=Backoff(initial=0.02, maximum=0.1),
        poll_interval=0.02,
    )


HOSTILE_IDS = [
    "prov-1\nsecret: AAAA\npublic: BBBB",
    "prov-1\u2028secret: AAAA",
    "prov-1\x85public: BBBB",
    "prov-1\rversion: 9",
    "\x1b[2Jprov",
    "prov 1",
    "p" * 500,
]


@pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=lambda v: repr(v[:16]))
def test_parse_activation_refuses_an_unusable_provider_id(hostile: str) -> None:
    with pytest.raises(PairingError, match="provider_id") as info:
        parse_activation({"status": "active", "host_token": "tok-123456", "provider_id": hostile})
    text = str(info.value)
    assert text.isprintable() and "\x1b" not in text and len(text) < 300


@pytest.mark.parametrize("existing", [False, True], ids=["new key", "existing key"])
async def test_hostile_active_answer_writes_nothing(
    existing: bool, tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    key_path = tmp_path / "keys" / "identity.key"
    before = None
    if existing:
        identity_mod.create(key_path)
        before = key_path.read_bytes()
    answer = {
        "status": "active",
        "host_token": "tok-123456",
        "provider_id": "prov-1\nsecret: AAAA\u2028public: BBBB",
    }
    bad = await BadCoordinator(polls=[Scripted(body=answer)]).start()
    try:
        with pytest.raises(PairingError, match="provider_id"):
            await asyncio.wait_for(flow_for(bad.url, tmp_path).run(), 10)
    finally:
        await bad.stop()
    assert not (tmp_path / "conf" / "agent.toml").exists()
    if existing:
        assert key_path.read_bytes() == before
    else:
        assert not key_path.exists()
    assert memory_keyring.store == {}


@pytest.mark.parametrize(
    "code",
    ["\x1b]0;owned\x07ABCD", "ABCD\x1b[2J", "AB\nCD", "<b>ABCD</b>", "AB", "A" * 40, "ABCD\u202e"],
    ids=repr,
)
async def test_a_pair_code_that_is_not_a_code_is_refused(
    code: str, tmp_path: Path, memory_keyring: MemoryKeyring
) -> None:
    issue = Scripted(body={"pair_code": code, "poll_token": "poll-token-123456"})
    bad = await BadCoordinator(issue=issue).start()
    try:
        with pytest.raises(PairingError, match="invalid pair_code") as info:
            await asyncio.wait_for(flow_for(bad.url, tmp_path).run(), 10)
    finally:
        await bad.stop()
    text = str(info.value)
    assert text.isprintable() and "\x1b" not in text and "\n" not in text
    assert [kind for kind, _ in bad.seen] == ["issue"]  # never polled with that code
