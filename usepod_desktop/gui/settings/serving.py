"""The settings window's "Serving rules" tab: when this computer serves (agent.toml
`[serving]`), with a live "Now: serving / paused because ..." line and the sensor readings.

The schedule box is read here (one window per line, `mon-fri 22:00-07:00`); every rule about
the values is the core's (`core/config.py`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from usepod_desktop.core.config import WEEKDAYS, ConfigProblem, ScheduleWindow
from usepod_desktop.core.events import JobFinished, JobStarted
from usepod_desktop.core.serving.sensors import GpuReading
from usepod_desktop.gui.settings.tab import FieldMap, Loaded
from usepod_desktop.gui.widgets import error_label

if TYPE_CHECKING:
    from usepod_desktop.gui.settings.window import SettingsWindow

REFRESH_MS = 2000
_LINE = re.compile(
    r"^(?:(?P<days>[a-zA-Z,\- ]+?)\s+)?(?P<start>\d\d:\d\d)\s*-\s*(?P<end>\d\d:\d\d)$"
)


def format_schedule(windows: tuple[ScheduleWindow, ...]) -> str:
    """One window per line: `mon,tue,wed,thu,fri 22:00-07:00` (no days: every day)."""
    lines = []
    for w in windows:
        days = "" if w.days == WEEKDAYS else ",".join(w.days) + " "
        lines.append(f"{days}{w.start}-{w.end}")
    return "\n".join(lines)


def parse_schedule(text: str) -> list[dict[str, Any]]:
    """The schedule box -> `[[serving.schedule]]` tables. Raises ValueError naming the line.
    Days: `mon,tue`, a range `mon-fri`, or nothing for every day."""
    tables: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f'line {number}: expected e.g. "mon-fri 22:00-07:00", got {line!r}')
        table: dict[str, Any] = {"start": match["start"], "end": match["end"]}
        if match["days"]:
            table["days"] = _days(match["days"], number)
        tables.append(table)
    return tables


def _days(text: str, number: int) -> list[str]:
    days: list[str] = []
    for part in re.split(r"[,\s]+", text.strip().lower()):
        if not part:
            continue
        if "-" in part:
            first, _, last = part.partition("-")
            if first not in WEEKDAYS or last not in WEEKDAYS:
                raise ValueError(f"line {number}: unknown day in {part!r}")
            i, j = WEEKDAYS.index(first), WEEKDAYS.index(last)
            span = range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)]
            days.extend(WEEKDAYS[k] for k in span)
        elif part in WEEKDAYS:
            days.append(part)
        else:
            raise ValueError(f"line {number}: unknown day {part!r} (use mon, tue, ... sun)")
    return list(dict.fromkeys(days))


class ServingTab(QWidget):
    name = "serving"
    title = "Serving rules"

    def __init__(self, window: SettingsWindow, fields: FieldMap) -> None:
        super().__init__(window)
        self.window_ = window
        #: The `[serving]` table the widgets showed when loaded (unchanged: the loaded values
        #: are kept, e.g. 62.5 °C written by hand, which the spin boxes round).
        self._loaded_table: dict[str, Any] | None = None
        layout = QVBoxLayout(self)
        self.now = QLabel(self)
        self.now.setObjectName("servingNow")
        self.now.setWordWrap(True)
        self.now.setStyleSheet("QLabel { font-weight: bold; }")
        layout.addWidget(self.now)
        self.sensors = QLabel(self)
        self.sensors.setObjectName("servingSensors")
        self.sensors.setWordWrap(True)
        layout.addWidget(self.sensors)

        rules = QGroupBox("Serve", self)
        form = QFormLayout(rules)
        self.when = QComboBox(rules)
        self.when.setObjectName("servingWhen")
        self.when.addItem("Always", "always")
        self.when.addItem("Only while I am away from the computer", "idle")
        form.addRow("When", self.when)
        self.idle_minutes = QDoubleSpinBox(rules)
        self.idle_minutes.setObjectName("idleMinutes")
        self.idle_minutes.setRange(0.1, 1440.0)
        self.idle_minutes.setDecimals(1)
        self.idle_minutes.setSuffix(" min")
        self.idle_minutes.setMaximumWidth(140)
        form.addRow("Away after", self.idle_minutes)
        self.schedule = QPlainTextEdit(rules)
        self.schedule.setObjectName("servingSchedule")
        self.schedule.setPlaceholderText('any time (e.g. "mon-fri 22:00-07:00", one per line)')
        self.schedule.setMaximumHeight(80)
        self.schedule_error = error_label(rules)
        form.addRow("Only at these times", self.schedule)
        form.addRow("", self.schedule_error)
        layout.addWidget(rules)

        pause = QGroupBox("Pause", self)
        p_form = QFormLayout(pause)
        self.processes = QLineEdit(pause)
        self.processes.setObjectName("pauseWhenRunning")
        self.processes.setPlaceholderText("e.g. steam, obs64.exe, blender")
        self.processes_error = error_label(pause)
        p_form.addRow("While these run", self.processes)
        p_form.addRow("", self.processes_error)
        self.on_battery = QCheckBox("On battery power", pause)
        self.on_battery.setObjectName("pauseOnBattery")
        p_form.addRow("", self.on_battery)
        temps = QHBoxLayout()
        self.temp_pause = QSpinBox(pause)
        self.temp_pause.setObjectName("gpuTempPause")
        self.temp_pause.setRange(0, 150)
        self.temp_pause.setSuffix(" °C")
        self.temp_pause.setSpecialValueText("off")
        self.temp_resume = QSpinBox(pause)
        self.temp_resume.setObjectName("gpuTempResume")
        self.temp_resume.setRange(0, 150)
        self.temp_resume.setSuffix(" °C")
        self.temp_resume.setSpecialValueText("5 °C below")
        temps.addWidget(self.temp_pause)
        temps.addWidget(QLabel("resume at or below", pause))
        temps.addWidget(self.temp_resume)
        temps.addStretch(1)
        self.temp_error = error_label(pause)
        p_form.addRow("GPU hotter than", temps)
        p_form.addRow("", self.temp_error)
        self.free_memory = QCheckBox("Give GPU memory back while paused", pause)
        self.free_memory.setObjectName("freeGpuMemory")
        p_form.addRow("", self.free_memory)
        p_form.addRow(
            "",
            _note(
                "Ollama and LM Studio unload the models; vLLM sleeps (only when started with "
                "--enable-sleep-mode and VLLM_SERVER_DEV_MODE=1); llama.cpp has no unload API, "
                "its memory stays in use. Models are loaded again before serving resumes.",
                pause,
            ),
        )
        self.min_switch = QSpinBox(pause)
        self.min_switch.setObjectName("minSwitch")
        self.min_switch.setRange(0, 86_400)
        self.min_switch.setSuffix(" s")
        self.min_switch.setMaximumWidth(140)
        p_form.addRow("Resume no sooner than", self.min_switch)
        layout.addWidget(pause)
        layout.addWidget(
            _note(
                "Pausing stops offering models (running jobs finish); resuming offers them "
                "again. Pauses are immediate; a resume waits until the pause has lasted the time "
                "above, so models are not withdrawn and offered again every few seconds. "
                "Saved in agent.toml [serving].",
                self,
            )
        )
        self.message = error_label(self)
        layout.addWidget(self.message)
        layout.addStretch(1)
        for path, widget, label in (
            ("serving.schedule", self.schedule, self.schedule_error),
            ("serving.pause_when_running", self.processes, self.processes_error),
            ("serving.gpu_temp_pause_c", self.temp_pause, self.temp_error),
            ("serving.gpu_temp_resume_c", self.temp_resume, self.temp_error),
            ("serving.when", self.when, self.message),
            ("serving.idle_minutes", self.idle_minutes, self.message),
            ("serving.on_battery", self.on_battery, self.message),
            ("serving.free_gpu_memory_on_pause", self.free_memory, self.message),
            ("serving.min_switch_s", self.min_switch, self.message),
            ("serving", None, self.message),
        ):
            fields.register(path, self.name, widget, label)

        for signal in (
            self.when.currentIndexChanged,
            self.idle_minutes.valueChanged,
            self.schedule.textChanged,
            self.processes.textEdited,
            self.on_battery.toggled,
            self.temp_pause.valueChanged,
            self.temp_resume.valueChanged,
            self.free_memory.toggled,
            self.min_switch.valueChanged,
        ):
            signal.connect(window.mark_dirty)
        self.when.currentIndexChanged.connect(self._enable)
        window.controller.bridge.event.connect(self._on_event)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.refresh_now)
        self._timer.start()

    # ---- load / collect

    def load(self, loaded: Loaded) -> None:
        s = loaded.config.serving
        widgets = (
            self.when,
            self.idle_minutes,
            self.schedule,
            self.processes,
            self.on_battery,
            self.temp_pause,
            self.temp_resume,
            self.free_memory,
            self.min_switch,
        )
        for w in widgets:
            w.blockSignals(True)
        self.when.setCurrentIndex(max(0, self.when.findData(s.when)))
        self.idle_minutes.setValue(s.idle_minutes)
        self.schedule.setPlainText(format_schedule(s.schedule))
        self.processes.setText(", ".join(s.pause_when_running))
        self.on_battery.setChecked(s.on_battery == "pause")
        self.temp_pause.setValue(round(s.gpu_temp_pause_c))
        self.temp_resume.setValue(round(s.gpu_temp_resume_c))
        self.free_memory.setChecked(s.free_gpu_memory_on_pause)
        self.min_switch.setValue(round(s.min_switch_s))
        for w in widgets:
            w.blockSignals(False)
        self._enable()
        self._loaded_table = self._table()
        self.refresh_now()

    def _table(self) -> dict[str, Any]:
        """`[serving]` as the widgets show it (the schedule box as text)."""
        names = [n.strip() for n in re.split(r"[,\n]", self.processes.text()) if n.strip()]
        return {
            "when": self.when.currentData(),
            "idle_minutes": self.idle_minutes.value(),
            "pause_when_running": names,
            "on_battery": "pause" if self.on_battery.isChecked() else "serve",
            "gpu_temp_pause_c": self.temp_pause.value(),
            "gpu_temp_resume_c": self.temp_resume.value(),
            "free_gpu_memory_on_pause": self.free_memory.isChecked(),
            "min_switch_s": self.min_switch.value(),
            "schedule": self.schedule.toPlainText(),
        }

    def collect(self, draft: dict[str, Any]) -> list[ConfigProblem]:
        """`[serving]` from the widgets (left as loaded when none changed). A schedule line
        that cannot be read is a problem here; the rules are the core's."""
        table = self._table()
        if table == self._loaded_table:
            return []
        base = draft.get("serving") or {}
        try:
            table["schedule"] = parse_schedule(table["schedule"])
        except ValueError as exc:
            table["schedule"] = base.get("schedule", [])
            draft["serving"] = table
            return [ConfigProblem("serving.schedule", f"serving.schedule: {exc}")]
        draft["serving"] = table
        return []

    def _enable(self) -> None:
        self.idle_minutes.setEnabled(self.when.currentData() == "idle")

    # ---- live line

    def _on_event(self, event: object) -> None:
        if not isinstance(event, JobStarted | JobFinished):  # jobs change nothing shown here
            self.refresh_now()

    def refresh_now(self) -> None:
        agent = self.window_.agent
        if agent is None:
            self.now.setText("Now: the agent is not running")
            self.sensors.setText("")
            return
        self.now.setText(now_text(agent))
        self.sensors.setText(sensors_text(agent.serving.status()))


