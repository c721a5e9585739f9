"""Money: the provider's share, the units, the price rule, earnings, parsing and formatting.

Everything about money is written here once; the ledger, discovery, the commands and the GUI
import it.

Units
-----
- **Prices** are integer **micro-USD per 1,000,000 tokens** (:data:`MicroPer1M`), as stored in
  agent.toml and sent on the wire: `500_000` is $0.50 per million tokens. An upstream (BYOK)
  price may be fractional, so it is an exact :class:`~decimal.Decimal` of the same unit.
- **Amounts** (what a job earned, grossed or cost upstream) are integer **nano-USD**
  (:data:`Nusd`, 1e-9 USD). `tokens x price` is an integer of pico-USD; it becomes nano-USD
  with integer arithmetic, rounded half to even, never through a float:

  - `gross_nusd    = round_half_even(exact_pusd / 1000)`
  - `earnings_nusd = round_half_even(exact_pusd x PROVIDER_SHARE / 1000)` (from the exact
    amount, not from the rounded gross)

  For every price that is a whole number of 10 micro-USD per 1M (all real listings) both are
  exact; otherwise each is within half a nano-dollar of the truth. These are **estimates**:
  the coordinator bills from its own token count.

The price rule
--------------
Users pay `tokens x listed price`; the provider receives :data:`PROVIDER_SHARE` of it. A BYOK
backend (OpenRouter, Venice) bills the operator upstream, so a BYOK model without a price of its
own is listed at `upstream / share x (1 + markup)` rounded **up** to a whole micro-USD
(:func:`byok_price`), and an explicit price whose share earns less than the upstream cost is
flagged (:func:`is_below_cost`); a BYOK price above :data:`MAX_MICRO` (a hostile or broken
upstream price list) is not advertised. :func:`resolve_price` is the whole rule for one model;
discovery and the settings window both call it. The rule's arithmetic is exact (a markup of
1e-300 still lifts a whole price); an upstream cost is computed to 60 digits, exact for any
real price list.

Rounding and text
-----------------
One policy: a figure is rounded only when it is shown with fewer decimals than it has, and then
**half to even** (the ledger's rule), to an explicit number of `places`.

- :func:`format_rate` shows a price per 1M tokens: `$0.50`, `$0.0375`, `$1,234.50`; at least two
  decimals, more only when they carry a digit; exact unless `places` is given.
  `dollar=False` gives the plain number a price field shows and :func:`parse_usd_per_1m` reads
  back (`0.50`, no `$`, no thousands separator).
- :func:`format_amount` shows nano-USD as dollars with `places` decimals (`$0.000312`), or with
  just enough decimals to be seen (`places=None`: `$12.35`, `$0.0123`, `$0.000006`).
- :data:`SHARE_PERCENT` ("80%") and :data:`SHARE_TEXT` ("0.8") are the share in UI text.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

if TYPE_CHECKING:  # config imports this module (prices, the ceiling): types only here
    from usepod_desktop.core.config import PricingConfig

__all__ = [
    "MAX_MICRO",
    "MICRO_PER_USD",
    "NANO_PER_MICRO",
    "NANO_PER_USD",
    "PICO_PER_NANO",
    "PROVIDER_SHARE",
    "SHARE_PERCENT",
    "SHARE_TEXT",
    "MicroPer1M",
    "ModelPrice",
    "Nusd",
    "PriceChoice",
    "PriceError",
    "UpstreamRates",
    "byok_price",
    "earnings_nusd",
    "format_amount",
    "format_rate",
    "gross_nusd",
    "is_below_cost",
    "nusd_to_micro",
    "nusd_to_usd",
    "parse_usd_per_1m",
    "provider_share_of",
    "resolve_price",
    "upstream_cost_nusd",
    "usd_text",
]

#: The provider's share of what users pay (the coordinator's treasury keeps the rest).
PROVIDER_SHARE = Decimal("0.8")
#: The share in UI text: "80%".
SHARE_PERCENT = f"{PROVIDER_SHARE:.0%}"
#: The share as a factor in UI text: "0.8" (as in "upstream ÷ 0.8").
SHARE_TEXT = f"{PROVIDER_SHARE}"

#: A price: integer micro-USD per 1,000,000 tokens (agent.toml, the wire).
MicroPer1M: TypeAlias = int
#: An amount: integer nano-USD (the ledger).
Nusd: TypeAlias = int

MICRO_PER_USD = 1_000_000
NANO_PER_USD = 1_000_000_000
NANO_PER_MICRO = 1_000
PICO_PER_NANO = 1_000
#: Anything above this is a typo, not a price ($100,000 per million tokens).
MAX_MICRO = 100_000 * MICRO_PER_USD

_SHARE_NUM, _SHARE_DEN = PROVIDER_SHARE.as_integer_ratio()
# Adding and multiplying in this context is exact (results get the digits they need). It is
# never used to divide: dividing by the share is multiplying by its exact inverse.
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC,
    traps=[decimal.Inexact, decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow],
)
_INVERSE_SHARE = Decimal(_SHARE_DEN) / Decimal(_SHARE_NUM)  # 1.25, exact
assert _INVERSE_SHARE * PROVIDER_SHARE == 1, "the share must have a finite decimal inverse"
# Upstream prices come from untrusted price lists: 60 digits are exact for every real price and
# bound the work for an absurd one (it raises instead).
_WIDE = decimal.Context(prec=60, Emin=decimal.MIN_EMIN, Emax=decimal.MAX_EMAX)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's price pair (agent.toml `[pricing]`, the wire), micro-USD per 1M tokens."""

    input_per_1m: MicroPer1M
    output_per_1m: MicroPer1M


