"""Device-flow pairing (docs/protocol.md, "Pairing requests"): the code shown big, approved on
the website.

One object, :class:`PairingFlow`, drives the whole flow for both faces (the `setup` command
and the GUI wizard); they only render its typed progress events::

    flow = PairingFlow("https://api.usepod.ai", on_event=show)
    await flow.prepare()                  # 1. identity (load, or make one in memory)
                                          # 2. probe the four local kinds
    code = await flow.issue()             # 3. POST /v1/host/pair/issue -> pair code
    outcome = await flow.wait(code)       # 5. POST /v1/host/pair/poll every ~0.8 s
    if isinstance(outcome, Expired):      #    -> offer a new code: issue() again
        ...
    result = await flow.complete(outcome) # 6. identity + agent.toml (+ backup) + keyring

or simply ``result = await flow.run()`` (raises :class:`PairingExpired` on expiry).

Nothing touches the disk or the keyring before the coordinator reports the pairing active:
a new identity is kept in memory until then, so cancelling (``flow.cancel()`` or cancelling
the task) at any earlier point leaves no trace. Once active, :meth:`PairingFlow.complete`
writes, in this order, the identity file with its provider id, then agent.toml (the previous
one kept as ``agent.toml.bak-YYYYMMDD-HHMMSS``), then the host token in the OS keyring
(service ``usepod-agent``, user ``usepod-host-token``). The host token is never written to
agent.toml and is registered with the log redactor the moment it arrives.

Failures are :class:`PairingError` (a :class:`UserFacingError`: one line, no secret). A
coordinator that cannot be reached (connection failure, timeout, HTTP 429/502/503/504) is
retried with backoff and reported as :class:`CoordinatorUnreachable` events; it becomes an
error only after ``unreachable_timeout`` seconds without an answer while getting a code (and
an expiry when the code's lifetime ran out meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from usepod_desktop import PROTOCOL_VERSION, __version__
from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core import paths
from usepod_desktop.core.backends.openai_compat import BodyTooLarge, read_limited
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import (
    MAX_CONCURRENT_RANGE,
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    ModelPrice,
    OperatorConfig,
    PricingConfig,
    atomic_write_text,
    load_config,
    parse_config,
)
from usepod_desktop.core.discovery import ProbeResult, probe_local
from usepod_desktop.core.errors import (
    ConfigError,
    IdentityError,
    PairingError,
    SecretStoreError,
)
from usepod_desktop.core.identity import Identity
from usepod_desktop.core.kinds import KINDS, LOCAL_KINDS
from usepod_desktop.core.listeners import Listeners
from usepod_desktop.core.logsetup import register_secret
from usepod_desktop.core.net import (
    NetFailure,
    connect_failure_text,
    error_detail,
    failure_of,
    one_line,
    snippet,
)
from usepod_desktop.core.secrets import SERVICE, SecretStore
from usepod_desktop.core.text import safe_remote_text
from usepod_desktop.core.timeparse import parse_rfc3339

__all__ = [
    "BACKEND_HINTS",
    "DEFAULT_COORDINATOR",
    "HOST_TOKEN_KEY",
    "ActivatedModel",
    "Activation",
    "BackendsDetected",
    "CodeExpired",
    "CodeIssued",
    "CoordinatorUnreachable",
    "Expired",
    "IdentityReady",
    "PairCode",
    "Paired",
    "PairingCancelled",
    "PairingError",
    "PairingEvent",
    "PairingExpired",
    "PairingFlow",
    "PairingResult",
    "WaitingForApproval",
    "build_paired_config",
    "coordinator_ws_url",
    "normalize_base",
    "pair_page_url",
    "render_paired_config",
]

log = logging.getLogger(__name__)

DEFAULT_COORDINATOR = "https://api.usepod.ai"
PRODUCTION_HOST = "api.usepod.ai"
PRODUCTION_PAIR_PAGE = "https://usepod.ai/host/pair"
ISSUE_PATH = "/v1/host/pair/issue"
POLL_PATH = "/v1/host/pair/poll"
#: Seconds between two polls (the reference's 800 ms).
POLL_INTERVAL_S = 0.8
#: A code's lifetime when the coordinator's `expires_at` is missing or nonsensical.
CODE_LIFETIME_S = 600.0
#: Seconds one issue/poll request may take (the reference's client timeout).
REQUEST_TIMEOUT_S = 30.0
#: Seconds without any answer from the coordinator before getting a code gives up.
UNREACHABLE_TIMEOUT_S = 300.0
#: Keyring user name of the host token (service `usepod-agent`, like the BYOK keys).
HOST_TOKEN_KEY = "usepod-host-token"
DEFAULT_INPUT_PER_1M = 500_000
DEFAULT_OUTPUT_PER_1M = 1_000_000
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


#: Per local kind: its name and how to start it, for "nothing found" hints (CLI and GUI).
BACKEND_HINTS: dict[str, tuple[str, str]] = {
    k: (KINDS[k].label, KINDS[k].install_hint or "") for k in LOCAL_KINDS
}


# ------------------------------------------------------------------------------ errors


class PairingExpired(PairingError):
    """The pair code expired before it was approved (:meth:`PairingFlow.run` only)."""

    title = "Pair code expired"


class PairingCancelled(PairingError):
    """The flow was cancelled with :meth:`PairingFlow.cancel`; nothing was written."""

    title = "Pairing cancelled"


# ------------------------------------------------------------------------------ values


@dataclass(frozen=True, slots=True)
class PairCode:
    """A code to show. `deadline` is on the flow's (monotonic) clock."""

    pair_code: str
    page_url: str
    expires_at: datetime
    deadline: float
    poll_token: str = field(repr=False)
    #: The answer said `"sandbox": true`: a local sandbox, approved in its own terminal (there
    #: is no web page) and whose provider id is not written into the shared identity.
    sandbox: bool = False


