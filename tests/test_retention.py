"""The cancel flow's retention offer: a discount offered once to a customer about to cancel,
accepted (the subscription stays, discounted) or declined (cancelled as chosen); reasons and
outcomes stored, told in the events and counted on the dashboard."""

import re
from datetime import timedelta

import pytest
import time_machine
from conftest import csrf_token, text
from playwright.sync_api import expect
from test_dashboard import sign_in as dashboard_sign_in
from test_portal import sign_in

from core import auth, billing, retention
from core.models import CancellationRequest, Discount, Event, Invoice, Payment, Subscription, utcnow


@pytest.fixture
def offer(business):
    """20 % off the next 3 payments, the business's retention offer."""
    from core import portal_settings

    discount = Discount.create(business=business, mode="test", code="STAY20", type="percentage",
                               amount=2000, subscription_cycles=3)
    portal_settings.save(business.id, "test", {"cancellation": {"retention_discount_id": discount.id}})
    return discount


def ask_to_cancel(client, sub, when="now", feedback="too_expensive", **extra):
    path = f"/portal/subscriptions/{sub.id}/cancel"
    return client.post(path, data={"csrf_token": csrf_token(client.get(path).text), "when": when,
                                   "feedback": feedback, "comment": "Money is tight", **extra})


@pytest.fixture
def merchant(client, business):
    """A browser signed in to the dashboard as the business's owner."""
    auth.create_merchant_user(business, "owner@acme.test", "correct horse battery", name="Owner")
    assert dashboard_sign_in(client, "owner@acme.test", "correct horse battery").status_code == 303
    return client


def last_event(type_):
    return Event.select().where(Event.type == type_).order_by(Event.created_at.desc()).first()


def test_a_customer_about_to_cancel_is_offered_the_discount_instead(client, customer, product,
                                                                     subscribe, offer):
    sub, _ = subscribe(customer, product)
    sign_in(client, customer)
    answer = ask_to_cancel(client, sub)
    assert answer.status_code == 200
    assert "Before you go: stay and get 20% off" in text(answer)
    assert "20% comes off your next 3 payments" in text(answer)
    assert sub.refresh().status == "active" and CancellationRequest.select().count() == 0


def test_accepting_the_offer_keeps_the_subscription_with_the_discount_on_its_next_invoices(
        client, customer, product, subscribe, offer):
    sub, _ = subscribe(customer, product)
    sign_in(client, customer)
    answer = ask_to_cancel(client, sub, offer="accept")
    assert answer.status_code == 303
    assert "Thank you for staying. 20% comes off your next 3 payments." in text(client.get(answer.location))
    sub = sub.refresh()
    assert sub.status == "active" and not sub.cancel_at_next_billing_date
    assert sub.discount["discount_id"] == offer.id and sub.discount_cycles_remaining == 3
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    renewal = Payment.get(Payment.kind == "renewal")
    assert renewal.amount == 1440  # 15.00 less 20 %, plus 20 % VAT
    assert [line["kind"] for line in Invoice.get(Invoice.payment == renewal).lines][-1] == "discount"


def test_an_accepted_offer_is_stored_with_its_reason_and_told_in_the_event(client, customer, product,
                                                                           subscribe, offer):
    sub, _ = subscribe(customer, product)
    sign_in(client, customer)
    ask_to_cancel(client, sub, offer="accept")
    request = CancellationRequest.get()
    assert (request.feedback, request.comment, request.outcome, request.offered_discount) == (
        "too_expensive", "Money is tight", "offer_accepted", offer.id)
    event = last_event("subscription.updated").data
    assert event["cancellation_feedback"] == "too_expensive"
    assert event["retention_offer"] == {"discount_id": offer.id, "outcome": "accepted"}
    assert Discount.get_by_id(offer.id).times_used == 1


@pytest.mark.parametrize("when", ["now", "period_end"])
def test_declining_the_offer_cancels_as_chosen_with_the_reason_stored_and_in_the_event(
        client, customer, product, subscribe, offer, when):
    sub, _ = subscribe(customer, product)
    sign_in(client, customer)
    assert ask_to_cancel(client, sub, when=when, offer="decline").status_code == 303
    sub = sub.refresh()
    assert (sub.status, sub.cancel_at_next_billing_date) == (
        ("cancelled", False) if when == "now" else ("active", True))
    assert sub.cancellation_feedback == "too_expensive" and sub.discount is None
    request = CancellationRequest.get()
    assert (request.when, request.outcome, request.offered_discount) == (when, "cancelled", offer.id)
    event = last_event("subscription.cancelled" if when == "now" else "subscription.updated").data
    assert event["cancellation_feedback"] == "too_expensive"
    assert event["retention_offer"] == {"discount_id": offer.id, "outcome": "declined"}
    assert Discount.get_by_id(offer.id).times_used == 0


