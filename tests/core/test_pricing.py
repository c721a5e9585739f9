"""BYOK pricing and money formatting: exact decimal arithmetic, rounded up."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from usepod_desktop.core.pricing import (
    PROVIDER_SHARE,
    byok_price,
    format_usd_per_1m,
    is_below_cost,
    provider_earnings,
)


def test_provider_share_is_eighty_percent() -> None:
    assert Decimal("0.8") == PROVIDER_SHARE


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
def test_byok_price_covers_cost_plus_markup_by_less_than_one_micro(
    upstream: Decimal, markup: float | None
) -> None:
    price = byok_price(upstream, markup)
    target = upstream / PROVIDER_SHARE * (1 + Decimal(str(markup or 0)))
    assert price >= target > price - 1
    assert not is_below_cost(price, upstream)


def test_byok_price_refuses_negative_upstream() -> None:
    with pytest.raises(ValueError):
        byok_price(Decimal(-1), None)


def test_is_below_cost() -> None:
    assert is_below_cost(1_000_000, Decimal(1_000_000))  # earns 800k, pays 1M
    assert not is_below_cost(1_250_000, Decimal(1_000_000))  # break-even exactly
    assert is_below_cost(1_249_999, Decimal(1_000_000))


def test_provider_earnings() -> None:
    assert provider_earnings(1_000_000) == Decimal(800_000)
    assert provider_earnings(Decimal("0.5")) == Decimal("0.4")


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (500_000, "$0.50"),
        (0, "$0.00"),
        (1_000_000, "$1.00"),
        (1_250_000, "$1.25"),
        (37_500, "$0.0375"),
        (1, "$0.000001"),
        (1_234_500_000, "$1,234.50"),
        (Decimal("1000000.000000"), "$1.00"),
        (Decimal("0.5"), "$0.0000005"),
        (-500_000, "-$0.50"),
    ],
)
def test_format_usd_per_1m(micro: int | Decimal, text: str) -> None:
    assert format_usd_per_1m(micro) == text
