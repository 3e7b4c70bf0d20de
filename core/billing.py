"""Money movements and the subscription state machine; views, the API and jobs all call here.

Every change happens in one locked transaction that also records its events (the outbox), so
a notification exists exactly when the change does. Charges are exactly-once: a payment row
with a unique idempotency key is written first, the provider is called outside any
transaction with that key, and the outcome is settled under a row lock, once.

Rounding rule: tax and proration are computed on integers and rounded half up to the minor
unit; invoice lines always add up to the amount charged.
"""

import hashlib
import json
import logging
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from dateutil.relativedelta import relativedelta
from flask import current_app
from peewee import JOIN, IntegrityError, fn

from core import idempotency, license_terms, payloads
from core.events import emit, redispatch
from core.hookspecs import ChargeResult, RefundResult
from core.jobs import enqueue, later, queue, transaction
from core.models import (
    Business,
    CancellationRequest,
    CreditNoteSequence,
    Customer,
    Discount,
    Invoice,
    InvoicePdf,
    InvoiceSequence,
    Payment,
    PaymentMethod,
    Product,
    Refund,
    Subscription,
    for_update,
    is_sqlite,
    new_id,
    utcnow,
)

log = logging.getLogger("portico.billing")

STALE_CHARGE = timedelta(minutes=15)  # a processing charge this old has lost its job


class BillingError(Exception):
    """A refused billing action: nothing was changed. ``code`` is stable (Dodo's where one exists)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# --- Amounts ---------------------------------------------------------------------------------


def round_half_up(value: Fraction) -> int:
    return int(value + Fraction(1, 2)) if value >= 0 else -int(-value + Fraction(1, 2))


def split_tax(amount: int, rate_bps: int, inclusive: bool) -> tuple[int, int]:
    """``(total, tax)`` for ``amount`` minor units at ``rate_bps`` basis points of tax;
    an inclusive amount already holds its tax, an exclusive one gets it added."""
    if inclusive:
        net = round_half_up(Fraction(amount * 10000, 10000 + rate_bps))
        return amount, amount - net
    tax = round_half_up(Fraction(amount * rate_bps, 10000))
    return amount + tax, tax


def _charge_for(lines: list[dict], rate_bps: int, inclusive: bool, credit: int = 0) -> dict:
    """What a charge of ``lines`` costs: ``{amount, tax, total, credit_applied, tax_inclusive,
    lines}``. The lines are as sold (gross when ``inclusive``, net otherwise), each one unit
    price × quantity to the cent; tax is computed once on their sum (``split_tax``); up to
    ``total`` of ``credit`` is taken off what is charged (``amount``), as Stripe applies a
    customer balance after tax."""
    total, tax = split_tax(sum(line["amount"] for line in lines), rate_bps, inclusive)
    applied = min(max(credit, 0), total)
    return {"amount": total - applied, "tax": tax, "total": total, "credit_applied": applied,
            "tax_inclusive": inclusive, "lines": lines}


def line(kind: str | None, name: str, quantity: int, unit_amount: int, **facts) -> dict:
    """An invoice line: ``quantity`` × ``unit_amount`` minor units is its ``amount``, exactly."""
    return {"description": name, "kind": kind, "product_name": name, "quantity": quantity,
            "unit_amount": unit_amount, "amount": unit_amount * quantity, **facts}


# --- Prices -----------------------------------------------------------------------------------
# A price is what one billing period of a plan costs, as a dict: ``product_id``,
# ``product_name``, ``quantity``, ``unit_amount`` (as sold: tax included when
# ``tax_inclusive``), ``tax_rate_bps``, ``tax_inclusive``, ``currency``,
# ``payment_frequency_count``/``_interval`` and ``addons`` [{addon_id, name, quantity,
# unit_amount}]. A subscription records its own (``recorded_price``), copied from the
# catalogue (``catalogue_price``) at purchase and at each plan change; renewals charge it.


def catalogue_price(product: Product, quantity: int, addons=()) -> dict:
    """The price a sale of ``product`` × ``quantity`` with ``addons`` ([{addon_id, quantity}])
    gets today, from the catalogue."""
    from core.models import Addon

    ids = [item["addon_id"] for item in addons]
    found = {addon.id: addon for addon in Addon.select().where(Addon.id.in_(ids))} if ids else {}
    return {"product_id": product.id, "product_name": product.name, "quantity": quantity,
            "unit_amount": product.price, "tax_rate_bps": product.tax_rate_bps,
            "tax_inclusive": product.tax_inclusive, "currency": product.currency,
            "payment_frequency_count": product.payment_frequency_count,
            "payment_frequency_interval": product.payment_frequency_interval,
            "addons": [{"addon_id": item["addon_id"], "name": found[item["addon_id"]].name,
                        "quantity": int(item["quantity"]),
                        "unit_amount": found[item["addon_id"]].price} for item in addons]}


def recorded_price(sub: Subscription) -> dict:
    """The price ``sub`` records: what it was sold at (or moved to since)."""
    return {"product_id": sub.product_id, "product_name": sub.product.name,
            "quantity": sub.quantity, "unit_amount": sub.unit_amount,
            "tax_rate_bps": sub.tax_rate_bps, "tax_inclusive": sub.tax_inclusive,
            "currency": sub.currency, "payment_frequency_count": sub.payment_frequency_count,
            "payment_frequency_interval": sub.payment_frequency_interval,
            "addons": [dict(item) for item in sub.addons]}


def price_lines(price: dict, kind: str | None = None) -> list[dict]:
    """One billing period of ``price`` as invoice lines: the plan, then each add-on."""
    return [line(kind, price["product_name"], price["quantity"], price["unit_amount"])] + [
        line(kind, item.get("name") or item["addon_id"], item["quantity"], item["unit_amount"],
             addon_id=item["addon_id"])
        for item in price["addons"]]


def price_charge(price: dict, kind: str | None = None, credit: int = 0,
                 discount: dict | None = None) -> dict:
    """One billing period of ``price`` as a charge (``_charge_for``), less ``discount`` (a
    subscription's, see ``discount_line``) when given."""
    lines = price_lines(price, kind)
    off = discount_line(lines, discount) if discount else None
    return _charge_for(lines + ([off] if off else []), price["tax_rate_bps"],
                       price["tax_inclusive"], credit)


def _record_price(sub: Subscription, price: dict):
    """Make ``price`` the subscription's own (its product, quantity, amounts, cycle)."""
    sub.product, sub.quantity = price["product_id"], price["quantity"]
    sub.unit_amount, sub.tax_rate_bps = price["unit_amount"], price["tax_rate_bps"]
    sub.tax_inclusive, sub.addons = price["tax_inclusive"], price["addons"]
    sub.payment_frequency_count = price["payment_frequency_count"]
    sub.payment_frequency_interval = price["payment_frequency_interval"]
    sub.recurring_pre_tax_amount = sum(item["amount"] for item in price_lines(price))


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _with_price_change(price: dict, change: dict) -> dict:
    """``price`` moved to the amounts of an announced price change (same plan, same cycle)."""
    amounts = {item["addon_id"]: item["unit_amount"] for item in change.get("addons", ())}
    return {**price, "unit_amount": change["unit_amount"], "tax_rate_bps": change["tax_rate_bps"],
            "tax_inclusive": change["tax_inclusive"],
            "addons": [{**item, "unit_amount": amounts.get(item["addon_id"], item["unit_amount"])}
                       for item in price["addons"]]}


def renewal_price(sub: Subscription) -> dict:
    """The price the next renewal charges: a plan change scheduled for it, else the recorded
    price, moved to an announced new price when that applies by then."""
    change = sub.scheduled_change
    if change:
        return change.get("price") or catalogue_price(
            Product.get_by_id(change["product_id"]), change["quantity"], sub.addons)
    price = recorded_price(sub)
    if sub.price_change and _when(sub.price_change["effective_at"]) <= sub.next_billing_date:
        price = _with_price_change(price, sub.price_change)
    return price


def next_charge(sub: Subscription) -> dict:
    """What the next renewal will charge (``_charge_for``'s answer, discount and credit
    applied): the amount the subscription page shows is this, and so is the renewal's."""
    discount = current_discount(sub)
    if (discount and sub.scheduled_change and not discount.get("preserve_on_plan_change")
            and sub.scheduled_change["product_id"] != sub.product_id):
        discount = None  # the plan change the renewal applies drops it
    return price_charge(renewal_price(sub), "renewal", sub.credit_balance, discount)


# --- Discounts ---------------------------------------------------------------------------------
# A subscription given a discount keeps it as it was then (``Subscription.discount``), as it
# keeps its price: a later change of the code applies to later subscriptions. Each full
# period it is charged for (the first payment, renewals, arrears of a renewal) has the
# discount as its own negative invoice line, taken off the lines as sold before tax is
# worked out on what is left (for tax-inclusive prices, off the gross amount, whose tax is
# then split out of the smaller total); ``discount_cycles_remaining`` counts down each time
# such a charge is paid, and at 0 the charges stop having it. Charges of a plan change are
# not discounted; moving to another product drops the discount unless the code says
# ``preserve_on_plan_change`` (Dodo's rule), while a quantity or add-on change keeps it.

def discount_line(lines: list[dict], discount: dict) -> dict | None:
    """The negative line ``discount`` adds to ``lines``: ``amount`` basis points of their sum
    (percentage, rounded half up) or ``amount`` minor units (flat), never more than their sum,
    so a charge never goes below zero; ``None`` when nothing comes off."""
    subtotal = sum(item["amount"] for item in lines)
    if discount["type"] == "percentage":
        off = round_half_up(Fraction(subtotal * discount["amount"], 10000))
    else:
        off = discount["amount"]
    off = min(off, max(subtotal, 0))
    if off <= 0:
        return None
    name = discount.get("name") or discount["code"]
    return line("discount", name, 1, -off, description=f"Discount: {name}",
                discount_id=discount["discount_id"],
                discount_code=discount["code"], discount_type=discount["type"],
                discount_amount=discount["amount"])


def current_discount(sub: Subscription) -> dict | None:
    """The discount ``sub``'s next full-period charge takes off, if any cycles are left."""
    if not sub.discount or sub.discount_cycles_remaining == 0:
        return None
    return sub.discount


def find_discount(business_id: str, mode: str, code: str) -> Discount:
    """The discount with this ``code`` (any case) in the business and mode, else
    ``DISCOUNT_CODE_NOT_FOUND``."""
    found = Discount.get_or_none((Discount.business == business_id) & (Discount.mode == mode)
                                 & (Discount.code == code.strip().upper()))
    if found is None:
        raise BillingError("DISCOUNT_CODE_NOT_FOUND", f"no discount has the code {code.strip()[:64]}")
    return found


def check_discount(discount: Discount, product: Product, now: datetime | None = None):
    """Refuse ``discount`` for a subscription to ``product`` when it is not yet valid
    (``DISCOUNT_CODE_NOT_STARTED``), expired (``DISCOUNT_CODE_EXPIRED``), used up
    (``DISCOUNT_USAGE_LIMIT_REACHED``) or restricted to other products
    (``DISCOUNT_NOT_APPLICABLE``)."""
    now = now or utcnow()
    if discount.business_id != product.business_id or discount.mode != product.mode:
        raise BillingError("DISCOUNT_CODE_NOT_FOUND", "no such discount")
    if discount.starts_at and discount.starts_at > now:
        raise BillingError("DISCOUNT_CODE_NOT_STARTED",
                           f"the discount code {discount.code} is not valid yet")
    if discount.expires_at and discount.expires_at <= now:
        raise BillingError("DISCOUNT_CODE_EXPIRED", f"the discount code {discount.code} has expired")
    if discount.usage_limit is not None and discount.times_used >= discount.usage_limit:
        raise BillingError("DISCOUNT_USAGE_LIMIT_REACHED",
                           f"the discount code {discount.code} has been used its "
                           f"{discount.usage_limit} time(s)")
    if discount.restricted_to and product.id not in discount.restricted_to:
        raise BillingError("DISCOUNT_NOT_APPLICABLE",
                           f"the discount code {discount.code} does not apply to {product.name}")


def save_discount(discount: Discount) -> Discount:
    """Save a new or changed discount code (upper-cased; 16 random characters when it has
    none), else ``DISCOUNT_CODE_ALREADY_EXISTS`` when another discount of the business and mode
    has its code."""
    discount.code = (discount.code or "".join(
        secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))).upper()
    discount.updated_at = utcnow()
    try:
        with transaction():
            discount.save()
    except IntegrityError:
        raise BillingError("DISCOUNT_CODE_ALREADY_EXISTS",
                           f"another discount has the code {discount.code}") from None
    return discount


