"""The API keys tab: the keys of the remote (bring-your-own-key) backends, stored in the OS
keyring through the agent facade, never in agent.toml. Saved at once, not by Apply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QGridLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget

from usepod_desktop.core.config import ConfigProblem
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.gui import tasks
from usepod_desktop.gui.settings.tab import FieldMap, Loaded, note
from usepod_desktop.gui.widgets import OK_COLOUR, WARN_COLOUR, mark_invalid, set_tone

if TYPE_CHECKING:
    from usepod_desktop.gui.settings.window import SettingsWindow


@dataclass(slots=True)
class KeyRow:
    name: str
    label: QLabel
    status: QLabel
    edit: QLineEdit
    save: QPushButton
    delete: QPushButton


class KeysTab(QWidget):
    name = "keys"
    title = "API keys"

    def __init__(self, window: SettingsWindow, fields: FieldMap) -> None:
        super().__init__(window)
        self.window_ = window
        self.rows: dict[str, KeyRow] = {}
        self.statuses: dict[str, Any] = {}
        layout = QVBoxLayout(self)
        layout.addWidget(
            note(
                "Keys for OpenRouter and Venice backends are stored only in the OS keyring "
                '(service "usepod-agent"), never in agent.toml or the logs. When the keyring has '
                "no key, the environment variable of the same name is used.",
                self,
            )
        )
        self.problem = QLabel(self)
        self.problem.setObjectName("keyringProblem")
        self.problem.setWordWrap(True)
        self.problem.hide()
        layout.addWidget(self.problem)
        self.grid_host = QWidget(self)
        self.grid = QGridLayout(self.grid_host)
        layout.addWidget(self.grid_host)
        self.empty = note(
            "No OpenRouter or Venice backend is configured. Add one on the Backends tab first.",
            self,
        )
        layout.addWidget(self.empty)
        self.message = QLabel(self)
        self.message.setObjectName("keysMessage")
        self.message.setWordWrap(True)
        self.message.hide()
        layout.addWidget(self.message)
        layout.addStretch(1)

    def load(self, loaded: Loaded) -> None:
        """The key names follow the Backends tab's draft entries (see `set_names`)."""

    def collect(self, draft: dict[str, Any]) -> list[ConfigProblem]:
        return []  # keys are not part of agent.toml

    def set_names(self, names: Sequence[str]) -> None:
        names = list(dict.fromkeys(names))
        if names == list(self.rows):
            return
        while self.grid.count():
            item = self.grid.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        self.rows = {}
        for i, name in enumerate(names):
            label = QLabel(f"<b>{name}</b>", self.grid_host)
            status = QLabel("checking…", self.grid_host)
            status.setObjectName(f"keyStatus:{name}")
            edit = QLineEdit(self.grid_host)
            edit.setObjectName(f"keyEdit:{name}")
            edit.setEchoMode(QLineEdit.EchoMode.Password)
            edit.setPlaceholderText("paste the key to store it")
            save = QPushButton("Save in keyring", self.grid_host)
            save.setObjectName(f"keySave:{name}")
            delete = QPushButton("Delete", self.grid_host)
            delete.setObjectName(f"keyDelete:{name}")
            save.clicked.connect(lambda _=False, n=name: self.save(n))
            edit.returnPressed.connect(lambda n=name: self.save(n))
            delete.clicked.connect(lambda _=False, n=name: self.delete(n))
            for col, widget in enumerate((label, status, edit, save, delete)):
                self.grid.addWidget(widget, i, col)
            self.rows[name] = KeyRow(name, label, status, edit, save, delete)
        self.grid.setColumnStretch(2, 1)
        self.empty.setVisible(not names)
        self.refresh()

    def refresh(self) -> None:
        agent = self.window_.agent
        if agent is None:
            return
        for name in list(self.rows):
            tasks.spawn(
                agent.key_status(name),
                name="key-status",
                on_done=lambda status, n=name: self._show_status(n, status),
                on_error=lambda error: set_tone(self.message, str(error), "error"),
            )

    def _show_status(self, name: str, status: Any) -> None:
        self.statuses[name] = status
        row = self.rows.get(name)
        if row is None:
            return
        if status.in_keyring:
            text, tone = "set in keyring", OK_COLOUR
        elif status.in_env:
            text, tone = f"from environment (${name})", OK_COLOUR
        else:
            text, tone = "not set", WARN_COLOUR
        row.status.setText(text)
        row.status.setStyleSheet(f"QLabel {{ color: {tone}; }}")
        problem = getattr(status, "keyring_problem", None)
        row.save.setEnabled(problem is None)
        row.delete.setEnabled(problem is None and status.in_keyring)
        row.save.setText("Replace" if status.in_keyring else "Save in keyring")
        if problem:
            set_tone(
                self.problem,
                f"No usable keyring: {problem}. Set the environment "
                "variable instead, or install and unlock a keyring and restart.",
                "error",
            )
        else:
            set_tone(self.problem, "")

    def save(self, name: str) -> None:
        agent = self.window_.agent
        row = self.rows.get(name)
        if agent is None or row is None:
            return
        value = row.edit.text()
        if not value.strip():
            mark_invalid(row.edit, "paste the key first")
            set_tone(self.message, f"{name}: paste the key first.", "error")
            return
        mark_invalid(row.edit, None)
        row.save.setEnabled(False)

        def done(_: object) -> None:
            row.edit.clear()
            set_tone(self.message, f"{name} is stored in the OS keyring.", "ok")
            self.refresh()

        def failed(error: UserFacingError) -> None:
            row.save.setEnabled(True)
            set_tone(self.message, str(error), "error")

        async def store() -> None:
            try:
                await agent.set_api_key(name, value)
            except UserFacingError:
                raise
            except Exception:
                row.save.setEnabled(True)
                raise

        tasks.spawn(store(), name="set-key", on_done=done, on_error=failed)

    def delete(self, name: str) -> None:
        agent = self.window_.agent
        if agent is None:
            return

        def done(removed: bool) -> None:
            set_tone(
                self.message,
                f"{name} was removed from the keyring."
                if removed
                else f"The keyring had no {name}.",
                "ok",
            )
            self.refresh()

        tasks.spawn(
            agent.delete_api_key(name),
            name="delete-key",
            on_done=done,
            on_error=lambda error: set_tone(self.message, str(error), "error"),
        )
