"""The Stripe plugin (``portico-stripe``) against localstripe, through the official ``stripe``
library: the plugin found by its entry point, cards saved through SetupIntents, off-session
charges and declines, transient failures retried with the same key, 3-D Secure settled by
signed webhooks (each event once, mismatches not trusted), refunds, and the portal without it."""

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import stripe
import time_machine
from conftest import csrf_token, free_port
from portico_stripe.models import StripeCustomer, StripeEvent
from portico_stripe.provider import SETTINGS, key_modes, page_policy, save_method
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

import core.plugins
from core import ConfigError, billing
from core.hookspecs import TransientProviderError
from core.models import Customer, Event, Invoice, Payment, PaymentMethod, utcnow
from core.plugins import registry
from plugins.sandbox.provider import luhn_valid

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_SECRET = "whsec_portico_test"
RETURN_URL = "https://acme.test/account?tab=billing"


def stripe_config(api_base: str) -> dict:
    """Settings of an app whose Stripe is at ``api_base`` (localstripe, or a proxy to it)."""
    return {"STRIPE_SECRET_KEY": "sk_test_portico", "STRIPE_PUBLISHABLE_KEY": "pk_test_portico",
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET, "STRIPE_API_BASE": api_base,
            "STRIPE_JS_URL": f"{api_base}/js.stripe.com/v3/", "STRIPE_MAX_NETWORK_RETRIES": 0,
            "PAYMENT_PROVIDER_TEST": "stripe"}


@pytest.fixture
def app(make_app, localstripe):
    """The portal with Stripe (localstripe) saving and charging test-mode cards."""
    app = make_app(stripe_config(localstripe))
    with app.app_context():
        yield app


@pytest.fixture
def provider(app):
    return registry(app).provider("stripe")


@pytest.fixture
def stripe_api(localstripe):
    """Stripe as the merchant sees it (its dashboard): the official client on localstripe."""
    return stripe.StripeClient("sk_test_portico", base_addresses={"api": localstripe},
                               max_network_retries=0)


@pytest.fixture
def card(provider, stripe_api):
    """Save a card with Stripe for a customer, as the card page does: a test token
    (``pm_card_…``) or a test number, as typed into Stripe's element."""

    def save(customer, source="pm_card_visa"):
        if source[0].isdigit():
            source = stripe_api.v1.payment_methods.create({"type": "card", "card": {
                "number": source.replace(" ", ""), "exp_month": 12, "exp_year": 2034, "cvc": "123"}}).id
        return save_method(customer, provider.tokenize(customer=customer, source=source))

    return save


@pytest.fixture
def on_hold(customer, product, card):
    """A subscription paid with Stripe, put on hold by a renewal its new card declined."""

    def make():
        sub, _ = billing.create_subscription(customer, product, card(customer))
        billing.update_payment_method(sub, card(customer, "pm_card_chargeCustomerFail"))
        with time_machine.travel(sub.refresh().next_billing_date, tick=False):
            billing.sweep()
        return sub.refresh()

    return make


def intents_of(stripe_api, customer) -> list:
    """The PaymentIntents Stripe holds for a customer, oldest first."""
    owner = StripeCustomer.get(StripeCustomer.customer == customer.id).stripe_id
    found = [pi for pi in stripe_api.v1.payment_intents.list({"limit": 100}).auto_paging_iter()
             if pi.customer == owner]
    return sorted(found, key=lambda pi: pi.created)


def pass_3ds(localstripe, stripe_api, intent_id, success=True):
    """What Stripe.js does when the customer passes (or fails) the bank's check."""
    intent = stripe_api.v1.payment_intents.retrieve(intent_id)
    httpx.post(f"{localstripe}/v1/payment_intents/{intent_id}/_authenticate",
               params={"success": "true" if success else "false"},
               json={"key": "pk_test_portico", "client_secret": intent.client_secret}).raise_for_status()


def stripe_event(stripe_api, type_, intent_id) -> dict:
    """The event Stripe made about a PaymentIntent, as a webhook carries it."""
    for event in stripe_api.v1.events.list({"type": type_, "limit": 100}).auto_paging_iter():
        if event.data.object.id == intent_id:
            return event.to_dict()
    raise AssertionError(f"Stripe made no {type_} event for {intent_id}")


def signed(payload: bytes, secret=WEBHOOK_SECRET) -> dict:
    """The headers of a webhook as Stripe signs it: HMAC-SHA256 of ``<time>.<payload>``."""
    at = int(time.time())
    digest = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={at},v1={digest}", "Content-Type": "application/json"}


def post_event(client, event: dict, secret=WEBHOOK_SECRET):
    payload = json.dumps(event).encode()
    return client.post("/stripe/webhook", data=payload, headers=signed(payload, secret))


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path




# --- Installed like any third-party plugin ----------------------------------------------------


