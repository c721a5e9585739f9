"""core/timeparse.py: the one RFC 3339 parser (identity file, pairing server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from usepod_desktop.core.timeparse import parse_rfc3339


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # chrono's to_rfc3339() of a Utc time: nine fraction digits, offset +00:00
        ("2025-06-01T12:00:00.123456789+00:00", datetime(2025, 6, 1, 12, 0, 0, 123456, UTC)),
        # nanoseconds are truncated, never rounded into the next second
        ("2025-06-01T12:00:00.999999999Z", datetime(2025, 6, 1, 12, 0, 0, 999999, UTC)),
        ("2025-06-01T12:00:00Z", datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)),
        ("2025-06-01t12:00:00.5z", datetime(2025, 6, 1, 12, 0, 0, 500000, UTC)),
        (" 2025-06-01T12:00:00.1234567Z ", datetime(2025, 6, 1, 12, 0, 0, 123456, UTC)),
        (
            "2025-06-01T14:00:00.000000001+02:00",
            datetime(2025, 6, 1, 14, 0, 0, 0, timezone(timedelta(hours=2))),
        ),
        # no offset: taken as UTC (both former parsers did so)
        ("2025-06-01T12:00:00", datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)),
    ],
)
def test_parses_what_the_reference_writes(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["", "yesterday", "2025-13-01T00:00:00Z", "12:00", "2025-06-01T"])
def test_rejects_what_is_not_a_timestamp(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_identity_and_pairing_share_it() -> None:
    from usepod_desktop.core import identity
    from usepod_desktop.core.pairing import wire

    text = "2025-06-01T12:00:00.123456789Z"
    assert identity._parse_time(text, Path("x")) == wire._parse_time(text) == parse_rfc3339(text)
    assert wire._parse_time("not a time") is None
    assert wire._parse_time(42) is None