class PriceError(ValueError):
    """A price the user typed that cannot be stored; the message is shown next to the field."""


class UpstreamRates(Protocol):
    """An upstream price (`core.backends.base.UpstreamPrice`): micro-USD per 1M, exact."""

    @property
    def input_per_1m(self) -> Decimal: ...

    @property
    def output_per_1m(self) -> Decimal: ...


# ---------------------------------------------------------------------------------------------
# The price rule


def _markup(markup: float | None) -> Decimal:
    # str() of a float is its shortest round-trip form: 0.05 -> Decimal("0.05"), exact.
    return Decimal(str(markup)) if markup else Decimal(0)


def byok_price(upstream: Decimal, markup: float | None) -> MicroPer1M:
    """The price to advertise for a BYOK model: `upstream / share x (1 + markup)`, rounded up to
    whole micro-USD per 1M, so the provider's share covers the upstream cost plus the markup.

    `upstream` is micro-USD per 1M tokens (may be fractional); `markup` None means 0. Exact:
    a markup of 1e-300 still lifts a price that is otherwise a whole number.
    """
    if upstream < 0:
        raise ValueError("upstream price must not be negative")
    factor = _EXACT.add(Decimal(1), _markup(markup))
    value = _EXACT.multiply(_EXACT.multiply(Decimal(upstream), _INVERSE_SHARE), factor)
    return int(value.to_integral_value(rounding=ROUND_CEILING, context=_EXACT))


def is_below_cost(price: int, upstream: Decimal) -> bool:
    """True when selling at `price` earns less than the upstream cost (`share x price <
    upstream`)."""
    return _EXACT.multiply(PROVIDER_SHARE, Decimal(price)) < upstream


def provider_share_of(micro: int | Decimal) -> Decimal:
    """The provider's part of a price or amount (`micro` in any unit), exact."""
    return _EXACT.multiply(Decimal(micro), PROVIDER_SHARE)


PriceSource = Literal["explicit", "default", "upstream"]


@dataclass(frozen=True, slots=True)
class PriceChoice:
    """What :func:`resolve_price` decided for one model."""

    #: The price to advertise; None: the model is not advertised.
    price: ModelPrice | None
    #: Where the price comes from: a `[pricing.models]` entry, the defaults, the upstream cost.
    source: PriceSource | None
    #: An explicit price whose share earns less than the upstream cost.
    below_cost: bool = False
    #: Why the model is not advertised, short ("upstream price unknown"); None when it is.
    reason: str | None = None
    #: The line discovery reports for this model (None: nothing to say).
    warning: str | None = None


