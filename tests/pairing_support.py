"""Shared by the pairing tests (core, `setup` command, GUI wizard): free ports, a coordinator
that answers with whatever a test wants, and the agent.toml a pairing should produce."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from usepod_desktop.core.config import (
    BackendConfig,
    Config,
    CoordinatorConfig,
    LimitsConfig,
    ModelPrice,
    OperatorConfig,
    PricingConfig,
)

LOCAL_KINDS = ("vllm", "llamacpp", "lmstudio", "ollama")


def free_port() -> int:
    """A port nothing listens on (bound and released; fine for a test's lifetime)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe_ports(**found: int | None) -> dict[str, int]:
    """Ports for all four local kinds: the given ones, a closed port for the rest (so a
    server running on this machine's default ports never leaks into a test)."""
    return {kind: found.get(kind) or free_port() for kind in LOCAL_KINDS}


def expected_config(
    coordinator_port: int,
    identity_path: Path,
    backends: Sequence[tuple[str, int]],
    prices: Mapping[str, tuple[int, int]],
    max_concurrent: int,
) -> Config:
    """What agent.toml must parse to after pairing with the sandbox on `coordinator_port`."""
    return Config(
        coordinator=CoordinatorConfig(f"ws://127.0.0.1:{coordinator_port}/provider/connect"),
        pricing=PricingConfig(
            500_000, 1_000_000, {m: ModelPrice(i, o) for m, (i, o) in prices.items()}
        ),
        backends=tuple(BackendConfig(kind, f"http://localhost:{port}") for kind, port in backends),
        operator=OperatorConfig(display_name="", wallet=""),
        identity_key_path=str(identity_path),
        limits=LimitsConfig(max_concurrent=max_concurrent),
    )


@dataclass
class Scripted:
    """One canned HTTP answer."""

    status: int = 200
    body: Any = None  # bytes/str sent as is; anything else as JSON
    content_type: str = "application/json"

    def response(self) -> web.Response:
        if isinstance(self.body, bytes | str):
            raw = self.body.encode() if isinstance(self.body, str) else self.body
        else:
            raw = json.dumps(self.body).encode()
        return web.Response(status=self.status, body=raw, content_type=self.content_type)


GOOD_ISSUE = Scripted(
    body={"pair_code": "TEST-CODE", "poll_token": "poll-token-123456", "expires_at": "x"}
)


@dataclass
class BadCoordinator:
    """A tiny aiohttp coordinator whose pairing answers a test scripts: `issue` answers every
    issue request, `polls` one poll each (the last one repeats)."""

    issue: Scripted = field(default_factory=lambda: GOOD_ISSUE)
    polls: list[Scripted] = field(default_factory=lambda: [Scripted(body={"status": "pending"})])
    seen: list[tuple[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _issue(self, request: web.Request) -> web.Response:
        self.seen.append(("issue", await request.json()))
        return self.issue.response()

    async def _poll(self, request: web.Request) -> web.Response:
        self.seen.append(("poll", await request.json()))
        answer = self.polls[0] if len(self.polls) == 1 else self.polls.pop(0)
        return answer.response()

    async def start(self) -> BadCoordinator:
        app = web.Application()
        app.router.add_post("/v1/host/pair/issue", self._issue)
        app.router.add_post("/v1/host/pair/poll", self._poll)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
