"""The market's public prices: OpenRouter's model list, the cheapest centralized price we can
find for a model (the coordinator caps listings at the cheapest centralized price and routes
to the cheapest providers first; README, "Not earning?").

The list is fetched from :data:`MARKET_PRICES_URL` (OpenRouter's public `/api/v1/models`, no key
needed; the environment variable `USEPOD_MARKET_PRICES_URL` overrides it, for tests and mirrors),
bounded in size and time, validated entry by entry (a bad entry is skipped, never trusted), and
cached for a day in `<data dir>/market-prices.json`.

Format (per entry of `data`): `id` ("qwen/qwen3-8b"), optional `canonical_slug` and
`hugging_face_id` ("Qwen/Qwen3-8B"), `pricing.prompt` / `pricing.completion`: USD per token as
decimal strings. Prices here are integer-ish micro-USD per 1M tokens (Decimal), like agent.toml.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx

from usepod_desktop.core import paths

__all__ = ["MARKET_PRICES_URL", "MarketPrice", "MarketPrices", "MarketUnavailable", "load_market"]

MARKET_PRICES_URL = "https://openrouter.ai/api/v1/models"
MARKET_URL_ENV = "USEPOD_MARKET_PRICES_URL"
CACHE_FILE_NAME = "market-prices.json"
CACHE_MAX_AGE_S = 24 * 3600.0
#: OpenRouter's list is a few MiB today; anything far larger is not a price list.
MAX_LIST_BYTES = 32 * 1024 * 1024
MAX_ENTRIES = 20_000
FETCH_TIMEOUT_S = 15.0
_PER_TOKEN_TO_MICRO_PER_1M = Decimal(10) ** 12
_MAX_ID = 200


class MarketUnavailable(Exception):
    """The price list cannot be reached or is unusable (one line)."""


@dataclass(frozen=True, slots=True)
class MarketPrice:
    """One public listing: micro-USD per 1M tokens (exact decimals)."""

    market_id: str
    input_per_1m: Decimal
    output_per_1m: Decimal


def market_url() -> str:
    return os.environ.get(MARKET_URL_ENV) or MARKET_PRICES_URL


def cache_path() -> Path:
    return paths.data_dir() / CACHE_FILE_NAME


def _norm(model_id: str) -> str:
    return model_id.strip().lower()


def _price(value: Any) -> Decimal | None:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        return None
    if not d.is_finite() or d <= 0 or d > 1:  # $1/token is no real price; <=0: free/variable
        return None
    return d * _PER_TOKEN_TO_MICRO_PER_1M


class MarketPrices:
    """Listings indexed by every name they answer to, lower-cased."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self._by_name: dict[str, list[MarketPrice]] = {}
        self._by_tail: dict[str, list[MarketPrice]] = {}
        self.size = 0
        for entry in entries[:MAX_ENTRIES]:
            if not isinstance(entry, dict):
                continue
            mid = entry.get("id")
            pricing = entry.get("pricing")
            if not isinstance(mid, str) or not mid or len(mid) > _MAX_ID:
                continue
            if not isinstance(pricing, dict):
                continue
            p_in, p_out = _price(pricing.get("prompt")), _price(pricing.get("completion"))
            if p_in is None or p_out is None:
                continue
            price = MarketPrice(mid, p_in, p_out)
            self.size += 1
            names = {mid}
            for key in ("canonical_slug", "hugging_face_id"):
                alias = entry.get(key)
                if isinstance(alias, str) and alias and len(alias) <= _MAX_ID:
                    names.add(alias)
            for name in names:
                base = _norm(name).split(":", 1)[0]  # "vendor/model:free" variants
                self._by_name.setdefault(base, []).append(price)
                self._by_tail.setdefault(base.rsplit("/", 1)[-1], []).append(price)

    def cheapest(self, model_id: str) -> MarketPrice | None:
        """The cheapest listing for `model_id`, matched case-insensitively as an HF id
        ("Qwen/Qwen3-8B") or an OpenRouter id ("qwen/qwen3-8b"); a bare name ("qwen3-8b")
        matches the model part of either. None when nothing matches."""
        key = _norm(model_id)
        found = self._by_name.get(key)
        if not found and "/" not in key:
            found = self._by_tail.get(key)
        if not found:
            return None
        return min(found, key=lambda p: (p.input_per_1m + p.output_per_1m, p.market_id))


def parse_list(body: bytes) -> MarketPrices:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise MarketUnavailable("the price list is not JSON") from None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise MarketUnavailable("the price list has no `data` array")
    return MarketPrices(entries)


async def _fetch(url: str, timeout: float) -> bytes:  # noqa: ASYNC109 - httpx's timeout
    async with (
        httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client,
        client.stream("GET", url, headers={"Accept": "application/json"}) as response,
    ):
        if response.status_code != 200:
            raise MarketUnavailable(f"the price list answered HTTP {response.status_code}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_LIST_BYTES:
                raise MarketUnavailable(f"the price list is larger than {MAX_LIST_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


async def load_market(
    *,
    url: str | None = None,
    timeout: float = FETCH_TIMEOUT_S,  # noqa: ASYNC109 - httpx's per-request timeout
    now: float | None = None,
) -> MarketPrices:
    """The price list: from the day-old cache when fresh and from the same URL, else fetched
    (and cached). Raises MarketUnavailable (one line) when neither works."""
    import asyncio

    target = url or market_url()
    now = time.time() if now is None else now
    cached = await asyncio.to_thread(_read_cache, target, now)
    if cached is not None:
        try:
            return parse_list(cached)
        except MarketUnavailable:
            pass
    try:
        body = await _fetch(target, timeout)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        raise MarketUnavailable(f"cannot reach the price list ({type(exc).__name__})") from None
    prices = parse_list(body)
    await asyncio.to_thread(_write_cache, target, now, body)
    return prices


def _read_cache(url: str, now: float) -> bytes | None:
    path = cache_path()
    try:
        meta_raw, _, body = path.read_bytes().partition(b"\n")
        meta = json.loads(meta_raw)
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("url") != url:
        return None
    fetched = meta.get("fetched_at")
    if not isinstance(fetched, int | float) or not 0 <= now - fetched < CACHE_MAX_AGE_S:
        return None
    return body


def _write_cache(url: str, now: float, body: bytes) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(json.dumps({"url": url, "fetched_at": now}).encode() + b"\n" + body)
        os.replace(tmp, path)
    except OSError:
        pass