def _claim_discount(discount: Discount, product: Product) -> dict:
    """Count one more subscription given ``discount`` (checked first, see ``check_discount``),
    in one conditional update so that concurrent uses never pass its usage limit; returns
    what the subscription keeps of it."""
    check_discount(discount, product)
    counted = (Discount.update(times_used=Discount.times_used + 1, updated_at=utcnow())
               .where((Discount.id == discount.id)
                      & (Discount.usage_limit.is_null() | (Discount.times_used < Discount.usage_limit)))
               .execute())
    if not counted:
        raise BillingError("DISCOUNT_USAGE_LIMIT_REACHED",
                           f"the discount code {discount.code} has been used its "
                           f"{discount.usage_limit} time(s)")
    return {"discount_id": discount.id, "code": discount.code, "name": discount.name,
            "type": discount.type, "amount": discount.amount,
            "subscription_cycles": discount.subscription_cycles,
            "preserve_on_plan_change": discount.preserve_on_plan_change}


def apply_discount(subscription: Subscription, discount: Discount,
                   event_data: dict | None = None) -> Subscription:
    """Give an existing subscription ``discount``, from its next renewal on, for the
    discount's ``subscription_cycles`` (replacing any discount it had). Refused as
    ``check_discount`` says, and for a subscription that has ended
    (``SUBSCRIPTION_INACTIVE``). Emits ``subscription.updated``, with ``event_data`` added
    to its payload (the cancel flow's retention offer accepted)."""
    with transaction():
        sub = _locked_subscription(subscription.id)
        if sub.status not in ("pending", "active", "on_hold", "paused"):
            raise BillingError("SUBSCRIPTION_INACTIVE",
                               f"the subscription is {sub.status}: it cannot be given a discount")
        sub.discount = _claim_discount(discount, sub.product)
        sub.discount_cycles_remaining = discount.subscription_cycles
        sub.updated_at = utcnow()
        sub.save()
        _emit_subscription("subscription.updated", sub, **(event_data or {}))
    return sub


def _count_discounted_cycle(payment: Payment, sub: Subscription):
    """A paid charge that had the discount line uses up one of the discount's cycles."""
    if (sub.discount_cycles_remaining
            and any(item.get("kind") == "discount" for item in payment.metadata.get("lines", ()))):
        sub.discount_cycles_remaining -= 1


def plan_lines(product: Product, quantity: int, addons=(), label: str | None = None,
               kind: str | None = None) -> list[dict]:
    """The lines of one billing period of ``product`` × ``quantity`` plus add-ons, at today's
    catalogue prices.

    Each line keeps its facts beside the English ``description`` shown today, so that it can be
    worded at render time in the reader's language: ``kind`` (``first_payment``, ``renewal``,
    ``arrears``, ``plan_change``, ``plan_period``, ``purchase``, ``refund``), ``product_name``,
    ``quantity``, ``unit_amount``, ``amount`` and, once known, ``period_start``/``period_end``
    (ISO, UTC)."""
    lines = price_lines(catalogue_price(product, quantity, addons), kind)
    if label:
        lines[0]["description"] = label
    return lines


def with_period(lines: list[dict], start: datetime | None, end: datetime | None,
                kind: str | None = None) -> list[dict]:
    """``lines`` paying for the service period ``start``–``end``: every line carries the
    period as facts, and the plan's line (the first) says it in its description. ``kind``
    renames every line's kind but a discount's."""
    def kind_of(line):
        return line["kind"] if line.get("kind") == "discount" else kind or line.get("kind")

    if start is None or end is None:
        return [{**line, "kind": kind_of(line)} for line in lines]
    dated = [{**line, "kind": kind_of(line), "period_start": payloads.iso(start),
              "period_end": payloads.iso(end)} for line in lines]
    if dated and dated[0].get("product_name") and dated[0].get("kind") != "plan_change":
        dated[0]["description"] = period_label(dated[0]["product_name"], start, end)
    return dated


# --- Periods ---------------------------------------------------------------------------------

_UNITS = {"Day": "days", "Week": "weeks", "Month": "months", "Year": "years"}


def add_interval(start: datetime, interval: str, count: int) -> datetime:
    """``start`` moved by ``count`` intervals; month ends clamp (31 Jan + 1 month = 28/29 Feb)."""
    return start + relativedelta(**{_UNITS[interval]: count})


def _period_end(sub: Subscription, cycle: int) -> datetime:
    """The end of billing period number ``cycle`` counted from the anchor, so that periods
    never drift: 31 Jan, 28 Feb, 31 Mar…"""
    return add_interval(sub.billing_anchor, sub.payment_frequency_interval,
                        sub.payment_frequency_count * (cycle + 1))


def period_label(name: str, start: datetime, end: datetime) -> str:
    """An invoice line's description: the product and the period it pays for."""
    return f"{name} ({start:%d %b %Y} – {end:%d %b %Y})"


# --- Events ----------------------------------------------------------------------------------


def _emit_subscription(type: str, sub: Subscription, **extra):
    """A ``subscription.*`` event: every change of a subscription is told here, and its
    license keys follow it here (``core.license_terms``), in its transaction. Dodo's payload,
    plus Portico's facts (``_portico_facts``)."""
    license_terms.follow_subscription(sub)
    data = {**payloads.subscription(sub), "past_due_ends_at": None, "payment_id": None,
            "payload_type": "Subscription", **_portico_facts(sub), **extra}
    return emit(type, sub.business_id, sub.mode, sub.customer_id, data)


def _portico_facts(sub: Subscription) -> dict:
    """What a ``subscription.*`` event adds to Dodo's payload: ``resume_at`` while paused (the
    resume date asked for, if any), ``trial_ends_at`` while active in its free trial."""
    facts = {"resume_at": payloads.iso(sub.resume_at)} if sub.status == "paused" else {}
    if sub.in_trial and sub.status == "active":
        facts["trial_ends_at"] = payloads.iso(sub.next_billing_date)
    return facts


def _emit_notice(type: str, sub: Subscription, **extra):
    """A notice for the customer alone (``customer_only``: no webhook carries it), about
    ``sub``: a renewal reminder, a cancellation scheduled for the period end."""
    data = {**payloads.subscription(sub), "payload_type": "Subscription", **_portico_facts(sub),
            **extra}
    return emit(type, sub.business_id, sub.mode, sub.customer_id, data, customer_only=True)


ON_SCREEN = ("arrears", "plan_change")  # charges a customer starts and watches on screen


def _emit_payment(type: str, payment: Payment):
    """A ``payment.*`` event. A failed charge the customer started on screen is shown there:
    no dunning e-mail follows it (dunning belongs to background renewals)."""
    data = {**payloads.payment(payment), "payload_type": "Payment"}
    return emit(type, payment.business_id, payment.mode, payment.customer_id, data,
                told_on_screen=type == "payment.failed" and payment.kind in ON_SCREEN)


# --- The state machine -----------------------------------------------------------------------

TRANSITIONS = {
    "pending": {"active", "failed"},
    "active": {"on_hold", "cancelled", "expired", "paused"},
    "on_hold": {"active", "cancelled", "expired"},
    "paused": {"active", "cancelled"},
}
STATUS_EVENTS = {"active": "subscription.active", "on_hold": "subscription.on_hold",
                 "cancelled": "subscription.cancelled", "expired": "subscription.expired",
                 "failed": "subscription.failed", "paused": "subscription.paused"}
# Dodo names a move between two statuses when the status alone does not say it
MOVE_EVENTS = {("paused", "active"): "subscription.unpaused"}


def _transition(sub: Subscription, status: str, event_data: dict | None = None,
                **changes) -> Subscription:
    """Move ``sub`` to ``status`` (the one place statuses change) and emit its event, with
    ``event_data`` added to its payload."""
    if status not in TRANSITIONS.get(sub.status, ()):
        raise BillingError("INVALID_SUBSCRIPTION_TRANSITION",
                           f"the subscription is {sub.status}: it cannot become {status}")
    event = MOVE_EVENTS.get((sub.status, status), STATUS_EVENTS[status])
    for name, value in changes.items():
        setattr(sub, name, value)
    sub.status = status
    sub.updated_at = utcnow()
    sub.save()
    _emit_subscription(event, sub, **(event_data or {}))
    return sub


def _locked_subscription(sub_id: str) -> Subscription:
    return for_update(Subscription.select().where(Subscription.id == sub_id)).get()


def _locked_payment(payment_id: str) -> Payment | None:
    return for_update(Payment.select().where(Payment.id == payment_id)).get_or_none()


def _check_method(customer: Customer, method: PaymentMethod):
    if (method is None or method.customer_id != customer.id or method.deleted_at is not None):
        raise BillingError("NO_ELIGIBLE_PAYMENT_METHODS",
                           "that payment method does not belong to this customer")


def _check_product(customer: Customer, product: Product):
    if product.business_id != customer.business_id or product.mode != customer.mode:
        raise BillingError("NOT_FOUND", "no such product")
    if product.archived:
        raise BillingError("PRODUCT_IS_DELETED", f"{product.name} is no longer sold")


def _new_payment(customer, method, kind, charge, key, *, subscription=None, product=None,
                 period=None, description="", metadata=None) -> Payment:
    return Payment.create(
        business=customer.business_id, mode=customer.mode, customer=customer,
        subscription=subscription, product=product, payment_method=method, kind=kind,
        status="processing", amount=charge["amount"], tax=charge["tax"],
        currency=(subscription or product).currency, description=description,
        provider=method.provider if method else None, idempotency_key=key,
        period_start=period[0] if period else None, period_end=period[1] if period else None,
        metadata={**_charge_facts(charge), **(metadata or {})})


def _charge_facts(charge: dict) -> dict:
    """What a payment keeps of its charge for its invoice, beside the merchant's metadata:
    ``lines`` and ``charge`` (``tax_inclusive``, ``credit_applied``)."""
    return {"lines": charge["lines"],
            "charge": {"tax_inclusive": charge.get("tax_inclusive", False),
                       "credit_applied": charge.get("credit_applied", 0)}}


def charge_terms(payment: Payment) -> tuple[bool, int]:
    """``(tax_inclusive, credit_applied)`` of a payment's charge (see ``_charge_facts``)."""
    terms = (payment.metadata or {}).get("charge") or {}
    return bool(terms.get("tax_inclusive")), int(terms.get("credit_applied") or 0)


def _queue_charge(payment: Payment):
    later(run_charge, payment.id, job_id=f"charge-{payment.id}-{payment.attempts}", unique=True)


MAX_TRIAL_DAYS = 10000  # Dodo's bound on ``trial_period_days``


