"""A customer's saved payment methods: which subscriptions each pays for, the default, moving
a subscription to another method, and removing one without leaving a subscription unpaid.

The portal's "Payment methods" page and the API's ``/customers/{id}/payment-methods`` follow
these same rules. Money never moves here: assigning a method to a subscription on hold goes
through ``billing.update_payment_method`` (which charges its arrears) from its own page.
"""

from peewee import prefetch

from core import billing
from core.models import Payment, PaymentMethod, Product, Subscription, db, utcnow

CURRENT = ("pending", "active", "on_hold", "paused")  # subscriptions that will be charged again


class MethodRefused(billing.BillingError):
    """A removal refused: ``subscriptions`` are the ones it would leave without a method."""

    def __init__(self, code: str, message: str, subscriptions=()):
        super().__init__(code, message)
        self.subscriptions = list(subscriptions)


def saved(customer) -> list[PaymentMethod]:
    """The customer's saved methods, the default first, then newest first; each with
    ``subscriptions`` (the current ones it pays for, with their product) and ``default``."""
    methods = (PaymentMethod.select()
               .where((PaymentMethod.customer == customer) & PaymentMethod.deleted_at.is_null())
               .order_by(PaymentMethod.created_at.desc(), PaymentMethod.id.desc()))
    subs = (Subscription.select(Subscription, Product).join(Product)
            .where(Subscription.status.in_(CURRENT)).order_by(Subscription.created_at))
    found = prefetch(methods, subs)
    default = _default_of(found)
    for method in found:
        method.default = method is default
        method.subscriptions = list(getattr(method, "subscription_set", []))
    return sorted(found, key=lambda method: not method.default)


def _default_of(methods: list[PaymentMethod]) -> PaymentMethod | None:
    """The one marked default, else the newest (methods saved before defaults existed)."""
    return next((m for m in methods if m.is_default), methods[0] if methods else None)


def default_method(customer) -> PaymentMethod | None:
    """The method new subscriptions use, and that subscriptions following the default pay with."""
    return _default_of(list(PaymentMethod.select()
                            .where((PaymentMethod.customer == customer)
                                   & PaymentMethod.deleted_at.is_null())
                            .order_by(PaymentMethod.created_at.desc(), PaymentMethod.id.desc())))


def make_default(customer, method: PaymentMethod) -> list[Subscription]:
    """Make ``method`` the default. Active subscriptions charged to the previous default
    follow it to the new one (no charge is made); returns them."""
    previous = default_method(customer)
    with db.atomic():
        (PaymentMethod.update(is_default=PaymentMethod.id == method.id)
         .where(PaymentMethod.customer == customer).execute())
    if previous is None or previous.id == method.id:
        return []
    followers = list(Subscription.select().where((Subscription.payment_method == previous)
                                                 & (Subscription.status == "active")))
    for sub in followers:
        sub.customer = customer
        billing.replace_payment_method(sub, method)
    return followers


def remove(customer, method: PaymentMethod) -> list[Subscription]:
    """Remove a saved method. The current subscriptions it paid for move to the default (or,
    when it was the default, to the newest other method), without a charge; returns them.

    Refused (``MethodRefused``) with ``PAYMENT_METHOD_IN_USE`` when it is the only method of
    an active, on-hold or pending subscription (there is nothing to move it to), and with
    ``PREVIOUS_PAYMENT_PENDING`` while a charge on it is in flight (it ends on this card).
    """
    users = list(Subscription.select(Subscription, Product).join(Product)
                 .where((Subscription.payment_method == method)
                        & Subscription.status.in_(CURRENT)))
    in_flight = Payment.select().where((Payment.payment_method == method)
                                       & Payment.status.in_(billing.OPEN)).exists()
    if in_flight:
        raise MethodRefused("PREVIOUS_PAYMENT_PENDING",
                            "a payment with this method is in progress: try again once it ends")
    others = [m for m in saved(customer) if m.id != method.id]
    heir = next((m for m in others if m.default), others[0] if others else None)
    if users and heir is None:
        names = ", ".join(f"{sub.product.name} ({sub.id})" for sub in users)
        raise MethodRefused("PAYMENT_METHOD_IN_USE",
                            f"this is the only payment method of {names}: add another one first",
                            users)
    for sub in users:
        sub.customer = customer
        billing.replace_payment_method(sub, heir)
    with db.atomic():
        PaymentMethod.update(deleted_at=utcnow(), is_default=False).where(
            PaymentMethod.id == method.id).execute()
        if heir is not None and not any(m.is_default for m in others):
            PaymentMethod.update(is_default=True).where(PaymentMethod.id == heir.id).execute()
    return users
