"""The merchant dashboard: sign-in, test/live mode, Customers with "Share invite", API keys,
webhook endpoints and branding, all within the merchant's own business and mode."""

import base64
import io
import re
from urllib.parse import urlsplit

import pytest
from conftest import csrf_token

from core import auth
from core.models import (
    ApiKey,
    AuditLog,
    Business,
    Customer,
    Delivery,
    Event,
    MerchantSession,
    PortalSession,
    WebhookEndpoint,
)

PASSWORD = "correct horse battery"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app


@pytest.fixture
def owner(business):
    return auth.create_merchant_user(business, "owner@acme.test", PASSWORD, name="Owner")


@pytest.fixture
def merchant(client, owner):
    """A browser signed in to the dashboard as the business's owner."""
    answer = sign_in(client, "owner@acme.test", PASSWORD)
    assert answer.status_code == 303
    return client




def without_token(html: str) -> str:
    return re.sub(r'(name="csrf_token"[^>]*value=)"[^"]+"', r"\1", html)


def sign_in(client, email, password):
    page = client.get("/dashboard/login")
    return client.post("/dashboard/login", data={"csrf_token": csrf_token(page.text), "email": email,
                                                 "password": password})


def post(client, path, page=None, **data):
    """Submit a dashboard form the way the browser does, with the page's CSRF token."""
    token = csrf_token(client.get(page or path).text)
    return client.post(path, data={"csrf_token": token, **data})


# --- Signing in -----------------------------------------------------------------------------


def test_dashboard_needs_a_merchant_sign_in(client):
    answer = client.get("/dashboard/customers?q=ann")
    assert answer.status_code == 302
    assert answer.headers["Location"] == "/dashboard/login?next=/dashboard/customers?q%3Dann"


def test_merchant_signs_in_with_email_and_password(client, owner):
    page = client.get("/dashboard/login?next=/dashboard/api-keys")
    answer = client.post("/dashboard/login?next=/dashboard/api-keys",
                         data={"csrf_token": csrf_token(page.text), "email": "Owner@Acme.test",
                               "password": PASSWORD})
    assert answer.status_code == 303 and answer.headers["Location"] == "/dashboard/api-keys"
    assert "Acme Software" in client.get("/dashboard/customers").text
    assert MerchantSession.get().user_id == owner.id


def test_next_page_after_sign_in_never_leaves_the_dashboard(client, owner):
    page = client.get("/dashboard/login")
    answer = client.post("/dashboard/login?next=//evil.example/x",
                         data={"csrf_token": csrf_token(page.text), "email": "owner@acme.test",
                               "password": PASSWORD})
    assert answer.headers["Location"] == "/dashboard/customers"


