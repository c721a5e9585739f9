"""Reconnect backoff (docs/protocol.md)."""

from __future__ import annotations

import random

import pytest

from usepod_desktop.core.backoff import Backoff

SCHEDULE = [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_schedule_within_jitter_bounds() -> None:
    backoff = Backoff(rng=random.Random(1234))
    for base in SCHEDULE:
        assert backoff.current == base
        delay = backoff.next_delay()
        assert base * 0.8 <= delay < base * 1.2
    assert backoff.current == 60


def test_without_jitter_exact_doubling_and_cap() -> None:
    backoff = Backoff(jitter=(1.0, 1.0))
    assert [backoff.next_delay() for _ in SCHEDULE] == SCHEDULE


def test_jitter_spans_the_range() -> None:
    backoff = Backoff(rng=random.Random(7))
    delays = []
    for _ in range(500):
        backoff.reset()
        delays.append(backoff.next_delay())
    assert all(0.8 <= d < 1.2 for d in delays)
    assert min(delays) < 0.82 and max(delays) > 1.18


def test_seeded_rng_is_deterministic() -> None:
    a = Backoff(rng=random.Random(42))
    b = Backoff(rng=random.Random(42))
    assert [a.next_delay() for _ in range(8)] == [b.next_delay() for _ in range(8)]


def test_reset() -> None:
    backoff = Backoff(rng=random.Random(0))
    for _ in range(5):
        backoff.next_delay()
    assert backoff.current == 32
    backoff.reset()
    assert backoff.current == 1
    assert 0.8 <= backoff.next_delay() < 1.2
    assert backoff.current == 2


def test_after_disconnect_resets_only_after_established_session() -> None:
    backoff = Backoff(jitter=(1.0, 1.0))
    assert [backoff.after_disconnect(established=False) for _ in range(4)] == [1, 2, 4, 8]
    assert backoff.after_disconnect(established=True) == 1  # a deploy: back to ~1 s
    assert backoff.after_disconnect(established=False) == 2


def test_custom_parameters() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0, factor=3.0, jitter=(1.0, 1.0))
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.5, 3.0, 3.0]


def test_default_rng() -> None:
    delay = Backoff().next_delay()
    assert 0.8 <= delay < 1.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": 0},
        {"initial": 5, "maximum": 1},
        {"factor": 0.5},
        {"jitter": (0.0, 1.0)},
        {"jitter": (1.2, 0.8)},
    ],
)
def test_invalid_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