@dataclass(frozen=True, slots=True)
class ActivatedModel:
    model_id: str
    input_per_1m: int
    output_per_1m: int
    max_concurrent: int


@dataclass(frozen=True, slots=True)
class Activation:
    """The poll answer `active`: the operator approved this computer on the website."""

    provider_id: str
    models: tuple[ActivatedModel, ...]
    host_token: str = field(repr=False)
    #: Entries of `model_config` that could not be used (skipped), one line each.
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Expired:
    """The poll answer `expired` (or no answer at all until the code's deadline)."""

    code: PairCode


@dataclass(frozen=True, slots=True)
class PairingResult:
    provider_id: str
    models: tuple[ActivatedModel, ...]
    config: Config
    config_path: Path
    identity_path: Path
    #: Where the previous agent.toml was kept, if there was one.
    backup_path: Path | None
    #: Whether the host token is in the OS keyring (False: no usable keyring, see warnings).
    token_stored: bool
    warnings: tuple[str, ...] = ()

    @property
    def insecure(self) -> bool:
        """The coordinator URL is ws:// (a local sandbox): the agent needs --allow-insecure."""
        return self.config.coordinator.url.startswith("ws://")


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True, slots=True)
class IdentityReady:
    public_key: str
    path: Path
    #: True when no identity file existed: a new key, saved only once paired.
    new: bool


@dataclass(frozen=True, slots=True)
class BackendsDetected:
    backends: tuple[ProbeResult, ...]


@dataclass(frozen=True, slots=True)
class CoordinatorUnreachable:
    """An attempt failed without an answer; the flow retries after `retry_in` seconds."""

    url: str
    detail: str
    attempt: int
    retry_in: float


@dataclass(frozen=True, slots=True)
class CodeIssued:
    code: PairCode


@dataclass(frozen=True, slots=True)
class WaitingForApproval:
    """A poll answered `pending`."""

    code: PairCode
    remaining: float
    polls: int


@dataclass(frozen=True, slots=True)
class CodeExpired:
    code: PairCode


@dataclass(frozen=True, slots=True)
class Paired:
    result: PairingResult


