"""Actions that meet a charge in flight (``processing`` or ``requires_customer_action``): one
rule each, money recorded exactly once, refunded when no longer wanted, and waits that end."""

import threading
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from conftest import csrf_token

from core import billing
from core.hookspecs import TransientProviderError
from core.models import Event, Invoice, Payment, Refund, Subscription, db, init_db, utcnow
from core.plugins import registry
from plugins.mail import outbox_messages
from plugins.sandbox import charges, fail_next, ledger
from plugins.sandbox.provider import finish_action

WINDOW = timedelta(hours=23)


def refunds_in_ledger():
    return [entry for entry in ledger() if entry.kind == "refund" and entry.status == "succeeded"]


def renewal_in_flight(sub, lose_answer=True):
    """Start the renewal of ``sub``'s billing date and leave it ``processing``: the provider
    charged but its answer was lost (or, without ``lose_answer``, it failed before charging)."""
    fail_next(after_commit=lose_answer)
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    renewal = Payment.get(Payment.kind == "renewal")
    assert renewal.status == "processing"
    return renewal


def assert_refunded_in_full(payment):
    payment = payment.refresh()
    [refund] = Refund.select().where(Refund.payment == payment)
    assert refund.status == "succeeded" and refund.amount == payment.amount
    assert refund.credit_note_number is not None and refund.credit_note["total"] == payment.amount
    assert Invoice.select().where(Invoice.payment == payment).count() == 1
    assert "refund.succeeded" in [e.type for e in Event.select()]
    return refund


# --- The cases customers met ------------------------------------------------------------------


def test_cancelling_now_after_a_lost_arrears_answer_records_the_charge_and_refunds_it(
        app, customer, on_hold, save_card):
    sub = on_hold()
    fail_next(after_commit=True)  # the provider charges; its answer never arrives
    payment = billing.update_payment_method(sub, save_card(customer))
    assert payment.refresh().status == "processing"
    billing.cancel(sub)
    assert payment.refresh().status == "succeeded" and sub.refresh().status == "cancelled"
    refund = assert_refunded_in_full(payment)
    assert [r.amount for r in refunds_in_ledger()] == [payment.amount]
    assert any("refund" in m["Subject"].lower() for m in outbox_messages(app))
    billing.sweep(stale_after=timedelta(0))  # retries find nothing left to do
    assert refund.refresh().status == "succeeded" and Refund.select().count() == 1


