"""Ollama (default port 11434).

- Health is `GET /api/tags` (no loading state: requests block while a model loads).
- `GET /v1/models` has no context length; `POST /api/show {"model": id}` has it in
  `model_info["<arch>.context_length"]` (`<arch>` = `general.architecture`). Those calls run
  concurrently and a failing one only leaves that model's context unknown. When the model's
  Modelfile sets `num_ctx`, Ollama runs with that window (it truncates longer prompts
  silently), so the smaller of the two is advertised.
- Unknown model: 404 "model 'x' not found". `/v1/messages` since v0.14.0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import httpx

from usepod_desktop.core.backends.base import ModelInfo
from usepod_desktop.core.backends.http import MAX_MODELS_BODY, LocalBackend
from usepod_desktop.core.backends.openai_compat import decode_json
from usepod_desktop.core.backends.sse import json_count
from usepod_desktop.core.net import BodyTooLarge, read_limited

#: At most this many `/api/show` calls at once.
SHOW_CONCURRENCY = 8
_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)


def context_from_show(body: Any) -> int | None:
    """The context window in an `/api/show` answer, or None."""
    if not isinstance(body, dict):
        return None
    info = body.get("model_info")
    context: int | None = None
    if isinstance(info, dict):
        arch = info.get("general.architecture")
        if isinstance(arch, str):
            context = json_count(info.get(f"{arch}.context_length")) or None
        if context is None:
            for key, value in info.items():
                if isinstance(key, str) and key.endswith(".context_length"):
                    context = json_count(value) or None
                    if context:
                        break
    parameters = body.get("parameters")
    if isinstance(parameters, str):
        match = _NUM_CTX.search(parameters)
        if match:
            num_ctx = int(match.group(1))
            if num_ctx > 0:
                context = min(context, num_ctx) if context else num_ctx
    return context


class OllamaBackend(LocalBackend):
    kind = "ollama"
    display_name = "Ollama"
    native = True
    supports_anthropic = True

    health_path = "/api/tags"

    async def _show_context(self, model_id: str, gate: asyncio.Semaphore) -> int | None:
        async with gate:
            try:
                async with (
                    asyncio.timeout(self.probe_timeout),
                    self._client.stream(
                        "POST",
                        self.base_url + "/api/show",
                        json={"model": model_id},
                        timeout=httpx.Timeout(self.probe_timeout),
                    ) as response,
                ):
                    if not response.is_success:
                        return None
                    content = await read_limited(response, MAX_MODELS_BODY)
                return context_from_show(decode_json(content))
            except (TimeoutError, httpx.HTTPError, ValueError, BodyTooLarge):
                return None

    async def _enrich_models(self, models: list[ModelInfo]) -> list[ModelInfo]:
        missing = [m for m in models if m.context_window is None]
        if not missing:
            return models
        gate = asyncio.Semaphore(SHOW_CONCURRENCY)
        found = await asyncio.gather(*(self._show_context(m.model_id, gate) for m in missing))
        contexts = {m.model_id: c for m, c in zip(missing, found, strict=True) if c}
        return [
            dataclasses.replace(m, context_window=contexts[m.model_id])
            if m.model_id in contexts
            else m
            for m in models
        ]
