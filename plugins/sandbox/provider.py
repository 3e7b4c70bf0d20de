"""The sandbox payment provider: test cards in, a ledger of charges and refunds out.

Everything it knows lives in its own tables (``models``), so charges made by an RQ worker,
faults injected by a test and the ledger a dashboard reads all agree across processes.
"""

import time
from collections import namedtuple

import peewee as pw
from flask import has_request_context, url_for
from itsdangerous import URLSafeTimedSerializer

from core.hookspecs import CardDetails, ChargeResult, RefundResult, TransientProviderError
from core.models import db, for_update, locked, new_id, utcnow
from plugins.sandbox.models import SandboxCharge, SandboxFault, SandboxToken

TestCard = namedtuple("TestCard", "number brand outcome token")

TEST_CARDS = (
    TestCard("4242424242424242", "visa", "succeeded", "pm_card_visa"),
    TestCard("5555555555554444", "mastercard", "succeeded", "pm_card_mastercard"),
    TestCard("4000000000000002", "visa", "card_declined", "pm_card_chargeDeclined"),
    TestCard("4000000000009995", "visa", "insufficient_funds", "pm_card_insufficientFunds"),
    TestCard("4000000000000069", "visa", "expired_card", "pm_card_chargeDeclinedExpiredCard"),
    TestCard("4000002760003184", "visa", "requires_action", "pm_card_threeDSecure2Required"),
)

DECLINES = {  # the provider's own words, kept in its ledger; customers read the core's
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "canceled": "The payment was canceled before the customer completed it.",
}

SETUP_SALT = "sandbox-setup"
SETUP_MAX_AGE = 3600

# What must match when an idempotency key comes back: the same request, not a new one.
_REQUEST_FIELDS = ("kind", "token", "charge_reference", "amount", "currency")


