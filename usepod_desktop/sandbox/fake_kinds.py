"""Per-kind wire details for the fake backends in :mod:`usepod_desktop.sandbox.fakes`.

Everything here is pure data shaping (no I/O): model-list bodies, error bodies and the
other places where the six backend kinds differ.  The facts come from docs/backends.md; where
it is silent the shape follows the server's own source (noted per function).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from usepod_desktop.sandbox.fakes import FakeModel

JSON = dict[str, Any]

LOCAL_KINDS: tuple[str, ...] = ("vllm", "llamacpp", "lmstudio", "ollama")
REMOTE_KINDS: tuple[str, ...] = ("openrouter", "venice")
KINDS: tuple[str, ...] = LOCAL_KINDS + REMOTE_KINDS

#: The port each local server listens on by default (used by the command line only).
DEFAULT_PORTS: dict[str, int] = {"vllm": 8000, "llamacpp": 8080, "lmstudio": 1234, "ollama": 11434}

#: Kinds that check ``Authorization: Bearer`` when the fake has an ``api_key``
#: (vLLM ``--api-key`` and llama-server ``--api-key`` do; LM Studio and Ollama do not).
AUTH_KINDS: frozenset[str] = frozenset({"vllm", "llamacpp", "openrouter", "venice"})

#: Kinds whose ``/v1/messages`` errors use the Anthropic shape
#: ``{"type":"error","error":{"type","message"}}``; the others reuse their own shape.
ANTHROPIC_ERROR_KINDS: frozenset[str] = frozenset({"vllm", "lmstudio", "ollama"})

#: Fixed "created" timestamp for model lists (deterministic bodies).
MODEL_CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z
OLLAMA_VERSION = "0.14.2"


def api_prefix(kind: str) -> str:
    """Path prefix of the OpenAI-compatible API (``/api/v1`` on the hosted kinds)."""
    return "/api/v1" if kind in REMOTE_KINDS else "/v1"


def has_messages(kind: str) -> bool:
    """Whether the kind serves Anthropic ``POST .../messages`` (Venice has no such endpoint)."""
    return kind != "venice"


def format_price(usd_per_token: float) -> str:
    """OpenRouter's price string: plain decimal, no exponent (``1e-06`` -> ``"0.000001"``)."""
    text = f"{usd_per_token:.12f}".rstrip("0").rstrip(".")
    return text or "0"


def per_million(usd_per_token: float) -> float:
    """USD per token -> USD per 1M tokens, without float noise (Venice reports this)."""
    return round(usd_per_token * 1_000_000, 6)


def ollama_arch(model_id: str) -> str:
    """A plausible ``general.architecture`` for an Ollama model name (``qwen3:8b`` -> ``qwen3``)."""
    base = model_id.split("/")[-1].split(":")[0].lower()
    match = re.match(r"[a-z][a-z0-9]*", base)
    return match.group(0) if match else "llama"


def _digest(model_id: str) -> str:
    return hashlib.sha256(model_id.encode()).hexdigest()


def _size(model_id: str) -> int:
    return 1_000_000_000 + int(_digest(model_id)[:6], 16) * 1000


# --------------------------------------------------------------------------- model lists