def test_the_plugin_is_found_through_its_entry_point(app, provider):
    [info] = [plugin for plugin in registry(app).info if plugin.name == "stripe"]
    assert info.version == "0.1.0"
    assert {"register_payment_providers", "register_blueprints", "register_migrations"} <= set(info.hooks)
    assert (provider.name, provider.modes) == ("stripe", ("test",))
    assert registry(app).provider_for("test") is provider


def test_the_core_never_imports_the_plugin_by_name():
    sources = [*(ROOT / "core").rglob("*.py"), *(ROOT / "plugins").glob("*.py"), ROOT / "wsgi.py"]
    assert not [path for path in sources if "portico_stripe" in path.read_text()]


def test_the_key_decides_the_mode_stripe_serves():
    assert key_modes("sk_test_abc") == ("test",)
    assert key_modes("sk_live_abc") == ("live",) and key_modes("rk_live_abc") == ("live",)
    assert key_modes(None) == ()


def test_settings_come_from_portico_stripe_variables(make_app, localstripe, monkeypatch):
    monkeypatch.setenv("PORTICO_STRIPE_SECRET_KEY", "sk_live_from_env")
    monkeypatch.setenv("PORTICO_STRIPE_MAX_NETWORK_RETRIES", "5")
    app = make_app()
    assert registry(app).provider("stripe").modes == ("live",)
    assert app.config["STRIPE_MAX_NETWORK_RETRIES"] == 5


@pytest.mark.parametrize(("config", "message"), [
    ({"PAYMENT_PROVIDER_LIVE": "stripe"}, "set PORTICO_STRIPE_SECRET_KEY and PORTICO_STRIPE_PUBLISHABLE_KEY"),
    ({"PAYMENT_PROVIDER_LIVE": "stripe", "STRIPE_SECRET_KEY": "sk_test_x",
      "STRIPE_PUBLISHABLE_KEY": "pk_test_x"}, "not a live-mode key"),
])
def test_choosing_stripe_without_fitting_keys_stops_start_up(make_app, config, message):
    with pytest.raises(ConfigError, match=message):
        make_app(config)


# --- Cards ------------------------------------------------------------------------------------


def test_a_card_is_attached_to_the_customers_stripe_customer(provider, customer, stripe_api):
    card = provider.tokenize(customer=customer, source="pm_card_visa")
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("visa", "4242", 12, 2030)
    owner = StripeCustomer.get(StripeCustomer.customer == customer.id)
    assert stripe_api.v1.payment_methods.retrieve(card.token).customer == owner.stripe_id
    assert stripe_api.v1.customers.retrieve(owner.stripe_id).email == customer.email
    provider.tokenize(customer=customer, source="pm_card_visa")
    assert StripeCustomer.select().count() == 1


@pytest.mark.parametrize(("source", "message"), [
    ("4000 0000 0000 0002", "Your card was declined."),
    ("pm_does_not_exist", "Not Found"),
    ("4242424242424242", "not a Stripe payment method"),
])
def test_a_card_stripe_refuses_is_not_saved(provider, customer, stripe_api, source, message):
    if source.startswith("4000"):
        source = stripe_api.v1.payment_methods.create({"type": "card", "card": {
            "number": source.replace(" ", ""), "exp_month": 12, "exp_year": 2034, "cvc": "123"}}).id
    with pytest.raises(ValueError, match=message):
        provider.tokenize(customer=customer, source=source)


@pytest.fixture
def card_page(client, provider, customer):
    """The "add a card" page of ``customer``, as the portal sends them to it."""
    return path_of(provider.setup_url(customer=customer, return_url=RETURN_URL))


def confirm_setup(localstripe, client_secret, number="4242424242424242", exp_year=2035):
    """What Stripe.js does with the card typed into Stripe's element: it confirms the
    SetupIntent with Stripe, using the publishable key; our server is not involved."""
    setup_intent = client_secret.split("_secret_")[0]
    answer = httpx.post(f"{localstripe}/v1/setup_intents/{setup_intent}/confirm", json={
        "key": "pk_test_portico", "client_secret": client_secret, "payment_method_data": {
            "type": "card", "card": {"number": number, "exp_month": 7, "exp_year": exp_year,
                                     "cvc": "123"}}})
    return setup_intent, answer


def test_the_card_page_loads_stripe_js_under_a_policy_of_stripe_origins_only(client, card_page, localstripe):
    page = client.get(card_page)
    assert page.status_code == 200
    policy = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == f"'self' {localstripe}"
    assert policy["connect-src"] == f"'self' {localstripe}"
    assert policy["frame-src"] == f"{localstripe} https://hooks.stripe.com"
    assert policy["default-src"] == "'self'" and policy["form-action"] == "'self'"
    assert f'src="{localstripe}/js.stripe.com/v3/"' in page.text
    assert 'data-publishable-key="pk_test_portico"' in page.text
    assert 'integrity="sha384-' in page.text
    assert "cc-number" not in page.text and 'name="number"' not in page.text


