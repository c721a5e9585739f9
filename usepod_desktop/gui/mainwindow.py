"""The status window: where the desktop has no system tray (GNOME without AppIndicator
support) the app shows this instead of running invisibly; elsewhere a second launch or a click
on the tray icon may bring it up. Same status, same actions as the tray menu, from the same
:class:`~usepod_desktop.gui.model.TrayModel` (the controller meets it; not imported here)."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.gui.icons import app_icon, state_icon
from usepod_desktop.gui.model import TrayModel
from usepod_desktop.gui.tray import populate_menu
from usepod_desktop.gui.widgets import APP_TITLE, plain


class StatusWindow(QMainWindow):
    def __init__(self, model: TrayModel) -> None:
        super().__init__()
        self.model = model
        self.setObjectName("statusWindow")
        self.setWindowIcon(app_icon())
        self.setWindowTitle(f"{APP_TITLE} (sandbox)" if model.sandbox else APP_TITLE)
        self.setMinimumWidth(520)

        central = QWidget(self)
        layout = QVBoxLayout(central)
        head = QHBoxLayout()
        self.icon = QLabel(central)
        self.icon.setFixedSize(44, 44)
        head.addWidget(self.icon)
        texts = QVBoxLayout()
        self.state_label = QLabel(central)
        self.state_label.setObjectName("stateLabel")
        font = self.state_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        self.state_label.setFont(font)
        self.reason_label = plain(QLabel(central))
        self.reason_label.setObjectName("reasonLabel")
        self.reason_label.setWordWrap(True)
        self.reason_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.figures_label = plain(QLabel(central))
        self.figures_label.setObjectName("figuresLabel")
        texts.addWidget(self.state_label)
        texts.addWidget(self.reason_label)
        texts.addWidget(self.figures_label)
        head.addLayout(texts, 1)
        layout.addLayout(head)

        grid = QGridLayout()
        self.pause_button = QPushButton(central)
        self.pause_button.setObjectName("pauseButton")
        self.pause_button.clicked.connect(model.toggle_pause)
        self.settings_button = QPushButton("Settings…", central)
        self.settings_button.clicked.connect(lambda: model.open_settings())
        self.test_button = QPushButton("Send test job…", central)
        self.test_button.clicked.connect(lambda: model.open_test_job())
        self.log_button = QPushButton("View log…", central)
        self.log_button.clicked.connect(lambda: model.open_log_view())
        self.folder_button = QPushButton("Open log folder", central)
        self.folder_button.clicked.connect(lambda: model.open_log_folder())
        self.pair_button = QPushButton("Pair this computer…", central)
        self.pair_button.setObjectName("pairButton")
        self.pair_button.clicked.connect(lambda: model.open_pairing())
        layout.addWidget(self.pair_button)
        self.quit_button = QPushButton("Quit Use Pod", central)
        self.quit_button.clicked.connect(model.request_quit)
        for i, button in enumerate(
            (
                self.pause_button,
                self.settings_button,
                self.test_button,
                self.log_button,
                self.folder_button,
                self.quit_button,
            )
        ):
            grid.addWidget(button, i // 3, i % 3)
        layout.addLayout(grid)
        self.autostart = QCheckBox("Start at login", central)
        self.autostart.setObjectName("autostartCheck")
        self.autostart.toggled.connect(self._autostart_toggled)
        layout.addWidget(self.autostart)
        self.notice = QLabel(central)
        self.notice.setObjectName("noticeLabel")
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("QLabel { background: palette(alternate-base); padding: 6px; }")
        self.notice.hide()
        layout.addWidget(self.notice)
        self.setCentralWidget(central)

        menu = QMenu("&Use Pod", self)
        menu.aboutToShow.connect(lambda: populate_menu(menu, model))
        populate_menu(menu, model)
        self.menuBar().addMenu(menu)
        self.agent_menu = menu

        model.statusChanged.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        m = self.model
        self.icon.setPixmap(state_icon(m.state).pixmap(44, 44))
        self.state_label.setText(("Sandbox · " if m.sandbox else "") + m.state.label)
        self.reason_label.setText("Stopping…" if m.stopping else m.reason)
        self.figures_label.setText(m.figures_text())
        has_agent = m.agent is not None and not m.stopping
        self.pause_button.setText("Resume serving" if m.paused else "Pause serving")
        for button in (self.pause_button, self.settings_button, self.test_button):
            button.setEnabled(has_agent)
        self.quit_button.setEnabled(not m.stopping)
        self.pair_button.setVisible(m.needs_pairing)
        supported, why = m.autostart_supported()
        if supported and m.sandbox:  # the entry starts the real app, never the sandbox
            self.autostart.setText("Start the app at login (not the sandbox)")
            why = "At login this starts Use Pod normally, serving with your agent.toml"
        else:
            self.autostart.setText("Start at login")
        self.autostart.setEnabled(supported)
        self.autostart.setToolTip(why)
        self.autostart.blockSignals(True)
        self.autostart.setChecked(supported and m.start_at_login())
        self.autostart.blockSignals(False)

    def show_notification(self, title: str, message: str) -> None:
        # Rich only for the bold title: both parts escaped (the message can be remote text).
        self.notice.setTextFormat(Qt.TextFormat.RichText)
        self.notice.setText(f"<b>{html.escape(title)}</b>: {html.escape(message)}")
        self.notice.show()
        self.statusBar().showMessage(f"{title}: {message}", 15_000)

    def _autostart_toggled(self, on: bool) -> None:
        self.model.set_start_at_login(on)

    def closeEvent(self, event: QCloseEvent) -> None:
        # Without a tray this window is the app: closing it quits (gracefully).
        if self.model.tray is None:
            self.model.request_quit()
        event.accept()
