"""EventBus: subscriptions to every event or to one type."""

from __future__ import annotations

from usepod_desktop.core.events import (
    AgentState,
    ConfigReloaded,
    EventBus,
    StateChanged,
)


def test_typed_subscription_gets_only_its_type_and_can_unsubscribe() -> None:
    bus = EventBus()
    typed: list[StateChanged] = []
    everything: list[object] = []
    off = bus.subscribe(StateChanged, typed.append)
    bus.subscribe(everything.append)
    changed = StateChanged(AgentState.SERVING, "ok")
    bus.emit(ConfigReloaded())
    bus.emit(changed)
    assert typed == [changed]
    assert everything == [ConfigReloaded(), changed]
    off()
    bus.emit(changed)
    assert typed == [changed] and len(everything) == 3


def test_a_failing_handler_does_not_stop_the_others() -> None:
    bus = EventBus()
    seen: list[object] = []

    def broken(event: StateChanged) -> None:
        raise RuntimeError("boom")

    bus.subscribe(StateChanged, broken)
    bus.subscribe(StateChanged, seen.append)
    bus.emit(StateChanged(AgentState.OFFLINE, "x"))
    assert len(seen) == 1
