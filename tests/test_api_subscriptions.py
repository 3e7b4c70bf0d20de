"""Subscriptions through the merchant API: created by charging a saved card, cancelled now or at
the next billing date, moved to another plan, and given another payment method (which
reactivates one on hold)."""

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine

from core import auth
from core.models import Addon, Customer, Invoice, Payment, PaymentMethod, Product, ProductAddon, Subscription
from plugins.sandbox import charges


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app


def subscribe(api, customer, product, card="pm_card_visa", buyer=None, **fields):
    """Subscribe ``customer`` (or the ``buyer`` given by e-mail) through the API."""
    return api.post("/subscriptions", {"billing": {"country": "FR", "city": "Paris"},
                                       "customer": buyer or {"customer_id": customer.id},
                                       "product_id": product.id, "quantity": 1,
                                       "payment_method_id": card, **fields})


def test_a_subscription_charged_to_a_saved_card_starts_active_with_an_invoice(api, customer, product,
                                                                               save_card):
    card = save_card(customer)
    answer = subscribe(api, customer, product, card.id, metadata={"order": "A-17"})
    assert answer.status_code == 200
    created = answer.json
    sub = Subscription.get_by_id(created["subscription_id"])
    payment = Payment.get_by_id(created["payment_id"])
    assert sub.status == "active" and sub.payment_method_id == card.id
    assert sub.billing == {"country": "FR", "city": "Paris", "state": None, "street": None, "zipcode": None}
    assert payment.status == "succeeded" and payment.amount == 1800  # 15.00 plus 20 % VAT
    assert Invoice.get(Invoice.payment == payment).total == 1800
    assert (created["recurring_pre_tax_amount"], created["metadata"]) == (1500, {"order": "A-17"})
    assert created["payment_method_required"] is False and created["payment_link"] is None


def test_in_test_mode_a_test_token_becomes_the_customers_saved_card(api, customer, product):
    sub_id = subscribe(api, customer, product, "pm_card_mastercard").json["subscription_id"]
    [card] = PaymentMethod.select().where(PaymentMethod.customer == customer)
    assert (card.brand, card.last4, card.provider) == ("mastercard", "4444", "sandbox")
    assert Subscription.get_by_id(sub_id).payment_method_id == card.id


def test_a_declined_first_charge_leaves_the_subscription_failed(api, customer, product, heard):
    created = subscribe(api, customer, product, "pm_card_chargeDeclined").json
    assert Subscription.get_by_id(created["subscription_id"]).status == "failed"
    assert Payment.get_by_id(created["payment_id"]).status == "failed"
    assert [n.type for n in heard.notifications] == ["payment.failed", "subscription.failed"]


def test_a_card_number_or_an_unknown_method_is_not_found(api, customer, product):
    for method in ("4242424242424242", "pm_nothing_like_it"):
        answer = subscribe(api, customer, product, method)
        assert answer.status_code == 404 and "payment method" in answer.json["message"]
    assert Subscription.select().count() == 0 and charges(status=None) == []


def test_a_live_key_cannot_charge_a_test_token(client, business):
    customer = Customer.create(business=business, mode="live", email="dana@example.com", name="Dana")
    product = Product.create(business=business, mode="live", name="Pro", price=1500, currency="EUR",
                             is_recurring=True)
    live = auth.create_api_key(business, "live")[1]
    answer = client.post("/api/subscriptions", headers={"Authorization": f"Bearer {live}"}, json={
        "billing": {"country": "FR"}, "customer": {"customer_id": customer.id}, "product_id": product.id,
        "quantity": 1, "payment_method_id": "pm_card_visa"})
    assert answer.status_code == 404 and charges(status=None) == []


def test_a_new_customer_is_created_by_email_and_found_again(api, customer, product):
    new = {"email": "bob@example.com", "name": "Bob"}
    first = subscribe(api, customer, product, buyer=new).json
    second = subscribe(api, customer, product, buyer={"email": "BOB@example.com"}).json
    assert first["customer"]["customer_id"] == second["customer"]["customer_id"]
    assert Customer.get(Customer.email == "bob@example.com").name == "Bob"
    existing = subscribe(api, customer, product, buyer={"email": "ann@example.com"}).json
    assert existing["customer"]["customer_id"] == customer.id


