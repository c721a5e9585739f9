"""The answer text inside a job's streamed response bytes: re-exported from
:mod:`usepod_desktop.core.backends.sse`, where the one SSE reader lives (the GUI's
"Send test job" uses it too, so it is product code, not sandbox code)."""

from __future__ import annotations

from usepod_desktop.core.backends.sse import AnswerDecoder, extract_text

__all__ = ["AnswerDecoder", "extract_text"]
