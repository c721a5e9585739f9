"""Issue 12 item 1: a provider_id from the network can never rewrite the identity file.

The hostile peers (a coordinator sending `auth_ok`, a pairing server answering `active`) are
written here and run on 127.0.0.1. On the old code, a provider_id with a line break added
`secret:` / `public:` lines and the parser let the last one win: the agent then signed with
a key the attacker knew.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from websockets.asyncio.server import ServerConnection, serve

from usepod_desktop.core import identity, protocol
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.errors import IdentityError
from usepod_desktop.core.executor import Executor
from usepod_desktop.core.link import Link, LinkState

# A key the attacker knows.
_ATTACKER = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
ATTACKER_SECRET = base64.b64encode(b"\x07" * 32).decode()
ATTACKER_PUBLIC = base64.b64encode(
    _ATTACKER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
).decode()


def injection(separator: str) -> str:
    return (
        f"prov-1{separator}secret: {ATTACKER_SECRET}{separator}public: {ATTACKER_PUBLIC}"
        f"{separator}version: 1"
    )


# Every str.splitlines() boundary, plus other things that are not one printable token.
HOSTILE_IDS = [
    *(
        injection(sep)
        for sep in ("\n", "\r", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028")
    ),
    injection("\u2029"),
    "prov 1",
    "prov\t1",
    "\x1b]0;owned\x07prov",
    "prov\x00",
    "prov\u202e1",
    "",
    "p" * 129,
]


@pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=lambda v: repr(v[:24]))
def test_set_provider_id_refuses_and_writes_nothing(tmp_path: Path, hostile: str) -> None:
    ident = identity.load_or_create(tmp_path / "identity.key")
    before = ident.path.read_bytes()
    with pytest.raises(IdentityError, match="provider_id") as info:
        ident.set_provider_id(hostile)
    message = str(info.value)
    assert len(message.splitlines()) <= 1 and message.isprintable()  # one line, escaped
    assert len(message) < 300
    assert ident.path.read_bytes() == before
    assert ident.provider_id is None
    again = identity.load(ident.path)
    assert again.public_key == ident.public_key and again.provider_id is None


def test_ordinary_ids_are_kept(tmp_path: Path) -> None:
    ident = identity.load_or_create(tmp_path / "identity.key")
    for good in ("prov_123", "0b6f5a3e-7c1d-4d0a-9a55-2b1f0c9e8d7a", "p" * 128, "pr:ov/1"):
        assert ident.set_provider_id(good) is True
        assert identity.load(ident.path).provider_id == good


@pytest.mark.parametrize("field", ["secret", "public", "provider_id", "version", "created"])
def test_parser_refuses_duplicate_keys(tmp_path: Path, field: str) -> None:
    ident = identity.load_or_create(tmp_path / "identity.key")
    ident.set_provider_id("prov-1")
    text = ident.path.read_text()
    line = next(x for x in text.splitlines() if x.startswith(f"{field}:"))
    footer = identity.FOOTER
    ident.path.write_text(text.replace(footer, f"{line}\n{footer}"))
    with pytest.raises(IdentityError, match=f"duplicate field '{field}'"):
        identity.load(ident.path)


def test_an_injected_key_is_never_loaded(tmp_path: Path) -> None:
    """The attack on the old code: the file as its writer would have produced it."""
    ident = identity.load_or_create(tmp_path / "identity.key")
    text = ident.path.read_text()
    forged = text.replace(identity.FOOTER, f"provider_id: {injection(chr(10))}\n{identity.FOOTER}")
    ident.path.write_text(forged)
    with pytest.raises(IdentityError, match="duplicate field"):
        identity.load(ident.path)


async def test_hostile_auth_ok_is_logged_and_ignored_and_the_session_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = injection("\u2028") + "\n2026-01-01 INFO forged: record"
    capabilities_seen = asyncio.Event()

    async def coordinator(ws: ServerConnection) -> None:
        await ws.send(protocol.auth_challenge(b"n" * 32))
        await ws.recv()
        await ws.send(protocol.auth_ok(hostile))
        frame = await ws.recv()
        assert '"type":"capabilities"' in str(frame)
        capabilities_seen.set()
        await ws.wait_closed()

    ident = identity.load_or_create(tmp_path / "identity.key")
    before = ident.path.read_bytes()

    async def capabilities() -> str:
        return protocol.capabilities([], 1, None, {})

    async with serve(coordinator, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        link = Link(
            f"ws://127.0.0.1:{port}/provider/connect",
            ident,
            Executor(),
            capabilities,
            allow_insecure=True,
            backoff=Backoff(initial=0.05),
        )
        task = asyncio.create_task(link.run_forever())
        try:
            with caplog.at_level(logging.WARNING, logger="usepod_desktop.core.link"):
                async with asyncio.timeout(5):
                    await capabilities_seen.wait()
            assert link.status.state == LinkState.CONNECTED
        finally:
            await link.stop()
            await asyncio.gather(task, return_exceptions=True)
    assert ident.path.read_bytes() == before
    assert identity.load(ident.path).public_key == ident.public_key
    assert ident.provider_id is None
    warnings = [r.getMessage() for r in caplog.records if "provider id" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "\n" not in warnings[0] and "\u2028" not in warnings[0]
    assert "\\u2028" in warnings[0]
