"""Prices and earnings, in exact decimal arithmetic (PROTOCOL.md sections 4 and 8).

Money unit: integer micro-USD per 1,000,000 tokens (`500_000` = $0.50 per million). Users pay
`tokens x listed price`; the provider receives :data:`PROVIDER_SHARE` of it. For a BYOK backend
the operator still pays the upstream bill, so break-even needs `0.8 x price >= upstream`.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_CEILING, Decimal

__all__ = [
    "MICRO_PER_USD",
    "PROVIDER_SHARE",
    "byok_price",
    "format_usd_per_1m",
    "is_below_cost",
    "provider_earnings",
]

#: The provider's share of what users pay (the treasury keeps the rest).
PROVIDER_SHARE = Decimal("0.8")
MICRO_PER_USD = 1_000_000

# Enough digits that no realistic price is ever rounded before the final ceiling.
_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)


def _markup(markup: float | None) -> Decimal:
    # str() of a float is its shortest round-trip form: 0.05 -> Decimal("0.05"), exact.
    return Decimal(str(markup)) if markup else Decimal(0)


def byok_price(upstream: Decimal, markup: float | None) -> int:
    """The price to advertise for a BYOK model: `upstream / 0.8 x (1 + markup)`, rounded up to
    whole micro-USD per 1M, so the provider's share covers the upstream cost plus the markup.

    `upstream` is micro-USD per 1M tokens (may be fractional); `markup` None means 0.
    """
    if upstream < 0:
        raise ValueError("upstream price must not be negative")
    with decimal.localcontext(_CONTEXT):
        value = Decimal(upstream) / PROVIDER_SHARE * (1 + _markup(markup))
        return int(value.to_integral_value(rounding=ROUND_CEILING))


def provider_earnings(gross_micro: int | Decimal) -> Decimal:
    """The provider's part of what users paid (`gross_micro` micro-USD), exact."""
    with decimal.localcontext(_CONTEXT):
        return Decimal(gross_micro) * PROVIDER_SHARE


def is_below_cost(price: int, upstream: Decimal) -> bool:
    """True when selling at `price` earns less than the upstream cost (`0.8 x price < upstream`)."""
    with decimal.localcontext(_CONTEXT):
        return PROVIDER_SHARE * Decimal(price) < upstream


def format_usd_per_1m(micro: int | Decimal) -> str:
    """`500_000` -> "$0.50"; at least two decimals, more only when they carry a digit
    (`37_500` -> "$0.0375"), thousands separated (`1_234_500_000` -> "$1,234.50")."""
    with decimal.localcontext(_CONTEXT):
        usd = Decimal(micro) / MICRO_PER_USD
        sign = "-" if usd < 0 else ""
        usd = abs(usd)
        text = f"{usd.quantize(Decimal('0.01')):,f}"
        if usd != usd.quantize(Decimal("0.01")):
            exact = format(usd.normalize(), "f")
            whole, _, frac = exact.partition(".")
            text = f"{int(whole):,}.{frac}"
    return f"{sign}${text}"