def models_body(kind: str, models: Sequence[FakeModel]) -> JSON:
    """Body of ``GET /v1/models`` (``GET /api/v1/models`` on the hosted kinds)."""
    if kind == "vllm":
        data = []
        for m in models:
            entry: JSON = {
                "id": m.id,
                "object": "model",
                "created": MODEL_CREATED,
                "owned_by": "vllm",
                "root": m.id,
                "parent": None,
            }
            if m.context_length is not None:  # LoRA entries have no max_model_len
                entry["max_model_len"] = m.context_length
            entry["permission"] = [
                {
                    "id": f"modelperm-{_digest(m.id)[:24]}",
                    "object": "model_permission",
                    "created": MODEL_CREATED,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ]
            data.append(entry)
        return {"object": "list", "data": data}
    if kind == "llamacpp":
        # llama-server: Ollama-style "models" array first, then the OpenAI "data" list whose
        # "meta" carries n_ctx_train (meta is null while loading / when unknown).
        return {
            "models": [
                {
                    "name": m.id,
                    "model": m.id,
                    "modified_at": "",
                    "size": "",
                    "digest": "",
                    "type": "model",
                    "description": "",
                    "tags": [""],
                    "capabilities": ["completion"],
                    "parameters": "",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "",
                        "families": [""],
                        "parameter_size": "",
                        "quantization_level": "",
                    },
                }
                for m in models
            ],
            "object": "list",
            "data": [
                {
                    "id": m.id,
                    "object": "model",
                    "created": MODEL_CREATED,
                    "owned_by": "llamacpp",
                    "meta": None
                    if m.context_length is None
                    else {
                        "vocab_type": 2,
                        "n_vocab": 151936,
                        "n_ctx_train": m.context_length,
                        "n_embd": 1024,
                        "n_params": 596049920,
                        "size": _size(m.id),
                    },
                }
                for m in models
            ],
        }
    if kind == "lmstudio":
        return {
            "data": [
                {"id": m.id, "object": "model", "owned_by": "organization_owner"} for m in models
            ],
            "object": "list",
        }
    if kind == "ollama":
        return {
            "object": "list",
            "data": [
                {"id": m.id, "object": "model", "created": MODEL_CREATED, "owned_by": "library"}
                for m in models
            ],
        }
    if kind == "openrouter":
        data = []
        for m in models:
            entry = {
                "id": m.id,
                "canonical_slug": m.id,
                "name": m.id,
                "created": MODEL_CREATED,
                "description": f"Fake {m.id}",
                "context_length": m.context_length,
                "architecture": {
                    "modality": "text->text",
                    "input_modalities": ["text"],
                    "output_modalities": ["text"],
                    "tokenizer": "Other",
                    "instruct_type": None,
                },
            }
            pricing: JSON = {}
            if m.prompt_price is not None:
                pricing["prompt"] = format_price(m.prompt_price)
            if m.completion_price is not None:
                pricing["completion"] = format_price(m.completion_price)
            if pricing:
                entry["pricing"] = pricing | {"request": "0", "image": "0"}
            entry["top_provider"] = {
                "context_length": m.context_length,
                "max_completion_tokens": None,
                "is_moderated": False,
            }
            entry["per_request_limits"] = None
            entry["supported_parameters"] = ["max_tokens", "temperature", "stream", "stop"]
            data.append(entry)
        return {"data": data}
    if kind == "venice":
        data = []
        for m in models:
            spec: JSON = {"name": m.id, "offline": False, "traits": []}
            pricing = {}
            if m.prompt_price is not None:
                usd = per_million(m.prompt_price)
                pricing["input"] = {"usd": usd, "diem": usd}
            if m.completion_price is not None:
                usd = per_million(m.completion_price)
                pricing["output"] = {"usd": usd, "diem": usd}
            if pricing:
                spec["pricing"] = pricing
            if m.context_length is not None:
                spec["availableContextTokens"] = m.context_length
            spec["capabilities"] = {"supportsFunctionCalling": True, "supportsReasoning": False}
            entry = {
                "id": m.id,
                "type": "text",
                "object": "model",
                "created": MODEL_CREATED,
                "owned_by": "venice.ai",
            }
            if m.context_length is not None:
                entry["context_length"] = m.context_length
            entry["model_spec"] = spec
            data.append(entry)
        return {"object": "list", "type": "text", "data": data}
    raise ValueError(f"unknown kind {kind!r}")


def lmstudio_v0_models(models: Sequence[FakeModel]) -> JSON:
    """LM Studio ``GET /api/v0/models`` (REST beta): adds ``state`` and ``max_context_length``."""
    data = []
    for m in models:
        entry: JSON = {
            "id": m.id,
            "object": "model",
            "type": "llm",
            "publisher": m.id.split("/")[0] if "/" in m.id else "lmstudio-community",
            "arch": ollama_arch(m.id),
            "compatibility_type": "gguf",
            "quantization": "Q4_K_M",
            "state": "loaded",
        }
        if m.context_length is not None:
            entry["max_context_length"] = m.context_length
        data.append(entry)
    return {"object": "list", "data": data}


