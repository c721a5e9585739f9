"""Backend adapters: one shared HTTP client (`http`), the OpenAI-compatible wire it speaks
(`openai_compat`) and one small module per kind with only its quirks. Start with
:func:`build_backend`."""

from usepod_desktop.core.backends.base import (
    Backend,
    BackendError,
    ChunkSink,
    Health,
    JobRequest,
    MissingKeyError,
    ModelInfo,
    UpstreamPrice,
    Usage,
)
from usepod_desktop.core.backends.registry import build_backend
from usepod_desktop.core.kinds import KIND_PRIORITY

__all__ = [
    "KIND_PRIORITY",
    "Backend",
    "BackendError",
    "ChunkSink",
    "Health",
    "JobRequest",
    "MissingKeyError",
    "ModelInfo",
    "UpstreamPrice",
    "Usage",
    "build_backend",
]
