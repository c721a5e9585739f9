"""Quick-ACK backend connections: the first event of a Nagle'd keep-alive server is not held
behind a delayed ACK (see core/backends/http.py, _QuickAckStream). Behaviour only, no timing."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from tests.core.backends.conftest import MakeBackend, Sink, chat_request
from usepod_desktop.core.backends import http as backend_http
from usepod_desktop.core.backends.base import JobRequest
from usepod_desktop.sandbox.fakes import FakeBackend

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux-only"
)


class RecordingSocket:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.calls.append((level, option, value))


class InnerStream:
    def __init__(self, sock: Any, log: list[str]) -> None:
        self.sock = sock
        self.log = log

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.log.append(f"write {len(buffer)}")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return b""

    async def aclose(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        return self.sock if info == "socket" else None


async def test_every_request_write_re_arms_quick_ack_after_the_bytes_went_out() -> None:
    sock = RecordingSocket()
    log: list[str] = []
    inner = InnerStream(sock, log)
    stream = backend_http._QuickAckStream(inner)  # type: ignore[arg-type]
    await stream.write(b"POST / HTTP/1.1\r\n\r\n")
    assert log == ["write 19"]
    assert sock.calls == [(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)]
    await stream.write(b"{}")
    assert len(sock.calls) == 2
    assert stream.read == inner.read  # reads are not wrapped: nothing added per chunk


async def test_a_socket_that_refuses_the_option_is_left_alone() -> None:
    class Refusing(RecordingSocket):
        def setsockopt(self, level: int, option: int, value: int) -> None:
            super().setsockopt(level, option, value)
            raise OSError(95, "Operation not supported")

    sock = Refusing()
    stream = backend_http._QuickAckStream(InnerStream(sock, []))  # type: ignore[arg-type]
    await stream.write(b"a")
    await stream.write(b"b")
    assert len(sock.calls) == 1  # tried once, then never again


async def test_backend_clients_get_quick_ack_connections(make_backend: MakeBackend) -> None:
    async with FakeBackend("vllm", ["m1"], output_tokens=5) as fake:
        backend = make_backend(fake)
        pool = backend._client._transport._pool  # type: ignore[attr-defined]
        assert isinstance(pool._network_backend, backend_http._QuickAckBackend)
        sink = Sink()
        job = JobRequest("0b7e8a52-5f7c-4cf4-9d1e-1f1b5d0f0a11", "m1", chat_request(), "openai")
        usage = await backend.execute(job, sink)  # type: ignore[attr-defined]
        assert b"[DONE]" in b"".join(sink.chunks) and usage.output_tokens == 5


class _NagleKeepAlive(BaseHTTPRequestHandler):
    """The stdlib's server with keep-alive: headers and each event are separate writes."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[set[int]] = set()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).connections.add(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (b"data: 1\n\n", b"data: [DONE]\n\n"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def nagle_server() -> Iterator[str]:
    _NagleKeepAlive.connections = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NagleKeepAlive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_kept_alive_connection_streams_through_the_wrapper(nagle_server: str) -> None:
    async with httpx.AsyncClient(base_url=nagle_server) as client:
        assert backend_http.quick_ack(client)
        for _ in range(3):
            async with client.stream("POST", "/", content=b"{}") as resp:
                body = b"".join([c async for c in resp.aiter_bytes()])
            assert body == b"data: 1\n\ndata: [DONE]\n\n"
    assert len(_NagleKeepAlive.connections) == 1  # one kept-alive connection served all three


def test_a_client_with_its_own_transport_is_left_alone() -> None:
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    assert not backend_http.quick_ack(client)
