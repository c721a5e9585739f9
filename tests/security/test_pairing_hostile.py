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


async def _run_setup(base: str, tmp_path: Path) -> tuple[int, str, str]:
    """`usepod-desktop setup` as a user runs it (a real subprocess, isolated home)."""
    import sys

    from tests.commands.test_setup import REPO, env, probe_args

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "usepod_desktop",
        "setup",
        "--coordinator",
        base,
        *probe_args(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env(tmp_path / "keyring.json"),
        cwd=REPO,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_setup_never_prints_terminal_escapes_from_the_pairing_server(
    tmp_path: Path,
) -> None:
    """The pairing server's model ids (and everything else it sends) reach the terminal
    escaped; a pair code that is not a code is refused with one escaped line."""
    active = {
        "status": "active",
        "host_token": "tok-123456",
        "provider_id": "prov-1",
        "model_config": [
            {"model_id": "\x1b]0;owned\x07evil\x1b[2J", "input_per_1m": 1, "output_per_1m": 2}
        ],
    }
    bad = await BadCoordinator(polls=[Scripted(body=active)]).start()
    try:
        status, out, err = await _run_setup(bad.url, tmp_path)
    finally:
        await bad.stop()
    assert status == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;owned\\x07evil\\x1b[2J" in out

    issue = Scripted(body={"pair_code": "\x1b]0;owned\x07AB", "poll_token": "poll-token-1"})
    bad = await BadCoordinator(issue=issue).start()
    try:
        status, out, err = await _run_setup(bad.url, tmp_path / "again")
    finally:
        await bad.stop()
    assert status != 0
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert err.strip().count("\n") == 0 and "invalid pair_code" in err
