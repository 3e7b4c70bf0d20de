"""Invoices say what was paid for: every line's service period comes from the payment it
invoices, and matches billing history and the subscription; each line keeps its facts."""

from datetime import timedelta

import time_machine

from core import billing, payloads
from core.models import Invoice, Payment, Product


def line_of(payment):
    return Invoice.get(Invoice.payment == payment).lines[0]


def test_a_reactivation_invoice_covers_the_period_that_starts_when_the_arrears_are_paid(
        customer, on_hold, save_card):
    sub = on_hold()
    failed = Payment.get((Payment.kind == "renewal") & (Payment.status == "failed"))
    with time_machine.travel(failed.period_start + timedelta(days=4), tick=False):
        paid = billing.update_payment_method(sub, save_card(customer)).refresh()
    sub = sub.refresh()
    line = line_of(paid)
    assert (paid.period_start, paid.period_end) == (sub.previous_billing_date, sub.next_billing_date)
    assert line["description"] == billing.period_label("Pro", paid.period_start, paid.period_end)
    assert line["period_start"] == payloads.iso(paid.period_start) != payloads.iso(failed.period_start)
    assert line["kind"] == "arrears" and line["product_name"] == "Pro" and line["quantity"] == 1


def test_first_payment_and_renewal_lines_carry_their_periods_and_kinds(customer, product, subscribe):
    sub, first = subscribe(customer, product, quantity=2)
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    renewal = Payment.get(Payment.kind == "renewal")
    for payment, kind in ((first, "first_payment"), (renewal, "renewal")):
        line = line_of(payment)
        assert line["kind"] == kind and line["quantity"] == 2 and line["unit_amount"] == 1500
        assert (line["period_start"], line["period_end"]) == (
            payloads.iso(payment.period_start), payloads.iso(payment.period_end))
        assert line["description"] == billing.period_label("Pro", payment.period_start,
                                                           payment.period_end)


def test_a_plan_change_line_covers_the_rest_of_the_period(business, customer, product, subscribe):
    team = Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)
    sub, _ = subscribe(customer, product)
    with time_machine.travel(sub.previous_billing_date + timedelta(days=10), tick=False):
        paid = billing.change_plan(sub, team).refresh()
    line = line_of(paid)
    assert line["kind"] == "plan_change" and line["product_name"] == "Team"
    assert line["period_end"] == payloads.iso(sub.refresh().next_billing_date)
    assert line["description"].startswith("Team × 1 (was Pro × 1), prorated until")