def _pair(price_in: int | Decimal, price_out: int | Decimal) -> str:
    return f"{format_rate(price_in)} in / {format_rate(price_out)} out per 1M"


def _not_offered(model_id: str, reason: str, where: str) -> PriceChoice:
    return PriceChoice(None, None, reason=reason, warning=f"{model_id}: {reason}; {where}")


def resolve_price(
    model_id: str,
    upstream: UpstreamRates | None,
    pricing: PricingConfig,
    *,
    remote: bool,
    markup: float | None,
) -> PriceChoice:
    """The price a model is advertised at (the rule in the module docs).

    A local backend's model (`remote` False) gets the reference rule: its `[pricing.models]`
    entry, else the defaults; a 0 price means it is not advertised. A BYOK model (`remote`
    True, with the backend entry's `markup`) gets its explicit price when there is one (flagged
    when below the `upstream` cost), else :func:`byok_price` of the upstream cost, else (cost
    unknown, or free) it is not advertised.
    """
    explicit = pricing.models.get(model_id)
    if not remote:
        price = pricing.for_model(model_id)
        if price.input_per_1m == 0 or price.output_per_1m == 0:
            return _not_offered(model_id, "price is 0 in [pricing]", "not advertised")
        return PriceChoice(price, "explicit" if explicit is not None else "default")
    if explicit is not None:
        if explicit.input_per_1m == 0 or explicit.output_per_1m == 0:
            return _not_offered(model_id, "price is 0 in [pricing.models]", "not advertised")
        if upstream is None or not (
            is_below_cost(explicit.input_per_1m, upstream.input_per_1m)
            or is_below_cost(explicit.output_per_1m, upstream.output_per_1m)
        ):
            return PriceChoice(explicit, "explicit")
        warning = (
            f"{model_id}: below cost: your price "
            f"{_pair(explicit.input_per_1m, explicit.output_per_1m)} earns {SHARE_PERCENT} "
            "of it, less than the upstream cost "
            f"{_pair(upstream.input_per_1m, upstream.output_per_1m)}"
        )
        return PriceChoice(explicit, "explicit", below_cost=True, warning=warning)
    hint = "not advertised (set a price in [pricing.models])"
    if upstream is None:
        return _not_offered(model_id, "upstream price unknown", hint)
    price = ModelPrice(
        byok_price(upstream.input_per_1m, markup), byok_price(upstream.output_per_1m, markup)
    )
    if price.input_per_1m == 0 or price.output_per_1m == 0:
        return _not_offered(model_id, "free upstream", hint)
    if price.input_per_1m > MAX_MICRO or price.output_per_1m > MAX_MICRO:
        # the upstream's model list is another party's answer: a price no listing could
        # sell at is a broken (or hostile) answer, never something to advertise
        reason = f"upstream price implausible (above {format_rate(MAX_MICRO)} per 1M)"
        return _not_offered(model_id, reason, hint)
    return PriceChoice(price, "upstream")


# ---------------------------------------------------------------------------------------------
# Amounts (nano-USD)


def _div_half_even(num: int, den: int) -> int:
    """`num / den` rounded half to even, in integers (`den` > 0)."""
    q, r = divmod(num, den)
    twice = 2 * r
    if twice > den or (twice == den and q % 2 == 1):
        q += 1
    return q


def _exact_pusd(
    input_tokens: int, output_tokens: int, input_per_1m: int, output_per_1m: int
) -> int:
    return input_tokens * input_per_1m + output_tokens * output_per_1m


def gross_nusd(
    input_tokens: int, output_tokens: int, input_per_1m: MicroPer1M, output_per_1m: MicroPer1M
) -> Nusd:
    """What the user is billed (tokens x price), nano-USD, rounded half to even."""
    exact = _exact_pusd(input_tokens, output_tokens, input_per_1m, output_per_1m)
    return _div_half_even(exact, PICO_PER_NANO)


def earnings_nusd(
    input_tokens: int, output_tokens: int, input_per_1m: MicroPer1M, output_per_1m: MicroPer1M
) -> Nusd:
    """The provider's share of the exact billed amount, nano-USD, half to even."""
    exact = _exact_pusd(input_tokens, output_tokens, input_per_1m, output_per_1m)
    return _div_half_even(exact * _SHARE_NUM, _SHARE_DEN * PICO_PER_NANO)


