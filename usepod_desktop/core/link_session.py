"""The coordinator session's rules, without I/O (websockets' `protocol.py` is the model).

:class:`SessionRules` is one connection's state machine: it is fed the frames the coordinator
sends (:meth:`SessionRules.receive`) and answers with what to do (send a frame, take the
authentication, run / cancel / refuse a job, or nothing), or raises when the session must end.
:func:`classify_disconnect` is the pure reconnect classifier (websockets' `process_exception`
is the model): why a session ended, as the state and the one line the UI shows.
:mod:`usepod_desktop.core.link` does the I/O: it owns the socket, the timers and the backoff, and
acts on these answers. The rules (docs/protocol.md):

- handshake: `auth_challenge` -> a signed `auth_response` (with the enrollment code only while
  the identity has no provider id) -> `auth_ok` or `auth_failed`. Unknown frame types are
  skipped; a binary frame, a malformed frame or any other frame type breaks the handshake;
- after `auth_ok`: the provider id the coordinator gave is kept when it differs from the stored
  one, unless the coordinator is a sandbox (its ids are thrown away, docs/sandbox.md) or the id
  is unusable (then the stored one stays and the session goes on);
- once open: `job` frames run, `job_cancel` cancels; a `job` frame with a usable job id that
  cannot be served is refused with `invalid_request`; every other frame is ignored, never
  ending the session ("Tolerance");
- a session that got `auth_ok` ended by a planned cycle: the next attempt comes after the
  initial backoff (core/backoff.py).

Nothing here touches a socket, a clock or a file: every rule is unit tested without them
(tests/core/test_link_session.py).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from usepod_desktop import PROTOCOL_VERSION
from usepod_desktop.core import protocol
from usepod_desktop.core.errors import IdentityError
from usepod_desktop.core.identity import validate_provider_id
from usepod_desktop.core.text import safe_remote_text

__all__ = [
    "AuthRejected",
    "Authenticated",
    "CancelJob",
    "Disconnect",
    "HandshakeError",
    "Ignored",
    "LinkState",
    "Phase",
    "RejectJob",
    "RunJob",
    "SendFrame",
    "SessionRules",
    "classify_disconnect",
    "describe_failure",
]


class LinkState(StrEnum):
    OFFLINE = "offline"
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    AUTH_FAILED = "auth_failed"


class AuthRejected(Exception):
    """The coordinator answered auth_failed."""


class HandshakeError(Exception):
    """The coordinator broke the handshake (binary/close frame, wrong frame, timeout)."""


class Phase(StrEnum):
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_ANSWER = "await_answer"  # auth_response sent: auth_ok or auth_failed next
    OPEN = "open"  # authenticated: job frames flow


class SigningIdentity(Protocol):
    """What the rules need of the identity (core/identity.py `Identity`)."""

    @property
    def public_key_b64(self) -> str: ...

    @property
    def provider_id(self) -> str | None: ...

    def sign_b64(self, message: bytes) -> str: ...


# ---- what the rules answer ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send this text frame."""

    text: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """`auth_ok` arrived: the session is open."""

    #: The provider id this session serves as (None: neither the coordinator nor the identity
    #: has one).
    provider_id: str | None
    #: The coordinator is a local sandbox (`"sandbox": true`).
    sandbox: bool
    #: Store this provider id in the identity file (None: nothing to store).
    save_provider_id: str | None
    #: Why the coordinator's provider id was not taken (one line for the log), or None.
    unusable_provider_id: str | None


@dataclass(frozen=True, slots=True)
class RunJob:
    job: protocol.Job


@dataclass(frozen=True, slots=True)
class CancelJob:
    job_id: str


@dataclass(frozen=True, slots=True)
class RejectJob:
    """Answer this job id with `job_error` (its frame could not be served)."""

    job_id: str
    code: protocol.ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """Nothing to do; `why` is for the log (a warning when `warn`, else debug)."""

    why: str
    warn: bool = False


Action = SendFrame | Authenticated | RunJob | CancelJob | RejectJob | Ignored


