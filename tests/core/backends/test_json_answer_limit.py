"""A non-streamed JSON answer over the size limit (issue 12, item 13): it must end as a
`job_error`, never be cut and reported as `job_done`. The hostile backend, a raw HTTP server
on 127.0.0.1 written here, ignores `stream` and answers one huge `application/json` body."""

from __future__ import annotations

import asyncio
import json
import uuid

from tests.core.test_executor import Route
from usepod_desktop.core import protocol
from usepod_desktop.core.backends import build_backend
from usepod_desktop.core.backends.http import JSON_SLICE, MAX_JSON_ANSWER
from usepod_desktop.core.config import BackendConfig
from usepod_desktop.core.executor import Executor
from usepod_desktop.core.protocol import ErrorCode
from usepod_desktop.core.secrets import SecretStore


def answer_of_size(size: int) -> bytes:
    """A valid chat-completion JSON body of exactly `size` bytes."""
    head = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"'
    tail = b'"}}],"usage":{"prompt_tokens":5,"completion_tokens":9}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


class JsonAnswerServer:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n".encode()
            + self.body
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass  # the agent stopped reading at its limit
        writer.close()


async def run_one(body: bytes) -> tuple[list[str], protocol.OutboundFrame]:
    upstream = JsonAnswerServer(body)
    url = await upstream.start()
    backend = build_backend(BackendConfig("vllm", url=url), SecretStore(environ={}))
    executor = Executor()
    executor.set_routes([Route("m", backend)])  # type: ignore[list-item]
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    job = protocol.Job(str(uuid.uuid4()), "m", {"messages": []}, "openai", 60_000)
    try:
        task = executor.submit(job, send)
        assert task is not None
        await task
    finally:
        await backend.aclose()
        await upstream.stop()
    frames = [protocol.parse_outbound(t) for t in sent]
    terminal = [f for f in frames if isinstance(f, protocol.JobDone | protocol.JobError)]
    assert len(terminal) == 1 and frames[-1] is terminal[0]
    return sent, terminal[0]


async def test_json_answer_over_the_limit_ends_as_job_error_with_nothing_relayed() -> None:
    sent, terminal = await run_one(answer_of_size(MAX_JSON_ANSWER + 1))
    assert isinstance(terminal, protocol.JobError)
    assert terminal.error_code == ErrorCode.INTERNAL
    assert "larger than 16 MiB" in terminal.message and "not relayed" in terminal.message
    assert terminal.tokens_emitted == 0 and len(sent) == 1  # no chunk frame at all


async def test_json_answer_at_the_limit_is_relayed_whole_in_frames_below_the_frame_limit() -> None:
    body = answer_of_size(MAX_JSON_ANSWER)
    sent, terminal = await run_one(body)
    assert isinstance(terminal, protocol.JobDone)
    assert (terminal.input_tokens, terminal.output_tokens) == (5, 9)
    chunks = [protocol.parse_outbound(t) for t in sent[:-1]]
    assert b"".join(c.data for c in chunks) == body  # type: ignore[union-attr]
    assert len(chunks) == MAX_JSON_ANSWER // JSON_SLICE
    assert max(len(t.encode()) for t in sent) < protocol.MAX_FRAME_BYTES // 8
    assert json.loads(body)["usage"]["completion_tokens"] == 9
