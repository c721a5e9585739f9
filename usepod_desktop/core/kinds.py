"""The backend kinds: the one table every other module derives from.

Config validation, discovery (probe ports, routing priority), pairing and `setup` hints, the
GUI's backend dialog and the adapter registry all read this table; none of them lists the kinds
again. Adding a kind is one row here plus one adapter module (named in `adapter`, imported by
`core/backends/registry.py`). What each server does on the wire is in docs/backends.md.

Pure data, no imports from the rest of the package, so that any module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The ways a local server gives GPU memory back (`KindSpec.gpu_release`): Ollama's
#: `keep_alive: 0`, LM Studio's REST unload / load, vLLM's sleep mode.
GPU_RELEASE_METHODS: tuple[str, ...] = ("ollama_keep_alive", "lmstudio_rest", "vllm_sleep")


@dataclass(frozen=True, slots=True)
class KindSpec:
    """One backend kind.

    `priority`: when several backends offer the same model the lowest number wins
    (docs/protocol.md, capabilities). `default_url`: where the server listens out of the box
    (local kinds: probed by discovery; remote kinds: the public API). `models_path`: the list
    discovery's probe reads. `key_env`: the usual environment variable / keyring name of the
    operator's API key (remote kinds). `adapter`: "module:Class" under core/backends.
    `gpu_release`: how the server gives GPU memory back on pause and takes it again before
    serving resumes (one of :data:`GPU_RELEASE_METHODS`, core/serving/gpu_memory.py); None when
    it cannot (a local server without an unload API) or has no local GPU (remote kinds).
    """

    name: str
    label: str
    remote: bool
    priority: int
    default_url: str
    models_path: str
    key_env: str | None
    install_hint: str | None
    adapter: str
    gpu_release: str | None = None

    @property
    def default_port(self) -> int | None:
        """The port of a local kind's default URL (None for remote kinds)."""
        if self.remote:
            return None
        return int(self.default_url.rsplit(":", 1)[1])


KINDS: dict[str, KindSpec] = {
    spec.name: spec
    for spec in (
        KindSpec(
            name="vllm",
            label="vLLM",
            remote=False,
            priority=0,
            default_url="http://localhost:8000",
            models_path="/v1/models",
            key_env=None,
            install_hint="pip install vllm, then: vllm serve <model>",
            adapter="vllm:VllmBackend",
            gpu_release="vllm_sleep",
        ),
        KindSpec(
            name="llamacpp",
            label="llama.cpp",
            remote=False,
            priority=1,
            default_url="http://localhost:8080",
            models_path="/v1/models",
            key_env=None,
            install_hint="llama-server -m <model>.gguf",
            adapter="llamacpp:LlamaCppBackend",
        ),
        KindSpec(
            name="lmstudio",
            label="LM Studio",
            remote=False,
            priority=2,
            default_url="http://localhost:1234",
            models_path="/v1/models",
            key_env=None,
            install_hint="in LM Studio, open the Developer tab and start the server",
            adapter="lmstudio:LmStudioBackend",
            gpu_release="lmstudio_rest",
        ),
        KindSpec(
            name="ollama",
            label="Ollama",
            remote=False,
            priority=3,
            default_url="http://localhost:11434",
            models_path="/api/tags",
            key_env=None,
            install_hint="install it from https://ollama.com, then: ollama pull <model>",
            adapter="ollama:OllamaBackend",
            gpu_release="ollama_keep_alive",
        ),
        KindSpec(
            name="openrouter",
            label="OpenRouter",
            remote=True,
            priority=5,
            default_url="https://openrouter.ai/api/v1",
            models_path="/models",
            key_env="OPENROUTER_API_KEY",
            install_hint=None,
            adapter="openrouter:OpenRouterBackend",
        ),
        KindSpec(
            name="venice",
            label="Venice",
            remote=True,
            priority=4,
            default_url="https://api.venice.ai/api/v1",
            models_path="/models",
            key_env="VENICE_API_KEY",
            install_hint=None,
            adapter="venice:VeniceBackend",
        ),
    )
}

#: Kind names in the order the UI lists them (the table's order): local kinds, then remote ones.
LOCAL_KINDS: tuple[str, ...] = tuple(k for k, s in KINDS.items() if not s.remote)
REMOTE_KINDS: tuple[str, ...] = tuple(k for k, s in KINDS.items() if s.remote)
ALL_KINDS: tuple[str, ...] = LOCAL_KINDS + REMOTE_KINDS
#: When several backends offer the same model, the lowest number wins.
KIND_PRIORITY: dict[str, int] = {k: s.priority for k, s in KINDS.items()}


def spec(kind: str) -> KindSpec:
    """The row of `kind`. Raises KeyError for an unknown kind."""
    return KINDS[kind]
