"""Identity key file: exact format, 0600, test vector, reference-written files, provider_id."""

from __future__ import annotations

import base64
import logging
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from usepod_desktop.core import identity
from usepod_desktop.core.errors import IdentityError

# RFC 8032 section 7.1, test 1.
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9"
    "b46bd25bf5f0595bbe24655141438e7a100b"
)
B64_SEED = base64.b64encode(SEED).decode()
B64_PUBLIC = base64.b64encode(PUBLIC).decode()

# As the Rust agent writes it: chrono's to_rfc3339 keeps nanoseconds.
REFERENCE_FILE = f"""-----BEGIN USEPOD AGENT KEY-----
version: 1
created: 2026-05-02T10:11:12.123456789+00:00
secret: {B64_SEED}
public: {B64_PUBLIC}
-----END USEPOD AGENT KEY-----
"""


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_test_vector_public_key_and_signature(tmp_path: Path) -> None:
    ident = identity.from_seed(SEED, tmp_path / "k")
    assert ident.public_key == PUBLIC
    assert ident.sign(b"") == SIG_EMPTY
    assert ident.sign_b64(b"") == base64.b64encode(SIG_EMPTY).decode()


def test_reference_written_file_loads_with_same_public_key(tmp_path: Path) -> None:
    ident = identity.load(write(tmp_path / "identity.key", REFERENCE_FILE))
    assert ident.public_key_b64 == B64_PUBLIC
    assert ident.provider_id is None
    assert ident.created == datetime(2026, 5, 2, 10, 11, 12, 123456, tzinfo=UTC)


def test_generated_file_format_is_exact_and_0600(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "identity.key"
    ident = identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == "-----BEGIN USEPOD AGENT KEY-----"
    assert lines[1] == "version: 1"
    assert lines[2].startswith("created: ")
    datetime.fromisoformat(lines[2].removeprefix("created: "))
    assert lines[3].startswith("secret: ") and len(base64.b64decode(lines[3][8:])) == 32
    assert lines[4] == f"public: {ident.public_key_b64}"
    assert lines[5] == "-----END USEPOD AGENT KEY-----"
    assert len(lines) == 6
    # and loading it again gives the same key: no regeneration
    assert identity.load_or_create(path).public_key == ident.public_key


def test_provider_id_is_persisted_in_place(tmp_path: Path) -> None:
    path = write(tmp_path / "identity.key", REFERENCE_FILE)
    ident = identity.load(path)
    assert ident.set_provider_id("prov_123") is True
    assert ident.set_provider_id("prov_123") is False  # unchanged: no rewrite
    text = path.read_text()
    assert "provider_id: prov_123\n-----END USEPOD AGENT KEY-----" in text
    assert f"secret: {B64_SEED}" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = identity.load(path)
    assert again.provider_id == "prov_123" and again.public_key == PUBLIC


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (
            lambda t: t.replace(B64_PUBLIC, base64.b64encode(b"\x01" * 32).decode()),
            "does not match",
        ),
        (lambda t: t.replace("-----BEGIN USEPOD AGENT KEY-----\n", ""), "missing header"),
        (lambda t: t.replace("-----END USEPOD AGENT KEY-----\n", ""), "missing footer"),
        (lambda t: t.replace("version: 1", "version: 2"), "unsupported version"),
        (lambda t: t.replace(f"secret: {B64_SEED}\n", ""), "missing field 'secret'"),
        (lambda t: t.replace(f"public: {B64_PUBLIC}\n", ""), "missing field 'public'"),
        (lambda t: t.replace(B64_SEED, "!!!notbase64"), "not valid base64"),
        (lambda t: t.replace(B64_SEED, base64.b64encode(b"short").decode()), "32 bytes"),
        (lambda t: t.replace("created: 2026", "created: yesterday"), "RFC 3339"),
    ],
)
def test_malformed_files_are_refused(tmp_path: Path, mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    path = write(tmp_path / "identity.key", mutate(REFERENCE_FILE))
    with pytest.raises(IdentityError, match=needle) as info:
        identity.load(path)
    assert B64_SEED not in str(info.value)


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    text = REFERENCE_FILE.replace("version: 1\n", "version: 1\ncomment: hello\n")
    assert identity.load(write(tmp_path / "k", text)).public_key == PUBLIC


def test_warns_when_group_or_other_can_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "k", REFERENCE_FILE, mode=0o644)
    with caplog.at_level(logging.WARNING):
        identity.load(path)
    assert "accessible to other users" in caplog.text
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        identity.load(path)
    assert "accessible" not in caplog.text


def test_repr_never_shows_the_secret(tmp_path: Path) -> None:
    ident = identity.from_seed(SEED, tmp_path / "k")
    assert B64_SEED not in repr(ident) and SEED.hex() not in repr(ident)


def test_a_new_key_in_memory_touches_no_disk_until_saved_exclusively(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "identity.key"
    fresh = identity.new_in_memory(path)
    assert not path.parent.exists()  # nothing written: pairing may still be cancelled
    identity.save_exclusive(fresh)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert identity.load(path).public_key == fresh.public_key
    # A second key for the same path never replaces the first one.
    other = identity.new_in_memory(path)
    with pytest.raises(FileExistsError):
        identity.save_exclusive(other)
    assert identity.load(path).public_key == fresh.public_key