def create_subscription(customer: Customer, product: Product, method: PaymentMethod | None,
                        quantity: int = 1, addons=(), billing=None, metadata=None,
                        trial_period_days: int | None = None, discount: Discount | None = None):
    """Subscribe ``customer`` to ``product``: ``pending`` until the first charge settles it
    ``active`` (or ``failed``). Returns ``(subscription, payment)``.

    With a free trial (``trial_period_days``, else the product's; Dodo's rule) nothing is
    charged now: the subscription is ``active`` at once (``subscription.active``), in its
    trial until ``next_billing_date``, the trial's end, when the renewal sweep makes its first
    charge (``renew``); its term counts from there. The payment is then ``None``. A trial needs
    ``method`` unless the product's ``trial_payment_method_optional`` says otherwise (a trial
    that ends without one is charged to no card: on hold, like a failed renewal).

    With ``discount`` (refused as ``check_discount`` says), the first charge and the renewals
    of its cycles are discounted, and it counts as used."""
    days = product.trial_period_days if trial_period_days is None else trial_period_days
    if not 0 <= days <= MAX_TRIAL_DAYS:
        raise BillingError("INVALID_REQUEST_PARAMETERS",
                           f"trial_period_days must be between 0 and {MAX_TRIAL_DAYS}")
    _check_product(customer, product)
    if method is not None or not (days and product.trial_payment_method_optional):
        _check_method(customer, method)
    if not product.is_recurring:
        raise BillingError("INVALID_REQUEST_PARAMETERS", f"{product.name} is not a subscription")
    if quantity < 1:
        raise BillingError("INVALID_REQUEST_PARAMETERS", "quantity must be at least 1")
    addons = [{"addon_id": a["addon_id"], "quantity": int(a.get("quantity", 1))} for a in addons]
    now = utcnow()
    start = now + timedelta(days=days)  # when the first paid period starts
    with transaction():
        price = catalogue_price(product, quantity, addons)
        sub = Subscription(
            business=customer.business_id, mode=customer.mode, customer=customer, status="pending",
            currency=product.currency,
            subscription_period_count=product.subscription_period_count,
            subscription_period_interval=product.subscription_period_interval,
            trial_period_days=days, billing_anchor=now, cycles=0,
            previous_billing_date=now, payment_method=method,
            billing=billing or customer.billing_address, metadata=metadata or {},
            expires_at=add_interval(start, product.subscription_period_interval,
                                    product.subscription_period_count))
        _record_price(sub, price)
        if discount is not None:  # a trial's discount starts with its first charge
            sub.discount = _claim_discount(discount, product)
            sub.discount_cycles_remaining = discount.subscription_cycles
        if days:
            return _start_trial(sub, start), None
        sub.next_billing_date = _period_end(sub, 0)
        sub.save()
        charge = price_charge(price, "first_payment", discount=sub.discount)
        charge["lines"] = with_period(charge["lines"], now, sub.next_billing_date)
        payment = _new_payment(customer, method, "new", charge, f"new:{sub.id}", subscription=sub,
                               product=product, period=(now, sub.next_billing_date),
                               description=product.name)
        _queue_charge(payment)
    return sub, payment


def _start_trial(sub: Subscription, end: datetime) -> Subscription:
    """Start a free trial ending at ``end``: active at once, nothing charged, and the renewal
    due at ``end`` pays the first period (``_start_periods_at``). Its license keys are issued
    now and valid while it is active (``core.license_terms``), as for a paid subscription."""
    _start_periods_at(sub, end)
    sub.in_trial = True
    sub.save()
    _transition(sub, "active")
    _issue_license_key(sub.product, sub.customer, subscription=sub)
    return sub


def purchase(customer: Customer, product: Product, method: PaymentMethod, quantity: int = 1, *,
             idempotency_key: str) -> Payment:
    """A one-time purchase of ``product``; a license key comes with it when the product has one.

    ``idempotency_key`` is the caller's own for this order (a checkout or order id): asking
    again with the same key returns the first payment and charges nothing more.
    """
    _check_product(customer, product)
    _check_method(customer, method)
    if product.is_recurring:
        raise BillingError("INVALID_REQUEST_PARAMETERS", f"{product.name} is a subscription")
    if not idempotency_key:
        raise BillingError("INVALID_REQUEST_PARAMETERS", "a purchase needs an idempotency key")
    key = f"purchase:{customer.id}:{idempotency_key}"
    with transaction():
        existing = Payment.get_or_none(Payment.idempotency_key == key)
        if existing is not None:
            return existing
        charge = _charge_for(plan_lines(product, quantity, kind="purchase"), product.tax_rate_bps,
                             product.tax_inclusive)
        payment = _new_payment(customer, method, "new", charge, key, product=product,
                               description=product.name)
        _queue_charge(payment)
    return payment


# --- Charging --------------------------------------------------------------------------------

OPEN = ("processing", "requires_customer_action")  # a charge in flight: its outcome is not known
SAME_CARD_RETRY = timedelta(minutes=1)  # a card that just declined is not charged again sooner
EXPIRED = ChargeResult("declined", failure_code="expired",
                       failure_message="The payment was not completed in time.")
WITHDRAWN = ChargeResult("declined", failure_code="withdrawn",
                         failure_message="The subscription no longer needed this payment.")


def wait_window() -> timedelta:
    """How long a charge may stay in flight (``CHARGE_WAIT_WINDOW``, default 23 hours): inside
    the 24 hours Stripe keeps an idempotency key, so a retry never becomes a second charge."""
    return timedelta(seconds=current_app.config["CHARGE_WAIT_WINDOW"])


def _open_charge(sub: Subscription, kinds=None) -> Payment | None:
    """The subscription's charge in flight (``processing`` or ``requires_customer_action``)."""
    query = Payment.select().where((Payment.subscription == sub) & Payment.status.in_(OPEN))
    if kinds:
        query = query.where(Payment.kind.in_(kinds))
    return query.order_by(Payment.created_at).first()


def _refuse_while_in_flight(sub: Subscription, kinds=None):
    if _open_charge(sub, kinds) is not None:
        raise BillingError("PREVIOUS_PAYMENT_PENDING",
                           "a payment for this subscription is in progress: try again once it ends")


def _provider_for(payment: Payment):
    """``(provider, None)`` for the payment's method, or ``(None, a declined result)`` saying
    why it cannot be charged (no method, a provider missing or not serving this mode)."""
    from core.plugins import MissingPlugin, registry

    method = payment.payment_method
    if method is None or method.deleted_at is not None:
        return None, ChargeResult("declined", failure_code="no_payment_method",
                                  failure_message="No payment method is available.")
    try:
        provider = registry().provider(method.provider)
    except MissingPlugin as error:
        return None, ChargeResult("declined", failure_code="provider_unavailable",
                                  failure_message=str(error))
    if payment.mode not in provider.modes:
        return None, ChargeResult(
            "declined", failure_code="provider_unavailable",
            failure_message=f"The {provider.name} provider does not take {payment.mode}-mode payments.")
    return provider, None


def run_charge(payment_id: str):
    """Job: charge a processing payment through its method's provider, then settle it.

    Safe to run any number of times: a settled payment is left alone, and the provider sees
    the same idempotency key on every try, so it charges once. A transient provider error
    propagates, so the job is retried with that same key. A payment older than the wait
    window is never charged again (its key may have expired at the provider): it is looked
    up instead (``expire_charge``), and so is one its subscription no longer wants (cancelled
    meanwhile): a charge the provider already made is settled, and refunded.
    """
    with transaction():
        payment = _locked_payment(payment_id)
        if payment is None or payment.status != "processing":
            return payment
        sub = Subscription.get_by_id(payment.subscription_id) if payment.subscription_id else None
        if payment.created_at <= utcnow() - wait_window():
            outcome = EXPIRED
        elif not _wanted(payment, sub):
            outcome = WITHDRAWN
        else:
            outcome = None
            payment.attempts += 1
            payment.updated_at = utcnow()
            payment.save()
    if outcome is not None:  # never charge it now: ask how it ended, if it was ever made
        return _look_up_and_settle(payment_id, outcome)
    if payment.amount == 0:  # a discount took everything off: nothing for a provider to take
        return settle(payment_id, ChargeResult("succeeded"))
    provider, refusal = _provider_for(payment)
    if refusal:
        return settle(payment_id, refusal)
    method = payment.payment_method
    result = provider.charge(payment_method=method, amount=payment.amount, currency=payment.currency,
                             idempotency_key=payment.idempotency_key, description=payment.description)
    return settle(payment_id, result)


def _look_up_and_settle(payment_id: str, otherwise: ChargeResult):
    """Ask the provider how a charge ended, by its idempotency key (``lookup`` hook, which
    cancels one still waiting for 3-D Secure), and settle it so; a charge it never made, or
    cancelled, is settled as ``otherwise``. A transient provider error propagates (retry)."""
    payment = Payment.get_or_none(Payment.id == payment_id)
    if payment is None or payment.status not in OPEN:
        return payment
    provider, _ = _provider_for(payment)
    result = None
    if provider is not None:
        result = provider.lookup(idempotency_key=payment.idempotency_key,
                                 reference=payment.provider_reference, cancel=True)
    if result is None or result.status == "requires_action":
        result = otherwise
    return settle(payment_id, result)


def expire_charge(payment_id: str):
    """Job: end a charge whose wait is over (``wait_window``): a charge the provider made is
    settled as made, one it never made (or that still waited for 3-D Secure, now cancelled) is
    declined as ``expired``. A renewal that expires puts its subscription on hold, like a
    decline; any other charge frees its subscription for another card."""
    return _look_up_and_settle(payment_id, EXPIRED)


def withdraw_charge(payment_id: str):
    """Job: end a charge its subscription no longer wants (cancelled now while it was in
    flight): settled as the provider made it (then refunded), else declined as ``withdrawn``."""
    return _look_up_and_settle(payment_id, WITHDRAWN)


def settle(payment_id: str, result: ChargeResult) -> Payment:
    """Record a provider's outcome for a payment, once, and apply what follows from it:
    invoice, subscription status, license key, events.

    Settling never fails once money moved: a capture is always recorded as a succeeded payment
    with its invoice. Where the subscription no longer wants that money (cancelled meanwhile, or
    the charge was given up as failed or expired before the provider's late answer), it is
    refunded in full through the provider, with a credit note.
    """
    with transaction():
        payment = _locked_payment(payment_id)
        late = payment.status == "failed" and result.succeeded
        if payment.status not in OPEN and not late:
            return payment  # settled already: a repeated or out-of-order answer
        payment.updated_at = utcnow()
        payment.provider_reference = result.reference or payment.provider_reference
        if result.status == "requires_action":
            payment.status = "requires_customer_action"
            payment.action_url = result.action_url or payment.action_url
            payment.save()
            return payment
        sub = _locked_subscription(payment.subscription_id) if payment.subscription_id else None
        if result.succeeded:
            payment.status = "succeeded"
            payment.failure_code = payment.failure_message = None
            if payment.kind == "arrears" and sub is not None and sub.status == "on_hold" and not late:
                _arrears_period(payment, sub)
            payment.save()
            lines = with_period(payment.metadata["lines"], payment.period_start, payment.period_end)
            payment.metadata = {**payment.metadata, "lines": lines}
            payment.save()
            invoice = issue_invoice(payment, lines)
            if current_app.config["INVOICE_PDF_AHEAD"]:
                later(render_invoice_pdf, invoice.id, job_id=f"pdf-{invoice.id}", unique=True)
            _emit_payment("payment.succeeded", payment)
            if not late and _wanted(payment, sub):
                _SUCCEEDED[payment.kind](payment, sub)
            else:
                refund_payment(payment, reason="The subscription no longer needed this payment.",
                               initiated_by="portico")
        else:
            payment.status = "failed"
            payment.failure_code = result.failure_code or "declined"
            payment.failure_message = result.failure_message or "The payment was declined."
            payment.save()
            _emit_payment("payment.failed", payment)
            if _wanted(payment, sub):
                _FAILED[payment.kind](payment, sub)
    return payment


def _wanted(payment: Payment, sub: Subscription | None) -> bool:
    """Whether the subscription still waits for this charge's outcome: its first payment while
    ``pending``, the renewal of its current billing date while ``active``, arrears while
    ``on_hold``, a plan change while ``active``. A one-time purchase always does."""
    if sub is None:
        return True
    if payment.kind == "new":
        return sub.status == "pending"
    if payment.kind == "renewal":
        return sub.status == "active" and sub.next_billing_date == payment.period_start
    if payment.kind == "arrears":
        return sub.status == "on_hold"
    return sub.status == "active"  # plan_change


def _new_succeeded(payment: Payment, sub: Subscription | None):
    if sub is not None:
        _count_discounted_cycle(payment, sub)
        _transition(sub, "active")
    _issue_license_key(payment.product, payment.customer, payment=payment,
                       subscription=payment.subscription)


def _renewal_succeeded(payment: Payment, sub: Subscription):
    sub.credit_balance = max(sub.credit_balance - charge_terms(payment)[1], 0)
    sub.in_trial = False  # a trial's first charge is paid: a paying subscription now
    _count_discounted_cycle(payment, sub)
    sub.cycles += 1
    sub.previous_billing_date, sub.next_billing_date = payment.period_start, payment.period_end
    sub.updated_at = utcnow()
    sub.save()
    _emit_subscription("subscription.renewed", sub, payment_id=payment.id)


