"""The settings window: Coordinator, Backends (with allow-lists), Pricing, API keys, Limits,
Serving rules, App.

Everything that lives in agent.toml is edited as a draft and written by **Apply** only. Each
tab (see tab.py) writes its part of agent.toml into one draft dict; the core checks all of it
(`core/config.py` `problems`) and the window shows every problem at once, each on the widget
the tab registered for its field path; nothing is written while there is one. A valid Apply
calls :meth:`Agent.save_config` (atomic save, then the new backends, prices and limits take
effect without a restart); a :class:`ConfigError` from the core is shown the same way. API
keys are not part of agent.toml: they go straight to the OS keyring through the facade. The
App tab's switches (start at login, notifications) apply at once.

When agent.toml does not validate there is no agent: the window then shows a draft of the file
(:func:`~usepod_desktop.core.config.load_config_draft`: valid fields kept, invalid ones reset),
the load error on top and each invalid field marked; Apply saves it once it is valid (the file
stays byte-identical until then) and the controller starts the agent from it.

No dialog here is run with `exec()`: Add / Edit / Detect use `open()` and `finished`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QTabWidget, QVBoxLayout, QWidget

from usepod_desktop.core.config import (
    REMOTE_KINDS,
    Config,
    ConfigChangedError,
    ConfigDraft,
    ConfigProblem,
    config_from_dict,
    config_to_dict,
    problems,
    save_config,
)
from usepod_desktop.core.errors import ConfigError, UserFacingError
from usepod_desktop.core.events import StateChanged
from usepod_desktop.gui import tasks
from usepod_desktop.gui.icons import app_icon
from usepod_desktop.gui.settings.app_tab import AppTab
from usepod_desktop.gui.settings.backends import BackendsTab
from usepod_desktop.gui.settings.coordinator import CoordinatorTab
from usepod_desktop.gui.settings.keys import KeysTab
from usepod_desktop.gui.settings.limits import LimitsTab
from usepod_desktop.gui.settings.pricing import PricingTab
from usepod_desktop.gui.settings.serving import ServingTab
from usepod_desktop.gui.settings.tab import SAVED_PREFIX, FieldMap, Loaded, SettingsTab, covered
from usepod_desktop.gui.widgets import ERROR_COLOUR, INVALID_STYLE, set_tone

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
        #: Field path -> the widget that shows it; each tab registers its own.
        self.fields = FieldMap()
        self.coordinator_tab = CoordinatorTab(self, self.fields)
        self.backends_tab = BackendsTab(self, self.fields)
        self.pricing_tab = PricingTab(self, self.fields)
        self.keys_tab = KeysTab(self, self.fields)
        self.limits_tab = LimitsTab(self, self.fields)
        self.serving_tab = ServingTab(self, self.fields)
        self.app_tab = AppTab(self, self.fields)
        self.all_tabs: tuple[SettingsTab, ...] = (
            self.coordinator_tab,
            self.backends_tab,
            self.pricing_tab,
            self.keys_tab,
            self.limits_tab,
            self.serving_tab,
            self.app_tab,
        )
        for tab in self.all_tabs:
            assert isinstance(tab, QWidget)
            self.tabs.addTab(tab, tab.title)
        assert tuple(tab.name for tab in self.all_tabs) == TAB_NAMES
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
        view = agent.snapshot()
        self._load_tabs(
            Loaded(
                config=agent.config,
                view=view if view.discovered else None,
                agent=agent,
                allow_insecure=agent.allow_insecure,
                config_path=agent.config_path,
                sandbox=self.controller.sandbox,
                state=agent.state,
                reason=agent.reason,
            )
        )

    def _load_tabs(self, loaded: Loaded) -> None:
        self.fields.clear()
        for tab in self.all_tabs:
            tab.load(loaded)
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
        self._load_tabs(
            Loaded(
                config=draft.config,
                view=None,
                agent=None,
                allow_insecure=controller.options.allow_insecure or controller.prefs.allow_insecure,
                config_path=path,
                sandbox=controller.sandbox,
                state=controller.state,
                reason=controller.reason,
            )
        )
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
        found = [ConfigProblem.of(problem) for problem in draft.problems]
        # a `[[backends]]` entry with a problem may have been left out of the draft: its
        # index in the file is no row of the table, so the problem goes to the table itself
        self.show_problems(
            [replace(p, path="backends") if p.path.startswith("backends[") else p for p in found]
        )

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

    def collect(self) -> tuple[Config | None, bool, list[ConfigProblem]]:
        """The draft as a Config (None while it has a problem), the insecure flag, and every
        problem: what a tab could not read, then the core's rules on the rest."""
        agent = self.agent
        base = agent.config if agent is not None else self.draft.config if self.draft else None
        assert base is not None
        insecure = self.coordinator_tab.insecure.isChecked()
        draft = config_to_dict(base)
        found: list[ConfigProblem] = []
        for tab in self.all_tabs:
            found += tab.collect(draft)
        unread = [problem.path for problem in found]  # the core would only say "missing"
        found += [
            problem
            for problem in problems(draft, allow_insecure=insecure)
            if not covered(problem.path, unread)
        ]
        if found:
            return None, insecure, sorted(found, key=self.fields.order(TAB_NAMES))
        return config_from_dict(draft, allow_insecure=insecure), insecure, []

    def show_problems(self, found: list[ConfigProblem]) -> None:
        """Every problem on its widget at once; the first one's tab comes up, its field gets
        the focus."""
        self.fields.clear()
        first: tuple[str, QWidget | None] | None = None
        for problem in found:
            tab = self.fields.show(problem)
            if tab is not None and first is None:
                first = self.fields.find(problem.path)
        if first is not None:
            self.select_tab(first[0])
            if first[1] is not None:
                first[1].setFocus()

    def apply(self) -> bool:
        """Validate everything; write nothing unless all of it is valid. Returns whether a
        save was started (or nothing needed saving)."""
        agent = self.agent
        if (agent is None and self.draft is None) or self.saving:
            return False
        config, insecure, found = self.collect()
        if found or config is None:
            self.show_problems(found)
            self.set_message(
                _problems_text("Nothing was saved. Fix the highlighted", found), "error"
            )
            return False
        self.fields.clear()
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
        """An error from the core: a ConfigError's problems on their widgets, said inline."""
        if isinstance(error, ConfigError):
            found = list(getattr(error, "problems", ())) or (
                [ConfigProblem(error.field, error.message)] if error.field else []
            )
            if found:
                self.show_problems(found)
                self.set_message(_problems_text("Not saved. Fix the highlighted", found), "error")
                return
            self.set_message(f"Not saved: {error.message}", "error")
            return
        self.set_message(f"{error.title}: {error.message}", "error")

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.backends_tab.dialog is not None:
            self.backends_tab.dialog.close()
        event.accept()


def _problems_text(lead: str, found: list[ConfigProblem]) -> str:
    """ "<lead> field: <message>", or one line per problem when there are several."""
    if len(found) == 1:
        return f"{lead} field: {found[0].message}"
    return "\n".join([f"{lead} fields ({len(found)}):", *(f"• {p.message}" for p in found)])
