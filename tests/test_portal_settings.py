"""The portal each merchant configures: every feature switched off is absent from the portal
and refused (404) by its pages and forms, the API and the dashboard say and change the same
settings, and cancellation and plan changes follow the merchant's policy."""

import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from conftest import csrf_token, text

from core import auth, licensing, portal_settings
from core.models import LicenseKey, Product, Refund


def post(client, path, data=None, page="/portal/profile"):
    token = csrf_token(client.get(page).text)
    return client.post(path, data={"csrf_token": token, **(data or {})})


@pytest.fixture
def ann(client, customer):
    path = urlsplit(auth.sign_in_link(customer)).path
    client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    return client


@pytest.fixture
def set_portal(api):
    """Change the portal's settings as a merchant does, through the API; returns its answer."""

    def change(**changes):
        answer = api.patch("/customer-portal/configuration", changes)
        assert answer.status_code == 200, answer.json
        return answer.json

    return change


@pytest.fixture
def world(customer, business, product, subscribe):
    """An active subscription with an invoice, another plan, and an activated license key."""
    sub, payment = subscribe(customer, product)
    team = Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True)
    key = LicenseKey.create(business=business, mode="test", customer=customer, product=product,
                            key="KEY-1", activations_limit=3)
    instance = licensing.activate(key.key, "Work laptop")
    invoice = payment.invoices.get()
    return {"sub": sub.id, "team": team.id, "invoice": invoice.id, "key": key.id,
            "instance": instance.id, "method": sub.payment_method_id}


FEATURES = {  # setting: (pages answering 404 while off, forms answering 404, link gone from)
    "billing_history": (
        {"billing_history": False},
        ["/portal/billing", "/portal/invoices/{invoice}.pdf"], [],
        ("/portal/", 'href="/portal/billing"')),
    "payment_method_update": (
        {"payment_method_update": False},
        ["/portal/payment-methods", "/portal/subscriptions/{sub}/payment-method"],
        ["/portal/subscriptions/{sub}/payment-method", "/portal/payment-methods/new",
         "/portal/payment-methods/{method}/remove", "/portal/payment-methods/{method}/default"],
        ("/portal/subscriptions/{sub}", 'href="/portal/subscriptions/{sub}/payment-method"')),
    "cancellation": (
        {"cancellation": {"enabled": False}},
        ["/portal/subscriptions/{sub}/cancel"], ["/portal/subscriptions/{sub}/cancel"],
        ("/portal/subscriptions/{sub}", 'href="/portal/subscriptions/{sub}/cancel"')),
    "plan_change": (
        {"plan_change": {"enabled": False}},
        ["/portal/subscriptions/{sub}/plan", "/portal/subscriptions/{sub}/plan/{team}"],
        ["/portal/subscriptions/{sub}/plan/{team}"],
        ("/portal/subscriptions/{sub}", 'href="/portal/subscriptions/{sub}/plan"')),
    "license_activation_removal": (
        {"license_activation_removal": False}, [],
        ["/portal/licenses/{key}/instances/{instance}/deactivate"],
        ("/portal/licenses", "/deactivate")),
    "quantity_change": (
        {"quantity_change": {"enabled": False}},
        ["/portal/subscriptions/{sub}/seats", "/portal/subscriptions/{sub}/seats?quantity=3"],
        ["/portal/subscriptions/{sub}/seats"],
        ("/portal/subscriptions/{sub}", 'href="/portal/subscriptions/{sub}/seats"')),
    "pause": (
        {"pause": {"enabled": False}},
        ["/portal/subscriptions/{sub}/pause"],
        ["/portal/subscriptions/{sub}/pause", "/portal/subscriptions/{sub}/resume"],
        ("/portal/subscriptions/{sub}", 'href="/portal/subscriptions/{sub}/pause"')),
    "email_change": (
        {"profile_fields": {"email": False}}, [],
        ["/portal/profile/email", "/portal/profile/sign-in-again"],
        ("/portal/profile", 'action="/portal/profile/email"')),
}


@pytest.mark.parametrize("feature", FEATURES)
def test_a_feature_switched_off_is_refused_and_its_links_are_gone_then_works_again(
        ann, api, set_portal, world, feature):
    changes, pages, forms, (page, link) = FEATURES[feature]
    on = {name: (True if not isinstance(value, dict) else {k: True for k in value})
          for name, value in changes.items()}
    set_portal(**on)  # pausing is off unless the merchant turns it on; the rest is on already
    assert link.format(**world) in ann.get(page.format(**world)).text
    setting = set_portal(**changes)
    for name, value in changes.items():
        assert (setting[name] == value if not isinstance(value, dict)
                else all(setting[name][k] == v for k, v in value.items()))
    assert api.get("/customer-portal/configuration").json == setting
    for path in pages:
        assert ann.get(path.format(**world)).status_code == 404, path
    for path in forms:
        assert post(ann, path.format(**world), {"when": "now", "payment_method": world["method"],
                                                "email": "new@example.com"}).status_code == 404, path
    assert link.format(**world) not in ann.get(page.format(**world)).text

    set_portal(**on)
    for path in pages:
        assert ann.get(path.format(**world)).status_code == 200, path
    assert link.format(**world) in ann.get(page.format(**world)).text


