"""Arrears: an on-hold subscription is reactivated by a new payment method, charged exactly once."""

import os
import signal
import threading
import time
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path

import pytest

from core import billing, payloads
from core.models import Event, Invoice, Payment, db, init_db, utcnow
from plugins.mail import outbox_messages
from plugins.sandbox import charges, fail_next

ROOT = Path(__file__).resolve().parent.parent


def arrears():
    return list(Payment.select().where(Payment.kind == "arrears").order_by(Payment.created_at))


def arrears_charges():
    """Every arrears charge the provider saw, declined ones included."""
    return [c for c in charges(status=None) if c.idempotency_key.startswith("arrears:")]


def test_a_new_card_reactivates_an_on_hold_subscription(app, customer, on_hold, save_card):
    sub = on_hold()
    unpaid = Payment.get((Payment.kind == "renewal") & (Payment.status == "failed"))
    before = utcnow()
    payment = billing.update_payment_method(sub, save_card(customer, "4242 4242 4242 4242")).refresh()
    sub = sub.refresh()
    assert payment.status == "succeeded" and payment.amount == unpaid.amount
    assert sub.status == "active" and sub.payment_method_id == payment.payment_method_id
    assert sub.previous_billing_date >= before  # a new period starts at the time of payment
    assert payment.period_start == sub.previous_billing_date
    assert payment.period_end == sub.next_billing_date
    assert Invoice.get(Invoice.payment == payment).total == payment.amount
    now = Event.select().where(Event.created_at.between(before, utcnow())).order_by(Event.created_at)
    assert [e.type for e in now] == ["payment.succeeded", "subscription.active"]


def test_the_customer_is_mailed_a_receipt_and_the_reactivation(app, customer, on_hold, save_card):
    sub = on_hold()
    billing.update_payment_method(sub, save_card(customer))
    messages = outbox_messages(app)[-2:]
    assert {parseaddr(m["To"])[1] for m in messages} == {customer.email}
    subjects = " | ".join(m["Subject"] for m in messages).lower()
    assert "receipt" in subjects or "payment" in subjects
    assert "active" in subjects or "reactivated" in subjects
    receipt = next(m for m in messages if m.get_content_type() == "multipart/mixed")
    assert any(part.get_content_type() == "application/pdf" for part in receipt.walk())


def test_a_declined_card_leaves_it_on_hold_and_another_card_then_succeeds(customer, on_hold, save_card):
    sub = on_hold()
    declined = billing.update_payment_method(sub, save_card(customer, "4000 0000 0000 9995")).refresh()
    assert declined.status == "failed"
    assert declined.failure_message == "Your card has insufficient funds."
    assert sub.refresh().status == "on_hold"
    retried = billing.update_payment_method(sub, save_card(customer, "pm_card_mastercard")).refresh()
    assert retried.status == "succeeded" and retried.idempotency_key != declined.idempotency_key
    assert sub.refresh().status == "active"
    assert len(arrears_charges()) == 2 and [c.status for c in arrears_charges()] == ["declined", "succeeded"]
    assert Invoice.select().where(Invoice.payment.in_([declined, retried])).count() == 1


def test_a_card_saved_for_the_arrears_that_declines_them_is_not_kept(customer, on_hold, save_card):
    from core import payment_methods

    sub = on_hold()
    previous = sub.payment_method_id
    card = save_card(customer, "4000 0000 0000 9995")  # saves fine, declines at its first charge
    declined = billing.update_payment_method(sub, card).refresh()
    assert declined.status == "failed" and payloads.metadata(declined.metadata) == {}  # kept inside
    assert card.refresh().deleted_at is not None
    assert "9995" not in [m.last4 for m in payment_methods.saved(customer)]
    assert sub.refresh().payment_method_id == previous and sub.status == "on_hold"


def test_a_card_already_in_use_that_declines_the_arrears_is_kept(customer, product, on_hold,
                                                                subscribe, save_card):
    sub = on_hold()
    other, _ = subscribe(customer, product)  # paid with a good card; then moved to one that declines
    card = save_card(customer, "pm_card_insufficientFunds")
    billing.update_payment_method(other, card)
    assert billing.update_payment_method(sub, card).refresh().status == "failed"
    assert card.refresh().deleted_at is None and sub.refresh().payment_method_id == card.id


def test_an_active_subscription_only_switches_its_method(customer, product, subscribe, save_card):
    sub, _ = subscribe(customer, product)
    card = save_card(customer, "pm_card_mastercard")
    assert billing.update_payment_method(sub, card) is None
    assert sub.refresh().payment_method_id == card.id
    assert len(charges()) == 1


