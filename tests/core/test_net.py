"""core/net.py: library failures and error bodies become one-line text in one place."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from usepod_desktop.core import pairing
from usepod_desktop.core.backends.http import backend_error_of
from usepod_desktop.core.net import (
    NetFailure,
    error_detail,
    error_message_of,
    failure_of,
    snippet,
)
from usepod_desktop.core.pairing.wire import TransientHTTPError
from usepod_desktop.core.protocol import ErrorCode

REQ = httpx.Request("GET", "http://127.0.0.1:9/v1/models")


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (httpx.ConnectTimeout("t", request=REQ), NetFailure.CONNECT_TIMEOUT),
        (httpx.ReadTimeout("t", request=REQ), NetFailure.TIMEOUT),
        (httpx.PoolTimeout("t", request=REQ), NetFailure.TIMEOUT),
        (TimeoutError(), NetFailure.TIMEOUT),
        (httpx.ConnectError("refused", request=REQ), NetFailure.CONNECT),
        (httpx.RemoteProtocolError("closed", request=REQ), NetFailure.DISCONNECTED),
        (httpx.ReadError("reset", request=REQ), NetFailure.DISCONNECTED),
        (httpx.TooManyRedirects("x", request=REQ), NetFailure.OTHER),
        (httpx.DecodingError("x", request=REQ), NetFailure.OTHER),
    ],
)
def test_failure_of_classifies_httpx_and_asyncio_errors(
    exc: BaseException, failure: NetFailure
) -> None:
    assert failure_of(exc) is failure


def test_job_and_probe_mappings_keep_their_codes_and_texts() -> None:
    refused = httpx.ConnectError("x", request=REQ)
    refused.__cause__ = ConnectionRefusedError(111, "Connection refused")
    for probe in (None, "GET http://127.0.0.1:9/v1/models"):
        err = backend_error_of(refused, "vllm", probe=probe)
        assert (err.code, err.message) == (
            ErrorCode.BACKEND_UNREACHABLE,
            "vllm: connection refused",
        )
    connect_timeout = httpx.ConnectTimeout("t", request=REQ)
    job = backend_error_of(connect_timeout, "vllm")
    assert job.code is ErrorCode.BACKEND_UNREACHABLE
    assert job.message == "vllm: connect timed out after 10 s"
    probe = backend_error_of(connect_timeout, "vllm", probe="GET u", probe_timeout=5)
    assert (probe.code, probe.message) == (
        ErrorCode.BACKEND_TIMEOUT,
        "vllm: GET u timed out after 5 s",
    )
    read_timeout = backend_error_of(httpx.ReadTimeout("t", request=REQ), "ollama")
    assert (read_timeout.code, read_timeout.message) == (
        ErrorCode.BACKEND_TIMEOUT,
        "ollama: timed out (ReadTimeout)",
    )
    closed = httpx.RemoteProtocolError("closed", request=REQ)
    before = backend_error_of(closed, "vllm", answered=False)
    after = backend_error_of(closed, "vllm", answered=True, relayed=42)
    assert before.code is ErrorCode.BACKEND_UNREACHABLE
    assert "disconnected before answering" in before.message
    assert after.code is ErrorCode.INTERNAL
    assert "dropped mid-stream after 42 bytes" in after.message
    probe_closed = backend_error_of(closed, "vllm", probe="GET u")
    assert (probe_closed.code, probe_closed.message) == (
        ErrorCode.INTERNAL,
        "vllm: GET u failed: RemoteProtocolError",
    )
    other = backend_error_of(httpx.TooManyRedirects("loop", request=REQ), "vllm")
    assert (other.code, other.message) == (
        ErrorCode.INTERNAL,
        "vllm: request failed (TooManyRedirects: loop)",
    )


def test_error_bodies_become_one_bounded_line() -> None:
    assert error_message_of(b'{"error":{"message":"model\\nnot found"}}') == "model not found"
    assert error_detail(b'{"error":"pair code unknown"}') == ": pair code unknown"
    assert error_detail(b'{"detail":"slow down"}') == ": slow down"
    assert error_detail(b"   ") == ""
    assert error_detail(b"<html>" + b"x" * 5000) == ": " + error_message_of(
        b"<html>" + b"x" * 5000, 120
    )
    assert len(error_detail(b"y" * 10_000)) <= 122
    assert snippet(b"not \x1b[31mjson") == "not \\x1b[31mjson"
    assert len(snippet(b"z" * 100_000)) <= 80
    assert snippet(b"") == ""


async def test_pairing_reports_a_refused_server_through_the_shared_text() -> None:
    # A port nobody listens on (bound, never listening), on loopback only.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        flow = pairing.PairingFlow(f"http://127.0.0.1:{port}", request_timeout=2.0)
        async with flow._client() as client:
            with pytest.raises(TransientHTTPError) as info:
                await asyncio.wait_for(flow._post(client, "/x", {}), 10)
        assert str(info.value) == "connection refused"
    finally:
        sock.close()
