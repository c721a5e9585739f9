"""Reconnect backoff for the coordinator link (docs/protocol.md, "Reconnect and backoff")."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff with multiplicative jitter.

    `next_delay()` returns `current * jitter` (jitter uniform in [lo, hi)), then
    multiplies `current` by `factor`, capped at `maximum`: about 1, 2, 4, ... 60 s.

    The rule, applied by the link: call `reset()` when the session that just ended had
    received `auth_ok` (as the reference 0.3.3: a drop during discovery, at `capabilities`
    or later is a planned cycle such as a coordinator deploy, so the next attempt comes
    after about 1 s); failures before that point leave the backoff escalating.
    `after_disconnect(established)` does both steps (`established`: got `auth_ok`).
    """

    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 60.0,
        factor: float = 2.0,
        jitter: tuple[float, float] = (0.8, 1.2),
        rng: random.Random | None = None,
    ) -> None:
        lo, hi = jitter
        if initial <= 0 or maximum < initial or factor < 1 or not 0 < lo <= hi:
            raise ValueError("Backoff needs 0 < initial <= maximum, factor >= 1, 0 < lo <= hi")
        self.initial = float(initial)
        self.maximum = float(maximum)
        self.factor = float(factor)
        self.jitter = (float(lo), float(hi))
        self._rng = rng if rng is not None else random.Random()
        self._current = self.initial

    @property
    def current(self) -> float:
        """The un-jittered delay the next `next_delay()` is based on."""
        return self._current

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; escalates the backoff."""
        lo, hi = self.jitter
        delay = self._current * (lo + (hi - lo) * self._rng.random())
        self._current = min(self._current * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        """Back to `initial` (after an established session ended)."""
        self._current = self.initial

    def after_disconnect(self, established: bool) -> float:
        """The delay before reconnecting: resets first when `established` (got auth_ok)."""
        if established:
            self.reset()
        return self.next_delay()
