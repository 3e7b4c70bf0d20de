"""Money formatting and parsing: minor units in, a person's amount out, and back exactly."""

from decimal import Decimal

import pytest

from core.money import currency_digits, format_money, to_minor


@pytest.mark.parametrize("currency, digits", [("JPY", 0), ("USD", 2), ("EUR", 2), ("KWD", 3)])
def test_each_currency_has_its_own_number_of_decimal_digits(currency, digits):
    assert currency_digits(currency) == digits


@pytest.mark.parametrize("amount, currency, expected", [
    (1234, "USD", "$12.34"),
    (123456789, "USD", "$1,234,567.89"),
    (5, "USD", "$0.05"),
    (-500, "USD", "-$5.00"),
    (1234, "JPY", "¥1,234"),
    (1234, "KWD", "KWD1.234"),
    (0, "USD", "$0.00"),
])
def test_format_money_in_english(amount, currency, expected):
    assert format_money(amount, currency) == expected


def test_format_money_in_french_puts_the_symbol_after_a_non_breaking_space():
    assert format_money(1234, "EUR", locale="fr") == "12,34\u00a0€"
    assert format_money(123456789, "EUR", locale="fr") == "1\u202f234\u202f567,89\u00a0€"


@pytest.mark.parametrize("text, currency, minor", [
    ("12.34", "USD", 1234),
    ("12.3", "USD", 1230),
    ("12", "USD", 1200),
    ("12.340", "USD", 1234),
    (" 0.05 ", "USD", 5),
    ("-5", "USD", -500),
    ("1234", "JPY", 1234),
    ("1.234", "KWD", 1234),
    ("0.001", "KWD", 1),
])
def test_to_minor_parses_exactly(text, currency, minor):
    assert to_minor(text, currency) == minor


def test_to_minor_is_exact_where_floats_are_not():
    assert to_minor("0.29", "USD") == 29  # int(0.29 * 100) == 28
    assert to_minor("19999999999999999.99", "USD") == 1999999999999999999


@pytest.mark.parametrize("text, currency", [
    ("0.001", "USD"), ("1.5", "JPY"), ("1.2345", "KWD"),
])
def test_to_minor_refuses_more_decimals_than_the_currency_has(text, currency):
    with pytest.raises(ValueError, match="decimals"):
        to_minor(text, currency)


@pytest.mark.parametrize("text", ["", "abc", "12,34", "NaN", "Infinity", "$12"])
def test_to_minor_refuses_what_is_not_an_amount(text):
    with pytest.raises(ValueError, match="not an amount"):
        to_minor(text, "USD")


def test_to_minor_refuses_floats():
    with pytest.raises(TypeError):
        to_minor(12.34, "USD")


def test_unknown_currency_is_refused():
    with pytest.raises(ValueError, match="unknown currency"):
        to_minor("1", "XYZ")


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
def test_format_money_shows_what_to_minor_parsed(currency):
    minor = to_minor("1234", currency)
    assert Decimal(minor).scaleb(-currency_digits(currency)) == Decimal("1234")
    assert "1,234" in format_money(minor, currency)
