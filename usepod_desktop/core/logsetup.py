"""Logging: stderr plus a rotating file, both behind a filter that redacts secrets.

One log file per kind of process (:data:`LOG_FILE_NAMES`): the tray app, `run` in a terminal and
`run` as the user service each rotate their own file. A rotating handler shared by two
processes breaks on Windows (the rename fails while the other one holds the file open, and that
process then loses every later record) and interleaves badly elsewhere.

The filter removes every value registered with :func:`register_secret` (API keys the agent
loaded, host tokens), anything shaped like an API key, a bearer token or an identity secret,
and the `user:password@` of URLs. It also keeps a record from forging others or wiping the
file: control characters (ESC, CR, U+2028, ...) are escaped, a line break inside a message
starts an indented continuation line (never a line that looks like a record), and a message
is cut at :data:`MAX_MESSAGE_CHARS`. Remote text should still go through
:func:`usepod_desktop.core.text.safe_remote_text` (500 characters) where it is logged.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
import threading
from pathlib import Path

from usepod_desktop.core import paths
from usepod_desktop.core.text import escape_controls

LOG_FILE_NAME = "usepod-desktop.log"  #: the tray app's log (the "View log" window reads it)
#: Process kind -> its log file. `service` is `run` started by the user service, which sets
#: :data:`PROCESS_KIND_ENV` in its unit / plist.
LOG_FILE_NAMES = {
    "app": LOG_FILE_NAME,
    "run": "usepod-desktop-run.log",
    "service": "usepod-desktop-service.log",
}
PROCESS_KIND_ENV = "USEPOD_PROCESS_KIND"
FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REDACTED = "[REDACTED]"

_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"),  # OpenAI/OpenRouter style keys (sk-or-v1-...)
    re.compile(
        r"(?i)((?:secret|api[_-]?key|host_token|token|password)[\"']?\s*[:=]\s*[\"']?)"
        r"[A-Za-z0-9._~+/=-]{8,}"
    ),
    # URL credentials: http://user:pass@host -> http://[REDACTED]@host
    re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s?#]+(?=@)"),
]
#: Longest message written (then cut, saying how long it was): no record can wipe the log.
MAX_MESSAGE_CHARS = 8000
#: Starts each continuation line of a multi-line message.
CONTINUATION = "\n    | "

_known: set[str] = set()
_known_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Make the filter redact this exact value wherever it appears (keys shorter than 6 chars
    are ignored: redacting them would mangle ordinary words)."""
    if value and len(value) >= 6:
        with _known_lock:
            _known.add(value)


def redact(text: str) -> str:
    """`text` with key-shaped tokens and every registered secret replaced by [REDACTED].
    The patterns run first: a registered value that is only part of a longer key-shaped token
    must not leave the rest of that token behind."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    with _known_lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def neutralise(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` safe to write as (the message of) one log record: cut to `limit` characters,
    control characters escaped, each line break turned into an indented continuation."""
    total = len(text)
    if total > limit:
        text = text[:limit]
    lines = text.splitlines() or [""]
    out = CONTINUATION.join(escape_controls(line) for line in lines)
    if total > limit:
        out += f" ... [cut: {total} chars]"
    return out


class RedactingFilter(logging.Filter):
    """Renders the record's message once, redacted and neutralised (:func:`neutralise`), so
    handlers never see the raw args."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = neutralise(redact(message))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = neutralise(redact(record.exc_text), 4 * MAX_MESSAGE_CHARS)
        record.msg, record.args = cleaned, None
        return True


def log_file_name(kind: str = "app") -> str:
    """The log file of a process kind (`app`, `run`, `service`); unknown kinds get `run`'s."""
    return LOG_FILE_NAMES.get(kind, LOG_FILE_NAMES["run"])


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Rotated-in log files are created 0600 too (the umask would make them 0644)."""

    def _open(self):  # type: ignore[no-untyped-def]
        paths.create_private_file(Path(self.baseFilename))
        return super()._open()


def setup_logging(
    level: str | int = "info",
    *,
    log_file: bool = True,
    directory: Path | None = None,
    kind: str = "app",
    stderr: bool = True,
) -> Path | None:
    """Configure the root logger once. Returns the log file path (None without a file).
    `kind` picks the file (:func:`log_file_name`): each process kind rotates its own.
    `stderr=False` writes the file only (for a report already printed on stderr)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_usepod", False):
            root.removeHandler(handler)
            handler.close()
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        numeric = logging.INFO
    root.setLevel(numeric)
    redactor = RedactingFilter()

    if stderr and sys.stderr is not None:  # None under pythonw / a windowed build
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(FORMAT))
        console.addFilter(redactor)
        console._usepod = True  # type: ignore[attr-defined]
        root.addHandler(console)

    path: Path | None = None
    if log_file:
        directory = directory or paths.log_dir()
        try:
            path = directory / log_file_name(kind)
            paths.create_private_file(path)  # 0600 in a 0700 directory (POSIX)
            rotating = _PrivateRotatingFileHandler(
                path, maxBytes=5 * 1024 * 1024, backupCount=5, encoding="utf-8"
            )
        except OSError as exc:
            logging.getLogger(__name__).warning("cannot write logs to %s: %s", directory, exc)
            path = None
        else:
            rotating.setFormatter(logging.Formatter(FORMAT))
            rotating.addFilter(redactor)
            rotating._usepod = True  # type: ignore[attr-defined]
            root.addHandler(rotating)
    # Quiet chatty libraries unless debugging.
    for name in ("websockets", "httpx", "httpcore", "aiohttp.access", "asyncio"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    # qasync logs every executor call with its arguments at DEBUG: an API key handed to the
    # keyring in a thread would land in the log. Never below INFO.
    logging.getLogger("qasync").setLevel(max(numeric, logging.INFO))
    return path
