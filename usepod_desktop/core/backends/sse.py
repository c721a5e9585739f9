"""Server-sent events out of a backend's response: token usage on the hot path, answer text
for people.

A job's response is the backend's raw SSE stream: OpenAI chat-completion chunks
(``data: {"choices":[{"delta":{"content":...}}]}``, ending with ``data: [DONE]``) or Anthropic
Messages events (``message_start`` / ``content_block_delta`` / ``message_delta``). Two readers
share the line rules (``data:`` lines only, ``:`` comments and other fields skipped, CRLF
accepted, lines and UTF-8 sequences split across chunks):

- :class:`SseUsageScanner` reads token usage and error events on the side of every relayed
  job; it costs a couple of substring searches per chunk and decodes JSON only for the few
  lines that carry ``"usage"`` or ``"error"``.
- :class:`AnswerDecoder` turns the stream into the answer text incrementally (the GUI's
  "Send test job", the sandbox CLI); :func:`extract_text` does it for a whole response. A
  body that is not SSE at all (a plain JSON completion or error) is read at
  :meth:`AnswerDecoder.close`. Nothing here raises on bad input: what cannot be read is
  skipped.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
from decimal import Decimal
from typing import Any

from usepod_desktop.core.backends.base import Usage
from usepod_desktop.core.net import error_text
from usepod_desktop.core.protocol import JobFormat

__all__ = [
    "MAX_TOKEN_COUNT",
    "AnswerDecoder",
    "SseUsageScanner",
    "error_text",
    "extract_text",
    "json_count",
]

log = logging.getLogger(__name__)


#: Largest token count taken from a backend: a larger one (a C++ server's wrapped -1 is
#: 2**64-1) is clamped to it, and the first such value is logged.
MAX_TOKEN_COUNT = 2**31 - 1
_clamp_logged = False


def json_count(value: Any) -> int | None:
    """A token count from JSON: a non-negative integer (an integral float is accepted),
    clamped to MAX_TOKEN_COUNT."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        count = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None  # NaN, infinite or fractional
        count = int(value)
    elif isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            return None
        # compared before int(): int(Decimal("1e999999999")) would build a billion digits
        count = int(value) if value <= MAX_TOKEN_COUNT else MAX_TOKEN_COUNT + 1
    else:
        return None
    if count < 0:
        return None
    return _clamped(count)


def _clamped(count: int) -> int:
    global _clamp_logged
    if count <= MAX_TOKEN_COUNT:
        return count
    if not _clamp_logged:
        _clamp_logged = True
        log.warning(
            "a backend reported a token count of about 2**%d; counts above %d are clamped "
            "(logged once)",
            count.bit_length(),
            MAX_TOKEN_COUNT,
        )
    return MAX_TOKEN_COUNT


_INPUT_KEYS = ("input_tokens", "prompt_tokens", "input")
_OUTPUT_KEYS = ("output_tokens", "completion_tokens", "output")
_ANTHROPIC_CACHE_KEYS = ("cache_read_input_tokens", "cache_creation_input_tokens")


