""" "Send test job": run one job through the agent's own executor path against a model the
backends offer now, and watch the answer stream in, with token counts and timings."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.backends.sse import AnswerDecoder
from usepod_desktop.core.errors import UserFacingError
from usepod_desktop.gui import tasks
from usepod_desktop.gui.icons import app_icon
from usepod_desktop.gui.widgets import elide_middle, set_tone

if TYPE_CHECKING:
    from usepod_desktop.gui.controller import AppController

#: Longer model ids are cut in the middle (the tooltip has the whole id).
MODEL_ID_CHARS = 60
DEFAULT_PROMPT = "Say hello and tell me which model you are, in one sentence."


class TestJobDialog(QDialog):
    __test__ = False  # not a pytest class, despite the name

    finishedJob = Signal(object)  # TestJobResult

    def __init__(self, controller: AppController, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.setObjectName("testJobDialog")
        self.setWindowTitle("Send a test job")
        self.setWindowIcon(app_icon())
        self.setModal(False)
        self.resize(640, 520)
        self.task: asyncio.Task[Any] | None = None
        self.answer = ""
        self.result: Any = None
        self._decoder: AnswerDecoder | None = None
        self._started = 0.0
        self._first_chunk: float | None = None

        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.model = QComboBox(self)
        self.model.setObjectName("testModel")
        self.model.setMinimumContentsLength(30)
        form.addRow("Model", self.model)
        options = QHBoxLayout()
        self.format = QComboBox(self)
        self.format.setObjectName("testFormat")
        self.format.addItem("OpenAI chat", "openai")
        self.format.addItem("Anthropic messages", "anthropic")
        self.max_tokens = QSpinBox(self)
        self.max_tokens.setRange(1, 8192)
        self.max_tokens.setValue(128)
        options.addWidget(self.format)
        options.addWidget(QLabel("max tokens", self))
        options.addWidget(self.max_tokens)
        options.addStretch(1)
        form.addRow("Format", options)
        layout.addLayout(form)
        self.prompt = QPlainTextEdit(self)
        self.prompt.setObjectName("testPrompt")
        self.prompt.setPlainText(DEFAULT_PROMPT)
        self.prompt.setMaximumHeight(90)
        layout.addWidget(QLabel("Prompt", self))
        layout.addWidget(self.prompt)
        layout.addWidget(QLabel("Answer (streamed)", self))
        self.output = QPlainTextEdit(self)
        self.output.setObjectName("testOutput")
        self.output.setReadOnly(True)
        layout.addWidget(self.output, 1)
        self.stats = QLabel(self)
        self.stats.setObjectName("testStats")
        self.stats.setWordWrap(True)
        self.stats.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.stats)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.send_button = QPushButton("Send", self)
        self.send_button.setObjectName("testSend")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.setObjectName("testStop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        close = QPushButton("Close", self)
        close.clicked.connect(self.close)
        for button in (self.send_button, self.stop_button, close):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        controller.bridge.discoveryCompleted.connect(lambda _e: self.refresh_models())
        self.refresh_models()

    def refresh_models(self) -> None:
        agent = self.controller.agent
        models = agent.snapshot().models if agent is not None else ()
        current = self.model.currentData()
        self.model.clear()
        for model in models:
            shown = elide_middle(model.model_id, MODEL_ID_CHARS)
            self.model.addItem(f"{shown}   ({model.backend})", model.model_id)
            self.model.setItemData(
                self.model.count() - 1, model.model_id, Qt.ItemDataRole.ToolTipRole
            )
        if current is not None:
            index = self.model.findData(current)
            if index >= 0:
                self.model.setCurrentIndex(index)
        idle = self.task is None or self.task.done()
        self.send_button.setEnabled(bool(models) and idle)
        if not models and idle:
            set_tone(
                self.stats,
                "No model is offered right now: check the Backends tab of "
                "the settings (Test shows what each backend answers).",
                "warning",
            )

    def send(self) -> asyncio.Task[Any] | None:
        agent = self.controller.agent
        model_id = self.model.currentData()
        if agent is None or not model_id or (self.task is not None and not self.task.done()):
            return None
        fmt = str(self.format.currentData())
        prompt = self.prompt.toPlainText().strip() or DEFAULT_PROMPT
        request: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens.value(),
        }
        self.output.clear()
        self.answer = ""
        self.result = None
        self._decoder = AnswerDecoder(fmt)  # type: ignore[arg-type]
        self._started = time.perf_counter()
        self._first_chunk = None
        self.send_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        set_tone(self.stats, f"Sending to {model_id}…", "info")
        self.task = tasks.spawn(
            agent.run_test_job(model_id, request, format=fmt, on_chunk=self._chunk),
            name="test-job",
            on_done=self._done,
            on_error=self._failed,
        )
        self.task.add_done_callback(lambda _t: self._idle())
        return self.task

    def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            set_tone(self.stats, "Stopped.", "warning")

    def _idle(self) -> None:
        self.stop_button.setEnabled(False)
        self.send_button.setEnabled(self.model.count() > 0)

    def _chunk(self, data: bytes) -> None:
        if self._first_chunk is None:
            self._first_chunk = time.perf_counter()
        if self._decoder is None:
            return
        self._append(self._decoder.feed(data))

    def _append(self, text: str) -> None:
        if not text:
            return
        self.answer += text
        cursor = self.output.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        self.output.setTextCursor(cursor)

    def _done(self, result: Any) -> None:
        self.result = result
        if self._decoder is not None:
            self._append(self._decoder.close())
        outcome = result.outcome
        elapsed = time.perf_counter() - self._started
        first = (
            ""
            if self._first_chunk is None
            else f" · first byte after {(self._first_chunk - self._started) * 1000:.0f} ms"
        )
        tokens = f"{outcome.input_tokens} input + {outcome.output_tokens} output tokens (estimates)"
        speed = ""
        if outcome.output_tokens and outcome.duration_ms:
            speed = f" · {outcome.output_tokens / (outcome.duration_ms / 1000):.1f} tokens/s"
        if outcome.error_code:
            set_tone(
                self.stats,
                f"Failed: {outcome.error_code}: {outcome.message} ({elapsed:.2f} s)",
                "error",
            )
        elif self._decoder is not None and self._decoder.error:
            set_tone(self.stats, f"The backend reported an error: {self._decoder.error}", "error")
        else:
            set_tone(
                self.stats,
                f"Done: {tokens} in {elapsed:.2f} s{first}{speed}. Test jobs "
                "are not paid and not counted in earnings.",
                "ok",
            )
        self.finishedJob.emit(result)

    def _failed(self, error: UserFacingError) -> None:
        set_tone(self.stats, f"{error.title}: {error.message}", "error")

    def closeEvent(self, event: QCloseEvent) -> None:
        # A running test job keeps running (it is short and bounded); closing only hides.
        event.accept()
