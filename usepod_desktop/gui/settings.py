"""The settings window: Coordinator, Backends (with allow-lists), Pricing, API keys, Limits,
App.

Everything that lives in agent.toml is edited as a draft and written by **Apply** only:
Apply validates every field first; an invalid field is highlighted with its message and
nothing is written. A valid Apply calls :meth:`Agent.save_config` (atomic save, then the new
backends, prices and limits take effect without a restart); a :class:`ConfigError` from the
core is shown inline. API keys are not part of agent.toml: they go straight to the OS keyring
through the facade. The App tab's switches (start at login, notifications) apply at once.

When agent.toml does not validate there is no agent: the window then shows a draft of the file
(:func:`~usepod_desktop.core.config.load_config_draft`: valid fields kept, invalid ones reset),
the load error on top and each invalid field marked; Apply saves it once it is valid (the file
stays byte-identical until then) and the controller starts the agent from it.

No dialog here is run with `exec()`: Add / Edit / Detect use `open()` and `finished`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QColor, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.config import (
    MAX_CONCURRENT_RANGE,
    REMOTE_KINDS,
    BackendConfig,
    Config,
    ConfigChangedError,
    ConfigDraft,
    LimitsConfig,
    ModelPrice,
    PricingConfig,
    save_config,
    validate_coordinator_url,
)
from usepod_desktop.core.errors import ConfigError, UserFacingError
from usepod_desktop.core.events import AgentState, StateChanged
from usepod_desktop.core.money import (
    SHARE_PERCENT,
    SHARE_TEXT,
    PriceError,
    format_rate,
    parse_usd_per_1m,
    provider_share_of,
    resolve_price,
)
from usepod_desktop.gui import tasks
from usepod_desktop.gui.backend_dialogs import KIND_LABELS, BackendDialog, DetectDialog
from usepod_desktop.gui.icons import app_icon
from usepod_desktop.gui.prefs import NOTIFICATIONS
from usepod_desktop.gui.widgets import (
    ERROR_COLOUR,
    INVALID_STYLE,
    OK_COLOUR,
    WARN_COLOUR,
    elide_middle,
    error_label,
    mark_invalid,
    plain,
    plain_tooltip,
    set_error,
    set_tone,
)

if TYPE_CHECKING:
    from usepod_desktop.core.agent import Agent
    from usepod_desktop.gui.controller import AppController

log = logging.getLogger(__name__)

TAB_NAMES: tuple[str, ...] = (
    "coordinator",
    "backends",
    "pricing",
    "keys",
    "limits",
    "serving",
    "app",
)
Identity = tuple[str, str | None]


@dataclass(slots=True)
class Problem:
    """One invalid field: which tab, which widget to highlight, what to say."""

    tab: str
    widget: QWidget | None
    message: str


def _selectable(label: QLabel) -> QLabel:
    """A selectable plain-text label (connection state, provider id: remote text)."""
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def _note(text: str, parent: QWidget | None = None) -> QLabel:
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setStyleSheet("QLabel { color: palette(placeholder-text); }")
    return label


def _mark(widget: QWidget, label: QLabel | None, message: str | None) -> None:
    mark_invalid(widget, message)
    if label is not None:
        set_error(label, message)


SAVED_PREFIX = "Saved to "

# ============================================================================== Coordinator


class CoordinatorTab(QWidget):
    def __init__(self, window: SettingsWindow) -> None:
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
        self.connection = _selectable(QLabel(self))
        self.connection.setObjectName("connectionLabel")
        self.connection.setWordWrap(True)
        form.addRow("Connection", self.connection)
        self.provider_id = _selectable(QLabel(self))
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
        self.config_path = _selectable(QLabel(self))
        self.config_path.setWordWrap(True)
        form.addRow("Settings file", self.config_path)
        layout.addLayout(form)
        layout.addWidget(
            _note(
                "The public key identifies this computer to the coordinator; the private key never "
                "leaves it. Changing the URL reconnects at once when you apply.",
                self,
            )
        )
        layout.addStretch(1)
        self.url.textEdited.connect(window.mark_dirty)
        self.insecure.toggled.connect(window.mark_dirty)

    def load(self, agent: Agent, sandbox: bool) -> None:
        self.show_config(
            agent.config.coordinator.url, agent.allow_insecure, agent.config_path, sandbox
        )
        self.refresh(agent)

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
        _mark(self.url, self.url_error, None)

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

    def collect(self) -> tuple[str, bool, list[Problem]]:
        url = self.url.text().strip()
        insecure = self.insecure.isChecked()
        message: str | None = None
        if not url:
            message = "enter the coordinator URL (wss://...)"
        else:
            try:
                validate_coordinator_url(url, allow_insecure=insecure)
            except ConfigError as exc:
                message = exc.message.removeprefix("coordinator.url: ")
        _mark(self.url, self.url_error, message)
        problems = [] if message is None else [Problem("coordinator", self.url, message)]
        return url, insecure, problems


# ============================================================================== Backends


@dataclass(slots=True)
class BackendStatus:
    text: str
    tone: str  # ok | error | warning | info
    latency_ms: float | None = None
    models: str = ""
    #: The status cell's tooltip when it says more than the text.
    detail: str = ""


class BackendsTab(QWidget):
    #: The draft list of entries changed (the API keys and pricing tabs follow it).
    entriesChanged = Signal()

    COLUMNS = ("Backend", "Status", "Latency", "Models")

    def __init__(self, window: SettingsWindow) -> None:
        super().__init__(window)
        self.window_ = window
        self.entries: list[BackendConfig] = []
        self.reported: dict[Identity, list[str]] = {}
        self.status: dict[Identity, BackendStatus] = {}
        self.applied: set[Identity] = set()
        #: Dialogs open right now (kept referenced; tests reach them here).
        self.dialog: BackendDialog | DetectDialog | None = None
        self._busy: set[str] = set()

        layout = QVBoxLayout(self)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        top = QWidget(splitter)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        self.table = QTableWidget(0, len(self.COLUMNS), top)
        self.table.setObjectName("backendsTable")
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.itemDoubleClicked.connect(lambda _item: self.edit())
        top_layout.addWidget(self.table)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("Add…", top)
        self.add_button.setObjectName("addBackend")
        self.edit_button = QPushButton("Edit…", top)
        self.edit_button.setObjectName("editBackend")
        self.remove_button = QPushButton("Remove", top)
        self.remove_button.setObjectName("removeBackend")
        self.test_button = QPushButton("Test", top)
        self.test_button.setObjectName("testBackend")
        self.detect_button = QPushButton("Detect local servers", top)
        self.detect_button.setObjectName("detectBackends")
        for button in (self.add_button, self.edit_button, self.remove_button, self.test_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.detect_button)
        top_layout.addLayout(buttons)
        self.result = plain(QLabel(top))
        self.result.setObjectName("backendResult")
        self.result.setWordWrap(True)
        self.result.hide()
        top_layout.addWidget(self.result)
        self.add_button.clicked.connect(self.add)
        self.edit_button.clicked.connect(self.edit)
        self.remove_button.clicked.connect(self.remove)
        self.test_button.clicked.connect(self.test)
        self.detect_button.clicked.connect(self.detect)

        self.allow_box = QGroupBox("Allow-list", splitter)
        allow_layout = QVBoxLayout(self.allow_box)
        self.allow_hint = _note(
            "Tick the models this backend may offer. None ticked = offer every model it "
            "reports. The list shows what the backend reports right now.",
            self.allow_box,
        )
        allow_layout.addWidget(self.allow_hint)
        self.allow_notice = plain(QLabel(self.allow_box))
        self.allow_notice.setWordWrap(True)
        self.allow_notice.hide()
        allow_layout.addWidget(self.allow_notice)
        self.allow_list = QListWidget(self.allow_box)
        self.allow_list.setObjectName("allowList")
        self.allow_list.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.allow_list.itemChanged.connect(self._allow_item_changed)
        allow_layout.addWidget(self.allow_list)
        splitter.addWidget(top)
        splitter.addWidget(self.allow_box)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout.addWidget(splitter)
        self._selection_changed()

    # ---- loading

    def load(self, config: Config, discovery: Any) -> None:
        self.entries = list(config.backends)
        self.applied = {b.identity for b in config.backends}
        self.status = {}
        self.update_from_discovery(discovery, rebuild=False)
        self.rebuild()

    def update_from_discovery(self, discovery: Any, *, rebuild: bool = True) -> None:
        if discovery is None:
            return
        for report in getattr(discovery, "reports", []):
            ident = report.config.identity
            found = list(report.models_found)
            if found or report.status == "ok":
                self.reported[ident] = found
            self.status[ident] = _status_from_report(report)
        if rebuild:
            self.rebuild()

    def rebuild(self) -> None:
        selected = self.selected_index()
        self.table.setRowCount(len(self.entries))
        for row, entry in enumerate(self.entries):
            label = entry.label
            if self.window_.controller.is_demo_backend(label):
                label += "  (demo)"
            status = self.status.get(entry.identity)
            if entry.identity not in self.applied:
                status = status or BackendStatus("new: not applied yet", "info")
            status = status or BackendStatus("waiting for discovery…", "info")
            latency = "" if status.latency_ms is None else f"{status.latency_ms:.0f} ms"
            cells = (label, status.text, latency, status.models)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(
                    plain_tooltip(status.detail if col == 1 and status.detail else text)
                )
                if col == 1 and status.tone != "info":
                    colour = {"ok": OK_COLOUR, "error": ERROR_COLOUR, "warning": WARN_COLOUR}[
                        status.tone
                    ]
                    item.setForeground(QColor(colour))
                self.table.setItem(row, col, item)
        if selected is not None and selected < len(self.entries):
            self.table.selectRow(selected)
        elif self.entries and self.selected_index() is None:
            self.table.selectRow(0)
        self._selection_changed()

    def selected_index(self) -> int | None:
        rows = {index.row() for index in self.table.selectionModel().selectedRows()}
        return min(rows) if rows else None

    def select(self, index: int) -> None:
        self.table.selectRow(index)

    # ---- allow-list

    def _selection_changed(self) -> None:
        index = self.selected_index()
        has = index is not None
        self.edit_button.setEnabled(has)
        self.remove_button.setEnabled(has)
        self.test_button.setEnabled(has and "test" not in self._busy)
        self._fill_allow_list()

    def _fill_allow_list(self) -> None:
        index = self.selected_index()
        self.allow_list.blockSignals(True)
        self.allow_list.clear()
        set_tone(self.allow_notice, "")
        if index is None:
            self.allow_box.setTitle("Allow-list")
            self.allow_box.setEnabled(False)
            self.allow_list.blockSignals(False)
            return
        entry = self.entries[index]
        self.allow_box.setEnabled(True)
        self.allow_box.setTitle(f"Allow-list of {entry.label}")
        reported = self.reported.get(entry.identity, [])
        allowed = entry.models
        names = list(dict.fromkeys([*reported, *(allowed or ())]))
        for name in names:
            text = name if name in reported else f"{name}  (not reported now)"
            item = QListWidgetItem(text, self.allow_list)
            item.setToolTip(name)
            item.setData(Qt.ItemDataRole.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            checked = allowed is not None and name in allowed
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        if allowed is not None and len(allowed) == 0:
            set_tone(
                self.allow_notice,
                "agent.toml has `models = []` for this backend: it offers "
                "nothing. Tick models to offer them; leave all unticked to offer every "
                "model.",
                "warning",
            )
        elif not names:
            set_tone(
                self.allow_notice,
                "This backend reports no models right now. Use Test to ask it again.",
                "info",
            )
        elif allowed is None:
            set_tone(
                self.allow_notice,
                f"No allow-list: all {len(reported)} reported model(s) are offered.",
                "info",
            )
        else:
            set_tone(
                self.allow_notice, f"Only the {len(allowed)} ticked model(s) are offered.", "info"
            )
        self.allow_list.blockSignals(False)

    def _allow_item_changed(self, _item: QListWidgetItem) -> None:
        index = self.selected_index()
        if index is None:
            return
        checked = [
            str(self.allow_list.item(i).data(Qt.ItemDataRole.UserRole))
            for i in range(self.allow_list.count())
            if self.allow_list.item(i).checkState() == Qt.CheckState.Checked
        ]
        models = tuple(checked) if checked else None  # none ticked = no key = all models
        entry = self.entries[index]
        if entry.models != models:
            self.entries[index] = _replace_backend(entry, models=models)
            self.window_.mark_dirty()
            self.entriesChanged.emit()
        self._fill_allow_list()

    def set_allowed(self, index: int, models: Sequence[str] | None) -> None:
        """Tick exactly `models` in entry `index` (None: none ticked), as a user would."""
        self.select(index)
        wanted = set(models or ())
        for i in range(self.allow_list.count()):
            item = self.allow_list.item(i)
            state = (
                Qt.CheckState.Checked
                if item.data(Qt.ItemDataRole.UserRole) in wanted
                else Qt.CheckState.Unchecked
            )
            if item.checkState() != state:
                item.setCheckState(state)

    # ---- add / edit / remove

    def _duplicate_check(self, skip: int | None) -> Any:
        def check(candidate: BackendConfig) -> str | None:
            for i, entry in enumerate(self.entries):
                if i != skip and entry.identity == candidate.identity:
                    return f"{entry.label} is already in the list"
            return None

        return check

    def add(self) -> BackendDialog:
        dialog = BackendDialog(self, duplicate_check=self._duplicate_check(None))
        dialog.finished.connect(lambda result: self._dialog_done(dialog, result, None))
        self.dialog = dialog
        dialog.open()
        return dialog

    def edit(self) -> BackendDialog | None:
        index = self.selected_index()
        if index is None:
            return None
        dialog = BackendDialog(
            self, self.entries[index], duplicate_check=self._duplicate_check(index)
        )
        dialog.finished.connect(lambda result: self._dialog_done(dialog, result, index))
        self.dialog = dialog
        dialog.open()
        return dialog

    def _dialog_done(self, dialog: BackendDialog, result: int, index: int | None) -> None:
        self.dialog = None
        dialog.deleteLater()
        entry = dialog.result_backend
        if not result or entry is None:
            return
        if index is None:
            self.entries.append(entry)
            index = len(self.entries) - 1
        else:
            old = self.entries[index]
            if old.identity != entry.identity:
                self.status.pop(old.identity, None)
            self.entries[index] = entry
        self.window_.mark_dirty()
        self.rebuild()
        self.select(index)
        self.entriesChanged.emit()

    def remove(self) -> None:
        index = self.selected_index()
        if index is None:
            return
        entry = self.entries.pop(index)
        self.window_.mark_dirty()
        self.rebuild()
        if self.entries:
            self.select(min(index, len(self.entries) - 1))
        note = " Its API key stays in the keyring (API keys tab)." if entry.is_remote else ""
        set_tone(self.result, f"Removed {entry.label} (Apply to save).{note}", "info")
        self.entriesChanged.emit()

    # ---- test / detect

    def test(self) -> None:
        index = self.selected_index()
        agent = self.window_.agent
        if index is None or agent is None:
            return
        entry = self.entries[index]
        self._busy.add("test")
        self.test_button.setEnabled(False)
        self.status[entry.identity] = BackendStatus("testing…", "info")
        self.rebuild()
        set_tone(self.result, f"Testing {entry.label}…", "info")

        def done(result: Any) -> None:
            self._busy.discard("test")
            ms = "" if result.latency_ms is None else f" in {result.latency_ms:.0f} ms"
            if result.ok:
                self.reported[entry.identity] = list(result.models)
                self.status[entry.identity] = BackendStatus(
                    "test ok", "ok", result.latency_ms, f"{len(result.models)} found"
                )
                set_tone(
                    self.result,
                    f"{entry.label}: answered{ms}; "
                    f"{len(result.models)} model(s): " + _short_list(result.models),
                    "ok",
                )
            else:
                self.status[entry.identity] = BackendStatus(
                    f"test failed: {result.detail}", "error", result.latency_ms
                )
                set_tone(self.result, f"{entry.label}: {result.detail}", "error")
            self.rebuild()
            self.window_.pricing_tab.refresh_rows()

        def failed(error: UserFacingError) -> None:
            self._busy.discard("test")
            self.status[entry.identity] = BackendStatus(f"test failed: {error}", "error")
            set_tone(self.result, f"{entry.label}: {error}", "error")
            self.rebuild()

        async def run_test() -> Any:
            try:
                return await agent.test_backend(entry)
            except UserFacingError:
                raise
            except Exception:
                self._busy.discard("test")
                self.status[entry.identity] = BackendStatus("test failed", "error")
                self.rebuild()
                raise

        tasks.spawn(run_test(), name="test-backend", on_done=done, on_error=failed)

    def detect(self) -> None:
        agent = self.window_.agent
        if agent is None:
            return
        self.detect_button.setEnabled(False)
        set_tone(
            self.result,
            "Looking for vLLM (8000), llama.cpp (8080), LM Studio (1234) and "
            "Ollama (11434) on this computer…",
            "info",
        )

        def done(found: list[Any]) -> None:
            self.detect_button.setEnabled(True)
            known = {e.identity for e in self.entries}
            fresh = [p for p in found if (p.kind, p.url) not in known]
            for probe in found:
                self.reported[(probe.kind, probe.url)] = list(probe.models)
            if not found:
                set_tone(
                    self.result,
                    "No local inference server answered on the default "
                    "ports. Start one, or Add it with its URL.",
                    "warning",
                )
                return
            if not fresh:
                set_tone(self.result, "Found only servers that are already in the list.", "info")
                self.rebuild()
                return
            set_tone(self.result, f"Found {len(fresh)} new server(s).", "ok")
            dialog = DetectDialog(self, fresh)
            dialog.finished.connect(lambda result: self._detect_done(dialog, result))
            self.dialog = dialog
            dialog.open()

        def failed(error: UserFacingError) -> None:
            self.detect_button.setEnabled(True)
            set_tone(self.result, str(error), "error")

        async def run_probe() -> list[Any]:
            try:
                return await agent.probe_local()
            finally:
                self.detect_button.setEnabled(True)

        tasks.spawn(run_probe(), name="detect", on_done=done, on_error=failed)

    def _detect_done(self, dialog: DetectDialog, result: int) -> None:
        self.dialog = None
        dialog.deleteLater()
        if not result:
            return
        chosen = dialog.chosen()
        for probe in chosen:
            self.entries.append(BackendConfig(kind=probe.kind, url=probe.url))
        if chosen:
            self.window_.mark_dirty()
            self.rebuild()
            self.select(len(self.entries) - 1)
            set_tone(self.result, f"Added {len(chosen)} backend(s); Apply to save.", "ok")
            self.entriesChanged.emit()

    def collect(self) -> tuple[tuple[BackendConfig, ...], list[Problem]]:
        problems: list[Problem] = []
        seen: set[Identity] = set()
        for entry in self.entries:
            if entry.identity in seen:
                problems.append(
                    Problem("backends", self.table, f"{entry.label} is in the list twice")
                )
            seen.add(entry.identity)
        mark_invalid(self.table, problems[0].message if problems else None)
        return tuple(self.entries), problems


def _short_list(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _replace_backend(entry: BackendConfig, **changes: Any) -> BackendConfig:
    from dataclasses import replace

    return replace(entry, **changes)


def _status_from_report(report: Any) -> BackendStatus:
    status = report.status
    found = len(report.models_found)
    offered = len(report.models_advertised)
    models = f"{offered} of {found} offered" if found else ""
    if status == "ok":
        paths_ = [w for w in report.warnings if "looks like a local file path" in w]
        if paths_:  # users would see the operator's directories as the model id
            return BackendStatus(
                "up; a model id is a file path",
                "warning",
                report.latency_ms,
                models,
                "\n".join(paths_),
            )
        return BackendStatus("up", "ok", report.latency_ms, models)
    if status == "loading":
        return BackendStatus(f"loading: {report.detail}", "warning", report.latency_ms)
    if status == "no_key":
        return BackendStatus("no API key", "warning")
    if status == "unreachable":
        return BackendStatus(f"unreachable: {report.detail}", "error", report.latency_ms)
    return BackendStatus(f"error: {report.detail}", "error", report.latency_ms)


# ============================================================================== Pricing


@dataclass(slots=True)
class ModelRow:
    model_id: str
    backend: str  # kind, or "" when not discovered
    upstream: Any = None  # UpstreamPrice (Decimal micro-USD per 1M) or None
    below_cost: bool = False
    entry: tuple[str, str | None] | None = None  # identity of the entry that serves it


class PricingTab(QWidget):
    COLUMNS = (
        "Model",
        "Backend",
        "Input $/1M",
        "Output $/1M",
        f"You keep ({SHARE_PERCENT})",
        "Upstream cost",
        "Margin",
    )

    def __init__(self, window: SettingsWindow) -> None:
        super().__init__(window)
        self.window_ = window
        self.rows: list[ModelRow] = []
        #: model id -> [input text, output text] typed in the table (the draft overrides)
        self.texts: dict[str, list[str]] = {}
        self.row_edits: dict[str, tuple[QLineEdit, QLineEdit]] = {}
        self.advertised: dict[str, Any] = {}

        layout = QVBoxLayout(self)
        defaults = QGroupBox("Default prices (what users pay, dollars per million tokens)", self)
        grid = QGridLayout(defaults)
        self.default_in = QLineEdit(defaults)
        self.default_in.setObjectName("defaultInput")
        self.default_out = QLineEdit(defaults)
        self.default_out.setObjectName("defaultOutput")
        self.default_in_error = error_label(defaults)
        self.default_out_error = error_label(defaults)
        for edit in (self.default_in, self.default_out):
            edit.setMaximumWidth(140)
        grid.addWidget(QLabel("Input  $", defaults), 0, 0)
        grid.addWidget(self.default_in, 0, 1)
        grid.addWidget(QLabel("Output  $", defaults), 0, 2)
        grid.addWidget(self.default_out, 0, 3)
        grid.setColumnStretch(4, 1)
        grid.addWidget(self.default_in_error, 1, 0, 1, 5)
        grid.addWidget(self.default_out_error, 2, 0, 1, 5)
        self.keep_label = QLabel(defaults)
        grid.addWidget(self.keep_label, 3, 0, 1, 5)
        layout.addWidget(defaults)

        self.table = QTableWidget(0, len(self.COLUMNS), self)
        self.table.setObjectName("pricingTable")
        # long ids (org/model-name-…-GGUF, local paths) keep both ends; the tooltip has it all
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, len(self.COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        for col in (2, 3):  # room for "0.50 (default)" typed or as a placeholder
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Fixed)
            header.resizeSection(col, 130)
        layout.addWidget(self.table, 1)
        add_row = QHBoxLayout()
        self.new_model = QLineEdit(self)
        self.new_model.setObjectName("newPriceModel")
        self.new_model.setPlaceholderText("model id, e.g. meta-llama/Llama-3.3-70B-Instruct")
        self.add_model = QPushButton("Add a price for this model", self)
        self.add_model.clicked.connect(self._add_model)
        add_row.addWidget(self.new_model, 1)
        add_row.addWidget(self.add_model)
        layout.addLayout(add_row)
        # [model_aliases]: offer a model under another id (a llama.cpp file path, say)
        alias_row = QHBoxLayout()
        alias_row.addWidget(QLabel("Offer", self))
        self.alias_source = QComboBox(self)
        self.alias_source.setObjectName("aliasSource")
        self.alias_source.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.alias_source.setMinimumContentsLength(24)
        self.alias_source.currentIndexChanged.connect(self._alias_source_changed)
        alias_row.addWidget(self.alias_source, 1)
        alias_row.addWidget(QLabel("as", self))
        self.alias_edit = QLineEdit(self)
        self.alias_edit.setObjectName("aliasId")
        self.alias_edit.setPlaceholderText("the model id users see (empty: the backend's own)")
        alias_row.addWidget(self.alias_edit, 1)
        self.alias_set = QPushButton("Set", self)
        self.alias_set.setObjectName("aliasSet")
        self.alias_set.clicked.connect(self._set_alias)
        alias_row.addWidget(self.alias_set)
        layout.addLayout(alias_row)
        #: The draft `[model_aliases]`: a backend's own model id -> the id to advertise.
        self.aliases: dict[str, str] = {}
        self.backend_ids: list[str] = []
        self.problems = error_label(self)
        self.problems.setObjectName("pricingProblems")
        layout.addWidget(self.problems)
        layout.addWidget(
            _note(
                "Empty cells use the defaults; for OpenRouter / Venice models without a price of "
                f"their own, the upstream cost ÷ {SHARE_TEXT} × (1 + markup), so your share "
                f"covers it. Users pay the listed price; you receive {SHARE_PERCENT} (figures "
                "are estimates: the coordinator bills from its own token count). A negative "
                "margin, in red, means you would pay more upstream than you earn.",
                self,
            )
        )
        for edit in (self.default_in, self.default_out):
            edit.textChanged.connect(self._defaults_edited)

    # ---- loading

    def load(self, config: Config, discovery: Any) -> None:
        self.aliases = dict(config.model_aliases)
        self.default_in.setText(_field(config.pricing.default_input_per_1m))
        self.default_out.setText(_field(config.pricing.default_output_per_1m))
        self.texts = {
            model_id: [_field(p.input_per_1m), _field(p.output_per_1m)]
            for model_id, p in config.pricing.models.items()
        }
        for edit, label in (
            (self.default_in, self.default_in_error),
            (self.default_out, self.default_out_error),
        ):
            _mark(edit, label, None)
        set_error(self.problems, None)
        self.rows = []  # rebuild the cells: their texts come from the loaded config
        self.set_discovery(discovery)

    def set_discovery(self, discovery: Any) -> None:
        self.advertised = {m.model_id: m for m in getattr(discovery, "models", []) or []}
        found = [mid for r in getattr(discovery, "reports", []) or [] for mid in r.models_found]
        self.backend_ids = sorted(set(found) | set(self.aliases))
        self._fill_alias_sources()
        self.refresh_rows()

    def _fill_alias_sources(self) -> None:
        from usepod_desktop.core.discovery import looks_like_a_path

        current = self.alias_source.currentData()
        self.alias_source.blockSignals(True)
        self.alias_source.clear()
        # file paths first: they are what needs a name
        for mid in sorted(self.backend_ids, key=lambda m: (not looks_like_a_path(m), m)):
            shown = elide_middle(mid, 60)
            if mid in self.aliases:
                shown += f"  (offered as {self.aliases[mid]})"
            self.alias_source.addItem(shown, mid)
            self.alias_source.setItemData(
                self.alias_source.count() - 1, mid, Qt.ItemDataRole.ToolTipRole
            )
        unnamed = [m for m in self.backend_ids if looks_like_a_path(m) and m not in self.aliases]
        if unnamed and current not in unnamed and current not in self.aliases:
            current = min(unnamed)  # what needs a name comes up by itself
        index = self.alias_source.findData(current)
        self.alias_source.setCurrentIndex(max(index, 0))
        self.alias_source.blockSignals(False)
        self._alias_source_changed()

    def _alias_source_changed(self, *_args: object) -> None:
        source = self.alias_source.currentData()
        self.alias_edit.setText(self.aliases.get(source, "") if source else "")

    def set_alias(self, backend_id: str, advertised: str) -> None:
        """Offer `backend_id` as `advertised` (empty: under its own id); applied with Apply."""
        advertised = advertised.strip()
        if advertised and advertised != backend_id:
            self.aliases[backend_id] = advertised
        else:
            self.aliases.pop(backend_id, None)
        self.window_.mark_dirty()
        self._fill_alias_sources()

    def _set_alias(self) -> None:
        source = self.alias_source.currentData()
        if source:
            self.set_alias(source, self.alias_edit.text())

    def refresh_rows(self) -> None:
        """Rows: every advertised model, plus every model with a price of its own."""
        rows: dict[str, ModelRow] = {}
        for model_id, model in self.advertised.items():
            served_by = getattr(getattr(model, "backend_ref", None), "config", None)
            rows[model_id] = ModelRow(
                model_id,
                model.backend,
                model.upstream,
                model.below_cost,
                getattr(served_by, "identity", None),
            )
        for model_id in self.texts:
            rows.setdefault(model_id, ModelRow(model_id, ""))
        ordered = sorted(rows.values(), key=lambda r: r.model_id)
        if [r.model_id for r in ordered] == [r.model_id for r in self.rows]:
            self.rows = ordered
            self.recompute()
            return
        self.rows = ordered
        self.row_edits = {}
        self.table.setRowCount(len(ordered))
        for i, row in enumerate(ordered):
            item = QTableWidgetItem(row.model_id)
            item.setToolTip(row.model_id)
            self.table.setItem(i, 0, item)
            backend = (
                KIND_LABELS.get(row.backend, row.backend).split(" (")[0]
                if row.backend
                else "not offered now"
            )
            self.table.setItem(i, 1, QTableWidgetItem(backend))
            texts = self.texts.get(row.model_id, ["", ""])
            edits = []
            for col, text in ((2, texts[0]), (3, texts[1])):
                edit = QLineEdit(self.table)
                edit.setFrame(False)
                edit.setText(text)
                edit.setObjectName(f"price:{row.model_id}:{'in' if col == 2 else 'out'}")
                edit.textEdited.connect(
                    lambda value, m=row.model_id, c=col - 2: self._cell_edited(m, c, value)
                )
                self.table.setCellWidget(i, col, edit)
                edits.append(edit)
            self.row_edits[row.model_id] = (edits[0], edits[1])
            for col in (4, 5, 6):
                self.table.setItem(i, col, QTableWidgetItem(""))
        self.recompute()

    def _add_model(self) -> None:
        model_id = self.new_model.text().strip()
        if not model_id:
            return
        if model_id not in self.texts:
            self.texts[model_id] = ["", ""]
        self.new_model.clear()
        self.refresh_rows()
        edits = self.row_edits.get(model_id)
        if edits is not None:
            edits[0].setFocus()

    def _cell_edited(self, model_id: str, column: int, value: str) -> None:
        self.texts.setdefault(model_id, ["", ""])[column] = value
        self.window_.mark_dirty()
        self.recompute()
        self.check_as_typed()

    def _defaults_edited(self) -> None:
        self.window_.mark_dirty()
        self.recompute()
        self.check_as_typed()

    def check_as_typed(self) -> None:
        """Mark each price that cannot be stored while it is typed (Apply still checks the
        rest, e.g. a row with only one of its two prices)."""
        problems: list[str] = []
        for edit, label, name in (
            (self.default_in, self.default_in_error, "Default input"),
            (self.default_out, self.default_out_error, "Default output"),
        ):
            try:
                parse_usd_per_1m(edit.text())
                _mark(edit, label, None)
            except PriceError as exc:
                _mark(edit, label, str(exc))
                problems.append(f"{name} price: {exc}")
        for model_id, (edit_in, edit_out) in self.row_edits.items():
            for side, widget in (("input", edit_in), ("output", edit_out)):
                text = widget.text()
                try:
                    if text.strip():
                        parse_usd_per_1m(text)
                    mark_invalid(widget, None)
                except PriceError as exc:
                    mark_invalid(widget, str(exc))
                    problems.append(f"{model_id} {side}: {exc}")
        set_error(self.problems, "\n".join(problems) or None)

    def set_price(self, model_id: str, input_text: str, output_text: str) -> None:
        """Type a price into a model's row (adding the row when needed), as a user would."""
        if model_id not in self.row_edits:
            self.texts.setdefault(model_id, ["", ""])
            self.refresh_rows()
        edit_in, edit_out = self.row_edits[model_id]
        for column, (edit, text) in enumerate(((edit_in, input_text), (edit_out, output_text))):
            edit.setText(text)
            self._cell_edited(model_id, column, text)

    # ---- the computed columns

    def _draft_defaults(self) -> tuple[int | None, int | None]:
        out: list[int | None] = []
        for edit in (self.default_in, self.default_out):
            try:
                out.append(parse_usd_per_1m(edit.text()))
            except PriceError:
                out.append(None)
        return out[0], out[1]

    def _markup_for(self, row: ModelRow) -> float | None:
        """The draft markup of the entry serving `row` (else the first entry of its kind)."""
        entries = self.window_.backends_tab.entries
        for entry in entries:
            if row.entry is not None and entry.identity == row.entry:
                return entry.markup
        for entry in entries:
            if entry.kind == row.backend:
                return entry.markup
        return None

    def effective(self, row: ModelRow) -> tuple[int | None, int | None, str]:
        """(input, output, where it comes from) of the price users would pay for `row`, by the
        core's rule (`core/money.py` `resolve_price`) applied to the draft."""
        texts = self.texts.get(row.model_id, ["", ""])
        explicit: dict[str, ModelPrice] = {}
        if texts[0].strip() or texts[1].strip():
            try:
                explicit[row.model_id] = ModelPrice(
                    parse_usd_per_1m(texts[0]), parse_usd_per_1m(texts[1])
                )
            except PriceError:
                return None, None, "invalid"
        remote = row.backend in REMOTE_KINDS
        d_in, d_out = self._draft_defaults()
        if not explicit and not remote and (d_in is None or d_out is None):
            return d_in, d_out, "default"  # a default being typed is not a price yet
        draft = PricingConfig(d_in or 0, d_out or 0, explicit)
        choice = resolve_price(
            row.model_id, row.upstream, draft, remote=remote, markup=self._markup_for(row)
        )
        if choice.price is None:
            return None, None, f"not offered: {choice.reason}"
        source = {"explicit": "your price", "default": "default"}.get(choice.source or "")
        return choice.price.input_per_1m, choice.price.output_per_1m, source or "upstream"

    def recompute(self) -> None:
        d_in, d_out = self._draft_defaults()
        if d_in is not None and d_out is not None:
            self.keep_label.setText(
                f"You keep {SHARE_PERCENT}: {format_rate(provider_share_of(d_in), places=6)} "
                f"input / {format_rate(provider_share_of(d_out), places=6)} "
                "output per million tokens."
            )
        else:
            self.keep_label.setText("")
        for i, row in enumerate(self.rows):
            p_in, p_out, source = self.effective(row)
            edits = self.row_edits.get(row.model_id)
            if edits is not None:
                for edit, value in zip(edits, (p_in, p_out), strict=True):
                    hint = "" if value is None else f"{_field(value)} ({source})"
                    edit.setPlaceholderText(hint if source != "your price" else "")
            keep = margin = upstream = ""
            negative = False
            if p_in is not None and p_out is not None:
                k_in, k_out = provider_share_of(p_in), provider_share_of(p_out)
                keep = f"{_shown(k_in)} / {_shown(k_out)}"
                if row.upstream is not None:
                    m_in = k_in - row.upstream.input_per_1m
                    m_out = k_out - row.upstream.output_per_1m
                    negative = m_in < 0 or m_out < 0
                    margin = f"{_signed(m_in)} / {_signed(m_out)}"
            elif source.startswith("not offered"):
                keep = source
            if row.upstream is not None:
                upstream = (
                    f"{_shown(row.upstream.input_per_1m)} / {_shown(row.upstream.output_per_1m)}"
                )
            for col, text in ((4, keep), (5, upstream), (6, margin)):
                item = self.table.item(i, col)
                if item is None:
                    continue
                item.setText(text)
                if col == 6:
                    item.setForeground(
                        QColor(ERROR_COLOUR) if negative else self.table.palette().text().color()
                    )
                    item.setToolTip(
                        "Below cost: you would earn less than you pay upstream" if negative else ""
                    )

    # ---- validation

    def collect(self) -> tuple[PricingConfig | None, list[Problem]]:
        problems: list[Problem] = []
        defaults: list[int] = []
        for edit, label, name in (
            (self.default_in, self.default_in_error, "Default input"),
            (self.default_out, self.default_out_error, "Default output"),
        ):
            try:
                defaults.append(parse_usd_per_1m(edit.text()))
                _mark(edit, label, None)
            except PriceError as exc:
                _mark(edit, label, str(exc))
                problems.append(Problem("pricing", edit, f"{name} price: {exc}"))
        overrides: dict[str, ModelPrice] = {}
        for model_id, texts in sorted(self.texts.items()):
            edits = self.row_edits.get(model_id)
            if not texts[0].strip() and not texts[1].strip():
                if edits is not None:
                    mark_invalid(edits[0], None)
                    mark_invalid(edits[1], None)
                continue
            values: list[int] = []
            for column, text in enumerate(texts):
                side = "input" if column == 0 else "output"
                widget = edits[column] if edits is not None else None
                try:
                    if not text.strip():
                        raise PriceError("enter both prices, or clear both to use the defaults")
                    values.append(parse_usd_per_1m(text))
                    if widget is not None:
                        mark_invalid(widget, None)
                except PriceError as exc:
                    if widget is not None:
                        mark_invalid(widget, str(exc))
                    problems.append(Problem("pricing", widget, f"{model_id} {side}: {exc}"))
            if len(values) == 2:
                overrides[model_id] = ModelPrice(values[0], values[1])
        set_error(self.problems, "\n".join(p.message for p in problems) or None)
        if problems:
            return None, problems
        return PricingConfig(defaults[0], defaults[1], overrides), []