PairingEvent: TypeAlias = (
    IdentityReady
    | BackendsDetected
    | CoordinatorUnreachable
    | CodeIssued
    | WaitingForApproval
    | CodeExpired
    | Paired
)


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


# ------------------------------------------------------------------------------ agent.toml


def build_paired_config(
    base: str,
    identity_path: Path,
    backends: Sequence[ProbeResult],
    models: Sequence[ActivatedModel],
) -> Config:
    """The config the reference's `setup` writes: detected backends (no allow-list), the
    default prices plus the activated ones, max_concurrent from the first activated model."""
    lo, hi = MAX_CONCURRENT_RANGE
    max_concurrent = models[0].max_concurrent if models else FALLBACK_MAX_CONCURRENT
    return Config(
        coordinator=CoordinatorConfig(url=coordinator_ws_url(base)),
        pricing=PricingConfig(
            DEFAULT_INPUT_PER_1M,
            DEFAULT_OUTPUT_PER_1M,
            {m.model_id: ModelPrice(m.input_per_1m, m.output_per_1m) for m in models},
        ),
        backends=tuple(BackendConfig(kind=b.kind, url=b.url) for b in backends),
        operator=OperatorConfig(display_name="", wallet=""),
        identity_key_path=str(identity_path),
        limits=LimitsConfig(max_concurrent=min(max(max_concurrent, lo), hi)),
    )


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _toml_int(value: int) -> str:
    return f"{value:_}"


def render_paired_config(
    config: Config, *, provider_id: str, public_key: str, generated: datetime
) -> str:
    """agent.toml text for a freshly paired computer, laid out like the reference's. The
    host token is not in it, not even shortened."""
    out: list[str] = [
        f"# usepod-agent config, generated by `usepod-desktop setup` on "
        f"{generated.astimezone().strftime('%Y-%m-%d %H:%M')}.",
        "# Run setup again to pair anew, or edit it (usepod-agent and usepod-desktop share it).",
        "# The host token is kept in the OS keyring, never in this file:",
        f"# (service {SERVICE!r}, user {HOST_TOKEN_KEY!r}).",
        "",
        "[operator]",
        "# operator identity is owned by the dashboard; kept for usepod-agent 0.1.x",
        f"display_name = {_toml_str((config.operator and config.operator.display_name) or '')}",
        f"wallet       = {_toml_str((config.operator and config.operator.wallet) or '')}",
        "",
        "[coordinator]",
        f"url = {_toml_str(config.coordinator.url)}",
        f"# provider_id = {_toml_str(provider_id)}",
        "",
        "[identity]",
        f"key_path = {_toml_str(config.identity_key_path or '')}",
        f"# public_key = {_toml_str(public_key)}",
        "",
    ]
    for backend in config.backends:
        out += ["[[backends]]", f"kind = {_toml_str(backend.kind)}"]
        out += [f"url  = {_toml_str(backend.url or '')}", ""]
    pricing = config.pricing
    out += [
        "[pricing]",
        "# micro-USD per 1M tokens (500_000 = $0.50); models without an entry below use these",
        f"default_input_per_1m  = {_toml_int(pricing.default_input_per_1m)}",
        f"default_output_per_1m = {_toml_int(pricing.default_output_per_1m)}",
        "",
    ]
    if pricing.models:
        out.append("# the prices chosen on the website when this computer was approved")
    for model_id, price in pricing.models.items():
        out += [
            f"[pricing.models.{_toml_str(model_id)}]",
            f"input_per_1m  = {_toml_int(price.input_per_1m)}",
            f"output_per_1m = {_toml_int(price.output_per_1m)}",
            "",
        ]
    out += ["[limits]", f"max_concurrent = {config.limits.max_concurrent}"]
    return "\n".join(out) + "\n"


def backup_path_for(path: Path, now: datetime) -> Path:
    """`agent.toml.bak-YYYYMMDD-HHMMSS` (local time), with `-2`, `-3`... if taken."""
    stem = f"{path.name}.bak-{now.astimezone().strftime('%Y%m%d-%H%M%S')}"
    candidate = path.with_name(stem)
    n = 2
    while candidate.exists():
        candidate = path.with_name(f"{stem}-{n}")
        n += 1
    return candidate


