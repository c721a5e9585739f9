"""LM Studio (default port 1234).

- No health route: unknown routes answer HTTP 200 `{"error": "Unexpected endpoint or
  method. ..."}`, so health is `GET /v1/models` and a 200 whose body is an `error` object is
  NOT healthy (a model still loading says so the same way).
- `GET /v1/models` has no context length (and with JIT loading lists every downloaded model);
  `GET /api/v0/models` adds `max_context_length`, read when it answers.
- `include_usage` since 0.3.18, Anthropic `/v1/messages` since 0.4.1 (older builds answer the
  200-with-error body, which the shared client turns into a clear job error).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx

from usepod_desktop.core.backends.base import BackendError, Health, ModelInfo, one_line
from usepod_desktop.core.backends.http import LocalBackend
from usepod_desktop.core.backends.sse import json_count
from usepod_desktop.core.net import error_text


class LmStudioBackend(LocalBackend):
    kind = "lmstudio"
    display_name = "LM Studio"
    native = True
    supports_anthropic = True

    def _judge_health(self, response: httpx.Response, latency_ms: float) -> Health:
        if response.is_success:
            try:
                body: Any = json.loads(response.content)
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("error"):
                message = one_line(error_text(body["error"]), 160)
                state = "loading" if "loading" in message.lower() else "error"
                return Health(False, latency_ms, f"LM Studio error: {message}", state)
        return super()._judge_health(response, latency_ms)

    async def _enrich_models(self, models: list[ModelInfo]) -> list[ModelInfo]:
        if all(m.context_window for m in models):
            return models
        try:
            body = await self._get_json(self.base_url + "/api/v0/models")
        except BackendError:
            return models
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            return models  # an older build's {"error": ...}: no context lengths, that is all
        contexts: dict[str, int] = {}
        for entry in data:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                value = json_count(entry.get("max_context_length"))
                if value:
                    contexts[entry["id"]] = value
        return [
            m
            if m.context_window or m.model_id not in contexts
            else dataclasses.replace(m, context_window=contexts[m.model_id])
            for m in models
        ]
