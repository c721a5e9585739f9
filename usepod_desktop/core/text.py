"""Showing text that came from someone else: escaped, bounded, credentials removed.

Every party the agent talks to is untrusted (see SECURITY.md): the coordinator's
`auth_failed` reasons, a backend's error bodies, the pairing server's messages, model ids.
Before such text reaches a log line, a terminal, a CSV export or a GUI label it goes
through one of these helpers, so it can neither forge a log record (line breaks, including
the Unicode ones ``str.splitlines()`` splits on), rewrite a terminal (ESC sequences, carriage
returns), flip text direction (bidi controls), nor wipe the log by sheer size.

- :func:`safe_remote_text`: control and invisible formatting characters escaped as
  ``\\n`` / ``\\x1b`` / ``\\u2028``, cut to a bounded length.
- :func:`redact_url`: a URL with its ``user:password@`` part replaced.
- :func:`csv_cell`: a spreadsheet cell that is never executed as a formula.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "MAX_REMOTE_TEXT",
    "REDACTED_USERINFO",
    "csv_cell",
    "escape_controls",
    "redact_url",
    "safe_remote_text",
]

#: Characters of remote text shown in one log line / console line (before the ellipsis).
MAX_REMOTE_TEXT = 500
#: What replaces the `user:password` of a URL.
REDACTED_USERINFO = "***"

# C0 and C1 controls, DEL, the Unicode line/paragraph separators, zero-width and bidi
# formatting characters, the BOM and lone surrogates (an undecodable byte smuggled in).
_CONTROLS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every control / invisible formatting character escaped (no length bound)."""
    return _CONTROLS.sub(_escape, text)


def safe_remote_text(value: object, limit: int = MAX_REMOTE_TEXT) -> str:
    """One printable line of at most about `limit` characters from untrusted `value`.

    Bytes are decoded as UTF-8 (undecodable bytes replaced); anything else goes through
    ``str()``. Control characters are escaped, never dropped, so what was sent stays
    visible; text longer than `limit` is cut and says how long it was."""
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value[: limit * 4]).decode("utf-8", "replace")
        total = len(value)
        unit = "bytes"
    else:
        text = value if isinstance(value, str) else str(value)
        total = len(text)
        unit = "chars"
    cut = total > limit
    out = escape_controls(text[:limit])
    if len(out) > limit:
        out, cut = out[:limit], True
    if cut:
        out += f"... [{total} {unit}]"
    return out


_USERINFO_IN_TEXT = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#]+@")


def redact_url(url: str) -> str:
    """`url` with the `user:password@` part (if any) replaced by ``***@``.

    Works on strings that do not parse as URLs too (the userinfo is then removed by
    pattern), so it is safe to call on anything about to be shown or exported."""
    if "@" not in url:
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return _USERINFO_IN_TEXT.sub(rf"\1{REDACTED_USERINFO}@", url)
    if "@" in netloc:
        host = netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=f"{REDACTED_USERINFO}@{host}"))
    return _USERINFO_IN_TEXT.sub(rf"\1{REDACTED_USERINFO}@", url)


#: First characters that make a spreadsheet (Excel, LibreOffice, Sheets) evaluate a cell.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def csv_cell(value: str) -> str:
    """A text cell that spreadsheets show as text: one starting like a formula (``=``,
    ``+``, ``-``, ``@``, tab, CR, LF or their full-width forms) gets a leading ``'``."""
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value
