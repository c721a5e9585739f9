"""Issue 12 item 5: model lists and pairing answers are read with a byte limit.

Each hostile server here streams a body that never ends (it gives up after 96 MiB so the old
code, which read bodies whole, fails the memory bound instead of hanging). The agent must stop
reading at its limit, say so in one line, and stay far below the size sent.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from aiohttp import web

from tests.security.hostile import Endless, endless_body, http_server, peak_memory
from usepod_desktop.core.backends.base import BackendError
from usepod_desktop.core.backends.http import MAX_MODELS_BODY
from usepod_desktop.core.backends.vllm import VllmBackend
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.discovery import probe_local
from usepod_desktop.core.pairing import MAX_ANSWER_BYTES, PairingError, PairingFlow

MIB = 1024 * 1024
#: Reading stops at the limit; allow for one chunk, decoding buffers and the event loop.
SLACK = 8 * MIB

#: Measured figures, printed for RELIABILITY.md (`pytest -s`).
FIGURES: dict[str, str] = {}


def _figure(name: str, counter: Endless, peak: int) -> None:
    line = (
        f"{name}: server sent {counter.chunks_sent} chunks / {counter.bytes_sent / MIB:.1f} MiB "
        f"before the agent hung up; traced peak {peak / MIB:.1f} MiB"
    )
    FIGURES[name] = line
    print(line)


async def test_models_list_that_never_ends_is_cut_at_the_limit() -> None:
    counter = Endless()
    handler = functools.partial(endless_body, counter=counter)
    routes = {("GET", "/v1/models"): handler, ("GET", "/health"): handler}
    async with http_server(routes) as base:
        backend = VllmBackend(BackendConfig("vllm", base))
        backend.probe_timeout = 30.0  # the byte limit must stop it, not the clock
        try:
            _, error, peak = await peak_memory(backend.list_models())
        finally:
            await backend.aclose()
    assert isinstance(error, BackendError), error
    assert f"larger than {MAX_MODELS_BODY} bytes" in error.message
    assert "\n" not in error.message
    assert peak < MAX_MODELS_BODY + SLACK, peak
    assert counter.bytes_sent < counter.give_up_after
    _figure("vllm list_models", counter, peak)


async def test_health_on_an_endless_model_list_is_an_error_not_a_hang() -> None:
    counter = Endless()
    routes = {("GET", "/v1/models"): functools.partial(endless_body, counter=counter)}
    async with http_server(routes) as base:
        from usepod_desktop.core.backends.lmstudio import LmStudioBackend

        backend = LmStudioBackend(BackendConfig("lmstudio", base))
        backend.probe_timeout = 30.0
        try:
            health, error, peak = await peak_memory(backend.health())
        finally:
            await backend.aclose()
    assert error is None
    assert not health.ok and health.state == "error"
    assert "larger than" in health.status and "stopped reading" in health.status
    assert peak < MAX_MODELS_BODY + SLACK, peak
    _figure("lmstudio health", counter, peak)


async def test_local_probe_skips_an_endless_model_list() -> None:
    counter = Endless()
    routes = {("GET", "/v1/models"): functools.partial(endless_body, counter=counter)}
    async with http_server(routes) as base:
        port = int(base.rsplit(":", 1)[1])
        found, error, peak = await peak_memory(
            probe_local("127.0.0.1", {"vllm": port}, timeout=30.0)
        )
    assert error is None and found == []
    assert peak < MAX_MODELS_BODY + SLACK, peak
    assert counter.bytes_sent < counter.give_up_after
    _figure("probe_local", counter, peak)


@pytest.mark.parametrize("path", ["/v1/host/pair/issue", "/v1/host/pair/poll"])
async def test_pairing_answer_that_never_ends_is_cut_at_the_limit(
    path: str, tmp_path: Path
) -> None:
    counter = Endless()

    async def issue(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"pair_code": "ABCD-2345", "poll_token": "poll-token-123456", "expires_at": "x"}
        )

    routes = {
        ("POST", "/v1/host/pair/issue"): issue,
        ("POST", path): functools.partial(endless_body, counter=counter),
    }
    async with http_server(routes) as base:
        flow = PairingFlow(
            base,
            config_path=tmp_path / "agent.toml",
            identity_path=tmp_path / "identity.key",
            probe_ports={},
            poll_interval=0.01,
        )
        _, error, peak = await peak_memory(flow.run())
    assert isinstance(error, PairingError), error
    text = str(error)
    assert f"answer to POST {path} is too large" in text, text
    assert f"larger than {MAX_ANSWER_BYTES} bytes" in text and "\n" not in text
    assert peak < MAX_ANSWER_BYTES + SLACK, peak
    assert counter.bytes_sent < counter.give_up_after
    assert not (tmp_path / "agent.toml").exists() and not (tmp_path / "identity.key").exists()
    _figure(f"pairing {path}", counter, peak)
