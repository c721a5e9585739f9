"""Issue 12 item 8: text from the coordinator is shown as plain text everywhere in the GUI.

The sandbox coordinator (a real WebSocket server on 127.0.0.1) refuses the agent with an
`auth_failed` reason full of markup; no label or tooltip may render it as HTML (a QLabel in
its default AutoText mode would load the image and show the link)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QLabel, QWidget

from tests.gui.conftest import Rig
from usepod_desktop.core.events import AgentState

MARKUP = "<img src='file:///tmp/usepod-remote.png'><a href='http://127.0.0.1:9/'>click</a>"
HOSTILE = f"<b>denied</b> {MARKUP}"


def rendered_as_html(widgets: list[QWidget]) -> list[str]:
    """Every place where remote markup would be interpreted."""
    found = []
    for widget in widgets:
        if isinstance(widget, QLabel) and "<img" in widget.text():
            if widget.textFormat() != Qt.TextFormat.PlainText:
                found.append(f"label {widget.objectName() or widget}: {widget.text()[:60]}")
        if "<img" in widget.toolTip():
            found.append(f"tooltip of {widget.objectName() or widget}")
    return found


def test_coordinator_text_is_plain_in_the_status_and_settings_windows(
    rig_factory: Callable[..., Rig],
) -> None:
    rig = rig_factory(tray=False)
    rig.coordinator.reject_auth = HOSTILE
    rig.run(rig.coordinator.stop())
    rig.run(rig.coordinator.start())
    rig.until(
        lambda: rig.agent.state == AgentState.ERROR or "denied" in rig.controller.reason,
        timeout=20,
        what="the auth failure to reach the controller",
    )
    window = rig.controller.window
    rig.until(lambda: "denied" in window.reason_label.text(), what="reason shown")
    assert MARKUP in window.reason_label.text()  # shown as written, not dropped
    rig.controller.notify("Authentication failed", HOSTILE, "error")
    settings = rig.controller.open_settings()
    assert settings is not None
    QApplication.processEvents()
    widgets = [w for w in QApplication.allWidgets() if w.isVisible() or w is window.notice]
    assert any("<img" in w.text() for w in widgets if isinstance(w, QLabel))
    assert rendered_as_html(widgets) == []
    assert "&lt;img" in window.notice.text()  # the bold title stays rich, the message escaped
    settings.close()


def test_plain_tooltip() -> None:
    from usepod_desktop.gui.widgets import plain_tooltip

    assert plain_tooltip("ordinary text, a < b") == "ordinary text, a < b"
    shown = plain_tooltip(MARKUP)
    assert "<img" not in shown and shown.startswith("<qt>") and "&lt;img" in shown
