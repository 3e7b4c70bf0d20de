"""Customers hear the right thing: a charge they tried on screen shows its result there and sends
no dunning e-mail; every decline reads as a message for its code, in their language, never as
the provider's own text."""

from datetime import timedelta

import time_machine
from test_portal import sign_in, text

from core import billing
from core.hookspecs import CardDetails
from core.models import Customer, PaymentMethod, PortalToken, Product
from plugins.mail import outbox_messages

RAW = "payment provider 'acmepay' is not available"


def missing_provider_card(customer):
    """A card saved with a provider whose plugin is not installed: its charges are declined
    with the code ``provider_unavailable`` and a technical message."""
    return PaymentMethod.save_card(customer, "acmepay", CardDetails("tok_1", "visa", "4242"))


def upgrade(business, customer, sub):
    team = Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)
    with time_machine.travel(sub.previous_billing_date + timedelta(days=3), tick=False):
        return billing.change_plan(sub, team).refresh()


def test_a_plan_change_that_fails_on_screen_sends_no_dunning_email_and_mints_no_link(
        app, client, business, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    billing.update_payment_method(sub, missing_provider_card(customer))
    before = len(outbox_messages(app))
    payment = upgrade(business, customer, sub.refresh())
    assert payment.status == "failed" and payment.failure_code == "provider_unavailable"
    assert [m["Subject"] for m in outbox_messages(app)[before:]] == []
    assert PortalToken.select().count() == 0
    sign_in(client, customer)
    page = text(client.get(f"/portal/payments/{payment.id}"))
    assert "Card payments are not available at the moment." in page and RAW not in page


def test_a_declined_arrears_charge_shows_its_reason_on_screen_and_sends_no_email(
        app, client, customer, on_hold, save_card):
    sub = on_hold()
    before = len(outbox_messages(app))
    payment = billing.update_payment_method(sub, save_card(customer, "pm_card_insufficientFunds"))
    assert outbox_messages(app)[before:] == []
    sign_in(client, customer)
    assert "Your card has insufficient funds." in text(client.get(f"/portal/payments/{payment.id}"))


def test_a_french_customer_reads_the_decline_in_french(app, client, business, customer, product,
                                                       subscribe):
    Customer.update(preferred_locale="fr").where(Customer.id == customer.id).execute()
    sub, _ = subscribe(customer, product)
    billing.update_payment_method(sub, missing_provider_card(customer))
    payment = upgrade(business, customer, sub.refresh())
    sign_in(client, customer)
    page = text(client.get(f"/portal/payments/{payment.id}"))
    assert "Les paiements par carte ne sont pas disponibles pour le moment." in page and RAW not in page


def test_a_background_renewal_decline_is_emailed_with_the_message_for_its_code(
        app, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    billing.update_payment_method(sub, missing_provider_card(customer))
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    [mail] = [m for m in outbox_messages(app) if "did not go through" in m["Subject"]]
    body = mail.get_body(("plain",)).get_content()
    assert "Card payments are not available at the moment." in body and RAW not in body


def test_an_unknown_decline_code_reads_as_a_plain_decline(app, client, customer, on_hold, save_card):
    from core.models import Payment

    sub = on_hold()
    payment = billing.update_payment_method(sub, save_card(customer, "pm_card_chargeDeclined"))
    Payment.update(failure_code="do_not_try_again_xyz", failure_message="Raw bank words").where(
        Payment.id == payment.id).execute()
    sign_in(client, customer)
    page = text(client.get(f"/portal/payments/{payment.id}"))
    assert "The payment was declined." in page and "Raw bank words" not in page