def test_a_renewal_settling_after_cancel_now_is_refunded_and_moves_no_date(
        customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    renewal = renewal_in_flight(sub, lose_answer=False)  # not charged yet
    next_date = sub.refresh().next_billing_date
    billing.cancel(sub)
    with time_machine.travel(next_date + timedelta(minutes=30), tick=False):
        billing.sweep()  # the lost job is retried
    renewal = renewal.refresh()
    assert renewal.status == "failed" and renewal.failure_code == "withdrawn"
    assert [c.idempotency_key for c in charges(status=None)
            if c.idempotency_key == renewal.idempotency_key] == []  # never charged
    sub = sub.refresh()
    assert sub.status == "cancelled" and sub.next_billing_date == next_date


def test_a_renewal_charged_before_cancel_now_is_recorded_and_refunded(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    renewal = renewal_in_flight(sub)  # charged, answer lost
    next_date = sub.refresh().next_billing_date
    billing.cancel(sub)
    assert renewal.refresh().status == "succeeded"
    assert_refunded_in_full(renewal)
    sub = sub.refresh()
    assert sub.status == "cancelled" and sub.next_billing_date == next_date and sub.cycles == 0


def test_a_renewal_that_fails_after_cancel_now_is_recorded_without_error(
        customer, product, subscribe, save_card, monkeypatch):
    sub, _ = subscribe(customer, product)
    billing.update_payment_method(sub, save_card(customer, "pm_card_chargeDeclined"))
    renewal = renewal_in_flight(sub.refresh())

    def unreachable(**_):
        raise TransientProviderError("sandbox: unreachable")

    monkeypatch.setattr(registry().provider("sandbox"), "lookup", unreachable)
    billing.cancel(sub)  # the look-up that would end the renewal cannot reach the provider
    assert renewal.refresh().status == "processing"
    declined = billing.ChargeResult("declined", failure_code="card_declined")  # its late webhook
    assert billing.settle(renewal.id, declined).status == "failed"
    assert renewal.refresh().failure_code == "card_declined"
    assert sub.refresh().status == "cancelled" and Refund.select().count() == 0


def test_a_provider_success_arriving_after_a_charge_expired_is_recorded_and_refunded(
        customer, on_hold, save_card):
    sub = on_hold()
    payment = billing.update_payment_method(sub, save_card(customer, "pm_card_threeDSecure2Required"))
    assert payment.refresh().status == "requires_customer_action"
    with time_machine.travel(utcnow() + WINDOW + timedelta(minutes=1), tick=False):
        billing.sweep()
    assert payment.refresh().status == "failed" and payment.refresh().failure_code == "expired"
    late = billing.settle(payment.id, billing.ChargeResult("succeeded", reference="sbx_ch_late"))
    assert late.status == "succeeded" and sub.refresh().status == "on_hold"
    assert Refund.get(Refund.payment == payment).amount == payment.amount


# --- Waits end --------------------------------------------------------------------------------


def test_an_abandoned_3d_secure_arrears_charge_expires_and_frees_the_subscription(
        customer, on_hold, save_card):
    sub = on_hold()
    waiting = billing.update_payment_method(sub, save_card(customer, "pm_card_threeDSecure2Required"))
    assert waiting.refresh().status == "requires_customer_action"
    other = save_card(customer, "pm_card_mastercard")
    assert billing.update_payment_method(sub, other).id == waiting.id  # blocked while it waits
    with time_machine.travel(utcnow() + WINDOW + timedelta(minutes=1), tick=False):
        billing.sweep()
        assert waiting.refresh().status == "failed"
        assert waiting.refresh().failure_code == "expired"
        paid = billing.update_payment_method(sub, other).refresh()
    assert paid.status == "succeeded" and sub.refresh().status == "active"
    assert [c.status for c in charges(status=None) if c.idempotency_key == waiting.idempotency_key] \
        == ["declined"]  # cancelled at the provider: it can no longer succeed


def test_a_renewal_waiting_for_3d_secure_past_the_window_puts_the_subscription_on_hold(
        customer, product, subscribe, save_card):
    sub, _ = subscribe(customer, product)
    billing.update_payment_method(sub, save_card(customer, "pm_card_threeDSecure2Required"))
    due = sub.refresh().next_billing_date
    with time_machine.travel(due, tick=False):
        billing.sweep()
    renewal = Payment.get(Payment.kind == "renewal")
    assert renewal.status == "requires_customer_action" and sub.refresh().status == "active"
    with time_machine.travel(due + timedelta(hours=22), tick=False):
        billing.sweep()
    assert renewal.refresh().status == "requires_customer_action"  # still inside the window
    with time_machine.travel(due + WINDOW + timedelta(minutes=1), tick=False):
        billing.sweep()
    assert renewal.refresh().status == "failed" and sub.refresh().status == "on_hold"


def test_the_wait_window_is_configurable(make_app, customer, on_hold, save_card):
    app = make_app({"CHARGE_WAIT_WINDOW": 3600})
    with app.app_context():
        sub = on_hold()
        waiting = billing.update_payment_method(sub, save_card(customer, "pm_card_threeDSecure2Required"))
        with time_machine.travel(utcnow() + timedelta(minutes=61), tick=False):
            assert billing.sweep()["expired"] == 1
        assert waiting.refresh().status == "failed"


def test_a_completed_3d_secure_step_settles_the_charge(client, customer, on_hold, save_card):
    sub = on_hold()
    waiting = billing.update_payment_method(sub, save_card(customer, "pm_card_threeDSecure2Required"))
    page = client.get(urlsplit(waiting.refresh().action_url).path)
    client.post(urlsplit(waiting.refresh().action_url).path,
                data={"csrf_token": csrf_token(page.text), "outcome": "complete"})
    assert waiting.refresh().status == "succeeded" and sub.refresh().status == "active"


def test_a_processing_payment_past_the_window_is_looked_up_never_charged_again(
        customer, on_hold, save_card):
    sub = on_hold()
    fail_next()  # fails before charging: nothing reached the provider
    payment = billing.update_payment_method(sub, save_card(customer))
    with time_machine.travel(utcnow() + timedelta(hours=25), tick=False):
        billing.run_charge(payment.id)  # a late retry of the lost job
    assert payment.refresh().status == "failed" and payment.refresh().failure_code == "expired"
    assert [c for c in charges(status=None) if c.idempotency_key == payment.idempotency_key] == []


def test_a_lost_answer_past_the_window_is_reconciled_from_the_providers_record(
        customer, on_hold, save_card):
    sub = on_hold()
    fail_next(after_commit=True)
    payment = billing.update_payment_method(sub, save_card(customer))
    with time_machine.travel(utcnow() + timedelta(hours=25), tick=False):
        billing.sweep()
    assert payment.refresh().status == "succeeded" and payment.refresh().attempts == 1
    assert sub.refresh().status == "active"
    assert [c.idempotency_key for c in charges()].count(payment.idempotency_key) == 1


# --- One rule per action ----------------------------------------------------------------------


def test_cancelling_at_the_next_billing_date_waits_for_a_renewal_in_flight(
        customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    renewal_in_flight(sub, lose_answer=False)
    with pytest.raises(billing.BillingError) as refused:
        billing.cancel(sub, at_next_billing_date=True)
    assert refused.value.code == "PREVIOUS_PAYMENT_PENDING"
    assert not sub.refresh().cancel_at_next_billing_date


def test_undoing_a_cancellation_waits_for_a_renewal_in_flight(customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    billing.cancel(sub, at_next_billing_date=True)
    Subscription.update(cancel_at_next_billing_date=False).where(Subscription.id == sub.id).execute()
    renewal_in_flight(sub.refresh(), lose_answer=False)
    Subscription.update(cancel_at_next_billing_date=True).where(Subscription.id == sub.id).execute()
    with pytest.raises(billing.BillingError) as refused:
        billing.undo_cancel(sub)
    assert refused.value.code == "PREVIOUS_PAYMENT_PENDING"


@pytest.mark.parametrize("card", ["pm_card_threeDSecure2Required", "lost_answer"])
def test_a_plan_change_is_refused_while_any_charge_is_in_flight(customer, product, subscribe,
                                                                save_card, business, card):
    from core.models import Product

    team = Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)
    sub, _ = subscribe(customer, product)
    if card == "lost_answer":
        renewal_in_flight(sub)
    else:
        billing.update_payment_method(sub, save_card(customer, card))
        with time_machine.travel(sub.next_billing_date, tick=False):
            billing.sweep()
    for quantity, plan in ((1, team), (3, product)):
        with pytest.raises(billing.BillingError) as refused:
            billing.change_plan(sub.refresh(), plan, quantity)
        assert refused.value.code == "PREVIOUS_PAYMENT_PENDING"


def test_a_new_card_during_a_renewal_in_flight_is_kept_for_the_next_charges(
        customer, product, subscribe, save_card):
    sub, first = subscribe(customer, product)
    renewal = renewal_in_flight(sub, lose_answer=False)
    other = save_card(customer, "pm_card_mastercard")
    assert billing.update_payment_method(sub, other) is None
    with time_machine.travel(renewal.created_at + timedelta(minutes=20), tick=False):
        billing.sweep()
    assert renewal.refresh().status == "succeeded"
    assert renewal.refresh().payment_method_id == first.payment_method_id
    assert sub.refresh().payment_method_id == other.id and sub.refresh().status == "active"


def test_the_portal_says_why_a_cancellation_at_period_end_must_wait(client, customer, product,
                                                                      subscribe):
    from test_portal import post, sign_in, text

    sign_in(client, customer)
    sub, _ = subscribe(customer, product)
    renewal_in_flight(sub, lose_answer=False)
    post(client, f"/portal/subscriptions/{sub.id}/cancel", {"when": "period_end"})
    page = text(client.get(f"/portal/subscriptions/{sub.id}"))
    assert "A payment for this subscription is in progress" in page


def test_the_api_refuses_a_cancellation_at_period_end_during_a_renewal_and_accepts_cancel_now(
        api, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    renewal = renewal_in_flight(sub)
    answer = api.patch(f"/subscriptions/{sub.id}", {"cancel_at_next_billing_date": True})
    assert answer.status_code == 409 and answer.json["code"] == "PREVIOUS_PAYMENT_PENDING"
    answer = api.patch(f"/subscriptions/{sub.id}", {"status": "cancelled"})
    assert answer.status_code == 200 and answer.json["status"] == "cancelled"
    assert_refunded_in_full(renewal)


# --- Concurrency ------------------------------------------------------------------------------


def _at_once(app, count, action):
    barrier, errors = threading.Barrier(count), []

    def run():
        with app.app_context():
            try:
                barrier.wait()
                action()
            except Exception as error:  # noqa: BLE001 - any error fails the test
                errors.append(error)
            finally:
                db.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_ten_concurrent_confirmations_with_a_declining_card_make_one_attempt(
        app, customer, on_hold, save_card, database_url):
    sub = on_hold()
    card = save_card(customer, "pm_card_chargeDeclined")
    errors = _at_once(app, 10, lambda: billing.update_payment_method(sub, card))
    init_db(database_url)
    assert errors == []
    attempts = [c for c in charges(status=None) if c.idempotency_key.startswith("arrears:")]
    assert len(attempts) == 1 and attempts[0].status == "declined"
    assert Payment.select().where(Payment.kind == "arrears").count() == 1


def test_ten_concurrent_confirmations_with_redis_make_one_attempt(
        app, make_app, redis_url, customer, on_hold, save_card, database_url):
    import uuid

    from rq import SimpleWorker

    from core import jobs

    sub = on_hold()
    card = save_card(customer, "pm_card_chargeDeclined")
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}"})
    with app.app_context():
        for _round in range(2):  # clicks while the charge waits, then after it declined
            errors = _at_once(app, 10, lambda: billing.update_payment_method(sub, card))
            init_db(database_url)
            assert errors == []
            SimpleWorker([jobs.queue()], connection=jobs.queue().connection).work(burst=True)
        jobs.queue().empty()
    attempts = [c for c in charges(status=None) if c.idempotency_key.startswith("arrears:")]
    assert len(attempts) == 1 and attempts[0].status == "declined"


def test_the_same_declined_card_can_be_tried_again_a_minute_later(customer, on_hold, save_card):
    sub = on_hold()
    card = save_card(customer, "pm_card_chargeDeclined")
    first = billing.update_payment_method(sub, card)
    assert billing.update_payment_method(sub, card).id == first.id
    with time_machine.travel(utcnow() + timedelta(minutes=2), tick=False):
        assert billing.update_payment_method(sub, card).id != first.id


def test_finishing_a_cancelled_3d_secure_step_changes_nothing(customer, on_hold, save_card):
    sub = on_hold()
    waiting = billing.update_payment_method(sub, save_card(customer, "pm_card_threeDSecure2Required"))
    billing.cancel(sub)
    assert waiting.refresh().status == "failed"
    assert finish_action(waiting.refresh().provider_reference, succeed=True).status == "declined"
    assert Refund.select().count() == 0


def test_the_payment_page_says_a_refunded_arrears_charge_was_refunded_not_that_the_sub_is_active(
        app, client, customer, on_hold, save_card):
    from test_portal import sign_in

    sub = on_hold()
    fail_next(after_commit=True)  # the provider charges; its answer never arrives
    payment = billing.update_payment_method(sub, save_card(customer))
    billing.cancel(sub)
    sign_in(client, customer)

    page = client.get(f"/portal/payments/{payment.id}").text
    assert "Your payment was refunded" in page and "€18.00" in page
    assert "active again" not in page
