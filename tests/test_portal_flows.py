"""Deep links into one portal flow: the API's portal session (and the dashboard's Share invite)
limit a session to one task, the customer lands in it, can open nothing else, and ends where
the merchant said."""

import re
from urllib.parse import urlsplit

import pytest
from conftest import csrf_token, text

from core.models import PortalSession, Product, Subscription


@pytest.fixture
def app(make_app):
    app = make_app()
    with app.app_context():
        yield app



@pytest.fixture
def team(business):
    return Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True)


def deep_link(api, customer, flow=None, after=None, **query):
    body = {name: value for name, value in (("flow", flow), ("after_completion", after)) if value}
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return api.post(f"/customers/{customer.id}/customer-portal/session" + (f"?{params}" if params else ""),
                    body)


def open_link(client, link) -> str:
    """Sign in with the link as a browser does; returns where it lands."""
    path = urlsplit(link).path
    answer = client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    assert answer.status_code == 303
    return answer.headers["Location"]


def sign_in_to_dashboard(client, business):
    """Sign ``client`` in to the dashboard as the business's owner."""
    from core import auth

    auth.create_merchant_user(business, "owner@acme.test", "a long enough password")
    page = client.get("/dashboard/login")
    answer = client.post("/dashboard/login", data={"csrf_token": csrf_token(page.text),
                                                   "email": "owner@acme.test",
                                                   "password": "a long enough password"})
    assert answer.status_code == 303


def post(client, path, data=None, page=None):
    token = csrf_token(client.get(page or path).text)
    return client.post(path, data={"csrf_token": token, **(data or {})})


def test_a_payment_method_flow_lands_there_opens_nothing_else_and_ends_with_the_message(
        api, client, customer, product, subscribe, save_card):
    sub, _ = subscribe(customer, product)
    other, _ = subscribe(customer, product)
    spare = save_card(customer, "pm_card_mastercard")
    answer = deep_link(api, customer, {"type": "payment_method_update", "subscription_id": sub.id},
                       {"type": "hosted_confirmation", "message": "Thanks, your card is updated."},
                       return_url="https://acme.example/account")
    assert answer.status_code == 200
    landing = open_link(client, answer.json["link"])
    assert landing == f"/portal/subscriptions/{sub.id}/payment-method"
    page = client.get(landing)
    assert page.status_code == 200 and 'href="/portal/billing"' not in page.text
    assert "Return to Acme Software" in text(page)
    for path in ("/portal/", "/portal/billing", "/portal/subscriptions", f"/portal/subscriptions/{sub.id}",
                 f"/portal/subscriptions/{other.id}/payment-method", f"/portal/subscriptions/{sub.id}/cancel",
                 "/portal/profile", "/portal/licenses", "/portal/payment-methods"):
        assert client.get(path).status_code == 404, path
    done = post(client, landing, {"payment_method": spare.id})
    assert done.headers["Location"] == "/portal/flow/done"
    assert sub.refresh().payment_method_id == spare.id
    finished = text(client.get("/portal/flow/done"))
    assert "Thanks, your card is updated." in finished and "Return to Acme Software" in finished
    assert client.get(landing).status_code == 404  # the flow has ended


def test_a_payment_method_flow_without_a_subscription_opens_the_saved_cards_and_ends_with_a_new_default(
        api, client, customer, product, subscribe, save_card):
    sub, _ = subscribe(customer, product)
    spare = save_card(customer, "pm_card_mastercard")
    answer = deep_link(api, customer, {"type": "payment_method_update"},
                       {"type": "hosted_confirmation", "message": "Thanks, all set."})
    landing = open_link(client, answer.json["link"])
    assert landing == "/portal/payment-methods"
    page = client.get(landing)
    assert page.status_code == 200 and "Mastercard" in text(page)
    for path in ("/portal/", "/portal/billing", f"/portal/subscriptions/{sub.id}",
                 f"/portal/subscriptions/{sub.id}/payment-method", "/portal/profile"):
        assert client.get(path).status_code == 404, path
    done = post(client, f"/portal/payment-methods/{spare.id}/default", page=landing)
    assert done.headers["Location"] == "/portal/flow/done"
    assert "Thanks, all set." in text(client.get("/portal/flow/done"))
    assert spare.refresh().is_default
    assert client.get(landing).status_code == 404  # the flow has ended


