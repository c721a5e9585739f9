"""The tray icon: a static icon per state, a short tooltip, and a menu rebuilt every time it
opens (so it always shows the current state; the vorta pattern).

Built on a :class:`~usepod_desktop.gui.model.TrayModel` (what to show, what the menu does),
which the controller meets; this module does not know the controller."""

from __future__ import annotations

import contextlib
import sys

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtGui import QAction, QGuiApplication
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from usepod_desktop.core.events import AgentState
from usepod_desktop.gui.icons import state_icon, tray_variant
from usepod_desktop.gui.model import TrayModel
from usepod_desktop.gui.widgets import elide, elide_middle

_THEME_EVENTS = (
    QEvent.Type.ApplicationPaletteChange,
    QEvent.Type.PaletteChange,
    QEvent.Type.ThemeChange,
)

#: The status line in the menu is cut here (about 450 px); its tooltip has the whole text.
STATUS_LINE_CHARS = 64


def populate_menu(menu: QMenu, model: TrayModel) -> None:
    """Fill `menu` with the status lines and every action, from the model's state now.

    Actions carry object names (`action_pause`, ...) so tests and the fallback window find them.
    """
    menu.clear()
    has_agent = model.agent is not None and not model.stopping

    def add(
        name: str, text: str, slot: object = None, *, enabled: bool = True, tip: str = ""
    ) -> QAction:
        action = QAction(text, menu)
        action.setObjectName(name)
        action.setEnabled(enabled)
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        if slot is not None:
            action.triggered.connect(slot)
        menu.addAction(action)
        return action

    status = model.status_text()
    # A menu line stays short; the whole text is in its tooltip (and in the status window).
    add("action_status", elide(status, STATUS_LINE_CHARS), enabled=False, tip=status)
    add("action_figures", model.figures_text(), enabled=False)
    for i, line in enumerate(model.gpu_lines()):
        add(f"action_gpu_{i}", line, enabled=False)
    update = model.updates.available
    if update is not None:
        add(
            "action_update",
            f"Update available: {update.newest}…",
            model.show_update,
            tip="Shows what to run or download; nothing is installed automatically",
        )
    menu.addSeparator()
    if model.needs_pairing:
        add("action_pair", "Pair this computer…", lambda: model.open_pairing())
        menu.addSeparator()
    bad_config = model.config_problem_path
    if bad_config is not None and not model.stopping:
        where = str(bad_config)
        add(
            "action_open_config",
            f"Open {elide_middle(where, 48)}…",
            lambda: model.open_config_file(),
            tip=f"{where} (fix it and save: it is reloaded)",
        )
        add(
            "action_reload_config",
            "Reload agent.toml",
            model.reload_config_file,
            tip="Read agent.toml again (done by itself when the file is saved)",
        )
        menu.addSeparator()
    if model.state == AgentState.NO_MODELS:
        add(
            "action_fix_backends",
            "Fix backends in Settings…",
            lambda: model.open_settings(),
            enabled=has_agent,
            tip=model.reason,
        )
        menu.addSeparator()
    if model.paused:
        add("action_resume", "Resume serving", model.resume, enabled=has_agent)
    else:
        add(
            "action_pause",
            "Pause serving",
            model.pause,
            enabled=has_agent,
            tip="Stop taking new jobs; running jobs finish",
        )
    for name, text, slot in (
        ("action_pause_15m", "Pause for 15 minutes", lambda: model.pause_for(15 * 60)),
        ("action_pause_1h", "Pause for 1 hour", lambda: model.pause_for(3600)),
        ("action_pause_tomorrow", "Pause until tomorrow (06:00)", model.pause_until_tomorrow),
    ):
        add(name, text, slot, enabled=has_agent)
    menu.addSeparator()
    not_ready = "" if has_agent else model.reason
    add(
        "action_settings",
        "Settings…",
        lambda: model.open_settings(),
        enabled=model.settings_available,
        tip=not_ready,
    )
    if not model.needs_pairing and not model.sandbox and not model.stopping:
        # paired already: pair again (another account, or another coordinator)
        add(
            "action_pair",
            "Pair this computer…",
            lambda: model.open_pairing(),
            tip="Pair again, with another account or another coordinator",
        )
    add(
        "action_test_job",
        "Send test job…",
        lambda: model.open_test_job(),
        enabled=has_agent,
        tip=not_ready,
    )
    add("action_dashboard", "Earnings dashboard…", model.open_dashboard)
    add(
        "action_diagnose",
        "Diagnose…",
        lambda: model.open_doctor(),
        tip="Why am I not earning? Every check with a reason and a fix",
    )
    add("action_log_view", "View log…", lambda: model.open_log_view())
    add("action_log_folder", "Open log folder", lambda: model.open_log_folder())
    menu.addSeparator()
    supported, why = model.autostart_supported()
    label = "Start at login"
    if supported and model.sandbox:  # the entry starts the real app, never the sandbox
        label = "Start the app at login (not the sandbox)"
        why = (
            "At login this starts Use Pod normally, serving with your agent.toml; "
            "the sandbox only runs when you start it with --sandbox"
        )
    autostart = add("action_autostart", label, enabled=supported, tip=why)
    autostart.setCheckable(True)
    autostart.setChecked(supported and model.start_at_login())
    autostart.toggled.connect(model.set_start_at_login)
    menu.addSeparator()
    add(
        "action_quit",
        "Quit Use Pod",
        model.request_quit,
        enabled=not model.stopping,
        tip="Stop serving (running jobs get a grace period) and quit",
    )


