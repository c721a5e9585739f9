"""Give GPU memory back on pause, and take it again (warm up) before serving resumes.

Which API a backend has is its kind's `gpu_release` in the kinds table (core/kinds.py); each
method is the server's own API (checked against its documentation; the fakes in
:mod:`usepod_desktop.sandbox.fakes` answer the same way):

- Ollama: `POST /api/generate {"model": M, "keep_alive": 0}` unloads M (answer
  `done_reason: "unload"`); `POST /api/generate {"model": M}` with no prompt loads it;
- LM Studio (0.4+ REST API): `GET /api/v1/models` lists `loaded_instances`;
  `POST /api/v1/models/unload {"instance_id": I}`; `POST /api/v1/models/load {"model": M}`;
- vLLM: sleep mode, `POST /sleep?level=1` (weights to CPU RAM, KV cache dropped) and
  `POST /wake_up`; only when the server runs with `--enable-sleep-mode` and
  `VLLM_SERVER_DEV_MODE=1` (otherwise the routes answer 404 and we say so);
- llama.cpp (llama-server): no unload API; its memory stays in use (said so);
- remote kinds use no local GPU.

Bounded: unload calls 30 s, load / wake-up calls 300 s (a big model loads slowly).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from usepod_desktop.core.backends.base import one_line
from usepod_desktop.core.kinds import KINDS, KindSpec

log = logging.getLogger(__name__)

UNLOAD_TIMEOUT_S = 30.0
LOAD_TIMEOUT_S = 300.0
MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class MemoryResult:
    done: bool  # memory was given back (unload) / taken again (warm up)
    text: str  # one line for the status and the log


def _client(timeout: float) -> httpx.AsyncClient:
    # loopback servers: never through a proxy from the environment
    return httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False)


def _json(response: httpx.Response) -> Any:
    if len(response.content) > MAX_BODY:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _release_of(backend: Any) -> tuple[KindSpec | None, str | None]:
    """The backend's row in the kinds table and its GPU release method (core/kinds.py)."""
    spec = KINDS.get(getattr(backend, "kind", ""))
    return spec, spec.gpu_release if spec is not None else None


async def unload(backend: Any, models: list[str]) -> MemoryResult:
    spec, method = _release_of(backend)
    label = backend.label
    try:
        if method == "ollama_keep_alive":
            return await _ollama(backend.base_url, models, unload=True, label=label)
        if method == "lmstudio_rest":
            return await _lmstudio_unload(backend.base_url, models, label)
        if method == "vllm_sleep":
            return await _vllm(backend.base_url, "/sleep?level=1", label, "put to sleep")
        if spec is not None and not spec.remote:
            return MemoryResult(
                False, f"{label}: {spec.label} has no unload API; its GPU memory stays in use"
            )
        return MemoryResult(False, f"{label}: remote backend, no local GPU memory")
    except httpx.HTTPError as exc:
        return MemoryResult(
            False, f"{label}: unload failed: {one_line(str(exc) or type(exc).__name__)}"
        )


async def warm_up(backend: Any, models: list[str]) -> MemoryResult:
    _, method = _release_of(backend)
    label = backend.label
    try:
        if method == "ollama_keep_alive":
            return await _ollama(backend.base_url, models, unload=False, label=label)
        if method == "lmstudio_rest":
            return await _lmstudio_load(backend.base_url, models, label)
        if method == "vllm_sleep":
            return await _vllm(backend.base_url, "/wake_up", label, "woken up")
        return MemoryResult(False, f"{label}: nothing to warm up")
    except httpx.HTTPError as exc:
        return MemoryResult(
            False, f"{label}: warm-up failed: {one_line(str(exc) or type(exc).__name__)}"
        )


async def _ollama(base: str, models: list[str], *, unload: bool, label: str) -> MemoryResult:
    done: list[str] = []
    problems: list[str] = []
    async with _client(UNLOAD_TIMEOUT_S if unload else LOAD_TIMEOUT_S) as client:
        for model in models:
            body: dict[str, Any] = {"model": model}
            if unload:
                body["keep_alive"] = 0
            response = await client.post(f"{base}/api/generate", json=body)
            data = _json(response)
            expected = "unload" if unload else "load"
            if response.is_success and isinstance(data, dict) and data.get("done"):
                done.append(model)
                if data.get("done_reason") not in (expected, None):
                    log.debug("ollama %s: done_reason %r", model, data.get("done_reason"))
            else:
                problems.append(f"{model}: HTTP {response.status_code}")
    verb = "unloaded" if unload else "loaded"
    return _result(label, verb, done, problems)


async def _lmstudio_unload(base: str, models: list[str], label: str) -> MemoryResult:
    done: list[str] = []
    problems: list[str] = []
    async with _client(UNLOAD_TIMEOUT_S) as client:
        listing = await client.get(f"{base}/api/v1/models")
        data = _json(listing)
        if not listing.is_success or not isinstance(data, dict):
            return MemoryResult(
                False,
                f"{label}: model list failed (HTTP {listing.status_code}); needs LM Studio 0.4+",
            )
        for entry in data.get("models") or []:
            if not isinstance(entry, dict) or entry.get("key") not in models:
                continue
            for instance in entry.get("loaded_instances") or []:
                instance_id = instance.get("id") if isinstance(instance, dict) else None
                if not isinstance(instance_id, str):
                    continue
                response = await client.post(
                    f"{base}/api/v1/models/unload", json={"instance_id": instance_id}
                )
                if response.is_success:
                    done.append(str(entry["key"]))
                else:
                    problems.append(f"{instance_id}: HTTP {response.status_code}")
    return _result(label, "unloaded", done, problems)


async def _lmstudio_load(base: str, models: list[str], label: str) -> MemoryResult:
    done: list[str] = []
    problems: list[str] = []
    async with _client(LOAD_TIMEOUT_S) as client:
        for model in models:
            response = await client.post(f"{base}/api/v1/models/load", json={"model": model})
            if response.is_success:
                done.append(model)
            else:
                problems.append(f"{model}: HTTP {response.status_code}")
    return _result(label, "loaded", done, problems)


async def _vllm(base: str, path: str, label: str, verb: str) -> MemoryResult:
    async with _client(UNLOAD_TIMEOUT_S if "sleep" in path else LOAD_TIMEOUT_S) as client:
        response = await client.post(f"{base}{path}")
    if response.status_code == 404:
        return MemoryResult(
            False,
            f"{label}: no sleep mode (start vLLM with --enable-sleep-mode and "
            "VLLM_SERVER_DEV_MODE=1); its GPU memory stays in use",
        )
    if not response.is_success:
        return MemoryResult(False, f"{label}: {path} answered HTTP {response.status_code}")
    return MemoryResult(True, f"{label}: {verb}")


def _result(label: str, verb: str, done: list[str], problems: list[str]) -> MemoryResult:
    parts = []
    if done:
        parts.append(f"{verb} {', '.join(done)}")
    if problems:
        parts.append(f"failed for {'; '.join(problems)}")
    if not parts:
        parts.append(f"nothing to {'unload' if verb == 'unloaded' else 'load'}")
    return MemoryResult(bool(done), f"{label}: {'; '.join(parts)}")
