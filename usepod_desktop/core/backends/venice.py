"""Venice: a hosted BYOK backend at https://api.venice.ai/api/v1.

- Bearer key from the SecretStore. No health route: health is `GET /models`.
- Models carry `context_length` and `model_spec.pricing.input.usd` / `output.usd` in USD per
  1M tokens; upstream price in micro-USD per 1M = value x 10^6, exact (the JSON numbers are
  decoded as Decimal, never float).
- No Anthropic Messages endpoint: anthropic jobs fail at once, without a request.
- Requests are reduced to the BYOK allow-list (`openai_compat.byok_request`) plus
  `venice_parameters`, of which only the keys in :data:`VENICE_PARAMETERS` are kept: they
  select Venice features of the same model. Its web search and scraping switches (billed per
  use on the operator's key) are dropped.
- Errors are often a plain string `{"error": "..."}`; 503 means MODEL_OFFLINE / AT_CAPACITY.

The base URL can be overridden FOR TESTS ONLY with the environment variable
`USEPOD_VENICE_BASE_URL` (e.g. a fake server's `http://127.0.0.1:PORT/api/v1`). The `url`
key of a `[[backends]]` entry is ignored for this kind, like the reference agent does.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

from usepod_desktop.core.backends.base import ModelInfo, UpstreamPrice
from usepod_desktop.core.backends.http import RemoteBackend
from usepod_desktop.core.backends.openai_compat import context_window_of
from usepod_desktop.core.backends.openrouter import usd_per_token
from usepod_desktop.core.backends.sse import json_count

DEFAULT_BASE_URL = "https://api.venice.ai/api/v1"
BASE_URL_ENV = "USEPOD_VENICE_BASE_URL"
#: `venice_parameters` keys forwarded (the rest, e.g. `enable_web_search`, is dropped).
VENICE_PARAMETERS = frozenset(
    {
        "character_slug",
        "include_venice_system_prompt",
        "strip_thinking_response",
        "disable_thinking",
    }
)
#: USD per 1M tokens -> micro-USD per 1M tokens.
USD_TO_MICRO = Decimal(10) ** 6


def upstream_price_of(entry: dict[str, Any]) -> UpstreamPrice | None:
    spec = entry.get("model_spec")
    pricing = spec.get("pricing") if isinstance(spec, dict) else None
    if not isinstance(pricing, dict):
        return None
    prices: list[Decimal] = []
    for side in ("input", "output"):
        item = pricing.get(side)
        value = usd_per_token(item.get("usd")) if isinstance(item, dict) else None
        if value is None:
            return None
        prices.append(value * USD_TO_MICRO)
    return UpstreamPrice(prices[0], prices[1])


class VeniceBackend(RemoteBackend):
    kind = "venice"
    display_name = "Venice"
    native = False
    supports_anthropic = False
    default_base_url = DEFAULT_BASE_URL
    base_url_env = BASE_URL_ENV
    extra_fields: ClassVar[Mapping[str, frozenset[str] | None]] = {
        "venice_parameters": VENICE_PARAMETERS
    }

    def _model_info(self, model_id: str, entry: dict[str, Any]) -> ModelInfo:
        context = context_window_of(entry)
        spec = entry.get("model_spec")
        if context is None and isinstance(spec, dict):
            context = json_count(spec.get("availableContextTokens")) or None
        return ModelInfo(model_id, context, upstream_price_of(entry))
