"""Try it without an account: an embedded sandbox coordinator, backends, and demo jobs.

`SandboxSession.start()` builds the config the agent runs with in sandbox mode:

- the coordinator is a :class:`SandboxCoordinator` on 127.0.0.1 (a fresh port);
- the backends are the local ones of the user's agent.toml when any is reachable, else the
  ones the local probe finds, else a demo backend from the fake servers, labelled "demo";
- BYOK backends (openrouter, venice: the user's key pays upstream) are left out, so demo jobs
  never spend the user's money, unless the user opts one in with `--demo-remote NAME` (NAME
  is its kind or its `api_key_env`; repeatable). Each one left out is logged with that hint;
- the identity and the sandbox agent.toml live in `<data dir>/sandbox/`, so the sandbox never
  writes a provider id into the real identity file nor a ws:// URL into the real agent.toml.

Demo jobs are dispatched every few seconds so a new user sees jobs flow and earnings accrue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from usepod_desktop.core import paths
from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    PricingConfig,
    save_config,
)
from usepod_desktop.sandbox.coordinator import SandboxCoordinator
from usepod_desktop.sandbox.fakes import FakeBackend, FakeModel

log = logging.getLogger(__name__)

DEMO_MODEL = "demo/tiny-chat"
DEMO_PROMPTS = (
    "Write a haiku about GPUs.",
    "Explain WebSockets in one sentence.",
    "Name three prime numbers.",
    "What is a tray icon?",
    "Say hello in French.",
)
DEFAULT_PRICING = PricingConfig(500_000, 1_000_000)


def sandbox_dir() -> Path:
    return paths.data_dir() / "sandbox"


class SandboxSession:
    """The pieces of sandbox mode; `start()` returns the config the agent should run with."""

    def __init__(
        self, *, demo_tokens_per_second: float = 40.0, demo_remote: Iterable[str] = ()
    ) -> None:
        self.coordinator = SandboxCoordinator()
        #: BYOK backends the user opted in for demo jobs (kind or api_key_env).
        self.demo_remote = frozenset(demo_remote)
        #: Labels of the user's BYOK backends left out of the sandbox.
        self.left_out: list[str] = []
        self.demo_backend: FakeBackend | None = None
        self.demo_labels: set[str] = set()
        self.config_path = sandbox_dir() / "agent.toml"
        self._tps = demo_tokens_per_second
        self._demo_task: asyncio.Task[None] | None = None
        self.demo_jobs_sent = 0
        self._cleanup: set[asyncio.Task[None]] = set()

    async def start(self, base: Config | None) -> Config:
        url = await self.coordinator.start()
        backends = await self._pick_backends(base)
        pricing = base.pricing if base is not None else DEFAULT_PRICING
        config = Config(
            coordinator=CoordinatorConfig(url=url),
            pricing=pricing,
            backends=backends,
            identity_key_path=str(sandbox_dir() / "identity.key"),
            limits=base.limits if base is not None else LimitsConfig(),
        )
        await asyncio.to_thread(save_config, config, self.config_path)
        log.info(
            "sandbox coordinator at %s; %d backend(s)%s",
            url,
            len(backends),
            " (demo)" if self.demo_labels else "",
        )
        return config

    async def _pick_backends(self, base: Config | None) -> tuple[BackendConfig, ...]:
        from usepod_desktop.core.discovery import BackendPool, discover, probe_local
        from usepod_desktop.core.secrets import SecretStore

        if base is not None and base.backends:
            allowed = tuple(b for b in base.backends if self.demo_allowed(b))
            for backend in base.backends:
                if backend not in allowed:
                    self.left_out.append(backend.label)
                    log.info(
                        "sandbox: BYOK backend %s gets no demo jobs (your key would pay); "
                        "opt in with --demo-remote %s",
                        backend.label,
                        backend.kind,
                    )
            base = replace(base, backends=allowed)
        if base is not None and base.backends:
            probe_cfg = replace(base, coordinator=CoordinatorConfig("ws://127.0.0.1:1/x"))
            pool = BackendPool(SecretStore())
            try:  # discover() builds the adapters (keyring reads) off the event loop
                result = await discover(probe_cfg, pool)
            finally:
                await pool.aclose()
            if result.models:
                return base.backends
        found = await probe_local()
        if found:
            return tuple(BackendConfig(kind=p.kind, url=p.url) for p in found)
        self.demo_backend = FakeBackend(
            "vllm",
            [FakeModel(DEMO_MODEL, context_length=8192)],
            tokens_per_second=self._tps,
            ttft_s=0.15,
            output_tokens=24,
        )
        demo_url = await self.demo_backend.start()
        demo = BackendConfig(kind="vllm", url=demo_url)
        self.demo_labels.add(demo.label)
        return (demo,)

    def demo_allowed(self, backend: BackendConfig) -> bool:
        """Local backends always; a BYOK one only when opted in by kind or api_key_env."""
        if not backend.is_remote:
            return True
        return backend.kind in self.demo_remote or backend.api_key_env in self.demo_remote

    def start_demo_jobs(self, interval_s: float = 5.0) -> None:
        if self._demo_task is None:
            self._demo_task = asyncio.create_task(self._demo_loop(interval_s), name="demo-jobs")

    async def _demo_loop(self, interval_s: float) -> None:
        rng = random.Random()
        while True:
            await asyncio.sleep(interval_s)
            try:
                caps = await self.coordinator.wait_for_capabilities(timeout=None)
            except Exception:
                continue
            models = [m["model_id"] for m in caps.models]
            if not models:
                continue  # paused, or nothing to serve
            prompt = rng.choice(DEMO_PROMPTS)
            try:
                handle = await self.coordinator.dispatch(
                    rng.choice(models),
                    {"messages": [{"role": "user", "content": prompt}], "max_tokens": 48},
                )
            except Exception as exc:  # no provider right now (reconnecting)
                log.debug("demo job not sent: %s", exc)
                continue
            self.demo_jobs_sent += 1
            forget = asyncio.create_task(self._forget_later(handle.job_id))
            self._cleanup.add(forget)
            forget.add_done_callback(self._cleanup.discard)

    async def _forget_later(self, job_id: str) -> None:
        handle = self.coordinator.jobs.get(job_id)
        if handle is None:
            return
        with contextlib.suppress(Exception):
            await handle.wait(300)
        self.coordinator.forget(job_id)

    async def stop(self) -> None:
        if self._demo_task is not None:
            self._demo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._demo_task
            self._demo_task = None
        await self.coordinator.stop()
        if self.demo_backend is not None:
            await self.demo_backend.stop()


def run_headless_sandbox(args: argparse.Namespace) -> int:
    """`usepod-desktop run --sandbox`."""
    return asyncio.run(_headless(args))


async def _headless(args: argparse.Namespace) -> int:
    from usepod_desktop.core.backends.sse import extract_text
    from usepod_desktop.core.events import JobFinished, StateChanged
    from usepod_desktop.core.host import AgentHost, HostOptions

    options = HostOptions(
        config=getattr(args, "config", None),
        allow_insecure=True,
        sandbox=True,
        demo_remote=tuple(getattr(args, "demo_remote", None) or ()),
    )
    host = await AgentHost.open(options, sandbox=SandboxSession)
    agent, session = host.agent, host.sandbox_session
    assert agent is not None and session is not None
    for label in session.left_out:
        print(
            f"[sandbox] {label}: no demo jobs on a paid BYOK backend "
            "(opt in with --demo-remote KIND)",
            flush=True,
        )

    def show_state(event: StateChanged) -> None:
        print(f"[sandbox] {event.state.label}: {event.reason}", flush=True)

    def show_job(event: JobFinished) -> None:
        o = event.outcome
        handle = session.coordinator.jobs.get(o.job_id)
        answer = extract_text(handle.data, o.format).strip() if handle else ""
        status = "ok" if o.ok else f"{o.error_code}: {o.message}"
        print(
            f"[sandbox] job {o.model_id} -> {status}; {o.input_tokens}+{o.output_tokens} "
            f"tokens in {o.duration_ms} ms: {answer[:80]!r}",
            flush=True,
        )

    agent.events.subscribe(StateChanged, show_state)
    agent.events.subscribe(JobFinished, show_job)
    stop = asyncio.Event()
    from usepod_desktop.core.stopping import install_stop_handlers

    # also Windows: Ctrl-C / Ctrl-Break / closing the console stop gracefully
    stop_handlers = install_stop_handlers(asyncio.get_running_loop(), stop)
    await host.start()
    await agent.serving.start_control()  # `usepod-desktop pause/resume/status`
    interval = float(getattr(args, "demo_interval", 5.0) or 5.0)
    session.start_demo_jobs(interval_s=interval)
    print(
        f"[sandbox] coordinator {session.coordinator.url}; demo jobs every {interval:g} s; "
        "Ctrl-C to stop",
        flush=True,
    )
    await stop.wait()
    await host.stop(grace=stop_handlers.grace(getattr(args, "grace", 5.0)))
    await host.close()
    stop_handlers.stopped()
    return 0