def lmstudio_v1_models(models: Sequence[FakeModel], loaded: set[str]) -> JSON:
    """LM Studio 0.4+ ``GET /api/v1/models``: ``key`` and ``loaded_instances`` per model (an
    instance id is the model key for the first instance)."""
    out = []
    for m in models:
        entry: JSON = {
            "type": "llm",
            "publisher": m.id.split("/")[0] if "/" in m.id else "lmstudio-community",
            "key": m.id,
            "display_name": m.id.split("/")[-1],
            "architecture": ollama_arch(m.id),
            "quantization": {"name": "Q4_K_M", "bits_per_weight": 4},
            "size_bytes": _size(m.id),
            "params_string": "3B",
            "loaded_instances": (
                [{"id": m.id, "config": {"context_length": m.context_length or 4096}}]
                if m.id in loaded
                else []
            ),
            "format": "gguf",
        }
        if m.context_length is not None:
            entry["max_context_length"] = m.context_length
        out.append(entry)
    return {"models": out}


def ollama_ps(models: Sequence[FakeModel], loaded: set[str]) -> JSON:
    """Ollama ``GET /api/ps``: the models in memory now."""
    return {
        "models": [
            {
                "name": m.id,
                "model": m.id,
                "size": _size(m.id),
                "digest": _digest(m.id),
                "details": _ollama_details(m.id),
                "expires_at": "2099-01-01T00:00:00Z",
                "size_vram": _size(m.id),
            }
            for m in models
            if m.id in loaded
        ]
    }


def _ollama_details(model_id: str) -> JSON:
    arch = ollama_arch(model_id)
    return {
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }


def ollama_tags(models: Sequence[FakeModel]) -> JSON:
    """Ollama ``GET /api/tags``."""
    return {
        "models": [
            {
                "name": m.id,
                "model": m.id,
                "modified_at": "2025-01-01T00:00:00.000000000Z",
                "size": _size(m.id),
                "digest": _digest(m.id),
                "details": _ollama_details(m.id),
            }
            for m in models
        ]
    }


def ollama_show(model: FakeModel) -> JSON:
    """Ollama ``POST /api/show``: the context window is ``model_info["<arch>.context_length"]``."""
    arch = ollama_arch(model.id)
    info: JSON = {
        "general.architecture": arch,
        "general.file_type": 15,
        "general.parameter_count": 3_212_749_888,
        "general.quantization_version": 2,
    }
    if model.context_length is not None:
        info[f"{arch}.context_length"] = model.context_length
    info[f"{arch}.embedding_length"] = 3072
    return {
        "license": "",
        "modelfile": f"FROM {model.id}\n",
        "parameters": 'stop "<|eot_id|>"',
        "template": "{{ .Prompt }}",
        "details": _ollama_details(model.id),
        "model_info": info,
        "capabilities": ["completion", "tools"],
        "modified_at": "2025-01-01T00:00:00.000000000Z",
    }


# --------------------------------------------------------------------------- errors

