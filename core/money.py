"""Money for people: Portico keeps every amount as integer minor units of its currency
(cents, yen, fils); this module formats such amounts for a locale and parses typed ones back.

Each currency has its own number of decimal digits (JPY 0, USD 2, KWD 3), taken from Babel's
CLDR data, and the arithmetic is exact: ``Decimal``, never a float.
"""

from decimal import Decimal, InvalidOperation

from babel.numbers import (
    UnknownCurrencyError,
    format_currency,
    get_currency_precision,
    validate_currency,
)


def currency_digits(currency: str) -> int:
    """The number of decimal digits of ``currency`` (ISO 4217); ``ValueError`` if unknown."""
    try:
        validate_currency(currency)
    except UnknownCurrencyError:
        raise ValueError(f"unknown currency {currency!r}") from None
    return get_currency_precision(currency)


def format_money(amount: int, currency: str, locale: str = "en") -> str:
    """``amount`` minor units of ``currency`` as a person in ``locale`` writes it:
    ``format_money(1234, "USD")`` is ``"$12.34"``, in ``"fr"`` with EUR ``"12,34 €"``."""
    value = Decimal(amount).scaleb(-currency_digits(currency))
    return format_currency(value, currency, locale=locale)


def to_minor(amount: str, currency: str) -> int:
    """Parse a decimal string such as ``"12.34"`` into minor units of ``currency`` (1234).

    Exact or refused: more decimals than the currency has (``"0.001"`` USD), text that is
    not a number, and floats raise rather than round.
    """
    if not isinstance(amount, str):
        raise TypeError(f"amount must be a decimal string such as '12.34', "
                        f"not {type(amount).__name__}")
    try:
        value = Decimal(amount.strip())
    except InvalidOperation:
        raise ValueError(f"{amount!r} is not an amount") from None
    if not value.is_finite():
        raise ValueError(f"{amount!r} is not an amount")
    minor = value.scaleb(currency_digits(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount!r} has more decimals than {currency} allows")
    return int(minor)
