"""The pairing wizard: first run and "Pair this computer...".

Three pages over :class:`usepod_desktop.core.pairing.flow.PairingFlow` (the same code `setup` runs):

1. the local backends found and what they serve, with how to start each kind that is missing;
2. the pair code in large type, Copy and "Open pairing page", a countdown and a busy bar while
   waiting for the approval on the website; an expired code offers a new one;
3. the provider id and the activated models with their prices, and "Start serving".

Nothing is written before the website approves the code, so Cancel (or closing the window)
on pages 1 and 2 leaves no trace. :attr:`PairingWizard.paired` is emitted with the
:class:`~usepod_desktop.core.pairing.values.PairingResult` when the user clicks "Start serving" or
closes the last page (agent.toml is written by then).

The app calls :func:`open_pairing_wizard` (tray "Pair this computer...", first launch): it
shows one wizard per controller and, once paired, starts or reloads the controller's agent.

Never modal-blocking: the wizard is shown with ``show()``; its coroutines run as tasks on the
qasync loop (:func:`usepod_desktop.gui.tasks.spawn`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFont, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core import paths
from usepod_desktop.core.discovery import PROBE_PORTS, ProbeResult
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.core.money import SHARE_PERCENT, format_rate
from usepod_desktop.core.pairing.flow import PairingFlow
from usepod_desktop.core.pairing.values import (
    BACKEND_HINTS,
    Activation,
    BackendsDetected,
    CodeExpired,
    CoordinatorUnreachable,
    PairCode,
    PairingEvent,
    PairingResult,
    PollExpired,
    WaitingForApproval,
)
from usepod_desktop.core.pairing.wire import DEFAULT_COORDINATOR
from usepod_desktop.gui import tasks
from usepod_desktop.gui.errors import show_user_error
from usepod_desktop.gui.icons import app_icon
from usepod_desktop.gui.widgets import plain, set_tone

if TYPE_CHECKING:
    from usepod_desktop.gui.controller import AppController

log = logging.getLogger(__name__)

PAGE_BACKENDS, PAGE_CODE, PAGE_DONE = 0, 1, 2


def _countdown(seconds: float) -> str:
    left = max(0, int(seconds + 0.999))
    return f"{left // 60}:{left % 60:02d}"


class PairingWizard(QDialog):
    """See the module docs. `flow_options` go to :class:`PairingFlow` (poll interval,
    backoff, secrets, identity path...); `open_url` opens the pairing page."""

    #: PairingResult: paired, and the user chose to start serving (or closed the last page).
    paired = Signal(object)

    def __init__(
        self,
        coordinator_base: str,
        config_path: Path,
        *,
        probe_ports: Mapping[str, int] | None = None,
        flow_options: Mapping[str, Any] | None = None,
        open_url: Callable[[QUrl], bool] = QDesktopServices.openUrl,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("pairingWizard")
        self.setWindowTitle("Pair this computer with Use Pod")
        self.setWindowIcon(app_icon())
        self.setModal(False)
        self.resize(620, 480)
        self.open_url = open_url
        self.config_path = Path(config_path)
        self.probe_ports = dict(PROBE_PORTS if probe_ports is None else probe_ports)
        self.code: PairCode | None = None
        self.result: PairingResult | None = None
        self._task: asyncio.Task[Any] | None = None
        self._started = False
        self._emitted = False
        self._committing = False
        self.flow: PairingFlow | None = None
        self._setup_error: str | None = None
        self._flow_handlers: dict[type, Callable[[Any], None]] = {
            BackendsDetected: self._on_backends_detected,
            CoordinatorUnreachable: self._on_unreachable,
            WaitingForApproval: self._on_waiting,
            CodeExpired: self._on_code_expired,
        }
        try:
            self.flow = PairingFlow(
                coordinator_base,
                config_path=self.config_path,
                probe_ports=self.probe_ports,
                on_event=self._on_flow_event,
                **dict(flow_options or {}),
            )
        except UserFacingError as exc:
            self._setup_error = exc.message

        layout = QVBoxLayout(self)
        self.pages = QStackedWidget(self)
        self.pages.addWidget(self._backends_page())
        self.pages.addWidget(self._code_page())
        self.pages.addWidget(self._done_page())
        layout.addWidget(self.pages, 1)

        buttons = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setObjectName("pairingCancel")
        self.cancel_button.clicked.connect(self.reject)
        buttons.addWidget(self.cancel_button)
        buttons.addStretch(1)
        self.next_button = QPushButton("Next: get a pair code", self)
        self.next_button.setObjectName("pairingNext")
        self.next_button.setDefault(True)
        self.next_button.setEnabled(False)
        self.next_button.clicked.connect(self._next)
        buttons.addWidget(self.next_button)
        self.serve_button = QPushButton("Start serving", self)
        self.serve_button.setObjectName("pairingStartServing")
        self.serve_button.clicked.connect(self._start_serving)
        self.serve_button.hide()
        buttons.addWidget(self.serve_button)
        layout.addLayout(buttons)

        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._tick)

    # ---- pages -------------------------------------------------------------------------

    def _backends_page(self) -> QWidget:
        page = QWidget(self)
        v = QVBoxLayout(page)
        title = QLabel("<h2>Pair this computer</h2>", page)
        v.addWidget(title)
        intro = QLabel(
            "Use Pod sends inference jobs to the AI servers running on this computer. "
            "These were found on their usual ports:",
            page,
        )
        intro.setWordWrap(True)
        v.addWidget(intro)
        self.detect_status = QLabel("Looking for local servers...", page)
        self.detect_status.setObjectName("detectStatus")
        v.addWidget(self.detect_status)
        self.backend_labels: dict[str, QLabel] = {}
        for kind in BACKEND_HINTS:
            label = QLabel(page)
            label.setObjectName(f"backend_{kind}")
            label.setWordWrap(True)
            label.setTextFormat(Qt.TextFormat.RichText)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.backend_labels[kind] = label
            v.addWidget(label)
        self.none_found = QLabel(
            "No server was found. You can pair now and add backends later in the settings, "
            "or start one of the servers above and click Detect again.",
            page,
        )
        self.none_found.setObjectName("noneFound")
        self.none_found.setWordWrap(True)
        self.none_found.hide()
        v.addWidget(self.none_found)
        row = QHBoxLayout()
        self.detect_button = QPushButton("Detect again", page)
        self.detect_button.setObjectName("detectAgain")
        self.detect_button.setEnabled(False)
        self.detect_button.clicked.connect(self._detect_again)
        row.addWidget(self.detect_button)
        row.addStretch(1)
        v.addLayout(row)
        where = QHBoxLayout()
        where.addWidget(QLabel("Coordinator:", page))
        self.coordinator_edit = QLineEdit(self.flow.base if self.flow is not None else "", page)
        self.coordinator_edit.setObjectName("pairingCoordinator")
        self.coordinator_edit.setToolTip(
            "Where to pair: Use Pod itself, or another coordinator (a local sandbox, staging)"
        )
        where.addWidget(self.coordinator_edit, 1)
        v.addLayout(where)
        self.page1_error = plain(QLabel(page))
        self.page1_error.setObjectName("page1Error")
        self.page1_error.setWordWrap(True)
        self.page1_error.hide()
        v.addWidget(self.page1_error)
        v.addStretch(1)
        return page

    def _code_page(self) -> QWidget:
        page = QWidget(self)
        v = QVBoxLayout(page)
        v.addWidget(QLabel("<h2>Enter this code on the Use Pod website</h2>", page))
        self.page_link = QLabel(page)
        self.page_link.setObjectName("pairPageUrl")
        self.page_link.setTextFormat(Qt.TextFormat.RichText)
        self.page_link.setOpenExternalLinks(False)
        self.page_link.linkActivated.connect(lambda _url: self._open_page())
        v.addWidget(self.page_link)
        self.code_label = plain(QLabel("", page))
        self.code_label.setObjectName("pairCode")
        self.code_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.code_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        font.setPointSize(40)
        font.setBold(True)
        font.setLetterSpacing(QFont.SpacingType.AbsoluteSpacing, 6)
        self.code_label.setFont(font)
        self.code_label.setMinimumHeight(90)
        v.addWidget(self.code_label)
        row = QHBoxLayout()
        row.addStretch(1)
        self.copy_button = QPushButton("Copy code", page)
        self.copy_button.setObjectName("copyCode")
        self.copy_button.clicked.connect(self._copy)
        row.addWidget(self.copy_button)
        self.open_button = QPushButton("Open pairing page", page)
        self.open_button.setObjectName("openPairingPage")
        self.open_button.clicked.connect(self._open_page)
        row.addWidget(self.open_button)
        row.addStretch(1)
        v.addLayout(row)
        self.countdown_label = QLabel("", page)
        self.countdown_label.setObjectName("pairCountdown")
        self.countdown_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        v.addWidget(self.countdown_label)
        self.busy = QProgressBar(page)
        self.busy.setObjectName("pairingBusy")
        self.busy.setRange(0, 0)  # indeterminate: a moving bar while we wait
        self.busy.setTextVisible(False)
        v.addWidget(self.busy)
        self.code_status = QLabel("", page)
        self.code_status.setObjectName("pairingStatus")
        self.code_status.setWordWrap(True)
        v.addWidget(self.code_status)
        row = QHBoxLayout()
        row.addStretch(1)
        self.new_code_button = QPushButton("Get a new code", page)
        self.new_code_button.setObjectName("newCode")
        self.new_code_button.clicked.connect(self._new_code)
        self.new_code_button.hide()
        row.addWidget(self.new_code_button)
        row.addStretch(1)
        v.addLayout(row)
        v.addStretch(1)
        self._enable_code_actions(False)
        return page

    def _done_page(self) -> QWidget:
        page = QWidget(self)
        v = QVBoxLayout(page)
        self.done_title = QLabel("", page)
        self.done_title.setObjectName("pairedTitle")
        self.done_title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.done_title)
        self.models_intro = QLabel("", page)
        self.models_intro.setWordWrap(True)
        v.addWidget(self.models_intro)
        self.models_table = QTableWidget(0, 3, page)
        self.models_table.setObjectName("activatedModels")
        self.models_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.models_table.setHorizontalHeaderLabels(
            ["Model", "Input ($ per 1M tokens)", "Output ($ per 1M tokens)"]
        )
        self.models_table.verticalHeader().setVisible(False)
        self.models_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.models_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        v.addWidget(self.models_table, 1)
        self.saved_label = QLabel("", page)
        self.saved_label.setObjectName("pairedSaved")
        self.saved_label.setWordWrap(True)
        self.saved_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        v.addWidget(self.saved_label)
        self.warnings_label = QLabel("", page)
        self.warnings_label.setObjectName("pairedWarnings")
        self.warnings_label.setWordWrap(True)
        self.warnings_label.hide()
        v.addWidget(self.warnings_label)
        return page

    # ---- lifecycle ---------------------------------------------------------------------

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._started:
            self._started = True
            self._prepare()

    @property
    def page(self) -> int:
        return self.pages.currentIndex()

    def _spawn(self, coro: Any, on_done: Callable[[Any], None]) -> None:
        self._task = tasks.spawn(coro, name="pairing", on_done=on_done, on_error=self._failed)

    def _prepare(self) -> None:
        if self.flow is None:
            set_tone(self.page1_error, self._setup_error or "cannot pair", "error")
            self.detect_status.hide()
            return
        self._spawn(self.flow.prepare(), lambda _r: self._detected())

    def _detect_again(self) -> None:
        assert self.flow is not None
        self.detect_button.setEnabled(False)
        self.next_button.setEnabled(False)
        self.detect_status.setText("Looking for local servers...")
        self.detect_status.show()
        self._spawn(self.flow.detect(), lambda _r: self._detected())

    def _detected(self) -> None:
        self.detect_status.hide()
        self.detect_button.setEnabled(True)
        self.next_button.setEnabled(True)

    def _show_backends(self, found: tuple[ProbeResult, ...]) -> None:
        by_kind = {b.kind: b for b in found}
        for kind, (name, hint) in BACKEND_HINTS.items():
            label = self.backend_labels[kind]
            backend = by_kind.get(kind)
            port = self.probe_ports.get(kind, PROBE_PORTS.get(kind))
            if backend is None:
                label.setText(
                    f"<b>{name}</b>: not running on port {port}. "
                    f"<span style='color: gray'>To start it: {escape(hint)}</span>"
                )
                continue
            shown = ", ".join(escape(m) for m in backend.models[:6])
            more = f" and {len(backend.models) - 6} more" if len(backend.models) > 6 else ""
            label.setText(
                f"<b>✓ {name}</b> at {escape(backend.url)} serves {len(backend.models)} "
                f"model(s): {shown}{more}"
            )
        self.none_found.setVisible(not found)

    def _next(self) -> None:
        assert self.flow is not None
        try:
            self.flow.set_coordinator(self.coordinator_edit.text())
        except UserFacingError as exc:
            set_tone(self.page1_error, exc.message, "error")
            return
        self.page1_error.hide()
        self.pages.setCurrentIndex(PAGE_CODE)
        self.next_button.hide()
        self._new_code()

    def _new_code(self) -> None:
        assert self.flow is not None
        self.code = None
        self.code_label.setText("")
        self.countdown_label.setText("")
        self.new_code_button.hide()
        self.busy.show()
        set_tone(self.code_status, f"Getting a pair code from {self.flow.base}...")
        self.page_link.setText("")
        self._enable_code_actions(False)
        self._spawn(self._issue_and_wait(), self._show_result)

    async def _issue_and_wait(self) -> PairingResult | None:
        assert self.flow is not None
        code = await self.flow.issue()
        self._show_code(code)
        outcome = await self.flow.wait(code)
        if isinstance(outcome, PollExpired):
            self._show_expired()
            return None
        return await self._complete(outcome)

    async def _complete(self, activation: Activation) -> PairingResult:
        assert self.flow is not None
        self._committing = True  # the coordinator paired us: finish writing, no cancel now
        self.cancel_button.setEnabled(False)
        set_tone(self.code_status, "Approved. Saving the settings...", "ok")
        try:
            return await self.flow.complete(activation)
        finally:
            self._committing = False

    def _show_code(self, code: PairCode) -> None:
        self.code = code
        self.code_label.setText(code.pair_code)
        url = code.page_url
        if code.sandbox:  # a local sandbox has no web page: it is approved in its terminal
            flow = self.flow
            kept = ""
            if flow is not None and flow.config_path.exists():
                # never replace the real agent.toml with a sandbox's (docs/sandbox.md)
                flow.config_path = flow.config_path.with_name("sandbox.toml")
                self.config_path = flow.config_path
                kept = f" Pairing writes {escape(str(flow.config_path))}; your agent.toml stays."
            self.page_link.setText(
                "A local sandbox coordinator (no real earnings): in its terminal, type "
                f"<b>approve {escape(code.pair_code)}</b>.{kept}"
            )
            waiting = "Waiting for the approval in the sandbox's terminal..."
        else:
            self.page_link.setText(f"Open <a href='{escape(url)}'>{escape(url)}</a> and enter:")
            waiting = "Waiting for you to approve this computer on the website..."
        self._enable_code_actions(True)
        self.open_button.setEnabled(not code.sandbox)
        set_tone(self.code_status, waiting)
        self._tick()
        self._timer.start()

    def _show_expired(self) -> None:
        self._timer.stop()
        self.busy.hide()
        self._enable_code_actions(False)
        self.countdown_label.setText("")
        set_tone(self.code_status, "This code expired before it was approved.", "warning")
        self.new_code_button.show()

    def _show_result(self, result: PairingResult | None) -> None:
        if result is None:
            return
        self.result = result
        self._timer.stop()
        self.busy.hide()
        self.done_title.setText(f"<h2>Paired as provider {escape(result.provider_id)}</h2>")
        if result.models:
            self.models_intro.setText(
                "These models were activated on the website, at these prices "
                f"(you keep {SHARE_PERCENT} of what users pay):"
            )
        else:
            self.models_intro.setText(
                "No model was activated yet: the backends' models are offered at the default "
                "prices, which you can change in the settings."
            )
        self.models_table.setRowCount(len(result.models))
        for row, model in enumerate(result.models):
            for col, text in enumerate(
                (
                    model.model_id,
                    format_rate(model.input_per_1m),
                    format_rate(model.output_per_1m),
                )
            ):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.models_table.setItem(row, col, item)
        self.models_table.setVisible(bool(result.models))
        saved = f"Settings saved to {result.config_path}"
        if result.backup_path is not None:
            saved += f" (the previous file is kept as {result.backup_path.name})"
        self.saved_label.setTextFormat(Qt.TextFormat.PlainText)
        self.saved_label.setText(saved + ".")
        if result.warnings:
            set_tone(self.warnings_label, "\n".join(result.warnings), "warning")
        self.pages.setCurrentIndex(PAGE_DONE)
        self.cancel_button.hide()
        self.serve_button.show()
        self.serve_button.setDefault(True)
        self.serve_button.setFocus()

    def _failed(self, error: UserFacingError) -> None:
        self._timer.stop()
        self._committing = False
        self.cancel_button.setEnabled(True)
        if self.page == PAGE_BACKENDS:
            set_tone(self.page1_error, error.message, "error")
            self.detect_status.hide()
            self.detect_button.setEnabled(self.flow is not None and self.flow.identity is not None)
            return
        self.busy.hide()
        self._enable_code_actions(False)
        self.countdown_label.setText("")
        set_tone(self.code_status, error.message, "error")
        self.new_code_button.setText("Try again")
        self.new_code_button.show()

    # ---- flow events (on the loop, which is Qt's thread) -------------------------------

    def _on_flow_event(self, event: PairingEvent) -> None:
        """Dispatch a flow event by its type (the flow's events are final dataclasses); the
        types without a handler here (IdentityReady, CodeIssued, Paired) are answered by the
        coroutine that awaits the flow."""
        handler = self._flow_handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_backends_detected(self, event: BackendsDetected) -> None:
        self._show_backends(event.backends)

    def _on_unreachable(self, event: CoordinatorUnreachable) -> None:
        set_tone(
            self.code_status,
            f"Cannot reach {event.url} ({event.detail}); trying again in "
            f"{max(1, round(event.retry_in))} s...",
            "warning",
        )

    def _on_waiting(self, _event: WaitingForApproval) -> None:
        if self.code_status.text().startswith("Cannot reach"):
            set_tone(self.code_status, "Waiting for you to approve this computer...")

    def _on_code_expired(self, _event: CodeExpired) -> None:
        log.info("pair code expired")

    def _tick(self) -> None:
        if self.code is None or self.flow is None:
            return
        left = self.flow.remaining(self.code)
        self.countdown_label.setText(f"The code expires in {_countdown(left)}")

    # ---- buttons -----------------------------------------------------------------------

    def _enable_code_actions(self, on: bool) -> None:
        self.copy_button.setEnabled(on)
        self.open_button.setEnabled(on)

    def _copy(self) -> None:
        if self.code is not None:
            QGuiApplication.clipboard().setText(self.code.pair_code)
            set_tone(self.code_status, "Code copied. Waiting for the approval...")

    def _open_page(self) -> None:
        if self.code is not None:
            self.open_url(QUrl(self.code.page_url))

    def _start_serving(self) -> None:
        self._emit_paired()
        self.accept()

    def _emit_paired(self) -> None:
        if self.result is not None and not self._emitted:
            self._emitted = True
            self.paired.emit(self.result)

    def reject(self) -> None:
        """Cancel (also Esc and the window's close button): stop the flow, nothing is
        written. On the last page it means Start serving: the files are written by then."""
        if self._committing:
            return  # a few milliseconds: the files are being written
        if self.result is not None:
            self._start_serving()
            return
        self._timer.stop()
        if self.flow is not None:
            self.flow.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        super().reject()


# ------------------------------------------------------------------------------ app hook


def open_pairing_wizard(
    controller: AppController,
    coordinator_base: str | None = None,
    *,
    config_path: Path | None = None,
    **wizard_options: Any,
) -> PairingWizard:
    """Show the wizard for `controller` (the open one if there is one: the controller's window
    registry keeps one per app) and, once paired, start its agent (first run) or reload it
    from the new agent.toml; the "Paired" notification too.

    `coordinator_base` defaults to production; `config_path` to the file the running agent
    uses, else `--config`, else the shared config dir.
    """

    def build() -> PairingWizard:
        path = config_path
        agent = controller.agent
        if path is None:
            if agent is not None and agent.config_path is not None:
                path = Path(agent.config_path)
            elif controller.options.config:
                path = Path(controller.options.config).expanduser()
            else:
                path = paths.default_config_path()
        wizard = PairingWizard(coordinator_base or DEFAULT_COORDINATOR, path, **wizard_options)
        wizard.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        # finished, not only destroyed (deleted later): the next call opens a fresh wizard
        wizard.finished.connect(lambda _code: controller.windows.forget(wizard))
        wizard.paired.connect(lambda result: _serve_after_pairing(controller, result))
        return wizard

    return controller.windows.open("pairing", build)


def _serve_after_pairing(controller: AppController, result: PairingResult) -> None:
    tasks.spawn(
        controller.adopt_pairing(result),
        name="serve-after-pairing",
        on_error=lambda error: show_user_error(None, error),
    )