# ------------------------------------------------------------------------------ parsing


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


# ------------------------------------------------------------------------------ the flow


class _Unreachable(Exception):
    """No usable answer this time (connection failure, timeout, 429/502/503/504)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(slots=True)
class _Answer:
    body: dict[str, Any]
    server_time: datetime | None


class PairingFlow:
    """The device flow; see the module docs. All seams are keyword arguments:

    `probe` replaces the local probe (default: :func:`probe_local` with `probe_host` /
    `probe_ports`); `clock` is monotonic seconds and `sleep` waits on it; `wall_clock` gives
    the current UTC time when the coordinator sends no `Date` header; `transport` is an
    httpx transport (e.g. `httpx.MockTransport`).
    """

    def __init__(
        self,
        coordinator: str = DEFAULT_COORDINATOR,
        *,
        config_path: Path | None = None,
        identity_path: Path | None = None,
        secrets: SecretStore | None = None,
        on_event: Callable[[PairingEvent], None] | None = None,
        probe: Callable[[], Awaitable[list[ProbeResult]]] | None = None,
        probe_host: str = "localhost",
        probe_ports: Mapping[str, int] | None = None,
        poll_interval: float = POLL_INTERVAL_S,
        backoff: Backoff | None = None,
        unreachable_timeout: float | None = UNREACHABLE_TIMEOUT_S,
        request_timeout: float = REQUEST_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.set_coordinator(coordinator)
        #: Set by issue(): the coordinator is a local sandbox (docs/sandbox.md).
        self.sandbox = False
        self.config_path = Path(config_path) if config_path else paths.default_config_path()
        self._identity_path = identity_path
        self.secrets = secrets or SecretStore()
        self.poll_interval = poll_interval
        self.backoff = backoff or Backoff(initial=1.0, maximum=30.0)
        self.unreachable_timeout = unreachable_timeout
        self.request_timeout = request_timeout
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.identity: Identity | None = None
        self.identity_is_new = False
        self.backends: tuple[ProbeResult, ...] = ()
        self.cancelled = False
        #: Set once :meth:`complete` began writing (cancelling no longer undoes anything).
        self.commit_started = False
        self._listeners: Listeners[[PairingEvent]] = Listeners("pairing listener", log)
        if on_event is not None:
            self._listeners.add(on_event)
        self._probe = probe or (lambda: probe_local(probe_host, probe_ports))
        self._transport = transport
        self._running: set[asyncio.Task[Any]] = set()
        self._attempts = 0

    # ---- events

    def add_listener(self, callback: Callable[[PairingEvent], None]) -> Callable[[], None]:
        """Call `callback` with every pairing event; returns the function that removes it."""
        return self._listeners.add(callback)

    def _emit(self, event: PairingEvent) -> None:
        self._listeners.emit(event)

    def remaining(self, code: PairCode) -> float:
        """Seconds until `code` expires (0 when it has)."""
        return max(0.0, code.deadline - self.clock())

    # ---- cancel

    def cancel(self) -> None:
        """Stop the flow: running steps end with CancelledError, later calls raise
        PairingCancelled. Nothing is written unless :meth:`complete` had already begun."""
        self.cancelled = True
        for task in list(self._running):
            task.cancel()

    @contextlib.contextmanager
    def _step(self) -> Any:
        if self.cancelled:
            raise PairingCancelled("pairing was cancelled; nothing was written")
        task = asyncio.current_task()
        outermost = task is not None and task not in self._running
        if outermost:
            self._running.add(task)  # type: ignore[arg-type]
        try:
            yield
        finally:
            if outermost:
                self._running.discard(task)  # type: ignore[arg-type]

    # ---- steps 1 and 2

    def _resolve_identity_path(self) -> Path:
        if self._identity_path is not None:
            return Path(self._identity_path)
        if self.config_path.is_file():  # pairing again: keep the key the config points at
            try:
                return load_config(self.config_path, allow_insecure=True).key_path
            except ConfigError:
                pass
        return paths.default_identity_path()

    def _load_identity(self) -> tuple[Identity, bool]:
        path = self._resolve_identity_path()
        if path.exists():
            return identity_mod.load(path), False
        fresh = Identity(
            path=path, created=datetime.now(UTC), provider_id=None, _private=_new_key()
        )
        return fresh, True

    async def prepare(self) -> tuple[Identity, tuple[ProbeResult, ...]]:
        """Load the identity (or make a new one, in memory) and probe the local backends."""
        with self._step():
            if self.identity is None:
                self.identity, self.identity_is_new = await asyncio.to_thread(self._load_identity)
            self._emit(
                IdentityReady(
                    self.identity.public_key_b64, self.identity.path, self.identity_is_new
                )
            )
            await self.detect()
            return self.identity, self.backends

    async def detect(self) -> tuple[ProbeResult, ...]:
        """Probe the local backends (again); what the next polls advertise."""
        with self._step():
            self.backends = tuple(await self._probe())
            self._emit(BackendsDetected(self.backends))
            return self.backends

    # ---- HTTP

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(self.request_timeout),
            headers={"User-Agent": f"usepod-desktop/{__version__}"},
            follow_redirects=False,
        )

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> _Answer:
        what = f"POST {path}"
        content = b""
        try:
            # Bounded in time (the whole answer) and size (read in chunks, never whole).
            async with (
                asyncio.timeout(self.request_timeout),
                client.stream("POST", self.base + path, json=body) as response,
            ):
                if response.status_code in TRANSIENT_STATUSES:
                    status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
                    raise _Unreachable(status)
                if response.is_success:
                    content = await read_limited(response, MAX_ANSWER_BYTES)
                else:
                    with contextlib.suppress(BodyTooLarge):
                        content = await read_limited(response, _MAX_ERROR_BODY)
        except (TimeoutError, httpx.TransportError) as exc:
            if failure_of(exc) in (NetFailure.TIMEOUT, NetFailure.CONNECT_TIMEOUT):
                raise _Unreachable("no answer (timed out)") from None
            raise _Unreachable(connect_failure_text(exc)) from None
        except BodyTooLarge as exc:
            raise PairingError(f"the coordinator's answer to {what} is too large: {exc}") from None
        if not response.is_success:
            status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
            raise PairingError(
                f"the coordinator answered {status} to {what}{error_detail(content)}"
            )
        try:
            parsed = json.loads(content)
        except ValueError:
            raise PairingError(
                f"the coordinator's answer to {what} is not JSON "
                f"({snippet(content) or 'empty body'})"
            ) from None
        if not isinstance(parsed, dict):
            raise PairingError(
                f"the coordinator's answer to {what} is not a JSON object "
                f"(got {type(parsed).__name__})"
            )
        server_time = None
        with contextlib.suppress(TypeError, ValueError, IndexError):  # no/bad `Date`: our clock
            server_time = email.utils.parsedate_to_datetime(response.headers.get("date", ""))
            if server_time.tzinfo is None:  # "-0000": UTC by RFC 5322
                server_time = server_time.replace(tzinfo=UTC)
        return _Answer(parsed, server_time)

    async def _backoff_sleep(self, detail: str, give_up_at: float | None) -> None:
        self._attempts += 1
        delay = self.backoff.next_delay()
        if give_up_at is not None:
            delay = max(0.0, min(delay, give_up_at - self.clock()))
        log.info("coordinator %s unreachable (%s); retrying in %.1f s", self.base, detail, delay)
        self._emit(CoordinatorUnreachable(self.base, detail, self._attempts, delay))
        await self.sleep(delay)

    # ---- step 3

    async def issue(self) -> PairCode:
        """Ask for a pair code (retrying while the coordinator cannot be reached)."""
        with self._step():
            if self.identity is None:
                await self.prepare()
            assert self.identity is not None
            body = {"agent_pubkey": self.identity.public_key_b64}
            started = self.clock()
            give_up_at = None
            if self.unreachable_timeout is not None:
                give_up_at = started + self.unreachable_timeout
            self.backoff.reset()
            self._attempts = 0
            async with self._client() as client:
                while True:
                    try:
                        answer = await self._post(client, ISSUE_PATH, body)
                        break
                    except _Unreachable as exc:
                        if give_up_at is not None and self.clock() >= give_up_at:
                            raise PairingError(
                                f"cannot reach the coordinator at {self.base}: {exc.detail}",
                                title="Coordinator unreachable",
                            ) from None
                        await self._backoff_sleep(exc.detail, give_up_at)
            code = self._parse_issue(answer)
            log.info("pair code issued; expires in %.0f s", code.deadline - self.clock())
            self._emit(CodeIssued(code))
            return code

    def _parse_issue(self, answer: _Answer) -> PairCode:
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
        now = self.wall_clock()
        if answer.server_time is not None and abs(answer.server_time - now) > _MAX_CLOCK_SKEW:
            now = answer.server_time  # our clock is off: count from the coordinator's
        expires_at = _parse_time(body.get("expires_at"))
        lifetime = (expires_at - now).total_seconds() if expires_at else None
        if lifetime is None or not 0 < lifetime <= 24 * 3600:
            lifetime = CODE_LIFETIME_S
            expires_at = now + timedelta(seconds=lifetime)
        assert expires_at is not None
        self.sandbox = body.get("sandbox") is True
        return PairCode(
            pair_code=pair_code.strip(),
            page_url=self.page_url,
            expires_at=expires_at,
            deadline=self.clock() + lifetime,
            poll_token=poll_token,
            sandbox=self.sandbox,
        )

    def set_coordinator(self, coordinator: str) -> None:
        """Pair with another coordinator (a sandbox, staging) before :meth:`issue`; raises
        PairingError for a URL that is not http(s)/ws(s)."""
        self.base = normalize_base(coordinator)
        self.page_url = pair_page_url(self.base)

    # ---- step 5

    def capabilities(self) -> dict[str, Any]:
        return {
            "backends": [{"kind": b.kind, "url": b.url, "models": b.models} for b in self.backends],
            "agent_version": PROTOCOL_VERSION,
        }

    async def wait(self, code: PairCode) -> Activation | Expired:
        """Poll until the code is approved (Activation) or expires (Expired)."""
        with self._step():
            polls = 0
            self.backoff.reset()
            self._attempts = 0
            async with self._client() as client:
                while True:
                    body = {"poll_token": code.poll_token, "capabilities": self.capabilities()}
                    try:
                        answer = await self._post(client, POLL_PATH, body)
                    except _Unreachable as exc:
                        if self.clock() >= code.deadline:
                            return self._expired(code)
                        await self._backoff_sleep(exc.detail, code.deadline)
                        continue
                    self.backoff.reset()
                    self._attempts = 0
                    polls += 1
                    outcome = self._interpret_poll(answer.body, code, polls)
                    if outcome is not None:
                        return outcome
                    await self.sleep(self.poll_interval)

    def _interpret_poll(
        self, body: dict[str, Any], code: PairCode, polls: int
    ) -> Activation | Expired | None:
        status = body.get("status")
        if status == "pending":
            self._emit(WaitingForApproval(code, self.remaining(code), polls))
            return None
        if status == "expired":
            return self._expired(code)
        if status == "active":
            activation = parse_activation(body)
            log.info("pairing approved: provider %s", activation.provider_id)
            return activation
        if status is None:
            raise PairingError(f"the coordinator's answer to POST {POLL_PATH} has no status")
        shown = one_line(status if isinstance(status, str) else json.dumps(status), 60)
        raise PairingError(
            f"the coordinator sent an unknown pairing status {shown!r} "
            "(expected pending, active or expired)"
        )

    def _expired(self, code: PairCode) -> Expired:
        log.info("pair code expired")
        self._emit(CodeExpired(code))
        return Expired(code)

    # ---- step 6

    async def complete(self, activation: Activation) -> PairingResult:
        """Write the identity (with the provider id), agent.toml and the host token.

        Runs in one worker thread to the end even if the awaiting task is cancelled: the
        coordinator already paired this computer, so a half-written set would be worse."""
        with self._step():
            assert self.identity is not None, "prepare() first"
            future = asyncio.ensure_future(asyncio.to_thread(self._commit, activation))
            result = await asyncio.shield(future)
            self._emit(Paired(result))
            return result

    def _commit(self, activation: Activation) -> PairingResult:
        identity = self.identity
        assert identity is not None
        config = build_paired_config(self.base, identity.path, self.backends, activation.models)
        now = self.wall_clock()
        text = render_paired_config(
            config,
            provider_id=activation.provider_id,
            public_key=identity.public_key_b64,
            generated=now,
        )
        try:
            reparsed = parse_config(text, allow_insecure=True)
        except ConfigError as exc:
            raise PairingError(f"cannot write agent.toml: {exc}") from None
        if reparsed != config:
            raise PairingError("internal error: the agent.toml written would not read back")
        assert activation.host_token not in text

        self.commit_started = True
        self._save_identity(identity, activation.provider_id)
        backup = None
        if self.config_path.exists():
            backup = backup_path_for(self.config_path, now)
            try:
                shutil.copy2(self.config_path, backup)
            except OSError as exc:
                raise PairingError(
                    f"cannot keep a copy of {self.config_path} ({exc.strerror}); "
                    "nothing was replaced"
                ) from None
        try:
            atomic_write_text(self.config_path, text)
        except OSError as exc:
            raise PairingError(f"cannot write {self.config_path}: {exc.strerror}") from None
        log.info("paired as provider %s; wrote %s", activation.provider_id, self.config_path)

        warnings = list(activation.warnings)
        stored = False
        # The agent authenticates with its key, not with this token: pairing works without it.
        problem = self.secrets.unavailable_reason()
        if problem is None:
            try:
                self.secrets.set(HOST_TOKEN_KEY, activation.host_token)
                stored = True
            except SecretStoreError as exc:
                problem = str(exc)
        if problem is not None:
            warnings.append(f"the host token was not saved in the OS keyring: {problem}")
            log.info("pairing: host token not saved: %s", problem)
        return PairingResult(
            provider_id=activation.provider_id,
            models=activation.models,
            config=config,
            config_path=self.config_path,
            identity_path=identity.path,
            backup_path=backup,
            token_stored=stored,
            warnings=tuple(warnings),
        )

    def _save_identity(self, identity: Identity, provider_id: str) -> None:
        sandbox = self.sandbox  # a sandbox's provider id is throw-away: the key file only
        if sandbox and not self.identity_is_new:
            return
        if not self.identity_is_new:
            try:
                identity.set_provider_id(provider_id)
            except IdentityError as exc:
                raise PairingError(f"not saving the identity: {exc}") from None
            except OSError as exc:
                raise PairingError(
                    f"cannot save the provider id in {identity.path}: {exc.strerror}"
                ) from None
            return
        try:
            identity_mod.validate_provider_id(provider_id)
        except IdentityError as exc:
            raise PairingError(f"not saving the identity: {exc}") from None
        identity.provider_id = None if sandbox else provider_id
        try:
            identity.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(identity.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another program created a key meanwhile: the coordinator paired ours, not that.
            raise PairingError(
                f"{identity.path} was created by another program during pairing; "
                "run setup again to pair that key"
            ) from None
        except OSError as exc:
            raise PairingError(f"cannot create {identity.path}: {exc.strerror}") from None
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(identity.serialize())
            fh.flush()
            os.fsync(fh.fileno())
        identity_mod.protect_new_key(identity.path)
        self.identity_is_new = False
        log.info("saved the new agent identity at %s", identity.path)

    # ---- all of it

    async def run(self) -> PairingResult:
        """prepare -> issue -> wait -> complete; PairingExpired when the code expires."""
        if self.identity is None:
            await self.prepare()
        code = await self.issue()
        outcome = await self.wait(code)
        if isinstance(outcome, Expired):
            raise PairingExpired(f"pair code {code.pair_code} expired before it was approved")
        return await self.complete(outcome)


def _new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
