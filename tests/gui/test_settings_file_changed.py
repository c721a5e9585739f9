"""Settings Apply on top of an agent.toml another program changed since it was loaded (issue
12, item 15): nothing is overwritten, the window says so, and Revert reloads the file as it is
on disk. The other program is this test, editing the file behind the app's back."""

from __future__ import annotations

import pytest
import tomlkit

from tests.gui.conftest import Rig
from usepod_desktop.gui.settings import SettingsWindow

pytestmark = pytest.mark.gui


def test_apply_over_an_external_edit_is_refused_and_revert_reloads_the_file(rig: Rig) -> None:
    window = rig.controller.open_settings()
    assert isinstance(window, SettingsWindow)
    edited = rig.config_path.read_text() + "\n[limits]\nmax_concurrent = 4  # edited by hand\n"
    rig.config_path.write_text(edited)

    window.limits_tab.max_concurrent.setValue(7)
    assert window.apply()
    rig.until(lambda: not window.saving, what="save to be refused")
    text = window.message.text()
    assert "changed on disk since it was loaded; nothing was saved" in text
    assert "Revert" in text
    assert rig.config_path.read_text() == edited  # the hand edit survives

    window.revert()
    rig.until(lambda: "Reloaded" in window.message.text(), what="reload from disk")
    assert window.limits_tab.max_concurrent.value() == 4
    assert rig.agent.config.limits.max_concurrent == 4

    window.limits_tab.max_concurrent.setValue(6)
    assert window.apply()
    rig.until(lambda: not window.saving, what="save")
    assert "Saved to" in window.message.text(), window.message.text()
    saved = tomlkit.parse(rig.config_path.read_text()).unwrap()
    assert saved["limits"]["max_concurrent"] == 6
    assert "# edited by hand" in rig.config_path.read_text()
