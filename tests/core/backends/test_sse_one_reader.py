"""One SSE reader: core/backends/sse.py serves the hot path, the GUI test job and the sandbox."""

from __future__ import annotations

import os
import subprocess
import sys

from usepod_desktop.core.backends import openai_compat, sse
from usepod_desktop.sandbox import answers


def test_sandbox_and_backends_use_the_core_reader() -> None:
    assert answers.AnswerDecoder is sse.AnswerDecoder
    assert answers.extract_text is sse.extract_text
    assert openai_compat.SseUsageScanner is sse.SseUsageScanner
    assert openai_compat.json_count is sse.json_count


def test_gui_test_job_has_no_copy_of_the_decoder() -> None:
    code = (
        "import sys\n"
        "from usepod_desktop.gui import test_job\n"
        "from usepod_desktop.core.backends import sse\n"
        "assert test_job.AnswerDecoder is sse.AnswerDecoder\n"
        "assert 'usepod_desktop.sandbox.answers' not in sys.modules, 'GUI imports the sandbox'\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
    )
    assert run.returncode == 0, run.stderr


def test_one_decoder_reads_both_formats_split_anywhere() -> None:
    body = (
        b'data: {"choices":[{"delta":{"content":"Hel"}}]}\r\n\r\n'
        b": keep-alive\n\n"
        b'data: {"choices":[{"delta":{"content":"lo \xc3\xa9"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
    )
    for cut in range(len(body)):
        decoder = sse.AnswerDecoder()
        scanner = sse.SseUsageScanner()
        text = decoder.feed(body[:cut]) + decoder.feed(body[cut:]) + decoder.close()
        scanner.feed(body[:cut])
        scanner.feed(body[cut:])
        scanner.finish()
        assert text == "Hello é"
        assert decoder.finish_reason == "stop"
        assert (scanner.input_tokens, scanner.output_tokens) == (3, 2)
