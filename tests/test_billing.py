"""The subscription lifecycle, one-time purchases, plan changes, invoices and events."""

import threading
from datetime import timedelta

import pytest
import time_machine

from core import billing
from core.jobs import transaction
from core.models import Event, Invoice, LicenseKey, Payment, Product, Subscription, db, init_db, utcnow
from plugins.sandbox import charges


def events(type=None):
    query = Event.select().order_by(Event.created_at)
    return [e.type for e in query if type is None or e.type == type]


# --- Creating --------------------------------------------------------------------------------


def test_a_new_subscription_becomes_active_when_its_first_charge_succeeds(customer, product, subscribe):
    sub, payment = subscribe(customer, product)
    assert sub.status == "active"
    assert payment.status == "succeeded" and payment.kind == "new"
    assert payment.amount == 1800 and payment.tax == 300
    assert [c.amount for c in charges()] == [1800]
    assert sub.next_billing_date.month != sub.previous_billing_date.month
    assert events() == ["payment.succeeded", "subscription.active"]


def test_a_new_subscription_fails_when_its_first_charge_is_declined(customer, product, subscribe):
    sub, payment = subscribe(customer, product, "pm_card_chargeDeclined")
    assert sub.status == "failed"
    assert payment.status == "failed" and payment.failure_message == "Your card was declined."
    assert Invoice.select().count() == 0
    assert events() == ["payment.failed", "subscription.failed"]


def test_a_one_time_purchase_issues_a_license_key_from_the_product(customer, business, save_card):
    app_product = Product.create(business=business, mode="test", name="Desktop", price=9900,
                                 currency="EUR", license_key_enabled=True,
                                 license_key_activations_limit=3, license_key_duration_count=1,
                                 license_key_duration_interval="Year")
    card = save_card(customer)
    payment = billing.purchase(customer, app_product, card, idempotency_key="order-1").refresh()
    assert billing.purchase(customer, app_product, card, idempotency_key="order-1").id == payment.id
    key = LicenseKey.get()
    assert len(charges()) == 1
    assert payment.status == "succeeded"
    assert key.customer_id == customer.id and key.activations_limit == 3
    assert key.expires_at > utcnow() + timedelta(days=360)
    assert "license_key.created" in events()


def test_a_payment_method_of_another_customer_is_refused(customer, product, business, save_card):
    from core.models import Customer

    other = Customer.create(business=business, mode="test", email="eve@example.com", name="Eve")
    with pytest.raises(billing.BillingError, match="does not belong"):
        billing.create_subscription(customer, product, save_card(other))
    assert Subscription.select().count() == 0


def test_a_live_mode_charge_through_the_test_only_sandbox_is_declined_with_a_reason(
        business, product, save_card):
    from core.models import Customer

    live = Customer.create(business=business, mode="live", email="liv@example.com", name="Liv")
    live_product = Product.create(business=business, mode="live", name="Pro", price=1500,
                                  currency="EUR", is_recurring=True)
    sub, payment = billing.create_subscription(live, live_product, save_card(live))
    assert payment.refresh().failure_message == \
        "The sandbox provider does not take live-mode payments."
    assert charges() == []


# --- Cancelling ------------------------------------------------------------------------------


