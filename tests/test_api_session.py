"""Portal sessions by API: ``POST /api/customers/{id}/customer-portal/session``, as the merchant's
server (and the official Dodo Payments SDK) calls it."""

import re
from datetime import timedelta
from urllib.parse import quote, urlsplit

import pytest
import time_machine

from core import auth
from core.models import ApiKey, AuditLog, Business, Customer, PortalSession, utcnow


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app


@pytest.fixture
def api_key(business):
    return auth.create_api_key(business, "test")[1]


def create_session(client, key, customer_id, query="", **kwargs):
    return client.post(f"/api/customers/{customer_id}/customer-portal/session{query}",
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                       **kwargs)


def open_link(client, link):
    """What the customer's browser does with the link: its page, then the POST."""
    path = urlsplit(link).path
    page = client.get(path)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    return client.post(path, data={"csrf_token": token[1] if token else ""})


def test_portal_session_link_signs_the_customer_in_once(client, api_key, customer):
    answer = create_session(client, api_key, customer.id)
    assert answer.status_code == 200
    link = answer.json["link"]
    assert link.startswith("http://portal.test/session/") and set(answer.json) == {"link"}
    assert open_link(client, link).status_code == 303
    assert "Hello Ann Example" in client.get("/portal/").text
    assert open_link(client.application.test_client(), link).status_code == 410


def test_empty_json_body_is_accepted(client, api_key, customer):
    answer = create_session(client, api_key, customer.id, data=b"")
    assert answer.status_code == 200


def test_official_sdk_creates_a_portal_session(live_server, api_key, customer):
    from dodopayments import DodoPayments

    sdk = DodoPayments(bearer_token=api_key, base_url=live_server.url + "/api", max_retries=0,
                       _strict_response_validation=True)
    session = sdk.customers.customer_portal.create(customer.id, send_email=False,
                                                   return_url="https://acme.test/account")
    assert session.link.startswith("http://portal.test/session/")


def test_a_call_without_a_valid_bearer_key_is_unauthorized(client, api_key, customer):
    for headers in ({}, {"Authorization": "Bearer pk_test_wrong"}, {"Authorization": api_key}):
        answer = client.post(f"/api/customers/{customer.id}/customer-portal/session", headers=headers)
        assert answer.status_code == 401
        assert answer.json["code"] == "UNAUTHORIZED" and answer.json["message"]


def test_a_key_in_the_query_string_is_not_accepted(client, api_key, customer):
    answer = client.post(f"/api/customers/{customer.id}/customer-portal/session?api_key={api_key}")
    assert answer.status_code == 401


def test_a_revoked_key_is_refused_on_the_next_call(client, api_key, customer):
    assert create_session(client, api_key, customer.id).status_code == 200
    ApiKey.update(revoked_at=utcnow()).execute()
    assert create_session(client, api_key, customer.id).status_code == 401


def test_a_dashboard_cookie_does_not_authenticate_the_api(client, business, customer):
    auth.create_merchant_user(business, "owner@acme.test", "correct horse battery")
    page = client.get("/dashboard/login")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)[1]
    client.post("/dashboard/login", data={"csrf_token": token, "email": "owner@acme.test",
                                          "password": "correct horse battery"})
    answer = client.post(f"/api/customers/{customer.id}/customer-portal/session")
    assert answer.status_code == 401


def test_another_business_customer_is_not_found(client, api_key):
    stranger = Customer.create(business=Business.create(name="Other Shop"), mode="test",
                               email="ann@example.com")
    for customer_id in (stranger.id, "cus_doesnotexist"):
        answer = create_session(client, api_key, customer_id)
        assert answer.status_code == 404
        assert answer.json == {"code": "NOT_FOUND", "message": "No such customer."}


def test_a_live_customer_is_not_found_with_a_test_key(client, business, api_key):
    live = Customer.create(business=business, mode="live", email="dana@example.com")
    assert create_session(client, api_key, live.id).status_code == 404
    live_key = auth.create_api_key(business, "live")[1]
    assert create_session(client, live_key, live.id).status_code == 200