def _arrears_period(payment: Payment, sub: Subscription):
    """Arrears paid: a new billing period starts at the time of payment (set on the payment
    before its invoice is issued, so both tell the same period)."""
    now = utcnow()
    sub.billing_anchor, sub.cycles = now, 0
    payment.period_start, payment.period_end = now, _period_end(sub, 0)


def _arrears_succeeded(payment: Payment, sub: Subscription):
    """Arrears paid: active again, for the period that starts at the time of payment."""
    credit = charge_terms(payment)[1]
    _count_discounted_cycle(payment, sub)
    _transition(sub, "active", billing_anchor=payment.period_start, cycles=0,
                previous_billing_date=payment.period_start, next_billing_date=payment.period_end,
                credit_balance=max(sub.credit_balance - credit, 0))


def _plan_change_succeeded(payment: Payment, sub: Subscription):
    change = payment.metadata["change"]
    price = change.get("price") or {}
    new_cycle = (price and (price["payment_frequency_count"], price["payment_frequency_interval"])
                 != (sub.payment_frequency_count, sub.payment_frequency_interval))
    _apply_plan(sub, change, payment.period_start, payment.period_end if new_cycle else None,
                credit_applied=charge_terms(payment)[1])


def _nothing(payment: Payment, sub: Subscription | None):
    """A failed charge that changes nothing but the payment (arrears, plan change)."""


def _new_failed(payment: Payment, sub: Subscription | None):
    if sub is not None:
        _transition(sub, "failed")


def _renewal_failed(payment: Payment, sub: Subscription):
    _transition(sub, "on_hold", in_trial=False)  # a trial's first charge failed: the trial is over


def _arrears_failed(payment: Payment, sub: Subscription):
    """Arrears declined by a card saved for that charge (never charged before, paying for no
    other subscription; ``update_payment_method`` says so on the payment): the card is not
    kept, since it cannot pay, and the subscription goes back to the method it had (or the
    customer's default). Kept when nothing else could pay, or once it is in other use."""
    facts = payment.metadata.get("arrears") or {}
    if not facts.get("card_saved_for_this_charge"):
        return
    card = PaymentMethod.get_or_none((PaymentMethod.id == payment.payment_method_id)
                                     & PaymentMethod.deleted_at.is_null())
    if card is None or (
            Payment.select().where((Payment.payment_method == card) & (Payment.id != payment.id)).exists()
            or Subscription.select().where((Subscription.payment_method == card)
                                           & (Subscription.id != sub.id)).exists()):
        return
    live = (PaymentMethod.customer == payment.customer_id) & PaymentMethod.deleted_at.is_null() & (
        PaymentMethod.id != card.id)
    had = facts.get("previous_payment_method_id")
    heir = (PaymentMethod.get_or_none(live & (PaymentMethod.id == had))
            or PaymentMethod.select().where(live).order_by(PaymentMethod.is_default.desc(),
                                                           PaymentMethod.created_at.desc()).first())
    if heir is None:
        return
    PaymentMethod.update(deleted_at=utcnow(), is_default=False).where(PaymentMethod.id == card.id).execute()
    if card.is_default:
        PaymentMethod.update(is_default=True).where(PaymentMethod.id == heir.id).execute()
    if sub.payment_method_id == card.id:
        sub.payment_method, sub.updated_at = heir, utcnow()
        sub.save()
        _emit_subscription("subscription.updated", sub)


_SUCCEEDED = {"new": _new_succeeded, "renewal": _renewal_succeeded,
              "arrears": _arrears_succeeded, "plan_change": _plan_change_succeeded}
_FAILED = {"new": _new_failed, "renewal": _renewal_failed, "arrears": _arrears_failed,
           "plan_change": _nothing}


def _issue_license_key(product: Product | None, customer: Customer, payment: Payment | None = None,
                       subscription: Subscription | None = None):
    """Issue the license key of ``product`` when it has one: bought once (``payment``), it
    lasts the product's license duration; with ``subscription``, while that is paid or in its
    trial (``license_terms.paid_until``)."""
    from core.plugins import registry

    if product is None or not product.license_key_enabled:
        return None
    expires_at = None
    if subscription is not None:  # valid while the subscription is paid
        expires_at = license_terms.paid_until(subscription)
    elif product.license_key_duration_count and product.license_key_duration_interval:
        expires_at = add_interval(utcnow(), product.license_key_duration_interval,
                                  product.license_key_duration_count)
    key = registry().license_source(product.license_source).issue(
        product=product, customer=customer, payment=payment,
        subscription=subscription, activations_limit=product.license_key_activations_limit,
        expires_at=expires_at)
    emit("license_key.created", customer.business_id, customer.mode, customer.id,
         {**payloads.license_key(key), "payload_type": "LicenseKey"})
    return key


# --- Refunds ---------------------------------------------------------------------------------


def refundable(payment: Payment) -> int:
    """What is left to refund of a payment: its amount less every refund not failed."""
    taken = (Refund.select(fn.COALESCE(fn.SUM(Refund.amount), 0))
             .where((Refund.payment == payment) & (Refund.status != "failed")).scalar())
    return payment.amount - int(taken or 0)


def refund_payment(payment: Payment, amount: int | None = None, reason: str | None = None,
                   initiated_by: str = "merchant", metadata: dict | None = None) -> Refund:
    """Refund ``amount`` minor units (all that is left by default) of a succeeded payment
    through its provider. The payment's row is locked while what is left is counted, so
    however many refunds are asked at once, together they never exceed what was paid.

    Returns the ``pending`` refund; ``run_refund`` settles it (credit note, events, e-mail).
    Raises ``BillingError`` (``PAYMENT_NOT_SUCCEEDED``, ``REFUND_AMOUNT_INVALID``) when the
    payment cannot be refunded so.
    """
    with transaction():
        payment = _locked_payment(payment.id)
        if payment is None or payment.status != "succeeded":
            raise BillingError("PAYMENT_NOT_SUCCEEDED", "only a succeeded payment can be refunded")
        left = refundable(payment)
        amount = left if amount is None else amount
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= left:
            raise BillingError("REFUND_AMOUNT_INVALID",
                               f"the refund must be between 1 and {left} {payment.currency} "
                               f"minor units: what is left of this payment")
        tax = round_half_up(Fraction(payment.tax * amount, payment.amount)) if payment.amount else 0
        refund = Refund(business=payment.business_id, mode=payment.mode,
                        customer=payment.customer_id, payment=payment, amount=amount, tax=tax,
                        currency=payment.currency, reason=reason, initiated_by=initiated_by,
                        metadata=metadata or {})
        refund.idempotency_key = f"refund:{refund.id}"
        refund.save()
        later(run_refund, refund.id, job_id=f"refund-{refund.id}-0", unique=True)
    return refund


def _locked_refund(refund_id: str) -> Refund | None:
    return for_update(Refund.select().where(Refund.id == refund_id)).get_or_none()


def run_refund(refund_id: str):
    """Job: ask the payment's provider for a pending refund (its ``refund`` hook, with the
    refund's idempotency key, so a retried job refunds once), then settle it."""
    from core.plugins import MissingPlugin, registry

    with transaction():
        refund = _locked_refund(refund_id)
        if refund is None or refund.status != "pending":
            return refund
        refund.attempts += 1
        refund.updated_at = utcnow()
        refund.save()
    payment = refund.payment
    try:
        provider = registry().provider(payment.provider)
    except MissingPlugin as error:
        return settle_refund(refund_id, RefundResult("failed", failure_message=str(error)))
    result = provider.refund(reference=payment.provider_reference, amount=refund.amount,
                             currency=refund.currency, idempotency_key=refund.idempotency_key)
    return settle_refund(refund_id, result)


def settle_refund(refund_id: str, result: RefundResult) -> Refund:
    """Record a provider's answer to a refund, once: a succeeded refund gets its credit note
    (numbered without gaps) and ``refund.succeeded``; a failed one ``refund.failed``."""
    with transaction():
        refund = _locked_refund(refund_id)
        if refund.status != "pending":
            return refund
        refund.provider_reference = result.reference or refund.provider_reference
        refund.updated_at = utcnow()
        if result.status == "pending":
            refund.save()
            return refund
        if result.status == "succeeded":
            refund.status = "succeeded"
            refund.credit_note_number = _next_number(CreditNoteSequence, refund.business_id,
                                                     refund.mode)
            refund.issued_at = utcnow()
            refund.credit_note = _credit_note(refund)
        else:
            refund.status = "failed"
            refund.failure_message = result.failure_message or "The provider refused the refund."
        refund.save()
        emit(f"refund.{refund.status}", refund.business_id, refund.mode, refund.customer_id,
             {**payloads.refund(refund), "payload_type": "Refund"})
    return refund


def _credit_note(refund: Refund) -> dict:
    """A credit note's frozen contents: the invoice it corrects, lines, tax and totals. A full
    refund repeats the invoice's lines; a partial one is one line for the amount."""
    payment = refund.payment
    invoice = Invoice.get(Invoice.payment == payment)
    inclusive = invoice.tax_inclusive
    if refund.amount == payment.amount and not invoice.credit_applied:
        lines = invoice.lines
    else:
        amount = refund.amount if inclusive else refund.amount - refund.tax
        lines = [line("refund", payment.description, 1, amount,
                      description=f"Refund: {payment.description}")]
    return {"invoice_id": invoice.id, "invoice_number": invoice.display_number,
            "lines": lines, "tax_inclusive": inclusive,
            "subtotal": refund.amount - refund.tax, "tax": refund.tax,
            "total": refund.amount, "reason": refund.reason,
            "seller": _seller(payment.business), "buyer": _buyer(payment.customer)}


# --- Renewals --------------------------------------------------------------------------------


def renew(subscription_id: str, due: str):
    """Job: settle the billing date ``due`` (ISO) of a subscription: cancel it if asked, expire
    it at the end of its term, apply a scheduled downgrade, then charge the next period. The
    end of a free trial is such a date: its charge is the subscription's first (a renewal
    payment whose lines are ``first_payment``), settled like a renewal (``subscription.renewed``,
    or on hold when it fails)."""
    with transaction():
        sub = _locked_subscription_with_plan(subscription_id)
        if sub is None or sub.status != "active" or payloads.iso(sub.next_billing_date) != due:
            return None  # already handled, or no longer due
        now = utcnow()
        if sub.cancel_at_next_billing_date:
            _transition(sub, "cancelled", cancelled_at=sub.next_billing_date,
                        cancel_at_next_billing_date=False)
            return None
        if sub.expires_at and min(now, sub.next_billing_date) >= sub.expires_at:
            _transition(sub, "expired")
            return None
        if _open_charge(sub, ("plan_change",)) is not None:
            return None  # wait: the sweep renews it once the plan change is settled
        if sub.scheduled_change:
            _apply_plan(sub, sub.scheduled_change, start=sub.next_billing_date)
        elif sub.price_change and _when(sub.price_change["effective_at"]) <= sub.next_billing_date:
            _apply_price_change(sub)
        start, end = sub.next_billing_date, _period_end(sub, sub.cycles + 1)
        key = f"renewal:{sub.id}:{due}"
        payment = Payment.get_or_none(Payment.idempotency_key == key)
        if payment is None:
            charge = next_charge(sub)
            if charge["amount"] == 0 and charge["credit_applied"]:
                _renewed_from_credit(sub, charge, start, end)
                return None
            charge["lines"] = with_period(charge["lines"], start, end,
                                          "first_payment" if sub.in_trial else None)
            payment = _new_payment(sub.customer, sub.payment_method, "renewal", charge, key,
                                   subscription=sub, product=sub.product, period=(start, end),
                                   description=sub.product.name)
    return run_charge(payment.id)


def _renewed_from_credit(sub: Subscription, charge: dict, start: datetime, end: datetime):
    """A renewal the credit balance pays in full: the period is renewed, nothing is charged."""
    sub.credit_balance -= charge["credit_applied"]
    sub.in_trial = False
    if sub.discount_cycles_remaining and any(item.get("kind") == "discount" for item in charge["lines"]):
        sub.discount_cycles_remaining -= 1
    sub.cycles += 1
    sub.previous_billing_date, sub.next_billing_date = start, end
    sub.updated_at = utcnow()
    sub.save()
    _emit_subscription("subscription.renewed", sub)


