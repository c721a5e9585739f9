"""The coordinator session's rules without a socket (core/link_session.py): the handshake state
machine, the provider-id rule, the open session's frame handling and the reconnect classifier.
The I/O link driving them against a real coordinator is tested in tests/integration."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response

from usepod_desktop import PROTOCOL_VERSION
from usepod_desktop.core import protocol
from usepod_desktop.core.identity import Identity, from_seed
from usepod_desktop.core.link_session import (
    Authenticated,
    AuthRejected,
    CancelJob,
    Disconnect,
    HandshakeError,
    Ignored,
    LinkState,
    Phase,
    RejectJob,
    RunJob,
    SendFrame,
    SessionRules,
    classify_disconnect,
)

NONCE = b"\x00nonce-bytes\xff" * 2
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def identity(provider_id: str | None = None) -> Identity:
    ident = from_seed(b"\x07" * 32, Path("unused.key"))  # nothing is written
    ident.provider_id = provider_id
    return ident


def opened(rules: SessionRules, provider_id: str | None = "prov_1", **ok: bool) -> Authenticated:
    rules.receive(protocol.auth_challenge(NONCE))
    action = rules.receive(protocol.auth_ok(provider_id, **ok))
    assert isinstance(action, Authenticated)
    return action


# ---- handshake --------------------------------------------------------------------------


def test_the_challenge_is_answered_with_a_signed_response() -> None:
    ident = identity()
    rules = SessionRules(ident, enrollment_code="CODE-1234")
    assert rules.phase is Phase.AWAIT_CHALLENGE and not rules.open
    action = rules.receive(protocol.auth_challenge(NONCE))
    assert isinstance(action, SendFrame) and rules.phase is Phase.AWAIT_ANSWER
    response = protocol.parse_outbound(action.text)
    assert isinstance(response, protocol.AuthResponse)
    assert response.pubkey == ident.public_key
    Ed25519PublicKey.from_public_bytes(ident.public_key).verify(response.signature, NONCE)
    assert response.agent_version == PROTOCOL_VERSION
    # unpaired: the enrollment code goes along
    assert response.enrollment_code == "CODE-1234"


def test_a_paired_identity_never_sends_the_enrollment_code() -> None:
    rules = SessionRules(identity("prov_known"), enrollment_code="CODE-1234")
    action = rules.receive(protocol.auth_challenge(NONCE))
    assert isinstance(action, SendFrame)
    assert "enrollment_code" not in json.loads(action.text)


def test_auth_ok_opens_the_session() -> None:
    rules = SessionRules(identity())
    auth = opened(rules, "prov_new")
    assert rules.open and rules.authenticated == auth
    assert auth == Authenticated("prov_new", False, "prov_new", None)


def test_unknown_frames_are_skipped_during_the_handshake() -> None:
    rules = SessionRules(identity())
    unknown = json.dumps({"type": "server_notice", "text": "hello"})
    assert isinstance(rules.receive(unknown), Ignored)
    assert rules.phase is Phase.AWAIT_CHALLENGE
    rules.receive(protocol.auth_challenge(NONCE))
    assert isinstance(rules.receive(unknown), Ignored)
    assert rules.phase is Phase.AWAIT_ANSWER


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([b"\x00binary"], "binary frame during the handshake"),
        (["{not json"], ""),
        ([protocol.auth_ok("prov_1")], "unexpected AuthOk frame during the handshake"),
        (
            [protocol.auth_challenge(NONCE), protocol.auth_challenge(NONCE)],
            "unexpected AuthChallenge frame during the handshake",
        ),
        (
            [protocol.job(str(uuid.uuid4()), "m", CHAT)],
            "unexpected Job frame during the handshake",
        ),
    ],
)
def test_a_broken_handshake_ends_the_session(frames: list[str | bytes], message: str) -> None:
    rules = SessionRules(identity())
    *before, last = frames
    for frame in before:
        rules.receive(frame)
    with pytest.raises(HandshakeError) as caught:
        rules.receive(last)
    assert message in str(caught.value)
    assert not rules.open


def test_auth_failed_is_a_rejection_with_the_reason_made_safe() -> None:
    rules = SessionRules(identity())
    rules.receive(protocol.auth_challenge(NONCE))
    with pytest.raises(AuthRejected) as caught:
        rules.receive(protocol.auth_failed("unknown key\x1b[31m\nplease pair"))
    assert "\x1b" not in str(caught.value) and "\n" not in str(caught.value)
    assert "unknown key" in str(caught.value) and not rules.open


# ---- which provider id is kept ----------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "stored", "sandbox", "expected"),
    [
        ("prov_new", None, False, Authenticated("prov_new", False, "prov_new", None)),
        ("prov_new", "prov_old", False, Authenticated("prov_new", False, "prov_new", None)),
        ("prov_same", "prov_same", False, Authenticated("prov_same", False, None, None)),
        (None, "prov_old", False, Authenticated("prov_old", False, None, None)),
        (None, None, False, Authenticated(None, False, None, None)),
        # a sandbox's ids are used for the session, never stored
        ("prov_sbx", "prov_real", True, Authenticated("prov_sbx", True, None, None)),
        ("prov_sbx", None, True, Authenticated("prov_sbx", True, None, None)),
    ],
)
def test_the_provider_id_rule(
    offered: str | None, stored: str | None, sandbox: bool, expected: Authenticated
) -> None:
    rules = SessionRules(identity(stored))
    assert opened(rules, offered, sandbox=sandbox) == expected


def test_an_unusable_provider_id_is_not_stored_and_the_session_goes_on() -> None:
    rules = SessionRules(identity("prov_old"))
    auth = opened(rules, "../../etc/passwd\n")
    assert rules.open
    assert (auth.provider_id, auth.save_provider_id) == ("prov_old", None)
    assert auth.unusable_provider_id is not None and "\n" not in auth.unusable_provider_id


# ---- the open session -------------------------------------------------------------------


def test_job_frames_run_and_cancels_cancel() -> None:
    rules = SessionRules(identity())
    opened(rules)
    job_id = str(uuid.uuid4())
    action = rules.receive(protocol.job(job_id, "model-a", CHAT))
    assert isinstance(action, RunJob)
    assert (action.job.job_id, action.job.model_id) == (job_id, "model-a")
    assert rules.receive(protocol.job_cancel(job_id)) == CancelJob(job_id)


def test_an_unservable_job_frame_with_an_id_is_refused_not_fatal() -> None:
    rules = SessionRules(identity())
    opened(rules)
    job_id = str(uuid.uuid4())
    bad = json.dumps({"type": "job", "job_id": job_id, "model_id": 5, "request": CHAT})
    action = rules.receive(bad)
    assert isinstance(action, RejectJob)
    assert (action.job_id, action.code) == (job_id, protocol.ErrorCode.INVALID_REQUEST)
    assert action.message
    assert rules.open


@pytest.mark.parametrize(
    ("raw", "warn"),
    [
        ("{not json", True),
        (json.dumps({"type": "job", "model_id": "m"}), True),  # no job id to answer
        (json.dumps({"type": "brand_new_frame"}), False),
        (protocol.auth_challenge(NONCE), False),  # handshake frames after the handshake
        (protocol.auth_ok("prov_2"), False),
    ],
)
def test_other_frames_are_ignored_and_never_end_the_session(raw: str, warn: bool) -> None:
    rules = SessionRules(identity())
    auth = opened(rules)
    action = rules.receive(raw)
    assert isinstance(action, Ignored) and action.warn is warn and action.why
    assert rules.open and rules.authenticated == auth  # a second auth_ok changes nothing


# ---- why a session ended ----------------------------------------------------------------


def _status(code: int) -> InvalidStatus:
    return InvalidStatus(Response(code, "Forbidden", Headers()))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (None, Disconnect(LinkState.OFFLINE, "connection closed")),
        (
            AuthRejected("unknown key"),
            Disconnect(LinkState.AUTH_FAILED, "authentication failed: unknown key", "unknown key"),
        ),
        (
            ConnectionRefusedError(111, "refused"),
            Disconnect(LinkState.OFFLINE, "connection refused"),
        ),
        (TimeoutError(), Disconnect(LinkState.OFFLINE, "timed out")),
        (
            ConnectionClosed(Close(1012, "restart"), None),
            Disconnect(LinkState.OFFLINE, "closed by the coordinator (code 1012, restart)"),
        ),
        (ConnectionClosed(None, None), Disconnect(LinkState.OFFLINE, "connection lost")),
        (_status(403), Disconnect(LinkState.OFFLINE, "coordinator answered HTTP 403")),
        (
            HandshakeError("binary frame during the handshake"),
            Disconnect(LinkState.OFFLINE, "handshake failed: binary frame during the handshake"),
        ),
        (
            KeyError("bug"),
            Disconnect(LinkState.OFFLINE, "unexpected error: KeyError", None, unexpected=True),
        ),
    ],
)
def test_the_reconnect_classifier(exc: BaseException | None, expected: Disconnect) -> None:
    assert classify_disconnect(exc) == expected
