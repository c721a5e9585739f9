"""Talking to untrusted HTTP peers: one place that turns library failures and error bodies
into one-line text, shared by the backend adapters and pairing.

- :func:`one_line`: any text made fit for one log line / one error message (whitespace
  collapsed, controls escaped, secret-shaped parts redacted, length bounded).
- :func:`error_text`, :func:`error_message_of`, :func:`error_detail`, :func:`snippet`: the
  message out of an error body (``{"error": {"message": ...}}``, ``{"error": "..."}``,
  ``detail``, ``message``, else the text itself).
- :func:`failure_of`: which kind of transport failure an httpx / asyncio exception is
  (:class:`NetFailure`), so each domain maps it to its own error once:
  ``backends.http.backend_error_of`` to a ``BackendError`` code, pairing to a retry.
- :func:`connect_failure_text`: "connection refused", "cannot resolve host name", ...
- :func:`read_limited` / :func:`read_capped`: a streamed body read in chunks and bounded in
  size (:class:`BodyTooLarge` past the limit, or the rest left unread), so an endless or huge
  answer never costs more than the limit.
"""

from __future__ import annotations

import errno
import json
import re
import socket
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import httpx

from usepod_desktop.core.logsetup import redact
from usepod_desktop.core.text import escape_controls

__all__ = [
    "MAX_MESSAGE_CHARS",
    "NET_ERRORS",
    "BodyTooLarge",
    "NetFailure",
    "connect_failure_text",
    "error_detail",
    "error_message_of",
    "error_text",
    "failure_of",
    "one_line",
    "read_capped",
    "read_limited",
    "snippet",
]

#: Longest one-line message (the protocol caps `job_error.message` at 4096 anyway).
MAX_MESSAGE_CHARS = 300

#: What a request to a peer can raise besides the answer itself: catch these, then ask
#: :func:`failure_of` what happened.
NET_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, httpx.HTTPError)


_WS = re.compile(r"\s+")


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Collapse whitespace, escape control characters (terminal escapes, bidi controls),
    redact anything secret-shaped and cut to `limit` characters."""
    text = redact(escape_controls(_WS.sub(" ", text).strip()))
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def error_text(error: Any) -> str:
    """The message of an `error` value: `{"message": ...}`, a plain string, or its JSON."""
    if isinstance(error, dict):
        for key in ("message", "msg", "detail", "type", "code"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return f"error code {value}"
        return json.dumps(error)[:200]
    if isinstance(error, str):
        return error
    return json.dumps(error)[:200]


def error_message_of(body: bytes | str, limit: int = 200) -> str:
    """A short, one-line message from an error body: the JSON `error.message`, `error`
    string, `detail` or `message` when present, else the text itself."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message: str | None = None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        if obj.get("error"):
            message = error_text(obj["error"])
        else:
            for key in ("detail", "message", "msg"):
                value = obj.get(key)
                if isinstance(value, str) and value:
                    message = value
                    break
    if message is None:
        message = text
    return one_line(message, limit) or "(empty body)"


def error_detail(content: bytes, limit: int = 120) -> str:
    """``: <message>`` out of an error body (see :func:`error_message_of`), or "" if empty."""
    if not content.strip():
        return ""
    return f": {error_message_of(content, limit)}"


def snippet(content: bytes, limit: int = 80) -> str:
    """The start of a body that is not what was asked for, as one line ("" if empty)."""
    return one_line(content[: limit * 64].decode("utf-8", "replace"), limit)


class NetFailure(StrEnum):
    """What kind of failure a request met, independent of the library that raised it."""

    #: The connection did not open in time: the peer is unreachable, not slow.
    CONNECT_TIMEOUT = "connect_timeout"
    #: Connected, then no (complete) answer in time.
    TIMEOUT = "timeout"
    #: Refused, unresolvable or unroutable.
    CONNECT = "connect"
    #: The peer closed or broke the connection (before or during the answer).
    DISCONNECTED = "disconnected"
    #: Anything else httpx raises (bad URL, too many redirects, decoding, ...).
    OTHER = "other"


def failure_of(exc: BaseException) -> NetFailure:
    """The :class:`NetFailure` of one of :data:`NET_ERRORS`."""
    if isinstance(exc, httpx.ConnectTimeout):
        return NetFailure.CONNECT_TIMEOUT
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return NetFailure.TIMEOUT
    if isinstance(exc, httpx.ConnectError):
        return NetFailure.CONNECT
    if isinstance(exc, httpx.RemoteProtocolError | httpx.NetworkError):
        return NetFailure.DISCONNECTED
    return NetFailure.OTHER


def _walk(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes/contexts and exception-group members (bounded)."""
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 32:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (current.__cause__, current.__context__):
            if nxt is not None:
                todo.append(nxt)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)


def connect_failure_text(exc: BaseException) -> str:
    """One line for a failed connect: "connection refused", "cannot resolve host", ..."""
    for item in _walk(exc):
        if isinstance(item, ConnectionRefusedError) or (
            isinstance(item, OSError) and item.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(item, socket.gaierror):
            return "cannot resolve host name"
        if isinstance(item, OSError) and item.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "host unreachable"
    return f"cannot connect ({one_line(str(exc) or type(exc).__name__, 120)})"


# ------------------------------------------------------------------------------ bounded reads


class BodyTooLarge(Exception):
    """A response body went past the size it may have; reading stopped at the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes; stopped reading it")
        self.limit = limit


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed response, read chunk by chunk; :class:`BodyTooLarge` as soon as
    it goes past `limit` bytes, so an endless or huge body never costs more than `limit`."""
    buf = bytearray()
    async for chunk in response.aiter_bytes():
        if len(buf) + len(chunk) > limit:
            raise BodyTooLarge(limit)
        buf += chunk
    return bytes(buf)


async def read_capped(response: httpx.Response, cap: int) -> bytes:
    """Up to `cap` bytes of a streamed response body; the rest is not read."""
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= cap:
            break
    return b"".join(parts)[:cap]