def _first_count(usage: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = json_count(usage.get(key))
        if value is not None:
            return value
    return None


class SseUsageScanner:
    """Reads token usage and error events from an SSE byte stream, chunk by chunk, on the side.

    Cheap per chunk: the partial last line is kept in a buffer, and a chunk whose complete
    lines contain neither `"usage"` nor `"error"` costs two substring searches. Only complete
    `data:` lines carrying one of those markers are JSON-decoded; `:` comment lines are skipped.
    Input tokens come from the first present of input_tokens, prompt_tokens, input; output from
    output_tokens, completion_tokens, output; each count keeps the last value seen. Anthropic
    streams put the input count in `message_start` (`message.usage`) and the output count in
    `message_delta` (`usage`), which the same rule covers.

    `feed()` returns True once an error event (`data: {"error": ...}`, or Anthropic's
    `{"type": "error", ...}`) was seen; `error` then holds its message.
    """

    __slots__ = ("_buf", "_skipping", "error", "input_tokens", "output_tokens")

    #: A partial line longer than this is not buffered (no usage line is that long).
    MAX_LINE = 1024 * 1024

    def __init__(self) -> None:
        self._buf = b""
        self._skipping = False  # inside an over-long line: ignore up to the next newline
        self.input_tokens = 0
        self.output_tokens = 0
        self.error: str | None = None

    @property
    def usage(self) -> Usage:
        return Usage(self.input_tokens, self.output_tokens)

    def feed(self, chunk: bytes) -> bool:
        data = self._buf + chunk if self._buf else chunk
        end = data.rfind(b"\n")
        if end < 0:
            if self._skipping:
                return False
            if len(data) > self.MAX_LINE:
                self._buf = b""
                self._skipping = True
            else:
                self._buf = data
            return False
        self._buf = data[end + 1 :]
        if len(self._buf) > self.MAX_LINE:
            self._buf = b""
            skip_tail = True
        else:
            skip_tail = False
        start = 0
        if self._skipping:  # drop the rest of the over-long line
            start = data.find(b"\n") + 1
            self._skipping = False
        if data.find(b'"usage"', start, end) >= 0 or data.find(b'"error"', start, end) >= 0:
            self._lines(data[start:end])
        self._skipping = skip_tail
        return self.error is not None

    def finish(self) -> bool:
        """The stream ended: scan a last line that had no newline. Returns like feed()."""
        tail, self._buf = self._buf, b""
        if tail and not self._skipping and (b'"usage"' in tail or b'"error"' in tail):
            self._lines(tail)
        return self.error is not None

    def _lines(self, block: bytes) -> None:
        for line in block.split(b"\n"):
            if b'"usage"' not in line and b'"error"' not in line:
                continue
            if not line.startswith(b"data:"):
                continue  # ":" comments, "event:" lines, anything else
            payload = line[5:].strip()  # also drops the "\r" of CRLF line ends
            if payload.startswith(b"{"):
                self.take(payload)

    def take(self, payload: bytes) -> None:
        """Read usage / error from one decoded event (also used for a non-streamed answer)."""
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        if not isinstance(obj, dict):
            return
        error = obj.get("error")
        if error:
            self.error = error_text(error)
        usage = obj.get("usage")
        if obj.get("type") == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                usage = message.get("usage")
        if isinstance(usage, dict):
            value = _first_count(usage, _INPUT_KEYS)
            if value is not None:
                # Anthropic reports prompt tokens served from the prompt cache apart from
                # input_tokens (llama.cpp: input_tokens 1 + cache_read_input_tokens 31 on a
                # repeated prompt); all of them were read. OpenAI's prompt_tokens includes them.
                for cached in _ANTHROPIC_CACHE_KEYS:
                    value += json_count(usage.get(cached)) or 0
                self.input_tokens = _clamped(value)
            value = _first_count(usage, _OUTPUT_KEYS)
            if value is not None:
                self.output_tokens = value


# ------------------------------------------------------------------------------ answer text


class AnswerDecoder:
    """Feed response bytes as they arrive; get the new answer text back each time.

    After the stream, :attr:`error` holds the message of an error event or body (if
    any) and :attr:`finish_reason` the OpenAI ``finish_reason`` / Anthropic
    ``stop_reason``.
    """

    def __init__(self, format: JobFormat = "openai") -> None:
        self.format: JobFormat = format
        self.error: str | None = None
        self.finish_reason: str | None = None
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # an incomplete last line
        self._saw_data = False
        self._other: list[str] = []  # non-`data:` lines, for a body that is not SSE

    def feed(self, data: bytes) -> str:
        """The answer text completed by `data` (may be empty)."""
        text = self._pending + self._utf8.decode(data)
        lines = text.split("\n")
        self._pending = lines.pop()
        return "".join(self._line(line) for line in lines)

    def close(self) -> str:
        """Flush: the text of a last line without a newline, or of a non-SSE body."""
        text = self._pending + self._utf8.decode(b"", final=True)
        self._pending = ""
        out = self._line(text) if text else ""
        if not self._saw_data and self._other:
            out += self._plain_body("\n".join(self._other))
            self._other = []
        return out

    # ---- internals

    def _line(self, line: str) -> str:
        line = line.rstrip("\r")
        if not line.startswith("data:"):
            if not self._saw_data and line.strip() and len(self._other) < 10_000:
                self._other.append(line)
            return ""
        self._saw_data = True
        payload = line[5:]
        if payload.startswith(" "):
            payload = payload[1:]
        if not payload or payload == "[DONE]":
            return ""
        try:
            event = json.loads(payload)
        except ValueError:
            return ""
        if not isinstance(event, dict):
            return ""
        if self.format == "anthropic":
            return self._anthropic_event(event)
        return self._openai_chunk(event)

    def _openai_chunk(self, event: dict[str, Any]) -> str:
        if "error" in event and not event.get("choices"):
            self.error = _error_message(event["error"])
            return ""
        out = []
        choices = event.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                out.append(delta["content"])
            elif isinstance(choice.get("text"), str):  # legacy completions stream
                out.append(choice["text"])
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        return "".join(out)

    def _anthropic_event(self, event: dict[str, Any]) -> str:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                text = delta.get("text")
                return text if isinstance(text, str) else ""
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.finish_reason = delta["stop_reason"]
        elif kind == "error" or "error" in event:
            self.error = _error_message(event.get("error"))
        return ""

    def _plain_body(self, body: str) -> str:
        try:
            obj = json.loads(body)
        except ValueError:
            return ""
        if not isinstance(obj, dict):
            return ""
        if "error" in obj:
            self.error = _error_message(obj["error"])
        if self.format == "anthropic":
            blocks = obj.get("content")
            if isinstance(blocks, list):
                if isinstance(obj.get("stop_reason"), str):
                    self.finish_reason = obj["stop_reason"]
                return "".join(
                    b["text"]
                    for b in blocks
                    if isinstance(b, dict)
                    and b.get("type") == "text"
                    and isinstance(b.get("text"), str)
                )
            return ""
        out = []
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            message = choice.get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                out.append(message["content"])
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        return "".join(out)


def _error_message(error: object) -> str:
    if isinstance(error, dict):
        message = error.get("message")
        if isinstance(message, str):
            return message
        return json.dumps(error)[:500]
    return str(error)[:500]


def extract_text(sse_bytes: bytes, format: JobFormat = "openai") -> str:
    """The whole answer text of a complete response (OpenAI or Anthropic SSE)."""
    decoder = AnswerDecoder(format)
    return decoder.feed(sse_bytes) + decoder.close()
