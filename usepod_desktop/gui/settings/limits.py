"""The Limits tab: jobs at the same time and tokens per minute (agent.toml `[limits]`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QFormLayout, QLineEdit, QSpinBox, QVBoxLayout, QWidget

from usepod_desktop.core.config import MAX_CONCURRENT_RANGE, ConfigProblem
from usepod_desktop.gui.settings.tab import FieldMap, Loaded, mark, note
from usepod_desktop.gui.widgets import error_label

if TYPE_CHECKING:
    from usepod_desktop.gui.settings.window import SettingsWindow

TPM = "limits.max_tokens_per_minute"


class LimitsTab(QWidget):
    name = "limits"
    title = "Limits"

    def __init__(self, window: SettingsWindow, fields: FieldMap) -> None:
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
            note(
                f"Jobs at the same time: {lo} to {hi}; more are refused so the coordinator sends "
                "them elsewhere. Tokens per minute (input + output, over the last minute): leave "
                "empty for no limit; running jobs are never cut off.",
                self,
            )
        )
        layout.addStretch(1)
        self.max_concurrent.valueChanged.connect(window.mark_dirty)
        self.tpm.textEdited.connect(window.mark_dirty)
        fields.register(
            "limits.max_concurrent", self.name, self.max_concurrent, self.max_concurrent_error
        )
        fields.register(TPM, self.name, self.tpm, self.tpm_error)
        fields.register("limits", self.name, None, self.tpm_error)

    def load(self, loaded: Loaded) -> None:
        config = loaded.config
        self.max_concurrent.blockSignals(True)
        self.max_concurrent.setValue(config.limits.max_concurrent)
        self.max_concurrent.blockSignals(False)
        tpm = config.limits.max_tokens_per_minute
        self.tpm.setText("" if tpm is None else f"{tpm:_}")
        mark(self.tpm, self.tpm_error, None)
        mark(self.max_concurrent, self.max_concurrent_error, None)

    def collect(self, draft: dict[str, Any]) -> list[ConfigProblem]:
        """`[limits]` from the widgets; tokens per minute typed as something other than a
        whole number is a problem here, its bounds are the core's."""
        limits: dict[str, Any] = {"max_concurrent": self.max_concurrent.value()}
        text = self.tpm.text().strip().replace("_", "").replace(",", "").replace(" ", "")
        draft["limits"] = limits
        if not text:
            return []
        if not re.fullmatch(r"-?\d+", text):
            return [ConfigProblem(TPM, f"{TPM}: a whole number of tokens, or empty for no limit")]
        limits["max_tokens_per_minute"] = int(text)
        return []