def _field(micro: int) -> str:
    """A price as typed in a price field (`0.50`)."""
    return format_rate(micro, dollar=False)


def _shown(micro: Decimal) -> str:
    """A figure in the $/1M columns, to the micro-dollar (`0.123457`)."""
    return format_rate(micro, dollar=False, places=6)


def _signed(micro: Decimal) -> str:
    text = _shown(abs(micro))
    return f"−{text}" if micro < 0 else f"+{text}"


# ============================================================================== API keys


@dataclass(slots=True)
class KeyRow:
    name: str
    label: QLabel
    status: QLabel
    edit: QLineEdit
    save: QPushButton
    delete: QPushButton


class KeysTab(QWidget):
    def __init__(self, window: SettingsWindow) -> None:
        super().__init__(window)
        self.window_ = window
        self.rows: dict[str, KeyRow] = {}
        self.statuses: dict[str, Any] = {}
        layout = QVBoxLayout(self)
        layout.addWidget(
            _note(
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
        self.empty = _note(
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


# ============================================================================== Limits


class LimitsTab(QWidget):
    def __init__(self, window: SettingsWindow) -> None:
        super().__init__(window)
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.max_concurrent = QSpinBox(self)
        self.max_concurrent.setObjectName("maxConcurrent")
        lo, hi = MAX_CONCURRENT_RANGE
        self.max_concurrent.setRange(lo, hi)
        self.max_concurrent.setMaximumWidth(120)
        self.max_concurrent_error = error_label(self)
        form.addRow("Jobs at the same time", self.max_concurrent)
        form.addRow("", self.max_concurrent_error)
        self.tpm = QLineEdit(self)
        self.tpm.setObjectName("tokensPerMinute")
        self.tpm.setPlaceholderText("no limit")
        self.tpm.setMaximumWidth(200)
        self.tpm_error = error_label(self)
        form.addRow("Tokens per minute", self.tpm)
        form.addRow("", self.tpm_error)
        layout.addLayout(form)
        layout.addWidget(
            _note(
                f"Jobs at the same time: {lo} to {hi}; more are refused so the coordinator sends "
                "them elsewhere. Tokens per minute (input + output, over the last minute): leave "
                "empty for no limit; running jobs are never cut off.",
                self,
            )
        )
        layout.addStretch(1)
        self.max_concurrent.valueChanged.connect(window.mark_dirty)
        self.tpm.textEdited.connect(window.mark_dirty)

    def load(self, config: Config) -> None:
        self.max_concurrent.blockSignals(True)
        self.max_concurrent.setValue(config.limits.max_concurrent)
        self.max_concurrent.blockSignals(False)
        tpm = config.limits.max_tokens_per_minute
        self.tpm.setText("" if tpm is None else f"{tpm:_}")
        _mark(self.tpm, self.tpm_error, None)
        _mark(self.max_concurrent, self.max_concurrent_error, None)

    def collect(self) -> tuple[LimitsConfig | None, list[Problem]]:
        problems: list[Problem] = []
        value = self.max_concurrent.value()
        lo, hi = MAX_CONCURRENT_RANGE
        if not lo <= value <= hi:  # the spin box clamps; kept for a programmatic value
            _mark(self.max_concurrent, self.max_concurrent_error, f"between {lo} and {hi}")
            problems.append(Problem("limits", self.max_concurrent, f"between {lo} and {hi}"))
        text = self.tpm.text().strip().replace("_", "").replace(",", "").replace(" ", "")
        tpm: int | None = None
        message: str | None = None
        if text:
            if not re.fullmatch(r"\d+", text):
                message = "a whole number of tokens, or empty for no limit"
            else:
                tpm = int(text)
                if tpm <= 0:
                    message = "more than 0, or empty for no limit"
                elif tpm > 10**12:
                    message = "that is more than a trillion tokens per minute; check it"
        _mark(self.tpm, self.tpm_error, message)
        if message:
            problems.append(Problem("limits", self.tpm, f"Tokens per minute: {message}"))
        if problems:
            return None, problems
        return LimitsConfig(max_concurrent=value, max_tokens_per_minute=tpm), []


# ============================================================================== App


class AppTab(QWidget):
    """Start at login and the notification switches: applied at once (not in agent.toml)."""

    def __init__(self, window: SettingsWindow) -> None:
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
            _note(
                f"These apply at once and are kept in {controller.prefs.path}, not in agent.toml.",
                self,
            )
        )
        layout.addStretch(1)
        controller.statusChanged.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        supported, _ = self.controller.autostart_supported()
        self.autostart.blockSignals(True)
        self.autostart.setChecked(supported and self.controller.start_at_login())
        self.autostart.blockSignals(False)


# ============================================================================== the window


class SettingsWindow(QWidget):
    #: Emitted after a successful save (the new config is in effect).
    saved = Signal()

    def __init__(self, controller: AppController) -> None:
        super().__init__(None, Qt.WindowType.Window)
        self.controller = controller
        self.setObjectName("settingsWindow")
        title = "Use Pod settings (sandbox)" if controller.sandbox else "Use Pod settings"
        self.setWindowTitle(title)
        self.setWindowIcon(app_icon())
        self.setStyleSheet(INVALID_STYLE)
        self.resize(920, 620)
        self.dirty = False
        self.saving = False

        layout = QVBoxLayout(self)
        self.sandbox_banner = QLabel(
            "Sandbox mode: a local coordinator sends demo jobs; nothing is paid. Changes are "
            "saved to the sandbox's own agent.toml, not to yours.",
            self,
        )
        self.sandbox_banner.setWordWrap(True)
        self.sandbox_banner.setStyleSheet(
            "QLabel { background: #fff3cd; color: #664d03; padding: 6px; border-radius: 4px; }"
        )
        self.sandbox_banner.setVisible(controller.sandbox)
        layout.addWidget(self.sandbox_banner)
        #: agent.toml did not validate: why, above a best-effort draft of it (see load()).
        self.load_error = QLabel(self)
        self.load_error.setObjectName("configLoadError")
        self.load_error.setWordWrap(True)
        self.load_error.setTextFormat(Qt.TextFormat.PlainText)
        self.load_error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.load_error.setStyleSheet(
            f"QLabel {{ color: {ERROR_COLOUR}; border: 1px solid {ERROR_COLOUR}; padding: 6px; "
            "border-radius: 4px; }"
        )
        self.load_error.setVisible(False)
        layout.addWidget(self.load_error)
        #: Set while there is no agent because agent.toml is invalid: what could be read.
        self.draft: ConfigDraft | None = None
        self.draft_path: Path | None = None
        self.tabs = QTabWidget(self)
        self.coordinator_tab = CoordinatorTab(self)
        self.backends_tab = BackendsTab(self)
        self.pricing_tab = PricingTab(self)
        self.keys_tab = KeysTab(self)
        self.limits_tab = LimitsTab(self)
        from usepod_desktop.gui.serving_tab import ServingTab

        self.serving_tab = ServingTab(self)
        self.app_tab = AppTab(self)
        self.tabs.addTab(self.coordinator_tab, "Coordinator")
        self.tabs.addTab(self.backends_tab, "Backends")
        self.tabs.addTab(self.pricing_tab, "Pricing")
        self.tabs.addTab(self.keys_tab, "API keys")
        self.tabs.addTab(self.limits_tab, "Limits")
        self.tabs.addTab(self.serving_tab, "Serving rules")
        self.tabs.addTab(self.app_tab, "App")
        layout.addWidget(self.tabs, 1)

        bottom = QHBoxLayout()
        self.message = QLabel(self)
        self.message.setObjectName("settingsMessage")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        bottom.addWidget(self.message, 1)
        self.revert_button = QPushButton("Revert", self)
        self.revert_button.setObjectName("revertButton")
        self.revert_button.clicked.connect(self.revert)
        self.apply_button = QPushButton("Apply", self)
        self.apply_button.setObjectName("applyButton")
        self.apply_button.setDefault(True)
        self.apply_button.clicked.connect(self.apply)
        self.close_button = QPushButton("Close", self)
        self.close_button.clicked.connect(self.close)
        for button in (self.revert_button, self.apply_button, self.close_button):
            bottom.addWidget(button)
        layout.addLayout(bottom)

        #: The last save was refused because agent.toml changed on disk: Revert reloads it.
        self.file_changed = False
        self.backends_tab.entriesChanged.connect(self._entries_changed)
        bridge = controller.bridge
        bridge.stateChanged.connect(self._state_changed)
        bridge.discoveryCompleted.connect(self._discovery_completed)
        bridge.configReloaded.connect(self._config_reloaded)
        controller.agentChanged.connect(self._agent_changed)
        self.load()

    @property
    def agent(self) -> Agent | None:
        return self.controller.agent

    # ---- loading / state

    def load(self) -> None:
        agent = self.agent
        if agent is None:
            self._load_draft()
            return
        self.draft = self.draft_path = None
        self.load_error.setVisible(False)
        self.coordinator_tab.load(agent, self.controller.sandbox)
        view = agent.snapshot()
        self.backends_tab.load(agent.config, view if view.discovered else None)
        self.pricing_tab.load(agent.config, view if view.discovered else None)
        self.limits_tab.load(agent.config)
        self.serving_tab.load(agent.config)
        self._entries_changed()
        self.dirty = False
        self.set_message("")

    def _load_draft(self) -> None:
        """No agent because agent.toml does not validate: show what could be read, the load
        error on top and each invalid field marked. Apply writes the file once it is valid
        (the original stays byte-identical until then), and the agent starts from it."""
        controller = self.controller
        draft, path = controller.config_draft(), controller.config_problem_path
        if draft is None or path is None:
            return
        self.draft, self.draft_path = draft, path
        config = draft.config
        insecure = controller.options.allow_insecure or controller.prefs.allow_insecure
        self.coordinator_tab.show_config(config.coordinator.url, insecure, path, controller.sandbox)
        self.coordinator_tab.provider_id.setText("(once agent.toml is valid)")
        self.coordinator_tab.public_key.setText("")
        self.coordinator_tab.copy_key.setEnabled(False)
        self.coordinator_tab.show_state(controller.state, controller.reason)
        self.backends_tab.load(config, None)
        self.pricing_tab.load(config, None)
        self.limits_tab.load(config)
        self.serving_tab.load(config)
        self._entries_changed()
        self.dirty = False
        self.set_message("")
        if not draft.problems:
            self.load_error.setVisible(False)
            return
        lines = [f"{path} could not be loaded:"]
        lines += [f"• {problem.message}" for problem in draft.problems]
        lines.append(
            "Below is what could be read; the marked fields were reset. Fix them and Apply: "
            "the file is written only once it is valid, and the agent then starts."
        )
        self.load_error.setText("\n".join(lines))
        self.load_error.setVisible(True)
        tabs = [self._mark_field(problem) for problem in draft.problems]
        first = next((tab for tab in tabs if tab is not None), None)
        if first is not None:
            self.select_tab(first)

    def _agent_changed(self) -> None:
        if self.agent is not None and self.draft is not None and not self.saving:
            path = self.draft_path
            self.load()  # the agent started from the fixed file: its settings now
            self.set_message(f"{SAVED_PREFIX}{path}; the agent has started with it.", "ok")

    def revert(self) -> None:
        agent = self.agent
        if self.file_changed and agent is not None:  # a save was refused: read the file again
            self.file_changed = False

            def reloaded(_: object) -> None:
                self.load()
                self.set_message(f"Reloaded {agent.config_path} as it is on disk.", "info")

            tasks.spawn(
                agent.reload_config(),
                name="reload-settings",
                on_done=reloaded,
                on_error=self.show_core_error,
            )
            return
        self.load()
        self.set_message("Reverted to the saved settings.", "info")

    def mark_dirty(self, *_args: object) -> None:
        self.dirty = True
        if self.message.text().startswith(SAVED_PREFIX):  # no longer true once edited
            set_tone(self.message, "", "info")

    def select_tab(self, name: str) -> None:
        self.tabs.setCurrentIndex(TAB_NAMES.index(name))

    def set_message(self, text: str, tone: str = "info") -> None:
        set_tone(self.message, text, tone)  # type: ignore[arg-type]
        self.message.setVisible(True)

    def _entries_changed(self) -> None:
        names = [
            e.api_key_env
            for e in self.backends_tab.entries
            if e.kind in REMOTE_KINDS and e.api_key_env
        ]
        self.keys_tab.set_names([n for n in names if n])
        self.pricing_tab.recompute()

    def _state_changed(self, event: StateChanged) -> None:
        if self.agent is not None:
            self.coordinator_tab.refresh(self.agent)
        else:
            self.coordinator_tab.show_state(event.state, event.reason)

    def _discovery_completed(self, event: Any) -> None:
        self.backends_tab.update_from_discovery(event.result)
        self.pricing_tab.set_discovery(event.result)

    def _config_reloaded(self, _event: object) -> None:
        if not self.dirty and not self.saving:
            self.load()

    # ---- apply

    def collect(self) -> tuple[Config | None, bool, list[Problem]]:
        """The draft as a Config (None when a field is invalid), the insecure flag, and the
        problems, each highlighted on its field."""
        agent = self.agent
        base = agent.config if agent is not None else self.draft.config if self.draft else None
        assert base is not None
        url, insecure, problems = self.coordinator_tab.collect()
        backends, more = self.backends_tab.collect()
        problems += more
        pricing, more = self.pricing_tab.collect()
        problems += more
        limits, more = self.limits_tab.collect()
        problems += more
        serving, found = self.serving_tab.collect(base.serving)
        problems += [Problem("serving", widget, message) for widget, message in found]
        if problems or pricing is None or limits is None or serving is None:
            return None, insecure, problems
        from dataclasses import replace

        config = base.replace(
            coordinator=replace(base.coordinator, url=url),
            backends=backends,
            pricing=pricing,
            limits=limits,
            serving=serving,
            model_aliases=dict(self.pricing_tab.aliases),
        )
        return config, insecure, []

    def apply(self) -> bool:
        """Validate everything; write nothing unless all of it is valid. Returns whether a
        save was started (or nothing needed saving)."""
        agent = self.agent
        if (agent is None and self.draft is None) or self.saving:
            return False
        config, insecure, problems = self.collect()
        if problems or config is None:
            first = problems[0]
            self.select_tab(first.tab)
            if first.widget is not None:
                first.widget.setFocus()
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            self.set_message(
                f"Nothing was saved. Fix the highlighted field: {first.message}{more}", "error"
            )
            return False
        if agent is None:
            return self._apply_draft(config, insecure)
        if config == agent.config and insecure == agent.allow_insecure:
            self.dirty = False
            self.set_message("No changes to save.", "info")
            return True
        self.saving = True
        self.apply_button.setEnabled(False)
        self.set_message("Saving…", "info")

        async def save() -> None:
            try:
                await agent.save_config(config, allow_insecure=insecure)
            except OSError as exc:
                raise UserFacingError(
                    f"cannot write {agent.config_path}: {exc.strerror or exc}",
                    title="Settings not saved",
                ) from exc
            except BaseException:
                self.saving = False  # an unexpected error: the excepthook shows it
                self.apply_button.setEnabled(True)
                raise
            if not self.controller.sandbox:
                self.controller.prefs.allow_insecure = insecure

        def done(_: object) -> None:
            self.saving = False
            self.apply_button.setEnabled(True)
            self.load()
            self.set_message(
                f"{SAVED_PREFIX}{agent.config_path}; the new settings are in effect.", "ok"
            )
            self.saved.emit()

        def failed(error: UserFacingError) -> None:
            self.saving = False
            self.apply_button.setEnabled(True)
            self.file_changed = isinstance(error, ConfigChangedError)  # Revert reloads it
            self.show_core_error(error)

        tasks.spawn(save(), name="save-settings", on_done=done, on_error=failed)
        return True

    def _apply_draft(self, config: Config, insecure: bool) -> bool:
        """Save the fixed draft (validated before anything is written; the save starts from
        the file's own text, comments kept), then start the agent from it."""
        path = self.draft_path
        assert path is not None
        self.saving = True
        self.apply_button.setEnabled(False)
        self.set_message("Saving…", "info")
        controller = self.controller

        async def save() -> None:
            try:
                await asyncio.to_thread(save_config, config, path, allow_insecure=insecure)
            except OSError as exc:
                raise UserFacingError(
                    f"cannot write {path}: {exc.strerror or exc}", title="Settings not saved"
                ) from exc
            except BaseException:
                self.saving = False
                self.apply_button.setEnabled(True)
                raise
            if not controller.sandbox:
                controller.prefs.allow_insecure = insecure

        def done(_: object) -> None:
            self.saving = False
            self.apply_button.setEnabled(True)
            if self.agent is None:
                self.load()  # the saved file as a clean draft until the agent is up
                self.set_message(f"{SAVED_PREFIX}{path}; the agent is starting…", "ok")
                controller.config_saved()
            else:
                self._agent_changed()
            self.saved.emit()

        def failed(error: UserFacingError) -> None:
            self.saving = False
            self.apply_button.setEnabled(True)
            self.file_changed = isinstance(error, ConfigChangedError)
            self.show_core_error(error)

        tasks.spawn(save(), name="save-settings", on_done=done, on_error=failed)
        return True

    def show_core_error(self, error: UserFacingError) -> None:
        """A ConfigError from the core: highlight the field it names, say it inline."""
        tab = self._mark_field(error)
        if tab is not None:
            self.select_tab(tab)
        prefix = "Not saved" if isinstance(error, ConfigError) else error.title
        self.set_message(f"{prefix}: {error.message}", "error")

    def _mark_field(self, error: UserFacingError) -> str | None:
        """Highlight the field a ConfigError names; returns its tab (None: no such field)."""
        field = getattr(error, "field", None) or ""
        widget: QWidget | None = None
        tab = None
        if field.startswith("coordinator"):
            tab, widget = "coordinator", self.coordinator_tab.url
            _mark(widget, self.coordinator_tab.url_error, error.message)
        elif field.startswith("backends"):
            tab, widget = "backends", self.backends_tab.table
            match = re.match(r"backends\[(\d+)\]", field)
            if match and int(match.group(1)) < len(self.backends_tab.entries):
                self.backends_tab.select(int(match.group(1)))
            mark_invalid(widget, error.message)
        elif field.startswith("pricing.default_input"):
            tab, widget = "pricing", self.pricing_tab.default_in
            _mark(widget, self.pricing_tab.default_in_error, error.message)
        elif field.startswith("pricing.default_output"):
            tab, widget = "pricing", self.pricing_tab.default_out
            _mark(widget, self.pricing_tab.default_out_error, error.message)
        elif field.startswith("pricing"):
            tab = "pricing"
            set_error(self.pricing_tab.problems, error.message)
        elif field.startswith("limits.max_concurrent"):
            tab, widget = "limits", self.limits_tab.max_concurrent
            _mark(widget, self.limits_tab.max_concurrent_error, error.message)
        elif field.startswith("limits"):
            tab, widget = "limits", self.limits_tab.tpm
            _mark(widget, self.limits_tab.tpm_error, error.message)
        elif field.startswith("serving"):
            tab, widget = "serving", self.serving_tab.show_error(error.message, field)
        return tab

    def closeEvent(self, event: QCloseEvent) -> None:
        for tab in (self.backends_tab,):
            if tab.dialog is not None:
                tab.dialog.close()
        event.accept()
