"""Pairing against a coordinator whose HTTP answers carry no `Date` header (allowed by RFC 9110
for servers without a clock; aiohttp always adds one, so this server is a raw one on 127.0.0.1).
The flow must use our own clock and pair normally (it used to end in `KeyError: 'date'`)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import MemoryKeyring
from tests.pairing_support import probe_ports
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import load_config
from usepod_desktop.core.pairing import PairingFlow


class NoDateCoordinator:
    """Answers issue and poll (pending once, then active) with bare HTTP/1.1 responses."""

    def __init__(self, date_header: str | None = None) -> None:
        self.date_header = date_header
        self.requests: list[tuple[str, dict[str, object]]] = []
        self.headers_sent: list[bytes] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> NoDateCoordinator:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length)) if length else {}
            path = request_line.split()[1]
            self.requests.append((path, body))
            writer.write(self._answer(path))
            await writer.drain()
        finally:
            writer.close()

    def _answer(self, path: str) -> bytes:
        if path.endswith("/issue"):
            expires = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
            payload: dict[str, object] = {
                "pair_code": "NODATE-1",
                "poll_token": "poll-token-nodate",
                "expires_at": expires,
            }
        elif sum(1 for p, _ in self.requests if p.endswith("/poll")) == 1:
            payload = {"status": "pending"}
        else:
            payload = {
                "status": "active",
                "host_token": "host-token-nodate",
                "provider_id": "prov-nodate",
                "model_config": [],
            }
        body = json.dumps(payload).encode()
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n"
        )
        if self.date_header is not None:
            head += f"Date: {self.date_header}\r\n"
        raw = head.encode() + b"\r\n"
        self.headers_sent.append(raw)
        return raw + body


@pytest.mark.parametrize(
    "date_header",
    [None, "", "not a date", "Sun, 29 Nov 2026 19:00:00 -0000"],
    ids=["absent", "empty", "garbage", "no-zone"],
)
async def test_pairing_works_without_a_usable_date_header(
    tmp_path: Path, memory_keyring: MemoryKeyring, date_header: str | None
) -> None:
    async with NoDateCoordinator(date_header) as coord:
        config_path = tmp_path / "agent.toml"
        flow = PairingFlow(
            f"http://127.0.0.1:{coord.port}",
            config_path=config_path,
            identity_path=tmp_path / "identity.key",
            probe_ports=probe_ports(),
            backoff=Backoff(initial=0.02, maximum=0.1),
            poll_interval=0.02,
        )
        result = await asyncio.wait_for(flow.run(), 20)
    if date_header is None:
        assert all(b"date:" not in raw.lower() for raw in coord.headers_sent)
    assert [p for p, _ in coord.requests] == [
        "/v1/host/pair/issue",
        "/v1/host/pair/poll",
        "/v1/host/pair/poll",
    ]
    assert result.provider_id == "prov-nodate"
    config = load_config(config_path, allow_insecure=True)
    assert config.coordinator.url == f"ws://127.0.0.1:{coord.port}/provider/connect"
