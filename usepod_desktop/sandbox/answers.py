"""The answer text inside a job's streamed response bytes (sandbox CLI, GUI test job).

A job's ``job_chunk`` payloads are the backend's raw response: an SSE stream of OpenAI
chat-completion chunks (``data: {"choices":[{"delta":{"content":...}}]}``, ending with
``data: [DONE]``) or of Anthropic Messages events (``content_block_delta`` with a
``text_delta``). :class:`AnswerDecoder` turns them into text incrementally (lines and
UTF-8 sequences may be split across chunks); :func:`extract_text` does it for a whole
response. A body that is not SSE at all (a plain JSON completion or error) is read at
:meth:`AnswerDecoder.close`. Nothing here raises on bad input: what cannot be read is
skipped.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from usepod_desktop.core.protocol import JobFormat

__all__ = ["AnswerDecoder", "extract_text"]


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