class SessionRules:
    """One connection's rules, from the first frame to the last. Feed each received frame to
    :meth:`receive` and do what it answers. Raises :class:`HandshakeError` or
    :class:`AuthRejected` when the handshake fails (the connection must then be closed)."""

    def __init__(self, identity: SigningIdentity, enrollment_code: str | None = None) -> None:
        self._identity = identity
        self._enrollment_code = enrollment_code
        self.phase = Phase.AWAIT_CHALLENGE
        #: Set by `auth_ok`.
        self.authenticated: Authenticated | None = None

    @property
    def open(self) -> bool:
        return self.phase is Phase.OPEN

    def receive(self, raw: str | bytes) -> Action:
        if self.phase is Phase.OPEN:
            return self._receive_open(raw)
        return self._receive_handshake(raw)

    # ---- handshake ---------------------------------------------------------------------

    def _receive_handshake(self, raw: str | bytes) -> Action:
        if isinstance(raw, bytes):
            raise HandshakeError("binary frame during the handshake")
        try:
            frame = protocol.parse_inbound(raw)
        except protocol.FrameError as exc:
            raise HandshakeError(str(exc)) from None
        if isinstance(frame, protocol.UnknownFrame):
            return Ignored(f"ignoring {frame.type} frame during the handshake")
        if self.phase is Phase.AWAIT_CHALLENGE and isinstance(frame, protocol.AuthChallenge):
            identity = self._identity
            code = self._enrollment_code if not identity.provider_id else None
            self.phase = Phase.AWAIT_ANSWER
            return SendFrame(
                protocol.auth_response(
                    identity.public_key_b64,
                    identity.sign_b64(frame.nonce),
                    PROTOCOL_VERSION,
                    code,
                )
            )
        if self.phase is Phase.AWAIT_ANSWER:
            if isinstance(frame, protocol.AuthFailed):
                raise AuthRejected(safe_remote_text(frame.reason))
            if isinstance(frame, protocol.AuthOk):
                self.phase = Phase.OPEN
                self.authenticated = _authenticated(
                    frame.provider_id, self._identity.provider_id, frame.sandbox
                )
                return self.authenticated
        raise HandshakeError(f"unexpected {type(frame).__name__} frame during the handshake")

    # ---- open session ------------------------------------------------------------------

    @staticmethod
    def _receive_open(raw: str | bytes) -> Action:
        try:
            frame = protocol.parse_inbound(raw)  # type: ignore[arg-type]
        except protocol.FrameError as exc:
            if exc.frame_type == "job" and exc.job_id is not None:
                return RejectJob(exc.job_id, protocol.ErrorCode.INVALID_REQUEST, str(exc))
            return Ignored(f"ignored a malformed frame: {exc}", warn=True)
        if isinstance(frame, protocol.Job):
            return RunJob(frame)
        if isinstance(frame, protocol.JobCancel):
            return CancelJob(frame.job_id)
        if isinstance(frame, protocol.UnknownFrame):
            return Ignored(f"ignored unknown frame type {frame.type!r}")
        return Ignored(f"ignored {type(frame).__name__} frame after the handshake")


def _authenticated(offered: str | None, stored: str | None, sandbox: bool) -> Authenticated:
    """Which provider id the session serves as, and whether to store it."""
    provider_id = offered or stored
    if not provider_id or provider_id == stored or sandbox:
        # a sandbox's provider ids are throw-away: never written into the shared identity
        return Authenticated(provider_id, sandbox, None, None)
    try:
        validate_provider_id(provider_id)
    except IdentityError as exc:  # the session goes on with the stored id
        return Authenticated(stored, sandbox, None, str(exc))
    return Authenticated(provider_id, sandbox, provider_id, None)


# ---- why a session ended ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Why a session ended, as the link shows it. Every ending is retried (with backoff)."""

    state: LinkState  # AUTH_FAILED or OFFLINE
    detail: str
    #: The coordinator's `auth_failed` reason (kept for the doctor), or None.
    auth_failure: str | None = None
    #: Not a network or protocol failure: a bug (logged with its traceback).
    unexpected: bool = False


#: The failures of the network and the WebSocket layer: described in one line, then retried.
NETWORK_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    InvalidHandshake,
    InvalidURI,
    ConnectionClosed,
)


def classify_disconnect(exc: BaseException | None) -> Disconnect:
    """Why the session ended: `exc` is what ended it (None: it closed normally)."""
    if exc is None:
        return Disconnect(LinkState.OFFLINE, "connection closed")
    if isinstance(exc, AuthRejected):
        return Disconnect(LinkState.AUTH_FAILED, f"authentication failed: {exc}", str(exc))
    if isinstance(exc, NETWORK_FAILURES):
        return Disconnect(LinkState.OFFLINE, describe_failure(exc))
    if isinstance(exc, HandshakeError):
        return Disconnect(LinkState.OFFLINE, f"handshake failed: {exc}")
    return Disconnect(LinkState.OFFLINE, f"unexpected error: {type(exc).__name__}", None, True)


def describe_failure(exc: BaseException) -> str:
    """One line in the words pairing and the backends use ("cannot resolve host name"), never
    a Python exception text like `gaierror: [Errno -2] ...`."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is not None:
            reason = f", {rcvd.reason}" if rcvd.reason else ""
            return f"closed by the coordinator (code {rcvd.code}{reason})"
        return "connection lost"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message}"
    if isinstance(exc, InvalidStatus):
        return f"coordinator answered HTTP {exc.response.status_code}"
    if isinstance(exc, OSError):
        from usepod_desktop.core.backends.openai_compat import connect_failure_text

        return connect_failure_text(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
