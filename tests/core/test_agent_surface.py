"""The agent facade is narrow: no public discovery / stats / executor / pool / link, the
serving controller works through the small `ServedAgent` interface, product code reads no
working part of the agent, and the GUI writes no agent attribute."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

from usepod_desktop.core.agent import Agent, internals_for_tests
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    PricingConfig,
    ServingConfig,
)
from usepod_desktop.core.discovery import BackendPool, DiscoveryResult
from usepod_desktop.core.events import EventBus, JobFinished
from usepod_desktop.core.executor import Executor
from usepod_desktop.core.link import Link, LinkState
from usepod_desktop.core.protocol import JobDone
from usepod_desktop.core.serving.controller import ServedAgent, ServingChanged, ServingController
from usepod_desktop.core.serving.policy import Paused
from usepod_desktop.core.serving.sensors import Sensors
from usepod_desktop.core.stats import JobStats
from usepod_desktop.core.view import AgentView
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend

PACKAGE = Path(__file__).resolve().parents[2] / "usepod_desktop"
WORKING_PARTS = ("discovery", "stats", "executor", "pool", "link")
INTERNAL_TYPES = (Link, Executor, BackendPool, JobStats, DiscoveryResult)
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
T = 15.0


def _public_values(obj: object) -> dict[str, Any]:
    out = {}
    for name in dir(obj):
        if name.startswith("_"):
            continue
        value = getattr(obj, name)
        if not callable(value) or isinstance(value, INTERNAL_TYPES):
            out[name] = value
    return out


async def test_a_running_agent_exposes_none_of_its_working_parts(tmp_path: Path) -> None:
    async with (
        SandboxCoordinator(ws_heartbeat=None) as coord,
        FakeBackend("vllm", ["model-a"], output_tokens=5) as fake,
    ):
        config = Config(
            coordinator=CoordinatorConfig(url=coord.url),
            pricing=PricingConfig(500_000, 750_000),
            backends=(BackendConfig(kind="vllm", url=fake.url),),
            identity_key_path=str(tmp_path / "identity.key"),
        )
        agent = Agent(config, allow_insecure=True)
        finished: asyncio.Queue[object] = asyncio.Queue()
        agent.events.subscribe(JobFinished, finished.put_nowait)
        await agent.start()
        try:
            await coord.wait_for_capabilities(T)
            handle = await coord.dispatch("model-a", CHAT)
            assert isinstance(await handle.wait(T), JobDone)
            await asyncio.wait_for(finished.get(), T)
            # every working part exists (the seam sees them) ...
            parts = internals_for_tests(agent)
            assert parts.link is not None and parts.discovery is not None
            # ... but none is an attribute of the facade, under its name or another one
            for name in WORKING_PARTS:
                assert not hasattr(agent, name), name
            for name, value in _public_values(agent).items():
                assert not isinstance(value, INTERNAL_TYPES), name
            # the serving controller holds neither the agent nor its parts
            for name, value in _public_values(agent.serving).items():
                assert not isinstance(value, (Agent, *INTERNAL_TYPES)), name
            # what readers used the parts for is in the snapshot
            view = agent.snapshot()
            assert view.link is not None and view.link.connected and view.link.sandbox
            assert view.link.state == LinkState.CONNECTED and view.link.sessions == 1
            assert view.link.session_provider_id == agent.sandbox_provider_id
            assert view.totals.jobs == 1 and view.totals.errors == view.totals.refused == 0
            assert [r.status for r in view.reports] == ["ok"]
        finally:
            await agent.stop(grace=0.1)
    assert agent.snapshot().link is None  # stopped: no session


def _product_modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))]


def agent_internal_reads(tree: ast.AST) -> list[str]:
    """`x.link`, `x._executor`, ... where x names an agent, and the test seam, in one module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.lstrip("_") in WORKING_PARTS:
            # `agent.snapshot().link` is the view's, not the agent's
            if not isinstance(node.value, ast.Call) and "agent" in ast.unparse(node.value).lower():
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Name) and node.id == "internals_for_tests":
            found.append(node.id)
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "getattr":
            if len(node.args) < 2 or "agent" not in ast.unparse(node.args[0]).lower():
                continue
            name = node.args[1]
            if isinstance(name, ast.Constant) and str(name.value).lstrip("_") in WORKING_PARTS:
                found.append(ast.unparse(node))
    return sorted(found)


