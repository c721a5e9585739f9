"""The Backends tab: the `[[backends]]` entries with their live status, Add / Edit / Remove /
Test / Detect, and the allow-list of the selected entry."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.config import BackendConfig, ConfigProblem, backend_to_dict
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.gui import tasks
from usepod_desktop.gui.settings.backend_dialogs import BackendDialog, DetectDialog
from usepod_desktop.gui.settings.tab import FieldMap, Loaded, note
from usepod_desktop.gui.widgets import (
    ERROR_COLOUR,
    OK_COLOUR,
    WARN_COLOUR,
    error_label,
    plain,
    plain_tooltip,
    set_tone,
)

if TYPE_CHECKING:
    from usepod_desktop.gui.settings.window import SettingsWindow

Identity = tuple[str, str | None]


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
    name = "backends"
    title = "Backends"

    def __init__(self, window: SettingsWindow, fields: FieldMap) -> None:
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
        #: The problems of the entries (several at once), under the table.
        self.errors = error_label(top)
        self.errors.setObjectName("backendProblems")
        top_layout.addWidget(self.errors)
        fields.register(
            self.name,
            self.name,
            self.table,
            self.errors,
            reveal=self._reveal,
            describe=self._describe,
        )
        self.add_button.clicked.connect(self.add)
        self.edit_button.clicked.connect(self.edit)
        self.remove_button.clicked.connect(self.remove)
        self.test_button.clicked.connect(self.test)
        self.detect_button.clicked.connect(self.detect)

        self.allow_box = QGroupBox("Allow-list", splitter)
        allow_layout = QVBoxLayout(self.allow_box)
        self.allow_hint = note(
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

    def load(self, loaded: Loaded) -> None:
        self.entries = list(loaded.config.backends)
        self.applied = {b.identity for b in loaded.config.backends}
        self.status = {}
        self.update_from_discovery(loaded.view, rebuild=False)
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

    def _describe(self, problem: ConfigProblem) -> str:
        """`openrouter (KEY): markup: must be at most 10 ...`: which entry, in its own words."""
        match = re.match(r"backends\[(\d+)\]\.?(.*)", problem.path)
        if match is None or int(match.group(1)) >= len(self.entries):
            return problem.message
        key = f"{match.group(2)}: " if match.group(2) else ""
        return f"{self.entries[int(match.group(1))].label}: {key}{problem.detail}"

    def _reveal(self, path: str) -> None:
        """A problem of `backends[i]...`: select that entry (the first such one)."""
        match = re.match(r"backends\[(\d+)\]", path)
        if match and int(match.group(1)) < len(self.entries):
            self.select(int(match.group(1)))

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

    def collect(self, draft: dict[str, Any]) -> list[ConfigProblem]:
        draft["backends"] = [backend_to_dict(entry) for entry in self.entries]
        return []


def _short_list(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _replace_backend(entry: BackendConfig, **changes: Any) -> BackendConfig:
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
