"""What the settings window tests share: open it, Apply and wait, read agent.toml."""

from __future__ import annotations

import tomlkit

from tests.gui.conftest import Rig
from usepod_desktop.gui.settings import SettingsWindow


def open_window(rig: Rig) -> SettingsWindow:
    window = rig.controller.open_settings()
    assert isinstance(window, SettingsWindow)
    # let the tray's first read of today's figures end on a running loop (some tests check
    # the window synchronously; a read left pending would end in the rig's teardown)
    figures = rig.controller.figures
    rig.until(lambda: figures.today_task is None or figures.today_task.done(), what="ledger")
    return window


def apply_and_wait(window: SettingsWindow, rig: Rig) -> None:
    assert window.apply(), window.message.text()
    rig.until(lambda: not window.saving, what="save to finish")
    assert "Saved to" in window.message.text(), window.message.text()


def apply_and_wait_caps(rig: Rig, window: SettingsWindow) -> list[dict]:
    before = rig.caps_count()
    apply_and_wait(window, rig)
    return rig.next_caps(before).models


def file_of(rig: Rig) -> dict:
    return tomlkit.parse(rig.config_path.read_text()).unwrap()


def ids(models: list[dict]) -> list[str]:
    return sorted(m["model_id"] for m in models)