def _locked_subscription_with_plan(sub_id: str) -> Subscription | None:
    """The subscription, locked, with its product, customer and payment method read in the
    same statement (a renewal reads each several times)."""
    query = (Subscription.select(Subscription, Product, Customer, PaymentMethod)
             .join(Product, on=(Subscription.product == Product.id)).switch(Subscription)
             .join(Customer, on=(Subscription.customer == Customer.id)).switch(Subscription)
             .join(PaymentMethod, JOIN.LEFT_OUTER, on=(Subscription.payment_method == PaymentMethod.id))
             .where(Subscription.id == sub_id))
    return (query if is_sqlite() else query.for_update(of=Subscription)).first()


def renew_batch(owed: list[list[str]]):
    """Job: renew each ``[subscription_id, due]`` of ``owed`` in turn, so one job (one fork
    of a worker) carries many renewals.

    Each renewal stays its own exactly-once unit (``renew``: its own transactions and
    idempotency key). One that raises is logged and queued again on its own, with the usual
    retries; it never holds back or repeats the others. A worker killed mid-batch leaves each
    renewal done, in flight (its charge found by the sweep's stale-charge recovery and retried
    with the same idempotency key) or not begun (still due: queued again by the next sweep).
    """
    for subscription_id, due in owed:
        try:
            renew(subscription_id, due)
        except Exception:
            log.exception("renewal of %s due %s failed", subscription_id, due)
            if queue() is None:  # in-process, the next sweep tries it again
                continue
            stamp = "".join(c for c in due if c.isdigit())
            try:
                enqueue(renew, subscription_id, due, job_id=f"renew-{subscription_id}-{stamp}",
                        unique=True)
            except Exception:  # still due: the next sweep queues it again
                log.exception("could not queue the renewal of %s again", subscription_id)


def queue_renewals(owed: list[list[str]], slot: str = "") -> int:
    """Queue ``[subscription_id, due]`` renewals in batches of ``RENEWAL_BATCH_SIZE``; a batch's
    job id names its contents (and the sweep's ``slot``), so a sweep run twice queues nothing
    twice. Returns how many."""
    size = max(current_app.config["RENEWAL_BATCH_SIZE"], 1)
    for start in range(0, len(owed), size):
        batch = owed[start:start + size]
        digest = hashlib.sha256(json.dumps(batch).encode()).hexdigest()[:24]
        enqueue(renew_batch, batch, job_id=f"renew-batch-{digest}{slot and '-' + slot}", unique=True,
                timeout=max(120, 10 * len(batch)))
    return len(owed)


def sweep(now: datetime | None = None, stale_after: timedelta = STALE_CHARGE) -> dict:
    """Queue what is owed: renewals, cancellations and expiries that are due, charges whose job
    was lost (a dead worker, Redis down), charges whose wait is over (``expire_charge``),
    refunds without an answer, paused subscriptions whose resume date has come, renewal
    reminders and notices of trials ending, and events whose deliveries were never queued;
    delete the API's idempotency keys past their 24 hours.
    Every job has a stable id, so running the sweep twice queues nothing twice. Plugins add
    what they owe through their ``sweep`` hook (webhook retries)."""
    from core.plugins import registry

    now = now or utcnow()
    due = (Subscription.select(Subscription.id, Subscription.next_billing_date)
           .where((Subscription.status == "active")
                  & ((Subscription.next_billing_date <= now) | (Subscription.expires_at <= now))))
    # Job ids name the sweep's minute: sweeps in the same minute queue nothing twice, and a job
    # that died before it ran (its id still known to Redis) never blocks the next minute's.
    slot = f"{now:%Y%m%d%H%M}"
    counts = {"renewals": queue_renewals([
        [sub.id, payloads.iso(sub.next_billing_date)]
        for sub in due.order_by(Subscription.next_billing_date, Subscription.id)], slot),
        "charges": 0, "expired": 0, "refunds": 0, "events": 0, "resumes": 0, "reminders": 0}
    window_start = now - wait_window()
    expired = Payment.select(Payment.id).where(Payment.status.in_(OPEN)
                                               & (Payment.created_at <= window_start))
    for payment in expired:
        enqueue(expire_charge, payment.id, job_id=f"expire-{payment.id}-{slot}", unique=True)
        counts["expired"] += 1
    stale = Payment.select(Payment.id, Payment.attempts).where(
        (Payment.status == "processing") & (Payment.updated_at <= now - stale_after)
        & (Payment.created_at > window_start))
    for payment in stale:
        enqueue(run_charge, payment.id, job_id=f"charge-{payment.id}-{payment.attempts}-{slot}",
                unique=True)
        counts["charges"] += 1
    refunds = Refund.select(Refund.id, Refund.attempts).where(
        (Refund.status == "pending") & (Refund.updated_at <= now - stale_after))
    for refund in refunds:
        enqueue(run_refund, refund.id, job_id=f"refund-{refund.id}-{refund.attempts}-{slot}",
                unique=True)
        counts["refunds"] += 1
    resumes = Subscription.select(Subscription.id).where((Subscription.status == "paused")
                                                          & (Subscription.resume_at <= now))
    for sub in resumes:
        enqueue(resume_when_due, sub.id, job_id=f"resume-{sub.id}-{slot}", unique=True)
        counts["resumes"] += 1
    for subscription_id, due in reminders_due(now):
        stamp = "".join(c for c in due if c.isdigit())
        enqueue(remind_renewal, subscription_id, due,
                job_id=f"remind-{subscription_id}-{stamp}-{slot}", unique=True)
        counts["reminders"] += 1
    for subscription_id, due in trial_endings_due(now):
        stamp = "".join(c for c in due if c.isdigit())
        enqueue(announce_trial_end, subscription_id, due,
                job_id=f"trial-end-{subscription_id}-{stamp}-{slot}", unique=True)
        counts["reminders"] += 1
    counts["events"] = redispatch(now)
    counts["idempotency_keys"] = idempotency.sweep(now)
    app = current_app._get_current_object()
    for _plugin, owed in registry().call_each("sweep", app=app, now=now):
        counts.update(owed or {})
    return counts


