"""The device flow (docs/protocol.md, "Pairing requests"): the code shown big, approved on
the website.

One object, :class:`PairingFlow`, drives the whole flow for both faces (the `setup` command
and the GUI wizard); they only render its typed progress events::

    flow = PairingFlow("https://api.usepod.ai", on_event=show)
    await flow.prepare()                  # 1. identity (load, or make one in memory)
                                          # 2. probe the four local kinds
    code = await flow.issue()             # 3. POST /v1/host/pair/issue -> pair code
    outcome = await flow.wait(code)       # 5. POST /v1/host/pair/poll every ~0.8 s
    if isinstance(outcome, PollExpired):  #    -> offer a new code: issue() again
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

The flow's values and events are in :mod:`.values`, the pairing server's URLs and answers in
:mod:`.wire`, the agent.toml it writes in :mod:`.paired_config`; the new key is made and saved
by :mod:`usepod_desktop.core.identity` (``new_in_memory`` / ``save_exclusive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from usepod_desktop import PROTOCOL_VERSION, __version__
from usepod_desktop.core import identity as identity_mod
from usepod_desktop.core import paths
from usepod_desktop.core.backoff import Backoff
from usepod_desktop.core.config import load_config, parse_config
from usepod_desktop.core.discovery import ProbeResult, probe_local
from usepod_desktop.core.errors import (
    ConfigError,
    IdentityError,
    PairingError,
    SecretStoreError,
)
from usepod_desktop.core.fs import atomic_write_text
from usepod_desktop.core.identity import Identity
from usepod_desktop.core.listeners import Listeners
from usepod_desktop.core.net import one_line
from usepod_desktop.core.pairing.paired_config import (
    backup_path_for,
    build_paired_config,
    render_paired_config,
)
from usepod_desktop.core.pairing.values import (
    HOST_TOKEN_KEY,
    Activation,
    BackendsDetected,
    CodeExpired,
    CodeIssued,
    CoordinatorUnreachable,
    IdentityReady,
    PairCode,
    Paired,
    PairingCancelled,
    PairingEvent,
    PairingExpired,
    PairingResult,
    PollExpired,
    WaitingForApproval,
)
from usepod_desktop.core.pairing.wire import (
    DEFAULT_COORDINATOR,
    ISSUE_PATH,
    POLL_PATH,
    Answer,
    TransientHTTPError,
    normalize_base,
    pair_page_url,
    parse_activation,
    parse_issue,
    post_json,
)
from usepod_desktop.core.secrets import SecretStore

__all__ = ["PairingFlow"]

log = logging.getLogger(__name__)

#: Seconds between two polls (the reference's 800 ms).
POLL_INTERVAL_S = 0.8
#: Seconds one issue/poll request may take (the reference's client timeout).
REQUEST_TIMEOUT_S = 30.0
#: Seconds without any answer from the coordinator before getting a code gives up.
UNREACHABLE_TIMEOUT_S = 300.0


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
        return identity_mod.new_in_memory(path), True

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

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Answer:
        return await post_json(client, self.base, path, body, time_limit=self.request_timeout)

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
                    except TransientHTTPError as exc:
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

    def _parse_issue(self, answer: Answer) -> PairCode:
        code = parse_issue(
            answer, page_url=self.page_url, now=self.wall_clock(), clock_now=self.clock()
        )
        self.sandbox = code.sandbox
        return code

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

    async def wait(self, code: PairCode) -> Activation | PollExpired:
        """Poll until the code is approved (Activation) or expires (PollExpired)."""
        with self._step():
            polls = 0
            self.backoff.reset()
            self._attempts = 0
            async with self._client() as client:
                while True:
                    body = {"poll_token": code.poll_token, "capabilities": self.capabilities()}
                    try:
                        answer = await self._post(client, POLL_PATH, body)
                    except TransientHTTPError as exc:
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
    ) -> Activation | PollExpired | None:
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

    def _expired(self, code: PairCode) -> PollExpired:
        log.info("pair code expired")
        self._emit(CodeExpired(code))
        return PollExpired(code)

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
            identity_mod.save_exclusive(identity)
        except FileExistsError:
            # Another program created a key meanwhile: the coordinator paired ours, not that.
            raise PairingError(
                f"{identity.path} was created by another program during pairing; "
                "run setup again to pair that key"
            ) from None
        except OSError as exc:
            raise PairingError(f"cannot create {identity.path}: {exc.strerror}") from None
        self.identity_is_new = False
        log.info("saved the new agent identity at %s", identity.path)

    # ---- all of it

    async def run(self) -> PairingResult:
        """prepare -> issue -> wait -> complete; PairingExpired when the code expires."""
        if self.identity is None:
            await self.prepare()
        code = await self.issue()
        outcome = await self.wait(code)
        if isinstance(outcome, PollExpired):
            raise PairingExpired(f"pair code {code.pair_code} expired before it was approved")
        return await self.complete(outcome)
