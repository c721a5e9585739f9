"""The support bundle: one zip an operator can attach to a support request.

Members: `doctor.txt` and `doctor.json` (the checks), `versions.txt` (app, protocol, Python,
OS), `discover.json` (the capabilities frame the agent would send), `agent.toml` (secrets and
URL credentials removed), `log.txt` (the last lines of the log, redacted), `ledger.json`
(counts and sums per period: never prompts, answers or job ids).

Secrets never get in: every member is built from redacted parts, and then every member's text
is scrubbed once more of every secret value this computer knows (the BYOK keys in the keyring
or the environment, the host token, the identity's secret key, the enrollment code, passwords
in URLs) and of anything secret-shaped (:func:`usepod_desktop.core.logsetup.redact`).
"""

from __future__ import annotations

import json
import platform
import re
import sys
import zipfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import tomlkit
import tomlkit.exceptions

from usepod_desktop import PROTOCOL_VERSION, __version__
from usepod_desktop.core import paths
from usepod_desktop.core.logsetup import LOG_FILE_NAME, REDACTED, redact

if TYPE_CHECKING:
    from usepod_desktop.core.config import Config
    from usepod_desktop.core.doctor.checks import Report

__all__ = ["LOG_LINES", "known_secrets", "redact_toml", "scrub", "write_bundle"]

#: How many of the newest log lines go into the bundle.
LOG_LINES = 500
_MAX_LOG_READ = 4 * 1024 * 1024
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"']+@")
_SECRET_KEY = re.compile(r"(?i)(secret|token|password|passwd|enrollment_code|api_key$|apikey)")


def scrub_url(url: str) -> str:
    """A URL without `user:pass@` and without its query string (tokens hide there)."""
    text = _URL_CREDENTIALS.sub(lambda m: m.group(1), url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return REDACTED
    if parts.query:
        text = text.split("?", 1)[0] + "?" + REDACTED
    return text


def redact_toml(text: str) -> str:
    """agent.toml with every secret-looking key's value replaced and URL credentials removed.
    A file that does not parse is redacted line by line instead."""
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.TOMLKitError:
        out = []
        for line in text.splitlines():
            key = line.split("=", 1)[0].strip()
            if "=" in line and _SECRET_KEY.search(key) and key != "api_key_env":
                out.append(f'{key} = "{REDACTED}"')
            else:
                out.append(_URL_CREDENTIALS.sub(lambda m: m.group(1), line))
        return "\n".join(out) + "\n"

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in list(node.keys()):
                value = node[key]
                if isinstance(value, str) and _SECRET_KEY.search(str(key)):
                    if key != "api_key_env":
                        node[key] = REDACTED
                elif isinstance(value, str) and "://" in value:
                    node[key] = scrub_url(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str) and "://" in value:
                    node[i] = scrub_url(value)
                else:
                    walk(value)

    walk(doc)
    return _URL_CREDENTIALS.sub(lambda m: m.group(1), tomlkit.dumps(doc))


def known_secrets(config: Config | None) -> set[str]:
    """Every secret value this computer knows about (to scrub exact occurrences)."""
    import os

    from usepod_desktop.core.pairing import HOST_TOKEN_KEY
    from usepod_desktop.core.secrets import SecretStore

    found: set[str] = set()
    store = SecretStore()
    names = {HOST_TOKEN_KEY, "OPENROUTER_API_KEY", "VENICE_API_KEY"}
    key_path = paths.default_identity_path()
    if config is not None:
        names |= {b.api_key_env for b in config.backends if b.api_key_env}
        if config.coordinator.enrollment_code:
            found.add(config.coordinator.enrollment_code)
        key_path = config.key_path
        urls = [config.coordinator.url] + [b.url for b in config.backends if b.url]
        for url in urls:
            try:
                parts = urlsplit(url)
            except ValueError:
                continue
            for part in (parts.password, parts.username):
                if part:
                    found.add(part)
    for name in names:
        try:
            value = store.get(name).value
        except Exception:
            value = None
        if value:
            found.add(value)
        env = os.environ.get(name)
        if env:
            found.add(env)
    try:
        for line in key_path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "secret" and value.strip():
                found.add(value.strip())
    except (OSError, UnicodeDecodeError):
        pass
    return {s for s in found if len(s) >= 4}


def scrub(text: str, secrets: Iterable[str]) -> str:
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = _URL_CREDENTIALS.sub(lambda m: m.group(1), text)
    return redact(text)


def _last_log_lines(n: int = LOG_LINES) -> str:
    path = paths.log_dir() / LOG_FILE_NAME
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _MAX_LOG_READ))
            data = f.read()
    except OSError as exc:
        return f"(no log: {type(exc).__name__})\n"
    lines = data.decode("utf-8", errors="replace").splitlines()[-n:]
    return "\n".join(redact(line) for line in lines) + "\n"


def _ledger_summary(path: Path | None) -> dict[str, Any]:
    from usepod_desktop.core.ledger import Ledger

    try:
        ledger = Ledger(path, create=False)
        try:
            periods = ledger.periods()
            return {
                "rows": ledger.count(),
                "periods": {name: totals.to_dict() for name, totals in periods.items()},
                "note": "estimates: counts and sums only",
            }
        finally:
            ledger.close()
    except Exception as exc:
        return {"error": f"cannot read the ledger: {type(exc).__name__}"}


def _config_text(config_path: Path | None) -> str:
    if config_path is None:
        return "# no agent.toml found\n"
    try:
        return redact_toml(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return f"# cannot read {config_path}: {type(exc).__name__}\n"


def write_bundle(
    target: str | Path,
    report: Report,
    *,
    config: Config | None,
    config_path: Path | None,
    capabilities: str | None,
    ledger_path: Path | None = None,
) -> Path:
    """Write the zip (atomically: a temp file renamed over `target`). Raises OSError."""
    target = Path(target)
    secrets = known_secrets(config)
    versions = "\n".join(
        [
            f"usepod-desktop {__version__}",
            f"protocol {PROTOCOL_VERSION}",
            f"python {sys.version.split()[0]} ({sys.executable if not _frozen() else 'frozen'})",
            f"os {platform.platform()}",
            f"machine {platform.machine()}",
            f"created {datetime.now(UTC).isoformat(timespec='seconds')}",
        ]
    )
    members = {
        "doctor.txt": report.render() + "\n",
        "doctor.json": json.dumps(report.to_dict(), indent=2) + "\n",
        "versions.txt": versions + "\n",
        "discover.json": (capabilities or '{"note": "no discovery ran"}') + "\n",
        "agent.toml": _config_text(config_path),
        "log.txt": _last_log_lines(),
        "ledger.json": json.dumps(_ledger_summary(ledger_path), indent=2, default=str) + "\n",
    }
    tmp = target.with_name(target.name + ".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, text in members.items():
                zf.writestr(f"usepod-support/{name}", scrub(text, secrets))
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _frozen() -> bool:
    return bool(getattr(sys, "frozen", False))