def test_a_redirect_after_completion_leads_to_the_merchants_url(api, client, customer, product,
                                                                 subscribe):
    sub, _ = subscribe(customer, product)
    link = deep_link(api, customer, {"type": "subscription_cancel", "subscription_id": sub.id},
                     {"type": "redirect", "url": "https://acme.example/bye"}).json["link"]
    landing = open_link(client, link)
    assert landing == f"/portal/subscriptions/{sub.id}/cancel"
    done = post(client, landing, {"when": "now"})
    assert sub.refresh().status == "cancelled"
    final = client.get(done.headers["Location"])
    assert final.status_code == 303 and final.headers["Location"] == "https://acme.example/bye"


def test_the_portal_homepage_after_completion_opens_the_whole_portal(api, client, customer):
    link = deep_link(api, customer, {"type": "customer_update"},
                     {"type": "portal_homepage"}).json["link"]
    landing = open_link(client, link)
    assert landing == "/portal/profile" and client.get("/portal/billing").status_code == 404
    done = post(client, landing, {"name": "Ann B", "locale": "en"})
    assert client.get(done.headers["Location"]).headers["Location"] == "/portal/"
    assert customer.refresh().name == "Ann B"
    assert client.get("/portal/billing").status_code == 200
    assert PortalSession.get().flow is None


def test_a_given_plan_change_goes_straight_to_its_preview_and_is_charged_on_confirming(
        api, client, customer, product, subscribe, team):
    sub, _ = subscribe(customer, product)
    link = deep_link(api, customer, {"type": "subscription_update_confirm", "subscription_id": sub.id,
                                     "product_id": team.id, "quantity": 2}).json["link"]
    landing = open_link(client, link)
    assert urlsplit(landing).path == f"/portal/subscriptions/{sub.id}/plan/{team.id}"
    preview = text(client.get(landing))
    assert "Due now" in preview and "Team" in preview
    assert client.get(f"/portal/subscriptions/{sub.id}/plan").status_code == 404
    answer = post(client, urlsplit(landing).path, {"quantity": "2"}, page=landing)
    payment = client.get(answer.headers["Location"])
    assert 'href="/portal/flow/done"' in payment.text
    assert Subscription.get_by_id(sub.id).product_id == team.id and sub.refresh().quantity == 2
    assert "All done" in text(client.get("/portal/flow/done"))


def test_a_given_quantity_of_the_same_plan_goes_straight_to_its_preview_and_is_charged_on_confirming(
        api, client, customer, product, subscribe, team):
    sub, _ = subscribe(customer, product)
    link = deep_link(api, customer, {"type": "subscription_update_confirm", "subscription_id": sub.id,
                                     "product_id": product.id, "quantity": 3}).json["link"]
    landing = open_link(client, link)
    assert urlsplit(landing).path == f"/portal/subscriptions/{sub.id}/seats"
    preview = text(client.get(landing))
    assert "From 1 to 3." in preview and "Due now" in preview
    assert client.get(f"/portal/subscriptions/{sub.id}/plan/{team.id}").status_code == 404
    answer = post(client, urlsplit(landing).path, {"quantity": "3"}, page=landing)
    assert 'href="/portal/flow/done"' in client.get(answer.headers["Location"]).text
    assert sub.refresh().quantity == 3 and sub.refresh().product_id == product.id


