"""The pairing server's side of the wire (docs/protocol.md, "Pairing requests"): its URLs, one
bounded POST, and the parsing of its answers.

The pairing server is untrusted like every peer: an answer is read in chunks up to
:data:`MAX_ANSWER_BYTES` and within the request timeout, must be a JSON object, and each field
the agent keeps is checked (a pair code it will show, a poll token of bounded size, a provider
id fit for the identity file). Anything else is a :class:`PairingError` of one line naming the
field. No answer (connection failure, timeout, HTTP 429/502/503/504) is a
:class:`TransientHTTPError`, which the flow retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core.errors import IdentityError, PairingError
from usepod_desktop.core.logsetup import register_secret
from usepod_desktop.core.net import (
    BodyTooLarge,
    NetFailure,
    connect_failure_text,
    error_detail,
    failure_of,
    read_limited,
    snippet,
)
from usepod_desktop.core.pairing.values import ActivatedModel, Activation, PairCode
from usepod_desktop.core.text import safe_remote_text
from usepod_desktop.core.timeparse import parse_rfc3339

__all__ = [
    "DEFAULT_COORDINATOR",
    "FALLBACK_MAX_CONCURRENT",
    "ISSUE_PATH",
    "MAX_ANSWER_BYTES",
    "POLL_PATH",
    "Answer",
    "TransientHTTPError",
    "coordinator_ws_url",
    "normalize_base",
    "pair_page_url",
    "parse_activation",
    "parse_issue",
    "post_json",
]

log = logging.getLogger(__name__)

DEFAULT_COORDINATOR = "https://api.usepod.ai"
PRODUCTION_HOST = "api.usepod.ai"
PRODUCTION_PAIR_PAGE = "https://usepod.ai/host/pair"
ISSUE_PATH = "/v1/host/pair/issue"
POLL_PATH = "/v1/host/pair/poll"
#: A code's lifetime when the coordinator's `expires_at` is missing or nonsensical.
CODE_LIFETIME_S = 600.0
#: limits.max_concurrent when the coordinator activated no model (the reference's 4).
FALLBACK_MAX_CONCURRENT = 4
#: HTTP statuses that mean "the coordinator is there but not now" (deploys, rate limits).
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
_MAX_ERROR_BODY = 300
#: What a pair code may look like (the coordinator's are `ABCD-2345`): shown to the operator
#: as is, so nothing else gets through (no terminal escapes, no markup).
_PAIR_CODE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{2,30})[A-Za-z0-9]")
_MAX_POLL_TOKEN = 4096
#: Largest issue/poll answer read (a poll answer lists the approved models): 1 MiB.
MAX_ANSWER_BYTES = 1024 * 1024
#: The coordinator's `Date` header (1 s resolution) is used only when our clock is further off.
_MAX_CLOCK_SKEW = timedelta(seconds=5)


# ------------------------------------------------------------------------------ URLs


def normalize_base(url: str) -> str:
    """The coordinator's https base without a trailing slash.

    Accepts the agent URL too (``wss://host/provider/connect`` -> ``https://host``), since
    that is what agent.toml holds.
    """
    text = url.strip().rstrip("/")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        parts = urlsplit("")
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.netloc or not text.isprintable():
        raise PairingError(
            f"coordinator URL must look like https://api.usepod.ai, got {url.strip()!r}",
            title="Invalid coordinator URL",
        )
    path = parts.path
    if parts.scheme in ("ws", "wss") and path.endswith("/provider/connect"):
        path = path[: -len("/provider/connect")]
    return urlunsplit((scheme, parts.netloc, path.rstrip("/"), "", ""))


def pair_page_url(base: str) -> str:
    """Where the operator enters the code: usepod.ai for production, else `<base>/host/pair`."""
    if urlsplit(base).hostname == PRODUCTION_HOST:
        return PRODUCTION_PAIR_PAGE
    return base.rstrip("/") + "/host/pair"


def coordinator_ws_url(base: str) -> str:
    """The agent URL for a base: https -> wss, http -> ws, plus `/provider/connect`."""
    trimmed = base.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if trimmed.startswith(http):
            trimmed = ws + trimmed[len(http) :]
            break
    return trimmed + "/provider/connect"


# ------------------------------------------------------------------------------ one POST


class TransientHTTPError(Exception):
    """No usable answer this time (connection failure, timeout, 429/502/503/504): retry."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(slots=True)
class Answer:
    """A JSON object the pairing server answered, and its `Date` header when it had one."""

    body: dict[str, Any]
    server_time: datetime | None


async def post_json(
    client: httpx.AsyncClient, base: str, path: str, body: dict[str, Any], *, time_limit: float
) -> Answer:
    """POST `body` to `base + path` and read the answer, bounded in time (`time_limit` for the
    whole answer) and size (:data:`MAX_ANSWER_BYTES`, read in chunks, never whole).

    Raises :class:`TransientHTTPError` when there is no usable answer this time and
    :class:`PairingError` for an answer that is an error, too large, or not a JSON object."""
    what = f"POST {path}"
    content = b""
    try:
        async with (
            asyncio.timeout(time_limit),
            client.stream("POST", base + path, json=body) as response,
        ):
            if response.status_code in TRANSIENT_STATUSES:
                status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
                raise TransientHTTPError(status)
            if response.is_success:
                content = await read_limited(response, MAX_ANSWER_BYTES)
            else:
                with contextlib.suppress(BodyTooLarge):
                    content = await read_limited(response, _MAX_ERROR_BODY)
    except (TimeoutError, httpx.TransportError) as exc:
        if failure_of(exc) in (NetFailure.TIMEOUT, NetFailure.CONNECT_TIMEOUT):
            raise TransientHTTPError("no answer (timed out)") from None
        raise TransientHTTPError(connect_failure_text(exc)) from None
    except BodyTooLarge as exc:
        raise PairingError(f"the coordinator's answer to {what} is too large: {exc}") from None
    if not response.is_success:
        status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        raise PairingError(f"the coordinator answered {status} to {what}{error_detail(content)}")
    try:
        parsed = json.loads(content)
    except ValueError:
        raise PairingError(
            f"the coordinator's answer to {what} is not JSON ({snippet(content) or 'empty body'})"
        ) from None
    if not isinstance(parsed, dict):
        raise PairingError(
            f"the coordinator's answer to {what} is not a JSON object (got {type(parsed).__name__})"
        )
    server_time = None
    with contextlib.suppress(TypeError, ValueError, IndexError):  # no/bad `Date`: our clock
        server_time = email.utils.parsedate_to_datetime(response.headers.get("date", ""))
        if server_time.tzinfo is None:  # "-0000": UTC by RFC 5322
            server_time = server_time.replace(tzinfo=UTC)
    return Answer(parsed, server_time)


# ------------------------------------------------------------------------------ answers


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def _non_negative_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def parse_issue(answer: Answer, *, page_url: str, now: datetime, clock_now: float) -> PairCode:
    """The issue answer as a code to show. `now` is our UTC time (the server's `Date` is used
    instead when ours is off by more than 5 s); `clock_now` is the flow's monotonic clock, on
    which the code's deadline is set."""
    body = answer.body
    pair_code, poll_token = body.get("pair_code"), body.get("poll_token")
    for name, value in (("pair_code", pair_code), ("poll_token", poll_token)):
        if not isinstance(value, str) or not value.strip():
            raise PairingError(f"the coordinator's answer to POST {ISSUE_PATH} has no {name}")
    assert isinstance(pair_code, str) and isinstance(poll_token, str)
    if not _PAIR_CODE.fullmatch(pair_code.strip()):
        raise PairingError(
            f"the coordinator's answer to POST {ISSUE_PATH} has an invalid pair_code "
            f"'{safe_remote_text(pair_code, 40)}' (expected 4 to 32 letters, digits or dashes)"
        )
    if len(poll_token) > _MAX_POLL_TOKEN:
        raise PairingError(
            f"the coordinator's answer to POST {ISSUE_PATH} has a poll_token of "
            f"{len(poll_token)} characters (at most {_MAX_POLL_TOKEN})"
        )
    register_secret(poll_token)  # whoever has it collects the host token
    if answer.server_time is not None and abs(answer.server_time - now) > _MAX_CLOCK_SKEW:
        now = answer.server_time  # our clock is off: count from the coordinator's
    expires_at = _parse_time(body.get("expires_at"))
    lifetime = (expires_at - now).total_seconds() if expires_at else None
    if lifetime is None or not 0 < lifetime <= 24 * 3600:
        lifetime = CODE_LIFETIME_S
        expires_at = now + timedelta(seconds=lifetime)
    assert expires_at is not None
    return PairCode(
        pair_code=pair_code.strip(),
        page_url=page_url,
        expires_at=expires_at,
        deadline=clock_now + lifetime,
        poll_token=poll_token,
        sandbox=body.get("sandbox") is True,
    )


def parse_activation(body: Mapping[str, Any]) -> Activation:
    """The `active` poll answer. Missing host_token / provider_id is an error (as in the
    reference); a `model_config` entry that makes no sense is skipped with a warning."""
    token = body.get("host_token")
    provider_id = body.get("provider_id")
    if not isinstance(token, str) or not token:
        raise PairingError("the coordinator's `active` answer has no host_token")
    register_secret(token)
    if not isinstance(provider_id, str) or not provider_id.strip():
        raise PairingError("the coordinator's `active` answer has no provider_id")
    try:  # it goes into the identity file: one printable token, nothing else
        identity_mod.validate_provider_id(provider_id.strip())
    except IdentityError as exc:
        raise PairingError(f"the coordinator's `active` answer: {exc}") from None
    raw = body.get("model_config")
    models: dict[str, ActivatedModel] = {}
    warnings: list[str] = []
    if raw is not None and not isinstance(raw, list):
        warnings.append("model_config is not a list; no model prices were taken from it")
        raw = []
    for i, entry in enumerate(raw or []):
        model_id = entry.get("model_id") if isinstance(entry, dict) else None
        if not isinstance(model_id, str) or not model_id:
            warnings.append(f"model_config[{i}] has no model_id; skipped")
            continue
        prices = [_non_negative_int(entry.get(k, 0)) for k in ("input_per_1m", "output_per_1m")]
        concurrent = _non_negative_int(entry.get("max_concurrent", FALLBACK_MAX_CONCURRENT))
        if prices[0] is None or prices[1] is None or not concurrent:
            shown = safe_remote_text(model_id, 80)
            warnings.append(f"model_config entry '{shown}' has an invalid price; skipped")
            continue
        models[model_id] = ActivatedModel(model_id, prices[0], prices[1], concurrent)
    for warning in warnings:
        log.warning("pairing: %s", warning)
    return Activation(provider_id.strip(), tuple(models.values()), token, tuple(warnings))