def now_text(agent: Any) -> str:
    """ "Now: serving" / "Now: paused because you are using the computer; resumes after 10 idle
    minutes"."""
    from usepod_desktop.core.serving.policy import Paused

    decision = agent.serving.decision
    if isinstance(decision, Paused):
        return f"Now: paused because {decision.text}"
    if agent.paused:
        return f"Now: paused ({agent.reason})"
    return "Now: serving"


def sensors_text(status: dict[str, Any]) -> str:
    parts: list[str] = []
    idle = status.get("idle_seconds")
    source = status.get("idle_source")
    if source not in (None, "not needed"):
        if isinstance(idle, int | float):
            parts.append(f"Idle for {idle:.0f} s ({source})")
        else:
            parts.append("Idle time unknown on this desktop (the away rule keeps serving paused)")
    for gpu in status.get("gpus") or []:
        parts.append(gpu_line(gpu))
    if status.get("gpu_sensor"):
        parts.append(str(status["gpu_sensor"]))
    parts.extend(status.get("notes") or [])
    return "\n".join(parts)


def gpu_line(g: dict[str, Any]) -> str:
    """One GPU of the serving status, as the tray, the dashboard and this tab show it."""
    return GpuReading.from_status(g).summary(labelled=True)


def _note(text: str, parent: QWidget | None = None) -> QLabel:
    label = QLabel(text, parent)
    label.setWordWrap(True)
    label.setStyleSheet("QLabel { color: palette(mid); }")
    return label