_VLLM_TYPES = {
    400: "BadRequestError",
    401: "Unauthorized",
    404: "NotFoundError",
    429: "TooManyRequestsError",
    500: "InternalServerError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}
_LLAMACPP_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_GENERIC_MESSAGES = {
    400: "Bad request",
    401: "Unauthorized",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    408: "Request timed out",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}
_OPENROUTER_MESSAGES = {
    401: "User not found.",
    402: (
        "This request requires more credits, or fewer max_tokens. "
        "You have insufficient credits. Add more using https://openrouter.ai/settings/credits"
    ),
    403: "Your chosen model requires moderation and your input was flagged",
    408: "Your request timed out",
    429: "Rate limit exceeded: free-models-per-min.",
    502: "Provider returned error",
    503: "No endpoints found that can handle the requested parameters.",
}
# Venice's documented error messages (api-reference/error-codes).
_VENICE_MESSAGES = {
    400: "Invalid request parameters",
    401: "Authentication failed",
    402: (
        "Insufficient USD or Diem balance to complete request. "
        "Visit https://venice.ai/settings/api to add credits."
    ),
    404: "Specified model not found",
    429: "Rate limit exceeded",
    500: "Inference processing failed",
    503: "The model is currently offline or at capacity (MODEL_OFFLINE). Please try again later.",
}


def default_message(kind: str, status: int) -> str:
    if kind == "openrouter" and status in _OPENROUTER_MESSAGES:
        return _OPENROUTER_MESSAGES[status]
    if kind == "venice" and status in _VENICE_MESSAGES:
        return _VENICE_MESSAGES[status]
    return _GENERIC_MESSAGES.get(status, f"HTTP {status}")


def anthropic_error(status: int, message: str) -> JSON:
    return {
        "type": "error",
        "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message},
    }


def error_body(kind: str, status: int, message: str, *, anthropic: bool = False) -> JSON:
    """The kind's error body for an HTTP error status."""
    if anthropic and kind in ANTHROPIC_ERROR_KINDS:
        return anthropic_error(status, message)
    if kind == "vllm":
        etype = _VLLM_TYPES.get(
            status, "InternalServerError" if status >= 500 else "BadRequestError"
        )
        return {"error": {"message": message, "type": etype, "param": None, "code": status}}
    if kind == "llamacpp":
        etype = _LLAMACPP_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        return {"error": {"code": status, "message": message, "type": etype}}
    if kind == "ollama":  # the /v1 compatibility layer
        return {"error": {"message": message, "type": "api_error", "param": None, "code": None}}
    if kind == "openrouter":
        return {"error": {"message": message, "code": status}}
    # lmstudio, venice: a plain string
    return {"error": message}


def error_headers(kind: str, status: int) -> dict[str, str]:
    if status == 429 and kind in REMOTE_KINDS:
        return {"Retry-After": "1"}
    return {}


def not_found(kind: str, model: str, *, anthropic: bool = False) -> tuple[int, JSON]:
    """Response to a request naming a model the server does not serve."""
    if kind == "vllm":
        msg = f"The model `{model}` does not exist."
        if anthropic:
            return 404, anthropic_error(404, msg)
        return 404, {"error": {"message": msg, "type": "NotFoundError", "param": None, "code": 404}}
    if kind == "llamacpp":
        # llama-server in router mode; a single-model server would answer with its one model.
        return 404, error_body(kind, 404, f"model '{model}' not found")
    if kind == "lmstudio":
        msg = (
            f'Invalid model identifier "{model}". Please specify a valid downloaded model '
            "(e.g. run `lms ls` to list them)."
        )
        if anthropic:
            return 404, anthropic_error(404, msg)
        return 404, {
            "error": {
                "message": msg,
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
    if kind == "ollama":
        return 404, error_body(kind, 404, f"model '{model}' not found", anthropic=anthropic)
    if kind == "openrouter":
        return 400, {"error": {"message": f"{model} is not a valid model ID", "code": 400}}
    return 404, {"error": _VENICE_MESSAGES[404]}


def unauthorized(kind: str, *, missing: bool) -> tuple[int, JSON]:
    """401 body for a missing or wrong Bearer key."""
    if kind == "openrouter":
        msg = "No auth credentials found" if missing else "User not found."
        return 401, {"error": {"message": msg, "code": 401}}
    if kind == "venice":
        return 401, {"error": "Authentication failed"}
    if kind == "llamacpp":
        return 401, error_body(kind, 401, "Invalid API Key")
    return 401, {"error": "Unauthorized"}  # vLLM's API-key middleware


def context_overflow(
    kind: str, n_prompt: int, n_ctx: int, max_tokens: int | None
) -> tuple[int, JSON] | None:
    """Error for a prompt that does not fit, or None when the kind accepts it.

    Ollama and LM Studio truncate/shift the context silently, so they never refuse.
    vLLM also refuses a prompt + max_tokens that exceeds max_model_len.
    """
    if kind == "llamacpp":
        if n_prompt <= n_ctx:
            return None
        return 400, {
            "error": {
                "code": 400,
                "message": (
                    f"the request exceeds the available context size ({n_prompt} > {n_ctx} tokens),"
                    " try increasing it"
                ),
                "type": "exceed_context_size_error",
                "n_prompt_tokens": n_prompt,
                "n_ctx": n_ctx,
            }
        }
    if kind == "vllm":
        wanted = n_prompt + (max_tokens or 0)
        if n_prompt < n_ctx and wanted <= n_ctx:
            return None
        msg = (
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{wanted} tokens ({n_prompt} in the messages, {max_tokens or 0} in the completion). "
            "Please reduce the length of the messages or completion."
        )
        return 400, error_body(kind, 400, msg)
    if kind == "openrouter":
        if n_prompt <= n_ctx:
            return None
        msg = (
            f"This endpoint's maximum context length is {n_ctx} tokens. However, you requested "
            f"about {n_prompt} tokens. Please reduce the length of either one, or use the "
            '"middle-out" transform to compress your prompt automatically.'
        )
        return 400, {"error": {"message": msg, "code": 400}}
    if kind == "venice":
        if n_prompt <= n_ctx:
            return None
        return 400, {
            "error": {
                "message": (
                    "Your request exceeds the model's maximum context. "
                    "Please reduce your prompt or completion length."
                ),
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
    return None


def loading_error(kind: str) -> tuple[int, JSON]:
    """What a request gets while the kind is 'loading' (for the kinds that answer at all)."""
    if kind == "llamacpp":
        return 503, {
            "error": {"message": "Loading model", "type": "unavailable_error", "code": 503}
        }
    if kind == "lmstudio":
        return 200, {"error": "Model is loading. Please wait until loading completes."}
    if kind == "venice":
        return 503, {"error": _VENICE_MESSAGES[503]}
    if kind == "openrouter":
        return 503, {"error": {"message": _OPENROUTER_MESSAGES[503], "code": 503}}
    return 503, error_body(kind, 503, "Service unavailable")


def mid_stream_error(kind: str, *, chunk_id: str, created: int, model: str) -> tuple[JSON, bool]:
    """The event a stream carries when generation fails after it began.

    Returns the JSON of the ``data:`` line and whether ``[DONE]`` still follows.
    """
    if kind == "openrouter":
        return {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "provider": "FakeProvider",
            "error": {"code": "server_error", "message": "Provider disconnected unexpectedly"},
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": ""},
                    "finish_reason": "error",
                    "native_finish_reason": "error",
                }
            ],
        }, True
    if kind == "vllm":
        # vLLM's create_streaming_error_response, then its generator still yields [DONE].
        return error_body(kind, 500, "The engine encountered an error while generating."), True
    if kind == "llamacpp":
        return error_body(kind, 500, "Generation failed: the slot was released unexpectedly"), False
    if kind == "ollama":
        return error_body(kind, 500, "an error was encountered while running the model"), False
    if kind == "venice":
        return {"error": "Inference processing failed"}, False
    return {"error": {"message": "Model crashed while generating", "type": "server_error"}}, False


def unknown_route(kind: str, method: str, path: str, *, wrong_method: bool) -> tuple[int, Any]:
    """Response for a route the kind does not have: (status, JSON body or str text)."""
    if kind == "lmstudio":
        return 200, {"error": f"Unexpected endpoint or method. ({method} {path})"}
    if kind == "vllm":
        if wrong_method:
            return 405, {"detail": "Method Not Allowed"}
        return 404, {"detail": "Not Found"}
    if kind == "llamacpp":
        return 404, error_body(kind, 404, "File Not Found")
    if kind == "ollama":
        if wrong_method:
            return 405, "405 method not allowed"
        return 404, "404 page not found"
    if kind == "openrouter":
        return 404, {"error": {"message": "Not Found", "code": 404}}
    return 404, {"error": "Not found"}