def test_the_real_stripe_origins_are_the_policy_by_default():
    policy = page_policy(SETTINGS)
    assert "script-src 'self' https://js.stripe.com https://*.js.stripe.com;" in policy
    assert "frame-src https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com;" in policy
    assert "connect-src 'self' https://api.stripe.com;" in policy


def test_a_card_confirmed_with_stripe_is_saved_and_the_customer_sent_back(client, card_page, customer,
                                                                        localstripe, stripe_api):
    page = client.get(card_page)
    client_secret = page.text.split('data-client-secret="')[1].split('"')[0]
    setup_intent, confirmed = confirm_setup(localstripe, client_secret)
    assert confirmed.json()["status"] == "succeeded"
    answer = client.post(card_page, data={"csrf_token": csrf_token(page.text), "setup_intent": setup_intent})
    assert answer.status_code == 303
    location = urlsplit(answer.headers["Location"])
    assert location._replace(query="").geturl() == "https://acme.test/account"
    assert parse_qs(location.query)["tab"] == ["billing"]
    method = PaymentMethod.get_by_id(parse_qs(location.query)["payment_method"][0])
    assert (method.customer_id, method.mode, method.provider) == (customer.id, "test", "stripe")
    assert (method.brand, method.last4, method.exp_month, method.exp_year) == ("visa", "4242", 7, 2035)
    owner = StripeCustomer.get(StripeCustomer.customer == customer.id).stripe_id
    assert stripe_api.v1.payment_methods.retrieve(method.provider_token).customer == owner
    again = client.post(card_page, data={"csrf_token": csrf_token(page.text), "setup_intent": setup_intent})
    assert parse_qs(urlsplit(again.headers["Location"]).query)["payment_method"] == [method.id]


def test_an_unconfirmed_set_up_saves_nothing(client, card_page, provider, customer):
    page = client.get(card_page)
    setup_intent = page.text.split('data-client-secret="')[1].split("_secret_")[0]
    answer = client.post(card_page, data={"csrf_token": csrf_token(page.text), "setup_intent": setup_intent})
    assert answer.status_code == 200 and "The card was not confirmed" in answer.text
    assert PaymentMethod.select().count() == 0


def test_another_customers_set_up_is_refused(client, card_page, provider, business, localstripe):
    other = Customer.create(business=business, mode="test", email="bob@example.com", name="Bob")
    intent = provider.create_setup_intent(other)
    confirm_setup(localstripe, intent.client_secret)
    page = client.get(card_page)
    answer = client.post(card_page, data={"csrf_token": csrf_token(page.text), "setup_intent": intent.id})
    assert answer.status_code == 200 and "belongs to someone else" in answer.text
    assert PaymentMethod.select().count() == 0


def test_a_tampered_card_page_link_is_refused(client, card_page):
    answer = client.get(card_page.replace("state=", "state=x"))
    assert answer.status_code == 400 and "invalid or has expired" in answer.text


# --- Charges ----------------------------------------------------------------------------------


def test_a_subscription_is_paid_by_an_off_session_payment_intent(customer, product, card, stripe_api):
    sub, payment = billing.create_subscription(customer, product, card(customer))
    payment, sub = payment.refresh(), sub.refresh()
    assert payment.status == "succeeded" and sub.status == "active"
    [intent] = intents_of(stripe_api, customer)
    assert (intent.id, intent.status, intent.amount, intent.currency) == (
        payment.provider_reference, "succeeded", payment.amount, "eur")
    assert intent.payment_method == payment.payment_method.provider_token
    assert intent.metadata["portico_idempotency_key"] == payment.idempotency_key
    assert Invoice.get(Invoice.payment == payment).total == 1800


def test_a_card_declined_on_charge_gives_stripes_reason(customer, product, card):
    sub, payment = billing.create_subscription(customer, product, card(customer, "4000 0000 0000 0341"))
    payment = payment.refresh()
    assert (payment.status, payment.failure_code) == ("failed", "card_declined")
    assert payment.failure_message == "Your card was declined."
    assert sub.refresh().status == "failed"
    assert Invoice.select().count() == 0


