"""Backend adapters: one shared OpenAI-compatible client (`openai_compat`) and one small module
per kind with only its quirks. Start with :func:`build_backend`."""

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
    build_backend,
)

#: When several backends offer the same model, the lowest number wins (PROTOCOL.md section 4).
KIND_PRIORITY: dict[str, int] = {
    "vllm": 0,
    "llamacpp": 1,
    "lmstudio": 2,
    "ollama": 3,
    "venice": 4,
    "openrouter": 5,
}

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