def test_the_offer_is_made_once_per_subscription(client, customer, product, subscribe, offer):
    sub, _ = subscribe(customer, product)
    sign_in(client, customer)
    ask_to_cancel(client, sub, offer="accept")
    answer = ask_to_cancel(client, sub)  # asks again later: no second offer, cancelled
    assert answer.status_code == 303 and sub.refresh().status == "cancelled"
    assert [r.outcome for r in CancellationRequest.select().order_by(CancellationRequest.created_at)] == [
        "offer_accepted", "cancelled"]
    assert CancellationRequest.select().where(CancellationRequest.outcome == "cancelled").get(
    ).offered_discount is None


@pytest.mark.parametrize("spoil", ["expired", "used_up", "other_product"])
def test_a_discount_that_can_no_longer_be_given_is_not_offered(client, customer, product, subscribe,
                                                               offer, spoil):
    changes = {"expired": {"expires_at": utcnow() - timedelta(days=1)},
               "used_up": {"usage_limit": 1, "times_used": 1},
               "other_product": {"restricted_to": ["pdt_other"]}}[spoil]
    Discount.update(**changes).where(Discount.id == offer.id).execute()
    sub, _ = subscribe(customer, product)
    sign_in(client, customer)
    assert ask_to_cancel(client, sub).status_code == 303
    assert sub.refresh().status == "cancelled"
    assert CancellationRequest.get().offered_discount is None


def test_accepting_an_offer_gone_meanwhile_cancels_nothing(client, customer, product, subscribe, offer):
    sub, _ = subscribe(customer, product)
    sign_in(client, customer)
    ask_to_cancel(client, sub)  # the offer is shown; then the last use of the code goes elsewhere
    Discount.update(usage_limit=1, times_used=1).where(Discount.id == offer.id).execute()
    answer = ask_to_cancel(client, sub, offer="accept")
    assert "This offer is no longer available" in text(client.get(answer.location))
    assert sub.refresh().status == "active" and sub.discount is None