class Wire:
    """A proxy in front of localstripe that records every request and, on cue, answers the next
    ones itself with a 500 instead of passing them on, or changes fields of what localstripe
    answers (``rewrite[(verb, path)] = {field: value}``: Stripe's answers localstripe never gives)."""

    def __init__(self, upstream):
        self.upstream, self.requests, self.failures, self.rewrite = upstream, [], 0, {}

    def search_intents(self, query: str) -> Response:
        """Stripe's PaymentIntent search (which localstripe lacks), for the one clause Portico
        sends, ``metadata['<field>']:'<value>'``, over the intents localstripe holds."""
        field, value = re.fullmatch(r"metadata\['([^']+)'\]:'([^']*)'", query).groups()
        intents = httpx.get(f"{self.upstream}/v1/payment_intents", params={"limit": 100},
                            headers={"Authorization": "Bearer sk_test_portico"}).json()["data"]
        found = [i for i in intents if (i.get("metadata") or {}).get(field) == value]
        return Response(json.dumps({"object": "search_result", "data": found, "has_more": False,
                                    "next_page": None, "url": "/v1/payment_intents/search"}),
                        200, content_type="application/json")

    def __call__(self, environ, start_response):
        request = Request(environ)
        self.requests.append((request.method, request.path, dict(request.headers)))
        if request.path == "/v1/payment_intents/search":
            response = self.search_intents(request.args["query"])
        elif self.failures:
            self.failures -= 1
            response = Response(json.dumps({"error": {"type": "api_error", "message": "Stripe is down"}}),
                                500, content_type="application/json")
        else:
            headers = {name: value for name, value in request.headers.items()
                       if name.lower() in ("authorization", "content-type", "idempotency-key")}
            answer = httpx.request(request.method, self.upstream + request.full_path.rstrip("?"),
                                   headers=headers, content=request.get_data())
            content = answer.content
            if (request.method, request.path) in self.rewrite and answer.status_code == 200:
                content = json.dumps({**answer.json(), **self.rewrite[(request.method, request.path)]})
            response = Response(content, answer.status_code, content_type="application/json")
        return response(environ, start_response)


@pytest.fixture
def wire(localstripe):
    wire = Wire(localstripe)
    server = make_server("127.0.0.1", 0, wire, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    wire.url = f"http://127.0.0.1:{server.server_port}"
    yield wire
    server.shutdown()


def test_a_5xx_is_transient_and_the_retry_sends_the_same_idempotency_key(make_app, wire, customer,
                                                                          product, card, stripe_api):
    method = card(customer)
    with make_app(stripe_config(wire.url)).app_context():
        wire.failures = 1
        sub, payment = billing.create_subscription(customer, product, method)
        assert payment.refresh().status == "processing"
        billing.run_charge(payment.id)
    assert payment.refresh().status == "succeeded" and sub.refresh().status == "active"
    keys = [headers.get("Idempotency-Key") for verb, path, headers in wire.requests
            if (verb, path) == ("POST", "/v1/payment_intents")]
    assert keys == [payment.idempotency_key, payment.idempotency_key]
    assert [pi.id for pi in intents_of(stripe_api, customer)] == [payment.refresh().provider_reference]


def test_an_unreachable_stripe_is_a_transient_failure(make_app, customer, card):
    method = card(customer)
    unreachable = registry(make_app(stripe_config(f"http://127.0.0.1:{free_port()}"))).provider("stripe")
    with pytest.raises(TransientProviderError):
        unreachable.charge(payment_method=method, amount=1800, currency="EUR",
                           idempotency_key="unreachable-1")


def test_the_on_hold_flow_a_declined_card_then_a_good_one(customer, on_hold, card, stripe_api):
    sub = on_hold()
    assert sub.status == "on_hold"
    unpaid = Payment.get((Payment.kind == "renewal") & (Payment.status == "failed"))
    assert unpaid.failure_message == "Your card was declined."
    declined = billing.update_payment_method(sub, card(customer, "4000 0000 0000 0341")).refresh()
    assert declined.status == "failed" and sub.refresh().status == "on_hold"
    paid = billing.update_payment_method(sub, card(customer, "pm_card_visa")).refresh()
    assert paid.status == "succeeded" and paid.amount == unpaid.amount
    sub = sub.refresh()
    assert sub.status == "active" and sub.payment_method_id == paid.payment_method_id
    arrears = [pi for pi in intents_of(stripe_api, customer)
               if pi.metadata["portico_idempotency_key"].startswith("arrears:")]
    assert [pi.status for pi in arrears] == ["requires_payment_method", "succeeded"]
    assert (arrears[1].id, arrears[1].amount) == (paid.provider_reference, unpaid.amount)
    assert Invoice.select().where(Invoice.payment.in_([declined, paid])).count() == 1


# --- 3-D Secure and webhooks ------------------------------------------------------------------


@pytest.fixture
def needs_3ds(customer, on_hold, card):
    """An on-hold subscription whose arrears charge waits for the customer's 3-D Secure."""
    sub = on_hold()
    payment = billing.update_payment_method(sub, card(customer, "4000 0027 6000 3184")).refresh()
    return sub, payment


def test_a_charge_needing_3ds_waits_for_the_customer(needs_3ds, stripe_api):
    sub, payment = needs_3ds
    assert payment.status == "requires_customer_action"
    assert urlsplit(payment.action_url).path.startswith("/stripe/payments/")
    assert stripe_api.v1.payment_intents.retrieve(payment.provider_reference).status == "requires_action"
    assert sub.refresh().status == "on_hold"
    assert Invoice.select().where(Invoice.payment == payment).count() == 0
    assert billing.update_payment_method(sub, sub.payment_method).id == payment.id  # still waiting


def test_a_signed_webhook_settles_3ds_once_however_often_it_comes(client, needs_3ds, localstripe,
                                                                  stripe_api):
    sub, payment = needs_3ds
    pass_3ds(localstripe, stripe_api, payment.provider_reference)
    event = stripe_event(stripe_api, "payment_intent.succeeded", payment.provider_reference)
    answers = [post_event(client, event) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert [a.json["outcome"] for a in answers] == ["settled"] + ["duplicate"] * 4
    assert payment.refresh().status == "succeeded" and sub.refresh().status == "active"
    assert Invoice.select().where(Invoice.payment == payment).count() == 1
    succeeded = Event.select().where(Event.type == "payment.succeeded")
    assert [e.data["payment_id"] for e in succeeded].count(payment.id) == 1
    [record] = StripeEvent.select()
    assert (record.event_id, record.outcome, record.payment_id) == (event["id"], "settled", payment.id)


def test_duplicate_webhooks_arriving_together_are_processed_once(app, needs_3ds, localstripe, stripe_api):
    sub, payment = needs_3ds
    pass_3ds(localstripe, stripe_api, payment.provider_reference)
    event = stripe_event(stripe_api, "payment_intent.succeeded", payment.provider_reference)
    barrier, outcomes = threading.Barrier(6), []

    def deliver():
        client = app.test_client()
        barrier.wait()
        outcomes.append(post_event(client, event).json["outcome"])

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["duplicate"] * 5 + ["settled"]
    assert sub.refresh().status == "active"
    assert Invoice.select().where(Invoice.payment == payment).count() == 1
    assert StripeEvent.select().count() == 1


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("amount", 1, "amount 1 instead of"),
    ("currency", "usd", "currency usd instead of EUR"),
    ("customer", "cus_someone_else", "customer cus_someone_else is not the payment's"),
    ("livemode", True, "a live-mode intent for a test-mode payment"),
])
def test_a_signed_webhook_that_disagrees_with_the_payment_is_flagged_not_trusted(
        client, needs_3ds, localstripe, stripe_api, caplog, field, value, problem):
    sub, payment = needs_3ds
    pass_3ds(localstripe, stripe_api, payment.provider_reference)
    event = stripe_event(stripe_api, "payment_intent.succeeded", payment.provider_reference)
    event["data"]["object"][field] = value
    with caplog.at_level(logging.WARNING, logger="portico.stripe"):
        answer = post_event(client, event)
    assert answer.status_code == 200 and answer.json["outcome"] == "mismatch"
    assert payment.refresh().status == "requires_customer_action" and sub.refresh().status == "on_hold"
    [record] = StripeEvent.select()
    assert record.outcome == "mismatch" and problem in record.detail
    assert problem in caplog.text