def test_wrong_password_and_unknown_email_get_the_same_answer(client, owner):
    wrong = sign_in(client, "owner@acme.test", "not the password")
    unknown = sign_in(client, "nobody@acme.test", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "This e-mail address and password do not match." in wrong.text
    assert without_token(wrong.text).replace("owner@acme.test", "X") == without_token(
        unknown.text).replace("nobody@acme.test", "X")
    assert MerchantSession.select().count() == 0
    assert AuditLog.select().where(AuditLog.event == "merchant.sign_in",
                                   AuditLog.outcome == "failed").count() == 2


def test_failed_sign_ins_are_limited(client, owner):
    for _ in range(10):
        assert sign_in(client, "owner@acme.test", "guess").status_code == 401
    answer = sign_in(client, "owner@acme.test", PASSWORD)
    assert answer.status_code == 429 and "Too many failed sign-ins" in answer.text


def test_signing_out_ends_the_dashboard_session_on_the_server(merchant):
    cookie = merchant.get_cookie("portico").value
    answer = post(merchant, "/dashboard/logout", page="/dashboard/customers")
    assert answer.status_code == 303 and answer.headers["Clear-Site-Data"]
    assert MerchantSession.get().revoked_at is not None
    replay = merchant.application.test_client()
    replay.set_cookie("portico", cookie)
    assert replay.get("/dashboard/customers").status_code == 302


def test_customers_and_merchants_each_stay_on_their_side(client, merchant, customer):
    assert merchant.get("/portal/").status_code == 302
    shopper = client.application.test_client()
    path = urlsplit(auth.sign_in_link(customer)).path
    shopper.post(path, data={"csrf_token": csrf_token(shopper.get(path).text)})
    assert shopper.get("/portal/").status_code == 200
    assert shopper.get("/dashboard/customers").status_code == 302


def test_dashboard_pages_are_never_cached(merchant):
    assert merchant.get("/dashboard/customers").headers["Cache-Control"] == "no-store"


# --- Mode -----------------------------------------------------------------------------------


def test_dashboard_starts_in_test_mode_and_switches_to_live(merchant, business, customer):
    Customer.create(business=business, mode="live", email="dana@example.com", name="Dana Live")
    page = merchant.get("/dashboard/customers")
    assert "Test mode: you are looking at test data" in page.text and "Ann Example" in page.text
    answer = post(merchant, "/dashboard/mode", page="/dashboard/customers", mode="live",
                  next="/dashboard/customers")
    assert answer.headers["Location"] == "/dashboard/customers"
    page = merchant.get("/dashboard/customers")
    assert "Dana Live" in page.text and "Ann Example" not in page.text
    assert "Test mode: you are looking" not in page.text
    assert MerchantSession.get().mode == "live"


# --- Customers and Share invite ---------------------------------------------------------------


def test_customers_lists_only_the_business_customers_in_the_current_mode(merchant, business, customer):
    Customer.create(business=business, mode="live", email="dana@example.com", name="Dana Live")
    Customer.create(business=Business.create(name="Other Shop"), mode="test",
                    email="zoe@example.com", name="Zoe Elsewhere")
    page = merchant.get("/dashboard/customers").text
    assert "Ann Example" in page and "Dana Live" not in page and "Zoe Elsewhere" not in page


def test_customers_are_searched_by_email_or_name(merchant, business, customer):
    Customer.create(business=business, mode="test", email="bob@builder.test", name="Robert Smith")
    by_email = merchant.get("/dashboard/customers?q=BUILDER").text
    by_name = merchant.get("/dashboard/customers?q=smith").text
    nothing = merchant.get("/dashboard/customers?q=zzz").text
    assert "Robert Smith" in by_email and "Ann Example" not in by_email
    assert "Robert Smith" in by_name and "Ann Example" not in by_name
    assert "No customer matches “zzz”." in nothing


def test_customers_come_25_to_a_page(merchant, business):
    for n in range(30):
        Customer.create(business=business, mode="test", email=f"c{n:02d}@example.com")
    first = merchant.get("/dashboard/customers").text
    second = merchant.get("/dashboard/customers?page=2").text
    assert first.count("<tr>") == 26 and "Next →" in first
    assert second.count("<tr>") == 6 and "Next →" not in second and "← Previous" in second


def test_another_business_or_mode_customer_is_not_found(merchant, business):
    foreign = Customer.create(business=Business.create(name="Other Shop"), mode="test",
                              email="zoe@example.com")
    live = Customer.create(business=business, mode="live", email="dana@example.com")
    for customer_id in (foreign.id, live.id, "cus_nope"):
        assert merchant.get(f"/dashboard/customers/{customer_id}").status_code == 404
        assert post(merchant, f"/dashboard/customers/{customer_id}/invite-link",
                    page="/dashboard/customers").status_code == 404


def test_share_invite_shows_the_static_link_of_the_mode(merchant, business, customer):
    page = merchant.get(f"/dashboard/customers/{customer.id}").text
    assert "Share invite" in page
    assert f'value="http://portal.test/test/login/{business.id}"' in page
    assert 'data-copy="static-link"' in page


def test_generated_dynamic_link_is_shown_once_and_signs_the_customer_in(merchant, customer):
    answer = post(merchant, f"/dashboard/customers/{customer.id}/invite-link",
                  page=f"/dashboard/customers/{customer.id}")
    assert answer.status_code == 303
    answer = merchant.get(answer.headers["Location"])
    assert "shown only this once" in answer.text
    link = re.search(r'id="dynamic-link" type="text" readonly value="([^"]+)"', answer.text)[1]
    assert link.startswith("http://portal.test/session/")
    assert link not in merchant.get(f"/dashboard/customers/{customer.id}").text
    browser = merchant.application.test_client()
    path = urlsplit(link).path
    browser.post(path, data={"csrf_token": csrf_token(browser.get(path).text)})
    assert "Hello Ann Example" in browser.get("/portal/").text
    assert PortalSession.get().customer_id == customer.id


def test_send_by_email_sends_the_customer_a_sign_in_link(merchant, customer, owner, heard):
    answer = post(merchant, f"/dashboard/customers/{customer.id}/invite-email",
                  page=f"/dashboard/customers/{customer.id}")
    assert answer.status_code == 303
    assert "A sign-in link is on its way to ann@example.com." in merchant.get(answer.headers["Location"]).text
    [note] = heard.of_type("customer.sign_in_link")
    assert note.customer_id == customer.id
    assert AuditLog.get(AuditLog.event == "sign_in_link.sent").detail == {"by": owner.id}
    again = post(merchant, f"/dashboard/customers/{customer.id}/invite-email",
                 page=f"/dashboard/customers/{customer.id}")
    assert "Please wait before sending another" in merchant.get(again.headers["Location"]).text
    assert len(heard.links()) == 1


def test_emails_to_one_customer_are_limited_with_a_clear_message(make_app, heard, business, owner,
                                                                 customer):
    app = make_app({"SIGN_IN_LIMIT_PER_EMAIL": "100 per minute"}, plugins=[heard])
    with app.app_context():
        browser = app.test_client()
        sign_in(browser, "owner@acme.test", PASSWORD)
        answers = [post(browser, f"/dashboard/customers/{customer.id}/invite-email",
                        page=f"/dashboard/customers/{customer.id}") for _ in range(5)]
    assert [a.status_code for a in answers] == [303] * 3 + [429] * 2
    assert "Too many e-mails were asked for. Please wait a while, then try again." in answers[-1].text
    assert len(heard.links()) == 3


def test_reloading_after_generating_a_link_neither_makes_another_nor_ends_the_copied_one(
        merchant, customer):
    page = f"/dashboard/customers/{customer.id}"
    answer = post(merchant, f"/dashboard/customers/{customer.id}/invite-link", page=page)
    assert answer.status_code == 303 and answer.headers["Location"] == page
    shown = merchant.get(page).text
    link = re.search(r'id="dynamic-link" type="text" readonly value="([^"]+)"', shown)[1]
    reloaded = merchant.get(page).text  # the reload is a GET: nothing runs again
    assert "dynamic-link" not in reloaded.replace('data-copy="dynamic-link"', "")
    browser = merchant.application.test_client()
    path = urlsplit(link).path
    answer = browser.post(path, data={"csrf_token": csrf_token(browser.get(path).text)})
    assert answer.status_code == 303


@pytest.mark.parametrize("form, path, fields", [
    ("api-keys", "/dashboard/api-keys", {"name": "Server"}),
    ("webhooks", "/dashboard/webhooks", {"url": "https://hooks.acme.example/portico"}),
    ("branding", "/dashboard/branding", {"name": "Acme", "brand_color": "#4f46e5"}),
    ("mode", "/dashboard/mode", {"mode": "live"}),
])
def test_every_dashboard_form_that_changes_something_answers_with_a_redirect(merchant, dns, form,
                                                                            path, fields):
    dns["hooks.acme.example"] = "93.184.216.34"
    page = "/dashboard/customers" if form == "mode" else path
    assert post(merchant, path, page=page, **fields).status_code == 303


# --- API keys -------------------------------------------------------------------------------


def test_new_api_key_is_shown_once_and_only_its_hash_is_kept(merchant, business, customer):
    answer = post(merchant, "/dashboard/api-keys", name="Production server")
    assert answer.status_code == 303
    answer = merchant.get(answer.headers["Location"])
    key = re.search(r'id="new-key" type="text" readonly value="([^"]+)"', answer.text)[1]
    assert key.startswith("pk_test_")
    [row] = ApiKey.select()
    assert (row.name, row.mode, row.key_hash) == ("Production server", "test", auth.digest(key))
    later = merchant.get("/dashboard/api-keys").text
    assert key not in later and f"{row.prefix}…" in later
    portal = merchant.post(f"/api/customers/{customer.id}/customer-portal/session",
                           headers={"Authorization": f"Bearer {key}"})
    assert portal.status_code == 200


def test_a_revoked_api_key_stops_working(merchant, business, customer):
    key, raw = auth.create_api_key(business, "test", "old")
    answer = post(merchant, f"/dashboard/api-keys/{key.id}/revoke", page="/dashboard/api-keys")
    assert answer.status_code == 303
    assert "revoked" in merchant.get("/dashboard/api-keys").text
    portal = merchant.post(f"/api/customers/{customer.id}/customer-portal/session",
                           headers={"Authorization": f"Bearer {raw}"})
    assert portal.status_code == 401


def test_another_business_or_mode_key_cannot_be_revoked(merchant, business):
    live_key, _ = auth.create_api_key(business, "live")
    foreign_key, _ = auth.create_api_key(Business.create(name="Other Shop"), "test")
    for key in (live_key, foreign_key):
        answer = post(merchant, f"/dashboard/api-keys/{key.id}/revoke", page="/dashboard/api-keys")
        assert answer.status_code == 404
    assert ApiKey.select().where(ApiKey.revoked_at.is_null(False)).count() == 0


# --- Webhooks -------------------------------------------------------------------------------


def test_webhook_endpoint_is_added_with_a_signing_secret(merchant, dns):
    dns["hooks.acme.test"] = "93.184.215.14"
    answer = post(merchant, "/dashboard/webhooks", url="https://hooks.acme.test/portico",
                  description="Billing events")
    assert answer.status_code == 303
    endpoint = WebhookEndpoint.get()
    assert (endpoint.url, endpoint.mode, endpoint.disabled) == (
        "https://hooks.acme.test/portico", "test", False)
    secret = endpoint.secret
    assert secret.startswith("whsec_") and 24 <= len(base64.b64decode(secret[6:])) <= 64
    page = merchant.get(answer.headers["Location"]).text
    assert secret in page and "Nothing was sent to this endpoint yet." in page


@pytest.mark.parametrize("url", ["ftp://hooks.acme.test/x", "file:///etc/passwd", "http://127.0.0.1:8000/x",
                                 "http://10.1.2.3/x", "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]/x", "http://[fc00::1]/x", "http://localhost/x",
                                 "https://user:pass@hooks.acme.test/x", "https://internal.acme.test/x"])
def test_webhook_urls_that_are_not_public_http_are_refused(merchant, dns, url):
    dns["hooks.acme.test"] = "93.184.215.14"
    dns["internal.acme.test"] = "192.168.1.20"
    answer = post(merchant, "/dashboard/webhooks", url=url)
    assert answer.status_code == 400 and 'class="error"' in answer.text
    assert WebhookEndpoint.select().count() == 0


def test_webhook_secret_can_be_replaced(merchant, business):
    endpoint = WebhookEndpoint.create(business=business, mode="test", url="https://hooks.acme.test/x",
                                      secret="whsec_b2xk")
    page = f"/dashboard/webhooks/{endpoint.id}"
    post(merchant, f"{page}/rotate-secret", page=page)
    secret = WebhookEndpoint.get_by_id(endpoint.id).secret
    assert secret.startswith("whsec_") and secret != "whsec_b2xk"


def test_webhook_endpoint_can_be_disabled_and_enabled(merchant, business):
    endpoint = WebhookEndpoint.create(business=business, mode="test", url="https://hooks.acme.test/x",
                                      secret="whsec_x")
    page = f"/dashboard/webhooks/{endpoint.id}"
    post(merchant, f"{page}/disable", page=page)
    assert WebhookEndpoint.get_by_id(endpoint.id).disabled
    assert "Enable" in merchant.get(page).text
    post(merchant, f"{page}/enable", page=page)
    assert not WebhookEndpoint.get_by_id(endpoint.id).disabled


def test_recent_deliveries_of_an_endpoint_are_listed(merchant, business):
    endpoint = WebhookEndpoint.create(business=business, mode="test", url="https://hooks.acme.test/x",
                                      secret="whsec_x")
    event = Event.create(business=business, mode="test", type="payment.succeeded", data={})
    Delivery.create(event=event, notifier="webhooks", endpoint=endpoint, attempt=1, status="failed",
                    response_status=503)
    Delivery.create(event=event, notifier="webhooks", endpoint=endpoint, attempt=2, status="succeeded",
                    response_status=200)
    page = merchant.get(f"/dashboard/webhooks/{endpoint.id}").text
    assert page.count("payment.succeeded") == 2 and "503" in page and "succeeded" in page


def test_another_business_endpoint_is_not_found(merchant):
    foreign = WebhookEndpoint.create(business=Business.create(name="Other Shop"), mode="test",
                                     url="https://hooks.other.test/x", secret="whsec_x")
    assert merchant.get(f"/dashboard/webhooks/{foreign.id}").status_code == 404
    assert post(merchant, f"/dashboard/webhooks/{foreign.id}/disable",
                page="/dashboard/webhooks").status_code == 404
    assert not WebhookEndpoint.get_by_id(foreign.id).disabled


# --- Branding -------------------------------------------------------------------------------


def branding(merchant, **fields):
    data = {"name": "Acme Software", "brand_color": "#4f46e5", "support_email": "",
            "default_return_url": "", **fields}
    token = csrf_token(merchant.get("/dashboard/branding").text)
    return merchant.post("/dashboard/branding", data={"csrf_token": token, **data},
                         content_type="multipart/form-data")


def test_branding_saves_name_colour_support_email_and_return_url(merchant, business):
    answer = branding(merchant, name="Acme Cloud", brand_color="#0F766E",
                      support_email="Help@Acme.example", default_return_url="https://acme.test/account")
    assert answer.status_code == 303
    saved = Business.get_by_id(business.id)
    assert (saved.name, saved.brand_color, saved.support_email, saved.default_return_url) == (
        "Acme Cloud", "#0f766e", "help@acme.example", "https://acme.test/account")
    assert "--brand: #0f766e" in merchant.get(f"/brand/{business.id}.css").text


def test_logo_upload_is_kept_as_a_data_uri_and_can_be_removed(merchant, business):
    branding(merchant, logo=(io.BytesIO(PNG), "logo.png"))
    logo = Business.get_by_id(business.id).logo
    assert logo == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert f'src="{logo}"' in merchant.get(f"/login/{business.id}").text
    branding(merchant, remove_logo="y")
    assert Business.get_by_id(business.id).logo is None


@pytest.mark.parametrize("upload, message", [
    ((b"<svg onload='alert(1)'/>", "logo.svg"), "must be a PNG, JPEG or GIF image"),
    ((b"GIF89a" + b"\0" * (256 * 1024), "big.gif"), "at most 256 KB"),
])
def test_logo_must_be_a_small_image(merchant, business, upload, message):
    content, name = upload
    answer = branding(merchant, logo=(io.BytesIO(content), name))
    assert answer.status_code == 400 and message in answer.text
    assert Business.get_by_id(business.id).logo is None


@pytest.mark.parametrize("fields, message", [
    ({"brand_color": "red"}, "Use a colour like #4f46e5."),
    ({"brand_color": "#12345g"}, "Use a colour like #4f46e5."),
    ({"default_return_url": "http://acme.test/account"}, "starting with https://"),
    ({"default_return_url": "javascript:alert(1)"}, "starting with https://"),
    ({"support_email": "not-an-address"}, "Enter a valid e-mail address."),
    ({"name": ""}, "Enter your business&#39;s name."),
    ({"name": "Acme\r\nBcc: victim@example.com"}, "Use one line of text"),
    ({"name": "Acme\x00"}, "Use one line of text"),
])
def test_branding_refuses_bad_values_with_a_field_message(merchant, business, fields, message):
    answer = branding(merchant, **fields)
    assert answer.status_code == 400 and message in answer.text
    assert Business.get_by_id(business.id).brand_color == "#4f46e5"


def test_the_customer_page_shows_each_section_once_under_a_plain_title(merchant, customer):
    page = merchant.get(f"/dashboard/customers/{customer.id}").text

    title = page.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title.startswith("Ann Example · ") and "<" not in title
    assert page.count('id="payments"') == 1 and page.count('id="data-rights"') == 1
    assert page.count("<section") == page.count("</section>")
