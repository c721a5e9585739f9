"""The agent's Ed25519 identity key file, byte-compatible with the reference agent.

Format (docs/files.md, "Identity file")::

    -----BEGIN USEPOD AGENT KEY-----
    version: 1
    created: <RFC 3339>
    secret: <base64 of the 32-byte seed>
    public: <base64 of the 32-byte public key>
    provider_id: <only once the coordinator assigned one>
    -----END USEPOD AGENT KEY-----

The file is readable by its owner only: mode 0600 on Linux / macOS; on Windows, where mode
bits only toggle the read-only flag, an ACL granting the current user alone (`icacls`, see
`core/fs.py`; if that fails a warning is logged and only the profile folder's permissions
protect it). It is only ever rewritten to record a new provider_id.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from usepod_desktop.core.errors import IdentityError
from usepod_desktop.core.fs import atomic_write_text, create_exclusive, restrict_to_owner
from usepod_desktop.core.text import safe_remote_text
from usepod_desktop.core.timeparse import parse_rfc3339

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
HEADER = "-----BEGIN USEPOD AGENT KEY-----"
FOOTER = "-----END USEPOD AGENT KEY-----"
NEWLINE = "\n"
#: Longest provider id stored (the coordinator's are UUIDs: 36 characters).
MAX_PROVIDER_ID_CHARS = 128


def validate_provider_id(value: object) -> str:
    """`value` if it is a usable provider id, else :class:`IdentityError` (one line, the
    value escaped and shortened).

    A provider id comes from the network (`auth_ok`, the pairing `active` answer) and is
    written into the identity file, one `key: value` per line. It must therefore be an
    opaque single-line token: 1 to 128 printable characters, no whitespace, no control or
    invisible formatting character and nothing ``str.splitlines()`` splits on (U+2028,
    U+0085, ...). Anything else could add `secret:` / `public:` lines to the file."""
    if not isinstance(value, str):
        raise IdentityError(f"provider_id must be a string, got {type(value).__name__}")
    if not value:
        raise IdentityError("provider_id is empty")
    if len(value) > MAX_PROVIDER_ID_CHARS:
        raise IdentityError(
            f"provider_id is {len(value)} characters long (at most {MAX_PROVIDER_ID_CHARS}): "
            f"{safe_remote_text(value, 60)}"
        )
    if not value.isprintable() or any(c.isspace() for c in value):
        raise IdentityError(
            "provider_id must be one printable token without spaces or line breaks, got "
            f"'{safe_remote_text(value, 60)}'"
        )
    if len(value.splitlines()) != 1 or value.strip() != value:
        raise IdentityError(f"provider_id has a line break: '{safe_remote_text(value, 60)}'")
    return value


@dataclass(slots=True)
class Identity:
    """A loaded identity. The secret seed never leaves this object except to the file."""

    path: Path
    created: datetime
    provider_id: str | None
    _private: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def sign_b64(self, message: bytes) -> str:
        return base64.b64encode(self.sign(message)).decode("ascii")

    def set_provider_id(self, provider_id: str) -> bool:
        """Record the coordinator-assigned id in the file. Returns True when the file changed.

        Raises :class:`IdentityError` (nothing written) for an id that is not a single-line
        token (:func:`validate_provider_id`)."""
        validate_provider_id(provider_id)
        if provider_id == self.provider_id:
            return False
        self.provider_id = provider_id
        atomic_write_text(self.path, self._with_provider_id(provider_id), owner_only=True)
        log.info("provider id %s saved to %s", safe_remote_text(provider_id), self.path)
        return True

    def _with_provider_id(self, provider_id: str) -> str:
        """The file as it is on disk with only its provider_id line set (added before the
        footer when absent): every other byte is kept, including keys this version does not
        know and the reference agent's nanosecond timestamp, which serialize() would rewrite.
        Falls back to serialize() when the file is unreadable or no longer holds this key."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        except (OSError, UnicodeDecodeError):
            return self.serialize()
        bare = [line.strip() for line in lines]
        if HEADER not in bare or FOOTER not in bare:
            return self.serialize()
        start, end = bare.index(HEADER), bare.index(FOOTER)
        if end <= start or f"public: {self.public_key_b64}" not in bare[start:end]:
            return self.serialize()
        body: list[str] = []
        placed = False
        for line, text in zip(lines[start + 1 : end], bare[start + 1 : end], strict=True):
            if text.partition(":")[0].strip() != "provider_id":
                body.append(line)
            elif not placed:  # replaced where it stands (a duplicate is dropped)
                body.append(f"provider_id: {provider_id}{_eol(line)}")
                placed = True
        if not placed:
            body.append(f"provider_id: {provider_id}{_eol(lines[end - 1]) or NEWLINE}")
        return "".join([*lines[: start + 1], *body, *lines[end:]])

    def serialize(self) -> str:
        seed = self._private.private_bytes_raw()
        lines = [
            HEADER,
            f"version: {FORMAT_VERSION}",
            f"created: {self.created.isoformat()}",
            f"secret: {base64.b64encode(seed).decode('ascii')}",
            f"public: {self.public_key_b64}",
        ]
        if self.provider_id:
            lines.append(f"provider_id: {self.provider_id}")
        lines.append(FOOTER)
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:  # never show the secret
        return f"Identity(path={self.path!s}, public={self.public_key_b64}, id={self.provider_id})"