@pytest.mark.parametrize("forge", ["wrong secret", "altered body", "no signature"])
def test_a_webhook_not_signed_by_stripe_is_refused(client, needs_3ds, localstripe, stripe_api, forge):
    sub, payment = needs_3ds
    pass_3ds(localstripe, stripe_api, payment.provider_reference)
    payload = json.dumps(stripe_event(stripe_api, "payment_intent.succeeded",
                                      payment.provider_reference)).encode()
    headers = signed(payload, "whsec_not_ours" if forge == "wrong secret" else WEBHOOK_SECRET)
    if forge == "altered body":
        payload = payload.replace(b'"amount": 1800', b'"amount": 1')
    if forge == "no signature":
        del headers["Stripe-Signature"]
    answer = client.post("/stripe/webhook", data=payload, headers=headers)
    assert answer.status_code == 400
    assert payment.refresh().status == "requires_customer_action"
    assert StripeEvent.select().count() == 0


def test_events_about_other_things_are_recorded_and_ignored(client):
    event = {"id": "evt_other_1", "object": "event", "type": "customer.created",
             "data": {"object": {"id": "cus_x", "object": "customer"}}}
    assert post_event(client, event).json["outcome"] == "ignored"
    assert StripeEvent.get().outcome == "ignored"


def test_webhooks_without_a_secret_are_refused_and_logged(make_app, caplog):
    client = make_app({"STRIPE_WEBHOOK_SECRET": None}).test_client()
    with caplog.at_level(logging.ERROR, logger="portico.stripe"):
        answer = client.post("/stripe/webhook", data=b"{}", headers=signed(b"{}"))
    assert answer.status_code == 503 and "PORTICO_STRIPE_WEBHOOK_SECRET" in caplog.text


def test_localstripe_delivers_its_signed_webhook_that_settles_3ds(app, live_server, localstripe, needs_3ds,
                                                                 stripe_api):
    sub, payment = needs_3ds
    webhook = f"{localstripe}/_config/webhooks/portico"
    httpx.post(webhook, json={"url": f"{live_server.url}/stripe/webhook", "secret": WEBHOOK_SECRET,
                              "events": ["payment_intent.succeeded"]}).raise_for_status()
    try:
        pass_3ds(localstripe, stripe_api, payment.provider_reference)
        deadline = time.monotonic() + 10
        while payment.refresh().status == "requires_customer_action" and time.monotonic() < deadline:
            time.sleep(0.05)  # localstripe sends its webhooks a second after the event
    finally:
        httpx.post(webhook, json={"url": f"{live_server.url}/stripe/webhook", "secret": WEBHOOK_SECRET,
                                  "events": []}).raise_for_status()
    assert payment.refresh().status == "succeeded" and sub.refresh().status == "active"
    assert StripeEvent.get(StripeEvent.payment == payment).outcome == "settled"


