"""core/money.py: the share, the BYOK price rule, nano-USD amounts, parsing and formatting.

Oracles are exact (`fractions.Fraction`); Python's `round()` of a Fraction is half to even,
the module's one rounding policy.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import usepod_desktop
from usepod_desktop.core.backends.base import UpstreamPrice
from usepod_desktop.core.config import ModelPrice, PricingConfig
from usepod_desktop.core.money import (
    PROVIDER_SHARE,
    SHARE_PERCENT,
    SHARE_TEXT,
    PriceError,
    byok_price,
    earnings_nusd,
    format_amount,
    format_rate,
    gross_nusd,
    is_below_cost,
    nusd_to_micro,
    nusd_to_usd,
    parse_usd_per_1m,
    provider_share_of,
    resolve_price,
    upstream_cost_nusd,
    usd_text,
)

SHARE = Fraction(4, 5)


def test_provider_share_is_eighty_percent() -> None:
    assert Decimal("0.8") == PROVIDER_SHARE
    assert (SHARE_PERCENT, SHARE_TEXT) == ("80%", "0.8")


# ---- the BYOK price rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "markup", "price"),
    [
        (Decimal(1_000_000), None, 1_250_000),
        (Decimal(1_000_000), 0.0, 1_250_000),
        (Decimal(1_000_000), 0.05, 1_312_500),
        (Decimal(1_000_000), 0.1, 1_375_000),  # 0.1 is not exact in binary; still exact here
        (Decimal(300_000), 0.05, 393_750),
        (Decimal(1), None, 2),  # 1.25 rounds UP
        (Decimal(4), None, 5),  # exactly 5: no rounding
        (Decimal("0.0001"), None, 1),
        (Decimal(0), 0.5, 0),
        (Decimal("123456.789"), 0.333, 205_710),  # 205709.8747... -> up
        # a markup too small for 28 or 60 digits still lifts a whole price by one micro-USD
        (Decimal(7_812_500), 1.175494351e-38, 9_765_626),
        (Decimal(4), 5e-324, 6),
    ],
)
def test_byok_price(upstream: Decimal, markup: float | None, price: int) -> None:
    assert byok_price(upstream, markup) == price


def test_byok_price_from_openrouter_string_is_exact() -> None:
    upstream = Decimal("0.000001") * 10**12  # "$0.000001 per token"
    assert upstream == 1_000_000
    assert byok_price(upstream, None) == 1_250_000


@given(
    upstream=st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False),
    markup=st.one_of(st.none(), st.floats(min_value=0, max_value=10, allow_nan=False)),
)
@example(upstream=Decimal(7_812_500), markup=1.175494351e-38)  # once flaky: 28-digit oracle
@example(upstream=Decimal(4), markup=5e-324)  # the smallest float
def test_byok_price_is_the_exact_ceiling_of_cost_plus_markup(
    upstream: Decimal, markup: float | None
) -> None:
    price = byok_price(upstream, markup)
    # the markup is the float's shortest decimal form (0.05 means 5%), taken exactly
    target = Fraction(upstream) / SHARE * (1 + Fraction(Decimal(str(markup or 0))))
    assert price == math.ceil(target)
    assert not is_below_cost(price, upstream)


def test_byok_price_refuses_negative_upstream() -> None:
    with pytest.raises(ValueError):
        byok_price(Decimal(-1), None)


def test_is_below_cost() -> None:
    assert is_below_cost(1_000_000, Decimal(1_000_000))  # earns 800k, pays 1M
    assert not is_below_cost(1_250_000, Decimal(1_000_000))  # break-even exactly
    assert is_below_cost(1_249_999, Decimal(1_000_000))


def test_provider_share_of() -> None:
    assert provider_share_of(1_000_000) == Decimal(800_000)
    assert provider_share_of(Decimal("0.5")) == Decimal("0.4")


# ---- which price a model gets ------------------------------------------------------------------

PRICING = PricingConfig(500_000, 750_000, {"mine": ModelPrice(2_000_000, 3_000_000)})
UPSTREAM = UpstreamPrice(Decimal(1_000_000), Decimal(2_000_000))


def test_a_local_model_gets_its_own_price_else_the_defaults() -> None:
    own = resolve_price("mine", None, PRICING, remote=False, markup=None)
    assert (own.price, own.source, own.warning) == (
        ModelPrice(2_000_000, 3_000_000),
        "explicit",
        None,
    )
    other = resolve_price("other", UPSTREAM, PRICING, remote=False, markup=0.5)
    assert (other.price, other.source) == (ModelPrice(500_000, 750_000), "default")
    free = resolve_price("x", None, PricingConfig(500_000, 0), remote=False, markup=None)
    assert free.price is None and free.reason == "price is 0 in [pricing]"
    assert free.warning == "x: price is 0 in [pricing]; not advertised"


def test_a_byok_model_gets_the_upstream_cost_over_the_share_plus_markup() -> None:
    choice = resolve_price("other", UPSTREAM, PRICING, remote=True, markup=0.05)
    assert choice.price == ModelPrice(1_312_500, 2_625_000)
    assert (choice.source, choice.below_cost, choice.warning) == ("upstream", False, None)
    unknown = resolve_price("other", None, PRICING, remote=True, markup=None)
    assert unknown.price is None and unknown.reason == "upstream price unknown"
    assert unknown.warning == (
        "other: upstream price unknown; not advertised (set a price in [pricing.models])"
    )
    free = resolve_price(
        "other", UpstreamPrice(Decimal(0), Decimal(0)), PRICING, remote=True, markup=None
    )
    assert free.price is None and free.reason == "free upstream"


def test_an_explicit_byok_price_below_cost_is_kept_and_flagged() -> None:
    pricing = PricingConfig(500_000, 750_000, {"mine": ModelPrice(1_000_000, 3_000_000)})
    choice = resolve_price("mine", UPSTREAM, pricing, remote=True, markup=0.5)
    assert (choice.price, choice.source, choice.below_cost) == (
        ModelPrice(1_000_000, 3_000_000),
        "explicit",
        True,
    )
    assert choice.warning == (
        "mine: below cost: your price $1.00 in / $3.00 out per 1M earns 80% of it, less than "
        "the upstream cost $1.00 in / $2.00 out per 1M"
    )
    fine = resolve_price("mine", UPSTREAM, PRICING, remote=True, markup=None)
    assert (fine.price, fine.below_cost, fine.warning) == (PRICING.models["mine"], False, None)


# ---- amounts (nano-USD) ----------------------------------------------------------------------


def exact_gross_micro(tokens: tuple[int, int], prices: tuple[int, int]) -> Fraction:
    """tokens x price in micro-USD, exact."""
    return Fraction(tokens[0] * prices[0] + tokens[1] * prices[1], 1_000_000)


@given(
    st.integers(0, 10_000_000),
    st.integers(0, 10_000_000),
    st.integers(0, 100_000_000),
    st.integers(0, 100_000_000),
)
def test_gross_is_tokens_times_price_and_earnings_80_percent(
    tin: int, tout: int, pin: int, pout: int
) -> None:
    exact = exact_gross_micro((tin, tout), (pin, pout))
    g = gross_nusd(tin, tout, pin, pout)
    e = earnings_nusd(tin, tout, pin, pout)
    # stored to the nano-dollar, half to even (Python's round() of a Fraction is half-even)
    assert g == round(exact * 1000)
    assert e == round(exact * 1000 * SHARE)
    # and therefore to the micro-dollar
    assert abs(Fraction(g, 1000) - exact) <= Fraction(1, 2000)
    assert abs(nusd_to_micro(e) - exact * SHARE) <= Fraction(1, 2) + Fraction(1, 2000)
    assert abs(nusd_to_micro(e) - round(exact * SHARE)) <= 1


def test_real_prices_are_exact() -> None:
    # $0.40 / $1.00 per 1M: 1234 in + 567 out = 493.6 + 567 = 1060.6 micro-USD
    assert gross_nusd(1234, 567, 400_000, 1_000_000) == 1_060_600
    assert earnings_nusd(1234, 567, 400_000, 1_000_000) == 848_480  # 0.8 x exactly
    # a fractional nano-dollar rounds half to even: 1 token at 2500 micro/1M = 2.5 nano
    assert gross_nusd(1, 0, 2500, 0) == 2
    assert gross_nusd(1, 0, 3500, 0) == 4
    # 1M input + 1M output tokens at $0.50 / $0.75: users pay $1.25, the provider keeps $1
    assert earnings_nusd(1_000_000, 1_000_000, 500_000, 750_000) == 1_000_000_000


def test_upstream_cost_uses_fractional_prices() -> None:
    price = UpstreamPrice(Decimal("150000.5"), Decimal("600000.25"))
    # 1000 x 150000.5 + 2000 x 600000.25 = 1_350_001_000 pico = 1_350_001 nano
    assert upstream_cost_nusd(1000, 2000, price) == 1_350_001
    # half a nano-dollar rounds to even
    assert upstream_cost_nusd(1, 0, UpstreamPrice(Decimal("2500"), Decimal(0))) == 2
    assert upstream_cost_nusd(1, 0, UpstreamPrice(Decimal("3500"), Decimal(0))) == 4


@given(st.integers(-(10**18), 10**18))
def test_nano_usd_converts_exactly(nusd: int) -> None:
    assert Fraction(nusd_to_usd(nusd)) == Fraction(nusd, 10**9)
    assert nusd_to_micro(nusd) == round(Fraction(nusd, 1000))
    whole, nano = divmod(abs(nusd), 10**9)
    assert usd_text(nusd) == f"{'-' if nusd < 0 else ''}{whole}.{nano:09d}"
    assert usd_text(None) is None


# ---- text --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micro", "text", "plain"),
    [
        (500_000, "$0.50", "0.50"),
        (0, "$0.00", "0.00"),
        (1_000_000, "$1.00", "1.00"),
        (1_250_000, "$1.25", "1.25"),
        (37_500, "$0.0375", "0.0375"),
        (123_456, "$0.123456", "0.123456"),
        (393_750, "$0.39375", "0.39375"),
        (1, "$0.000001", "0.000001"),
        (1_234_500_000, "$1,234.50", "1234.50"),
        (Decimal("1000000.000000"), "$1.00", "1.00"),
        (Decimal("0.5"), "$0.0000005", "0.0000005"),
        (-500_000, "-$0.50", "-0.50"),
    ],
)
def test_format_rate(micro: int | Decimal, text: str, plain: str) -> None:
    assert format_rate(micro) == text
    assert format_rate(micro, dollar=False) == plain


def test_format_rate_rounds_half_to_even_to_the_places_asked() -> None:
    assert format_rate(Decimal("0.5"), places=6) == "$0.00"  # half a micro-dollar: to even
    assert format_rate(Decimal("1.5"), places=6) == "$0.000002"
    assert format_rate(Decimal("123456.7891"), places=6) == "$0.123457"
    assert format_rate(Decimal("123456.7891"), dollar=False, places=6) == "0.123457"


@given(st.integers(1, 100_000 * 1_000_000))
def test_a_price_field_reads_back_what_it_shows(micro: int) -> None:
    assert parse_usd_per_1m(format_rate(micro, dollar=False)) == micro
    assert parse_usd_per_1m(format_rate(micro).replace(",", "")) == micro


def test_format_amount() -> None:
    assert format_amount(848_480) == "$0.000848"
    assert format_amount(12_345_678_901_234) == "$12,345.678901"
    assert format_amount(None) == "-"
    assert format_amount(-1_500_000_000, places=2) == "-$1.50"
    assert format_amount(312_000, places=9) == "$0.000312000"
    assert format_amount(5_000_000_000, places=0) == "$5"


@pytest.mark.parametrize(
    ("nusd", "text"),
    [
        (12_346_000_000, "$12.35"),
        (1_234_567_000_000, "$1,234.57"),
        (12_300_000, "$0.0123"),
        (6_100, "$0.000006"),
        (0, "$0.00"),
        (-12_346_000_000, "-$12.35"),
        # a tie at the last decimal shown rounds half to even, as everywhere
        (12_345_000_000, "$12.34"),
        (12_355_000_000, "$12.36"),
    ],
)
def test_format_amount_keeps_small_amounts_visible(nusd: int, text: str) -> None:
    assert format_amount(nusd, places=None) == text


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("0.50", 500_000),
        ("$1.25", 1_250_000),
        (" 0,75 ", 750_000),
        ("0.000001", 1),
        ("12", 12_000_000),
        ("100000", 100_000_000_000),
        ("0", 0),  # agent.toml's "not offered" (a file with it must survive a re-save)
        ("$0.00", 0),
    ],
)
def test_prices_in_dollars_become_micro_usd(text: str, micro: int) -> None:
    assert parse_usd_per_1m(text) == micro


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "enter a price"),
        ("  ", "enter a price"),
        ("abc", "not a number"),
        ("-1", "negative"),
        ("nan", "not a number"),
        ("NaN", "not a number"),
        ("inf", "not a number"),
        ("-inf", "not a number"),
        ("1e400", "more than $100,000"),
        ("100000.000001", "more than $100,000"),
        ("0.0000001", "at most 6 decimals"),
        ("1e-999999999", "at most 6 decimals"),  # not rounded to a price of 0
        ("1,000.50", "not a number"),
        ("1/2", "not a number"),
    ],
)
def test_bad_prices_are_refused_with_a_message(text: str, says: str) -> None:
    with pytest.raises(PriceError) as caught:
        parse_usd_per_1m(text)
    assert says in str(caught.value)


def test_the_share_is_written_once() -> None:
    """UI text builds "80%" and "÷ 0.8" from PROVIDER_SHARE; no other module spells them."""
    package = Path(usepod_desktop.__file__).parent
    literal = re.compile(r"\b80 ?%|[÷/] ?0\.8\b|0\.8 ?[x×]|Decimal\(\"0\.8\"\)")
    found = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "money.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if literal.search(line)
    ]
    assert found == []
