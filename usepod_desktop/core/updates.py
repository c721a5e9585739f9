"""Is a newer usepod-desktop released? Checks a release feed; never installs anything.

The feed is the PyPI JSON API of the project (:data:`UPDATE_FEED_URL`; the environment variable
`USEPOD_UPDATE_FEED_URL` overrides it, for tests and mirrors). Only `info.version` (the newest
release) and, when present, `info.release_url` / `info.project_url` are read; the answer is
bounded to :data:`MAX_FEED_BYTES` and :data:`FEED_TIMEOUT_S`, and every field is validated:
a bad feed gives :class:`UpdateCheckError` with one line naming the field.

The result of the last successful check is cached in `<data dir>/update-check.json` so the tray
app's periodic check (at most daily, jittered: :func:`next_check_delay`) and `doctor` share it.

What to do about an update is printed, never done: `pip install --upgrade usepod-desktop` for a
pip install, the download page for a packaged build.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from packaging.version import InvalidVersion, Version

from usepod_desktop import __version__
from usepod_desktop.core import paths
from usepod_desktop.core.errors import UpdateCheckError

__all__ = [
    "UPDATE_FEED_URL",
    "UpdateCheckError",
    "UpdateInfo",
    "check_for_update",
    "feed_url",
    "load_cached",
    "next_check_delay",
]

#: The release feed: the PyPI JSON API of the usepod-desktop project.
UPDATE_FEED_URL = "https://pypi.org/pypi/usepod-desktop/json"
FEED_URL_ENV = "USEPOD_UPDATE_FEED_URL"
#: The page to download a packaged build from.
DOWNLOAD_PAGE = "https://pypi.org/project/usepod-desktop/"
#: A PyPI JSON answer with a long release history is a few hundred KiB.
MAX_FEED_BYTES = 4 * 1024 * 1024
FEED_TIMEOUT_S = 10.0
CACHE_FILE_NAME = "update-check.json"
#: The periodic check runs at most this often...
CHECK_INTERVAL_S = 24 * 3600.0
#: ...plus up to this much random delay, so a fleet does not ask at the same second.
CHECK_JITTER_S = 3 * 3600.0
_MAX_VERSION_LEN = 64
_URL_RE = re.compile(r"^https?://[^\s\"'<>]{1,300}$")


@dataclass(frozen=True, slots=True)
class UpdateInfo:
    current: str
    newest: str
    download_url: str
    checked_at: float  # epoch seconds

    @property
    def available(self) -> bool:
        try:
            return Version(self.newest) > Version(self.current)
        except InvalidVersion:
            return False

    def how_to_upgrade(self) -> str:
        """One line: the command to run (pip install) or the page to download from."""
        if getattr(sys, "frozen", False):
            return f"download the new build from {self.download_url}"
        return f"run: {sys.executable} -m pip install --upgrade usepod-desktop=={self.newest}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["available"] = self.available
        return data


def feed_url() -> str:
    return os.environ.get(FEED_URL_ENV) or UPDATE_FEED_URL


def cache_path() -> Path:
    return paths.data_dir() / CACHE_FILE_NAME


def parse_feed(body: bytes, *, current: str = __version__, now: float | None = None) -> UpdateInfo:
    """Validate a PyPI-JSON-shaped answer; raises UpdateCheckError naming the field."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise UpdateCheckError("the release feed did not answer JSON") from None
    info = data.get("info") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        raise UpdateCheckError("the release feed's answer has no `info` object")
    newest = info.get("version")
    if not isinstance(newest, str) or not newest or len(newest) > _MAX_VERSION_LEN:
        raise UpdateCheckError("the release feed's `info.version` is missing or not a string")
    try:
        Version(newest)
    except InvalidVersion:
        raise UpdateCheckError(
            f"the release feed's `info.version` is not a version: {newest[:40]!r}"
        ) from None
    url = DOWNLOAD_PAGE
    for key in ("release_url", "project_url"):
        value = info.get(key)
        if isinstance(value, str) and _URL_RE.match(value):
            url = value
            break
    return UpdateInfo(current, newest, url, time.time() if now is None else now)


def check_for_update(
    *, url: str | None = None, timeout: float = FEED_TIMEOUT_S, save: bool = True
) -> UpdateInfo:
    """Ask the feed (blocking; run it in a thread from async code). Raises UpdateCheckError
    with one line when the feed is unreachable or its answer is unusable."""
    target = url or feed_url()
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", target, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                raise UpdateCheckError(
                    f"the release feed answered HTTP {response.status_code} ({_host(target)})"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_FEED_BYTES:
                    raise UpdateCheckError(
                        f"the release feed's answer is larger than {MAX_FEED_BYTES} bytes"
                    )
                chunks.append(chunk)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise UpdateCheckError(
            f"cannot reach the release feed at {_host(target)} ({type(exc).__name__})"
        ) from None
    info = parse_feed(b"".join(chunks))
    if save:
        _save(info)
    return info


def load_cached() -> UpdateInfo | None:
    """The last successful check (for this version of the app), or None."""
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
        info = UpdateInfo(
            current=str(data["current"]),
            newest=str(data["newest"]),
            download_url=str(data["download_url"]),
            checked_at=float(data["checked_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.current != __version__ or not _URL_RE.match(info.download_url):
        return None
    try:
        Version(info.newest)
    except InvalidVersion:
        return None
    return info


def next_check_delay(
    last: UpdateInfo | None, *, now: float | None = None, rng: random.Random | None = None
) -> float:
    """Seconds until the next periodic check: a day (plus jitter) after the last one; a short
    jittered delay after start-up when there is none or it is overdue."""
    rng = rng or random.Random()
    now = time.time() if now is None else now
    if last is None or now - last.checked_at >= CHECK_INTERVAL_S:
        return 60.0 + rng.uniform(0, 600.0)
    return max(60.0, last.checked_at + CHECK_INTERVAL_S - now) + rng.uniform(0, CHECK_JITTER_S)


def _save(info: UpdateInfo) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(info)), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a cache: the next check asks again


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host or "?"
    except Exception:
        return "?"