def test_a_quantity_flow_needs_seat_changes_on(api, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    api.patch("/customer-portal/configuration", {"quantity_change": {"enabled": False}})
    answer = deep_link(api, customer, {"type": "subscription_update_confirm", "subscription_id": sub.id,
                                       "product_id": product.id, "quantity": 3})
    assert answer.status_code == 409 and answer.json["code"] == "PORTAL_FEATURE_DISABLED"


def test_the_plan_update_flow_lists_the_plans_then_changes_one(api, client, customer, product,
                                                               subscribe, team):
    sub, _ = subscribe(customer, product)
    landing = open_link(client, deep_link(api, customer, {"type": "subscription_update",
                                                          "subscription_id": sub.id}).json["link"])
    assert landing == f"/portal/subscriptions/{sub.id}/plan" and "Team" in text(client.get(landing))
    path = f"/portal/subscriptions/{sub.id}/plan/{team.id}"
    post(client, path, {"quantity": "1"}, page=path + "?quantity=1")
    assert sub.refresh().product_id == team.id


def test_the_flow_can_be_asked_with_query_parameters(api, client, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    answer = api.post(f"/customers/{customer.id}/customer-portal/session"
                      f"?flow[type]=subscription_cancel&flow[subscription_id]={sub.id}")
    assert open_link(client, answer.json["link"]) == f"/portal/subscriptions/{sub.id}/cancel"


@pytest.mark.parametrize("flow, after, status, code", [
    ({"type": "subscription_cancel"}, None, 422, "INVALID_REQUEST_BODY"),
    ({"type": "subscription_cancel", "subscription_id": "sub_nope"}, None, 404, "NOT_FOUND"),
    ({"type": "subscription_update_confirm", "subscription_id": "{sub}"}, None, 422, "INVALID_REQUEST_BODY"),
    ({"type": "customer_update"}, {"type": "redirect"}, 422, "INVALID_REQUEST_BODY"),
    ({"type": "customer_update"}, {"type": "redirect", "url": "javascript:alert(1)"}, 422,
     "INVALID_REQUEST_BODY"),
    ({"type": "teleport"}, None, 422, "INVALID_REQUEST_BODY"),
])
def test_a_flow_that_cannot_be_made_is_refused_with_a_code(api, customer, product, subscribe, flow,
                                                           after, status, code):
    sub, _ = subscribe(customer, product)
    flow = {k: (v.format(sub=sub.id) if isinstance(v, str) else v) for k, v in flow.items()}
    answer = deep_link(api, customer, flow, after)
    assert answer.status_code == status and answer.json["code"] == code


def test_another_customers_subscription_cannot_be_deep_linked(api, business, customer, product,
                                                               subscribe):
    from core.models import Customer

    bob = Customer.create(business=business, mode="test", email="bob@example.com")
    sub, _ = subscribe(bob, product)
    answer = deep_link(api, customer, {"type": "subscription_cancel", "subscription_id": sub.id})
    assert answer.status_code == 404


def test_a_flow_the_business_switched_off_is_refused(api, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    api.patch("/customer-portal/configuration", {"cancellation": {"enabled": False}})
    answer = deep_link(api, customer, {"type": "subscription_cancel", "subscription_id": sub.id})
    assert answer.status_code == 409 and answer.json["code"] == "PORTAL_FEATURE_DISABLED"


def test_a_live_redirect_must_be_https(client, business, customer):
    from core.auth import create_api_key
    from core.models import Customer

    live = Customer.create(business=business, mode="live", email="liv@example.com")
    key = create_api_key(business, "live")[1]
    answer = client.post(f"/api/customers/{live.id}/customer-portal/session", headers={
        "Authorization": f"Bearer {key}"}, json={"flow": {"type": "customer_update"},
                                                  "after_completion": {"type": "redirect",
                                                                       "url": "http://acme.example/"}})
    assert answer.status_code == 422 and "https://" in answer.json["message"]


def test_the_dashboards_share_invite_makes_the_same_deep_link(client, business, customer, product,
                                                             subscribe):
    sub, _ = subscribe(customer, product)
    sign_in_to_dashboard(client, business)
    page = client.get(f"/dashboard/customers/{customer.id}")
    assert "Deep link into one task" in page.text
    answer = client.post(f"/dashboard/customers/{customer.id}/invite-link", data={
        "csrf_token": csrf_token(page.text), "flow": "payment_method_update",
        "subscription_id": sub.id, "after_completion": "redirect", "url": "https://acme.example/done"})
    link = re.search(r'value="(http[^"]+/session/[^"]+)"', client.get(answer.headers["Location"]).text)[1]
    browser = client.application.test_client()
    assert open_link(browser, link) == f"/portal/subscriptions/{sub.id}/payment-method"
    assert browser.get("/portal/").status_code == 404


@pytest.mark.parametrize("ending", ["hosted_confirmation", "portal_homepage"])
def test_opening_the_flows_end_before_doing_its_task_leads_back_to_the_task(
        api, client, customer, product, subscribe, ending):
    sub, _ = subscribe(customer, product)
    answer = deep_link(api, customer, {"type": "subscription_cancel", "subscription_id": sub.id},
                       {"type": ending, "message": "Your subscription is cancelled."
                        if ending == "hosted_confirmation" else None})
    landing = open_link(client, answer.json["link"])
    early = client.get("/portal/flow/done")
    assert early.status_code == 303 and early.headers["Location"] == landing
    assert client.get("/portal/").status_code == 404  # still only the flow: nothing was ended
    assert client.get(landing).status_code == 200 and sub.refresh().status == "active"
    done = post(client, landing, {"when": "now"})
    assert done.headers["Location"] == "/portal/flow/done" and sub.refresh().status == "cancelled"
    end = client.get("/portal/flow/done")
    if ending == "portal_homepage":
        assert end.headers["Location"] == "/portal/" and client.get("/portal/").status_code == 200
    else:
        assert "Your subscription is cancelled." in text(end)


@pytest.mark.parametrize("url", ["http://", "https://evil .example/x", "http://\\evil.example",
                                 "https://user@evil.example/", "javascript:alert(1)"])
def test_the_share_invite_refuses_a_redirect_the_api_would_refuse(client, business, customer, product,
                                                                   subscribe, url):
    sub, _ = subscribe(customer, product)
    sign_in_to_dashboard(client, business)
    page = client.get(f"/dashboard/customers/{customer.id}")
    answer = client.post(f"/dashboard/customers/{customer.id}/invite-link", data={
        "csrf_token": csrf_token(page.text), "flow": "payment_method_update",
        "subscription_id": sub.id, "after_completion": "redirect", "url": url})
    shown = client.get(answer.headers["Location"]) if answer.status_code in (302, 303) else answer
    assert "No link was made. The redirect must be a whole https:// address" in text(shown)
    assert "/session/" not in shown.text


@pytest.mark.parametrize("case", ["one_time", "not_allowed", "too_many"])
def test_a_confirmation_link_to_a_change_the_portal_would_not_offer_is_refused(
        api, business, customer, product, subscribe, team, case):
    sub, _ = subscribe(customer, product)
    other = Product.create(business=business, mode="test", name="Agency", price=9000,
                           currency="EUR", is_recurring=True)
    one_time = Product.create(business=business, mode="test", name="Setup", price=9000,
                              currency="EUR", is_recurring=False)
    api.patch("/customer-portal/configuration", {"plan_change": {"products": [
        {"product_id": product.id, "switch_to": [team.id]},
        {"product_id": team.id, "switch_to": [], "min_quantity": 1, "max_quantity": 4}]}})
    target, quantity = {"one_time": (one_time, 1), "not_allowed": (other, 1),
                        "too_many": (team, 99)}[case]
    answer = deep_link(api, customer, {"type": "subscription_update_confirm", "subscription_id": sub.id,
                                       "product_id": target.id, "quantity": quantity})
    assert answer.status_code == 422 and answer.json["code"] == "INVALID_REQUEST_BODY"
    allowed = deep_link(api, customer, {"type": "subscription_update_confirm", "subscription_id": sub.id,
                                        "product_id": team.id, "quantity": 4})
    assert allowed.status_code == 200


def test_a_refused_link_is_worded_for_the_merchant_in_the_dashboard_and_names_the_field_in_the_api(
        api, client, business, customer, product, subscribe, team):
    sub, _ = subscribe(customer, product)
    api.patch("/customer-portal/configuration", {"plan_change": {"products": [
        {"product_id": team.id, "switch_to": [], "min_quantity": 1, "max_quantity": 4}]}})
    sign_in_to_dashboard(client, business)
    page = client.get(f"/dashboard/customers/{customer.id}")
    answer = client.post(f"/dashboard/customers/{customer.id}/invite-link", data={
        "csrf_token": csrf_token(page.text), "flow": "subscription_update_confirm",
        "subscription_id": sub.id, "product_id": team.id, "quantity": "9"})
    assert "No link was made. The quantity must be from 1 to 4 on Team." in text(
        client.get(answer.headers["Location"]))
    refused = deep_link(api, customer, {"type": "subscription_update_confirm", "subscription_id": sub.id,
                                        "product_id": team.id, "quantity": 9})
    assert refused.json["message"] == "flow.quantity: The quantity must be from 1 to 4 on Team."
