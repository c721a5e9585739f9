"""`usepod-desktop upgrade` and the update check against a release feed on loopback."""

from __future__ import annotations

import json
import random

import pytest

from tests.doctor.feeds import closed_port_url, feed_server
from usepod_desktop import __version__
from usepod_desktop.cli import main
from usepod_desktop.core import updates


def pypi(version: str, **info: object) -> bytes:
    return json.dumps(
        {"info": {"version": version, "project_url": "https://pypi.org/project/x/", **info}}
    ).encode()


def test_update_available_prints_both_versions_and_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with feed_server() as feed:
        feed.routes["/pypi/usepod-desktop/json"] = (200, pypi("99.0.0"))
        monkeypatch.setenv("USEPOD_UPDATE_FEED_URL", feed.url("/pypi/usepod-desktop/json"))
        assert main(["upgrade"]) == 0
        out = capsys.readouterr().out
        assert f"current: usepod-desktop {__version__}" in out
        assert "newest:  usepod-desktop 99.0.0" in out
        assert "pip install --upgrade usepod-desktop==99.0.0" in out
        # --check only reports
        assert main(["upgrade", "--check"]) == 0
        out = capsys.readouterr().out
        assert "An update is available." in out and "pip install" not in out
        assert feed.hits["/pypi/usepod-desktop/json"] == 2
    cached = updates.load_cached()
    assert cached is not None and cached.newest == "99.0.0" and cached.available


def test_up_to_date(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with feed_server() as feed:
        feed.routes["/f"] = (200, pypi(__version__))
        monkeypatch.setenv("USEPOD_UPDATE_FEED_URL", feed.url("/f"))
        assert main(["upgrade", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["newest"] == __version__ and data["available"] is False


def test_offline_is_one_line_on_stderr_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("USEPOD_UPDATE_FEED_URL", closed_port_url("/f"))
    assert main(["upgrade"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the release feed at 127.0.0.1" in lines[0]
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, b"oops", "HTTP 500"),
        (200, b"<html>", "did not answer JSON"),
        (200, b'{"info": []}', "no `info` object"),
        (200, b'{"info": {"version": 3}}', "`info.version` is missing"),
        (200, b'{"info": {"version": "not a version!"}}', "`info.version` is not a version"),
    ],
)
def test_bad_feed_answers_are_named(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    status: int,
    body: bytes,
    expected: str,
) -> None:
    with feed_server() as feed:
        feed.routes["/f"] = (status, body)
        monkeypatch.setenv("USEPOD_UPDATE_FEED_URL", feed.url("/f"))
        assert main(["upgrade", "--check"]) == 1
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_oversized_feed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(updates, "MAX_FEED_BYTES", 1000)
    with feed_server() as feed:
        feed.routes["/f"] = (200, pypi("9.9.9", description="x" * 5000))
        with pytest.raises(updates.UpdateCheckError, match="larger than 1000 bytes"):
            updates.check_for_update(url=feed.url("/f"))


def test_untrusted_download_url_is_not_used() -> None:
    info = updates.parse_feed(pypi("2.0", release_url="javascript:alert(1)", project_url=""))
    assert info.download_url == updates.DOWNLOAD_PAGE


def test_periodic_check_is_at_most_daily_and_jittered() -> None:
    now = 1_000_000.0
    recent = updates.UpdateInfo(__version__, "1.0", updates.DOWNLOAD_PAGE, now - 3600)
    delays = {updates.next_check_delay(recent, now=now, rng=random.Random(i)) for i in range(20)}
    assert all(23 * 3600 - 1 <= d <= 23 * 3600 + updates.CHECK_JITTER_S for d in delays)
    assert len(delays) > 1  # jittered
    stale = updates.UpdateInfo(__version__, "1.0", updates.DOWNLOAD_PAGE, now - 2 * 86400)
    assert 60 <= updates.next_check_delay(stale, now=now) <= 660
    assert 60 <= updates.next_check_delay(None, now=now) <= 660
