"""Helpers for the backend adapter tests: fake servers on 127.0.0.1 (port 0), adapters built
the way the agent builds them, and a sink that records what was relayed."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from usepod_desktop.core.backends import Backend, build_backend
from usepod_desktop.core.config import REMOTE_KINDS, BackendConfig
from usepod_desktop.core.secrets import SecretStore
from usepod_desktop.sandbox import fakes as fakes_module
from usepod_desktop.sandbox.fakes import FakeBackend, FakeModel

ALL_KINDS = ("vllm", "llamacpp", "lmstudio", "ollama", "openrouter", "venice")
LOCAL_KINDS = ("vllm", "llamacpp", "lmstudio", "ollama")
ANTHROPIC_KINDS = ("vllm", "llamacpp", "lmstudio", "ollama", "openrouter")
KEY = "sk-or-v1-test-key-0123456789"
BASE_URL_ENV = {"openrouter": "USEPOD_OPENROUTER_BASE_URL", "venice": "USEPOD_VENICE_BASE_URL"}
KEY_ENV = {"openrouter": "OPENROUTER_API_KEY", "venice": "VENICE_API_KEY"}

MakeFake = Callable[..., Awaitable[FakeBackend]]
MakeBackend = Callable[..., Backend]


class Sink:
    """Records every relayed chunk; `first` is set once a chunk arrived."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.first = asyncio.Event()

    async def __call__(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.first.set()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def chat_request(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there big world"},
        ],
    }
    body.update(extra)
    return body


@pytest.fixture
async def make_fake(make_fake: MakeFake) -> MakeFake:
    """The root fixture, with the test key required by default on remote kinds."""

    async def _make(kind: str, models: Sequence[str | FakeModel] = ("m1",), **kw: Any) -> Any:
        if kind in REMOTE_KINDS:
            kw.setdefault("api_key", KEY)
        return await make_fake(kind, models, **kw)

    return _make


@pytest.fixture
async def make_backend(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MakeBackend]:
    """Build the adapter for a fake like the agent does (remote kinds: base URL from the
    test-only environment override, key from the environment)."""
    built: list[Backend] = []

    def _make(fake: FakeBackend, *, key: str = KEY, **cfg: Any) -> Backend:
        if fake.kind in REMOTE_KINDS:
            monkeypatch.setenv(BASE_URL_ENV[fake.kind], fake.url)
            config = BackendConfig(fake.kind, api_key_env=KEY_ENV[fake.kind], **cfg)
            backend = build_backend(config, SecretStore(environ={KEY_ENV[fake.kind]: key}))
        else:
            config = BackendConfig(fake.kind, url=fake.url, **cfg)
            backend = build_backend(config, SecretStore(environ={}))
        built.append(backend)
        return backend

    yield _make
    for backend in built:
        await backend.aclose()


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeBackend], None]:
    """Make a fake's answers byte-identical from one request to the next (ids, timestamps
    and llama.cpp timings are otherwise fresh per request)."""
    monkeypatch.setattr(fakes_module, "time", types.SimpleNamespace(time=lambda: 1_750_000_000.0))
    monkeypatch.setattr(fakes_module, "_timings", lambda *a: {"prompt_n": 1, "predicted_n": 1})

    def _apply(fake: FakeBackend) -> None:
        fake._ident = lambda anthropic: "msg_fixed" if anthropic else "chatcmpl-fixed"  # type: ignore[method-assign]

    return _apply
