"""gui/settings/keys.py: API keys go to the keyring, never to agent.toml; no keyring is a
clear message."""

from __future__ import annotations

import logging

import keyring
import pytest
from keyring.backends import fail
from PySide6.QtGui import QColor

from tests.conftest import MemoryKeyring
from tests.gui.conftest import Rig
from tests.gui.settings.helpers import apply_and_wait, open_window
from usepod_desktop.gui.app import quiet_loggers
from usepod_desktop.gui.widgets import ERROR_COLOUR
from usepod_desktop.sandbox.fakes import FakeBackend, FakeModel

pytestmark = pytest.mark.gui


def test_api_key_goes_to_the_keyring_never_to_agent_toml(
    rig: Rig,
    memory_keyring: MemoryKeyring,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_loggers()  # as the app does: qasync would log executor arguments at DEBUG
    caplog.set_level(logging.DEBUG)
    secret = "sk-or-v1-0123456789abcdef0123456789abcdef"
    hosted = rig.add_fake(
        FakeBackend(
            "openrouter",
            [FakeModel("acme/chat-1", prompt_price=3e-7, completion_price=6e-7)],
            api_key=secret,
        )
    )
    monkeypatch.setenv("USEPOD_OPENROUTER_BASE_URL", hosted.url)
    window = open_window(rig)
    dialog = window.backends_tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("openrouter"))
    assert dialog.key_env.text() == "OPENROUTER_API_KEY"
    dialog.markup.setText("5")
    dialog.accept()
    apply_and_wait(window, rig)  # the advertised list does not change: no key yet, skipped
    view = rig.agent.snapshot()
    assert [m.model_id for m in view.models] == ["alpha", "beta"]
    assert view.reports[1].status == "no_key"
    rig.until(
        lambda: window.backends_tab.table.item(1, 1).text() == "no API key",  # said once
        what="the no-key status",
    )

    keys = window.keys_tab
    row = keys.rows["OPENROUTER_API_KEY"]
    rig.until(lambda: row.status.text() == "not set", what="key status")
    row.edit.setText(secret)
    before = rig.caps_count()
    row.save.click()
    rig.until(
        lambda: memory_keyring.store.get(("usepod-agent", "OPENROUTER_API_KEY")) == secret,
        what="key in the keyring",
    )
    rig.until(lambda: row.status.text() == "set in keyring", what="status refresh")
    assert row.edit.text() == ""  # not kept in the widget
    caps = rig.next_caps(before)
    model = {m["model_id"]: m for m in caps.models}["acme/chat-1"]
    # upstream $0.30 / $0.60 per 1M, / 0.8, x 1.05 markup, rounded up
    assert (model["input_per_1m"], model["output_per_1m"]) == (393_750, 787_500)

    text = rig.config_path.read_text()
    assert secret not in text
    assert 'api_key_env = "OPENROUTER_API_KEY"' in text
    assert "markup = 0.05" in text
    assert secret not in caplog.text

    # the pricing table: upstream cost and margin; below cost shows red
    pricing = window.pricing_tab
    rig.until(lambda: "acme/chat-1" in pricing.row_edits, what="pricing row")
    index = [r.model_id for r in pricing.rows].index("acme/chat-1")
    assert pricing.table.item(index, 5).text() == "0.30 / 0.60"
    # the draft uses the core's rule: the advertised price, and the entry's markup
    edit_in, edit_out = pricing.row_edits["acme/chat-1"]
    assert edit_in.placeholderText() == "0.39375 (upstream)"
    assert edit_out.placeholderText() == "0.7875 (upstream)"
    assert pricing.table.item(index, 4).text() == "0.315 / 0.63"
    assert pricing.table.item(index, 6).text().startswith("+")
    pricing.set_price("acme/chat-1", "0.20", "0.50")
    assert pricing.table.item(index, 6).text().startswith("−")
    assert pricing.table.item(index, 6).foreground().color() == QColor(ERROR_COLOUR)

    row.delete.click()
    rig.until(lambda: not memory_keyring.store, what="key deleted")
    rig.until(lambda: row.status.text() == "not set", what="status after delete")


def test_no_keyring_gives_a_clear_message(rig: Rig) -> None:
    keyring.set_keyring(fail.Keyring())  # the conftest fixture restores the previous one
    window = open_window(rig)
    dialog = window.backends_tab.add()
    dialog.kind.setCurrentIndex(dialog.kind.findData("venice"))
    dialog.accept()
    window.select_tab("keys")
    keys = window.keys_tab
    rig.until(
        lambda: "VENICE_API_KEY" in keys.rows and not keys.problem.isHidden(),
        what="keyring problem message",
    )
    assert "No usable keyring" in keys.problem.text()
    assert not keys.rows["VENICE_API_KEY"].save.isEnabled()