def book_sweep():
    """Book the next billing sweep at the next multiple of ``RENEWAL_SWEEP_INTERVAL``; the job
    id names that time slot, so however many workers book it, one sweep runs per slot."""
    from rq.exceptions import DuplicateJobError

    from core.jobs import FAILURE_TTL

    interval = current_app.config["RENEWAL_SWEEP_INTERVAL"]
    slot = int(time.time() // interval) + 1
    try:
        queue().enqueue_at(datetime.fromtimestamp(slot * interval, UTC), periodic_sweep,
                           job_id=f"portico-sweep-{slot}", unique=True, job_timeout=interval * 5,
                           failure_ttl=FAILURE_TTL, result_ttl=interval * 2)
    except DuplicateJobError:
        pass


def periodic_sweep():
    """Job: run the billing sweep, then book the next one."""
    try:
        log.info("sweep: %s", sweep())
    finally:
        book_sweep()


# --- Arrears ---------------------------------------------------------------------------------


def update_payment_method(subscription: Subscription, method: PaymentMethod) -> Payment | None:
    """Make ``method`` the subscription's payment method.

    For an ``active`` subscription that is all (a renewal already in flight finishes on the
    method it started with). For one ``on_hold`` it queues one arrears charge of the unpaid
    renewal with ``method`` and returns that payment; while a charge is in flight, further
    calls return it unchanged (however many clicks or tabs), so the method charged stays the
    subscription's method; a card that declined less than ``SAME_CARD_RETRY`` ago returns
    that declined attempt rather than being charged again. A card saved for this charge that
    declines at it is not kept (``_arrears_failed``).
    """
    _check_method(subscription.customer, method)
    with transaction():
        sub = _locked_subscription(subscription.id)
        if sub.status == "active":
            sub.payment_method, sub.updated_at = method, utcnow()
            sub.save()
            _emit_subscription("subscription.updated", sub)
            return None
        if sub.status != "on_hold":
            raise BillingError("SUBSCRIPTION_INACTIVE",
                               f"the subscription is {sub.status}: its payment method cannot change")
        open_charge = _open_charge(sub, ("arrears",))
        if open_charge:
            if open_charge.created_at <= utcnow() - wait_window():  # reconcile it first
                later(expire_charge, open_charge.id, job_id=f"expire-{open_charge.id}", unique=True)
            return open_charge
        last = (Payment.select().where((Payment.subscription == sub) & (Payment.kind == "arrears"))
                .order_by(Payment.created_at.desc()).first())
        if (last is not None and last.status == "failed" and last.payment_method_id == method.id
                and last.created_at > utcnow() - SAME_CARD_RETRY):
            return last  # the same card just declined: the same answer, not another attempt
        unpaid = (Payment.select()
                  .where((Payment.subscription == sub) & (Payment.kind == "renewal")
                         & (Payment.status == "failed"))
                  .order_by(Payment.created_at.desc()).first())
        attempt = Payment.select().where((Payment.subscription == sub)
                                         & (Payment.kind == "arrears")).count() + 1
        saved_for_this = not (  # a card just saved to pay what is due: not kept if it declines
            Payment.select().where(Payment.payment_method == method).exists()
            or Subscription.select().where((Subscription.payment_method == method)
                                           & (Subscription.id != sub.id)).exists())
        facts = {"previous_payment_method_id": sub.payment_method_id,
                 "card_saved_for_this_charge": saved_for_this}
        sub.payment_method, sub.updated_at = method, utcnow()
        sub.save()
        if unpaid is not None:
            inclusive, credit = charge_terms(unpaid)
            charge = {"amount": unpaid.amount, "tax": unpaid.tax, "tax_inclusive": inclusive,
                      "credit_applied": credit,
                      "lines": [{**item, "kind": "discount" if item.get("kind") == "discount" else "arrears"}
                                for item in unpaid.metadata["lines"]]}
        else:  # on hold without a recorded failed renewal: charge one period
            charge = price_charge(recorded_price(sub), "arrears", sub.credit_balance,
                                  current_discount(sub))
        payment = _new_payment(sub.customer, method, "arrears", charge,
                               f"arrears:{sub.id}:{unpaid.id if unpaid else 'due'}:{attempt}",
                               subscription=sub, product=sub.product,
                               description=sub.product.name, metadata={"arrears": facts})
        _queue_charge(payment)
    return payment


def replace_payment_method(subscription: Subscription, method: PaymentMethod) -> Subscription:
    """Charge the subscription's next payments to ``method`` without charging anything now,
    whatever its status (the card it was charged to is being removed, or the customer's
    default changed): an ``on_hold`` subscription stays on hold until its arrears are paid."""
    _check_method(subscription.customer, method)
    with transaction():
        sub = _locked_subscription(subscription.id)
        sub.payment_method, sub.updated_at = method, utcnow()
        sub.save()
        _emit_subscription("subscription.updated", sub)
        return sub


# --- Cancellation ----------------------------------------------------------------------------


def cancel(subscription: Subscription, at_next_billing_date: bool = False, feedback: str | None = None,
           comment: str | None = None, actor: dict | None = None,
           event_data: dict | None = None) -> Subscription:
    """Cancel now, or at the next billing date (the customer may undo that before the date);
    ``event_data`` is added to the event's payload (the retention offer declined).

    Cancelling now is always accepted: a charge still in flight that then succeeds is
    refunded in full (see ``settle``), so "you will not be charged again" stays true. Setting
    (or undoing) the end at the next billing date waits until a renewal in flight is settled
    (``PREVIOUS_PAYMENT_PENDING``), since that renewal decides which date is next."""
    with transaction():
        sub = _locked_subscription(subscription.id)
        details = {"cancellation_feedback": feedback or sub.cancellation_feedback,
                   "cancellation_comment": comment or sub.cancellation_comment,
                   "cancelled_by": actor or sub.cancelled_by}
        if not at_next_billing_date:
            _transition(sub, "cancelled", event_data, cancelled_at=utcnow(),
                        cancel_at_next_billing_date=False, paused_at=None, resume_at=None, **details)
            for payment in Payment.select(Payment.id).where((Payment.subscription == sub)
                                                            & Payment.status.in_(OPEN)):
                later(withdraw_charge, payment.id, job_id=f"withdraw-{payment.id}", unique=True)
            return sub
        if sub.status != "active":
            raise BillingError("SUBSCRIPTION_INACTIVE",
                               f"the subscription is {sub.status}: "
                               "it cannot be cancelled at its next billing date")
        _refuse_while_in_flight(sub, ("renewal",))
        for name, value in details.items():
            setattr(sub, name, value)
        sub.cancel_at_next_billing_date, sub.updated_at = True, utcnow()
        sub.save()
        _emit_subscription("subscription.updated", sub, **(event_data or {}))
        _emit_notice("subscription.cancellation_scheduled", sub)
        return sub


def undo_cancel(subscription: Subscription) -> Subscription:
    """Keep a subscription that was set to cancel at its next billing date."""
    with transaction():
        sub = _locked_subscription(subscription.id)
        if sub.status != "active" or not sub.cancel_at_next_billing_date:
            raise BillingError("SUBSCRIPTION_INACTIVE", "this subscription is not set to cancel")
        _refuse_while_in_flight(sub, ("renewal",))
        sub.cancel_at_next_billing_date, sub.updated_at = False, utcnow()
        sub.cancellation_feedback = sub.cancellation_comment = sub.cancelled_by = None
        sub.save()
        CancellationRequest.update(outcome="undone").where(  # the customer stayed after all
            (CancellationRequest.subscription == sub.id) & (CancellationRequest.when == "period_end")
            & (CancellationRequest.outcome == "cancelled")).execute()
        _emit_subscription("subscription.updated", sub)
        return sub


def update_details(subscription: Subscription, billing: dict | None = None,
                   metadata: dict | None = None) -> Subscription:
    """Replace a subscription's billing address and/or metadata (never its status or amounts)."""
    with transaction():
        sub = _locked_subscription(subscription.id)
        if billing is not None:
            sub.billing = billing
        if metadata is not None:
            sub.metadata = metadata
        sub.updated_at = utcnow()
        sub.save()
        _emit_subscription("subscription.updated", sub)
        return sub


# --- Next billing date -----------------------------------------------------------------------

CLOCK_SKEW = timedelta(minutes=1)  # a date this close before now is read as now


def move_next_billing_date(subscription: Subscription, when: datetime) -> Subscription:
    """Move the next renewal of an active subscription to ``when`` (Dodo's
    ``next_billing_date``): later, or earlier down to now, never into the past. An earlier date
    makes the renewal due sooner (the sweep renews it once it has come); the periods after it
    count from the new date. A date within ``CLOCK_SKEW`` before now reads as now.

    Raises ``BillingError``: ``INVALID_NEXT_BILLING_DATE`` for a date in the past or after the
    end of the term (``expires_at``), ``SUBSCRIPTION_INACTIVE`` when the subscription is not
    active, ``PREVIOUS_PAYMENT_PENDING`` while a charge of it is in flight (that charge decides
    which period is paid)."""
    now = utcnow()
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    if when < now - CLOCK_SKEW:
        raise BillingError("INVALID_NEXT_BILLING_DATE", "the next billing date must not be in "
                           f"the past (it is now {now:%Y-%m-%dT%H:%M:%SZ})")
    when = max(when, now)
    with transaction():
        sub = _locked_subscription(subscription.id)
        if sub.status != "active":
            raise BillingError("SUBSCRIPTION_INACTIVE",
                               f"a {sub.status} subscription has no next billing date to move")
        if sub.expires_at and when > sub.expires_at:
            raise BillingError("INVALID_NEXT_BILLING_DATE",
                               f"the next billing date must not be after the end of the "
                               f"subscription's term ({payloads.iso(sub.expires_at)})")
        _refuse_while_in_flight(sub)
        _start_periods_at(sub, when)
        if sub.scheduled_change:  # it applies with the renewal, now on the new date
            sub.scheduled_change = {**sub.scheduled_change, "effective_at": payloads.iso(when)}
        sub.updated_at = utcnow()
        sub.save()
        _emit_subscription("subscription.updated", sub)
        return sub


def _start_periods_at(sub: Subscription, when: datetime):
    """Make ``when`` the next billing date, and the periods after it count from it: the
    anchor moves there, and no period of that anchor has been renewed yet (``cycles`` -1:
    the renewal due at ``when`` pays period 0, ``when`` to ``when`` + one interval)."""
    sub.next_billing_date, sub.billing_anchor, sub.cycles = when, when, -1


# --- Pausing ---------------------------------------------------------------------------------


def pause(subscription: Subscription, resume_at: datetime | None = None) -> Subscription:
    """Pause an active subscription: nothing is renewed while it is paused, and the paid time
    it had left (to its next billing date) is kept for when it resumes (``resume``), by hand
    or by itself at ``resume_at`` (the sweep).

    A pause never meets a charge half-way: while a charge of the subscription is in flight it
    is refused (``PREVIOUS_PAYMENT_PENDING``), since that charge's outcome decides which period
    is paid; a renewal that has not started when the pause is made is never started (renewals
    are of active subscriptions only). Also refused: a subscription not active
    (``INVALID_SUBSCRIPTION_TRANSITION``), one set to end at its next billing date
    (``CANCELLATION_SCHEDULED``: keep it first), a ``resume_at`` not in the future
    (``INVALID_RESUME_DATE``)."""
    now = utcnow()
    if resume_at is not None and resume_at <= now:
        raise BillingError("INVALID_RESUME_DATE", "the resume date must be in the future")
    with transaction():
        sub = _locked_subscription(subscription.id)
        if sub.status == "active" and sub.cancel_at_next_billing_date:
            raise BillingError("CANCELLATION_SCHEDULED", "this subscription ends at its next billing "
                               "date: keep it before pausing it")
        if sub.status == "active":
            _refuse_while_in_flight(sub)
        return _transition(sub, "paused", paused_at=now, resume_at=resume_at)


def resume(subscription: Subscription) -> Subscription:
    """Resume a paused subscription: billing restarts with the paid time it had left when
    paused, so its next billing date is now plus that time (now, if none was left: then the
    sweep renews it at once). Emits ``subscription.unpaused``."""
    with transaction():
        sub = _locked_subscription(subscription.id)
        if sub.status != "paused":
            raise BillingError("SUBSCRIPTION_NOT_PAUSED",
                               f"the subscription is {sub.status}, not paused: nothing to resume")
        now = utcnow()
        left = max(sub.next_billing_date - (sub.paused_at or now), timedelta(0))
        _start_periods_at(sub, now + left)
        return _transition(sub, "active", paused_at=None, resume_at=None)


def resume_when_due(subscription_id: str):
    """Job: resume a paused subscription whose resume date has come (queued by the sweep)."""
    sub = Subscription.get_or_none(Subscription.id == subscription_id)
    if sub is None or sub.status != "paused" or sub.resume_at is None or sub.resume_at > utcnow():
        return None
    try:
        return resume(sub)
    except BillingError:  # resumed or cancelled meanwhile
        return None


# --- Renewal reminders -----------------------------------------------------------------------

REMINDER_PLANS = ("yearly", "all", "off")
REMINDER_DEFAULTS = {"renewal_reminders": "yearly", "renewal_reminder_days": 30}


def reminder_settings(business: Business) -> tuple[str, int]:
    """``(plans, days)``: which subscriptions get a renewal reminder (``yearly``: billed once a
    year or less often, the default, as auto-renewal laws ask for long terms; ``all``;
    ``off``) and how many days before the renewal (default 30)."""
    settings = {**REMINDER_DEFAULTS, **(business.settings or {})}
    plans = settings["renewal_reminders"]
    return (plans if plans in REMINDER_PLANS else "yearly"), int(settings["renewal_reminder_days"])


def _yearly():
    """Subscriptions billed once a year or less often."""
    count, interval = Subscription.payment_frequency_count, Subscription.payment_frequency_interval
    return ((interval == "Year") | ((interval == "Month") & (count >= 12))
            | ((interval == "Week") & (count >= 52)) | ((interval == "Day") & (count >= 365)))


def reminders_due(now: datetime) -> list[list[str]]:
    """``[subscription_id, due]`` of the renewals whose reminder is due as of ``now`` and not
    sent yet: active, not ending (cancelled at, or its term over by, that date), renewing
    within the business's reminder days. A free trial's end has its own notice
    (``trial_endings_due``)."""
    owed = []
    for business in Business.select(Business.id, Business.settings):
        plans, days = reminder_settings(business)
        if plans == "off":
            continue
        query = (Subscription.select(Subscription.id, Subscription.next_billing_date)
                 .where((Subscription.business == business.id) & (Subscription.status == "active")
                        & ~Subscription.cancel_at_next_billing_date & ~Subscription.in_trial
                        & (Subscription.next_billing_date > now)
                        & (Subscription.next_billing_date <= now + timedelta(days=days))
                        & (Subscription.expires_at.is_null()
                           | (Subscription.expires_at > Subscription.next_billing_date))
                        & (Subscription.renewal_reminded_for.is_null()
                           | (Subscription.renewal_reminded_for != Subscription.next_billing_date))))
        if plans == "yearly":
            query = query.where(_yearly())
        owed += [[sub.id, payloads.iso(sub.next_billing_date)] for sub in query]
    return owed


def renewal_quote(sub: Subscription) -> tuple[int, int]:
    """``(amount, tax)`` the next renewal of ``sub`` is to charge, in its currency's minor
    units: ``next_charge``, the one amount the renewal charges and the portal shows (a plan
    change or an announced price for that date, and credit, included)."""
    charge = next_charge(sub)
    return charge["amount"], charge["tax"]


def remind_renewal(subscription_id: str, due: str):
    """Job: tell the customer that their subscription renews at ``due`` (ISO), with the amount
    and a link to it; once per renewal date (``renewal_reminded_for``, set in the same
    transaction as the notice is recorded)."""
    return _notify_once(subscription_id, due, "subscription.renewal_reminder",
                        lambda sub: not sub.in_trial and not (
                            sub.expires_at and sub.expires_at <= sub.next_billing_date))


def _notify_once(subscription_id: str, due: str, type: str, still_owed):
    """Tell the customer, once per billing date ``due`` (ISO), what their next charge will be:
    a ``customer_only`` notice ``type`` with the amount (``renewal_quote``), recorded in the
    same transaction as ``renewal_reminded_for`` is set. Nothing when the subscription is no
    longer active, is set to cancel, has moved its date, was told already, or when
    ``still_owed(sub)`` says this notice no longer applies."""
    with transaction():
        sub = for_update(Subscription.select().where(Subscription.id == subscription_id)).first()
        if (sub is None or sub.status != "active" or sub.cancel_at_next_billing_date
                or payloads.iso(sub.next_billing_date) != due
                or sub.renewal_reminded_for == sub.next_billing_date or not still_owed(sub)):
            return None
        amount, tax = renewal_quote(sub)
        Subscription.update(renewal_reminded_for=sub.next_billing_date).where(
            Subscription.id == sub.id).execute()
        return _emit_notice(type, sub, renewal_amount=amount, renewal_tax=tax)


# --- Trial endings ----------------------------------------------------------------------------

TRIAL_NOTICE = timedelta(days=3)  # a trial's end is announced this long before its first charge


def trial_endings_due(now: datetime) -> list[list[str]]:
    """``[subscription_id, due]`` of the free trials ending within ``TRIAL_NOTICE`` of ``now``
    whose customer has not been told yet: in trial, active, not set to cancel at its end."""
    query = (Subscription.select(Subscription.id, Subscription.next_billing_date)
             .where(Subscription.in_trial & (Subscription.status == "active")
                    & ~Subscription.cancel_at_next_billing_date
                    & (Subscription.next_billing_date > now)
                    & (Subscription.next_billing_date <= now + TRIAL_NOTICE)
                    & (Subscription.renewal_reminded_for.is_null()
                       | (Subscription.renewal_reminded_for != Subscription.next_billing_date))))
    return [[sub.id, payloads.iso(sub.next_billing_date)] for sub in query]


def announce_trial_end(subscription_id: str, due: str):
    """Job: tell the customer that their free trial ends at ``due`` (ISO) and what is then
    charged, with a link to cancel before; once per trial end (``renewal_reminded_for``, set
    in the same transaction as the notice is recorded). Dodo has no event for it: a
    ``customer_only`` notice, ``subscription.trial_ending``, which no webhook carries."""
    return _notify_once(subscription_id, due, "subscription.trial_ending", lambda sub: sub.in_trial)


# --- Plan changes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanChange:
    """What a plan change would do, computed without changing anything.

    Within one billing cycle an upgrade is charged now, prorated to the day, and a downgrade
    waits for the next billing date. Across cycles (monthly ⇄ yearly) the new cycle starts at
    the change: its first period is charged now, less the unused time of the current period
    (credited as Stripe does; what the charge does not use stays as credit for the next
    ones). With ``effective_at="next_billing_date"`` any change waits for that date, and so
    does any change during a free trial: nothing is charged in a trial, and its first charge,
    at its end, is the new plan's."""

    product_id: str
    quantity: int
    amount_due: int  # charged now, tax included, credit taken off (0 when nothing is due)
    tax_due: int
    new_recurring_pre_tax_amount: int
    new_recurring_amount: int  # per period, tax included, less a discount the change keeps
    currency: str
    effective_at: datetime
    upgrade: bool  # applies now (once paid), else at the next billing date
    price: dict  # the new price (see ``catalogue_price``)
    new_cycle: bool = False  # the billing cycle changes: a new period starts at the change
    next_billing_date: datetime | None = None  # the billing date after the change
    credit: int = 0  # unused time of the current period and credit balance, tax included
    credit_left: int = 0  # what the charge now leaves of ``credit``
    dropped_addons: tuple = ()  # names of add-ons the new plan does not offer
    drops_discount: bool = False  # the subscription's discount ends with the change
    charge: dict | None = None  # the charge made now (``_charge_for``), if any
    replaces: dict | None = None  # the change waiting for the next billing date, replaced

    @property
    def payment_frequency_count(self) -> int:
        return self.price["payment_frequency_count"]

    @property
    def payment_frequency_interval(self) -> str:
        return self.price["payment_frequency_interval"]


def planned_plan(sub: Subscription) -> tuple[int, list[dict]]:
    """The quantity and add-ons ([{addon_id, name, quantity, …}]) of the subscription's plan
    at its next billing date: those of a change of its seats or add-ons waiting for it, else
    today's. A new change is built on them; a waiting change to another plan is replaced as
    a whole."""
    change = sub.scheduled_change
    if change and change["product_id"] == sub.product_id and change.get("price"):
        return change["quantity"], change["price"]["addons"]
    return sub.quantity, sub.addons


def _new_addons(sub: Subscription, product: Product, addons) -> tuple[list[dict], tuple]:
    """The add-ons a plan change leaves: ``addons`` as asked ([{addon_id, quantity}]; an empty
    list removes them all), refused (``ADDON_NOT_OFFERED``, naming them) when ``product`` does
    not offer one; or, with ``addons`` ``None``, those the subscription will have
    (``planned_plan``: a change waiting for the next billing date is built on, not lost)
    that ``product`` offers, with the names of those it drops."""
    from core.models import Addon, ProductAddon

    offered = {link.addon_id for link in ProductAddon.select(ProductAddon.addon)
               .join(Addon).where((ProductAddon.product == product) & (Addon.archived == False))}  # noqa: E712
    if addons is None:
        planned = planned_plan(sub)[1]
        kept = [{"addon_id": item["addon_id"], "quantity": item["quantity"]}
                for item in planned if item["addon_id"] in offered]
        dropped = tuple(item.get("name") or item["addon_id"] for item in planned
                        if item["addon_id"] not in offered)
        return kept, dropped
    asked = [{"addon_id": item["addon_id"], "quantity": int(item.get("quantity", 1))}
             for item in addons]
    refused = [item["addon_id"] for item in asked if item["addon_id"] not in offered]
    if refused:
        names = dict(Addon.select(Addon.id, Addon.name).where(
            (Addon.id.in_(refused)) & (Addon.business == sub.business_id)).tuples())
        raise BillingError("ADDON_NOT_OFFERED", f"{product.name} does not offer "
                           + ", ".join(names.get(addon_id, addon_id) for addon_id in refused))
    if any(item["quantity"] < 1 for item in asked):
        raise BillingError("INVALID_REQUEST_PARAMETERS", "an add-on's quantity must be at least 1")
    return asked, ()


def preview_plan_change(subscription: Subscription, product: Product, quantity: int = 1,
                        now: datetime | None = None, addons=None,
                        effective_at: str = "immediately") -> PlanChange:
    """What moving to ``product`` × ``quantity`` (with ``addons``, see ``_new_addons``) would
    charge now, from when, and what each period costs then (see ``PlanChange``)."""
    sub = subscription
    _check_product(sub.customer, product)
    if sub.status != "active":
        raise BillingError("INACTIVE_SUBSCRIPTION_PLAN_CHANGE_NOT_SUPPORTED",
                           f"the subscription is {sub.status}: it cannot change plan")
    if not product.is_recurring or product.currency != sub.currency:
        raise BillingError("INVALID_REQUEST_PARAMETERS",
                           f"{product.name} cannot replace this plan "
                           f"(it must be a {sub.currency} subscription)")
    if quantity < 1:
        raise BillingError("INVALID_REQUEST_PARAMETERS", "quantity must be at least 1")
    now = now or utcnow()
    kept, dropped = _new_addons(sub, product, addons)
    price = catalogue_price(product, quantity, kept)
    per_period = price_charge(price)
    new_pre_tax = sum(item["amount"] for item in per_period["lines"])
    kept_discount = current_discount(sub)
    if kept_discount and (kept_discount.get("preserve_on_plan_change") or product.id == sub.product_id):
        per_period = price_charge(price, discount=kept_discount)  # what the renewals charge
    else:
        kept_discount = None
    new_cycle = ((price["payment_frequency_count"], price["payment_frequency_interval"])
                 != (sub.payment_frequency_count, sub.payment_frequency_interval))
    common = {"product_id": product.id, "quantity": quantity, "currency": sub.currency,
              "new_recurring_pre_tax_amount": new_pre_tax, "new_recurring_amount": per_period["total"],
              "price": price, "new_cycle": new_cycle, "dropped_addons": dropped,
              "drops_discount": bool(current_discount(sub)) and kept_discount is None,
              "replaces": sub.scheduled_change or None}
    period_days = (sub.next_billing_date.date() - sub.previous_billing_date.date()).days or 1
    left_days = max((sub.next_billing_date.date() - now.date()).days, 0)
    if effective_at == "next_billing_date" or sub.in_trial:  # a trial's first charge pays it
        return PlanChange(**common, amount_due=0, tax_due=0, effective_at=sub.next_billing_date,
                          upgrade=False, next_billing_date=sub.next_billing_date)
    if new_cycle:
        old_total, _ = split_tax(sub.recurring_pre_tax_amount, sub.tax_rate_bps, sub.tax_inclusive)
        credit = round_half_up(Fraction(old_total * left_days, period_days)) + sub.credit_balance
        charge = price_charge(price, "plan_period", credit)
        return PlanChange(**common, amount_due=charge["amount"], tax_due=charge["tax"],
                          effective_at=now, upgrade=True,
                          next_billing_date=add_interval(now, price["payment_frequency_interval"],
                                                         price["payment_frequency_count"]),
                          credit=credit, credit_left=credit - charge["credit_applied"],
                          charge=charge)
    difference = new_pre_tax - sub.recurring_pre_tax_amount
    if difference <= 0:
        return PlanChange(**common, amount_due=0, tax_due=0, effective_at=sub.next_billing_date,
                          upgrade=False, next_billing_date=sub.next_billing_date)
    prorated = round_half_up(Fraction(difference * left_days, period_days))
    facts = {"plan_quantity": quantity, "addons": _named(price["addons"]),
             "from_product_name": sub.product.name, "from_quantity": sub.quantity,
             "from_addons": _named(sub.addons)}
    label = (f"{_plan_text(product.name, quantity, facts['addons'])} (was "
             f"{_plan_text(sub.product.name, sub.quantity, facts['from_addons'])}), "
             f"prorated until {sub.next_billing_date:%d %b %Y}")
    charge = _charge_for([line("plan_change", product.name, 1, prorated, description=label, **facts)],
                         price["tax_rate_bps"], price["tax_inclusive"], sub.credit_balance)
    return PlanChange(**common, amount_due=charge["amount"], tax_due=charge["tax"],
                      effective_at=now, upgrade=True, next_billing_date=sub.next_billing_date,
                      credit=sub.credit_balance,
                      credit_left=sub.credit_balance - charge["credit_applied"], charge=charge)


def _named(addons) -> list[dict]:
    """Add-ons as an invoice line names them: ``[{name, quantity}]``."""
    return [{"name": item.get("name") or item["addon_id"], "quantity": item["quantity"]}
            for item in addons]


def _plan_text(name: str, quantity: int, addons) -> str:
    """A plan in the English kept as a line's ``description``: "Pro × 2 with Storage × 1"."""
    return f"{name} × {quantity}" + "".join(
        f"{' with ' if i == 0 else ', '}{item['name']} × {item['quantity']}"
        for i, item in enumerate(addons))


def change_plan(subscription: Subscription, product: Product, quantity: int = 1, addons=None,
                effective_at: str = "immediately") -> Payment | None:
    """Change plan, quantity or add-ons as ``preview_plan_change`` says: what is due now is
    charged and the change applies once paid; a change that waits is scheduled for the next
    billing date. Returns the payment made now, if any.

    One change waits at a time, and a new change replaces it either way (``replaces`` in the
    preview): it is built on the waiting one, whose add-ons it keeps unless it names its own
    (``_new_addons``), so a seat change after an add-on removal keeps the removal.

    Refused (``PREVIOUS_PAYMENT_PENDING``) while any charge of the subscription is in flight:
    the amount due depends on how that charge ends."""
    with transaction():
        sub = _locked_subscription(subscription.id)
        preview = preview_plan_change(sub, product, quantity, addons=addons,
                                      effective_at=effective_at)
        _refuse_while_in_flight(sub)
        now = utcnow()
        change = {"product_id": product.id, "quantity": quantity, "price": preview.price,
                  "recurring_pre_tax_amount": preview.new_recurring_pre_tax_amount,
                  "credit_left": preview.credit_left}
        if not preview.upgrade:
            sub.scheduled_change = {**change, "effective_at": payloads.iso(preview.effective_at),
                                    "product_name": product.name, "id": new_id("spc"),
                                    "created_at": payloads.iso(now)}
            sub.updated_at = now
            sub.save()
            _emit_subscription("subscription.updated", sub)
            return None
        period = ((now, preview.next_billing_date) if preview.new_cycle
                  else (now, sub.next_billing_date))
        if preview.amount_due == 0:
            _apply_plan(sub, change, *period, credit_applied=(preview.charge or {}).get("credit_applied", 0))
            return None
        last = (Payment.select().where((Payment.subscription == sub) & (Payment.kind == "plan_change"))
                .order_by(Payment.created_at.desc()).first())
        if (last is not None and last.status == "failed"
                and last.metadata.get("change", {}).get("price") == change["price"]
                and last.payment_method_id == sub.payment_method_id
                and last.created_at > now - SAME_CARD_RETRY):
            return last  # the same change on the card that just declined: the same answer
        payment = _new_payment(sub.customer, sub.payment_method, "plan_change", preview.charge,
                               f"plan_change:{sub.id}:{new_id('ik')}", subscription=sub,
                               product=product, period=period, description=product.name,
                               metadata={"change": {**change, "from_product_id": sub.product_id}})
        _queue_charge(payment)
    return payment


def cancel_scheduled_change(subscription: Subscription) -> Subscription:
    """Drop a downgrade waiting for the next billing date: the plan stays as it is."""
    with transaction():
        sub = _locked_subscription(subscription.id)
        if not sub.scheduled_change:
            raise BillingError("NO_SCHEDULED_PLAN_CHANGE", "this subscription has no plan change scheduled")
        sub.scheduled_change, sub.updated_at = None, utcnow()
        sub.save()
        _emit_subscription("subscription.updated", sub)
        return sub


def _apply_plan(sub: Subscription, change: dict, start: datetime | None = None,
                end: datetime | None = None, credit_applied: int = 0):
    """Make a plan change's price the subscription's own. A new billing cycle starts at
    ``start``: paid until ``end`` when the change was charged now (the credit it leaves is
    kept), or charged by the renewal under way when ``end`` is ``None``."""
    product = Product.get_by_id(change["product_id"])
    price = change.get("price") or catalogue_price(product, change["quantity"], sub.addons)
    new_cycle = ((price["payment_frequency_count"], price["payment_frequency_interval"])
                 != (sub.payment_frequency_count, sub.payment_frequency_interval))
    if (sub.discount and not sub.discount.get("preserve_on_plan_change")
            and product.id != sub.product_id):
        sub.discount = sub.discount_cycles_remaining = None  # as Dodo: another plan drops it
    _record_price(sub, price)
    if new_cycle and start is not None:
        sub.billing_anchor, sub.cycles = start, 0 if end is not None else -1
        sub.expires_at = add_interval(start, product.subscription_period_interval,
                                      product.subscription_period_count)
        if end is not None:
            sub.previous_billing_date, sub.next_billing_date = start, end
            sub.credit_balance = change.get("credit_left", sub.credit_balance)
            credit_applied = 0
    sub.credit_balance = max(sub.credit_balance - credit_applied, 0)
    sub.scheduled_change = sub.price_change = None
    sub.updated_at = utcnow()
    sub.save()
    _emit_subscription("subscription.plan_changed", sub)


# --- Price changes -----------------------------------------------------------------------------


def announce_price(product: Product, notice: timedelta, not_before: datetime | None = None,
                   now: datetime | None = None) -> list[Subscription]:
    """Move the active subscriptions of ``product`` to its catalogue price (and its add-ons'),
    from their first billing date at least ``notice`` from now (and not before
    ``not_before``). Each subscriber is told, by a ``subscription.price_change_scheduled``
    event (an e-mail with the new amount and the date), before anything is charged at it.
    Subscriptions already at that price are left alone; returns those moved."""
    now = now or utcnow()
    earliest = max(now + notice, not_before or now)
    moved = []
    subs = Subscription.select(Subscription.id).where(
        (Subscription.product == product) & (Subscription.status.in_(("active", "on_hold"))))
    for row in subs:
        with transaction():
            sub = _locked_subscription(row.id)
            if sub.product_id != product.id or sub.status not in ("active", "on_hold"):
                continue
            new = catalogue_price(product, sub.quantity, sub.addons)
            if not _differs(new, recorded_price(sub)):
                if sub.price_change:  # the catalogue went back to what it records
                    sub.price_change, sub.updated_at = None, utcnow()
                    sub.save()
                continue
            effective, cycle = sub.next_billing_date, sub.cycles + 1
            while effective < earliest:
                effective, cycle = _period_end(sub, cycle), cycle + 1
            old_total, _ = split_tax(sub.recurring_pre_tax_amount, sub.tax_rate_bps,
                                     sub.tax_inclusive)
            per_period = price_charge(new)
            sub.price_change = {
                "unit_amount": new["unit_amount"], "tax_rate_bps": new["tax_rate_bps"],
                "tax_inclusive": new["tax_inclusive"],
                "addons": [{"addon_id": a["addon_id"], "unit_amount": a["unit_amount"]}
                           for a in new["addons"]],
                "effective_at": payloads.iso(effective), "announced_at": payloads.iso(now),
                "amount": per_period["total"], "previous_amount": old_total,
                "payment_frequency_count": sub.payment_frequency_count,
                "payment_frequency_interval": sub.payment_frequency_interval}
            sub.updated_at = utcnow()
            sub.save()
            _emit_subscription("subscription.price_change_scheduled", sub,
                               price_change=sub.price_change)
            moved.append(sub)
    return moved


def price_change_notice() -> timedelta:
    """How long ahead subscribers are told of a new price (``PRICE_CHANGE_NOTICE_DAYS``)."""
    return timedelta(days=current_app.config["PRICE_CHANGE_NOTICE_DAYS"])


def subscriptions_on_older_price(product: Product) -> int:
    """How many active or on-hold subscriptions of ``product`` record a price other than its
    catalogue price, with no change to it announced yet (two queries, however many)."""
    from core.models import Addon

    addon_prices = dict(Addon.select(Addon.id, Addon.price)
                        .where(Addon.business == product.business_id).tuples())
    subs = Subscription.select().where((Subscription.product == product)
                                       & Subscription.status.in_(("active", "on_hold"))
                                       & Subscription.price_change.is_null())
    return sum(1 for sub in subs if (
        (sub.unit_amount, sub.tax_rate_bps, sub.tax_inclusive)
        != (product.price, product.tax_rate_bps, product.tax_inclusive)
        or any(item["unit_amount"] != addon_prices.get(item["addon_id"], item["unit_amount"])
               for item in sub.addons)))


def _differs(new: dict, current: dict) -> bool:
    return (any(new[name] != current[name] for name in ("unit_amount", "tax_rate_bps", "tax_inclusive"))
            or [a["unit_amount"] for a in new["addons"]] != [a["unit_amount"] for a in current["addons"]])


def _apply_price_change(sub: Subscription):
    """An announced price change whose date has come: the subscription's price becomes it."""
    _record_price(sub, _with_price_change(recorded_price(sub), sub.price_change))
    sub.price_change, sub.updated_at = None, utcnow()
    sub.save()
    _emit_subscription("subscription.updated", sub)


# --- Invoices --------------------------------------------------------------------------------


def _next_number(sequence_model, business_id: str, mode: str) -> int:
    """Take the next number of a gapless sequence (invoices, credit notes) of a business and
    mode; call inside a transaction, whose rollback gives the number back."""
    where = (sequence_model.business == business_id) & (sequence_model.mode == mode)
    (sequence_model.insert(business=business_id, mode=mode, last_number=0)
     .on_conflict_ignore().execute())
    sequence = for_update(sequence_model.select().where(where)).get()
    number = sequence.last_number + 1
    sequence_model.update(last_number=number).where(where).execute()
    return number


def _seller(business: Business) -> dict:
    return {"name": business.name, "legal_name": business.legal_name or business.name,
            "address": business.address, "tax_id": business.tax_id,
            "support_email": business.support_email, "logo": business.logo}


def _buyer(customer: Customer) -> dict:
    return {"name": customer.name, "email": customer.email, "address": customer.billing_address,
            "tax_id": customer.tax_id}


def card_label(method) -> str:
    """How a saved card reads to people: ``Visa •••• 4242``."""
    if method is None:
        return ""
    return f"{(method.brand or 'Card').title()} •••• {method.last4}"


def issue_invoice(payment: Payment, lines: list[dict]) -> Invoice:
    """The invoice of a succeeded payment: issued once, numbered without gaps per business and
    mode, with the seller's and buyer's details, lines, tax and totals frozen at issue.

    ``lines`` are ``{"description", "quantity", "unit_amount", "amount"}`` in minor units, each
    ``unit_amount`` × ``quantity`` = ``amount``: gross (tax included) when the payment's
    metadata says ``tax_inclusive``, net otherwise. Their sum (plus the tax, for net lines) is
    the invoice's total; the payment's amount is that total less the credit applied.
    Raises ``ValueError`` when they do not add up so.
    """
    if payment.status != "succeeded":
        raise ValueError(f"payment {payment.id} has not succeeded: no invoice")
    inclusive, credit = charge_terms(payment)
    for item in lines:
        if item["unit_amount"] * item["quantity"] != item["amount"]:
            raise ValueError(f"invoice line {item['description']!r} does not multiply out")
    total = sum(item["amount"] for item in lines) + (0 if inclusive else payment.tax)
    if total - credit != payment.amount:
        raise ValueError(f"invoice lines (total {total}, credit {credit}) do not add up to "
                         f"the payment's {payment.amount}")
    with transaction():
        existing = Invoice.get_or_none(Invoice.payment == payment)
        if existing:
            return existing
        number = _next_number(InvoiceSequence, payment.business_id, payment.mode)
        return Invoice.create(
            business=payment.business_id, mode=payment.mode, customer=payment.customer_id,
            payment=payment, number=number, issued_at=utcnow(), currency=payment.currency,
            lines=lines, tax_inclusive=inclusive, subtotal=total - payment.tax, tax=payment.tax,
            total=total, credit_applied=credit,
            seller=_seller(payment.business), buyer=_buyer(payment.customer),
            payment_details={"method": card_label(payment.payment_method), "status": "paid",
                             "paid_at": payloads.iso(payment.updated_at)})


def render_invoice_html(invoice: Invoice, locale: str | None = None) -> str:
    """The invoice as HTML, in the customer's language, for renderers and previews."""
    from flask import render_template
    from flask_babel import force_locale

    from core.i18n import customer_locale
    from core.money import format_money

    locale = locale or customer_locale(invoice.customer)
    with force_locale(locale):
        return render_template("invoice/invoice.html", invoice=invoice, locale=locale,
                               money=lambda amount, currency: format_money(amount, currency, locale))


def invoice_pdf(invoice: Invoice, locale: str | None = None) -> bytes:
    """The invoice's PDF in ``locale`` (default: the customer's language now): rendered once
    per language through the ``render_invoice`` hook, then kept in the database
    (``InvoicePdf``) so every web process serves the same bytes. The facts printed never
    change after issue; only their wording follows the language."""
    from core.i18n import customer_locale
    from core.plugins import registry

    locale = locale or customer_locale(invoice.customer)
    kept = InvoicePdf.get_or_none((InvoicePdf.invoice == invoice.id) & (InvoicePdf.locale == locale))
    if kept is not None:
        return bytes(kept.pdf)
    pdf = registry().pm.hook.render_invoice(invoice=invoice, html=render_invoice_html(invoice, locale),
                                            app=current_app._get_current_object())
    if not pdf:
        raise RuntimeError("no invoice renderer answered: enable the pdf plugin or install one")
    InvoicePdf.insert(invoice=invoice.id, locale=locale, pdf=pdf).on_conflict_ignore().execute()
    return pdf


@dataclass(frozen=True)
class CreditNoteDocument:
    """A succeeded refund's credit note, shaped like an invoice for the invoice template and
    the ``render_invoice`` hook; its contents are the refund's frozen ``credit_note``."""

    id: str
    display_number: str
    corrects_invoice_number: str
    issued_at: datetime
    currency: str
    seller: dict
    buyer: dict
    lines: list
    subtotal: int
    tax: int
    total: int
    payment_details: dict
    customer: Customer
    mode: str
    tax_inclusive: bool = False
    credit_applied: int = 0


def credit_note_pdf(refund: Refund) -> bytes:
    """The credit note of a succeeded refund as a PDF (rendered once, then kept)."""
    if refund.status != "succeeded" or not refund.credit_note:
        raise ValueError(f"refund {refund.id} has not succeeded: no credit note")
    if refund.pdf:
        return bytes(refund.pdf)
    from core.plugins import registry

    note = refund.credit_note
    document = CreditNoteDocument(
        id=refund.id, display_number=refund.display_number,
        corrects_invoice_number=note["invoice_number"], issued_at=refund.issued_at,
        currency=refund.currency, seller=note["seller"], buyer=note["buyer"], lines=note["lines"],
        subtotal=note["subtotal"], tax=note["tax"], total=note["total"],
        payment_details={"method": "", "status": "refunded", "paid_at": payloads.iso(refund.issued_at)},
        customer=refund.customer, mode=refund.mode, tax_inclusive=note.get("tax_inclusive", False))
    pdf = registry().pm.hook.render_invoice(invoice=document, html=render_invoice_html(document),
                                            app=current_app._get_current_object())
    if not pdf:
        raise RuntimeError("no invoice renderer answered: enable the pdf plugin or install one")
    Refund.update(pdf=pdf).where((Refund.id == refund.id) & Refund.pdf.is_null()).execute()
    return pdf


def render_invoice_pdf(invoice_id: str):
    """Job: render and keep an invoice's PDF ahead of its first download or receipt e-mail."""
    invoice = Invoice.get_or_none(Invoice.id == invoice_id)
    if invoice is not None:
        invoice_pdf(invoice)

