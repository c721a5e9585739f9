"""A small stand-in for the app behind the tray and the status window: it meets
gui/model.py's `TrayModel` with plain attributes and records every action, so those two
windows are tested without the controller."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

from PySide6.QtCore import QObject, Signal

from usepod_desktop.core.events import AgentState

__all__ = ["StandIn", "imported_modules"]


class NoUpdate:
    available = None


class StandIn(QObject):
    """A TrayModel with plain attributes; every action is appended to `calls`."""

    statusChanged = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []
        self.state = AgentState.SERVING
        self.reason = "connected"
        self.paused = False
        self.agent: object | None = object()
        self.stopping = False
        self.sandbox = False
        self.needs_pairing = False
        self.settings_available = True
        self.config_problem_path: Path | None = None
        self.tray: object | None = None
        self.updates = NoUpdate()
        self.autostart_on = False

    def status_text(self) -> str:
        return f"{self.state.label} · {self.reason}"

    def figures_text(self) -> str:
        return "Today: 7 jobs"

    def tooltip_text(self) -> str:
        return f"stand-in: {self.state.label}"

    def gpu_lines(self) -> list[str]:
        return ["GPU: 41 °C"]

    def autostart_supported(self) -> tuple[bool, str]:
        return True, ""

    def start_at_login(self) -> bool:
        return self.autostart_on

    def _record(self, name: str, arg: object = None) -> None:
        self.calls.append((name, arg))

    def pause(self) -> None:
        self._record("pause")

    def resume(self) -> None:
        self._record("resume")

    def toggle_pause(self) -> None:
        self._record("toggle_pause")

    def pause_for(self, seconds: float) -> None:
        self._record("pause_for", seconds)

    def pause_until_tomorrow(self) -> None:
        self._record("pause_until_tomorrow")

    def open_settings(self) -> object:
        self._record("open_settings")
        return None

    def open_pairing(self) -> object:
        self._record("open_pairing")
        return None

    def open_test_job(self) -> object:
        self._record("open_test_job")
        return None

    def open_dashboard(self) -> object:
        self._record("open_dashboard")
        return None

    def open_doctor(self) -> object:
        self._record("open_doctor")
        return None

    def open_log_view(self) -> object:
        self._record("open_log_view")
        return None

    def open_log_folder(self) -> bool:
        self._record("open_log_folder")
        return True

    def open_config_file(self) -> bool:
        self._record("open_config_file")
        return True

    def reload_config_file(self) -> None:
        self._record("reload_config_file")

    def show_update(self) -> None:
        self._record("show_update")

    def show_main(self) -> None:
        self._record("show_main")

    def set_start_at_login(self, on: bool) -> None:
        self._record("set_start_at_login", on)
        self.autostart_on = on

    def request_quit(self) -> None:
        self._record("request_quit")


def imported_modules(module: ModuleType) -> set[str]:
    """Every module `module`'s source imports, `if TYPE_CHECKING:` blocks and functions
    included."""
    source = Path(module.__file__ or "").read_text(encoding="utf-8")
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    return imported