def upstream_cost_nusd(input_tokens: int, output_tokens: int, price: UpstreamRates) -> Nusd:
    """What the operator pays upstream for a job, nano-USD, half to even."""
    pusd = _WIDE.add(
        _WIDE.multiply(Decimal(input_tokens), Decimal(price.input_per_1m)),
        _WIDE.multiply(Decimal(output_tokens), Decimal(price.output_per_1m)),
    )
    nusd = _WIDE.divide(pusd, Decimal(PICO_PER_NANO))
    return int(nusd.quantize(Decimal(1), rounding=ROUND_HALF_EVEN, context=_WIDE))


def nusd_to_usd(nusd: Nusd) -> Decimal:
    """Nano-USD as an exact Decimal of dollars."""
    return Decimal(nusd).scaleb(-9, context=_EXACT)


def nusd_to_micro(nusd: Nusd) -> int:
    """Nano-USD to whole micro-USD (USDC micro-units), half to even."""
    return _div_half_even(nusd, NANO_PER_MICRO)


def usd_text(nusd: Nusd | None) -> str | None:
    """Exact dollars as a string with 9 decimals (`"0.000312000"`), for JSON and CSV."""
    return None if nusd is None else f"{nusd_to_usd(nusd):.9f}"


# ---------------------------------------------------------------------------------------------
# Text


def _round(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN, context=_WIDE)


def format_amount(nusd: Nusd | None, places: int | None = 6) -> str:
    """Nano-USD as dollars: `$0.000312` (`places` decimals, half to even, thousands separated);
    `-` for None. `places=None` keeps just enough decimals for a small amount to be seen: 2 from
    $1 (and for 0), 4 from $0.01, else 6 (`$12.35`, `$0.0123`, `$0.000006`)."""
    if nusd is None:
        return "-"
    usd = nusd_to_usd(nusd)
    if places is None:
        size = abs(usd)
        places = 2 if size >= 1 or size == 0 else 4 if size >= Decimal("0.01") else 6
    value = _round(usd, places)
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{places}f}"


def format_rate(micro: int | Decimal, *, dollar: bool = True, places: int | None = None) -> str:
    """A price in micro-USD per 1M as dollars per 1M: `500_000` -> `$0.50`, `37_500` ->
    `$0.0375`, `1_234_500_000` -> `$1,234.50`. At least two decimals, more only when they
    carry a digit: exact, or rounded half to even to `places` decimals (fractional upstream
    prices). `dollar=False`: the plain number of a price field (`0.50`, `1234.50`), which
    :func:`parse_usd_per_1m` reads back."""
    usd = Decimal(micro).scaleb(-6, context=_WIDE)
    if places is not None:
        usd = _round(usd, places)
    sign = "-" if usd < 0 else ""
    usd = abs(usd).normalize(context=_WIDE)
    if usd.as_tuple().exponent >= -2:  # whole cents: exactly two decimals
        text = format(usd.quantize(Decimal("0.01"), context=_WIDE), ",f" if dollar else "f")
    else:
        whole, _, frac = format(usd, "f").partition(".")
        text = f"{Decimal(whole):,}.{frac}" if dollar else f"{whole}.{frac}"
    return f"{sign}${text}" if dollar else f"{sign}{text}"


def parse_usd_per_1m(text: str) -> MicroPer1M:
    """`"0.50"` -> `500_000`. Accepts a leading `$` and a lone decimal comma (`0,50`).

    Refuses empty text, garbage, NaN/infinity, negatives, more than 6 decimals (the smallest
    step is one micro-USD) and absurdly large values, each with a short message. Zero is a
    price, as in agent.toml: the model is not offered (:func:`resolve_price`).
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
    if value > MAX_MICRO // MICRO_PER_USD:
        raise PriceError("that is more than $100,000 per million tokens; check the number")
    micro = value.scaleb(6, context=_WIDE)  # at most $100,000: never rounded
    if micro != micro.to_integral_value():
        raise PriceError("at most 6 decimals: $0.000001 per million tokens is the smallest step")
    return int(micro)
