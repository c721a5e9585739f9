"""Dialogs of the Backends tab: add / edit one backend entry, and pick what "Detect" found.

Both are opened with `open()` and report through `finished`, never `exec()` (see
docs/architecture.md, qasync rules).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.config import (
    KINDS,
    LOCAL_KINDS,
    REMOTE_KINDS,
    BackendConfig,
    check_backend,
)
from usepod_desktop.core.kinds import KINDS as KIND_SPECS
from usepod_desktop.core.money import SHARE_PERCENT, SHARE_TEXT
from usepod_desktop.gui.widgets import INVALID_STYLE, error_label, mark_invalid, set_error

KIND_LABELS: dict[str, str] = {
    k: f"{s.label} (your API key)" if s.remote else s.label for k, s in KIND_SPECS.items()
}
DEFAULT_URLS: dict[str, str] = {k: KIND_SPECS[k].default_url for k in LOCAL_KINDS}
DEFAULT_KEY_ENVS: dict[str, str] = {k: KIND_SPECS[k].key_env or "" for k in REMOTE_KINDS}

#: Called with the candidate entry; returns a message when it duplicates another entry.
DuplicateCheck = Callable[[BackendConfig], str | None]


class BackendDialog(QDialog):
    """Kind, URL (local kinds; optional base URL for the hosted ones), API key variable name
    and markup (hosted kinds). The result is in :attr:`result_backend` after `accepted`."""

    def __init__(
        self,
        parent: QWidget | None,
        backend: BackendConfig | None = None,
        *,
        duplicate_check: DuplicateCheck | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("backendDialog")
        self.setWindowTitle("Edit backend" if backend else "Add backend")
        self.setStyleSheet(INVALID_STYLE)
        self.original = backend
        self.duplicate_check = duplicate_check
        self.result_backend: BackendConfig | None = None

        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.kind = QComboBox(self)
        for kind in KINDS:
            self.kind.addItem(KIND_LABELS[kind], kind)
        form.addRow("Kind", self.kind)
        self.url = QLineEdit(self)
        self.url_error = error_label(self)
        form.addRow("URL", self.url)
        form.addRow("", self.url_error)
        self.key_env = QLineEdit(self)
        self.key_env.setPlaceholderText("OPENROUTER_API_KEY")
        self.key_env_error = error_label(self)
        form.addRow("API key name", self.key_env)
        form.addRow("", self.key_env_error)
        self.markup = QLineEdit(self)
        self.markup.setPlaceholderText("0")
        self.markup_error = error_label(self)
        form.addRow("Markup (%)", self.markup)
        form.addRow("", self.markup_error)
        layout.addLayout(form)
        self.hint = QLabel(self)
        self.hint.setWordWrap(True)
        layout.addWidget(self.hint)
        self.general_error = error_label(self)
        layout.addWidget(self.general_error)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.buttons = buttons

        if backend is not None:
            self.kind.setCurrentIndex(KINDS.index(backend.kind))
            self.url.setText(backend.url or "")
            self.key_env.setText(backend.api_key_env or "")
            if backend.markup is not None:
                self.markup.setText(_percent_text(backend.markup))
        self._kind_changed()
        self.kind.currentIndexChanged.connect(self._kind_changed)
        self.resize(460, self.sizeHint().height())

    @property
    def selected_kind(self) -> str:
        return str(self.kind.currentData())

    def _kind_changed(self) -> None:
        kind = self.selected_kind
        remote = kind in REMOTE_KINDS
        self.key_env.setEnabled(remote)
        self.markup.setEnabled(remote)
        self.url.setEnabled(not remote)
        if remote:
            # the reference agent ignores `url` for hosted kinds; an edit keeps what was there
            keep = self.original.url if self.original and self.original.kind == kind else None
            self.url.setText(keep or "")
            self.url.setPlaceholderText("not used: the provider's own API")
            if not self.key_env.text().strip() or self.key_env.text() in DEFAULT_KEY_ENVS.values():
                self.key_env.setText(DEFAULT_KEY_ENVS[kind])
            self.hint.setText(
                "The key itself goes in the API keys tab (stored in the OS keyring). "
                "Without an explicit price, models are offered at the upstream cost "
                f"÷ {SHARE_TEXT} × (1 + markup), so your {SHARE_PERCENT} share covers what you "
                "pay upstream."
            )
        else:
            self.url.setPlaceholderText(DEFAULT_URLS[kind])
            if not self.url.text().strip() or self.url.text() in DEFAULT_URLS.values():
                self.url.setText(DEFAULT_URLS[kind])
            self.key_env.clear()
            self.markup.clear()
            self.hint.setText("The local inference server's base URL (no /v1 needed).")

    def build(self) -> tuple[BackendConfig | None, bool]:
        """Read the fields and check them by the core's rules for a `[[backends]]` entry
        (`core/config.py` `check_backend`); returns (entry, ok) and marks what is wrong."""
        kind = self.selected_kind
        url = self.url.text().strip() or None
        if kind in REMOTE_KINDS:
            url = self.original.url if self.original and self.original.kind == kind else None
        key_env = (self.key_env.text().strip() or None) if kind in REMOTE_KINDS else None
        said: dict[str, str] = {}
        markup: float | None = None
        text = self.markup.text().strip().rstrip("%").strip()
        if kind in REMOTE_KINDS and text:
            try:
                markup = round(float(text.replace(",", ".")) / 100, 6)
            except ValueError:
                said["markup"] = "a percentage, e.g. 5"
        fields = {"kind": kind, "url": url, "api_key_env": key_env, "markup": markup}
        entry = {key: value for key, value in fields.items() if value is not None}
        for problem in check_backend(entry):
            said.setdefault(problem.path.rsplit(".", 1)[-1], problem.detail)
        for key, widget, label in (
            ("url", self.url, self.url_error),
            ("api_key_env", self.key_env, self.key_env_error),
            ("markup", self.markup, self.markup_error),
        ):
            self._mark(widget, label, said.get(key))
        if said:
            return None, False
        models = None
        if self.original is not None and self.original.kind == kind:
            models = self.original.models  # an edit keeps the allow-list
        backend = BackendConfig(
            kind=kind, url=url, api_key_env=key_env, markup=markup, models=models
        )
        if self.duplicate_check is not None:
            problem = self.duplicate_check(backend)
            set_error(self.general_error, problem)
            if problem:
                return None, False
        return backend, True

    def accept(self) -> None:
        entry, ok = self.build()
        if not ok:
            return
        self.result_backend = entry
        super().accept()

    @staticmethod
    def _mark(widget: QLineEdit, label: QLabel, problem: str | None) -> None:
        mark_invalid(widget, problem)
        set_error(label, problem)


def _percent_text(markup: float) -> str:
    text = f"{markup * 100:.4f}".rstrip("0").rstrip(".")
    return text or "0"


class DetectDialog(QDialog):
    """What `probe_local` found: tick the servers to add."""

    def __init__(self, parent: QWidget | None, found: Sequence[Any]) -> None:
        super().__init__(parent)
        self.setObjectName("detectDialog")
        self.setWindowTitle("Detected inference servers")
        self.found = list(found)
        layout = QVBoxLayout(self)
        label = QLabel(
            "These local servers answered on their default ports. Add the ticked "
            "ones as backends (then Apply):",
            self,
        )
        label.setWordWrap(True)
        layout.addWidget(label)
        self.list = QListWidget(self)
        for probe in self.found:
            models = list(getattr(probe, "models", []) or [])
            shown = ", ".join(models[:3]) + (
                f" and {len(models) - 3} more" if len(models) > 3 else ""
            )
            item = QListWidgetItem(
                f"{KIND_LABELS.get(probe.kind, probe.kind)} at {probe.url}: {shown}", self.list
            )
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked)
        layout.addWidget(self.list)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(560, 280)

    def chosen(self) -> list[Any]:
        return [
            probe
            for i, probe in enumerate(self.found)
            if self.list.item(i).checkState() == Qt.CheckState.Checked
        ]