def _eol(line: str) -> str:
    """The line ending of `line` ("\\n", "\\r\\n" or "" for a last line without one)."""
    return line[len(line.rstrip("\r\n")) :]


def from_seed(seed: bytes, path: Path, *, created: datetime | None = None) -> Identity:
    """An identity from a known 32-byte seed (tests, import)."""
    if len(seed) != 32:
        raise IdentityError("identity secret must be 32 bytes")
    return Identity(
        path=path,
        created=created or datetime.now(UTC),
        provider_id=None,
        _private=Ed25519PrivateKey.from_private_bytes(seed),
    )


def load_or_create(path: Path) -> Identity:
    """Load the identity file, generating (owner-only) and saving a new key on first use."""
    if path.exists():
        return load(path)
    return create(path)


def new_in_memory(path: Path) -> Identity:
    """A new key for `path`, not written anywhere (pairing keeps it in memory until the
    coordinator approves it; :func:`save_exclusive` writes it then)."""
    return Identity(
        path=path,
        created=datetime.now(UTC),
        provider_id=None,
        _private=Ed25519PrivateKey.generate(),
    )


def save_exclusive(identity: Identity) -> None:
    """Write `identity` as a new owner-only key file at its path (parent directories created).

    Never replaces a file: raises FileExistsError when one exists, even one another process
    created a moment ago (``O_EXCL``), and OSError when it cannot be written."""
    create_exclusive(identity.path, identity.serialize(), mode=0o600)
    protect_new_key(identity.path)


def create(path: Path) -> Identity:
    """A new key saved at `path`; the key already there when another process created one a
    moment ago (never clobbered)."""
    identity = new_in_memory(path)
    try:
        save_exclusive(identity)
    except FileExistsError:
        return load(path)
    log.info("generated a new agent identity at %s", path)
    return identity


def protect_new_key(path: Path) -> None:
    """After creating a key file with mode 0600: on Windows, where that mode only means "not
    read-only", give it an ACL for the current user alone (a warning is logged if it fails)."""
    if sys.platform == "win32":
        restrict_to_owner(path)


def load(path: Path) -> Identity:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise IdentityError(f"cannot read identity file {path}: {exc.strerror}") from None
    fields = _parse(raw, path)
    seed = _b64(fields["secret"], "secret", path)
    public = _b64(fields["public"], "public", path)
    if len(seed) != 32:
        raise IdentityError(f"identity file {path}: secret must decode to 32 bytes")
    private = Ed25519PrivateKey.from_private_bytes(seed)
    identity = Identity(
        path=path,
        created=_parse_time(fields["created"], path),
        provider_id=fields.get("provider_id") or None,
        _private=private,
    )
    if identity.public_key != public:
        raise IdentityError(
            f"identity file {path}: public key does not match the secret key; refusing to load"
        )
    _warn_if_readable_by_others(path)
    return identity


def _parse(raw: str, path: Path) -> dict[str, str]:
    lines = [line.strip() for line in raw.splitlines()]
    if HEADER not in lines:
        raise IdentityError(f"identity file {path}: missing header {HEADER}")
    if FOOTER not in lines:
        raise IdentityError(f"identity file {path}: missing footer {FOOTER}")
    start, end = lines.index(HEADER), lines.index(FOOTER)
    if end <= start:
        raise IdentityError(f"identity file {path}: footer before header")
    fields: dict[str, str] = {}
    for line in lines[start + 1 : end]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise IdentityError(f"identity file {path}: malformed line (expected 'key: value')")
        name = key.strip()
        if name in fields:
            # The last one winning would let an injected line replace the key.
            raise IdentityError(
                f"identity file {path}: duplicate field '{safe_remote_text(name, 40)}'; "
                "refusing to load"
            )
        fields[name] = value.strip()
    for required in ("version", "created", "secret", "public"):
        if required not in fields:
            raise IdentityError(f"identity file {path}: missing field '{required}'")
    if fields["version"] != str(FORMAT_VERSION):
        raise IdentityError(
            f"identity file {path}: unsupported version {fields['version']!r} (expected 1)"
        )
    return fields


def _b64(value: str, name: str, path: Path) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise IdentityError(f"identity file {path}: field '{name}' is not valid base64") from None


def _parse_time(value: str, path: Path) -> datetime:
    """RFC 3339 as chrono writes it (up to nanoseconds, `Z` or an offset)."""
    try:
        return parse_rfc3339(value)
    except ValueError:
        raise IdentityError(f"identity file {path}: field 'created' is not RFC 3339") from None


def _warn_if_readable_by_others(path: Path) -> None:
    if os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning(
            "identity file %s is accessible to other users (mode %o); run: chmod 600 %s",
            path,
            mode,
            path,
        )