def test_add_ons_offered_with_the_plan_are_charged_with_it(api, business, customer, product):
    seat = Addon.create(business=business, mode="test", name="Seat", price=500, currency="EUR")
    ProductAddon.create(product=product, addon=seat)
    created = subscribe(api, customer, product, addons=[{"addon_id": seat.id, "quantity": 2}]).json
    assert created["addons"] == [{"addon_id": seat.id, "quantity": 2}]
    assert created["recurring_pre_tax_amount"] == 2500
    assert Payment.get_by_id(created["payment_id"]).amount == 3000


def test_an_add_on_not_offered_with_the_plan_is_refused(api, business, customer, product):
    stray = Addon.create(business=business, mode="test", name="Stray", price=500, currency="EUR")
    answer = subscribe(api, customer, product, addons=[{"addon_id": stray.id, "quantity": 1}])
    assert answer.status_code == 409 and Subscription.select().count() == 0


def test_the_list_filters_by_customer_and_status(api, business, customer, product):
    active = subscribe(api, customer, product).json["subscription_id"]
    failed = subscribe(api, customer, product, "pm_card_chargeDeclined").json["subscription_id"]
    other = Customer.create(business=business, mode="test", email="bob@example.com", name="Bob")
    theirs = subscribe(api, other, product).json["subscription_id"]

    def ids(query):
        return [s["subscription_id"] for s in api.get("/subscriptions" + query).json["items"]]

    assert ids("") == [theirs, failed, active]
    assert ids(f"?customer_id={customer.id}&status=active") == [active]
    assert ids("?status=failed") == [failed]
    assert ids("?page_number=1&page_size=2") == [active] and ids("?page_number=2&page_size=2") == []


# --- Cancelling -----------------------------------------------------------------------------


def test_status_cancelled_cancels_now_as_the_api_key(api, business, customer, product, heard):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    answer = api.patch(f"/subscriptions/{sub_id}", {"status": "cancelled",
                                                    "cancellation_feedback": "too_expensive"}).json
    assert answer["status"] == "cancelled" and answer["cancelled_at"]
    assert answer["cancelled_by"]["actor_type"] == "api_key"
    assert answer["cancellation_feedback"] == "too_expensive"
    assert heard.of_type("subscription.cancelled")


def test_cancel_at_the_next_billing_date_then_revoke_it(api, customer, product):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    scheduled = api.patch(f"/subscriptions/{sub_id}", {"cancel_at_next_billing_date": True,
                                                       "cancellation_comment": "Moving on"}).json
    assert scheduled["status"] == "active" and scheduled["cancel_at_next_billing_date"] is True
    assert scheduled["cancellation_comment"] == "Moving on"
    kept = api.patch(f"/subscriptions/{sub_id}", {"cancel_at_next_billing_date": False}).json
    assert kept["cancel_at_next_billing_date"] is False and kept["cancellation_comment"] is None


def test_a_null_status_is_refused_and_cancels_nothing(api, customer, product):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    answer = api.patch(f"/subscriptions/{sub_id}", {"status": None})
    assert answer.status_code == 422 and answer.json["code"] == "INVALID_REQUEST_BODY"
    assert Subscription.get_by_id(sub_id).status == "active"


def test_feedback_without_a_cancellation_is_a_conflict(api, customer, product):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    answer = api.patch(f"/subscriptions/{sub_id}", {"cancellation_feedback": "unused"})
    assert answer.status_code == 409 and Subscription.get_by_id(sub_id).cancellation_feedback is None


