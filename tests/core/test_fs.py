"""core/fs.py: the one atomic-write helper. Windows' transient rename refusals (an antivirus or
indexer holding the file) are injected at `os.replace`, the single place they occur; the
owner-only ACL runs a recording fake `icacls` placed first on PATH (a real process)."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from usepod_desktop.core import fs


class Busy:
    """os.replace failing `times` times the way Windows does while another process holds the
    target (PermissionError, winerror 32), then the real rename."""

    def __init__(self, times: int, winerror: int | None = 32) -> None:
        self.times = times
        self.winerror = winerror
        self.calls = 0
        self.real = os.replace

    def __call__(self, src: object, dst: object) -> None:
        self.calls += 1
        if self.calls <= self.times:
            exc = PermissionError(13, "The process cannot access the file")
            exc.winerror = self.winerror  # type: ignore[attr-defined]
            raise exc
        self.real(src, dst)  # type: ignore[arg-type]


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_windows_rename_is_retried_while_the_file_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "agent.toml"
    target.write_text("old")
    busy = Busy(times=3)
    monkeypatch.setattr(fs.os, "replace", busy)
    pauses: list[float] = []
    monkeypatch.setattr(fs.time, "sleep", pauses.append)
    fs.atomic_write_text(target, "new", platform="win32")
    assert target.read_text() == "new"
    assert busy.calls == 4
    assert pauses == list(fs.REPLACE_BACKOFF[:3])
    assert _leftovers(tmp_path) == []


def test_a_file_busy_for_good_is_one_clear_error_and_the_old_file_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "identity.key"
    target.write_text("old")
    monkeypatch.setattr(fs.os, "replace", Busy(times=1000))
    pauses: list[float] = []
    monkeypatch.setattr(fs.time, "sleep", pauses.append)
    with pytest.raises(fs.FileBusyError) as info:
        fs.atomic_write_text(target, "new", platform="win32")
    assert str(info.value).startswith(f"cannot save {target}: another program keeps it open")
    assert "\n" not in str(info.value)
    assert pauses == list(fs.REPLACE_BACKOFF) and sum(pauses) < 2
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_a_read_only_file_is_reported_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "agent.toml"
    target.write_text("old")
    target.chmod(0o444)  # Windows: the read-only attribute (os.chmod maps S_IWRITE to it)
    busy = Busy(times=1000, winerror=5)
    monkeypatch.setattr(fs.os, "replace", busy)
    monkeypatch.setattr(fs.time, "sleep", lambda _s: pytest.fail("retried a read-only file"))
    with pytest.raises(fs.ReadOnlyFileError) as info:
        fs.atomic_write_text(target, "new", platform="win32")
    assert busy.calls == 1
    assert str(info.value) == (
        f"cannot save {target}: the file is read-only; clear its read-only flag (Properties, "
        f'or `attrib -r "{target}"`) and try again'
    )
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_posix_permission_errors_are_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "agent.toml"
    busy = Busy(times=1, winerror=None)
    monkeypatch.setattr(fs.os, "replace", busy)
    with pytest.raises(PermissionError):
        fs.atomic_write_text(target, "new", platform="linux")
    assert busy.calls == 1


def test_config_and_identity_saves_go_through_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference_toml: str
) -> None:
    from usepod_desktop.core import config, identity

    busy = Busy(times=2)
    monkeypatch.setattr(fs.os, "replace", busy)
    monkeypatch.setattr(fs.time, "sleep", lambda _s: None)
    monkeypatch.setattr(fs.sys, "platform", "win32")  # the Windows branches of fs, identity
    acl: list[Path] = []
    monkeypatch.setattr(fs, "restrict_to_owner", lambda path, **k: acl.append(Path(path)))
    monkeypatch.setattr(identity, "restrict_to_owner", lambda path, **k: acl.append(Path(path)))
    path = tmp_path / "agent.toml"
    path.write_text(reference_toml)
    config.save_config(config.load_config(path), path)
    assert busy.calls == 3
    assert acl == []  # agent.toml is not a secret
    key = identity.create(tmp_path / "identity.key")
    assert acl == [key.path]  # the new key gets the owner-only ACL
    busy.calls = 0
    assert key.set_provider_id("prov-1")
    assert busy.calls == 3 and "provider_id: prov-1" in key.path.read_text()
    assert len(acl) == 2 and acl[1].name.endswith(".tmp")  # set before the rename


def test_owner_only_on_posix_is_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "identity.key"
    fs.atomic_write_text(target, "secret", owner_only=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


@pytest.fixture
def fake_icacls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "icacls.jsonl"
    script = bin_dir / "icacls"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(record)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "sys.exit(int(os.environ.get('FAKE_ICACLS_EXIT', '0')))\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("USERNAME", "alice")
    monkeypatch.setenv("USERDOMAIN", "RIG01")
    return record


def test_windows_owner_only_acl_runs_icacls(
    fake_icacls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    key = tmp_path / "identity.key"
    key.write_text("secret")
    assert fs.restrict_to_owner(key, platform="win32") is True
    calls = [json.loads(line) for line in fake_icacls.read_text().splitlines()]
    assert calls == [[str(key), "/inheritance:r", "/grant:r", "RIG01\\alice:(F)"]]

    monkeypatch.setenv("FAKE_ICACLS_EXIT", "1332")  # "No mapping between account names..."
    with caplog.at_level(logging.WARNING, logger="usepod_desktop.core.fs"):
        assert fs.restrict_to_owner(key, platform="win32") is False
    assert "protected only by the permissions of its folder" in caplog.text


def test_windows_owner_only_write_sets_the_acl_before_the_rename(
    fake_icacls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        # the temp file already carries the ACL when it takes the key's place
        seen.extend(json.loads(line) for line in fake_icacls.read_text().splitlines())
        assert seen and seen[-1][0] == str(src)
        real_replace(src, dst)

    monkeypatch.setattr(fs.os, "replace", replace)
    fs.atomic_write_text(tmp_path / "identity.key", "secret", owner_only=True, platform="win32")
    assert (tmp_path / "identity.key").read_text() == "secret"
    assert seen[-1][1:] == ["/inheritance:r", "/grant:r", "RIG01\\alice:(F)"]


def test_create_exclusive_never_replaces_a_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "key"
    fs.create_exclusive(target, "first\n")
    assert target.read_text() == "first\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        fs.create_exclusive(target, "second\n")
    assert target.read_text() == "first\n"


def test_create_exclusive_leaves_no_half_written_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while the key is written: the error surfaces and no truncated file is left
    behind (it would be read as a broken identity later, and block creating a good one)."""
    target = tmp_path / "identity.key"

    def full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fs.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        fs.create_exclusive(target, "secret: x\n")
    assert not target.exists()
    monkeypatch.undo()
    fs.create_exclusive(target, "secret: y\n")  # the next attempt creates it
    assert target.read_text() == "secret: y\n"
