"""wss:// is certificate-verified; ws:// needs --allow-insecure."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import ServerConnection, serve

from usepod_desktop.core import identity, protocol
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.executor import Executor
from usepod_desktop.core.link import Link, LinkState


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_coordinator(tmp_path: Path) -> AsyncIterator[tuple[str, Path, list[str]]]:
    """A minimal wss coordinator: challenge, then refuse (enough to prove the TLS handshake)."""
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    seen: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send(protocol.auth_challenge(b"n" * 32))
        seen.append(str(await ws.recv()))
        await ws.send(protocol.auth_failed("tls test"))

    async with serve(handler, "127.0.0.1", 0, ssl=server_ctx) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"wss://127.0.0.1:{port}/provider/connect", cert, seen


async def run_link(link: Link, until: LinkState, seconds: float = 5.0) -> None:
    """Run the link until it reports a failed attempt in state `until`."""
    reached = asyncio.Event()
    link.on_status = lambda s: reached.set() if s.state == until and s.retry_in_s else None
    task = asyncio.create_task(link.run_forever())
    try:
        async with asyncio.timeout(seconds):
            await reached.wait()
    finally:
        await link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def never() -> str:
    raise AssertionError("no capabilities without auth_ok")


async def test_untrusted_certificate_is_refused(
    tls_coordinator: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    url, _, seen = tls_coordinator
    link = Link(
        url,
        identity.load_or_create(tmp_path / "id.key"),
        Executor(),
        never,
        backoff=Backoff(initial=0.05),
    )
    await run_link(link, LinkState.OFFLINE)
    assert "certificate" in link.status.detail.lower(), link.status.detail
    assert seen == []  # no auth_response ever went over the unverified connection


async def test_trusted_certificate_connects(
    tls_coordinator: tuple[str, Path, list[str]], tmp_path: Path
) -> None:
    url, cert, seen = tls_coordinator
    ctx = ssl.create_default_context(cafile=str(cert))
    link = Link(
        url,
        identity.load_or_create(tmp_path / "id.key"),
        Executor(),
        never,
        ssl_context=ctx,
        backoff=Backoff(initial=0.05),
    )
    await run_link(link, LinkState.AUTH_FAILED)
    assert link.last_auth_failure == "tls test"
    assert '"type":"auth_response"' in seen[0]


def test_ws_needs_allow_insecure(tmp_path: Path) -> None:
    ident = identity.load_or_create(tmp_path / "id.key")
    with pytest.raises(ValueError, match="allow-insecure"):
        Link("ws://127.0.0.1:1/x", ident, Executor(), never)
    with pytest.raises(ValueError, match="not supported"):
        Link("http://127.0.0.1:1/x", ident, Executor(), never, allow_insecure=True)
    assert Link("ws://127.0.0.1:1/x", ident, Executor(), never, allow_insecure=True)


async def test_the_default_tls_context_is_built_once_per_link(
    tls_coordinator: tuple[str, Path, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading the CA store costs CPU at every reconnect: the link keeps the context it built."""
    from usepod_desktop.core import link as link_mod

    url, _, _ = tls_coordinator
    built: list[ssl.SSLContext] = []

    def counting() -> ssl.SSLContext:
        built.append(ssl.create_default_context())
        return built[-1]

    monkeypatch.setattr(link_mod, "default_ssl_context", counting)
    failures = 0
    done = asyncio.Event()
    link = Link(
        url,
        identity.load_or_create(tmp_path / "id.key"),
        Executor(),
        never,
        backoff=Backoff(initial=0.01, maximum=0.02),
    )

    def on_status(status: object) -> None:
        nonlocal failures
        if getattr(status, "retry_in_s", None):
            failures += 1
            if failures >= 3:  # three refused handshakes: three reconnects
                done.set()

    link.on_status = on_status
    task = asyncio.create_task(link.run_forever())
    try:
        async with asyncio.timeout(10):
            await done.wait()
    finally:
        await link.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(built) == 1 and link.ssl_context is built[0]
