"""What the tray (gui/tray.py) and the no-tray status window (gui/mainwindow.py) need from the
app, as two protocols the controller meets: :class:`StatusModel` (what to show) and
:class:`Actions` (what the menu and the buttons do). Neither window imports the controller, so
either can be built on a small stand-in (as the tests do) and the controller can change behind
them.

Windows returned by the ``open_*`` actions are typed ``object``: the tray and the status window
never use them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from PySide6.QtCore import SignalInstance

from usepod_desktop.core.events import AgentState

if TYPE_CHECKING:
    from usepod_desktop.core.updates import UpdateInfo

__all__ = ["Actions", "StatusModel", "TrayModel", "UpdateSource"]


class UpdateSource(Protocol):
    """The app's update check, as far as the menu shows it."""

    @property
    def available(self) -> UpdateInfo | None:
        """A newer release than this one, when the last check found one."""
        ...


class StatusModel(Protocol):
    """The app's state as the tray and the status window show it. ``statusChanged`` is
    emitted whenever anything below may have changed."""

    @property
    def statusChanged(self) -> SignalInstance: ...

    @property
    def state(self) -> AgentState: ...

    @property
    def reason(self) -> str:
        """One line: why the state is what it is ("connected", "no backend answers" ...)."""
        ...

    @property
    def paused(self) -> bool: ...

    @property
    def agent(self) -> object | None:
        """The running agent (only whether there is one matters here)."""
        ...

    @property
    def stopping(self) -> bool:
        """Quitting: every action but the status is off."""
        ...

    @property
    def sandbox(self) -> bool: ...

    @property
    def needs_pairing(self) -> bool: ...

    @property
    def settings_available(self) -> bool: ...

    @property
    def config_problem_path(self) -> Path | None:
        """The agent.toml that cannot be used, when that is why no agent runs."""
        ...

    @property
    def tray(self) -> object | None:
        """The tray icon, None when the desktop has none (the status window is the app)."""
        ...

    @property
    def updates(self) -> UpdateSource: ...

    def status_text(self) -> str: ...

    def figures_text(self) -> str: ...

    def tooltip_text(self) -> str: ...

    def gpu_lines(self) -> list[str]: ...

    def autostart_supported(self) -> tuple[bool, str]:
        """Whether start at login can be set here, and why not (or what it does)."""
        ...

    def start_at_login(self) -> bool: ...


class Actions(Protocol):
    """What the tray menu and the status window's buttons do."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def toggle_pause(self) -> None: ...

    def pause_for(self, seconds: float) -> None: ...

    def pause_until_tomorrow(self) -> None: ...

    def open_settings(self) -> object: ...

    def open_pairing(self) -> object: ...

    def open_test_job(self) -> object: ...

    def open_dashboard(self) -> object: ...

    def open_doctor(self) -> object: ...

    def open_log_view(self) -> object: ...

    def open_log_folder(self) -> bool: ...

    def open_config_file(self) -> bool: ...

    def reload_config_file(self) -> None: ...

    def show_update(self) -> None: ...

    def show_main(self) -> None:
        """Bring up the app's main window (a click on the tray icon)."""
        ...

    def set_start_at_login(self, on: bool) -> None: ...

    def request_quit(self) -> None: ...


class TrayModel(StatusModel, Actions, Protocol):
    """Both: what :class:`~usepod_desktop.gui.tray.TrayIcon` and
    :class:`~usepod_desktop.gui.mainwindow.StatusWindow` are built on."""
