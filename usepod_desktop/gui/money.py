"""Prices in the UI: dollars per million tokens on screen, integer micro-USD in agent.toml.

`500_000` micro-USD per 1M tokens is shown and typed as `0.50`.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICRO_PER_USD = 1_000_000
#: Anything above this is a typo, not a price ($100,000 per million tokens).
MAX_MICRO = 100_000 * MICRO_PER_USD

try:  # the core's figure when it is there (PROTOCOL.md section 8: providers keep 80%)
    from usepod_desktop.core.pricing import PROVIDER_SHARE as _SHARE
except ImportError:  # pragma: no cover - before core/pricing.py lands
    _SHARE = 0.8
PROVIDER_SHARE = Decimal(str(_SHARE))


class PriceError(ValueError):
    """A price the user typed that cannot be stored; the message is shown next to the field."""


def parse_usd_per_1m(text: str) -> int:
    """`"0.50"` -> `500_000`. Accepts a leading `$` and a lone decimal comma (`0,50`).

    Refuses empty text, garbage, NaN/infinity, zero, negatives, more than 6 decimals (the
    smallest step is one micro-USD) and absurdly large values, each with a short message.
    """
    cleaned = text.strip().replace(" ", "")
    if cleaned.startswith("$"):
        cleaned = cleaned[1:]
    if not cleaned:
        raise PriceError("enter a price in dollars per million tokens, e.g. 0.50")
    if "," in cleaned and "." not in cleaned and cleaned.count(",") == 1:
        cleaned = cleaned.replace(",", ".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise PriceError(f"{text.strip()!r} is not a number (use e.g. 0.50)") from None
    if not value.is_finite():
        raise PriceError(f"{text.strip()!r} is not a number (use e.g. 0.50)")
    if value < 0:
        raise PriceError("a price cannot be negative")
    if value == 0:
        raise PriceError(
            "a price must be more than $0 (use the allow-list to stop offering a model)"
        )
    micro = value * MICRO_PER_USD
    if micro != micro.to_integral_value():
        raise PriceError("at most 6 decimals: $0.000001 per million tokens is the smallest step")
    if micro > MAX_MICRO:
        raise PriceError("that is more than $100,000 per million tokens; check the number")
    return int(micro)


def to_usd(micro: int | float | Decimal) -> Decimal:
    return Decimal(str(micro)) / MICRO_PER_USD


def format_usd_per_1m(micro: int | float | Decimal, *, dollar: bool = False) -> str:
    """`500_000` -> `0.50`; `123_456` -> `0.123456`; at least 2 decimals, no trailing zeros
    beyond them. Fractional micro-USD (upstream prices) are rounded to 6 decimals."""
    value = to_usd(micro).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    text = f"{value:f}"
    if "." in text:
        whole, frac = text.split(".")
        frac = frac.rstrip("0").ljust(2, "0")
        text = f"{whole}.{frac}"
    else:
        text += ".00"
    if text.startswith("-"):
        return f"-${text[1:]}" if dollar else text
    return f"${text}" if dollar else text


def format_usd(amount: Decimal | float, *, decimals: int | None = None) -> str:
    """An amount of money (not a rate). Small amounts keep enough decimals to be seen:
    `$12.35`, `$0.0123`, `$0.000006`, `$0.00`."""
    value = Decimal(str(amount))
    if decimals is None:
        size = abs(value)
        decimals = 2 if size >= 1 or size == 0 else 4 if size >= Decimal("0.01") else 6
    value = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
    return f"-${-value:f}" if value < 0 else f"${value:f}"


def provider_keeps(micro: int | float | Decimal) -> Decimal:
    """What the operator receives of a listed price (micro-USD per 1M)."""
    return Decimal(str(micro)) * PROVIDER_SHARE


def job_earnings_usd(
    input_tokens: int, output_tokens: int, input_per_1m: int, output_per_1m: int
) -> Decimal:
    """Estimated provider earnings of one job in dollars (the coordinator's count bills)."""
    micro = (Decimal(input_tokens) * input_per_1m + Decimal(output_tokens) * output_per_1m) / (
        MICRO_PER_USD
    )
    return provider_keeps(micro) / MICRO_PER_USD