def find_action(menu: QMenu, name: str) -> QAction | None:
    for action in menu.actions():
        if action.objectName() == name:
            return action
    return None


class TrayIcon(QSystemTrayIcon):
    def __init__(self, model: TrayModel) -> None:
        super().__init__(model if isinstance(model, QObject) else None)
        self.model = model
        self.menu = QMenu()
        self.menu.setObjectName("trayMenu")
        self.menu.aboutToShow.connect(self.rebuild_menu)
        self.setContextMenu(self.menu)
        #: (state, variant) of the icon shown now.
        self.icon_key: tuple[AgentState, str] | None = None
        model.statusChanged.connect(self.refresh)
        self.activated.connect(self._activated)
        self._watch_theme()
        self.refresh()
        self.rebuild_menu()  # a first menu, for platforms that show it without aboutToShow

    def _watch_theme(self) -> None:
        """Re-pick the icon variant when the theme changes, not only at the next state change:
        Qt's colour-scheme signal, palette / theme change events to the application, and on
        Windows a light 10 s poll of the taskbar's registry value (a taskbar-only switch in
        Settings changes neither the app's palette nor its colour scheme)."""
        app = QGuiApplication.instance()
        if app is not None:
            app.installEventFilter(self)
        hints = QGuiApplication.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            hints.colorSchemeChanged.connect(self.refresh)
        self._theme_poll: QTimer | None = None
        if sys.platform == "win32":
            self._theme_poll = QTimer(self)
            self._theme_poll.setInterval(10_000)
            self._theme_poll.timeout.connect(self.refresh)
            self._theme_poll.start()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in _THEME_EVENTS:
            QTimer.singleShot(0, self, self.refresh)  # after Qt has applied the new palette
        return False

    def refresh(self) -> None:
        state = self.model.state
        variant = tray_variant()
        if self.icon_key != (state, variant):
            self.icon_key = (state, variant)
            self.setIcon(state_icon(state, variant))
        self.setToolTip(self.model.tooltip_text())

    def rebuild_menu(self) -> None:
        populate_menu(self.menu, self.model)

    def dispose(self) -> None:
        """Detach the menu before the icon goes away: Qt must never see the menu deleted
        while the icon still points at it (Python may free the two in either order)."""
        self.hide()
        app = QGuiApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        hints = QGuiApplication.styleHints()
        if hasattr(hints, "colorSchemeChanged"):
            with contextlib.suppress(RuntimeError, TypeError):
                hints.colorSchemeChanged.disconnect(self.refresh)
        if self._theme_poll is not None:
            self._theme_poll.stop()
        self.setContextMenu(None)  # type: ignore[arg-type]

    def action(self, name: str) -> QAction | None:
        return find_action(self.menu, name)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        # macOS opens the menu on click; elsewhere a click (or double click) opens the window
        if reason == QSystemTrayIcon.ActivationReason.DoubleClick or (
            reason == QSystemTrayIcon.ActivationReason.Trigger and sys.platform != "darwin"
        ):
            self.model.show_main()
