"""GUI-only preferences (notification switches, window geometry): a QSettings INI file.

It lives in our own data directory (`<data dir>/gui.ini`, the "usepod-desktop" app dir), never
in agent.toml, which is shared with the reference agent and holds only what it understands.
`USEPOD_DATA_DIR` (set by the test fixtures) moves it, so tests never touch the real one.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from usepod_desktop.core import paths

ORGANIZATION = "Use Pod"
APPLICATION = "usepod-desktop"
FILE_NAME = "gui.ini"

#: The periodic update check's switch (it only reads the release feed, never installs).
UPDATE_CHECK_KEY = "updates/check"

#: Notification switches: key -> (label in the settings window, default).
NOTIFICATIONS: dict[str, tuple[str, bool]] = {
    "notify/disconnect": ("Lost connection to the coordinator (after 10 s offline)", True),
    "notify/backend": ("A backend goes down or comes back", True),
    "notify/pairing": ("Pairing completed", True),
    "notify/serving": ("Serving paused or resumed by a rule (away, schedule, game, ...)", True),
    UPDATE_CHECK_KEY: (
        'New release: check once a day and show "Update available" in the tray',
        True,
    ),
}


class Prefs:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.data_dir() / FILE_NAME
        self.qsettings = QSettings(str(self.path), QSettings.Format.IniFormat)

    def notify_enabled(self, key: str) -> bool:
        default = NOTIFICATIONS[key][1]
        return bool(self.qsettings.value(key, default, type=bool))

    def set_notify_enabled(self, key: str, on: bool) -> None:
        if key not in NOTIFICATIONS:
            raise KeyError(key)
        self.qsettings.setValue(key, on)
        self.qsettings.sync()

    @property
    def update_check_enabled(self) -> bool:
        return self.notify_enabled(UPDATE_CHECK_KEY)

    @property
    def allow_insecure(self) -> bool:
        """The settings window's "allow ws://" choice (a run-time flag, not an agent.toml key)."""
        return bool(self.qsettings.value("coordinator/allow_insecure", False, type=bool))

    @allow_insecure.setter
    def allow_insecure(self, on: bool) -> None:
        self.qsettings.setValue("coordinator/allow_insecure", on)
        self.qsettings.sync()
