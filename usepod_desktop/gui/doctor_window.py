"""The Diagnose window: the same checks as `usepod-desktop doctor`, run against the app's own
agent (its live connection and figures, never a second authentication), with a fix button where
a fix is one click (open settings at the right tab, start pairing, resume serving) and "Save
support bundle..." (a non-blocking file dialog; the zip is written in a thread)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.doctor import Action, Check, DoctorOptions, Report, Status, run_doctor
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.gui import tasks
from usepod_desktop.gui.errors import show_message
from usepod_desktop.gui.icons import app_icon

if TYPE_CHECKING:
    from usepod_desktop.gui.controller import AppController

log = logging.getLogger(__name__)

_COLORS = {Status.OK: "#2e7d32", Status.WARN: "#b26a00", Status.FAIL: "#c62828"}
_FIX_LABELS = {
    Action.OPEN_SETTINGS_COORDINATOR: "Open settings",
    Action.OPEN_SETTINGS_BACKENDS: "Open backends",
    Action.OPEN_SETTINGS_PRICING: "Open pricing",
    Action.OPEN_SETTINGS_KEYS: "Open API keys",
    Action.OPEN_SETTINGS_LIMITS: "Open limits",
    Action.PAIR: "Pair this computer…",
    Action.RESUME: "Resume serving",
    Action.UPGRADE: "How to upgrade…",
}


class BundleError(UserFacingError):
    title = "Support bundle"


class DoctorWindow(QWidget):
    def __init__(self, controller: AppController) -> None:
        super().__init__(None, Qt.WindowType.Window)
        self.controller = controller
        self.setObjectName("doctorWindow")
        self.setWindowTitle("Use Pod: Diagnose")
        self.setWindowIcon(app_icon())
        self.resize(860, 560)
        self.report: Report | None = None
        self.running = False
        self._task: asyncio.Task[Report] | None = None
        self._dialog: QFileDialog | None = None
        self.fix_buttons: dict[str, QPushButton] = {}

        layout = QVBoxLayout(self)
        self.summary = QLabel("Running the checks…", self)
        self.summary.setObjectName("doctorSummary")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName("doctorChecks")
        self.tree.setHeaderLabels(["", "Check", "Result", "Fix"])
        self.tree.setRootIsDecorated(True)
        self.tree.setWordWrap(True)
        header = self.tree.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.tree, 1)
        buttons = QHBoxLayout()
        self.rerun_button = QPushButton("Run again", self)
        self.rerun_button.setObjectName("doctorRerun")
        self.rerun_button.clicked.connect(self.run_checks)
        self.bundle_button = QPushButton("Save support bundle…", self)
        self.bundle_button.setObjectName("doctorBundle")
        self.bundle_button.setToolTip(
            "A zip for support: these checks, versions, OS, the advertised models, agent.toml "
            "and the last log lines with secrets removed, ledger counts"
        )
        self.bundle_button.clicked.connect(self.save_bundle)
        self.bundle_note = QLabel("", self)
        self.bundle_note.setObjectName("doctorBundleNote")
        close = QPushButton("Close", self)
        close.clicked.connect(self.close)
        buttons.addWidget(self.rerun_button)
        buttons.addWidget(self.bundle_button)
        buttons.addWidget(self.bundle_note, 1)
        buttons.addWidget(close)
        layout.addLayout(buttons)

    # ---- running -----------------------------------------------------------------------

    def options(self) -> DoctorOptions:
        c = self.controller
        agent = c.agent if not c.stopping else None
        return DoctorOptions(
            config_path=c.options.config,
            allow_insecure=c.options.allow_insecure or c.prefs.allow_insecure,
            agent=agent,
            history=c.connection_history if agent is not None else None,
            check_updates=c.prefs.update_check_enabled,
        )

    def run_checks(self) -> None:
        if self.running:
            return
        self.running = True
        self.rerun_button.setEnabled(False)
        self.summary.setText("Running the checks…")
        self._task = tasks.spawn(
            run_doctor(self.options()),
            name="doctor",
            on_done=self._show,
            on_error=self._failed,
        )
        self._task.add_done_callback(lambda _t: self._finished())

    def _finished(self) -> None:
        self.running = False
        self.rerun_button.setEnabled(True)

    def _failed(self, error: UserFacingError) -> None:
        self.summary.setText(f"The checks could not run: {error.message}")

    def _show(self, report: Report) -> None:
        self.report = report
        self.tree.clear()
        self.fix_buttons.clear()
        counts = report.counts()
        verdict = (
            "Something stops this computer from earning: see the failures below."
            if report.failed
            else "Nothing blocks earning."
        )
        self.summary.setText(
            f"{verdict} {counts['OK']} OK, {counts['WARN']} warning(s), "
            f"{counts['FAIL']} failure(s)."
        )
        sections: dict[str, QTreeWidgetItem] = {}
        for check in report.checks:
            parent = sections.get(check.section)
            if parent is None:
                parent = QTreeWidgetItem(self.tree, ["", check.section])
                font = parent.font(1)
                font.setBold(True)
                parent.setFont(1, font)
                parent.setFirstColumnSpanned(False)
                sections[check.section] = parent
            self._add_row(parent, check)
        self.tree.expandAll()

    def _add_row(self, parent: QTreeWidgetItem, check: Check) -> None:
        text = (
            check.reason
            if not check.fix or check.status == Status.OK
            else (f"{check.reason}\nFix: {check.fix}")
        )
        item = QTreeWidgetItem(parent, [check.status.value, check.name, text, ""])
        item.setForeground(0, QBrush(QColor(_COLORS[check.status])))
        item.setToolTip(2, text)
        if check.action is not None and check.status != Status.OK:
            button = QPushButton(_FIX_LABELS[check.action], self.tree)
            button.setObjectName(f"fix:{check.section}:{check.name}")
            button.clicked.connect(lambda _=False, c=check: self.apply_fix(c))
            self.tree.setItemWidget(item, 3, button)
            self.fix_buttons[f"{check.section}:{check.name}"] = button

    # ---- fixes -------------------------------------------------------------------------

    def apply_fix(self, check: Check) -> None:
        action = check.action
        c = self.controller
        if action is None:
            return
        if action == Action.PAIR:
            c.open_pairing()
        elif action == Action.RESUME:
            c.resume()
            self.run_checks_later()
        elif action == Action.UPGRADE:
            show_message(self, "Update available", check.fix)
        else:
            tab = action.value.split(":", 1)[1]
            c.open_settings(tab)

    def run_checks_later(self) -> None:
        async def later() -> None:
            await asyncio.sleep(0.3)  # let resume send its capabilities first

        tasks.spawn(later(), name="doctor-rerun", on_done=lambda _r: self.run_checks())

    # ---- support bundle ----------------------------------------------------------------

    def save_bundle(self) -> QFileDialog:
        """Ask where to save (non-blocking dialog); the zip is written when a file is chosen."""
        dialog = QFileDialog(self, "Save support bundle")
        dialog.setObjectName("bundleDialog")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setNameFilter("Zip files (*.zip)")
        dialog.setDefaultSuffix("zip")
        dialog.selectFile(str(Path.home() / "usepod-support.zip"))
        dialog.fileSelected.connect(self.write_bundle)
        self._dialog = dialog
        dialog.open()
        return dialog

    def write_bundle(self, path: str) -> None:
        if not path:
            return
        self.bundle_button.setEnabled(False)
        self.bundle_note.setText("Writing the support bundle…")

        async def write() -> Path:
            from usepod_desktop.core.doctor.bundle import write_bundle

            report = self.report
            if report is None or self.running:
                report = await run_doctor(self.options())
            try:
                return await asyncio.to_thread(
                    write_bundle,
                    path,
                    report,
                    config=report.config,
                    config_path=report.config_path,
                    capabilities=report.capabilities,
                )
            except OSError as exc:
                raise BundleError(
                    f"cannot write {path}: {exc.strerror or type(exc).__name__}"
                ) from None

        def done(written: Path) -> None:
            self.bundle_button.setEnabled(True)
            self.bundle_note.setText(f"Saved {written}")
            self.last_bundle = written

        def failed(error: UserFacingError) -> None:
            self.bundle_button.setEnabled(True)
            self.bundle_note.setText(error.message)

        tasks.spawn(write(), name="support-bundle", on_done=done, on_error=failed)

    last_bundle: Path | None = None