def test_without_an_offer_set_the_cancel_flow_cancels_at_once_and_keeps_the_reason(
        client, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    sign_in(client, customer)
    assert ask_to_cancel(client, sub, feedback="unused").status_code == 303
    assert sub.refresh().status == "cancelled"
    assert (CancellationRequest.get().feedback, CancellationRequest.get().outcome) == ("unused", "cancelled")


def test_the_merchant_sets_the_offer_through_the_api_and_an_unknown_discount_is_refused(api, offer):
    answer = api.patch("/customer-portal/configuration",
                       {"cancellation": {"retention_discount_id": "dsc_unknown"}})
    assert answer.status_code == 422 and "no such discount" in answer.json["message"]
    assert api.get("/customer-portal/configuration").json["cancellation"]["retention_discount_id"] == offer.id
    cleared = api.patch("/customer-portal/configuration", {"cancellation": {"retention_discount_id": None}})
    assert cleared.status_code == 200 and cleared.json["cancellation"]["retention_discount_id"] is None


def test_the_dashboard_sets_the_offer(merchant, business, offer):
    client = merchant
    page = client.get("/dashboard/customer-portal")
    assert "STAY20: 20 % off, 3 payments" in text(page)
    form = {"csrf_token": csrf_token(page.text), "cancellation_enabled": "y",
            "cancellation_mode": "customer_choice", "retention_discount_id": "",
            "plan_change_enabled": "y"}
    assert client.post("/dashboard/customer-portal", data=form).status_code == 303
    from core import portal_settings

    assert portal_settings.load(business.id, "test")[0]["cancellation"]["retention_discount_id"] is None


def test_the_dashboard_counts_reasons_and_offers_of_the_last_30_days(merchant, customer, product,
                                                                     subscribe, offer):
    subs = [subscribe(customer, product)[0] for _ in range(3)]
    with time_machine.travel(utcnow() - timedelta(days=31)):
        retention.cancel(subs[0], "unused", None, "now", None, {"actor_type": "customer"})
    retention.accept(subs[1], offer, "too_expensive", None, "now")
    retention.cancel(subs[2], "too_expensive", None, "now", offer, {"actor_type": "customer"})
    words = text(merchant.get("/dashboard/cancellations"))
    assert ("Requests to cancel 2 Cancelled 1 Cancellations taken back 0 Offers made 2 "
            "Offers accepted 1") in words
    assert "Too expensive 2" in words and "Not used enough" not in words


def test_a_cancellation_at_the_period_end_taken_back_is_no_longer_counted_as_cancelled(
        merchant, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    retention.cancel(sub, "unused", None, "period_end", None, {"actor_type": "customer"})
    billing.undo_cancel(sub)
    words = text(merchant.get("/dashboard/cancellations"))
    assert "Requests to cancel 1 Cancelled 0 Cancellations taken back 1" in words


@pytest.mark.browser
@pytest.mark.parametrize("choice", ["accept", "decline"])
def test_the_cancel_flow_with_its_retention_offer_in_a_browser(served, page, customer, product,
                                                               subscribe, offer, choice):
    sub, _ = subscribe(customer, product)
    page.goto(auth.sign_in_link(customer))
    page.locator("form[data-continue] button").click()
    page.goto(f"{served}/portal/subscriptions/{sub.id}/cancel")
    page.locator("input[name=when][value=now]").check()
    page.get_by_label("Reason (optional)").select_option("too_expensive")
    page.get_by_role("button", name="Confirm cancellation").click()
    expect(page.get_by_role("heading", name="Before you go: stay and get 20% off")).to_be_visible()
    page.screenshot_as("portal-retention-offer-en")
    if choice == "accept":
        page.get_by_role("button", name="Stay and get 20% off").click()
        expect(page.get_by_text("Thank you for staying.")).to_be_visible()
        assert re.search(r"/portal/subscriptions/\w+$", page.url)
        sub = sub.refresh()
        assert sub.status == "active" and sub.discount["discount_id"] == offer.id
        with time_machine.travel(sub.next_billing_date, tick=False):
            billing.sweep()
        renewal = Payment.get(Payment.kind == "renewal")
        page.goto(f"{served}/portal/billing")
        expect(page.get_by_text("€14.40").first).to_be_visible()
        assert "discount" in [line["kind"] for line in Invoice.get(Invoice.payment == renewal).lines]
    else:
        page.get_by_role("button", name="No thanks, cancel").click()
        expect(page.get_by_text("Your subscription is cancelled.")).to_be_visible()
        sub = Subscription.get_by_id(sub.id)
        assert sub.status == "cancelled" and sub.cancellation_feedback == "too_expensive"
        assert last_event("subscription.cancelled").data["retention_offer"]["outcome"] == "declined"


def test_a_subscription_with_a_discount_left_is_not_offered_one_that_would_replace_it(
        client, business, customer, product, subscribe, offer):
    half = Discount.create(business=business, mode="test", code="HALF12", type="percentage",
                           amount=5000, subscription_cycles=12)
    sub, _ = subscribe(customer, product, discount=half)
    sign_in(client, customer)
    assert ask_to_cancel(client, sub).status_code == 303  # no offer page: cancelled as asked
    sub = sub.refresh()
    assert sub.status == "cancelled" and sub.discount["discount_id"] == half.id


@pytest.mark.parametrize("spent", [{"expires_at": utcnow() - timedelta(days=1)},
                                   {"usage_limit": 2, "times_used": 2}])
def test_an_expired_or_used_up_discount_cannot_be_made_the_offer(api, business, offer, spent):
    Discount.update(**spent).where(Discount.id == offer.id).execute()
    answer = api.patch("/customer-portal/configuration",
                       {"cancellation": {"retention_discount_id": offer.id}})
    assert answer.status_code == 422 and "expired or is used up" in answer.json["message"]


def test_deleting_the_offers_discount_ends_the_offer_and_other_settings_still_change(api, offer):
    assert api.delete(f"/discounts/{offer.id}").status_code == 200
    assert api.get("/customer-portal/configuration").json["cancellation"]["retention_discount_id"] is None
    answer = api.patch("/customer-portal/configuration", {"billing_history": False})
    assert answer.status_code == 200 and answer.json["billing_history"] is False


def test_a_setting_changed_after_the_offers_code_ran_out_is_still_saved(api, offer):
    Discount.update(usage_limit=1, times_used=1).where(Discount.id == offer.id).execute()
    answer = api.patch("/customer-portal/configuration", {"billing_history": False})
    assert answer.status_code == 200
    assert answer.json["cancellation"]["retention_discount_id"] == offer.id