def test_cancel_now_ends_the_subscription_and_records_why(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    billing.cancel(sub, feedback="too_expensive", comment="Cheaper elsewhere",
                   actor={"actor_type": "customer", "email": customer.email, "name": customer.name})
    sub = sub.refresh()
    assert sub.status == "cancelled" and sub.cancelled_at is not None
    assert sub.cancellation_feedback == "too_expensive"
    assert events("subscription.cancelled") == ["subscription.cancelled"]


def test_cancel_at_next_billing_date_keeps_it_active_until_then(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    billing.cancel(sub, at_next_billing_date=True)
    assert sub.refresh().status == "active" and sub.refresh().cancel_at_next_billing_date
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    sub = sub.refresh()
    assert sub.status == "cancelled" and sub.cancelled_at == sub.next_billing_date
    assert len(charges()) == 1  # the renewal was never charged


def test_a_scheduled_cancellation_can_be_undone(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    billing.cancel(sub, at_next_billing_date=True)
    billing.undo_cancel(sub)
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    assert sub.refresh().status == "active"
    assert len(charges()) == 2


def test_an_illegal_transition_is_refused_and_changes_nothing(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    billing.cancel(sub)
    before = (sub.refresh().status, Event.select().count())
    with pytest.raises(billing.BillingError, match="is cancelled: it cannot become cancelled"):
        billing.cancel(sub)
    with pytest.raises(billing.BillingError, match="cannot be cancelled at its next billing date"):
        billing.cancel(sub, at_next_billing_date=True)
    assert (sub.refresh().status, Event.select().count()) == before


def test_a_subscription_expires_at_the_end_of_its_term(customer, business, subscribe):
    short = Product.create(business=business, mode="test", name="Season", price=1000,
                           currency="EUR", is_recurring=True, subscription_period_count=2,
                           subscription_period_interval="Month")
    sub, _ = subscribe(customer, short)
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    sub = sub.refresh()
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    assert sub.refresh().status == "expired"
    assert len(charges()) == 2
    assert "subscription.expired" in events()


# --- Changing plan ---------------------------------------------------------------------------


@pytest.fixture
def team(business):
    return Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)


def test_preview_of_an_upgrade_shows_the_prorated_amount_and_changes_nothing(
        customer, product, team, subscribe):
    with time_machine.travel("2026-03-01 12:00Z", tick=False):
        sub, _ = subscribe(customer, product)
    with time_machine.travel("2026-03-16 12:00Z", tick=False):
        preview = billing.preview_plan_change(sub, team)
    # 16 of 31 days left: (4500 - 1500) × 16/31 = 1548.39 → 1548, plus 20 % VAT 309.6 → 310
    assert (preview.amount_due, preview.tax_due) == (1858, 310)
    assert preview.new_recurring_amount == 5400 and preview.upgrade
    assert sub.refresh().product_id == product.id and Payment.select().count() == 1


def test_an_upgrade_is_charged_now_and_applies_once_paid(customer, product, team, subscribe):
    sub, _ = subscribe(customer, product)
    payment = billing.change_plan(sub, team, quantity=2).refresh()
    sub = sub.refresh()
    assert payment.kind == "plan_change" and payment.status == "succeeded"
    assert (sub.product_id, sub.quantity, sub.recurring_pre_tax_amount) == (team.id, 2, 9000)
    assert Invoice.get(Invoice.payment == payment).total == payment.amount
    assert "subscription.plan_changed" in events()


def test_a_declined_upgrade_leaves_the_plan_unchanged(customer, product, team, subscribe, save_card):
    sub, _ = subscribe(customer, product)
    billing.update_payment_method(sub, save_card(customer, "pm_card_chargeDeclined"))
    payment = billing.change_plan(sub.refresh(), team).refresh()
    assert payment.status == "failed"
    assert sub.refresh().product_id == product.id


def test_a_downgrade_takes_effect_at_the_next_billing_date(customer, product, team, subscribe):
    sub, _ = subscribe(customer, team)
    assert billing.change_plan(sub, product) is None
    assert sub.refresh().product_id == team.id and sub.refresh().scheduled_change
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    sub = sub.refresh()
    assert sub.product_id == product.id and sub.scheduled_change is None
    assert Payment.select().order_by(Payment.created_at.desc()).first().amount == 1800


def test_a_plan_change_of_an_inactive_subscription_is_refused(customer, product, team, subscribe):
    sub, _ = subscribe(customer, product)
    billing.cancel(sub)
    with pytest.raises(billing.BillingError) as error:
        billing.change_plan(sub.refresh(), team)
    assert error.value.code == "INACTIVE_SUBSCRIPTION_PLAN_CHANGE_NOT_SUPPORTED"


# --- Money, invoices, events ------------------------------------------------------------------


@pytest.mark.parametrize("amount, rate, inclusive, expected", [
    (1500, 2000, False, (1800, 300)),
    (999, 2000, False, (1199, 200)),  # 199.8 rounds half up to 200
    (1800, 2000, True, (1800, 300)),
    (1000, 0, False, (1000, 0)),
    (1, 550, False, (1, 0)),
])
def test_tax_is_rounded_half_up_to_the_minor_unit(amount, rate, inclusive, expected):
    assert billing.split_tax(amount, rate, inclusive) == expected


def test_invoice_numbers_have_no_gaps_under_concurrency(app, customer, product, subscribe, database_url):
    sub, _ = subscribe(customer, product)
    payments = [Payment.create(business=customer.business_id, mode="test", customer=customer,
                               kind="new", status="succeeded", amount=1800, tax=300,
                               currency="EUR", idempotency_key=f"k{n}") for n in range(20)]
    barrier = threading.Barrier(len(payments))
    lines = [{"description": "Pro", "quantity": 1, "unit_amount": 1500, "amount": 1500}]

    def issue(payment):
        with app.app_context():
            barrier.wait()
            billing.issue_invoice(payment, lines)
            db.close()

    threads = [threading.Thread(target=issue, args=(p,)) for p in payments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    init_db(database_url)
    numbers = sorted(i.number for i in Invoice.select())
    assert numbers == list(range(1, 22))


def test_invoice_freezes_the_business_and_customer_details_at_issue(customer, product, subscribe):
    sub, payment = subscribe(customer, product)
    customer.business.legal_name = "Renamed SAS"
    customer.business.save()
    invoice = Invoice.get(Invoice.payment == payment)
    assert invoice.seller["legal_name"] == "Acme Software Ltd"
    assert invoice.buyer["email"] == customer.email
    assert invoice.subtotal + invoice.tax == invoice.total == payment.amount
    assert invoice.payment_details["method"] == "Visa •••• 4242"


def test_an_invoice_pdf_is_rendered_once_and_kept(customer, product, subscribe):
    _, payment = subscribe(customer, product)
    invoice = Invoice.get(Invoice.payment == payment)
    assert invoice.pdfs.count() == 1  # rendered by the job queued with the payment
    pdf = billing.invoice_pdf(invoice)
    assert pdf.startswith(b"%PDF-") and billing.invoice_pdf(invoice.refresh()) == pdf


def test_a_rolled_back_change_records_no_event(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    before = Event.select().count()
    with pytest.raises(RuntimeError), transaction():
        billing.cancel(sub)
        raise RuntimeError("boom")
    assert sub.refresh().status == "active"
    assert Event.select().count() == before


def test_every_event_is_delivered_to_the_notifiers(app, customer, product, subscribe):
    from plugins.mail import outbox_messages

    subscribe(customer, product)
    assert Event.select().where(Event.dispatched_at.is_null()).count() == 0
    subjects = [m["Subject"] for m in outbox_messages(app)]
    assert any("receipt" in s.lower() or "payment" in s.lower() for s in subjects), subjects