def test_the_api_answers_the_defaults_until_the_merchant_changes_something(api, business):
    answer = api.get("/customer-portal/configuration").json
    assert answer["business_id"] == business.id and answer["mode"] == "test"
    assert answer["updated_at"] is None and answer["billing_history"] is True
    assert answer["cancellation"] == {"enabled": True, "mode": "customer_choice",
                                      "prorated_refund": False, "reason_required": False,
                                      "reasons": list(portal_settings.REASONS),
                                      "retention_discount_id": None}
    assert answer["plan_change"] == {"enabled": True, "products": []}
    assert answer["quantity_change"] == {"enabled": True} and answer["pause"] == {"enabled": False}


def test_the_api_merges_a_change_and_checks_it(api, business, product):
    one_time = Product.create(business=business, mode="test", name="Setup", price=5000,
                              currency="EUR", is_recurring=False)
    api.patch("/customer-portal/configuration", {"cancellation": {"mode": "at_period_end"}})
    answer = api.patch("/customer-portal/configuration",
                       {"cancellation": {"reasons": ["too_expensive"], "reason_required": True}}).json
    assert answer["cancellation"]["mode"] == "at_period_end" and answer["updated_at"]
    assert answer["cancellation"]["reasons"] == ["too_expensive"]
    for bad in ({"cancellation": {"mode": "never"}}, {"billing_history": "no"}, {"colour": "red"},
                {"cancellation": {"reasons": [], "reason_required": True}},
                {"plan_change": {"products": [{"product_id": "pdt_nope", "switch_to": []}]}},
                {"plan_change": {"products": [{"product_id": product.id, "switch_to": [],
                                               "min_quantity": 5, "max_quantity": 2}]}},
                {"cancellation": {"reasons": ["too_expensive", "too_expensive"]}},
                {"plan_change": {"products": [{"product_id": product.id, "switch_to": [product.id]}]}},
                {"plan_change": {"products": [{"product_id": product.id, "switch_to": [one_time.id]}]}},
                {"plan_change": {"products": [{"product_id": product.id, "switch_to": []},
                                              {"product_id": product.id, "switch_to": []}]}}):
        refused = api.patch("/customer-portal/configuration", bad)
        assert refused.status_code == 422 and refused.json["code"] == "INVALID_REQUEST_BODY", bad


def test_the_settings_are_per_mode(api, business, client):
    api.patch("/customer-portal/configuration", {"billing_history": False})
    live = auth.create_api_key(business, "live")[1]
    answer = client.get("/api/customer-portal/configuration",
                        headers={"Authorization": f"Bearer {live}"})
    assert answer.json["mode"] == "live" and answer.json["billing_history"] is True


def test_the_configuration_is_in_the_openapi_document(client):
    paths = client.get("/api/openapi.json").json["paths"]
    assert set(paths["/customer-portal/configuration"]) == {"get", "patch"}


# --- Cancellation policy -------------------------------------------------------------------------


def test_cancel_immediately_only_offers_now(ann, set_portal, world):
    set_portal(cancellation={"mode": "immediately"})
    page = ann.get(f"/portal/subscriptions/{world['sub']}/cancel").text
    assert 'value="now"' in page and 'value="period_end"' not in page
    refused = post(ann, f"/portal/subscriptions/{world['sub']}/cancel", {"when": "period_end"})
    assert refused.status_code == 400 and "Choose when to cancel." in refused.text


def test_cancel_at_period_end_only_is_not_offered_to_a_subscription_on_hold(ann, set_portal, on_hold):
    sub = on_hold()
    set_portal(cancellation={"mode": "at_period_end"})
    assert ann.get(f"/portal/subscriptions/{sub.id}/cancel").status_code == 404
    assert "/cancel" not in ann.get(f"/portal/subscriptions/{sub.id}").text


def test_only_the_reasons_offered_are_shown_and_one_may_be_required(ann, set_portal, world):
    set_portal(cancellation={"reasons": ["too_expensive", "unused"], "reason_required": True})
    path = f"/portal/subscriptions/{world['sub']}/cancel"
    page = text(ann.get(path))
    assert "It is too expensive" in page and "I don't use it enough" in page
    assert "Another reason" not in page and "Reason (optional)" not in page
    missing = post(ann, path, {"when": "now"})
    assert missing.status_code == 400 and "Choose a reason." in missing.text
    other = post(ann, path, {"when": "now", "feedback": "other"})
    assert other.status_code == 400 and "Choose one of the reasons offered." in other.text
    assert post(ann, path, {"when": "now", "feedback": "unused"}).status_code == 303