def test_return_url_becomes_a_return_to_business_link(client, api_key, customer):
    answer = create_session(client, api_key, customer.id,
                            "?return_url=" + quote("https://acme.test/account?tab=billing", safe=""))
    open_link(client, answer.json["link"])
    portal = client.get("/portal/")
    assert ('<a class="back" href="https://acme.test/account?tab=billing">← Return to Acme Software</a>'
            in portal.text)


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://acme.test/", "/relative", "http://acme.test/"])
def test_return_url_must_be_an_absolute_https_url(client, business, customer, url):
    live = Customer.create(business=business, mode="live", email="dana@example.com")
    live_key = auth.create_api_key(business, "live")[1]
    answer = create_session(client, live_key, live.id, "?return_url=" + quote(url, safe=""))
    assert answer.status_code == 400 and answer.json["code"] == "INVALID_QUERY_PARAMS"


def test_send_email_also_emails_the_customer_a_sign_in_link(client, api_key, customer, heard):
    answer = create_session(client, api_key, customer.id, "?send_email=true")
    [emailed] = heard.links()
    assert heard.of_type("customer.sign_in_link")[0].customer_id == customer.id
    assert emailed != answer.json["link"]
    assert open_link(client, emailed).status_code == 303
    assert open_link(client.application.test_client(), answer.json["link"]).status_code == 303


def test_send_email_is_limited_per_customer(client, api_key, customer, heard):
    statuses = [create_session(client, api_key, customer.id, "?send_email=true").status_code
                for _ in range(4)]
    assert statuses == [200] * 3 + [429]
    assert len(heard.of_type("customer.sign_in_link")) == 3
    assert create_session(client, api_key, customer.id).status_code == 200  # a link, no e-mail


def test_without_send_email_nothing_is_emailed(client, api_key, customer, heard):
    create_session(client, api_key, customer.id, "?send_email=false")
    create_session(client, api_key, customer.id)
    assert heard.notifications == []


def test_send_email_must_be_true_or_false(client, api_key, customer):
    answer = create_session(client, api_key, customer.id, "?send_email=maybe")
    assert answer.status_code == 400 and answer.json["code"] == "INVALID_QUERY_PARAMS"


def test_link_expires_if_not_visited_within_ten_minutes(client, api_key, customer):
    """Target 4: a link handed to the merchant's server is for an immediate redirect."""
    issued = utcnow()
    with time_machine.travel(issued, tick=False):
        first = create_session(client, api_key, customer.id).json["link"]
    with time_machine.travel(issued + timedelta(minutes=9, seconds=59), tick=False):
        assert open_link(client, first).status_code == 303
    with time_machine.travel(issued + timedelta(minutes=11), tick=False):
        second = create_session(client, api_key, customer.id).json["link"]
    with time_machine.travel(issued + timedelta(minutes=21, seconds=1), tick=False):
        assert open_link(client.application.test_client(), second).status_code == 410


def test_signing_in_by_api_link_starts_a_new_session(client, api_key, customer):
    """Target 10: the planted session data does not survive an API-link sign-in."""
    with client.session_transaction() as session:
        session["planted"] = "value"
    open_link(client, create_session(client, api_key, customer.id).json["link"])
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session["_user_id"] == PortalSession.get().id


def test_portal_session_creation_is_audited_with_the_key_prefix_only(client, api_key, customer):
    create_session(client, api_key, customer.id)
    row = AuditLog.get(AuditLog.event == "sign_in_link.issued")
    assert row.detail == {"via": "api", "key": api_key[:12]} and api_key not in repr(row.detail)


def test_unknown_api_paths_and_methods_answer_json(client, api_key, customer):
    answer = client.get("/api/nowhere", headers={"Authorization": f"Bearer {api_key}"})
    assert answer.status_code == 404 and answer.json == {"code": "NOT_FOUND", "message": "Not Found."}
    answer = client.get(f"/api/customers/{customer.id}/customer-portal/session")
    assert answer.status_code == 405 and answer.json["code"] == "METHOD_NOT_ALLOWED"
