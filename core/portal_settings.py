"""The portal each merchant configures, per business and mode: which features customers have
(billing history, payment method update, cancellation, plan change and add-ons, seat change,
pausing, the profile fields they may edit, license activation removal), how cancellation works
(when, with or without a prorated refund, which reasons are offered and whether one is
required, the discount offered to stay: ``core.retention``) and, per product, which products
and quantities a plan change may go to and whether a change is charged now (prorated) or at
the next renewal.

Settings are read afresh for every request (``current``), so a change applies to the next page
a customer opens. A business that never changed them has ``DEFAULTS``: everything on but pausing, the
customer's choice of when to cancel, Dodo's ``cancellation_feedback`` values as reasons.
"""

import copy
from datetime import datetime
from fractions import Fraction

from flask import current_app, request
from peewee import IntegrityError

from core import billing
from core.models import (
    Payment,
    PortalConfiguration,
    Prepared,
    Product,
    Refund,
    Subscription,
    db,
    utcnow,
)

REASONS = ("too_expensive", "missing_features", "switched_service", "unused", "customer_service",
           "low_quality", "too_complex", "other")  # Dodo's CancellationFeedback values
CANCELLATION_MODES = ("customer_choice", "immediately", "at_period_end")
PRORATIONS = ("prorated_immediately", "next_billing_date")
PROFILE_FIELDS = ("name", "email", "phone", "billing_address", "tax_id")