def test_an_immediate_cancel_refunds_the_unused_part_of_the_period_when_the_merchant_says_so(
        ann, set_portal, world):
    from core.models import Payment, Subscription

    set_portal(cancellation={"prorated_refund": True})
    sub = Subscription.get_by_id(world["sub"])
    paid = Payment.get(Payment.subscription == sub)
    period = (sub.next_billing_date.date() - sub.previous_billing_date.date()).days
    ten_days = timedelta(days=10)  # the period began ten days ago
    Payment.update(period_start=paid.period_start - ten_days, period_end=paid.period_end - ten_days
                   ).where(Payment.id == paid.id).execute()
    due = round(paid.amount * (period - 10) / period)
    before = text(ann.get(f"/portal/subscriptions/{sub.id}/cancel"))
    assert (f"€{due / 100:.2f} for the unused part of the period is refunded to Visa •••• 4242"
            in before)  # told before confirming
    answer = post(ann, f"/portal/subscriptions/{sub.id}/cancel", {"when": "now"})
    page = text(ann.get(answer.headers["Location"]))
    [refund] = Refund.select()
    assert refund.payment_id == paid.id and refund.status == "succeeded"
    assert refund.amount == round(paid.amount * (period - 10) / period)
    assert refund.credit_note_number == 1
    assert "is refunded to Visa •••• 4242" in page and sub.refresh().status == "cancelled"


def test_without_the_setting_an_immediate_cancel_refunds_nothing(ann, world):
    post(ann, f"/portal/subscriptions/{world['sub']}/cancel", {"when": "now"})
    assert Refund.select().count() == 0


# --- Plan changes ------------------------------------------------------------------------------------


def test_a_plan_only_changes_to_the_products_the_merchant_allows(ann, set_portal, business, product,
                                                                world):
    agency = Product.create(business=business, mode="test", name="Agency", price=9900, currency="EUR",
                            is_recurring=True)
    set_portal(plan_change={"products": [{"product_id": product.id, "switch_to": [agency.id]}]})
    plans = text(ann.get(f"/portal/subscriptions/{world['sub']}/plan"))
    assert "Agency" in plans and "Team" not in plans
    assert ann.get(f"/portal/subscriptions/{world['sub']}/plan/{world['team']}").status_code == 404
    assert ann.get(f"/portal/subscriptions/{world['sub']}/plan/{agency.id}?quantity=3").status_code == 200


def test_a_change_to_another_plan_is_bounded_by_that_plans_quantities_not_the_current_ones(
        ann, set_portal, business, product, world):
    agency = Product.create(business=business, mode="test", name="Agency", price=9900, currency="EUR",
                            is_recurring=True)
    set_portal(plan_change={"products": [
        {"product_id": product.id, "switch_to": [agency.id], "min_quantity": 1, "max_quantity": 1},
        {"product_id": agency.id, "switch_to": [], "min_quantity": 2, "max_quantity": 5}]})
    plans = ann.get(f"/portal/subscriptions/{world['sub']}/plan").text
    assert f'id="quantity-{agency.id}" name="quantity" value="2" min="2" max="5"' in plans
    path = f"/portal/subscriptions/{world['sub']}/plan/{agency.id}"
    few = ann.get(f"{path}?quantity=1")
    assert few.status_code == 400 and "Enter a quantity from 2 to 5." in few.text
    assert ann.get(f"{path}?quantity=3").status_code == 200  # above Pro's own maximum of 1


def test_where_the_merchant_charges_changes_at_the_renewal_an_upgrade_waits_for_it(
        ann, set_portal, product, world):
    from core.models import Subscription
    from plugins.sandbox import charges

    set_portal(plan_change={"products": [{"product_id": product.id, "switch_to": [world["team"]],
                                          "proration": "next_billing_date"}]})
    path = f"/portal/subscriptions/{world['sub']}/plan/{world['team']}"
    assert "Due now €0.00" in text(ann.get(f"{path}?quantity=1"))
    answer = post(ann, path, {"quantity": "1"}, page=f"{path}?quantity=1")
    sub = Subscription.get_by_id(world["sub"])
    assert answer.status_code == 303 and len(charges()) == 1
    assert sub.product_id == product.id and sub.scheduled_change["product_id"] == world["team"]
    assert "Your plan changes to Team on" in text(ann.get(f"/portal/subscriptions/{sub.id}"))


# --- Profile fields ----------------------------------------------------------------------------------


