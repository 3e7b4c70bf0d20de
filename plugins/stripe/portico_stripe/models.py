"""The Stripe plugin's own tables: which Stripe customer holds a Portico customer's cards, and
which Stripe events have been processed (each exactly once, however often Stripe sends it)."""

import peewee as pw

from core.models import BaseModel, Customer, Payment


class StripeCustomer(BaseModel):
    """The Stripe customer a Portico customer's cards are attached to, made on first need."""

    customer = pw.ForeignKeyField(Customer, unique=True, on_delete="CASCADE")
    stripe_id = pw.CharField(unique=True)

    class Meta:
        table_name = "stripe_customer"
        id_prefix = "stc"


class StripeEvent(BaseModel):
    """A Stripe event we received, once, and what came of it: ``settled`` a payment,
    ``waiting`` (still for the customer), ``unchanged`` (already settled), ``ignored`` (not
    about one of our payments) or ``mismatch`` (it disagreed with the payment: not trusted)."""

    event_id = pw.CharField(unique=True)
    type = pw.CharField()
    payment = pw.ForeignKeyField(Payment, null=True, on_delete="SET NULL")
    outcome = pw.CharField()
    detail = pw.TextField(default="")

    class Meta:
        table_name = "stripe_event"
        id_prefix = "ste"