def test_the_3ds_page_asks_stripe_then_settles_what_stripe_answers(client, needs_3ds, localstripe,
                                                                   stripe_api):
    sub, payment = needs_3ds
    page_url = path_of(payment.action_url)
    page = client.get(page_url)
    assert page.status_code == 200 and "Confirm your payment" in page.text and "€18.00" in page.text
    assert f"script-src 'self' {localstripe}" in page.headers["Content-Security-Policy"]
    assert f'data-payment-method="{payment.payment_method.provider_token}"' in page.text
    too_soon = client.post(page_url, data={"csrf_token": csrf_token(page.text)})
    assert "not confirmed yet" in too_soon.text and payment.refresh().status == "requires_customer_action"
    pass_3ds(localstripe, stripe_api, payment.provider_reference)
    done = client.post(page_url, data={"csrf_token": csrf_token(page.text)})
    assert done.status_code == 200 and "Payment confirmed" in done.text
    assert payment.refresh().status == "succeeded" and sub.refresh().status == "active"
    assert "Payment confirmed" in client.get(page_url).text


def test_failing_3ds_declines_the_charge_and_the_customer_may_try_again(client, needs_3ds, localstripe,
                                                                        stripe_api, customer, card):
    sub, payment = needs_3ds
    pass_3ds(localstripe, stripe_api, payment.provider_reference, success=False)
    page = client.get(path_of(payment.action_url))
    assert "Payment declined" in page.text and "failed authentication" in page.text
    assert payment.refresh().status == "failed" and sub.refresh().status == "on_hold"
    retried = billing.update_payment_method(sub, card(customer)).refresh()
    assert retried.status == "succeeded" and sub.refresh().status == "active"


def test_a_3ds_wait_past_the_window_is_cancelled_at_stripe_and_frees_the_subscription(
        needs_3ds, stripe_api, customer, card):
    from datetime import timedelta

    from core.models import utcnow

    sub, payment = needs_3ds
    with time_machine.travel(utcnow() + timedelta(hours=23, minutes=1), tick=False):
        assert billing.sweep()["expired"] == 1
    assert payment.refresh().status == "failed" and payment.refresh().failure_code == "expired"
    assert stripe_api.v1.payment_intents.retrieve(payment.provider_reference).status == "canceled"
    assert billing.update_payment_method(sub, card(customer)).refresh().status == "succeeded"


def test_a_charge_whose_answer_was_lost_is_found_at_stripe_by_its_idempotency_key(
        provider, customer, card):
    paid = provider.charge(payment_method=card(customer), amount=1800, currency="EUR",
                           idempotency_key="lookup-test-charge")
    found = provider.lookup(idempotency_key="lookup-test-charge")
    assert found.status == "succeeded" and found.reference == paid.reference
    assert provider.lookup(idempotency_key="never-charged") is None


def test_a_charge_whose_answer_was_lost_is_found_by_stripes_search(make_app, wire, customer, card):
    method = card(customer)
    with make_app(stripe_config(wire.url)).app_context():
        searching = registry().provider("stripe")
        paid = searching.charge(payment_method=method, amount=1800, currency="EUR",
                                idempotency_key="search-test-charge")
        found = searching.lookup(idempotency_key="search-test-charge")
        assert searching.lookup(idempotency_key="never-charged") is None
    assert found.status == "succeeded" and found.reference == paid.reference
    asked = [path for verb, path, _ in wire.requests if path.startswith("/v1/payment_intents")
             and verb == "GET"]
    assert asked == ["/v1/payment_intents/search"] * 2  # never the list of every intent


def test_a_tampered_3ds_link_is_not_found(client, needs_3ds):
    _sub, payment = needs_3ds
    assert client.get(path_of(payment.action_url)[:-3] + "abc").status_code == 404


# --- Refunds ----------------------------------------------------------------------------------


@pytest.fixture
def paid(provider, customer, card):
    return provider.charge(payment_method=card(customer), amount=1800, currency="EUR",
                           idempotency_key="refund-test-charge")


def test_refunds_in_parts_through_the_provider_hook(provider, paid, stripe_api):
    first = provider.refund(reference=paid.reference, amount=500, currency="EUR", idempotency_key="r1")
    rest = provider.refund(reference=paid.reference, amount=1300, currency="EUR", idempotency_key="r2")
    assert (first.status, rest.status) == ("succeeded", "succeeded")
    refunds = {stripe_api.v1.refunds.retrieve(r.reference).amount for r in (first, rest)}
    assert refunds == {500, 1300}
    assert stripe_api.v1.refunds.retrieve(first.reference).payment_intent == paid.reference


