"""The GUI's one owner of the agent facade: state for display, the actions behind every menu
entry and button, the windows (one of each), notifications and today's figures (read from the
ledger by :class:`~usepod_desktop.gui.figures.LedgerFigures`, shared with the dashboard).

The tray (or the fallback window where there is no tray) shows what the controller says and
calls its methods; no widget talks to the network or reads agent.toml.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from PySide6.QtCore import QFileSystemWatcher, QObject, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QSystemTrayIcon, QWidget

from usepod_desktop.core import paths
from usepod_desktop.core.config import ConfigDraft, load_config_draft
from usepod_desktop.core.doctor.history import ConnectionHistory
from usepod_desktop.core.errors import ConfigError, UserFacingError
from usepod_desktop.core.events import AgentState, JobFinished, JobStarted
from usepod_desktop.core.host import Adopted, AgentHost, ConfigNotFound, HostOptions
from usepod_desktop.core.money import earnings_nusd, format_amount
from usepod_desktop.gui import tasks
from usepod_desktop.gui.bridge import AgentBridge
from usepod_desktop.gui.errors import show_message, show_user_error
from usepod_desktop.gui.figures import LedgerFigures, Throttle
from usepod_desktop.gui.notify import Level, Notifier, bubble_text
from usepod_desktop.gui.prefs import Prefs
from usepod_desktop.gui.widgets import APP_TITLE, elide
from usepod_desktop.gui.windows import WindowRegistry, show_window

if TYPE_CHECKING:
    from usepod_desktop.core.agent import Agent
    from usepod_desktop.core.ledger import Ledger
    from usepod_desktop.core.pairing.values import PairingResult
    from usepod_desktop.gui.dashboard import DashboardWindow
    from usepod_desktop.gui.doctor_window import DoctorWindow
    from usepod_desktop.gui.logview import LogViewer
    from usepod_desktop.gui.mainwindow import StatusWindow
    from usepod_desktop.gui.settings import SettingsWindow
    from usepod_desktop.gui.test_job import TestJobDialog
    from usepod_desktop.gui.tray import TrayIcon

log = logging.getLogger(__name__)

CONFIG_RELOAD_DEBOUNCE_MS = 300
#: The GUI's words (the menu and the status window offer "Pair this computer..." next to it).
NOT_PAIRED = "not paired yet; choose “Pair this computer…”"
TRAY_RECHECK_MS = 5000
#: Job started/finished events refresh the tray tooltip and the windows at most this often.
JOB_STATUS_INTERVAL_MS = 250


@dataclass(slots=True)
class StartOptions:
    config: str | None = None
    allow_insecure: bool = False
    sandbox: bool = False
    grace_s: float = 10.0
    demo_interval_s: float = 5.0
    #: BYOK backends opted in for sandbox demo jobs (`--demo-remote`: kind or api_key_env).
    demo_remote: tuple[str, ...] = ()


class TodayCounter:
    """Jobs served today and their estimated earnings, counted from JobFinished events (used
    when there is no ledger, or while it cannot be read). Test jobs do not count; sandbox jobs
    only in sandbox mode."""

    def __init__(self, today: Callable[[], date] = date.today) -> None:
        self._today = today
        self.day = today()
        self.jobs = 0
        self.earnings_nusd = 0

    def add(self, event: JobFinished, counted: str = "coordinator") -> None:
        """Count `event` when it is a done job of source `counted` (sandbox jobs are never
        counted as real earnings, test jobs never at all)."""
        outcome = event.outcome
        if not outcome.ok or outcome.source != counted:
            return
        ended = outcome.ended_at
        day = ended.astimezone().date() if isinstance(ended, datetime) else self._today()
        if day != self.day:
            if day < self.day:
                return
            self.day, self.jobs, self.earnings_nusd = day, 0, 0
        self.jobs += 1
        self.earnings_nusd += earnings_nusd(
            outcome.input_tokens,
            outcome.output_tokens,
            outcome.input_per_1m,
            outcome.output_per_1m,
        )

    def summary(self) -> tuple[int, int]:
        """(jobs, estimated earnings in nano-USD), each job rounded as the ledger stores it."""
        if self._today() != self.day:
            return 0, 0
        return self.jobs, self.earnings_nusd


class AppController(QObject):
    #: Anything the status display depends on changed (state, jobs, today's figures).
    statusChanged = Signal()
    #: The agent was created or replaced (e.g. after pairing).
    agentChanged = Signal()

    def __init__(
        self,
        *,
        prefs: Prefs | None = None,
        open_url: Callable[[QUrl], bool] = QDesktopServices.openUrl,
        offline_grace_ms: int | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.prefs = prefs or Prefs()
        self.open_url = open_url
        self.bridge = AgentBridge(self)
        self.agent: Agent | None = None
        self.options = StartOptions()
        self.sandbox = False
        self.sandbox_session: Any = None
        self.demo_labels: set[str] = set()
        #: Shown while there is no agent (not paired, invalid agent.toml, start failed).
        self.problem_state = AgentState.OFFLINE
        self.problem_reason = "starting"
        self.today = TodayCounter()
        #: Builds the agent and owns it, the ledger and the sandbox session (core/host.py).
        self.host = AgentHost()
        self._ledger_detach: Callable[[], None] | None = None
        self.notifications: list[tuple[str, str, Level]] = []
        kwargs = {} if offline_grace_ms is None else {"offline_grace_ms": offline_grace_ms}
        self.notifier = Notifier(self.prefs, self.notify, parent=self, **kwargs)
        self.notifier.connect_bridge(self.bridge)
        #: Set by the earnings dashboard when it exists: opens it (the menu shows it then).
        self.tray: TrayIcon | None = None
        self._tray_watch: QTimer | None = None
        self.window: StatusWindow | None = None
        #: Settings, dashboard, diagnose, log view, test job and the pairing wizard: one each.
        self.windows = WindowRegistry()
        #: Connected since / reconnects, for the Diagnose window.
        self.connection_history: ConnectionHistory | None = None
        from usepod_desktop.gui.update_check import UpdateWatcher

        #: The periodic update check ("Update available" in the tray menu).
        self.updates = UpdateWatcher(self.prefs, parent=self)
        self.updates.changed.connect(self.statusChanged)
        self._autostart_on: bool | None = None
        self.stopping = False
        self._quit = asyncio.Event()
        # Order matters: the bridge emits `jobFinished` before `event`, so the "today"
        # counter has the job when the status refresh below reads it.
        self.bridge.jobFinished.connect(self._on_job_finished)
        self.bridge.event.connect(self._on_any_event)
        #: Job events refresh the status (tray tooltip, windows) at most this often.
        self._job_status = Throttle(self.statusChanged.emit, JOB_STATUS_INTERVAL_MS, self)
        #: The one throttled reader of the ledger, for the tray's "today" and the dashboard.
        self.figures = LedgerFigures(
            self.host,
            self.bridge,
            sandbox=lambda: bool(self.sandbox),
            stopping=lambda: self.stopping,
            parent=self,
        )
        self.figures.todayChanged.connect(self.statusChanged)
        #: The agent.toml that could not be loaded (None: no such problem). While it is set,
        #: the file (and its folder: editors and our own saves replace the file) is watched
        #: and a change starts the agent again; "Reload agent.toml" does the same by hand.
        self.config_problem_path: Path | None = None
        #: That file is readable TOML: Settings opens on a draft of it to fix it.
        self.settings_draftable = False
        self._config_watch = QFileSystemWatcher(self)
        self._config_watch.fileChanged.connect(self._config_changed)
        self._config_watch.directoryChanged.connect(self._config_changed)
        self._reload_timer = QTimer(self)
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(CONFIG_RELOAD_DEBOUNCE_MS)
        self._reload_timer.timeout.connect(self.reload_config_file)

    # ---- the agent ---------------------------------------------------------------------

    def show_ui(self, tray_available: bool | None = None) -> None:
        """The tray icon, or the status window where the desktop has no tray."""
        if tray_available is None:
            tray_available = QSystemTrayIcon.isSystemTrayAvailable()
        if tray_available:
            self._show_tray()
        else:
            log.info("no system tray on this desktop: showing the status window instead")
            self.show_status_window()
            # A tray host may start later (a panel restarting, an AppIndicator extension
            # enabled): then the icon appears and the window stops being the only way in.
            self._tray_watch = QTimer(self)
            self._tray_watch.setInterval(TRAY_RECHECK_MS)
            self._tray_watch.timeout.connect(self.check_tray)
            self._tray_watch.start()

    def _show_tray(self) -> None:
        from usepod_desktop.gui.tray import TrayIcon

        self.tray = TrayIcon(self)
        self.tray.show()

    def check_tray(self, available: bool | None = None) -> bool:
        """Show the tray icon once a system tray exists. Returns True when it is shown."""
        if self.tray is not None:
            return True
        if available is None:
            available = QSystemTrayIcon.isSystemTrayAvailable()
        if not available:
            return False
        if self._tray_watch is not None:
            self._tray_watch.stop()
        log.info("a system tray is available now: showing the tray icon")
        self._show_tray()
        return True

    def set_agent(self, agent: Agent | None) -> None:
        """Show this agent (None: none, e.g. not paired yet)."""
        self.agent = agent
        if self.connection_history is not None:
            self.connection_history.detach()
        self.connection_history = None
        if agent is None:
            self.bridge.detach()
        else:
            self.bridge.attach(agent.events)
            self._attach_ledger(agent)
            self.connection_history = ConnectionHistory.attach(agent)
        self.agentChanged.emit()
        self.statusChanged.emit()

    def set_problem(self, state: AgentState, reason: str) -> None:
        self.problem_state, self.problem_reason = state, reason
        self.statusChanged.emit()

    async def start(self, options: StartOptions) -> None:
        """Load agent.toml (or set up the sandbox), create the agent and start it, through
        the host. Problems become the displayed state; this never raises for a user-facing
        error."""
        self.options = options
        self.sandbox = options.sandbox
        self._watch_config(None)
        self.set_problem(AgentState.CONNECTING, "starting")
        self.updates.start()
        host_options = HostOptions(
            config=options.config,
            allow_insecure=options.allow_insecure or self.prefs.allow_insecure,
            sandbox=options.sandbox,
            demo_remote=options.demo_remote,
            agent_kwargs={"instance_kind": "tray"},
        )
        if options.sandbox:
            from usepod_desktop.sandbox.demo import SandboxSession

            self.host.use_sandbox(SandboxSession)
        try:
            agent = await self.host.load(host_options)
        except ConfigNotFound as exc:
            if options.config is None:
                self.set_problem(AgentState.NEEDS_PAIRING, NOT_PAIRED)
            else:
                self.set_problem(AgentState.ERROR, exc.message)
            return
        except ConfigError as exc:  # agent.toml is invalid: fixing it restarts the agent
            self._watch_config(self.host.config_path)
            self.settings_draftable = self.config_draft() is not None
            self.set_problem(AgentState.ERROR, f"{exc.title}: {exc.message}")
            return
        except UserFacingError as exc:
            self.set_problem(AgentState.ERROR, f"{exc.title}: {exc.message}")
            return
        self.sandbox_session = self.host.sandbox_session
        if self.sandbox_session is not None:
            self.demo_labels = set(self.sandbox_session.demo_labels)
        self.set_agent(agent)
        try:
            await agent.start()
        except Exception as exc:
            self._start_failed(exc)
            return
        await self._serving(agent)

    def _start_failed(self, exc: Exception) -> None:
        """An agent that could not start: no agent, its error shown as the state (a bug also
        reaches the excepthook; the tray stays alive either way)."""
        self.set_agent(None)
        if isinstance(exc, UserFacingError):
            self.set_problem(AgentState.ERROR, f"{exc.title}: {exc.message}")
            return
        self.set_problem(AgentState.ERROR, f"the agent could not start: {exc}")
        sys.excepthook(type(exc), exc, exc.__traceback__)

    async def _serving(self, agent: Agent) -> None:
        """What follows a started agent: the local control channel, the sandbox's demo jobs,
        the start-at-login and today's figures."""
        await agent.serving.start_control()  # `usepod-desktop pause/resume/status`
        if self.sandbox_session is not None:
            self.sandbox_session.start_demo_jobs(interval_s=self.options.demo_interval_s)
        await self._refresh_autostart()
        self.refresh_today()

    async def adopt_pairing(self, result: PairingResult) -> None:
        """The pairing wizard finished: say so, and serve with the new agent.toml and
        identity (the host decides how: see :meth:`AgentHost.adopt_pairing`). A failed start
        becomes the displayed state, as in :meth:`start`; a failed reload of the running agent
        raises (it keeps serving with its previous config)."""
        if self.stopping:
            return  # quitting (closing the wizard's last page also means "Start serving")
        self.notifier.paired(result.provider_id)
        if not self.sandbox:
            # the pairing rewrote agent.toml: an "invalid agent.toml" shown until now is
            # obsolete, and its watcher must not start a second agent beside the host's
            self._reload_timer.stop()
            self._watch_config(None)
        before = self.agent
        try:
            adopted = await self.host.adopt_pairing(
                result, grace=self.options.grace_s, on_agent=self.set_agent
            )
        except Exception as exc:
            reload_failed = before is not None and self.host.agent is before
            if isinstance(exc, UserFacingError) and reload_failed:
                raise  # the running agent keeps its previous config
            self._start_failed(exc)
            return
        if adopted is not Adopted.STARTED:
            return
        used = self.host.options
        self.options = dataclasses.replace(
            self.options,
            config=None if used.config is None else str(used.config),
            allow_insecure=self.options.allow_insecure or used.allow_insecure,
        )
        agent = self.host.agent
        if agent is not None:
            await self._serving(agent)

    # ---- what the tray shows -----------------------------------------------------------

    @property
    def state(self) -> AgentState:
        if self.agent is None:
            return self.problem_state
        return self.agent.state

    @property
    def reason(self) -> str:
        if self.agent is None:
            return self.problem_reason
        return self.agent.reason

    @property
    def jobs_running(self) -> int:
        return self.agent.jobs_running if self.agent is not None else 0

    @property
    def paused(self) -> bool:
        return bool(self.agent is not None and self.agent.paused)

    def today_summary(self) -> tuple[int, int]:
        """(jobs served today, estimated earnings in nano-USD): the ledger's figure when it has
        one, else the in-memory count."""
        if self.figures.today is not None:
            return self.figures.today
        return self.today.summary()

    def status_text(self) -> str:
        prefix = "Sandbox · " if self.sandbox else ""
        if self.stopping:
            return f"{prefix}Stopping…"
        reason = self.reason
        return f"{prefix}{self.state.label}" + (f": {reason}" if reason else "")

    def figures_text(self) -> str:
        jobs, nusd = self.today_summary()
        what = "demo job(s)" if self.sandbox else "job(s)"
        earned = (
            "no real earnings"
            if self.sandbox
            else f"≈ {format_amount(nusd, places=None)} estimated"
        )
        return f"{self.jobs_running} running · today {jobs} {what}, {earned}"

    def tooltip_text(self) -> str:
        """Short (Windows cuts tray tooltips at 127 characters)."""
        jobs, nusd = self.today_summary()
        title = f"{APP_TITLE} (sandbox)" if self.sandbox else APP_TITLE
        money = "demo" if self.sandbox else f"≈ {format_amount(nusd, places=None)}"
        lines = [f"{title}: {self.state.label}"]
        if self.state == AgentState.NO_MODELS:  # which backend is down, cut to fit
            lines.append(elide(self.reason, 70))
        lines += [
            f"{self.jobs_running} job(s) running",
            f"Today: {jobs} job(s), {money}",
        ]
        why = self.serving_line()
        if why:
            lines.insert(1, why if len(why) <= 70 else why[:69] + "…")
        return "\n".join(lines)

    def serving_line(self) -> str:
        """ "Paused: you are using the computer; resumes after 10 idle minutes" (or "" while
        serving): the reason the `[serving]` rules or the user paused, and when it ends."""
        agent = self.agent
        if agent is None:
            return ""
        return agent.serving.status_line() if not agent.serving.decision.serving else ""

    def gpu_lines(self) -> list[str]:
        """One line per GPU (temperature, utilisation, VRAM, power), or why there are none."""
        if self.agent is None:
            return []
        from usepod_desktop.gui.settings.serving import gpu_line

        status = self.agent.serving.status()
        lines = [gpu_line(g) for g in status.get("gpus") or []]
        return lines or ([status["gpu_sensor"]] if status.get("gpu_sensor") else [])

    def is_demo_backend(self, label: str) -> bool:
        return label in self.demo_labels

    # ---- actions -----------------------------------------------------------------------

    def pause(self) -> None:
        if self.agent is not None:
            tasks.spawn(self.agent.pause(), name="pause", on_error=self._error_box)

    def resume(self) -> None:
        if self.agent is not None:
            tasks.spawn(self.agent.resume(), name="resume", on_error=self._error_box)

    def pause_for(self, seconds: float) -> None:
        """ "Pause for 15 minutes / 1 hour" in the tray menu."""
        if self.agent is not None:
            from datetime import UTC, datetime, timedelta

            until = datetime.now(UTC) + timedelta(seconds=seconds)
            tasks.spawn(self.agent.pause(until), name="pause", on_error=self._error_box)

    def pause_until_tomorrow(self) -> None:
        """ "Pause until tomorrow": until the next 06:00 local time."""
        if self.agent is not None:
            from datetime import UTC, datetime

            from usepod_desktop.core.serving.policy import manual_until

            until = manual_until(datetime.now(UTC), tomorrow=True)
            tasks.spawn(self.agent.pause(until), name="pause", on_error=self._error_box)

    def toggle_pause(self) -> None:
        self.resume() if self.paused else self.pause()

    # ---- an invalid agent.toml: watch it, reload it --------------------------------------

    def config_draft(self) -> ConfigDraft | None:
        """A best-effort reading of the invalid agent.toml, for Settings to fix it (None: no
        such file, or it is not UTF-8 / not TOML at all: only an editor can fix that)."""
        path = self.config_problem_path
        if path is None:
            return None
        insecure = self.options.allow_insecure or self.prefs.allow_insecure
        try:
            return load_config_draft(path, allow_insecure=insecure)
        except ConfigError as exc:
            log.info("settings cannot open %s: %s", path, exc.message)
            return None

    @property
    def settings_available(self) -> bool:
        """Settings can open: an agent, or an invalid agent.toml that is readable TOML."""
        if self.stopping:
            return False
        return self.agent is not None or (
            self.config_problem_path is not None and self.settings_draftable
        )

    def config_saved(self) -> None:
        """Settings wrote a valid agent.toml in place of the invalid one: start from it (the
        same debounced reload as the file watch, so both make one start)."""
        if self.config_problem_path is not None and not self.stopping:
            self._reload_timer.start()

    def _watch_config(self, path: Path | None) -> None:
        watched = self._config_watch.files() + self._config_watch.directories()
        if watched:
            self._config_watch.removePaths(watched)
        self.config_problem_path = path
        self.settings_draftable = False
        if path is not None:
            self._config_watch.addPaths([str(path), str(path.parent)])

    def _config_changed(self, _path: str) -> None:
        if self.config_problem_path is not None and not self.stopping:
            self._reload_timer.start()  # an editor writes in steps: wait until it is done

    def reload_config_file(self) -> None:
        """Start again from agent.toml (after it was invalid): "Reload agent.toml"."""
        if self.agent is not None or self.stopping or not tasks.loop_available():
            return  # (a debounce timer may fire after its loop is gone)
        tasks.spawn(self.start(self.options), name="reload agent.toml")

    def open_config_file(self) -> bool:
        """Open the invalid agent.toml in the desktop's editor (to fix it)."""
        path = self.config_problem_path
        if path is None:
            return False
        ok = bool(self.open_url(QUrl.fromLocalFile(str(path))))
        if not ok:
            show_message(None, "agent.toml", f"agent.toml is at {path}")
        return ok

    def open_settings(self, tab: str | None = None) -> SettingsWindow | None:
        if self.agent is None and (self.config_problem_path is None or self.config_draft() is None):
            self.show_status_window()
            return None
        from usepod_desktop.gui.settings import SettingsWindow

        def again(window: SettingsWindow) -> None:
            if self.agent is None and not window.dirty and not window.saving:
                window.load()  # the file as it is now

        def select(window: SettingsWindow) -> None:
            if tab is not None:
                window.select_tab(tab)

        return self.windows.open(
            "settings", lambda: SettingsWindow(self), again=again, prepare=select
        )

    def open_test_job(self) -> TestJobDialog | None:
        if self.agent is None:
            self.show_status_window()
            return None
        from usepod_desktop.gui.test_job import TestJobDialog

        return self.windows.open(
            "test_job", lambda: TestJobDialog(self), prepare=TestJobDialog.refresh_models
        )

    @property
    def needs_pairing(self) -> bool:
        return self.state == AgentState.NEEDS_PAIRING and not self.sandbox and not self.stopping

    def open_pairing(self) -> QWidget | None:
        """The pairing wizard ("Pair this computer...", first launch)."""
        from usepod_desktop.gui.pairing import open_pairing_wizard

        return open_pairing_wizard(self)

    def open_dashboard(self) -> DashboardWindow:
        """The earnings dashboard: one window, raised and read again when opened again."""
        from usepod_desktop.gui.dashboard import DashboardWindow

        return self.windows.open(
            "dashboard", lambda: DashboardWindow(self), prepare=DashboardWindow.refresh
        )

    def open_doctor(self) -> DoctorWindow:
        """The Diagnose window ("why am I not earning?"): runs the checks each time it opens."""
        from usepod_desktop.gui.doctor_window import DoctorWindow

        return self.windows.open(
            "doctor", lambda: DoctorWindow(self), prepare=DoctorWindow.run_checks
        )

    def show_update(self) -> None:
        """What the tray's "Update available" entry shows: the versions and what to do."""
        info = self.updates.available
        if info is None:
            return
        show_message(
            None,
            "Update available",
            f"usepod-desktop {info.newest} is available (you run {info.current}).\n\n"
            f"To upgrade, {info.how_to_upgrade()}.\nNothing is installed automatically.",
        )

    def open_log_view(self) -> LogViewer:
        from usepod_desktop.gui.logview import LogViewer

        return self.windows.open("log_view", lambda: LogViewer(open_folder=self.open_log_folder))

    def open_log_folder(self) -> bool:
        directory = paths.log_dir()
        with contextlib.suppress(OSError):
            directory.mkdir(parents=True, exist_ok=True)
        ok = bool(self.open_url(QUrl.fromLocalFile(str(directory))))
        if not ok:
            show_message(None, "Log folder", f"The logs are in {directory}")
        return ok

    def show_status_window(self) -> StatusWindow:
        from usepod_desktop.gui.mainwindow import StatusWindow

        if self.window is None:
            self.window = StatusWindow(self)
        show_window(self.window)
        return self.window

    def show_main(self) -> None:
        """Another launch asked us to come forward."""
        log.info("brought forward (another launch, or the tray icon)")
        if self.window is not None or self.agent is None:
            self.show_status_window()
        else:
            self.open_settings()

    # start at login

    def autostart_supported(self) -> tuple[bool, str]:
        """Whether "Start at login" can be offered, and why not (every supported OS can)."""
        return True, ""

    def start_at_login(self) -> bool:
        if self._autostart_on is None:
            self._autostart_on = self._read_autostart()
        return self._autostart_on

    def _read_autostart(self) -> bool:
        try:
            return self.host.autostart_enabled()
        except Exception:
            log.exception("cannot read the start-at-login setting")
            return False

    async def _refresh_autostart(self) -> None:
        self._autostart_on = await asyncio.to_thread(self._read_autostart)

    def set_start_at_login(self, on: bool) -> None:
        # start with this app's agent.toml
        config = self.options.config if self.options.config and not self.sandbox else None

        async def change() -> None:
            if on:
                await self.host.enable_autostart(config)
            else:
                await self.host.disable_autostart()
            await self._refresh_autostart()
            self.statusChanged.emit()

        tasks.spawn(change(), name="autostart", on_error=self._error_box)

    # quitting

    def request_quit(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.notifier.suspend()
        self.statusChanged.emit()
        tasks.spawn(self.shutdown(), name="shutdown")

    async def shutdown(self) -> None:
        """Stop gracefully: no new jobs, running ones get the grace period, then close."""
        self.stopping = True
        self.notifier.suspend()
        self.figures.stop()
        self.updates.stop()
        if self._tray_watch is not None:
            self._tray_watch.stop()
        try:
            test_job = self.windows.get("test_job")
            self.windows.close_all()  # the pairing wizard too (it cancels its flow)
            if test_job is not None:
                cast("TestJobDialog", test_job).stop()
            if self.agent is not None:  # the host's, or one set with set_agent
                await self.agent.stop(grace=self.options.grace_s)
            await self.host.stop(grace=self.options.grace_s)  # and the sandbox session
            if self._ledger_detach is not None:
                self._ledger_detach()
                self._ledger_detach = None
            await self.host.close()  # the ledger, flushed
        finally:
            self.bridge.detach()
            if self.tray is not None:
                self.tray.dispose()
            self._quit.set()

    async def wait_quit(self) -> None:
        await self._quit.wait()

    # ---- notifications -----------------------------------------------------------------

    def notify(self, title: str, message: str, level: Level = "info") -> None:
        self.notifications.append((title, message, level))
        log.info("notification: %s: %s", title, message)
        icon = {
            "info": QSystemTrayIcon.MessageIcon.Information,
            "warning": QSystemTrayIcon.MessageIcon.Warning,
            "error": QSystemTrayIcon.MessageIcon.Critical,
        }[level]
        if self.tray is not None and self.tray.isVisible():
            self.tray.showMessage(bubble_text(title), bubble_text(message), icon, 8000)
        elif self.window is not None:
            self.window.show_notification(title, message)

    def _error_box(self, error: UserFacingError) -> None:
        show_user_error(None, error)

    # ---- figures -----------------------------------------------------------------------

    def _on_job_finished(self, event: JobFinished) -> None:
        self.today.add(event, "sandbox" if self.sandbox else "coordinator")

    def _on_any_event(self, event: object) -> None:
        if isinstance(event, JobFinished | JobStarted):
            self._job_status()  # hundreds a second when busy: throttled
        else:
            self.statusChanged.emit()

    @property
    def ledger(self) -> Ledger | None:
        """The host's ledger (None until an agent was loaded or a ledger set)."""
        return self.host.ledger

    @ledger.setter
    def ledger(self, ledger: Ledger | None) -> None:
        self.host.use_ledger(ledger)

    def _attach_ledger(self, agent: Agent) -> None:
        if self._ledger_detach is not None:
            self._ledger_detach()
            self._ledger_detach = None
        if agent is not self.host.agent:  # the host records its own agent's jobs
            self._ledger_detach = self.host.record_jobs(agent, sandbox=self.sandbox)

    def refresh_today(self) -> None:
        """Read today's figures from the ledger again now (see :class:`LedgerFigures`)."""
        self.figures.refresh_today()
