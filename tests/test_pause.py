"""Pausing and resuming a subscription: no renewal while paused, the paid time left kept for
the resume, the merchant through the API (``status`` alone, as Dodo's SDK documents) and the
dashboard, the customer in the portal where the business allows it, and a pause never meeting
a charge half-way."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from conftest import csrf_token
from dodopayments import DodoPayments, UnprocessableEntityError
from test_in_flight import renewal_in_flight
from test_portal import post, sign_in, text

from core import auth, billing, portal_settings
from core.models import Event, Payment, Subscription, utcnow
from plugins.mail import outbox_messages
from plugins.sandbox import charges


def at(text):
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def started(customer, product, subscribe):
    """A monthly subscription started on 1 March 2026 at 10:00 (next billing date 1 April)."""
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        sub, _ = subscribe(customer, product)
    return sub


def renewals():
    return list(Payment.select().where(Payment.kind == "renewal").order_by(Payment.created_at))


def events():
    return [e.type for e in Event.select().order_by(Event.created_at)]


# --- The rule: no renewal while paused, the paid time left kept -------------------------------


def test_a_paused_subscription_is_not_renewed_and_resumes_with_the_paid_time_it_had_left(started):
    assert started.next_billing_date == at("2026-04-01 10:00")
    with time_machine.travel(at("2026-03-22 10:00"), tick=False):  # 10 paid days left
        billing.pause(started)
    for day in ("2026-04-01 10:00", "2026-04-15 10:00", "2026-05-01 10:00"):
        with time_machine.travel(at(day), tick=False):
            billing.sweep()
    assert renewals() == [] and started.refresh().status == "paused"

    with time_machine.travel(at("2026-05-10 09:00"), tick=False):
        billing.resume(started)
    sub = started.refresh()
    assert sub.status == "active" and sub.paused_at is None
    assert sub.next_billing_date == at("2026-05-20 09:00")  # the 10 days left, from the resume
    with time_machine.travel(at("2026-05-20 09:00"), tick=False):
        billing.sweep()
    [renewal] = renewals()
    assert renewal.status == "succeeded" and len(charges()) == 2
    assert (renewal.period_start, renewal.period_end) == (at("2026-05-20 09:00"), at("2026-06-20 09:00"))
    assert started.refresh().next_billing_date == at("2026-06-20 09:00")


def test_a_subscription_paused_after_its_billing_date_is_renewed_as_soon_as_it_resumes(started):
    with time_machine.travel(at("2026-04-01 10:30"), tick=False):  # due, not swept yet
        billing.pause(started)
        billing.sweep()
    assert renewals() == []
    with time_machine.travel(at("2026-04-20 08:00"), tick=False):
        billing.resume(started)
        billing.sweep()
    [renewal] = renewals()
    assert renewal.status == "succeeded" and renewal.period_start == at("2026-04-20 08:00")
    assert started.refresh().next_billing_date == at("2026-05-20 08:00")


def test_a_renewal_queued_before_the_pause_charges_nothing(started):
    due = billing.payloads.iso(started.next_billing_date)
    with time_machine.travel(at("2026-04-01 10:00"), tick=False):
        billing.pause(started)
        billing.renew(started.id, due)  # the job the sweep queued a moment before
    assert renewals() == [] and len(charges()) == 1


def test_a_paused_subscription_resumes_by_itself_on_its_resume_date(started):
    with time_machine.travel(at("2026-03-22 10:00"), tick=False):
        billing.pause(started, resume_at=at("2026-06-01 00:00"))
    with time_machine.travel(at("2026-05-31 23:00"), tick=False):
        billing.sweep()
    assert started.refresh().status == "paused"
    with time_machine.travel(at("2026-06-01 00:01"), tick=False):
        billing.sweep()
    sub = started.refresh()
    assert sub.status == "active" and sub.resume_at is None
    assert sub.next_billing_date == at("2026-06-11 00:01")


def test_pausing_and_resuming_are_announced_under_dodos_event_names_and_e_mailed(app, started):
    with time_machine.travel(at("2026-03-22 10:00"), tick=False):
        billing.pause(started, resume_at=at("2026-05-01 00:00"))
    with time_machine.travel(at("2026-04-10 10:00"), tick=False):
        billing.resume(started)
    assert events()[-2:] == ["subscription.paused", "subscription.unpaused"]
    paused = Event.get(Event.type == "subscription.paused")
    assert paused.data["status"] == "paused" and paused.data["paused_at"].startswith("2026-03-22")
    subjects = [m["Subject"] for m in outbox_messages(app)]
    assert "Your Pro subscription is paused" in subjects
    assert "Your Pro subscription is active again" in subjects
    [mail] = [m for m in outbox_messages(app) if m["Subject"] == "Your Pro subscription is paused"]
    body = " ".join(mail.get_body(("plain",)).get_content().split())
    assert "It resumes on May 1, 2026, with the paid time it had left." in body, body


def test_a_paused_subscription_can_be_cancelled_and_is_never_charged_again(started):
    with time_machine.travel(at("2026-03-22 10:00"), tick=False):
        billing.pause(started)
        billing.cancel(started)
    sub = started.refresh()
    assert sub.status == "cancelled" and sub.paused_at is None
    with time_machine.travel(at("2026-06-01 10:00"), tick=False):
        billing.sweep()
    assert renewals() == [] and len(charges()) == 1


def test_a_resume_date_in_the_past_is_refused(started):
    with pytest.raises(billing.BillingError) as refused:
        billing.pause(started, resume_at=utcnow() - timedelta(days=1))
    assert refused.value.code == "INVALID_RESUME_DATE" and started.refresh().status == "active"


def test_a_subscription_set_to_end_is_kept_before_it_can_be_paused(started):
    billing.cancel(started, at_next_billing_date=True)
    with pytest.raises(billing.BillingError) as refused:
        billing.pause(started)
    assert refused.value.code == "CANCELLATION_SCHEDULED" and started.refresh().status == "active"


# --- A pause never meets a charge half-way ---------------------------------------------------


def test_a_pause_is_refused_while_a_renewal_is_in_flight_and_accepted_once_it_settled(started):
    renewal = renewal_in_flight(started, lose_answer=False)
    with pytest.raises(billing.BillingError) as refused:
        billing.pause(started)
    assert refused.value.code == "PREVIOUS_PAYMENT_PENDING"
    assert started.refresh().status == "active" and renewal.refresh().status == "processing"

    with time_machine.travel(renewal.created_at + timedelta(minutes=30), tick=False):
        billing.sweep()  # the lost job is retried: the renewal is paid, the period moves on
        assert renewal.refresh().status == "succeeded"
        billing.pause(started)
    sub = started.refresh()
    assert sub.status == "paused" and sub.next_billing_date == renewal.period_end


# --- Through the API and the official SDK ----------------------------------------------------


def test_the_sdk_pauses_and_resumes_with_status_alone(live_server, api, started):
    sdk = DodoPayments(bearer_token=api.key, base_url=live_server.url + "/api", max_retries=0,
                       _strict_response_validation=True)
    paused = sdk.subscriptions.update(started.id, status="paused")
    assert paused.status == "paused" and paused.paused_at is not None
    assert Subscription.get_by_id(started.id).status == "paused"
    resumed = sdk.subscriptions.update(started.id, status="active")
    assert resumed.status == "active" and resumed.paused_at is None


def test_the_sdk_gets_422_for_a_pause_sent_with_another_field(live_server, api, started):
    sdk = DodoPayments(bearer_token=api.key, base_url=live_server.url + "/api", max_retries=0,
                       _strict_response_validation=True)
    with pytest.raises(UnprocessableEntityError) as refused:
        sdk.subscriptions.update(started.id, status="paused", metadata={"why": "holiday"})
    assert "sent alone" in refused.value.message
    with pytest.raises(UnprocessableEntityError):
        sdk.subscriptions.update(started.id, pause=True)
    sub = Subscription.get_by_id(started.id)
    assert sub.status == "active" and sub.metadata == {}


def test_resuming_through_the_api_with_another_field_is_refused_and_changes_nothing(api, started):
    billing.pause(started)
    answer = api.patch(f"/subscriptions/{started.id}", {"status": "active",
                                                        "cancel_at_next_billing_date": True})
    assert answer.status_code == 422 and answer.json["code"] == "INVALID_REQUEST_BODY"
    sub = started.refresh()
    assert sub.status == "paused" and not sub.cancel_at_next_billing_date


def test_resuming_a_subscription_that_is_not_paused_is_a_conflict(api, started):
    answer = api.patch(f"/subscriptions/{started.id}", {"status": "active"})
    assert answer.status_code == 409 and answer.json["code"] == "SUBSCRIPTION_NOT_PAUSED"


def test_the_api_lists_paused_subscriptions(api, started):
    billing.pause(started)
    listed = api.get("/subscriptions?status=paused").json["items"]
    assert [s["subscription_id"] for s in listed] == [started.id]


# --- The dashboard ---------------------------------------------------------------------------


def dashboard(client, business):
    """``client`` signed in to the dashboard as the business's owner."""
    auth.create_merchant_user(business, "owner@acme.test", "correct horse battery")
    page = client.get("/dashboard/login")
    client.post("/dashboard/login", data={"csrf_token": csrf_token(page.text), "email": "owner@acme.test",
                                          "password": "correct horse battery"})
    return client


