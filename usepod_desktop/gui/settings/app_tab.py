"""The App tab: start at login and the notification switches (kept in the app's own
preferences, not in agent.toml; applied at once)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QCheckBox, QGroupBox, QVBoxLayout, QWidget

from usepod_desktop.core.config import ConfigProblem
from usepod_desktop.gui.prefs import NOTIFICATIONS
from usepod_desktop.gui.settings.tab import FieldMap, Loaded, note

if TYPE_CHECKING:
    from usepod_desktop.gui.settings.window import SettingsWindow


class AppTab(QWidget):
    """Start at login and the notification switches: applied at once (not in agent.toml)."""

    name = "app"
    title = "App"

    def __init__(self, window: SettingsWindow, fields: FieldMap) -> None:
        super().__init__(window)
        controller = window.controller
        self.controller = controller
        layout = QVBoxLayout(self)
        startup = QGroupBox("Start-up", self)
        s_layout = QVBoxLayout(startup)
        self.autostart = QCheckBox("Start Use Pod when I log in", startup)
        self.autostart.setObjectName("autostartSetting")
        supported, why = controller.autostart_supported()
        self.autostart.setEnabled(supported)
        self.autostart.setToolTip(why)
        self.autostart.toggled.connect(controller.set_start_at_login)
        s_layout.addWidget(self.autostart)
        layout.addWidget(startup)
        notes = QGroupBox("Notifications", self)
        n_layout = QVBoxLayout(notes)
        self.switches: dict[str, QCheckBox] = {}
        for key, (label, _default) in NOTIFICATIONS.items():
            box = QCheckBox(label, notes)
            box.setObjectName(key)
            box.setChecked(controller.prefs.notify_enabled(key))
            box.toggled.connect(lambda on, k=key: controller.prefs.set_notify_enabled(k, on))
            n_layout.addWidget(box)
            self.switches[key] = box
        layout.addWidget(notes)
        layout.addWidget(
            note(
                f"These apply at once and are kept in {controller.prefs.path}, not in agent.toml.",
                self,
            )
        )
        layout.addStretch(1)
        controller.statusChanged.connect(self.refresh)
        self.refresh()

    def load(self, loaded: Loaded) -> None:
        self.refresh()

    def collect(self, draft: dict[str, Any]) -> list[ConfigProblem]:
        return []  # not part of agent.toml

    def refresh(self) -> None:
        supported, _ = self.controller.autostart_supported()
        self.autostart.blockSignals(True)
        self.autostart.setChecked(supported and self.controller.start_at_login())
        self.autostart.blockSignals(False)