def test_a_cancelled_subscription_cannot_be_charged_arrears(customer, on_hold, save_card):
    sub = on_hold()
    billing.cancel(sub)
    with pytest.raises(billing.BillingError) as error:
        billing.update_payment_method(sub, save_card(customer))
    assert error.value.code == "SUBSCRIPTION_INACTIVE"
    assert arrears() == []


def test_a_lost_provider_answer_is_retried_with_the_same_idempotency_key(customer, on_hold, save_card):
    sub = on_hold()
    fail_next(after_commit=True)  # the provider charges, but its answer never arrives
    payment = billing.update_payment_method(sub, save_card(customer))
    assert payment.refresh().status == "processing" and sub.refresh().status == "on_hold"
    billing.sweep(stale_after=timedelta(0))
    assert payment.refresh().status == "succeeded" and payment.refresh().attempts == 2
    assert [c.idempotency_key for c in arrears_charges()] == [payment.idempotency_key]
    assert sub.refresh().status == "active" and Invoice.select().where(
        Invoice.payment == payment).count() == 1


def test_a_transient_failure_before_charging_is_retried(customer, on_hold, save_card):
    sub = on_hold()
    fail_next()
    payment = billing.update_payment_method(sub, save_card(customer))
    assert arrears_charges() == []
    billing.sweep(stale_after=timedelta(0))
    assert payment.refresh().status == "succeeded" and len(arrears_charges()) == 1


def test_fifty_concurrent_confirmations_charge_exactly_once(app, customer, on_hold, save_card,
                                                           database_url):
    sub = on_hold()
    card = save_card(customer)
    barrier = threading.Barrier(50)
    errors = []

    def confirm():
        with app.app_context():
            try:
                barrier.wait()
                billing.update_payment_method(sub, card)
            except Exception as error:  # noqa: BLE001 - any error fails the test below
                errors.append(error)
            finally:
                db.close()

    threads = [threading.Thread(target=confirm) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    init_db(database_url)
    assert errors == []
    assert len(arrears_charges()) == 1 and arrears_charges()[0].status == "succeeded"
    assert [p.status for p in arrears()] == ["succeeded"]
    assert Invoice.select().where(Invoice.payment == arrears()[0]).count() == 1
    assert sub.refresh().status == "active"


def test_two_tabs_with_different_cards_charge_once_and_keep_the_charged_card(
        redis_app, customer, on_hold, save_card):
    sub = on_hold()
    first, second = save_card(customer), save_card(customer, "pm_card_mastercard")
    with redis_app.app_context():
        payment = billing.update_payment_method(sub, first)
        assert billing.update_payment_method(sub, second).id == payment.id
    worker = redis_app.worker("--burst")
    assert worker.wait(timeout=120) == 0, worker.stdout.read().decode()
    assert payment.refresh().status == "succeeded" and len(arrears_charges()) == 1
    assert sub.refresh().status == "active" and sub.refresh().payment_method_id == first.id


def test_a_worker_killed_mid_charge_leaves_exactly_one_charge(redis_app, customer, on_hold, save_card):
    sub = on_hold()
    fail_next(hang=60)  # the provider records the charge, then the job stalls
    with redis_app.app_context():
        payment = billing.update_payment_method(sub, save_card(customer))
    worker = redis_app.worker()
    deadline = time.monotonic() + 60
    while not arrears_charges() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(arrears_charges()) == 1, "the worker never reached the provider"
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    assert payment.refresh().status == "processing"

    with redis_app.app_context():
        assert billing.sweep(stale_after=timedelta(0))["charges"] == 1
    second = redis_app.worker("--burst")
    assert second.wait(timeout=120) == 0, second.stdout.read().decode()
    assert payment.refresh().status == "succeeded"
    assert len(arrears_charges()) == 1
    assert [p.status for p in arrears()] == ["succeeded"]
    assert Invoice.select().where(Invoice.payment == payment).count() == 1
    assert sub.refresh().status == "active"


def test_with_redis_down_the_charge_and_its_events_wait_for_the_sweep(
        redis_app, customer, on_hold, save_card):
    from redis import Redis
    from rq import Queue

    sub = on_hold()
    card = save_card(customer)
    with redis_app.app_context():
        working = redis_app.extensions["portico.queue"]
        redis_app.extensions["portico.queue"] = Queue(
            working.name, connection=Redis(port=1, socket_connect_timeout=0.2))
        payment = billing.update_payment_method(sub, card)  # nothing could be queued
        assert payment.refresh().status == "processing"
        redis_app.extensions["portico.queue"] = working
        assert working.count == 0
        assert billing.sweep(stale_after=timedelta(0))["charges"] == 1
    worker = redis_app.worker("--burst")
    assert worker.wait(timeout=120) == 0, worker.stdout.read().decode()
    assert payment.refresh().status == "succeeded" and len(arrears_charges()) == 1
    assert sub.refresh().status == "active"
