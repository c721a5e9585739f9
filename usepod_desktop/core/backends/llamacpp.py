"""llama.cpp `llama-server` (default port 8080).

- `GET /health` is 200 `{"status":"ok"}`; while the model loads EVERY route answers 503
  `{"error":{"message":"Loading model",...}}`: that is "loading", not down.
- `GET /v1/models`: the trained context is `meta.n_ctx_train` (`meta` may be null); older
  builds answer a bare object with an `id` instead of a `data` list. The context the server
  actually runs with (`-c`, per slot) is `default_generation_settings.n_ctx` in `GET /props`;
  when that answers we advertise the smaller of the two, since a longer prompt would fail.
- `include_usage` defaults to false (we always set it); native Anthropic `POST /v1/messages`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from usepod_desktop.core.backends.base import BackendError, Health, ModelInfo
from usepod_desktop.core.backends.http import LocalBackend
from usepod_desktop.core.backends.openai_compat import context_window_of
from usepod_desktop.core.backends.sse import json_count
from usepod_desktop.core.net import error_message_of


class LlamaCppBackend(LocalBackend):
    kind = "llamacpp"
    display_name = "llama.cpp"
    native = True
    supports_anthropic = True
    health_path = "/health"

    def _judge_health(self, response: httpx.Response, latency_ms: float) -> Health:
        if response.status_code == 503:
            message = error_message_of(response.content, 120)
            if "loading" in message.lower():
                return Health(False, latency_ms, "loading model (503)", "loading")
        return super()._judge_health(response, latency_ms)

    def _parse_models(self, body: Any) -> list[ModelInfo]:
        if isinstance(body, dict) and not isinstance(body.get("data"), list):
            model_id = body.get("id")
            if isinstance(model_id, str) and model_id:  # older builds: one bare model object
                return [self._model_info(model_id, body)]
        return super()._parse_models(body)

    def _model_info(self, model_id: str, entry: dict[str, Any]) -> ModelInfo:
        context = context_window_of(entry)
        meta = entry.get("meta")
        if context is None and isinstance(meta, dict):
            context = json_count(meta.get("n_ctx_train")) or None
        return ModelInfo(model_id, context)

    async def _enrich_models(self, models: list[ModelInfo]) -> list[ModelInfo]:
        try:
            props = await self._get_json(self.base_url + "/props")
        except BackendError:
            return models  # older builds or a proxy without /props: keep the trained context
        settings = props.get("default_generation_settings") if isinstance(props, dict) else None
        n_ctx = json_count(settings.get("n_ctx")) if isinstance(settings, dict) else None
        if not n_ctx:
            return models
        return [
            dataclasses.replace(m, context_window=min(m.context_window or n_ctx, n_ctx))
            for m in models
        ]
