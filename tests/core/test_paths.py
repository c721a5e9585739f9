"""Where things live: the home folder choice per OS."""

from __future__ import annotations

from pathlib import Path

import pytest

from usepod_desktop.core import paths


def test_windows_home_is_userprofile_even_with_home_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # MSYS / Cygwin / a corporate login script set HOME to another folder (maybe a share)
    monkeypatch.setenv("HOME", str(tmp_path / "msys-home"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "profile"))
    assert paths.home("win32") == tmp_path / "profile"
    assert paths.home("linux") == tmp_path / "msys-home"
    assert paths.home("darwin") == tmp_path / "msys-home"
    monkeypatch.delenv("USERPROFILE")
    assert paths.home("win32") == tmp_path / "msys-home"


def test_identity_default_follows_the_windows_profile(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "msys-home"))
    monkeypatch.setenv("USERPROFILE", str(tmp_path / "profile"))
    monkeypatch.setattr(paths.sys, "platform", "win32")
    assert paths.default_identity_path() == tmp_path / "profile" / ".usepod-agent" / "identity.key"
    assert paths.expand_user("~/k.key") == tmp_path / "profile" / "k.key"