def test_cancelling_twice_is_a_conflict_the_sdk_does_not_retry(api, customer, product):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    api.patch(f"/subscriptions/{sub_id}", {"status": "cancelled"})
    again = api.patch(f"/subscriptions/{sub_id}", {"status": "cancelled"})
    assert again.status_code == 409 and again.headers["x-should-retry"] == "false"
    assert again.json["code"] == "INVALID_SUBSCRIPTION_TRANSITION"


def test_billing_address_and_metadata_are_replaced_and_announced(api, customer, product, heard):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    updated = api.patch(f"/subscriptions/{sub_id}", {"billing": {"country": "DE"},
                                                     "metadata": {"team": "ops"}}).json
    assert updated["billing"]["country"] == "DE" and updated["metadata"] == {"team": "ops"}
    assert heard.of_type("subscription.updated")[-1].data["metadata"] == {"team": "ops"}


# --- Changing plan --------------------------------------------------------------------------


@pytest.fixture
def bigger(business):
    return Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)


def test_an_upgrade_is_charged_prorated_then_applied(api, customer, product, bigger):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    answer = api.post(f"/subscriptions/{sub_id}/change-plan", {
        "product_id": bigger.id, "quantity": 1, "proration_billing_mode": "prorated_immediately"}).json
    payment = Payment.get_by_id(answer["payment_id"])
    assert payment.kind == "plan_change" and payment.status == "succeeded"
    assert 0 < payment.amount <= 3600  # at most a whole period's difference, tax included
    assert api.get(f"/subscriptions/{sub_id}").json["product_id"] == bigger.id


def test_a_downgrade_waits_for_the_next_billing_date(api, customer, product, bigger):
    sub_id = subscribe(api, customer, bigger).json["subscription_id"]
    answer = api.post(f"/subscriptions/{sub_id}/change-plan", {
        "product_id": product.id, "quantity": 1, "proration_billing_mode": "prorated_immediately"}).json
    assert answer["payment_id"] is None
    sub = api.get(f"/subscriptions/{sub_id}").json
    change = sub["scheduled_change"]
    assert sub["product_id"] == bigger.id and change["product_id"] == product.id
    assert change["effective_at"] == sub["next_billing_date"] and change["id"].startswith("spc_")


@pytest.mark.parametrize("operation", ["change-plan", "change-plan/preview"])
def test_a_change_to_the_same_product_and_quantity_is_refused(api, customer, product, heard,
                                                              operation):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    heard.notifications.clear()
    answer = api.post(f"/subscriptions/{sub_id}/{operation}", {
        "product_id": product.id, "quantity": 1, "proration_billing_mode": "prorated_immediately"})
    assert answer.status_code == 409 and answer.json["code"] == "PLAN_UNCHANGED"
    assert answer.headers["x-should-retry"] == "false"
    assert api.get(f"/subscriptions/{sub_id}").json["scheduled_change"] is None
    assert heard.notifications == []
    more = api.post(f"/subscriptions/{sub_id}/{operation}", {
        "product_id": product.id, "quantity": 2, "proration_billing_mode": "prorated_immediately"})
    assert more.status_code == 200  # another quantity of the same product is a change


def test_a_scheduled_downgrade_can_be_dropped(api, customer, product, bigger):
    sub_id = subscribe(api, customer, bigger).json["subscription_id"]
    api.post(f"/subscriptions/{sub_id}/change-plan", {
        "product_id": product.id, "quantity": 1, "proration_billing_mode": "prorated_immediately"})
    assert api.delete(f"/subscriptions/{sub_id}/change-plan/scheduled").status_code == 200
    assert api.get(f"/subscriptions/{sub_id}").json["scheduled_change"] is None
    again = api.delete(f"/subscriptions/{sub_id}/change-plan/scheduled")
    assert again.status_code == 409 and again.json["code"] == "NO_SCHEDULED_PLAN_CHANGE"


