"""The Coordinator tab: the coordinator URL (and whether ws:// is allowed), the connection
state, the provider id and this computer's public key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.config import ConfigProblem
from usepod_desktop.core.events import AgentState
from usepod_desktop.gui.settings.tab import FieldMap, Loaded, mark, note, selectable
from usepod_desktop.gui.widgets import ERROR_COLOUR, OK_COLOUR, WARN_COLOUR, error_label

if TYPE_CHECKING:
    from usepod_desktop.core.agent import Agent
    from usepod_desktop.gui.settings.window import SettingsWindow


class CoordinatorTab(QWidget):
    name = "coordinator"
    title = "Coordinator"

    def __init__(self, window: SettingsWindow, fields: FieldMap) -> None:
        super().__init__(window)
        self.window_ = window
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.url = QLineEdit(self)
        self.url.setObjectName("coordinatorUrl")
        self.url.setPlaceholderText("wss://api.usepod.ai/provider/connect")
        self.url_error = error_label(self)
        form.addRow("Coordinator URL", self.url)
        form.addRow("", self.url_error)
        self.insecure = QCheckBox(
            "Allow an unencrypted ws:// coordinator (local sandbox or testing only)", self
        )
        self.insecure.setObjectName("allowInsecure")
        form.addRow("", self.insecure)
        self.connection = selectable(QLabel(self))
        self.connection.setObjectName("connectionLabel")
        self.connection.setWordWrap(True)
        form.addRow("Connection", self.connection)
        self.provider_id = selectable(QLabel(self))
        self.provider_id.setObjectName("providerId")
        form.addRow("Provider id", self.provider_id)
        key_row = QHBoxLayout()
        self.public_key = QLineEdit(self)
        self.public_key.setObjectName("publicKey")
        self.public_key.setReadOnly(True)
        self.copy_key = QPushButton("Copy", self)
        self.copy_key.setObjectName("copyPublicKey")
        self.copy_key.clicked.connect(self._copy_key)
        key_row.addWidget(self.public_key, 1)
        key_row.addWidget(self.copy_key)
        form.addRow("Public key", key_row)
        self.config_path = selectable(QLabel(self))
        self.config_path.setWordWrap(True)
        form.addRow("Settings file", self.config_path)
        layout.addLayout(form)
        layout.addWidget(
            note(
                "The public key identifies this computer to the coordinator; the private key never "
                "leaves it. Changing the URL reconnects at once when you apply.",
                self,
            )
        )
        layout.addStretch(1)
        self.url.textEdited.connect(window.mark_dirty)
        self.insecure.toggled.connect(window.mark_dirty)
        fields.register("coordinator", self.name, self.url, self.url_error)

    def load(self, loaded: Loaded) -> None:
        self.show_config(
            loaded.config.coordinator.url,
            loaded.allow_insecure,
            loaded.config_path,
            loaded.sandbox,
        )
        if loaded.agent is not None:
            self.refresh(loaded.agent)
            return
        self.provider_id.setText("(once agent.toml is valid)")
        self.public_key.setText("")
        self.copy_key.setEnabled(False)
        self.show_state(loaded.state, loaded.reason)

    def show_config(self, url: str, insecure: bool, path: object, sandbox: bool) -> None:
        self.url.setText(url)
        self.insecure.blockSignals(True)
        self.insecure.setChecked(insecure)
        self.insecure.blockSignals(False)
        self.insecure.setEnabled(not sandbox)
        self.url.setReadOnly(sandbox)
        if sandbox:
            self.url.setToolTip("The embedded sandbox coordinator (sandbox mode)")
        self.config_path.setText(str(path or "(not saved yet)"))
        mark(self.url, self.url_error, None)

    def refresh(self, agent: Agent) -> None:
        sandbox_id = agent.sandbox_provider_id
        if agent.provider_id:
            shown = agent.provider_id
        elif sandbox_id:
            shown = f"{sandbox_id} (this sandbox session only; not stored)"
        else:
            shown = "not assigned yet (assigned on first connection)"
        self.provider_id.setText(shown)
        self.public_key.setText(agent.public_key_b64 or "")
        self.copy_key.setEnabled(bool(agent.public_key_b64))
        self.show_state(agent.state, agent.reason)

    def show_state(self, state: AgentState, reason: str) -> None:
        colour = {
            AgentState.SERVING: OK_COLOUR,
            AgentState.PAUSED: WARN_COLOUR,
            AgentState.NO_MODELS: WARN_COLOUR,
            AgentState.ERROR: ERROR_COLOUR,
            AgentState.NEEDS_PAIRING: ERROR_COLOUR,
        }.get(state, "")
        self.connection.setStyleSheet(f"QLabel {{ color: {colour}; }}" if colour else "")
        self.connection.setText(f"{state.label}: {reason}" if reason else state.label)

    def _copy_key(self) -> None:
        QGuiApplication.clipboard().setText(self.public_key.text())
        self.window_.set_message("Public key copied to the clipboard.", "ok")

    def collect(self, draft: dict[str, Any]) -> list[ConfigProblem]:
        draft.setdefault("coordinator", {})["url"] = self.url.text().strip()
        return []