def test_the_scanner_sees_reads_of_agent_internals() -> None:
    source = (
        "a = self.agent.discovery\nb = agent._link.connected\n"
        "c = getattr(agent, 'link', None)\nd = internals_for_tests(x)\ne = self.discovery\n"
        "f = agent.snapshot().link\ng = getattr(client, '_pool', None)\n"
    )
    assert agent_internal_reads(ast.parse(source)) == [
        "agent._link",
        "getattr(agent, 'link', None)",
        "internals_for_tests",
        "self.agent.discovery",
    ]


def test_no_product_module_reads_the_agent_s_working_parts() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path, tree in _product_modules()
        if path.name != "agent.py" and (found := agent_internal_reads(tree))
    }
    assert offenders == {}


def agent_writes(tree: ast.AST) -> list[str]:
    """Assignments to an attribute of something named agent (`controller.agent.x = ...`)."""
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("setattr", "delattr"):
            targets = [ast.Attribute(node.args[0], "?", ast.Store())] if node.args else []
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute) and "agent" in ast.unparse(sub.value).lower():
                    found.append(ast.unparse(target))
                    break
    return sorted(found)


def test_the_scanner_sees_writes_to_agent_attributes() -> None:
    source = (
        "controller.agent.allow_insecure = True\nself.agent.config.x += 1\n"
        "setattr(self._agent, 'paused', True)\nself.agent = agent\n"
    )
    assert agent_writes(ast.parse(source)) == [
        "controller.agent.allow_insecure",
        "self._agent.?",
        "self.agent.config.x",
    ]


def test_the_gui_never_writes_agent_attributes() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): found
        for path, tree in _product_modules()
        if "gui" in path.relative_to(PACKAGE).parts and (found := agent_writes(tree))
    }
    assert offenders == {}


class StillSensors(Sensors):
    """Nobody at the keyboard, no process, mains power, no GPU."""

    def __init__(self) -> None:
        super().__init__(idle=_NoIdle(), processes=frozenset, battery=lambda: False, gpu=_NoGpu())


class _NoIdle:
    name = "none"

    def idle_seconds(self) -> float | None:
        return None


class _NoGpu:
    problem = None

    def read(self) -> list[Any]:
        return []


class FakeServed:
    """A ServedAgent written in the test: the controller needs nothing more of an agent."""

    def __init__(self, config: Config, real: Agent, jobs_running: int) -> None:
        self.config = config
        self.config_path: Path | None = None
        self.events = EventBus()
        self.paused = False
        self.connected = True
        self.jobs_running = jobs_running
        self.calls: list[tuple[Any, ...]] = []
        self.drained = asyncio.Event()
        self._real = real  # only for a snapshot of the right shape

    def snapshot(self) -> AgentView:
        return self._real.snapshot()

    def backend_reports(self) -> list[tuple[Any, Any]]:
        return []

    def advertised_backends(self) -> list[tuple[Any, list[str]]]:
        return []

    async def set_paused(self, paused: bool, reason: str) -> None:
        self.calls.append(("set_paused", paused, reason))
        self.paused = paused

    def set_pause_reason(self, reason: str) -> None:
        self.calls.append(("set_pause_reason", reason))

    async def drain(self, grace_s: float, message: str) -> None:
        self.calls.append(("drain", grace_s, message))
        self.drained.set()

    async def rediscover(self) -> object:
        self.calls.append(("rediscover",))
        return None


async def test_the_serving_controller_runs_on_the_narrow_interface(tmp_path: Path) -> None:
    config = Config(
        coordinator=CoordinatorConfig(url="ws://127.0.0.1:9/x"),
        pricing=PricingConfig(500_000, 750_000),
        serving=ServingConfig(free_gpu_memory_on_pause=True),
    )
    served = FakeServed(config, Agent(config, allow_insecure=True), jobs_running=2)
    port: ServedAgent = served  # the test's class satisfies the protocol
    changes: list[object] = []
    served.events.subscribe(ServingChanged, changes.append)
    controller = ServingController(
        port, sensors=StillSensors(), pause_grace_s=7.0, state_path=tmp_path / "pause.json"
    )
    try:
        decision = await controller.pause()
        assert isinstance(decision, Paused) and served.paused
        assert served.calls[0][:2] == ("set_paused", True)
        # free_gpu_memory_on_pause: the two running jobs get the grace period, then end
        await asyncio.wait_for(served.drained.wait(), T)
        assert ("drain", 7.0, "provider paused to free GPU memory") in served.calls
        assert controller.status()["serving"] is False
        await controller.resume()
        assert not served.paused and served.calls[-1] == ("set_paused", False, "")
        assert [getattr(c, "serving", None) for c in changes] == [False, True]
    finally:
        await controller.stop()
