"""Renewals: the sweep finds what is due, each renewal is charged once, periods never drift."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from click.testing import CliRunner

from core import billing, jobs
from core.cli import main
from core.models import Event, Invoice, Payment
from plugins.sandbox import charges, fail_next


def at(text):
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def renew_all(sub, times):
    """Let ``times`` billing dates pass, sweeping at each; returns the billing dates seen."""
    seen = []
    for _ in range(times):
        sub = sub.refresh()
        seen.append(sub.next_billing_date)
        with time_machine.travel(sub.next_billing_date, tick=False):
            billing.sweep()
    return seen, sub.refresh()


def test_a_due_renewal_is_charged_invoiced_and_starts_the_next_period(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    (due,), sub = renew_all(sub, 1)
    renewal = Payment.get(Payment.kind == "renewal")
    assert renewal.status == "succeeded" and renewal.period_start == due
    assert sub.previous_billing_date == due and sub.next_billing_date == renewal.period_end
    assert Invoice.select().count() == 2
    assert "subscription.renewed" in [e.type for e in Event.select()]


def test_a_sweep_run_twice_charges_a_renewal_once(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
        billing.sweep()
        billing.renew(sub.id, billing.payloads.iso(sub.next_billing_date))
    assert len(charges()) == 2 and Payment.select().count() == 2


@pytest.mark.parametrize("start, expected", [
    ("2026-01-31 10:00", ["2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"]),
    ("2028-01-31 10:00", ["2028-02-29", "2028-03-31", "2028-04-30", "2028-05-31"]),
    ("2027-02-28 10:00", ["2027-03-28", "2027-04-28", "2027-05-28", "2027-06-28"]),
])
def test_monthly_renewals_follow_month_ends_and_leap_years(customer, product, subscribe, start, expected):
    with time_machine.travel(at(start), tick=False):
        sub, _ = subscribe(customer, product)
    seen, _ = renew_all(sub, 4)
    assert [f"{d:%Y-%m-%d}" for d in seen] == expected
    assert len(charges()) == 5


def test_a_yearly_plan_bought_on_29_february_renews_on_28_february(customer, business, subscribe):
    from core.models import Product

    yearly = Product.create(business=business, mode="test", name="Yearly", price=12000,
                            currency="EUR", is_recurring=True, payment_frequency_interval="Year",
                            subscription_period_count=10)
    with time_machine.travel(at("2028-02-29 09:00"), tick=False):
        sub, _ = subscribe(customer, yearly)
    seen, _ = renew_all(sub, 2)
    assert [f"{d:%Y-%m-%d}" for d in seen] == ["2029-02-28", "2030-02-28"]


def test_a_declined_renewal_puts_the_subscription_on_hold(customer, product, on_hold):
    sub = on_hold()
    failed = Payment.get(Payment.kind == "renewal")
    assert sub.status == "on_hold"
    assert failed.status == "failed" and failed.failure_code == "card_declined"
    assert {"payment.failed", "subscription.on_hold"} <= {e.type for e in Event.select()}


def test_no_renewal_is_tried_while_on_hold(customer, product, on_hold):
    sub = on_hold()
    for later in (timedelta(days=1), timedelta(days=400)):
        with time_machine.travel(sub.next_billing_date + later, tick=False):
            assert billing.sweep()["renewals"] == 0
    assert Payment.select().where(Payment.kind == "renewal").count() == 1


def test_a_charge_whose_job_was_lost_is_recovered_by_the_sweep_once(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    fail_next(after_commit=True)  # charged, but the answer is lost and the job gives up
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    renewal = Payment.get(Payment.kind == "renewal")
    assert renewal.status == "processing" and len(charges()) == 2
    with time_machine.travel(sub.next_billing_date + timedelta(minutes=16), tick=False):
        billing.sweep()
        billing.sweep()
    assert renewal.refresh().status == "succeeded"
    assert len(charges()) == 2 and Invoice.select().count() == 2


def test_portico_billing_sweep_queues_due_renewals_once_on_redis(
        make_app, redis_url, cli_env, customer, product, subscribe, monkeypatch):
    sub, _ = subscribe(customer, product)
    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PORTICO_REDIS_URL", redis_url)
    monkeypatch.setenv("PORTICO_QUEUE_NAME", queue_name)
    with time_machine.travel(sub.next_billing_date, tick=False):
        for _ in range(2):
            result = CliRunner().invoke(main, ["billing", "sweep"])
            assert result.exit_code == 0, result.output
    assert "1 renewal" in result.output
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": queue_name})
    with app.app_context():
        assert [job.func_name for job in jobs.queue().jobs] == ["core.billing.renew"]
        jobs.queue().empty()