def test_a_merchant_pauses_and_resumes_from_the_customer_page(client, business, customer, started):
    dashboard(client, business)
    page = client.get(f"/dashboard/customers/{customer.id}")
    assert "Pause" in page.text
    answer = client.post(f"/dashboard/subscriptions/{started.id}/pause",
                         data={"csrf_token": csrf_token(page.text)})
    assert answer.status_code == 303 and started.refresh().status == "paused"
    page = client.get(f"/dashboard/customers/{customer.id}")
    assert "paused" in page.text
    client.post(f"/dashboard/subscriptions/{started.id}/resume",
                data={"csrf_token": csrf_token(page.text)})
    assert started.refresh().status == "active"


# --- The portal ------------------------------------------------------------------------------


def allow_customers_to_pause(business):
    """The merchant turns pausing on in its portal settings (test mode)."""
    portal_settings.save(business.id, "test", {"pause": {"enabled": True}})


def test_customers_cannot_pause_unless_the_business_allows_it(client, customer, started):
    sign_in(client, customer)
    assert "Pause" not in text(client.get(f"/portal/subscriptions/{started.id}"))
    assert client.get(f"/portal/subscriptions/{started.id}/pause").status_code == 404


def test_a_customer_pauses_until_a_date_and_sees_it_paused_with_its_resume_date(client, business,
                                                                                customer, started):
    allow_customers_to_pause(business)
    sign_in(client, customer)
    resume_on = (utcnow() + timedelta(days=40)).date()
    answer = post(client, f"/portal/subscriptions/{started.id}/pause",
                  {"resume_on": resume_on.isoformat()})
    assert answer.status_code == 303
    sub = started.refresh()
    assert sub.status == "paused" and sub.resume_at.date() == resume_on
    page = text(client.get(f"/portal/subscriptions/{started.id}"))
    assert "Paused" in page and f"resumes on {resume_on:%B} {resume_on.day}, {resume_on.year}" in page


def test_a_customer_pauses_without_a_date_and_resumes_when_they_choose(client, business, customer,
                                                                       started):
    allow_customers_to_pause(business)
    sign_in(client, customer)
    post(client, f"/portal/subscriptions/{started.id}/pause", {"resume_on": ""})
    assert started.refresh().status == "paused"
    assert "until it is resumed" in text(client.get(f"/portal/subscriptions/{started.id}"))
    answer = post(client, f"/portal/subscriptions/{started.id}/resume",
                  page=f"/portal/subscriptions/{started.id}")
    assert answer.status_code == 303 and started.refresh().status == "active"


def test_a_resume_date_in_the_past_re_renders_the_form_with_a_message(client, business, customer,
                                                                       started):
    allow_customers_to_pause(business)
    sign_in(client, customer)
    answer = post(client, f"/portal/subscriptions/{started.id}/pause", {"resume_on": "2020-01-01"})
    assert answer.status_code == 400 and "Choose a date after today." in text(answer)
    assert started.refresh().status == "active"
