"""OpenRouter: a hosted BYOK backend at https://openrouter.ai/api/v1.

- Bearer key from the SecretStore; attribution headers `HTTP-Referer: https://usepod.ai` and
  `X-Title: Use Pod provider` on every request.
- No health route: health is the (public) `GET /models`, whose body list_models reuses.
- Models carry `context_length` and `pricing.prompt` / `pricing.completion` as decimal strings
  in USD per token; upstream price in micro-USD per 1M tokens = Decimal(str) x 10^12, exact.
  A negative price (`"-1"`, router models) or a missing one leaves the price unknown.
- Errors after streaming began come as a chunk with a top-level `error` and
  `finish_reason: "error"` while the status stays 200 (turned into a job error).
- Anthropic-shaped `POST /api/v1/messages` exists.
- Requests are reduced to the BYOK allow-list (`openai_compat.byok_request`): OpenRouter's own
  routing and paid-tool fields (`models`, `route`, `provider`, `plugins`, `transforms`, ...)
  never reach it.

The base URL can be overridden FOR TESTS ONLY with the environment variable
`USEPOD_OPENROUTER_BASE_URL` (e.g. a fake server's `http://127.0.0.1:PORT/api/v1`). The
`url` key of a `[[backends]]` entry is ignored for this kind, like the reference agent does.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from usepod_desktop.core.backends.base import ModelInfo, UpstreamPrice
from usepod_desktop.core.backends.http import RemoteBackend
from usepod_desktop.core.backends.openai_compat import context_window_of

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
BASE_URL_ENV = "USEPOD_OPENROUTER_BASE_URL"
ATTRIBUTION_HEADERS = {"HTTP-Referer": "https://usepod.ai", "X-Title": "Use Pod provider"}
#: USD per token -> micro-USD per 1M tokens.
PER_TOKEN_TO_MICRO_PER_1M = Decimal(10) ** 12


def usd_per_token(value: Any) -> Decimal | None:
    """An OpenRouter price (string, or a number decoded as Decimal) as a Decimal >= 0."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        return None
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not price.is_finite() or price < 0:
        return None
    return price


def upstream_price_of(entry: dict[str, Any]) -> UpstreamPrice | None:
    pricing = entry.get("pricing")
    if not isinstance(pricing, dict):
        return None
    prompt = usd_per_token(pricing.get("prompt"))
    completion = usd_per_token(pricing.get("completion"))
    if prompt is None or completion is None:
        return None
    return UpstreamPrice(prompt * PER_TOKEN_TO_MICRO_PER_1M, completion * PER_TOKEN_TO_MICRO_PER_1M)


class OpenRouterBackend(RemoteBackend):
    kind = "openrouter"
    display_name = "OpenRouter"
    native = False
    supports_anthropic = True
    default_base_url = DEFAULT_BASE_URL
    base_url_env = BASE_URL_ENV
    extra_headers = ATTRIBUTION_HEADERS

    def _model_info(self, model_id: str, entry: dict[str, Any]) -> ModelInfo:
        return ModelInfo(model_id, context_window_of(entry), upstream_price_of(entry))
