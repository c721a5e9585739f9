"""GUI test fixtures: a qasync loop driven step by step, and a real agent facade connected to
the sandbox coordinator with fake backends (the "rig").

Tests are plain functions: they drive coroutines with `run(loop, coro)` and wait for
conditions with `until(loop, predicate)`, both of which run the Qt event loop (qasync's
`run_until_complete` is `QApplication.exec()` underneath), so widgets, signals and the agent's
tasks all make progress together, as in the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import qasync
from PySide6.QtCore import QEvent, QUrl
from PySide6.QtWidgets import QApplication

from usepod_desktop.core import paths
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.core.ledger import Ledger
from usepod_desktop.gui.loop import SlicedQEventLoop
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

T = TypeVar("T")


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    """Run `coro` on the qasync loop (Qt events are processed meanwhile)."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def until(
    loop: asyncio.AbstractEventLoop,
    predicate: Callable[[], object],
    timeout: float = 10.0,
    what: str = "condition",
) -> None:
    """Run the loop until `predicate()` is true (polls every 10 ms)."""

    async def wait() -> None:
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            await asyncio.sleep(0.01)

    loop.run_until_complete(wait())


def spin(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


class SteppedQEventLoop(SlicedQEventLoop):
    """The app's loop (gui/loop.py). qasync's `run_until_complete` ends with one
    `processEvents()` after the loop stopped running; an asyncio callback that fires there (a
    socket became readable) would run with no running loop ("no running event loop" inside the
    agent's tasks). The app runs the loop once for its whole life, so only tests, which run it
    in steps, meet this: keep the loop marked running through that last pass."""

    def _after_run_forever(self) -> None:
        super()._after_run_forever()
        asyncio.events._set_running_loop(self)

    def run_until_complete(self, future: Any) -> Any:
        try:
            return super().run_until_complete(future)
        finally:
            asyncio.events._set_running_loop(None)


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[qasync.QEventLoop]:
    qapp.setQuitOnLastWindowClosed(False)  # as the app does: closing a window never quits
    loop = SteppedQEventLoop(qapp)
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait(pending, timeout=2))
        for widget in QApplication.topLevelWidgets():
            widget.close()
            # a tray's context menu must outlive its QSystemTrayIcon (deleting it first
            # crashes Qt later); menus go with their owners
            if type(widget).__name__ != "QMenu":
                widget.deleteLater()
        qapp.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        qapp.processEvents()
        loop.close()
        asyncio.set_event_loop(None)
        # free this test's Qt objects here, not at a random allocation inside the next
        # test's event loop
        gc.collect()


@dataclass
class Rig:
    """A controller whose real agent serves `fake` through the sandbox coordinator."""

    loop: qasync.QEventLoop
    coordinator: SandboxCoordinator
    fake: FakeBackend
    controller: Any
    config_path: Path
    opened_urls: list[QUrl] = field(default_factory=list)
    extra: list[FakeBackend] = field(default_factory=list)

    @property
    def agent(self) -> Any:
        return self.controller.agent

    def caps_count(self) -> int:
        session = next(iter(self.coordinator.providers.values()), None)
        return 0 if session is None else len(session.capabilities)

    def next_caps(self, after: int, timeout: float = 10.0) -> Any:
        return run(
            self.loop, self.coordinator.wait_for_capabilities(timeout, after=after), timeout + 1
        )

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return run(self.loop, coro, timeout)

    def until(
        self, predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
    ) -> None:
        until(self.loop, predicate, timeout, what)

    def add_fake(self, fake: FakeBackend) -> FakeBackend:
        self.run(fake.start())
        self.extra.append(fake)
        return fake


def write_config(url: str, backends: tuple[BackendConfig, ...], **limits: Any) -> Path:
    path = paths.default_config_path()
    config = Config(
        coordinator=CoordinatorConfig(url),
        pricing=PricingConfig(500_000, 750_000),
        backends=backends,
        limits=LimitsConfig(**limits) if limits else LimitsConfig(),
    )
    save_config(config, path, allow_insecure=True)
    return path


@pytest.fixture
def rig_factory(qloop: qasync.QEventLoop) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []
    ledgers: list[Ledger] = []

    def make(
        *,
        models: tuple[str, ...] = ("alpha", "beta"),
        tokens_per_second: float | None = None,
        output_tokens: int = 8,
        max_concurrent: int = 8,
        offline_grace_ms: int | None = None,
        tray: bool = True,
    ) -> Rig:
        from usepod_desktop.gui.controller import AppController, StartOptions

        coordinator = SandboxCoordinator()
        coordinator.announce_sandbox = False  # playing the real coordinator: real earnings
        fake = FakeBackend(
            "vllm", list(models), tokens_per_second=tokens_per_second, output_tokens=output_tokens
        )
        run(qloop, coordinator.start())
        run(qloop, fake.start())
        path = write_config(
            coordinator.url, (BackendConfig("vllm", fake.url),), max_concurrent=max_concurrent
        )
        opened: list[QUrl] = []

        def record(url: QUrl) -> bool:
            opened.append(url)
            return True

        controller = AppController(open_url=record, offline_grace_ms=offline_grace_ms)
        # the ledger's "today" is the day the rig was made, even if the test ends after
        # midnight (the ledger counts from that day's start, with no end)
        made = datetime.now(UTC)
        ledger = Ledger(clock=lambda: made)
        ledgers.append(ledger)
        controller.ledger = ledger
        controller.options.grace_s = 2.0
        controller.show_ui(tray_available=tray)
        rig = Rig(qloop, coordinator, fake, controller, path, opened)
        rigs.append(rig)
        run(qloop, controller.start(StartOptions(allow_insecure=True, grace_s=2.0)))
        run(qloop, coordinator.wait_for_capabilities(10), 11)
        until(qloop, lambda: controller.state.value == "serving", what="serving")
        return rig

    yield make

    for rig in rigs:
        with contextlib.suppress(Exception):
            if not rig.controller._quit.is_set():
                run(qloop, rig.controller.shutdown(), 20)
        for fake in [rig.fake, *rig.extra]:
            with contextlib.suppress(Exception):
                run(qloop, fake.stop())
        with contextlib.suppress(Exception):
            run(qloop, rig.coordinator.stop())
    rigs.clear()
    for ledger in ledgers:
        ledger.close()


@pytest.fixture
def rig(rig_factory: Callable[..., Rig]) -> Rig:
    return rig_factory()
