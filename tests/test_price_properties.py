"""What a customer reads is what they pay (Hypothesis): for random catalogues (prices, billing
cycles, tax included or not, tax rates, add-ons) and random plan changes, renewals and price
moves, every invoice's lines multiply out to the cent and add up to the charge, a plan change
charges the amount its preview shows, and the next payment the subscription page shows is
what the next renewal charges."""

import os
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import time_machine
from conftest import csrf_token
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import auth, billing
from core.models import (
    Addon,
    Business,
    Customer,
    Invoice,
    Payment,
    PaymentMethod,
    Product,
    ProductAddon,
)
from core.money import format_money
from core.plugins import registry
from plugins.sandbox import charges

START = datetime(2026, 3, 31, 10, tzinfo=UTC)  # a month end: periods clamp (30 April, …)

def made_so_far() -> set[str]:
    """The charges made until now: the next ones are the others (not the last in time order,
    since a charge made at the same frozen instant as an earlier one may sort before it)."""
    return {c.id for c in charges()}


PLANS = st.fixed_dictionaries({
    "price": st.integers(1, 60000),
    "cycle": st.sampled_from([(1, "Month"), (1, "Month"), (3, "Month"), (1, "Year"), (1, "Week")]),
    "tax_inclusive": st.booleans(),
    "tax_rate_bps": st.sampled_from([0, 550, 700, 1900, 2000, 2100]),
    "addons": st.lists(st.integers(0, 2), max_size=3, unique=True),
})
STEPS = st.lists(st.one_of(
    st.tuples(st.just("renew")),
    st.tuples(st.just("change"), st.integers(0, 3), st.integers(1, 12),
              st.none() | st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4)), max_size=2,
                                   unique_by=lambda item: item[0]),
              st.floats(0, 0.99), st.sampled_from(["immediately", "immediately", "next_billing_date"])),
    st.tuples(st.just("reprice"), st.integers(0, 3), st.integers(1, 60000)),
), min_size=1, max_size=6)


def assert_every_invoice_adds_up():
    for invoice in Invoice.select(Invoice, Payment).join(Payment):
        for line in invoice.lines:
            assert line["unit_amount"] * line["quantity"] == line["amount"], line
        lines = sum(line["amount"] for line in invoice.lines)
        assert lines + (0 if invoice.tax_inclusive else invoice.tax) == invoice.total
        assert invoice.subtotal + invoice.tax == invoice.total
        assert invoice.total - invoice.credit_applied == invoice.payment.amount


def test_what_the_customer_is_shown_is_what_they_are_charged(make_app, reset_database):
    app = make_app({"DISABLED_PLUGINS": ["mail", "webhooks"], "INVOICE_PDF_AHEAD": False,
                    "PRICE_CHANGE_NOTICE_DAYS": 7})

    @settings(max_examples=int(os.environ.get("PORTICO_HYPOTHESIS_EXAMPLES") or 25),
              deadline=None, derandomize=bool(os.environ.get("CI")),
              suppress_health_check=list(HealthCheck))
    @given(plans=st.lists(PLANS, min_size=2, max_size=4),
           addon_prices=st.lists(st.integers(1, 9999), min_size=3, max_size=3),
           quantity=st.integers(1, 12), steps=STEPS)
    def check(plans, addon_prices, quantity, steps):
        reset_database()
        with app.app_context(), time_machine.travel(START, tick=False) as clock:
            business = Business.create(name="Acme")
            customer = Customer.create(business=business, mode="test", email="ann@example.com",
                                       name="Ann")
            addons = [Addon.create(business=business, mode="test", name=f"Extra {n}", price=price,
                                   currency="EUR") for n, price in enumerate(addon_prices)]
            products = []
            for n, spec in enumerate(plans):
                product = Product.create(
                    business=business, mode="test", name=f"Plan {n}", price=spec["price"],
                    currency="EUR", is_recurring=True, tax_inclusive=spec["tax_inclusive"],
                    tax_rate_bps=spec["tax_rate_bps"], payment_frequency_count=spec["cycle"][0],
                    payment_frequency_interval=spec["cycle"][1], subscription_period_count=50)
                for index in spec["addons"]:
                    ProductAddon.create(product=product, addon=addons[index])
                products.append(product)
            offered = [{"addon_id": addons[i].id, "quantity": 1 + i} for i in plans[0]["addons"]]
            card = registry(app).provider("sandbox").tokenize(customer=customer, source="pm_card_visa")
            method = PaymentMethod.save_card(customer, "sandbox", card)
            sub, _ = billing.create_subscription(customer, products[0], method, quantity, offered)
            client = app.test_client()

            for step in steps:
                sub = sub.refresh()
                assert sub.status == "active"
                if step[0] == "renew":
                    clock.move_to(sub.next_billing_date - timedelta(minutes=1))
                    path = urlsplit(auth.sign_in_link(customer)).path
                    client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
                    page = client.get(f"/portal/subscriptions/{sub.id}").text
                    shown = re.search(r'class="next-payment">([^<]+)', page)[1].strip()
                    due, before = sub.next_billing_date, made_so_far()
                    clock.move_to(due)
                    billing.sweep()
                    made = [c for c in charges() if c.id not in before]
                    assert shown == format_money(made[-1].amount if made else 0, "EUR")
                    assert sub.refresh().next_billing_date > due
                elif step[0] == "change":
                    _, index, new_quantity, chosen, fraction, effective_at = step
                    period = sub.next_billing_date - sub.previous_billing_date
                    clock.move_to(sub.previous_billing_date + period * fraction)
                    wanted = None if chosen is None else [
                        {"addon_id": addons[i].id, "quantity": q} for i, q in chosen]
                    target, before = products[index % len(products)], made_so_far()
                    try:
                        preview = billing.preview_plan_change(sub, target, new_quantity,
                                                              addons=wanted, effective_at=effective_at)
                        billing.change_plan(sub, target, new_quantity, addons=wanted,
                                            effective_at=effective_at)
                    except billing.BillingError as error:
                        assert error.code == "ADDON_NOT_OFFERED"
                    else:  # the amount due now the preview shows is what is charged
                        assert [c.amount for c in charges() if c.id not in before] == (
                            [preview.amount_due] if preview.amount_due else [])
                else:
                    _, index, price = step
                    product = products[index % len(products)]
                    Product.update(price=price).where(Product.id == product.id).execute()
                    billing.announce_price(product, billing.price_change_notice())
                assert_every_invoice_adds_up()

    with app.app_context():
        check()
