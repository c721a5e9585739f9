"""RFC 3339 timestamps as the reference agent writes them (chrono: up to nanoseconds).

Python's :meth:`datetime.fromisoformat` takes at most six fraction digits; chrono writes
nine (``2025-06-01T12:00:00.123456789Z``). :func:`parse_rfc3339` cuts the fraction to
microseconds (truncated, never rounded up into the next second), accepts ``Z`` / ``z`` or
a numeric offset, and treats a time without an offset as UTC. The identity file's
``created`` field and the pairing server's ``expires_at`` both go through it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["parse_rfc3339"]

#: A fraction of more than six digits: the first six are kept.
_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_rfc3339(value: str) -> datetime:
    """`value` as an aware datetime. Raises ValueError if it is not a timestamp."""
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00").replace("z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
