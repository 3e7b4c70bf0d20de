"""The cancel flow's retention offer, and what customers said when they cancelled.

A merchant may name a discount code as the retention offer (the portal settings'
``cancellation.retention_discount_id``). A customer who asks to cancel in the portal is then
offered it once per subscription, instead of cancelling ("stay and get 20 % off your next 3
payments"): accepting gives the subscription the discount (``billing.apply_discount``) and
cancels nothing; declining cancels as they chose. Every request to cancel is kept
(``CancellationRequest``) with its reason and outcome, and told in the subscription's event
(``cancellation_feedback`` and ``retention_offer``), so the dashboard can count reasons and
offers accepted. Stripe's customer portal makes the same offer (its "retention coupon").
"""

from datetime import datetime, timedelta

from peewee import fn

from core import billing, portal_settings
from core.jobs import transaction
from core.models import CancellationRequest, Discount, Subscription, utcnow

OUTCOMES = ("cancelled", "offer_accepted")


def offer_for(sub: Subscription, settings: dict) -> Discount | None:
    """The discount to offer before ``sub`` is cancelled, if any: the one the settings name,
    while it can still be given to this subscription's product (``billing.check_discount``),
    to an active subscription that has not accepted an offer before and has no discount left
    to use (the offer would replace it: a customer is never moved to a smaller one)."""
    discount_id = settings["cancellation"].get("retention_discount_id")
    if not discount_id or sub.status != "active" or billing.current_discount(sub) is not None:
        return None
    discount = Discount.get_or_none((Discount.id == discount_id) & (Discount.business == sub.business_id)
                                    & (Discount.mode == sub.mode))
    if discount is None:
        return None
    try:
        billing.check_discount(discount, sub.product)
    except billing.BillingError:
        return None
    accepted = CancellationRequest.select().where(
        (CancellationRequest.subscription == sub) & (CancellationRequest.outcome == "offer_accepted"))
    return None if accepted.exists() else discount


def offerable(discount: Discount, now: datetime | None = None) -> bool:
    """Whether ``discount`` may still be given to anyone: not expired, not used up."""
    now = now or utcnow()
    return ((discount.expires_at is None or discount.expires_at > now)
            and (discount.usage_limit is None or discount.times_used < discount.usage_limit))


def forget(discount: Discount):
    """A deleted discount is no longer the retention offer of its business and mode."""
    settings = portal_settings.load(discount.business_id, discount.mode)[0]
    if settings["cancellation"].get("retention_discount_id") == discount.id:
        portal_settings.save(discount.business_id, discount.mode,
                             {"cancellation": {"retention_discount_id": None}})


def accept(sub: Subscription, discount: Discount, feedback: str | None, comment: str | None,
           when: str) -> Subscription:
    """The customer stays: ``sub`` gets ``discount`` (``subscription.updated`` says why) and
    the request is kept as ``offer_accepted``, in one transaction. Raises ``BillingError`` as
    ``billing.apply_discount`` does (the code used up meanwhile, say), changing nothing."""
    with transaction():
        sub = billing.apply_discount(sub, discount, event_data={
            "cancellation_feedback": feedback, "cancellation_comment": comment,
            "retention_offer": {"discount_id": discount.id, "outcome": "accepted"}})
        _record(sub, feedback, comment, when, discount, "offer_accepted")
    return sub


def cancel(sub: Subscription, feedback: str | None, comment: str | None, when: str,
           offered: Discount | None, actor: dict) -> Subscription:
    """Cancel ``sub`` as the customer chose (``now`` or ``period_end``), keeping the request;
    with ``offered``, the offer they declined is in the event and the record."""
    extra = {"retention_offer": {"discount_id": offered.id, "outcome": "declined"}} if offered else None
    with transaction():
        sub = billing.cancel(sub, at_next_billing_date=when == "period_end", feedback=feedback,
                             comment=comment, actor=actor, event_data=extra)
        _record(sub, feedback, comment, when, offered, "cancelled")
    return sub


def _record(sub, feedback, comment, when, offered, outcome):
    CancellationRequest.create(business=sub.business_id, mode=sub.mode, subscription=sub.id,
                               customer=sub.customer_id, feedback=feedback, comment=comment,
                               when=when, offered_discount=offered.id if offered else None,
                               outcome=outcome)


def summary(business_id: str, mode: str, now: datetime | None = None, days: int = 30) -> dict:
    """What customers said and did in the cancel flow over the last ``days``:
    ``{"since", "requests", "reasons": [(reason or None, count)…] most first, "cancelled",
    "undone" (set to end at the period's end, then kept), "offers_made", "offers_accepted"}``."""
    since = (now or utcnow()) - timedelta(days=days)
    recent = ((CancellationRequest.business == business_id) & (CancellationRequest.mode == mode)
              & (CancellationRequest.created_at >= since))
    reasons = [(row.feedback, row.count) for row in
               CancellationRequest.select(CancellationRequest.feedback,
                                          fn.COUNT(CancellationRequest.id).alias("count"))
               .where(recent).group_by(CancellationRequest.feedback)
               .order_by(fn.COUNT(CancellationRequest.id).desc(), CancellationRequest.feedback)]
    outcomes = {row.outcome: row.count for row in
                CancellationRequest.select(CancellationRequest.outcome,
                                           fn.COUNT(CancellationRequest.id).alias("count"))
                .where(recent).group_by(CancellationRequest.outcome)}
    offers = (CancellationRequest.select()
              .where(recent & CancellationRequest.offered_discount.is_null(False)).count())
    return {"since": since, "requests": sum(outcomes.values()), "reasons": reasons,
            "cancelled": outcomes.get("cancelled", 0), "undone": outcomes.get("undone", 0),
            "offers_made": offers,
            "offers_accepted": outcomes.get("offer_accepted", 0)}
