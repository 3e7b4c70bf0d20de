"""Renewals: the sweep finds what is due, each renewal is charged once, periods never drift."""

import os
import signal
import time
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
        assert [job.func_name for job in jobs.queue().jobs] == ["core.billing.renew_batch"]
        jobs.queue().empty()


# --- Renewals in batches, on a real queue and worker -------------------------------------------


def due_now(subs):
    """Make ``subs`` due, in this order (a worker process cannot travel in time)."""
    from core.models import Subscription, utcnow

    for n, sub in enumerate(subs):
        Subscription.update(next_billing_date=utcnow() - timedelta(minutes=10 - n)).where(
            Subscription.id == sub.id).execute()
    return [sub.refresh() for sub in subs]


def renewals_of(sub):
    return list(Payment.select().where((Payment.subscription == sub) & (Payment.kind == "renewal")))


def renewal_charges():
    return [c for c in charges(status=None) if c.idempotency_key.startswith("renewal:")]


def test_the_sweep_queues_due_renewals_in_batches_of_the_configured_size_once(
        make_app, redis_url, customer, product, subscribe):
    subs = due_now([subscribe(customer, product)[0] for _ in range(5)])
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}",
                    "RENEWAL_BATCH_SIZE": 2})
    with app.app_context():
        assert billing.sweep()["renewals"] == 5
        assert billing.sweep()["renewals"] == 5  # queued again: nothing new
        queued = jobs.queue().jobs
        assert [job.func_name for job in queued] == ["core.billing.renew_batch"] * 3
        assert [sub_id for job in queued for sub_id, _ in job.args[0]] == [sub.id for sub in subs]
        jobs.queue().empty()


def test_a_batch_of_renewals_charges_and_invoices_each_once(redis_app, customer, product, subscribe):
    subs = due_now([subscribe(customer, product)[0] for _ in range(3)])
    with redis_app.app_context():
        billing.sweep()
    worker = redis_app.worker("--burst")
    assert worker.wait(timeout=120) == 0, worker.stdout.read().decode()
    for sub in subs:
        assert [p.status for p in renewals_of(sub)] == ["succeeded"]
        assert sub.refresh().cycles == 1
    assert len(renewal_charges()) == 3
    assert Invoice.select().count() == 6  # three first payments, three renewals


def test_one_failing_renewal_neither_holds_back_nor_repeats_the_others_in_its_batch(
        redis_app, customer, product, subscribe):
    subs = due_now([subscribe(customer, product)[0] for _ in range(3)])
    fail_next()  # the first renewal's charge fails before reaching the provider
    with redis_app.app_context():
        billing.sweep()
    worker = redis_app.worker("--burst")
    output = worker.communicate(timeout=120)[0].decode()
    assert worker.returncode == 0, output
    assert [len(renewals_of(sub)) for sub in subs] == [1, 1, 1], output
    assert [renewals_of(sub)[0].attempts for sub in subs] == [2, 1, 1]  # only the failed one again
    assert all(renewals_of(sub)[0].status == "succeeded" for sub in subs)
    assert sorted(c.idempotency_key for c in renewal_charges()) == sorted(
        p.idempotency_key for sub in subs for p in renewals_of(sub))
    assert "simulated failure" in output


def test_a_worker_killed_mid_batch_loses_no_renewal_and_charges_none_twice(
        redis_app, customer, product, subscribe):
    from core.models import Subscription

    cancelled, in_flight, *waiting = due_now([subscribe(customer, product)[0] for _ in range(4)])
    Subscription.update(cancel_at_next_billing_date=True).where(
        Subscription.id == cancelled.id).execute()
    fail_next(hang=60)  # the first charge is recorded by the provider, then its job stalls
    with redis_app.app_context():
        billing.sweep()
    worker = redis_app.worker()
    deadline = time.monotonic() + 60
    while not renewal_charges() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    assert cancelled.refresh().status == "cancelled"  # done before the kill
    assert [p.status for p in renewals_of(in_flight)] == ["processing"]  # charged, not settled
    assert [renewals_of(sub) for sub in waiting] == [[], []]  # not begun

    with redis_app.app_context():
        owed = billing.sweep(stale_after=timedelta(0))
    assert owed["charges"] == 1 and owed["renewals"] == 3
    second = redis_app.worker("--burst")
    assert second.wait(timeout=120) == 0, second.stdout.read().decode()
    assert cancelled.refresh().status == "cancelled" and renewals_of(cancelled) == []
    assert Event.select().where(Event.type == "subscription.cancelled").count() == 1
    for sub in [in_flight, *waiting]:
        assert [p.status for p in renewals_of(sub)] == ["succeeded"]
        assert sub.refresh().cycles == 1
        assert Invoice.select().where(Invoice.payment == renewals_of(sub)[0]).count() == 1
    assert len(renewal_charges()) == 3 and all(c.status == "succeeded" for c in renewal_charges())