@pytest.mark.parametrize(("reference", "currency", "message"), [
    ("pi_unknown", "EUR", "Not Found"),
    (None, "EUR", "There is no Stripe charge to refund."),
    ("paid", "USD", "The charge was made in EUR, not USD."),
])
def test_a_refund_stripe_cannot_make_fails_with_a_reason(provider, paid, reference, currency, message):
    refund = provider.refund(reference=paid.reference if reference == "paid" else reference, amount=500,
                             currency=currency, idempotency_key="r-refused")
    assert refund.status == "failed" and refund.failure_message == message


@pytest.fixture
def pending_refund(make_app, wire, customer, product, card):
    """A subscription paid with Stripe, refunded in full, which Stripe answered ``pending``
    (as it does for refunds the bank has yet to confirm)."""
    method = card(customer)
    app = make_app(stripe_config(wire.url))
    with app.app_context():
        _, payment = billing.create_subscription(customer, product, method)
        wire.rewrite[("POST", "/v1/refunds")] = {"status": "pending"}
        refund = billing.refund_payment(payment.refresh(), reason="merchant")
        wire.rewrite.clear()
        yield app, refund.refresh()


def refund_event(stripe_api, refund, type_="refund.updated", **changes) -> dict:
    """The event Stripe sends when a refund changes, carrying the refund as Stripe holds it."""
    stripe_refund = stripe_api.v1.refunds.retrieve(refund.provider_reference).to_dict()
    return {"id": f"evt_{refund.id}_{type_}", "object": "event", "type": type_,
            "data": {"object": {**stripe_refund, **changes}}}


def test_a_refund_stripe_answered_pending_stays_pending_without_a_credit_note(pending_refund):
    _, refund = pending_refund
    assert refund.status == "pending" and refund.provider_reference.startswith("re_")
    assert refund.credit_note_number is None


def test_a_pending_refund_is_settled_by_stripes_signed_event_once(pending_refund, stripe_api):
    app, refund = pending_refund
    client = app.test_client()
    event = refund_event(stripe_api, refund)
    answers = [post_event(client, event).json["outcome"] for _ in range(3)]
    assert answers == ["settled", "duplicate", "duplicate"]
    refund = refund.refresh()
    assert refund.status == "succeeded" and refund.credit_note_number == 1
    assert [e.type for e in Event.select().where(Event.type.startswith("refund."))] == ["refund.succeeded"]
    record = StripeEvent.get(StripeEvent.event_id == event["id"])
    assert (record.outcome, record.payment_id) == ("settled", refund.payment_id)


def test_a_refund_stripe_reports_failed_later_is_recorded_failed_with_its_reason(pending_refund,
                                                                                stripe_api):
    app, refund = pending_refund
    event = refund_event(stripe_api, refund, "refund.failed", status="failed",
                         failure_reason="expired_or_canceled_card")
    assert post_event(app.test_client(), event).json["outcome"] == "settled"
    refund = refund.refresh()
    assert refund.status == "failed" and refund.credit_note_number is None
    assert refund.failure_message == "Stripe could not refund it (expired_or_canceled_card)."
    with app.app_context():
        assert billing.refundable(refund.payment) == refund.amount  # may be refunded again


def test_a_refund_event_that_still_says_pending_changes_nothing(pending_refund, stripe_api):
    app, refund = pending_refund
    event = refund_event(stripe_api, refund, status="pending")
    assert post_event(app.test_client(), event).json["outcome"] == "waiting"
    assert refund.refresh().status == "pending"


@pytest.mark.parametrize(("field", "value"), [("amount", 1), ("currency", "usd"),
                                              ("payment_intent", "pi_someone_else")])
def test_a_refund_event_that_disagrees_with_the_refund_is_flagged_not_trusted(pending_refund, stripe_api,
                                                                             field, value, caplog):
    app, refund = pending_refund
    event = refund_event(stripe_api, refund, **{field: value})
    assert post_event(app.test_client(), event).json["outcome"] == "mismatch"
    assert refund.refresh().status == "pending"
    assert f"{field} differ" in caplog.text


def test_a_pending_refund_asked_again_by_the_sweep_is_settled_as_stripe_holds_it(pending_refund,
                                                                                wire):
    app, refund = pending_refund
    with app.app_context(), time_machine.travel(utcnow() + billing.STALE_CHARGE + timedelta(minutes=1)):
        assert billing.sweep()["refunds"] == 1  # no worker here: the job runs at once
    refund = refund.refresh()
    assert refund.status == "succeeded" and refund.credit_note_number == 1
    created = [path for verb, path, _ in wire.requests if (verb, path) == ("POST", "/v1/refunds")]
    assert len(created) == 1  # found by its key, never made twice


# --- Without the plugin -----------------------------------------------------------------------


