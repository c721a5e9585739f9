"""The pairing endpoints (docs/protocol.md, "Pairing requests") on the sandbox coordinator, and
a "desk" where
a person or a test approves the codes agents show.

::

    coord = SandboxCoordinator()
    desk = enable_pairing(coord)                  # before coord.start()
    await coord.start()
    request = await desk.wait_for_request(10)     # an agent asked for a code
    desk.approve(request.pair_code, models=["model-a", ApprovedModel("model-b", 300_000, 450_000)])
    # ... its next poll gets `active`; the agent then authenticates as request.provider_id

``POST /v1/host/pair/issue`` ``{"agent_pubkey"}`` answers ``{"pair_code", "poll_token",
"expires_at"}``; ``POST /v1/host/pair/poll`` ``{"poll_token", "capabilities"}`` answers
``{"status": "pending"}``, ``{"status": "expired"}`` or ``{"status": "active", "host_token",
"provider_id", "model_config": [...]}``. Approval registers the agent's public key in
:attr:`SandboxCoordinator.provider_ids`, so the paired agent authenticates with the id it was
given. ``outage`` (an HTTP status) makes both endpoints answer that status until cleared.

In the `usepod-desktop sandbox --pairing` terminal, :meth:`PairingDesk.command` handles
``approve CODE [MODEL[=IN/OUT] ...]`` (prices in dollars per million tokens), ``expire CODE``
and ``codes``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeAlias

from aiohttp import web

from usepod_desktop.core.pairing.wire import ISSUE_PATH, POLL_PATH
from usepod_desktop.sandbox.coordinator import SandboxCoordinator

__all__ = [
    "APPROVED_INPUT_PER_1M",
    "APPROVED_OUTPUT_PER_1M",
    "DESK_KEY",
    "ApprovedModel",
    "DeskEvent",
    "PairingDesk",
    "PairingRequest",
    "enable_pairing",
]

log = logging.getLogger(__name__)

#: Codes look like `K7QF-3MZP`: no 0/O, 1/I/L to misread.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LIFETIME_S = 600.0
#: What an approval without prices gives a model ($0.40 / $0.80 per 1M tokens): not the
#: agent's own defaults, so a test can tell the two apart.
APPROVED_INPUT_PER_1M = 400_000
APPROVED_OUTPUT_PER_1M = 800_000
APPROVED_MAX_CONCURRENT = 4
#: Codes waiting for approval at once; more are refused with HTTP 429.
MAX_PENDING_CODES = 20
#: Codes issued per minute; more are refused with HTTP 429 (a retrying agent backs off).
MAX_CODES_PER_MINUTE = 30
#: Requests remembered; beyond it the oldest expired ones are forgotten.
MAX_KEPT_REQUESTS = 500

Status: TypeAlias = Literal["pending", "active", "expired"]
DeskEventKind: TypeAlias = Literal["issued", "offered", "approved", "expired"]


@dataclass(frozen=True, slots=True)
class ApprovedModel:
    model_id: str
    input_per_1m: int = APPROVED_INPUT_PER_1M
    output_per_1m: int = APPROVED_OUTPUT_PER_1M
    max_concurrent: int = APPROVED_MAX_CONCURRENT

    def to_wire(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "input_per_1m": self.input_per_1m,
            "output_per_1m": self.output_per_1m,
            "max_concurrent": self.max_concurrent,
        }


@dataclass(eq=False, slots=True)
class PairingRequest:
    """One issued code and what became of it. Times are `time.time()` seconds."""

    pair_code: str
    poll_token: str = field(repr=False)
    agent_pubkey: str
    issued_at: float
    expires_at: float
    status: Status = "pending"
    #: The `capabilities` of the newest poll (None before the first).
    capabilities: dict[str, Any] | None = None
    polls: int = 0
    provider_id: str | None = None
    host_token: str | None = field(default=None, repr=False)
    models: tuple[ApprovedModel, ...] = ()

    @property
    def backends(self) -> list[dict[str, Any]]:
        caps = self.capabilities or {}
        found = caps.get("backends")
        return [b for b in found if isinstance(b, dict)] if isinstance(found, list) else []

    @property
    def offered_models(self) -> list[str]:
        """Model ids of the detected backends, in order, without repeats."""
        names: list[str] = []
        for backend in self.backends:
            for name in backend.get("models") or []:
                if isinstance(name, str) and name not in names:
                    names.append(name)
        return names


@dataclass(frozen=True, slots=True)
class DeskEvent:
    kind: DeskEventKind
    request: PairingRequest


ModelSpec: TypeAlias = str | ApprovedModel | Mapping[str, Any] | tuple[str, int, int]


def _normalize(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _usd(micro: int) -> str:
    return f"${micro / 1_000_000:.2f}"


class PairingDesk:
    """The coordinator's side of pairing; see the module docs. `lifetime` (seconds) may be
    changed at any time and applies to codes issued afterwards. At most `max_pending` codes
    wait at once and at most `max_per_minute` are issued a minute (HTTP 429 beyond)."""

    def __init__(
        self,
        coordinator: SandboxCoordinator,
        *,
        lifetime: float = CODE_LIFETIME_S,
        clock: Callable[[], float] = time.time,
        max_pending: int = MAX_PENDING_CODES,
        max_per_minute: int = MAX_CODES_PER_MINUTE,
    ) -> None:
        self.coordinator = coordinator
        self.lifetime = lifetime
        self.clock = clock
        self.max_pending = max_pending
        self.max_per_minute = max_per_minute
        #: Issue requests refused by the limits.
        self.refused = 0
        self._issue_times: list[float] = []
        #: Answer every pairing request with this HTTP status while set (e.g. 503).
        self.outage: int | None = None
        #: Every request by normalized code, in issue order.
        self.requests: dict[str, PairingRequest] = {}
        self._by_token: dict[str, PairingRequest] = {}
        self._changed = asyncio.Event()
        self._listeners: list[Callable[[DeskEvent], None]] = []

    # ---- views

    def status(self, request: PairingRequest) -> Status:
        if request.status == "pending" and self.clock() >= request.expires_at:
            request.status = "expired"
            self._notify("expired", request)
        return request.status

    @property
    def pending(self) -> list[PairingRequest]:
        """Codes waiting for approval (not expired), oldest first."""
        return [r for r in list(self.requests.values()) if self.status(r) == "pending"]

    def get(self, code: str) -> PairingRequest:
        """The request for `code` (case and dashes do not matter); KeyError if unknown."""
        try:
            return self.requests[_normalize(code)]
        except KeyError:
            raise KeyError(f"no pairing code {code!r} was issued here") from None

    # ---- decisions

    def approve(
        self,
        code: str,
        models: Iterable[ModelSpec] | None = None,
        *,
        provider_id: str | None = None,
    ) -> PairingRequest:
        """Approve `code` with these models (ids at the desk's prices, or ApprovedModel /
        dicts / (id, input, output) tuples); None: every model the agent reported."""
        request = self.get(code)
        status = self.status(request)
        if status != "pending":
            raise ValueError(f"pairing code {request.pair_code} is {status}, not pending")
        chosen = [self._model(m) for m in (request.offered_models if models is None else models)]
        pubkey = request.agent_pubkey
        ids = self.coordinator.provider_ids
        provider_id = provider_id or ids.get(pubkey) or "prov_" + secrets.token_hex(6)
        ids[pubkey] = provider_id
        request.provider_id = provider_id
        request.host_token = "pht_" + secrets.token_urlsafe(24)
        request.models = tuple(chosen)
        request.status = "active"
        log.info("pairing code %s approved as provider %s", request.pair_code, provider_id)
        self._notify("approved", request)
        return request

    def expire(self, code: str) -> PairingRequest:
        """Make `code` expired now (its next poll answers `expired`)."""
        request = self.get(code)
        if self.status(request) == "pending":
            request.status = "expired"
            request.expires_at = min(request.expires_at, self.clock())
            self._notify("expired", request)
        return request

    @staticmethod
    def _model(spec: ModelSpec) -> ApprovedModel:
        if isinstance(spec, ApprovedModel):
            return spec
        if isinstance(spec, str):
            return ApprovedModel(spec)
        if isinstance(spec, tuple):
            return ApprovedModel(*spec)
        return ApprovedModel(**dict(spec))

    # ---- waiting and listening

    def add_listener(self, callback: Callable[[DeskEvent], None]) -> None:
        """Called on issued / offered (first poll listing models) / approved / expired."""
        self._listeners.append(callback)

    async def wait_for_request(
        self,
        timeout: float | None = 10.0,  # noqa: ASYNC109
        *,
        after: int = 0,
        polled: bool = False,
    ) -> PairingRequest:
        """The newest request once more than `after` were issued (and, with `polled`, once
        it has been polled at least once, i.e. its capabilities are known)."""

        def found() -> PairingRequest | None:
            if len(self.requests) <= after:
                return None
            newest = list(self.requests.values())[-1]
            return newest if newest.polls or not polled else None

        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    value = found()
                    if value is not None:
                        return value
                    await changed.wait()
        except TimeoutError:
            raise TimeoutError(f"no pairing request within {timeout}s") from None

    def _notify(
        self, kind: DeskEventKind | None = None, request: PairingRequest | None = None
    ) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if kind is None or request is None:
            return
        for callback in list(self._listeners):
            try:
                callback(DeskEvent(kind, request))
            except Exception:
                log.exception("pairing desk listener failed on %s", kind)

    # ---- HTTP

    def _new_code(self) -> str:
        while True:
            raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
            if raw not in self.requests:
                return f"{raw[:4]}-{raw[4:]}"

    async def handle_issue(self, request: web.Request) -> web.Response:
        if self.outage is not None:
            return _error(self.outage, "pairing is unavailable (sandbox outage)")
        body = await _json_body(request)
        if body is None:
            return _error(400, "expected a JSON object")
        pubkey = body.get("agent_pubkey")
        try:
            valid = isinstance(pubkey, str) and len(base64.b64decode(pubkey, validate=True)) == 32
        except (binascii.Error, ValueError):
            valid = False
        if not valid:
            return _error(400, "agent_pubkey must be a base64 Ed25519 public key")
        assert isinstance(pubkey, str)
        now = self.clock()
        self._issue_times = [t for t in self._issue_times if now - t < 60.0]
        if len(self._issue_times) >= self.max_per_minute:
            self.refused += 1
            return _error(429, "too many pair codes requested; try again in a minute", 60)
        if len(self.pending) >= self.max_pending:
            self.refused += 1
            return _error(429, "too many pair codes are waiting for approval", 60)
        self._issue_times.append(now)
        self._forget_old()
        code = self._new_code()
        pairing = PairingRequest(
            pair_code=code,
            poll_token=secrets.token_urlsafe(24),
            agent_pubkey=pubkey,
            issued_at=now,
            expires_at=now + self.lifetime,
        )
        self.requests[_normalize(code)] = pairing
        self._by_token[pairing.poll_token] = pairing
        log.info("pairing code %s issued", code)
        self._notify("issued", pairing)
        answer: dict[str, Any] = {
            "pair_code": code,
            "poll_token": pairing.poll_token,
            "expires_at": _rfc3339(pairing.expires_at),
        }
        if self.coordinator.announce_sandbox:
            answer["sandbox"] = True  # a local sandbox, approved in its terminal (docs/sandbox.md)
        return web.json_response(answer)

    def _forget_old(self) -> None:
        """Keep at most MAX_KEPT_REQUESTS requests: the oldest expired ones go first."""
        excess = len(self.requests) - MAX_KEPT_REQUESTS + 1
        if excess <= 0:
            return
        for key, old in list(self.requests.items()):
            if excess <= 0:
                break
            if self.status(old) == "expired":
                del self.requests[key]
                self._by_token.pop(old.poll_token, None)
                excess -= 1

    async def handle_poll(self, request: web.Request) -> web.Response:
        if self.outage is not None:
            return _error(self.outage, "pairing is unavailable (sandbox outage)")
        body = await _json_body(request)
        if body is None:
            return _error(400, "expected a JSON object")
        token = body.get("poll_token")
        pairing = self._by_token.get(token) if isinstance(token, str) else None
        if pairing is None:
            return _error(404, "unknown poll_token")
        caps = body.get("capabilities")
        first_offer = pairing.capabilities is None
        if isinstance(caps, dict):
            pairing.capabilities = caps
        pairing.polls += 1
        status = self.status(pairing)
        if first_offer and pairing.capabilities is not None:
            self._notify("offered", pairing)
        else:
            self._notify()
        if status != "active":
            return web.json_response({"status": status})
        return web.json_response(
            {
                "status": "active",
                "host_token": pairing.host_token,
                "provider_id": pairing.provider_id,
                "model_config": [m.to_wire() for m in pairing.models],
            }
        )

    # ---- the terminal

    def command(self, line: str) -> str | None:
        """Run a typed pairing command and return what to print ("" for nothing: an event
        listener reports it); None when `line` is not one (`approve CODE [MODEL[=IN/OUT]
        ...]`, `expire CODE`, `codes`)."""
        words = line.split()
        if not words or words[0].lower() not in ("approve", "expire", "codes"):
            return None
        verb = words[0].lower()
        if verb == "codes":
            return self.describe_pending()
        if len(words) < 2:
            return f"usage: {verb} CODE" + (" [MODEL[=IN/OUT] ...]" if verb == "approve" else "")
        try:
            if verb == "expire":
                request = self.get(words[1])
                if self.status(request) != "pending":
                    return f"pairing code {request.pair_code} is already {request.status}"
                self.expire(words[1])
                return ""  # the "expired" event says it
            models = [_parse_model_arg(w) for w in words[2:]] or None
            approved = self.approve(words[1], models)
        except (KeyError, ValueError) as exc:
            return f"cannot {verb}: {exc.args[0] if exc.args else exc}"
        return describe_approval(approved)

    def describe_pending(self) -> str:
        pending = self.pending
        if not pending:
            return "no pairing code is waiting for approval"
        lines = ["pairing codes waiting for approval:"]
        for r in pending:
            left = max(0, int(r.expires_at - self.clock()))
            offered = ", ".join(r.offered_models) or "no models detected yet"
            lines.append(f"  {r.pair_code}  ({left // 60}:{left % 60:02d} left)  {offered}")
        return "\n".join(lines)


def describe_approval(request: PairingRequest) -> str:
    models = ", ".join(
        f"{m.model_id} ({_usd(m.input_per_1m)} / {_usd(m.output_per_1m)})" for m in request.models
    )
    return (
        f"pairing code {request.pair_code} approved as provider {request.provider_id}; "
        f"models: {models or 'none'}"
    )


def _parse_model_arg(word: str) -> ApprovedModel:
    """`model-a` or `model-a=0.30/0.45` (dollars per million tokens, input/output)."""
    model_id, sep, prices = word.partition("=")
    if not sep:
        return ApprovedModel(model_id)
    try:
        raw_in, raw_out = prices.replace("$", "").split("/")
        micro = [Decimal(raw_in) * 1_000_000, Decimal(raw_out) * 1_000_000]
    except (ValueError, InvalidOperation):
        raise ValueError(
            f"{word!r}: write prices as MODEL=INPUT/OUTPUT, e.g. m=0.30/0.45"
        ) from None
    if any(not p.is_finite() or p < 0 or p != p.to_integral_value() for p in micro):
        raise ValueError(f"{word!r}: prices must be >= 0 with at most 6 decimals")
    return ApprovedModel(model_id, int(micro[0]), int(micro[1]))


def _error(status: int, message: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return web.json_response({"error": message}, status=status, headers=headers)


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        body = await request.json()
        if isinstance(body, dict):
            return body
    return None


def enable_pairing(coordinator: SandboxCoordinator, **kwargs: Any) -> PairingDesk:
    """Add the pairing routes to `coordinator` (before its first start) and return the desk."""
    if coordinator.running or coordinator.app.frozen:
        raise RuntimeError("enable_pairing() must be called before the coordinator starts")
    desk = PairingDesk(coordinator, **kwargs)
    coordinator.add_routes(
        [web.post(ISSUE_PATH, desk.handle_issue), web.post(POLL_PATH, desk.handle_poll)]
    )
    coordinator.app[DESK_KEY] = desk
    return desk


DESK_KEY = web.AppKey("usepod_sandbox_pairing_desk", PairingDesk)


# ------------------------------------------------------------------------------ terminal text


def terminal_help(http_url: str) -> str:
    """What `usepod-desktop sandbox --pairing` prints under its banner."""
    return (
        "Pairing is on: pair an agent with\n"
        f"    usepod-desktop setup --coordinator {http_url} --config sandbox.toml\n"
        "(a file of its own: your real agent.toml stays as it is; start the agent with\n"
        "    usepod-desktop run --allow-insecure --config sandbox.toml)\n"
        "then type `approve CODE` here (optionally with models and dollar prices per 1M\n"
        "tokens: `approve CODE model-a=0.30/0.45 model-b`); `codes` lists waiting codes,\n"
        "`expire CODE` expires one."
    )


def describe_event(event: DeskEvent) -> str | None:
    """One line for the sandbox terminal, or None (approvals are answered by the command)."""
    r = event.request
    if event.kind == "issued":
        return f"pairing code {r.pair_code} requested; type `approve {r.pair_code}` to approve it"
    if event.kind == "offered":
        found = [
            f"{b.get('kind')} at {b.get('url')} ({', '.join(map(str, b.get('models') or []))})"
            for b in r.backends
        ]
        return f"pairing code {r.pair_code}: the agent offers {'; '.join(found) or 'no backend'}"
    if event.kind == "expired":
        return f"pairing code {r.pair_code} expired"
    return None


def event_printer(say: Callable[[str], None]) -> Callable[[DeskEvent], None]:
    """A desk listener printing :func:`describe_event` lines with `say`."""

    def show(event: DeskEvent) -> None:
        text = describe_event(event)
        if text:
            say(text)

    return show
