"""The serving loop: applies the `[serving]` rules to a running agent, keeps the advertised
models honest when a local backend goes down, and owns the manual pause.

Every `interval` seconds it reads the sensors (in a worker thread), asks the pure
:func:`~usepod_desktop.core.serving.policy.decide`, and applies the answer:

- pausing: capabilities with no models, new jobs refused with `out_of_capacity` ("provider is
  paused: ..."), running jobs finish (with `free_gpu_memory_on_pause` they get
  `pause_grace_s`, then end with their terminal frame, and the models are unloaded);
- resuming: models unloaded on pause are loaded / woken up first, then advertised again.

Local backends are health-checked every `backend_interval` (2) seconds: one that stops answering
has its models withdrawn at once (a re-discovery), and they come back as soon as it answers.

The controller sees the agent through :class:`ServedAgent` only: it reads the agent's snapshot
and config, and acts by pausing / resuming, draining running jobs and re-discovering.

The manual pause is kept in `<data dir>/serving-pause-<hash of the agent.toml path>.json`, so a
restart does not resume (and the sandbox's pause is not the real agent's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from usepod_desktop.core.kinds import LOCAL_KINDS
from usepod_desktop.core.serving.policy import (
    Decision,
    ManualPause,
    Memory,
    Paused,
    Serve,
    decide,
)
from usepod_desktop.core.serving.sensors import Sensors, Snapshot

if TYPE_CHECKING:
    from usepod_desktop.core.backends.base import Backend
    from usepod_desktop.core.config import Config
    from usepod_desktop.core.discovery import BackendReport
    from usepod_desktop.core.events import EventBus
    from usepod_desktop.core.serving.control import ControlServer
    from usepod_desktop.core.view import AgentView

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 3.0
#: Below the adapters' 3 s keep-alive expiry: each check reuses the pooled connection.
DEFAULT_BACKEND_INTERVAL_S = 2.0
BACKEND_CHECK_TIMEOUT_S = 2.0
PAUSE_GRACE_S = 30.0
STATE_FILE = "serving-pause.json"


@dataclass(frozen=True, slots=True)
class ServingChanged:
    """Published on the agent's event bus when serving starts or stops because of the rules
    (or a manual pause/resume)."""

    serving: bool
    paused_by: tuple[str, ...]
    text: str  # "you are using the computer; resumes after 10 idle minutes"
    resumes_at: datetime | None
    manual: bool  # the user asked for it (no notification needed)


class ServedAgent(Protocol):
    """What the serving controller may read of the agent it serves, and the few things it may
    do to it. The agent hands it this (core/agent.py), never itself."""

    @property
    def config(self) -> Config: ...

    @property
    def config_path(self) -> Path | None: ...

    @property
    def events(self) -> EventBus: ...

    @property
    def paused(self) -> bool: ...

    @property
    def connected(self) -> bool:
        """A coordinator session is up."""
        ...

    @property
    def jobs_running(self) -> int: ...

    def snapshot(self) -> AgentView: ...

    def backend_reports(self) -> list[tuple[BackendReport, Backend | None]]:
        """The last discovery pass's reports, each with its adapter (None: it has none)."""
        ...

    def advertised_backends(self) -> list[tuple[Backend, list[str]]]:
        """The adapters behind the advertised models, each with its model ids."""
        ...

    async def set_paused(self, paused: bool, reason: str) -> None:
        """The one place that pauses or resumes (capabilities, admission, state)."""
        ...

    def set_pause_reason(self, reason: str) -> None:
        """A new reason for a pause already in force."""
        ...

    async def drain(self, grace_s: float, message: str) -> None:
        """Running jobs get `grace_s`, then end with their terminal frame."""
        ...

    async def rediscover(self) -> object: ...


