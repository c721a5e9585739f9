"""core/listeners.py: one listener list, used by the event bus, executor, ledger and pairing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from usepod_desktop.core.events import EventBus
from usepod_desktop.core.executor import Executor
from usepod_desktop.core.ledger import Ledger
from usepod_desktop.core.listeners import Listeners
from usepod_desktop.core.pairing import PairingFlow


def test_a_failing_listener_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[int, str]] = []
    listeners: Listeners[[int, str]] = Listeners("tick listener")

    def broken(n: int, s: str) -> None:
        raise RuntimeError("boom")

    listeners.add(lambda n, s: seen.append((n, s)))
    listeners.add(broken)
    listeners.add(lambda n, s: seen.append((n * 10, s)))
    with caplog.at_level(logging.ERROR):
        listeners.emit(1, "a")
    assert seen == [(1, "a"), (10, "a")]
    assert "tick listener failed on int" in caplog.text
    assert "RuntimeError: boom" in caplog.text


def test_add_returns_the_remover_and_remove_is_idempotent() -> None:
    seen: list[int] = []
    listeners: Listeners[[int]] = Listeners()
    remove = listeners.add(seen.append)
    listeners.emit(1)
    remove()
    remove()  # a second call changes nothing
    listeners.remove(seen.append)
    listeners.emit(2)
    assert seen == [1]
    assert len(listeners) == 0


def test_a_listener_may_unsubscribe_itself_while_emitting() -> None:
    seen: list[str] = []
    listeners: Listeners[[str]] = Listeners()

    def once(value: str) -> None:
        seen.append("once:" + value)
        remove()

    remove = listeners.add(once)
    listeners.add(lambda v: seen.append("always:" + v))
    listeners.emit("x")
    listeners.emit("y")
    assert seen == ["once:x", "always:x", "always:y"]


def test_the_core_publishers_share_it(tmp_path: Path) -> None:
    assert isinstance(EventBus()._handlers, Listeners)
    executor = Executor()
    assert isinstance(executor.on_outcome, Listeners)
    assert isinstance(executor.on_start, Listeners)
    assert isinstance(Ledger(tmp_path / "l.sqlite3").on_problem, Listeners)
    flow = PairingFlow("http://127.0.0.1:9")
    assert isinstance(flow._listeners, Listeners)


def test_event_bus_keeps_its_contract(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[object] = []
    unsubscribe = bus.subscribe(seen.append)
    bus.subscribe(lambda e: 1 / 0)
    with caplog.at_level(logging.ERROR):
        bus.emit("one")
    unsubscribe()
    bus.emit("two")
    assert seen == ["one"]
    assert "event handler failed on str" in caplog.text
