"""The backend interface the executor and discovery use (docs/files.md, "Backends").

A :class:`Backend` talks to one configured inference server: a local one (vLLM, llama.cpp,
LM Studio, Ollama) or a hosted one reached with the operator's own key (OpenRouter, Venice).
Every kind speaks the OpenAI-compatible API, so the work is done once: the HTTP client in
:mod:`usepod_desktop.core.backends.http`, the wire rules in
:mod:`usepod_desktop.core.backends.openai_compat`; the per-kind modules hold only quirks.

Errors: :meth:`Backend.health` never raises (it returns a :class:`Health`); everything else
raises :class:`BackendError`, whose `code` is the `job_error.error_code` to send.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from usepod_desktop.core.errors import MissingKeyError, UsePodError
from usepod_desktop.core.net import MAX_MESSAGE_CHARS, one_line  # noqa: F401  (re-exported)
from usepod_desktop.core.protocol import ErrorCode

if TYPE_CHECKING:
    from usepod_desktop.core.config import BackendConfig

__all__ = [
    "Backend",
    "BackendError",
    "ChunkSink",
    "Health",
    "HealthState",
    "JobRequest",
    "MissingKeyError",
    "ModelInfo",
    "UpstreamPrice",
    "Usage",
    "one_line",
]

HealthState = Literal["ok", "unreachable", "timeout", "loading", "error"]


@dataclass(frozen=True, slots=True)
class Health:
    """Result of a health check.

    `status` is one line for humans ("ok", "loading model (503)", "connection refused",
    "HTTP 500: ...", "LM Studio error: ..."). `state` classifies it for code (discovery's
    report status) so nobody has to parse `status`.
    """

    ok: bool
    latency_ms: float | None
    status: str
    state: HealthState = "ok"


@dataclass(frozen=True, slots=True)
class UpstreamPrice:
    """What the operator pays upstream: micro-USD per 1M tokens, exact (may be fractional)."""

    input_per_1m: Decimal
    output_per_1m: Decimal


@dataclass(frozen=True, slots=True)
class ModelInfo:
    model_id: str
    context_window: int | None = None
    upstream_price: UpstreamPrice | None = None


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One job to run: `request` is the coordinator's JSON body, `format` "openai" or
    "anthropic" (an Anthropic Messages request)."""

    job_id: str
    model_id: str
    request: dict[str, Any]
    format: str = "openai"


@dataclass(slots=True)
class Usage:
    """Token counts read from the stream (estimates: the coordinator counts for billing)."""

    input_tokens: int = 0
    output_tokens: int = 0


class BackendError(UsePodError):
    """A failed backend call. `code` is the `job_error.error_code`; `message` is one line and
    never contains a key; `status` is the upstream HTTP status when there was one."""

    def __init__(self, code: ErrorCode, message: str, status: int | None = None) -> None:
        self.code = ErrorCode(code)
        self.message = one_line(message)
        self.status = status
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"BackendError({self.code.value!r}, {self.message!r}, status={self.status!r})"


#: Receives each upstream chunk, unmodified, as soon as it arrives.
ChunkSink = Callable[[bytes], Awaitable[None]]


class Backend(ABC):
    """One configured backend. Create with `registry.build_backend`; close with :meth:`aclose`."""

    kind: str
    config: BackendConfig
    native: bool
    supports_anthropic: bool
    base_url: str

    @property
    def label(self) -> str:
        """Short human name, e.g. `vllm @ http://localhost:8000`."""
        return self.config.label

    @abstractmethod
    async def health(self) -> Health:
        """Is the backend up? Never raises."""

    @abstractmethod
    async def list_models(self) -> list[ModelInfo]:
        """The models the backend serves. Raises BackendError."""

    @abstractmethod
    async def execute(self, job: JobRequest, sink: ChunkSink) -> Usage:
        """Run a job, relaying every upstream chunk to `sink` as it arrives.

        Returns the token usage read on the side. Raises BackendError (also for an error
        event in the middle of a stream, after its bytes were relayed). Cancelling the task
        closes the upstream request and re-raises CancelledError.
        """

    @abstractmethod
    async def aclose(self) -> None:
        """Close connections. Jobs still running on this backend fail."""