def luhn_valid(number: str) -> bool:
    """Whether a string of digits passes the Luhn checksum every card number carries."""
    total = 0
    for position, digit in enumerate(int(char) for char in reversed(number)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def find_test_card(source: str) -> TestCard:
    """The test card named by a test token or a test card number (spaces allowed).

    Raises ``ValueError`` with a message fit for the customer; it never repeats the number.
    """
    value = source.strip() if isinstance(source, str) else ""
    for card in TEST_CARDS:
        if value == card.token:
            return card
    number = value.replace(" ", "")
    if not (number.isdigit() and 12 <= len(number) <= 19 and luhn_valid(number)):
        raise ValueError("That is not a valid card number.")
    for card in TEST_CARDS:
        if number == card.number:
            return card
    raise ValueError("The sandbox only accepts test cards, such as 4242 4242 4242 4242.")


def setup_serializer(app) -> URLSafeTimedSerializer:
    """Signs the card form's state (customer and return URL) with the app's secret."""
    return URLSafeTimedSerializer(app.secret_key, salt=SETUP_SALT)


def _check_request(amount, currency, idempotency_key) -> str:
    """Refuse malformed requests (a bug in the caller, not a decline); return the currency."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"amount must be a positive whole number of minor units, not {amount!r}")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        raise ValueError(f"currency must be a 3-letter ISO-4217 code, not {currency!r}")
    if not (isinstance(idempotency_key, str) and idempotency_key):
        raise ValueError("an idempotency key is required")
    return currency.upper()


def _first(request: dict) -> SandboxCharge | None:
    """The entry already recorded under the request's key, if any: it must be for the same
    request, since a key reused for another one is a bug in the caller."""
    row = SandboxCharge.get_or_none(SandboxCharge.idempotency_key == request["idempotency_key"])
    if row and any(getattr(row, name) != request.get(name) for name in _REQUEST_FIELDS):
        raise ValueError(f"idempotency key {request['idempotency_key']!r} was already used "
                         f"for a different request")
    return row


def _record(**request) -> SandboxCharge:
    """Record an entry once per idempotency key: the unique column settles concurrent repeats,
    and every repeat gets the entry first recorded."""
    try:
        with locked():
            return SandboxCharge.create(**request)
    except pw.IntegrityError:
        return _first(request)


def _take_fault() -> SandboxFault | None:
    """Claim the oldest injected fault, if any; deleting it is the claim, so each fires once."""
    while True:
        fault = SandboxFault.select().order_by(SandboxFault.created_at, SandboxFault.id).first()
        if fault is None or SandboxFault.delete().where(SandboxFault.id == fault.id).execute():
            return fault


def _outcome(token: str) -> str:
    """How a charge on ``token`` ends: a sandbox token's recorded outcome, or a test token's."""
    for card in TEST_CARDS:
        if token == card.token:
            return card.outcome
    row = SandboxToken.get_or_none(SandboxToken.id == token)
    if row is None:
        raise ValueError(f"{token!r} is not a sandbox token: tokenize a test card first")
    return row.outcome


class SandboxProvider:
    """Card payments in test mode, with well-known test cards and no network."""

    name = "sandbox"
    modes = ("test",)

    def __init__(self, app):
        self.app = app

    def setup_url(self, *, customer, return_url: str) -> str:
        """The sandbox card form for ``customer``, carrying a signed state valid for an hour."""
        state = setup_serializer(self.app).dumps({"customer_id": customer.id,
                                                  "return_url": return_url})
        if has_request_context():
            return url_for("sandbox.new_card", state=state)
        path = self.app.url_map.bind("").build("sandbox.new_card", {"state": state})
        return self.app.config["BASE_URL"].rstrip("/") + path

    def tokenize(self, *, customer, source: str, exp_month: int | None = None,
                 exp_year: int | None = None) -> CardDetails:
        """Turn a test card number or test token into a sandbox token; the card form passes
        the expiry it read, otherwise the card expires in December five years from now. Its
        fingerprint is brand, last four and expiry: the same card saved twice is one card."""
        card = find_test_card(source)
        token = SandboxToken.create(brand=card.brand, last4=card.number[-4:], outcome=card.outcome,
                                    exp_month=exp_month or 12,
                                    exp_year=exp_year or utcnow().year + 5)
        return CardDetails(token=token.id, brand=token.brand, last4=token.last4,
                           exp_month=token.exp_month, exp_year=token.exp_year,
                           fingerprint=f"{token.brand}:{token.last4}:{token.exp_month:02d}/{token.exp_year}")

    def charge(self, *, payment_method, amount: int, currency: str, idempotency_key: str,
               description: str = "") -> ChargeResult:
        """Charge a saved sandbox card once per ``idempotency_key``; a declining test card
        gives a declined result, and an injected fault raises ``TransientProviderError``."""
        currency = _check_request(amount, currency, idempotency_key)
        if payment_method.provider != self.name:
            raise ValueError(f"payment method {payment_method.id} belongs to "
                             f"{payment_method.provider!r}, not the sandbox")
        outcome = _outcome(payment_method.provider_token)
        fault = _take_fault()
        if fault and not fault.after_commit:
            raise TransientProviderError("sandbox: simulated failure before the charge was made")
        declined = outcome not in ("succeeded", "requires_action")
        row = _record(kind="charge", idempotency_key=idempotency_key,
                      token=payment_method.provider_token, amount=amount, currency=currency,
                      description=description, status="declined" if declined else outcome,
                      reference=None if declined else new_id("sbx_ch"),
                      failure_code=outcome if declined else None,
                      failure_message=DECLINES.get(outcome))
        if fault:
            time.sleep(fault.hang_seconds)
            raise TransientProviderError("sandbox: simulated lost response after the charge")
        return self._result(row)

    def _result(self, row: SandboxCharge) -> ChargeResult:
        result = row.result()
        if result.status == "requires_action":
            return ChargeResult("requires_action", reference=row.reference,
                                action_url=self._url("sandbox.authenticate",
                                                     reference=row.reference))
        return result

    def _url(self, endpoint: str, **values) -> str:
        if has_request_context():
            return url_for(endpoint, **values)
        path = self.app.url_map.bind("").build(endpoint, values)
        return self.app.config["BASE_URL"].rstrip("/") + path

    def lookup(self, *, idempotency_key: str, reference: str | None = None,
               cancel: bool = False) -> ChargeResult | None:
        """The charge recorded under ``idempotency_key`` (else ``reference``), without charging;
        ``None`` if there is none. With ``cancel``, one still waiting for 3-D Secure is
        cancelled (it can no longer be completed) and answers ``None``: no money moved."""
        query = SandboxCharge.select().where(SandboxCharge.kind == "charge")
        row = (query.where(SandboxCharge.idempotency_key == idempotency_key).first()
               or (reference and query.where(SandboxCharge.reference == reference).first()))
        if not row:
            return None
        if cancel and row.status == "requires_action":
            finish_action(row.reference, succeed=False, code="canceled")
            row = row.refresh()
            if row.status == "declined":  # cancelled now: no money moved
                return None
        return self._result(row)

    def refund(self, *, reference: str, amount: int, currency: str,
               idempotency_key: str) -> RefundResult:
        """Refund (part of) a succeeded charge once per ``idempotency_key``, never more than
        what is left of it; a refusal is a failed result and is not recorded."""
        currency = _check_request(amount, currency, idempotency_key)
        request = {"kind": "refund", "idempotency_key": idempotency_key,
                   "charge_reference": reference, "amount": amount, "currency": currency}
        with locked():  # the charge's row lock serialises its refunds: none can over-refund it
            charge = for_update(SandboxCharge.select().where(
                SandboxCharge.reference == reference, SandboxCharge.kind == "charge",
                SandboxCharge.status == "succeeded")).first()
            if first := _first(request):
                return first.result()
            if charge is None:
                return RefundResult("failed", failure_message=f"No succeeded sandbox charge has "
                                                              f"the reference {reference!r}.")
            if currency != charge.currency:
                return RefundResult("failed", failure_message=f"The charge was made in "
                                                              f"{charge.currency}, not {currency}.")
            refunded = (SandboxCharge.select(pw.fn.COALESCE(pw.fn.SUM(SandboxCharge.amount), 0))
                        .where(SandboxCharge.charge_reference == reference,
                               SandboxCharge.kind == "refund", SandboxCharge.status == "succeeded")
                        .scalar())
            left = charge.amount - refunded
            if amount > left:
                return RefundResult("failed", failure_message=f"Only {left} of the charge is left "
                                                              f"to refund, not {amount}.")
            return _record(**request, status="succeeded", reference=new_id("sbx_re")).result()


def finish_action(reference: str, succeed: bool, code: str = "card_declined") -> ChargeResult | None:
    """The customer's 3-D Secure step on a waiting charge ends: ``succeed`` or not (``code``
    says why). Only a charge still waiting changes, once; returns the charge's outcome then,
    or ``None`` for an unknown reference."""
    changes = ({"status": "succeeded"} if succeed else
               {"status": "declined", "failure_code": code, "failure_message": DECLINES.get(code)})
    (SandboxCharge.update(**changes)
     .where(SandboxCharge.reference == reference, SandboxCharge.kind == "charge",
            SandboxCharge.status == "requires_action").execute())
    row = SandboxCharge.get_or_none(SandboxCharge.reference == reference)
    return row.result() if row else None


def fail_next(times: int = 1, after_commit: bool = False, hang: int = 0) -> None:
    """Make the next ``times`` charges, in any process, raise ``TransientProviderError``.

    With ``after_commit`` each charge is recorded as usual first, as when the provider's
    answer is lost on the way back: a retry with the same key gets the original charge.
    With ``hang`` seconds, the charge stalls after it is recorded, so a test can kill the
    worker in the middle of it.
    """
    with db.atomic():
        for _ in range(times):
            SandboxFault.create(after_commit=after_commit or hang > 0, hang_seconds=hang)


def ledger() -> list[SandboxCharge]:
    """Every ledger entry, charges and refunds, oldest first."""
    return list(SandboxCharge.select().order_by(SandboxCharge.created_at, SandboxCharge.id))


def charges(status: str | None = "succeeded") -> list[SandboxCharge]:
    """The charges in the ledger with ``status`` (``None``: all), oldest first."""
    query = SandboxCharge.select().where(SandboxCharge.kind == "charge")
    if status is not None:
        query = query.where(SandboxCharge.status == status)
    return list(query.order_by(SandboxCharge.created_at, SandboxCharge.id))
