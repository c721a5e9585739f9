"""vLLM (default port 8000): `GET /health` answers 200 with an empty body, 503 once the engine
died; while the model loads nothing listens yet (connection refused). `GET /v1/models` carries
`max_model_len` (LoRA entries have none). Recent releases serve Anthropic `POST /v1/messages`.
"""

from __future__ import annotations

import httpx

from usepod_desktop.core.backends.base import Health
from usepod_desktop.core.backends.http import LocalBackend


class VllmBackend(LocalBackend):
    kind = "vllm"
    display_name = "vLLM"
    native = True
    supports_anthropic = True
    health_path = "/health"

    def _judge_health(self, response: httpx.Response, latency_ms: float) -> Health:
        if response.status_code == 503:
            return Health(False, latency_ms, "engine not running (HTTP 503)", "error")
        return super()._judge_health(response, latency_ms)
