"""gui/bridge.py: each core event type reaches its own Qt signal (subscribed by type on the bus),
then the catch-all `event` signal, and the bridge follows exactly one bus at a time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import qasync

from usepod_desktop.core.events import (
    AgentState,
    BackendStatusChanged,
    CapabilitiesSent,
    ConfigReloaded,
    EventBus,
    JobFinished,
    JobStarted,
    StateChanged,
)
from usepod_desktop.core.executor import JobOutcome
from usepod_desktop.core.serving.controller import ServingChanged
from usepod_desktop.gui.bridge import AgentBridge
from usepod_desktop.gui.notify import Notifier
from usepod_desktop.gui.prefs import Prefs

pytestmark = pytest.mark.gui

SIGNALS = (
    "stateChanged",
    "jobStarted",
    "jobFinished",
    "backendStatusChanged",
    "capabilitiesSent",
    "discoveryCompleted",
    "servingChanged",
    "configReloaded",
    "event",
)


def _recorded(bridge: AgentBridge) -> list[tuple[str, object]]:
    seen: list[tuple[str, object]] = []
    for name in SIGNALS:
        getattr(bridge, name).connect(lambda e, name=name: seen.append((name, e)))
    return seen


def _serving(*, manual: bool, serving: bool = False) -> ServingChanged:
    return ServingChanged(serving, ("idle",), "you are using the computer", None, manual)


def _job_done() -> JobFinished:
    now = datetime.now(UTC)
    outcome = JobOutcome("j", "m", "vllm", "openai", now, now, 1.0, 10, 1000, 1000, 10)
    outcome.input_per_1m = outcome.output_per_1m = 1_000_000
    return JobFinished(outcome)


def test_each_event_reaches_its_own_signal_then_event(qloop: qasync.QEventLoop) -> None:
    bus, bridge = EventBus(), AgentBridge()
    seen = _recorded(bridge)
    bridge.attach(bus)
    events: list[tuple[str, object]] = [
        ("stateChanged", StateChanged(AgentState.SERVING, "2 models")),
        ("jobStarted", JobStarted("j", "m", "vllm")),
        ("jobFinished", _job_done()),
        ("backendStatusChanged", BackendStatusChanged("vllm", False, "refused")),
        ("capabilitiesSent", CapabilitiesSent(("m",), False)),
        ("servingChanged", _serving(manual=False)),
        ("configReloaded", ConfigReloaded()),
    ]
    for name, event in events:
        seen.clear()
        bus.emit(event)
        assert seen == [(name, event), ("event", event)], name
    seen.clear()
    other = object()  # a type with no signal of its own: only `event`
    bus.emit(other)
    assert seen == [("event", other)]


def test_attaching_again_follows_only_the_new_bus_and_detach_stops_all(
    qloop: qasync.QEventLoop,
) -> None:
    old, new, bridge = EventBus(), EventBus(), AgentBridge()
    seen = _recorded(bridge)
    bridge.attach(old)
    bridge.attach(new)  # e.g. the agent was rebuilt after pairing
    old.emit(StateChanged(AgentState.OFFLINE, "old agent"))
    assert seen == []
    state = StateChanged(AgentState.CONNECTING, "new agent")
    new.emit(state)
    assert seen == [("stateChanged", state), ("event", state)]
    seen.clear()
    bridge.detach()
    new.emit(state)
    new.emit(_job_done())
    assert seen == []


def test_a_rule_pause_is_announced_through_the_bridge_a_manual_one_is_not(
    qloop: qasync.QEventLoop,
) -> None:
    sent: list[tuple[str, str, str]] = []
    notifier = Notifier(Prefs(), lambda t, m, level: sent.append((t, m, level)))
    bus, bridge = EventBus(), AgentBridge()
    notifier.connect_bridge(bridge)
    bridge.attach(bus)
    bus.emit(_serving(manual=True))
    assert sent == []
    bus.emit(_serving(manual=False))
    assert [t for t, _m, _l in sent] == ["Serving paused"]
    bus.emit(_serving(manual=False, serving=True))
    assert [t for t, _m, _l in sent] == ["Serving paused", "Serving again"]


def test_the_status_refresh_sees_the_job_just_counted(qloop: qasync.QEventLoop) -> None:
    """The controller counts a finished job (typed `jobFinished`) before its status refresh
    (`event` -> statusChanged) runs, so the tray never shows the figure one job behind."""
    from usepod_desktop.gui.controller import AppController

    controller = AppController(open_url=lambda _url: True)
    counts_at_refresh: list[int] = []
    controller.statusChanged.connect(lambda: counts_at_refresh.append(controller.today.jobs))
    bus = EventBus()
    controller.bridge.attach(bus)
    bus.emit(_job_done())
    assert counts_at_refresh == [1]