class ServingController:
    def __init__(
        self,
        agent: ServedAgent,
        *,
        sensors: Sensors | None = None,
        interval: float = DEFAULT_INTERVAL_S,
        backend_interval: float | None = None,
        pause_grace_s: float = PAUSE_GRACE_S,
        clock: Callable[[], datetime] | None = None,
        tz: tzinfo | None = None,
        state_path: Path | None = None,
    ) -> None:
        self._agent = agent
        self._sensors = sensors
        self.interval = interval
        self.backend_interval = backend_interval or DEFAULT_BACKEND_INTERVAL_S
        self.pause_grace_s = pause_grace_s
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tz = tz
        self._state_path = state_path
        self.manual: ManualPause | None = None
        self._manual_loaded = False
        self.decision: Decision = Serve()
        self.snapshot: Snapshot | None = None
        self.memory = Memory()
        self.memory_freed: list[str] = []  # what free_gpu_memory_on_pause did, for the status
        self._unloaded: list[Any] = []  # (backend, model ids) unloaded on pause
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._free_task: asyncio.Task[None] | None = None
        self.control: ControlServer | None = None
        self._health: dict[str, bool] = {}
        self._reloaded = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = (
            None  # backend label -> answered its last health check
        )

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def sensors(self) -> Sensors:
        if self._sensors is None:
            self._sensors = Sensors()
        return self._sensors

    @sensors.setter
    def sensors(self, value: Sensors) -> None:
        self._sensors = value

    @property
    def state_path(self) -> Path:
        if self._state_path is None:
            from usepod_desktop.core import paths

            name = STATE_FILE
            config_path = self._agent.config_path
            if config_path is not None:
                # one pause per agent.toml: the sandbox's pause is not the real agent's
                digest = hashlib.sha256(str(Path(config_path).resolve()).encode()).hexdigest()
                name = f"serving-pause-{digest[:12]}.json"
            self._state_path = paths.data_dir() / name
        return self._state_path

    async def start(self) -> None:
        from usepod_desktop.core.events import ConfigReloaded

        self._reloaded = asyncio.Event()
        self._unsubscribe = self._agent.events.subscribe(
            lambda e: self._reloaded.set() if isinstance(e, ConfigReloaded) else None
        )
        await self._load_manual()
        await self.evaluate()
        self._tasks.append(asyncio.create_task(self._rules_loop(), name="serving-rules"))
        self._tasks.append(asyncio.create_task(self._backend_loop(), name="backend-watch"))

    async def start_control(self, address: str | None = None) -> bool:
        """Serve `usepod-desktop pause/resume/status` on the local control channel (the
        headless `run` and the tray app call this; tests and embedded agents need not)."""
        from usepod_desktop.core.serving.control import ControlServer

        if self.control is None:
            self.control = ControlServer(self, address)
            if not await self.control.start():
                self.control = None
                return False
        return True

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.control is not None:
            await self.control.stop()
            self.control = None
        tasks, self._tasks = self._tasks, []
        if self._free_task is not None:
            tasks.append(self._free_task)
            self._free_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- manual pause ------------------------------------------------------------------

    async def pause(self, until: datetime | None = None) -> Decision:
        """Pause now, until `until` (aware) or until :meth:`resume`."""
        await self._load_manual()
        self.manual = ManualPause(until.astimezone(UTC) if until else None, self.clock())
        await asyncio.to_thread(self._save_manual)
        return await self.evaluate()

    async def resume(self) -> Decision:
        """End a manual pause (the rules still apply: a schedule may keep it paused)."""
        await self._load_manual()
        self.manual = None
        await asyncio.to_thread(self._save_manual)
        return await self.evaluate()

    async def _load_manual(self) -> None:
        if self._manual_loaded:
            return
        self._manual_loaded = True
        self.manual = await asyncio.to_thread(self._read_manual)

    def _read_manual(self) -> ManualPause | None:
        try:
            raw = self.state_path.read_bytes()[:4096]
            data = json.loads(raw)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("serving pause state unreadable (%s); not paused by hand", exc)
            return None
        if not isinstance(data, dict) or data.get("paused") is not True:
            return None
        until = data.get("until")
        if until is None:
            return ManualPause(None)
        try:
            when = datetime.fromisoformat(str(until))
        except ValueError:
            return ManualPause(None)  # a pause we cannot read stays a pause (never surprise)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return ManualPause(when.astimezone(UTC))

    def _save_manual(self) -> None:
        from usepod_desktop.core.fs import atomic_write_text

        path = self.state_path
        if self.manual is None:
            path.unlink(missing_ok=True)
            return
        until = self.manual.until.isoformat() if self.manual.until else None
        try:
            atomic_write_text(path, json.dumps({"paused": True, "until": until}) + "\n", mode=0o600)
        except OSError as exc:
            log.warning("cannot save the pause state to %s: %s", path, exc)

    # ---- the rules loop ----------------------------------------------------------------

    async def _rules_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                # a new agent.toml ([serving] edited in the settings) applies at once
                await asyncio.wait_for(self._reloaded.wait(), self.interval)
            self._reloaded.clear()
            try:
                await self.evaluate()
            except Exception:
                log.exception("serving rules evaluation failed")

    async def evaluate(self) -> Decision:
        """Read the sensors, decide, apply. Serialised (a manual pause and a tick never mix)."""
        async with self._lock:
            rules = self._agent.config.serving
            snapshot = await asyncio.to_thread(
                self.sensors.read,
                need_idle=rules.when == "idle",
                need_processes=bool(rules.pause_when_running),
            )
            self.snapshot = snapshot
            if self.manual is not None and self.manual.until is not None:
                if self.manual.until <= self.clock():
                    self.manual = None  # expired: forget it (and its file)
                    await asyncio.to_thread(self._save_manual)
            before = self.decision
            decision, self.memory = decide(
                rules, snapshot.readings, self.clock(), self.memory, manual=self.manual, tz=self.tz
            )
            self.decision = decision
            await self._apply(before, decision)
            return decision

    async def _apply(self, before: Decision, decision: Decision) -> None:
        agent = self._agent
        rules = agent.config.serving
        if isinstance(decision, Paused):
            text = decision.text
            if not agent.paused:
                log.info("pausing: %s", text)
                await agent.set_paused(True, text)
                if rules.free_gpu_memory_on_pause and self._free_task is None:
                    self._free_task = asyncio.create_task(self._free_memory(), name="free-vram")
            else:
                agent.set_pause_reason(text)
        elif agent.paused:
            if self._free_task is not None:
                self._free_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._free_task
                self._free_task = None
            await self._warm_up()
            log.info("resuming: serving again")
            await agent.set_paused(False, "")
        if before.serving != decision.serving or (
            isinstance(before, Paused)
            and isinstance(decision, Paused)
            and before.kinds != decision.kinds
            and not decision.held
        ):
            kinds = tuple(decision.kinds) if isinstance(decision, Paused) else ()
            agent.events.emit(
                ServingChanged(
                    decision.serving,
                    kinds,
                    decision.text if isinstance(decision, Paused) else "serving",
                    decision.resumes_at if isinstance(decision, Paused) else None,
                    manual="manual" in kinds
                    or (isinstance(before, Paused) and before.kinds == ["manual"]),
                )
            )

    # ---- free GPU memory ---------------------------------------------------------------

    async def _free_memory(self) -> None:
        from usepod_desktop.core.serving import gpu_memory

        agent = self._agent
        if agent.jobs_running:
            # running jobs get the grace period, then end with their terminal frame
            await agent.drain(self.pause_grace_s, "provider paused to free GPU memory")
        self.memory_freed = []
        for backend, models in agent.advertised_backends():
            result = await gpu_memory.unload(backend, models)
            self.memory_freed.append(result.text)
            if result.done:
                self._unloaded.append((backend, models))
            log.info("free GPU memory: %s", result.text)

    async def _warm_up(self) -> None:
        from usepod_desktop.core.serving import gpu_memory

        unloaded, self._unloaded = self._unloaded, []
        for backend, models in unloaded:
            result = await gpu_memory.warm_up(backend, models)
            log.info("warm-up before serving again: %s", result.text)
        self.memory_freed = []
        if unloaded:
            # a server that lists only loaded models (LM Studio without JIT) lists them again
            # now: advertise what is there after the warm-up, not what was there before it
            try:
                await self._agent.rediscover()
            except Exception:
                log.exception("re-discovery after the warm-up failed")

    # ---- backend watch -----------------------------------------------------------------

    async def _backend_loop(self) -> None:
        while True:
            await asyncio.sleep(self.backend_interval)
            try:
                await self.check_backends()
            except Exception:
                log.exception("backend health check failed")

    async def check_backends(self) -> bool:
        """Health-check the local backends; re-discover when one changed (down: its models are
        withdrawn; back: re-advertised). True when a re-discovery ran."""
        agent = self._agent
        if not agent.connected:
            return False
        checks: list[tuple[str, bool, Any]] = []
        for report, backend in agent.backend_reports():
            cfg = report.config
            if cfg.kind not in LOCAL_KINDS:
                continue
            if backend is None or getattr(backend, "inflight", 0):
                continue  # a backend streaming jobs answers; a failure ends them, then we look
            # compared with the last health check, not the report: a backend that answers its
            # health check but fails its model list must not cause a re-discovery every tick
            previous = self._health.get(cfg.label, report.status == "ok")
            checks.append((cfg.label, previous, backend))
        if not checks:
            return False
        results = await asyncio.gather(*(self._healthy(b) for _, _, b in checks))
        changed = []
        for (label, previous, _), up in zip(checks, results, strict=True):
            self._health[label] = up
            if up != previous:
                changed.append(f"{label} {'up' if up else 'down'}")
        if not changed:
            return False
        log.info("backend state changed (%s): re-discovering", ", ".join(changed))
        await agent.rediscover()
        return True

    @staticmethod
    async def _healthy(backend: Any) -> bool:
        try:
            health = await asyncio.wait_for(backend.health(), BACKEND_CHECK_TIMEOUT_S)
        except (TimeoutError, Exception):
            return False
        return bool(health.ok)

    # ---- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What `usepod-desktop status --json` prints."""
        view = self._agent.snapshot()
        decision = self.decision
        paused = isinstance(decision, Paused)
        snap = self.snapshot
        models = [] if view.paused else [m.model_id for m in view.models]
        resumes_at = decision.resumes_at if isinstance(decision, Paused) else None
        out: dict[str, Any] = {
            "state": view.state.value,
            "reason": view.reason,
            "serving": not paused,
            "paused_by": decision.kinds if isinstance(decision, Paused) else [],
            "paused_because": decision.text if isinstance(decision, Paused) else None,
            "resumes_at": resumes_at.isoformat() if resumes_at else None,
            "models": models,
            "jobs_running": view.jobs_running,
            "last_heartbeat_s_ago": _rounded_age(view.heartbeat_age_s),
            "idle_seconds": snap.readings.idle_s if snap else None,
            "idle_source": snap.idle_source if snap else None,
            "on_battery": snap.readings.on_battery if snap else None,
            "gpus": [
                {
                    "name": g.name,
                    "temperature_c": g.temp_c,
                    "utilization_pct": g.util_pct,
                    "vram_used_mb": g.vram_used_mb,
                    "vram_total_mb": g.vram_total_mb,
                    "power_w": g.power_w,
                }
                for g in (snap.gpus if snap else ())
            ],
            "gpu_sensor": snap.gpu_problem if snap and snap.gpu_problem else None,
            "notes": list(decision.notes),
            "gpu_memory": list(self.memory_freed),
        }
        return out

    def status_line(self) -> str:
        """ "Paused: you are using the computer; resumes after 10 idle minutes" / "Serving"."""
        decision = self.decision
        if isinstance(decision, Paused):
            return f"Paused: {decision.text}"
        return "Serving"


def _rounded_age(age: float | None) -> float | None:
    """Seconds since the coordinator session's last heartbeat, to 0.1 s (None: none yet)."""
    return None if age is None else round(age, 1)