def test_a_plan_change_preview_shows_the_charge_and_changes_nothing(api, customer, product, bigger):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    with time_machine.travel(Subscription.get_by_id(sub_id).next_billing_date - timedelta(days=10)):
        preview = api.post(f"/subscriptions/{sub_id}/change-plan/preview", {
            "product_id": bigger.id, "quantity": 2, "proration_billing_mode": "prorated_immediately"}).json
    summary, [line] = preview["immediate_charge"]["summary"], preview["immediate_charge"]["line_items"]
    assert summary["total_amount"] == line["unit_price"] + summary["tax"]
    assert 0 < summary["total_amount"] < 2 * 4500 * 1.2
    assert preview["new_plan"]["product_id"] == bigger.id and preview["new_plan"]["quantity"] == 2
    assert Subscription.get_by_id(sub_id).product_id == product.id
    assert Payment.select().where(Payment.kind == "plan_change").count() == 0


def test_an_inactive_subscription_cannot_change_plan(api, customer, product, bigger):
    sub_id = subscribe(api, customer, product, "pm_card_chargeDeclined").json["subscription_id"]
    answer = api.post(f"/subscriptions/{sub_id}/change-plan", {
        "product_id": bigger.id, "quantity": 1, "proration_billing_mode": "prorated_immediately"})
    assert answer.status_code == 409
    assert answer.json["code"] == "INACTIVE_SUBSCRIPTION_PLAN_CHANGE_NOT_SUPPORTED"


# --- Payment method ---------------------------------------------------------------------------


def existing(method_id):
    return {"type": "existing", "payment_method_id": method_id}


def test_an_active_subscription_switches_card_without_a_charge(api, customer, product, save_card, heard):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    card = save_card(customer, "pm_card_mastercard")
    answer = api.post(f"/subscriptions/{sub_id}/update-payment-method", existing(card.id)).json
    assert answer["payment_id"] is None and len(charges()) == 1
    assert Subscription.get_by_id(sub_id).payment_method_id == card.id
    assert heard.notifications[-1].type == "subscription.updated"


def test_an_on_hold_subscription_is_reactivated_by_a_saved_card(api, customer, on_hold, save_card):
    sub = on_hold()
    card = save_card(customer, "pm_card_mastercard")
    answer = api.post(f"/subscriptions/{sub.id}/update-payment-method", existing(card.id)).json
    payment = Payment.get_by_id(answer["payment_id"])
    assert payment.kind == "arrears" and payment.status == "succeeded"
    assert api.get(f"/subscriptions/{sub.id}").json["status"] == "active"


def test_a_new_card_goes_through_the_providers_form_then_the_portal(api, client, customer, product):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    link = api.post(f"/subscriptions/{sub_id}/update-payment-method", {"type": "new"}).json["payment_link"]
    assert link.startswith("http://portal.test/sandbox/cards/new?state=")
    back = add_card(client, link)
    assert back.path == f"/portal/subscriptions/{sub_id}/payment-method/added"
    assert PaymentMethod.get_by_id(parse_qs(back.query)["payment_method"][0]).last4 == "4444"


def test_a_new_card_can_return_to_the_merchants_page(api, client, customer, product):
    sub_id = subscribe(api, customer, product).json["subscription_id"]
    link = api.post(f"/subscriptions/{sub_id}/update-payment-method", {
        "type": "new", "return_url": "https://acme.example/billing?step=2"}).json["payment_link"]
    back = add_card(client, link)
    assert (back.netloc, back.path, parse_qs(back.query)["step"]) == ("acme.example", "/billing", ["2"])
    method_id = parse_qs(back.query)["payment_method"][0]
    api.post(f"/subscriptions/{sub_id}/update-payment-method", existing(method_id))
    assert Subscription.get_by_id(sub_id).payment_method_id == method_id


def add_card(client, link):
    """Fill the sandbox card form at ``link``; the address it sends the customer back to."""
    path = link.removeprefix("http://portal.test")
    page = client.get(path)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)[1]
    answer = client.post(path, data={"csrf_token": token, "number": "5555 5555 5555 4444",
                                     "expiry": "12/39", "cvc": "123"})
    assert answer.status_code == 303
    return urlsplit(answer.headers["Location"])
