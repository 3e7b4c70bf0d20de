"""Moving a subscription's next billing date (Dodo's ``next_billing_date`` update): later, or
earlier down to now, never into the past; an earlier date makes the renewal due, and the sweep
renews it; the periods after it count from the new date."""

from datetime import datetime, timedelta

import pytest
import time_machine
from dodopayments import DodoPayments, UnprocessableEntityError
from test_in_flight import renewal_in_flight
from test_pause import at, renewals

from core import billing
from core.models import Event, Subscription, utcnow
from plugins.sandbox import charges


@pytest.fixture
def started(customer, product, subscribe):
    """A monthly subscription started on 1 March 2026 at 10:00 (next billing date 1 April)."""
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        return subscribe(customer, product)[0]


@pytest.fixture
def sdk(live_server, api):
    return DodoPayments(bearer_token=api.key, base_url=live_server.url + "/api", max_retries=0,
                        _strict_response_validation=True)


def test_the_sdk_moves_the_next_billing_date_in_strict_mode(sdk, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    later = (sub.next_billing_date + timedelta(days=10)).replace(microsecond=0)
    moved = sdk.subscriptions.update(sub.id, next_billing_date=later)
    assert moved.next_billing_date == later
    assert sub.refresh().next_billing_date == later
    updated = (Event.select().where(Event.type == "subscription.updated")
               .order_by(Event.created_at.desc()).first())
    assert datetime.fromisoformat(updated.data["next_billing_date"]) == later


def test_the_sdk_is_refused_a_date_in_the_past(sdk, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    with pytest.raises(UnprocessableEntityError) as refused:
        sdk.subscriptions.update(sub.id, next_billing_date=utcnow() - timedelta(hours=1))
    assert refused.value.body["code"] == "INVALID_NEXT_BILLING_DATE"
    assert "must not be in the past" in refused.value.message
    assert sub.refresh().next_billing_date == sub.next_billing_date


def test_an_earlier_date_makes_the_next_sweep_renew_and_the_periods_count_from_it(api, started):
    with time_machine.travel(at("2026-03-10 12:00"), tick=False):
        answer = api.patch(f"/subscriptions/{started.id}", {"next_billing_date": "2026-03-15T08:00:00Z"})
        assert answer.status_code == 200 and answer.json["next_billing_date"].startswith("2026-03-15T08:00")
        billing.sweep()
    assert renewals() == []  # not due yet
    with time_machine.travel(at("2026-03-15 08:00"), tick=False):
        billing.sweep()
    [renewal] = renewals()
    assert renewal.status == "succeeded" and len(charges()) == 2
    assert (renewal.period_start, renewal.period_end) == (at("2026-03-15 08:00"), at("2026-04-15 08:00"))
    with time_machine.travel(at("2026-04-15 08:00"), tick=False):
        billing.sweep()
    assert [r.period_end for r in renewals()] == [at("2026-04-15 08:00"), at("2026-05-15 08:00")]


def test_now_renews_at_the_next_sweep(api, started):
    with time_machine.travel(at("2026-03-10 12:00"), tick=False):
        api.patch(f"/subscriptions/{started.id}", {"next_billing_date": "2026-03-10T12:00:00Z"})
        billing.sweep()
    [renewal] = renewals()
    assert renewal.status == "succeeded" and renewal.period_start == at("2026-03-10 12:00")


def test_a_later_date_keeps_the_renewal_from_happening_before_it(api, started):
    with time_machine.travel(at("2026-03-10 12:00"), tick=False):
        answer = api.patch(f"/subscriptions/{started.id}", {"next_billing_date": "2026-04-20T10:00:00"})
    assert answer.status_code == 200  # without an offset: UTC
    with time_machine.travel(at("2026-04-01 10:00"), tick=False):
        billing.sweep()
    assert renewals() == []
    with time_machine.travel(at("2026-04-20 10:00"), tick=False):
        billing.sweep()
    [renewal] = renewals()
    assert renewal.period_end == at("2026-05-20 10:00")


def test_a_change_waiting_for_the_renewal_says_it_applies_on_the_new_date(api, started):
    with time_machine.travel(at("2026-03-10 12:00"), tick=False):
        api.post(f"/subscriptions/{started.id}/change-plan", {
            "product_id": started.product_id, "quantity": 2, "effective_at": "next_billing_date",
            "proration_billing_mode": "prorated_immediately"})
        answer = api.patch(f"/subscriptions/{started.id}", {"next_billing_date": "2026-04-20T10:00:00Z"})
    assert answer.json["scheduled_change"]["effective_at"] == answer.json["next_billing_date"]
    with time_machine.travel(at("2026-04-20 10:00"), tick=False):
        billing.sweep()
    assert Subscription.get_by_id(started.id).quantity == 2


def test_a_date_after_the_end_of_the_term_is_refused(api, started):
    answer = api.patch(f"/subscriptions/{started.id}", {"next_billing_date": "2040-01-01T00:00:00Z"})
    assert answer.status_code == 422 and answer.json["code"] == "INVALID_NEXT_BILLING_DATE"


@pytest.mark.parametrize("value", [None, "tomorrow", 1767225600, "2026-13-01T00:00:00Z"])
def test_a_value_that_is_not_a_date_and_time_is_refused(api, started, value):
    answer = api.patch(f"/subscriptions/{started.id}", {"next_billing_date": value})
    assert answer.status_code == 422 and answer.json["code"] == "INVALID_REQUEST_BODY"
    assert Subscription.get_by_id(started.id).next_billing_date == started.next_billing_date


def test_a_cancelled_subscription_has_no_date_to_move(api, started):
    billing.cancel(started)
    answer = api.patch(f"/subscriptions/{started.id}", {"next_billing_date": "2030-01-01T00:00:00Z"})
    assert answer.status_code == 409 and answer.json["code"] == "SUBSCRIPTION_INACTIVE"


def test_the_date_waits_for_a_renewal_in_flight(api, started):
    renewal_in_flight(started, lose_answer=False)
    with time_machine.travel(started.next_billing_date + timedelta(minutes=1), tick=False):
        answer = api.patch(f"/subscriptions/{started.id}", {"next_billing_date": "2026-06-01T00:00:00Z"})
    assert answer.status_code == 409 and answer.json["code"] == "PREVIOUS_PAYMENT_PENDING"
    assert started.refresh().next_billing_date == at("2026-04-01 10:00")


def test_a_refused_change_leaves_the_other_fields_of_the_request_unapplied(api, started):
    answer = api.patch(f"/subscriptions/{started.id}", {"metadata": {"team": "ops"},
                                                         "next_billing_date": "2040-01-01T00:00:00Z"})
    assert answer.status_code == 422 and started.refresh().metadata == {}