@pytest.fixture
def without_stripe(make_app, monkeypatch):
    """Build the portal with the Stripe plugin disabled, or as if it were not installed."""

    def build(how):
        if how == "disabled":
            return make_app({"DISABLED_PLUGINS": ["stripe"]})
        monkeypatch.setattr(core.plugins, "entry_points", lambda group: [
            ep for ep in entry_points(group=group) if ep.name != "stripe"])
        return make_app()

    return build


@pytest.mark.parametrize("how", ["disabled", "not installed"])
def test_without_the_plugin_the_portal_runs_and_a_stripe_card_fails_naming_it(without_stripe, how, customer,
                                                                              product):
    portal = without_stripe(how)
    client = portal.test_client()
    assert client.get("/").status_code == 200
    assert client.post("/stripe/webhook", data=b"{}").status_code == 404
    with portal.app_context():
        assert "stripe" not in {plugin.name for plugin in registry(portal).info}
        method = PaymentMethod.create(business=customer.business_id, mode="test", customer=customer,
                                      provider="stripe", provider_token="pm_saved_before", brand="visa",
                                      last4="4242")
        sub, payment = billing.create_subscription(customer, product, method)
        payment = payment.refresh()
        assert (payment.status, payment.failure_code) == ("failed", "provider_unavailable")
        assert "payment provider 'stripe' is not available" in payment.failure_message
        assert "portico-stripe" in payment.failure_message
        assert sub.refresh().status == "failed"


# --- In a browser -----------------------------------------------------------------------------


def card_numbers(text: str) -> list[str]:
    """Every run of 13 to 19 digits in ``text`` that passes the Luhn check, as card numbers do."""
    return [run for run in re.findall(r"\d{13,19}", text) if luhn_valid(run)]


@pytest.fixture
def watched(page, live_server, localstripe):
    """What the browser sends our server and Stripe, and what the CSP blocked."""
    seen = {"ours": [], "stripe": [], "blocked": []}

    def record(request):
        for side, address in (("ours", live_server.url), ("stripe", localstripe)):
            if request.url.startswith(address):
                seen[side].append(f"{request.method} {request.url} {request.post_data or ''}")

    page.on("request", record)
    page.on("console", lambda message: seen["blocked"].append(message.text)
            if "Content Security Policy" in message.text else None)
    return seen


def type_card(page, number, month="08", year="36", cvc="737"):
    """Type a card into Stripe's element (localstripe's stand-in for Stripe's iframe)."""
    for field, value in (("number", number), ("exp_month", month), ("exp_year", year), ("cvc", cvc),
                         ("postal_code", "75001")):
        page.get_by_placeholder(field).fill(value)


@pytest.mark.browser
def test_a_card_typed_into_stripes_element_never_reaches_our_server(page, watched, live_server, provider,
                                                                     customer):
    back = f"{live_server.url}/healthz?tab=billing"
    page.goto(live_server.url + path_of(provider.setup_url(customer=customer, return_url=back)))
    type_card(page, "4242424242424242")
    page.screenshot_as("stripe-card-page")
    page.get_by_role("button", name="Save card").click()
    page.wait_for_url(f"{live_server.url}/healthz?tab=billing&payment_method=pm_*")
    method = PaymentMethod.get_by_id(parse_qs(urlsplit(page.url).query)["payment_method"][0])
    assert (method.provider, method.brand, method.last4, method.exp_month, method.exp_year) == (
        "stripe", "visa", "4242", 8, 2036)
    assert any("/v1/setup_intents/" in line and "4242424242424242" in line for line in watched["stripe"])
    [posted] = [line.split(" ", 2)[2] for line in watched["ours"] if line.startswith("POST")]
    assert set(parse_qs(posted)) == {"csrf_token", "setup_intent"}
    assert card_numbers(" ".join(watched["ours"])) == []
    assert watched["blocked"] == []


@pytest.mark.browser
def test_a_card_stripe_declines_shows_stripes_reason_and_is_not_saved(page, watched, live_server, provider,
                                                                       customer):
    page.goto(live_server.url + path_of(provider.setup_url(customer=customer, return_url=live_server.url)))
    type_card(page, "4000000000000002")
    page.get_by_role("button", name="Save card").click()
    page.get_by_text("Your card was declined.").wait_for()
    page.screenshot_as("stripe-card-declined")
    assert PaymentMethod.select().count() == 0
    assert not [line for line in watched["ours"] if line.startswith("POST")]


@pytest.mark.browser
def test_the_customer_completes_3ds_in_the_browser(page, watched, live_server, needs_3ds):
    sub, payment = needs_3ds
    page.goto(live_server.url + path_of(payment.action_url))
    page.get_by_role("button", name="Confirm payment").click()
    page.get_by_role("button", name="Complete authentication").click()  # the bank's check
    page.get_by_role("heading", name="Payment confirmed").wait_for()
    page.screenshot_as("stripe-3ds-confirmed")
    assert payment.refresh().status == "succeeded" and sub.refresh().status == "active"
    assert watched["blocked"] == []
