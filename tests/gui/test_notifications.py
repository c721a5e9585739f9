"""Notifications: debounced connection loss, backend down / back, pairing; each switchable."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import qasync

from tests.gui.conftest import Rig, spin
from usepod_desktop.core.events import AgentState, BackendStatusChanged, StateChanged
from usepod_desktop.gui.notify import Notifier
from usepod_desktop.gui.prefs import Prefs

pytestmark = pytest.mark.gui


def _notifier(grace_ms: int = 50) -> tuple[Notifier, list[tuple[str, str, str]]]:
    sent: list[tuple[str, str, str]] = []
    notifier = Notifier(
        Prefs(), lambda t, m, level: sent.append((t, m, level)), offline_grace_ms=grace_ms
    )
    return notifier, sent


def test_a_brief_reconnect_says_nothing_a_long_outage_is_announced_once(
    qloop: qasync.QEventLoop,
) -> None:
    notifier, sent = _notifier(grace_ms=100)
    notifier.on_state(StateChanged(AgentState.SERVING, "2 models"))
    notifier.on_state(StateChanged(AgentState.OFFLINE, "connection closed"))
    notifier.on_state(StateChanged(AgentState.CONNECTING, "connecting"))
    spin(qloop, 0.03)
    notifier.on_state(StateChanged(AgentState.SERVING, "2 models"))
    spin(qloop, 0.2)
    assert sent == []

    notifier.on_state(StateChanged(AgentState.OFFLINE, "connection refused"))
    notifier.on_state(StateChanged(AgentState.CONNECTING, "connecting"))
    notifier.on_state(StateChanged(AgentState.OFFLINE, "connection refused"))
    spin(qloop, 0.25)
    assert [s[0] for s in sent] == ["Lost connection"]
    assert "connection refused" in sent[0][1]
    notifier.on_state(StateChanged(AgentState.PAUSED, "not taking new jobs"))
    assert [s[0] for s in sent] == ["Lost connection", "Connected again"]


def test_no_models_is_announced_after_its_grace_and_once(qloop: qasync.QEventLoop) -> None:
    sent: list[tuple[str, str, str]] = []
    notifier = Notifier(
        Prefs(), lambda t, m, level: sent.append((t, m, level)), no_models_grace_ms=100
    )
    reason = "vllm @ http://127.0.0.1:8000 is down (connection refused): start it"
    notifier.on_state(StateChanged(AgentState.SERVING, "1 model(s) advertised"))
    notifier.on_state(StateChanged(AgentState.NO_MODELS, reason))
    spin(qloop, 0.03)
    notifier.on_state(StateChanged(AgentState.SERVING, "1 model(s) advertised"))  # a blip
    spin(qloop, 0.2)
    assert sent == []
    notifier.on_state(StateChanged(AgentState.NO_MODELS, reason))
    notifier.on_state(StateChanged(AgentState.NO_MODELS, reason + "!"))  # still: no restart
    spin(qloop, 0.25)
    assert sent == [
        ("No models offered", f"Use Pod is connected but offers no model: {reason}!.", "warning")
    ]
    notifier.on_state(StateChanged(AgentState.SERVING, "1 model(s) advertised"))
    assert [s[0] for s in sent] == ["No models offered", "Serving again"]
    assert not any(s[0] == "Lost connection" for s in sent)  # connected all along


def test_never_connected_is_not_a_lost_connection(qloop: qasync.QEventLoop) -> None:
    notifier, sent = _notifier()
    notifier.on_state(StateChanged(AgentState.CONNECTING, "connecting"))
    notifier.on_state(StateChanged(AgentState.OFFLINE, "refused"))
    spin(qloop, 0.15)
    assert sent == []


def test_switches_and_pairing_hook(qloop: qasync.QEventLoop) -> None:
    notifier, sent = _notifier()
    Prefs().set_notify_enabled("notify/backend", False)
    notifier.on_backend(BackendStatusChanged("vllm @ http://x", False, "refused"))
    assert sent == []
    Prefs().set_notify_enabled("notify/backend", True)
    notifier.on_backend(BackendStatusChanged("ollama @ http://y", False, "refused"))
    notifier.on_backend(BackendStatusChanged("ollama @ http://y", False, "refused"))  # once
    notifier.on_backend(BackendStatusChanged("ollama @ http://y", True, "ok"))
    notifier.on_backend(BackendStatusChanged("ollama @ http://y", True, "ok"))  # once
    assert [s[0] for s in sent] == ["Backend unavailable", "Backend back"]
    notifier.paired("prov_123")
    assert sent[-1][0] == "Paired" and "prov_123" in sent[-1][1]
    Prefs().set_notify_enabled("notify/pairing", False)
    notifier.paired("prov_123")
    assert len(sent) == 3
    # the switches persist in the test home's INI file
    assert Prefs().notify_enabled("notify/pairing") is False
    assert Prefs().path.read_text().count("pairing=false") == 1


def test_real_agent_backend_loss_and_coordinator_outage(rig_factory: Callable[..., Rig]) -> None:
    rig = rig_factory(offline_grace_ms=1500)
    titles = lambda: [n[0] for n in rig.controller.notifications]  # noqa: E731

    # a coordinator restart (reconnect within about a second) is not worth a notification
    rig.run(rig.coordinator.kick())
    rig.until(lambda: rig.agent.state != AgentState.SERVING, what="dropped")
    rig.until(lambda: rig.agent.state == AgentState.SERVING, timeout=10, what="reconnected")
    spin(rig.loop, 1.0)
    assert titles() == []

    # a backend that stops answering, then comes back
    rig.run(rig.fake.set_fail_mode("refuse"))
    rig.run(rig.agent.rediscover())
    assert titles() == ["Backend unavailable"]
    rig.run(rig.fake.set_fail_mode("none"))
    rig.run(rig.agent.rediscover())
    assert titles() == ["Backend unavailable", "Backend back"]

    # an outage longer than the grace period
    rig.run(rig.coordinator.stop())
    rig.until(lambda: "Lost connection" in titles(), timeout=5, what="loss notification")
    rig.run(rig.coordinator.start())
    rig.until(lambda: "Connected again" in titles(), timeout=10, what="back notification")


def test_today_counter_counts_only_its_own_source() -> None:
    """Issue 19 item 3: without a ledger the tray counts from events; a sandbox job is never
    a real earning, and only sandbox jobs count in sandbox mode."""
    from datetime import UTC, datetime

    from usepod_desktop.core.events import JobFinished
    from usepod_desktop.core.executor import JobOutcome
    from usepod_desktop.gui.controller import TodayCounter

    now = datetime.now(UTC)

    def job(source: str) -> JobFinished:
        outcome = JobOutcome("j", "m", "vllm", "openai", now, now, 1.0, 10, 1000, 1000, 10)
        outcome.input_per_1m = outcome.output_per_1m = 1_000_000
        outcome.source = source
        return JobFinished(outcome)

    real = TodayCounter()
    for source in ("coordinator", "sandbox", "test"):
        real.add(job(source))
    assert real.summary()[0] == 1
    demo = TodayCounter()
    for source in ("coordinator", "sandbox", "test"):
        demo.add(job(source), "sandbox")
    assert demo.summary()[0] == 1


def test_remote_text_in_a_notification_bubble_is_never_markup(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Linux notification services read HTML in the body: a coordinator reason carrying a link
    or an image must reach the bubble as text (and stay readable on other systems)."""
    from usepod_desktop.gui.notify import bubble_text

    hostile = 'suspended: <a href="http://x">appeal</a> <img src="file:///etc/passwd"> & more'
    assert bubble_text(hostile, "linux") == (
        'suspended: &lt;a href="http://x"&gt;appeal&lt;/a&gt; '
        '&lt;img src="file:///etc/passwd"&gt; &amp; more'
    )
    assert bubble_text(hostile, "win32") == hostile
    assert bubble_text(hostile, "darwin") == hostile

    shown: list[tuple[str, str]] = []

    class Tray:
        def isVisible(self) -> bool:
            return True

        def showMessage(self, title: str, message: str, *_: object) -> None:
            shown.append((title, message))

    monkeypatch.setattr(rig.controller, "tray", Tray())
    rig.controller.notify("Coordinator <b>says</b>", hostile, "warning")
    assert shown == [(bubble_text("Coordinator <b>says</b>"), bubble_text(hostile))]
    assert "<a " not in shown[0][1] and "<img" not in shown[0][1]