DEFAULTS = {
    "billing_history": True,
    "payment_method_update": True,
    "license_activation_removal": True,
    "profile_fields": {name: True for name in PROFILE_FIELDS},
    "cancellation": {"enabled": True, "mode": "customer_choice", "prorated_refund": False,
                     "reasons": list(REASONS), "reason_required": False,
                     "retention_discount_id": None},
    "plan_change": {"enabled": True, "products": []},
    "quantity_change": {"enabled": True},
    "pause": {"enabled": False},  # customers pause and resume only where the merchant says so
}


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it, object by object (a list is replaced whole)."""
    result = copy.deepcopy(base)
    for name, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(name), dict):
            result[name] = merged(result[name], value)
        else:
            result[name] = copy.deepcopy(value)
    return result


def load(business_id: str, mode: str) -> tuple[dict, datetime | None]:
    """The settings of a business in one mode (defaults where it set nothing), and when they
    last changed (``None``: never)."""
    row = PortalConfiguration.get_or_none((PortalConfiguration.business == business_id)
                                          & (PortalConfiguration.mode == mode))
    return (merged(DEFAULTS, row.settings), row.updated_at) if row else (copy.deepcopy(DEFAULTS), None)


def save(business_id: str, mode: str, changes: dict) -> dict:
    """Lay ``changes`` over the stored settings and keep them; returns the whole settings."""
    settings = merged(load(business_id, mode)[0], changes)
    where = (PortalConfiguration.business == business_id) & (PortalConfiguration.mode == mode)
    if not PortalConfiguration.update(settings=settings, updated_at=utcnow()).where(where).execute():
        try:
            with db.atomic():
                PortalConfiguration.create(business=business_id, mode=mode, settings=settings)
        except IntegrityError:  # made by a concurrent change a moment ago
            PortalConfiguration.update(settings=settings, updated_at=utcnow()).where(where).execute()
    return settings


def current(business_id: str, mode: str) -> dict:
    """The settings for this request: read once per request (kept on the request itself, never
    beyond it), so the next request sees any change; what ``load`` gives, by the app's
    prepared query (``init_app``)."""
    memo = request.environ.setdefault("portico.portal_settings", {})
    if (business_id, mode) not in memo:
        rows = current_app.extensions["portico.portal_settings"].rows(business=business_id, mode=mode)
        memo[business_id, mode] = merged(DEFAULTS, rows[0][0]) if rows else copy.deepcopy(DEFAULTS)
    return memo[business_id, mode]


def init_app(app):
    """Write the SQL of ``current``'s query once for ``app``'s database (``models.Prepared``):
    every portal page runs it."""
    app.extensions["portico.portal_settings"] = Prepared(
        PortalConfiguration.select(PortalConfiguration.settings)
        .where((PortalConfiguration.business == Prepared.slot("business"))
               & (PortalConfiguration.mode == Prepared.slot("mode")))
        .limit(1))


def product_rule(settings: dict, product_id: str) -> dict | None:
    """The plan-change rule the merchant set for subscriptions of ``product_id``, if any."""
    return next((rule for rule in settings["plan_change"]["products"]
                 if rule["product_id"] == product_id), None)


def plans_to_switch_to(settings: dict, sub: Subscription):
    """The plans ``sub`` may move to, cheapest first: the business's other recurring products
    in its mode and currency, still on sale, and among those the ones the merchant lets its
    product switch to (its plan-change rule), when it names them."""
    plans = (Product.select()
             .where((Product.business == sub.business_id) & (Product.mode == sub.mode)
                    & (Product.is_recurring == True) & (Product.archived == False)  # noqa: E712
                    & (Product.currency == sub.currency) & (Product.id != sub.product_id))
             .order_by(Product.price, Product.name))
    rule = product_rule(settings, sub.product_id)
    limited = rule and rule.get("switch_to") is not None  # else the rule sets quantities only
    return plans.where(Product.id.in_(rule["switch_to"])) if limited else plans


def change_terms(settings: dict, product_id: str,
                 to_product_id: str | None = None) -> tuple[tuple[int, int], str]:
    """For a subscription of ``product_id`` changing to ``to_product_id`` (by default, its
    own plan: seats, add-ons): the quantities its customer may choose, ``(min, max)``, from
    the rule of the plan changed to, and when the change takes effect, from the rule of the
    plan changed from, as ``billing.change_plan``'s ``effective_at`` (``immediately``:
    charged now, prorated; ``next_billing_date``: at the next renewal); defaults where a
    plan has no rule."""
    rule = product_rule(settings, product_id) or {}
    when = "next_billing_date" if rule.get("proration") == "next_billing_date" else "immediately"
    if to_product_id and to_product_id != product_id:
        rule = product_rule(settings, to_product_id) or {}
    return (rule.get("min_quantity") or 1, rule.get("max_quantity") or 1000), when


def cancel_whens(settings: dict) -> tuple[str, ...]:
    """When a customer may cancel (``now``, ``period_end``), as the cancellation mode says."""
    mode = settings["cancellation"]["mode"]
    return {"immediately": ("now",), "at_period_end": ("period_end",)}.get(mode, ("period_end", "now"))


def unused_period(sub: Subscription, now: datetime | None = None) -> tuple[Payment, int] | None:
    """The unused part of the period already paid, as an immediate cancel would refund it:
    the payment that paid for the current period and its amount prorated to the day like a
    plan change (never more than is left of it), in minor units; ``None`` when nothing is due.
    The cancel page shows it before the customer confirms."""
    now = now or utcnow()
    paid = (Payment.select()
            .where((Payment.subscription == sub) & (Payment.status == "succeeded")
                   & Payment.kind.in_(("new", "renewal", "arrears"))
                   & (Payment.period_start <= now) & (Payment.period_end > now))
            .order_by(Payment.created_at.desc()).first())
    if paid is None:
        return None
    period_days = (paid.period_end.date() - paid.period_start.date()).days or 1
    left_days = max((paid.period_end.date() - now.date()).days, 0)
    amount = min(billing.round_half_up(Fraction(paid.amount * left_days, period_days)),
                 billing.refundable(paid))
    return (paid, amount) if amount > 0 else None


def refund_unused_period(sub: Subscription, now: datetime | None = None) -> Refund | None:
    """After an immediate cancel, refund ``unused_period`` through ``billing.refund_payment``.
    ``None`` when nothing is due."""
    due = unused_period(sub, now)
    if due is None:
        return None
    paid, amount = due
    return billing.refund_payment(paid, amount, reason="Prorated refund of the unused period",
                                  initiated_by="merchant",
                                  metadata={"policy": "prorated_refund_on_cancel"})
