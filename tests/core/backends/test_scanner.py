"""The on-the-side SSE usage scanner: correct whatever the chunking, and cheap per chunk."""

from __future__ import annotations

import json

import pytest

from usepod_desktop.core.backends import openai_compat
from usepod_desktop.core.backends.openai_compat import SseUsageScanner

OPENAI_STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"say \\"usage\\" please"}}]}\n\n'
    b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":17,"completion_tokens":5,'
    b'"total_tokens":22}}\n\n'
    b"data: [DONE]\n\n"
)

ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
    b'"usage":{"input_tokens":25,"output_tokens":1}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"hi"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":42}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def scan(chunks: list[bytes]) -> SseUsageScanner:
    scanner = SseUsageScanner()
    for chunk in chunks:
        scanner.feed(chunk)
    scanner.finish()
    return scanner


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@pytest.mark.parametrize("split", ["whole", "bytes", "pairs", "sevens"])
def test_openai_usage_whatever_the_chunking(split: str) -> None:
    chunks = {
        "whole": [OPENAI_STREAM],
        "bytes": byte_by_byte(OPENAI_STREAM),
        "pairs": [OPENAI_STREAM[i : i + 2] for i in range(0, len(OPENAI_STREAM), 2)],
        "sevens": [OPENAI_STREAM[i : i + 7] for i in range(0, len(OPENAI_STREAM), 7)],
    }[split]
    scanner = scan(chunks)
    assert (scanner.input_tokens, scanner.output_tokens) == (17, 5)
    assert scanner.error is None


def test_anthropic_usage_byte_by_byte() -> None:
    scanner = scan(byte_by_byte(ANTHROPIC_STREAM))
    assert (scanner.input_tokens, scanner.output_tokens) == (25, 42)


def test_anthropic_cached_prompt_tokens_count_as_input() -> None:
    # llama.cpp on a repeated prompt: 1 new input token, 31 read from the prompt cache
    cached = ANTHROPIC_STREAM.replace(
        b'"usage":{"input_tokens":25,"output_tokens":1}',
        b'"usage":{"input_tokens":1,"cache_read_input_tokens":31,'
        b'"cache_creation_input_tokens":2,"output_tokens":1}',
    )
    assert cached != ANTHROPIC_STREAM
    scanner = scan([cached])
    assert (scanner.input_tokens, scanner.output_tokens) == (34, 42)


def test_line_split_across_chunks_exactly_inside_the_usage_marker() -> None:
    line = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
    cut = line.index(b"usage") + 2
    scanner = scan([line[:cut], line[cut:]])
    assert (scanner.input_tokens, scanner.output_tokens) == (3, 4)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 1, "prompt_tokens": 2, "input": 3}, (1, None)),
        ({"prompt_tokens": 2, "input": 3}, (2, None)),
        ({"input": 3}, (3, None)),
        ({"output_tokens": 4, "completion_tokens": 5, "output": 6}, (None, 4)),
        ({"completion_tokens": 5, "output": 6}, (None, 5)),
        ({"output": 6}, (None, 6)),
        ({"input_tokens": None, "prompt_tokens": 8}, (8, None)),  # null is "not present"
    ],
)
def test_first_present_key_wins(usage: dict, expected: tuple) -> None:
    line = b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\n"
    scanner = scan([line])
    want_in, want_out = expected
    assert scanner.input_tokens == (want_in or 0)
    assert scanner.output_tokens == (want_out or 0)


def test_last_usage_wins() -> None:
    stream = (
        b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":30}}\n\n'
    )
    scanner = scan([stream])
    assert (scanner.input_tokens, scanner.output_tokens) == (9, 30)


def test_crlf_lines_and_comments() -> None:
    stream = (
        b": keep-alive\r\n\r\n"
        b': "usage" in a comment is ignored {"usage":{"prompt_tokens":99}}\r\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":6,"completion_tokens":7}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    scanner = SseUsageScanner()
    scanner.feed(stream)
    assert (scanner.input_tokens, scanner.output_tokens) == (6, 7)


def test_last_line_without_newline_is_read_at_the_end() -> None:
    scanner = SseUsageScanner()
    scanner.feed(b'data: {"choices":[],"usage":{"prompt_tokens":6,"completion_tokens":7}}')
    assert (scanner.input_tokens, scanner.output_tokens) == (0, 0)
    assert scanner.finish() is False
    assert (scanner.input_tokens, scanner.output_tokens) == (6, 7)


def test_only_lines_with_markers_are_json_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[bytes] = []
    real_loads = json.loads

    def counting_loads(payload: bytes, *a: object, **kw: object) -> object:
        decoded.append(payload)
        return real_loads(payload, *a, **kw)

    monkeypatch.setattr(openai_compat.json, "loads", counting_loads)
    content = b'data: {"choices":[{"delta":{"content":"tok"}}]}\n\n' * 500
    scanner = SseUsageScanner()
    for _ in range(10):
        scanner.feed(content)
    assert decoded == []
    scanner.feed(b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n')
    assert len(decoded) == 1
    assert (scanner.input_tokens, scanner.output_tokens) == (1, 2)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # llama.cpp: the error object, then the connection closes without [DONE]
        (
            b'data: {"error":{"code":500,"message":"slot released","type":"server_error"}}\n\n',
            "slot released",
        ),
        # OpenRouter: a chunk with a top-level error and finish_reason "error"
        (
            b'data: {"id":"gen-1","error":{"code":"server_error","message":"Provider '
            b'disconnected"},"choices":[{"index":0,"delta":{"content":""},'
            b'"finish_reason":"error"}]}\n\n',
            "Provider disconnected",
        ),
        (b'data: {"error":"Inference processing failed"}\n\n', "Inference processing failed"),
        (
            b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
            b'"message":"Overloaded"}}\n\n',
            "Overloaded",
        ),
    ],
)
def test_error_events_are_reported(line: bytes, message: str) -> None:
    scanner = SseUsageScanner()
    seen = [scanner.feed(b) for b in byte_by_byte(line)]
    assert seen[-1] is True
    assert not any(seen[:-2])  # nothing before the line was complete
    assert scanner.error == message


def test_error_key_that_is_null_or_nested_is_not_an_error() -> None:
    stream = (
        b'data: {"choices":[{"delta":{"content":"x"}}],"error":null}\n\n'
        b'data: {"choices":[{"logprobs":{"content":[{"token":"error"}]}}],"usage":null}\n\n'
    )
    scanner = scan([stream])
    assert scanner.error is None


def test_over_long_line_is_skipped_without_losing_later_usage() -> None:
    scanner = SseUsageScanner()
    big = b'data: {"choices":[{"delta":{"content":"' + b"x" * (SseUsageScanner.MAX_LINE + 10)
    for i in range(0, len(big), 65536):
        scanner.feed(big[i : i + 65536])
    assert len(scanner._buf) <= SseUsageScanner.MAX_LINE
    scanner.feed(b'"usage" junk"}}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":4,')
    scanner.feed(b'"completion_tokens":2}}\n\n')
    assert (scanner.input_tokens, scanner.output_tokens) == (4, 2)
    assert scanner.error is None
