"""How long a subscription's license keys are valid: as long as the subscription is paid.

A key issued with a subscription follows what pays for it (``paid_until``): its expiry is
moved on by each paid renewal, whatever the product's license duration (which sets the expiry
of keys sold once); it ends when the subscription is cancelled (at the period end for a
cancellation at the next billing date), put on hold by a failed renewal or expired at the end
of its term, and comes back when the subscription is reactivated. ``core.billing`` calls
``follow_subscription`` with every change of a subscription, in the same transaction, and
``core.licensing`` checks ``paid_until`` before any license source is asked. This module
imports neither, so that both can.
"""

from datetime import datetime, timedelta

from flask import current_app

from core.models import LicenseKey, Subscription, utcnow

RENEWAL_MARGIN = timedelta(hours=1)  # beyond the charge wait window: the sweep's time to settle


def renewal_time() -> timedelta:
    """How long after its billing date a renewal may still be charged: the charge wait window
    (``CHARGE_WAIT_WINDOW``, as ``core.billing.wait_window``) and ``RENEWAL_MARGIN``. A
    renewal still unpaid by then has failed, which puts the subscription on hold."""
    return timedelta(seconds=current_app.config["CHARGE_WAIT_WINDOW"]) + RENEWAL_MARGIN


def paid_until(sub: Subscription) -> datetime:
    """Until when the license keys of ``sub`` are valid, as the subscription stands now (UTC).

    Active: its next billing date plus ``renewal_time``, never past the end of its term; the
    renewal, once paid, moves it to the next period's end. Set to cancel at its next billing
    date: that date. Any other status (on hold, paused, cancelled, expired): already over,
    since the end of the last paid period, the cancellation or the end of the term; a paused
    subscription keeps its paid time for the resume, when its keys come back."""
    now = utcnow()
    if sub.status == "active":
        until = sub.next_billing_date
        if not sub.cancel_at_next_billing_date:
            until += renewal_time()
        return min(until, sub.expires_at) if sub.expires_at else until
    ended = {"cancelled": sub.cancelled_at, "on_hold": sub.next_billing_date,
             "expired": sub.expires_at}.get(sub.status)
    return min(ended or now, now)


def follow_subscription(sub: Subscription) -> None:
    """Bring the keys issued for ``sub`` in line with it: their expiry becomes ``paid_until``,
    their status ``active`` or ``expired`` by it. A key disabled (by the merchant, or revoked
    by its source) stays disabled."""
    until = paid_until(sub)
    (LicenseKey.update(expires_at=until, status="active" if until > utcnow() else "expired")
     .where((LicenseKey.subscription == sub.id) & (LicenseKey.status != "disabled")).execute())