def test_profile_fields_switched_off_are_neither_shown_nor_changed(ann, customer, set_portal):
    set_portal(profile_fields={"name": False, "billing_address": False, "tax_id": False})
    page = ann.get("/portal/profile").text
    assert 'name="name"' not in page and 'name="country"' not in page and 'name="tax_id"' not in page
    assert 'name="phone"' in page
    post(ann, "/portal/profile", {"name": "Mallory", "phone": "+33 6 12 34 56 78", "locale": "en",
                                  "country": "FR", "tax_id": "FR40303265045"})
    customer = customer.refresh()
    assert customer.name == "Ann Example" and customer.phone_number == "+33612345678"
    assert customer.billing_address is None and customer.tax_id is None


# --- The dashboard ------------------------------------------------------------------------------------


def merchant_client(client, business):
    """``client`` signed in to the dashboard as the business's owner."""
    auth.create_merchant_user(business, "owner@acme.test", "a long enough password")
    page = client.get("/dashboard/login")
    client.post("/dashboard/login", data={"csrf_token": csrf_token(page.text),
                                          "email": "owner@acme.test",
                                          "password": "a long enough password"})
    return client


def test_the_dashboard_edits_the_same_settings_the_api_reads(client, business, product, api):
    merchant = merchant_client(client, business)
    page = merchant.get("/dashboard/customer-portal")
    assert page.status_code == 200 and "From Pro" in page.text
    answer = merchant.post("/dashboard/customer-portal", data={
        "csrf_token": csrf_token(page.text), "payment_method_update": "y",
        "license_activation_removal": "y", "profile_name": "y", "cancellation_enabled": "y",
        "cancellation_mode": "at_period_end", "reasons": ["too_expensive", "other"],
        "reason_required": "y", "plan_change_enabled": "y", "pause_enabled": "y",
        "products-0-product_id": product.id, "products-0-limited": "y",
        "products-0-min_quantity": "1", "products-0-max_quantity": "3",
        "products-0-proration": "next_billing_date"})
    assert answer.status_code == 303
    setting = api.get("/customer-portal/configuration").json
    assert setting["billing_history"] is False and setting["payment_method_update"] is True
    assert setting["profile_fields"]["email"] is False
    assert setting["pause"] == {"enabled": True} and setting["quantity_change"] == {"enabled": False}
    assert setting["cancellation"]["mode"] == "at_period_end"
    assert setting["cancellation"]["reasons"] == ["too_expensive", "other"]
    assert setting["plan_change"]["products"] == [{"product_id": product.id, "switch_to": [],
                                                   "min_quantity": 1, "max_quantity": 3,
                                                   "proration": "next_billing_date"}]


def test_a_rule_may_bound_quantities_without_limiting_the_plans_to_change_to(
        ann, app, business, product, api, world):
    merchant = merchant_client(app.test_client(), business)
    page = merchant.get("/dashboard/customer-portal")
    pro = re.search(rf'name="products-(\d+)-product_id"[^>]*value="{product.id}"', page.text)[1]
    merchant.post("/dashboard/customer-portal", data={
        "csrf_token": csrf_token(page.text), "plan_change_enabled": "y",
        "cancellation_enabled": "y", "cancellation_mode": "customer_choice",
        "quantity_change_enabled": "y", f"products-{pro}-product_id": product.id,
        f"products-{pro}-min_quantity": "2", f"products-{pro}-max_quantity": "5",
        f"products-{pro}-proration": "prorated_immediately"})
    rules = api.get("/customer-portal/configuration").json["plan_change"]["products"]
    assert rules == [{"product_id": product.id, "switch_to": None, "min_quantity": 2,
                      "max_quantity": 5, "proration": "prorated_immediately"}]
    assert "Team" in text(ann.get(f"/portal/subscriptions/{world['sub']}/plan"))
    seats = ann.get(f"/portal/subscriptions/{world['sub']}/seats?quantity=6")
    assert seats.status_code == 400 and "Enter a quantity from 2 to 5." in seats.text
    api.patch("/customer-portal/configuration", {"plan_change": {"products": [
        {"product_id": product.id, "max_quantity": 3}]}})
    assert "Team" in text(ann.get(f"/portal/subscriptions/{world['sub']}/plan"))


def test_the_dashboard_form_shows_what_is_wrong(client, business, product):
    merchant = merchant_client(client, business)
    page = merchant.get("/dashboard/customer-portal")
    answer = merchant.post("/dashboard/customer-portal", data={
        "csrf_token": csrf_token(page.text), "cancellation_mode": "customer_choice",
        "reason_required": "y", "products-0-product_id": product.id, "products-0-limited": "y",
        "products-0-min_quantity": "4", "products-0-max_quantity": "2",
        "products-0-proration": "prorated_immediately"})
    assert answer.status_code == 400
    assert "Choose at least one reason to require one." in answer.text
    assert "The maximum cannot be below the minimum." in answer.text
