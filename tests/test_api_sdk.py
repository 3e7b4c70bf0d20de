"""The official ``dodopayments`` SDK (pinned 1.123.0, strict response validation) against a real
Portico server process: the merchant's whole call sequence, start to end."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import time_machine
from conftest import free_port
from dodopayments import (
    ConflictError,
    DodoPayments,
    NotFoundError,
    PermissionDeniedError,
    UnprocessableEntityError,
)

from core import auth, billing, payloads
from core.models import Business, Subscription

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(make_app):
    """The test process's app (it runs the renewal that puts a subscription on hold), allowed
    to deliver webhooks to the loopback receiver like the server."""
    app = make_app({"WEBHOOK_ALLOW_PRIVATE_NETWORKS": True})
    with app.app_context():
        yield app


@pytest.fixture
def server(app, cli_env):
    """Portico under gunicorn on a free loopback port, on this run's database, jobs in-process."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if k != "PORTICO_REDIS_URL"}, **cli_env,
           "PORTICO_BASE_URL": url, "PORTICO_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
           "PORTICO_INVOICE_PDF_AHEAD": "false"}
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "--no-control-socket",
                                "-b", f"127.0.0.1:{port}",
                                "wsgi:app"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the server did not start:\n" + process.stdout.read().decode())
        time.sleep(0.1)
    yield url
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=10)
    print(process.stdout.read().decode())  # the server's log, shown when the test fails


class Receiver:
    """A webhook receiver on a free loopback port, keeping each request's headers and body."""

    def __init__(self):
        self.received = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


def sign_in(link: str) -> int:
    """Open a portal link as a browser does: its page, then the POST it continues with."""
    with httpx.Client() as browser:
        page = browser.get(link)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
        return browser.post(link, data={"csrf_token": token[1] if token else ""}).status_code


def test_the_official_sdk_runs_the_merchant_sequence_start_to_end(app, server, receiver):
    business = Business.create(name="Acme Software")
    base_url = server + "/api"
    c = DodoPayments(bearer_token=auth.create_api_key(business, "test")[1], base_url=base_url,
                     max_retries=0, _strict_response_validation=True)
    pub = DodoPayments(bearer_token="ignored", base_url=base_url, max_retries=0,
                       _strict_response_validation=True)
    hook = c.webhooks.create(url=receiver.url, filter_types=[
        "subscription.on_hold", "subscription.active", "payment.succeeded", "license_key.created"])
    secret = c.webhooks.retrieve_secret(hook.id).secret

    # 1-2. A recurring product, retrieved and listed
    p = c.products.create(name="Pro", tax_category="saas", price={
        "type": "recurring_price", "currency": "USD", "price": 999, "discount": 0,
        "purchasing_power_parity": False, "payment_frequency_count": 1,
        "payment_frequency_interval": "Month", "subscription_period_count": 1,
        "subscription_period_interval": "Year", "trial_period_days": 0},
        license_key_enabled=True, license_key_activations_limit=2)
    assert p.is_recurring and p.price.type == "recurring_price"
    assert c.products.retrieve(p.product_id).name == "Pro"
    listed = c.products.list(recurring=True, page_number=0).items
    assert [item.product_id for item in listed] == [p.product_id]
    assert listed[0].price_detail.type == "recurring_price"

    # 3. A customer, renamed, found by e-mail
    cust = c.customers.create(email="ann@example.com", name="Ann", phone_number="+15555550100")
    assert c.customers.update(cust.customer_id, name="Ann B").name == "Ann B"
    assert [x.customer_id for x in c.customers.list(email="ann@example.com", page_number=0).items] \
        == [cust.customer_id]

    # 4. A portal session link: it signs the customer in once
    link = c.customers.customer_portal.create(cust.customer_id, send_email=False).link
    assert link.startswith(server + "/session/")
    assert sign_in(link) == 303
    assert sign_in(link) == 410

    # 5-6. A subscription charged to a sandbox test token, listed with its next billing date
    with pytest.deprecated_call():  # Dodo steers to checkouts; Portico charges a saved method
        created = c.subscriptions.create(billing={"country": "US"},
                                         customer={"customer_id": cust.customer_id},
                                         product_id=p.product_id, quantity=1,
                                         payment_method_id="pm_card_visa")
    sub_id = created.subscription_id
    page = c.subscriptions.list(customer_id=cust.customer_id, status="active", page_number=0, page_size=10)
    assert [s.subscription_id for s in page.items] == [sub_id] and page.items[0].next_billing_date
    assert c.subscriptions.list(page_number=99).items == []

    # 7. Cancel at the next billing date, then revoke it
    s = c.subscriptions.update(sub_id, cancel_at_next_billing_date=True)
    assert s.cancel_at_next_billing_date is True and s.status == "active"
    s = c.subscriptions.update(sub_id, cancel_at_next_billing_date=False)
    assert s.cancel_at_next_billing_date is False

    # 8. A declined renewal puts it on hold; a saved card reactivates it
    c.subscriptions.update_payment_method(sub_id, payment_method={
        "type": "existing", "payment_method_id": "pm_card_chargeDeclined"})
    sub = Subscription.get_by_id(sub_id)
    billing.renew(sub.id, payloads.iso(sub.next_billing_date))
    assert c.subscriptions.retrieve(sub_id).status == "on_hold"
    methods = c.customers.retrieve_payment_methods(cust.customer_id).items
    visa = next(m for m in methods if m.card.last4_digits == "4242")
    answer = c.subscriptions.update_payment_method(sub_id, payment_method={
        "type": "existing", "payment_method_id": visa.payment_method_id})
    assert c.subscriptions.retrieve(sub_id).status == "active"
    payments = c.payments.list(subscription_id=sub_id, page_number=0).items
    assert [x.status for x in payments] == ["succeeded", "failed", "succeeded"]
    assert payments[0].payment_id == answer.payment_id

    # 9-10. The reactivating payment and its invoice PDF
    pay = c.payments.retrieve(answer.payment_id)
    assert pay.status == "succeeded" and pay.total_amount == 999
    assert pay.customer.customer_id == cust.customer_id
    assert c.invoices.payments.retrieve(answer.payment_id).read()[:5] == b"%PDF-"

    # 11-14. The license key that came with the subscription, activated by the public API
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lk = c.license_keys.list(customer_id=cust.customer_id, page_number=0).items[0]
        assert c.license_keys.retrieve(lk.id).status == "active"
        inst = pub.licenses.activate(license_key=lk.key, name="laptop")
        assert pub.licenses.validate(license_key=lk.key, license_key_instance_id=inst.id).valid is True
        instances = c.license_key_instances.list(license_key_id=lk.id, page_number=0).items
        assert inst.id in [i.id for i in instances]
        assert c.license_key_instances.update(inst.id, name="work laptop").name == "work laptop"
        assert pub.licenses.deactivate(license_key=lk.key, license_key_instance_id=inst.id) is None
        assert c.license_keys.retrieve(lk.id).instances_count == 0
        assert c.license_keys.update(lk.id, disabled=True).status == "disabled"
        with pytest.raises(PermissionDeniedError):
            pub.licenses.activate(license_key=lk.key, name="laptop")
        assert pub.licenses.validate(license_key=lk.key).valid is False

    # 15. Unknown ids
    with pytest.raises(NotFoundError) as missing:
        c.customers.retrieve("cus_missing")
    assert missing.value.body == {"code": "NOT_FOUND", "message": "No such customer."}

    # 16. Every webhook received verifies with the endpoint's secret
    events = [c.webhooks.unwrap(body, headers=headers, key=secret) for headers, body in receiver.received]
    assert [e.type for e in events] == [
        "payment.succeeded", "subscription.active", "license_key.created",  # the first charge
        "subscription.on_hold",  # the declined renewal
        "payment.succeeded", "subscription.active"]  # the arrears
    assert {e.data.subscription_id for e in events if e.type.startswith("subscription.")} == {sub_id}
    assert json.loads(receiver.received[-1][1])["data"]["status"] == "active"


def test_the_sdk_reads_every_other_answer_strictly(app, server, receiver):
    """Add-ons, catalogue changes, plan changes, imports, instances and the webhook list: every
    answer the sequence above does not meet, through the SDK's strict models."""
    business = Business.create(name="Acme Software")
    c = DodoPayments(bearer_token=auth.create_api_key(business, "test")[1], base_url=server + "/api",
                     max_retries=0, _strict_response_validation=True)
    seat = c.addons.create(currency="EUR", name="Seat", price=500, tax_category="saas")
    assert c.addons.update(seat.id, price=700).price == 700
    assert [a.id for a in c.addons.list(page_number=0).items] == [seat.id]
    recurring = {"type": "recurring_price", "currency": "EUR", "price": 1500, "payment_frequency_count": 1,
                 "payment_frequency_interval": "Month", "subscription_period_count": 20,
                 "subscription_period_interval": "Year"}
    basic = c.products.create(name="Basic", tax_category="saas", price=recurring, addons=[seat.id])
    team = c.products.create(name="Team", tax_category="saas", price={**recurring, "price": 4500})
    book = c.products.create(name="Book", tax_category="e_book",
                             price={"type": "one_time_price", "currency": "EUR", "price": 900})
    assert c.products.update(book.product_id, description="A good read") is None
    assert c.products.archive(book.product_id) is None and c.products.unarchive(book.product_id) is None
    cust = c.customers.create(email="bob@example.com", name="Bob")
    with pytest.deprecated_call():
        sub_id = c.subscriptions.create(billing={"country": "FR"}, customer={"customer_id": cust.customer_id},
                                        product_id=basic.product_id, quantity=1,
                                        addons=[{"addon_id": seat.id, "quantity": 1}],
                                        payment_method_id="pm_card_visa").subscription_id
    preview = c.subscriptions.preview_change_plan(sub_id, product_id=team.product_id, quantity=1,
                                                  proration_billing_mode="prorated_immediately")
    assert preview.new_plan.product_id == team.product_id
    upgrade = c.subscriptions.change_plan(sub_id, product_id=team.product_id, quantity=1,
                                          proration_billing_mode="prorated_immediately")
    assert c.payments.retrieve(upgrade.payment_id).status == "succeeded"
    new_card = c.subscriptions.update_payment_method(sub_id, payment_method={"type": "new"})
    assert new_card.payment_link.startswith(server + "/sandbox/cards/new")
    cancelled = c.subscriptions.update(sub_id, status="cancelled", cancellation_feedback="unused")
    assert cancelled.status == "cancelled" and cancelled.cancelled_by.actor_type == "api_key"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        imported = c.license_keys.create(customer_id=cust.customer_id, product_id=book.product_id,
                                         key="BOOK-0001", activations_limit=None)
    assert imported.source == "import"
    pub = DodoPayments(bearer_token="ignored", base_url=server + "/api", max_retries=0,
                       _strict_response_validation=True)
    inst = pub.licenses.activate(license_key="BOOK-0001", name="e-reader")
    assert c.license_key_instances.retrieve(inst.id).license_key_id == imported.id
    method = c.customers.retrieve_payment_methods(cust.customer_id).items
    assert len(method) == 1  # the card the subscription was charged to
    hooks = [c.webhooks.create(url=f"{receiver.url}/{n}").id for n in range(3)]
    assert [w.id for w in c.webhooks.list(limit=2)] == hooks[::-1]  # the SDK follows the iterator
    assert c.webhooks.update(hooks[0], disabled=True).disabled is True
    assert c.webhooks.delete(hooks[0]) is None
    assert c.addons.delete(seat.id) is None and c.addons.retrieve(seat.id).id == seat.id


def test_the_sdk_refunds_a_payment_and_fetches_its_credit_note(app, server, receiver):
    """Dodo's ``refunds`` resource and ``invoices.payments.retrieve_refund``, read strictly, and
    the ``refund.succeeded`` webhook verified with the endpoint's secret."""
    business = Business.create(name="Acme Software")
    c = DodoPayments(bearer_token=auth.create_api_key(business, "test")[1], base_url=server + "/api",
                     max_retries=0, _strict_response_validation=True)
    hook = c.webhooks.create(url=receiver.url, filter_types=["refund.succeeded"])
    secret = c.webhooks.retrieve_secret(hook.id).secret
    p = c.products.create(name="Pro", tax_category="saas", price={
        "type": "recurring_price", "currency": "EUR", "price": 1500, "payment_frequency_count": 1,
        "payment_frequency_interval": "Month", "subscription_period_count": 1,
        "subscription_period_interval": "Year"})
    cust = c.customers.create(email="cleo@example.com", name="Cleo")
    with pytest.deprecated_call():
        sub_id = c.subscriptions.create(billing={"country": "FR"}, customer={"customer_id": cust.customer_id},
                                        product_id=p.product_id, quantity=1,
                                        payment_method_id="pm_card_visa").subscription_id
    [paid] = c.payments.list(subscription_id=sub_id, page_number=0).items
    part = c.refunds.create(payment_id=paid.payment_id, reason="Goodwill",
                            items=[{"item_id": p.product_id, "amount": 500}])
    assert part.is_partial and part.amount == 500 and part.customer.customer_id == cust.customer_id
    rest = c.refunds.create(payment_id=paid.payment_id)
    assert c.refunds.retrieve(rest.refund_id).status == "succeeded"
    assert [r.refund_id for r in c.refunds.list(customer_id=cust.customer_id, page_number=0).items] \
        == [rest.refund_id, part.refund_id]
    assert c.payments.retrieve(paid.payment_id).refund_status == "full"
    assert c.invoices.payments.retrieve_refund(part.refund_id).read()[:5] == b"%PDF-"
    events = [c.webhooks.unwrap(body, headers=headers, key=secret) for headers, body in receiver.received]
    assert [e.type for e in events] == ["refund.succeeded", "refund.succeeded"]
    assert {e.data.refund_id for e in events} == {part.refund_id, rest.refund_id}


def test_the_sdk_manages_discounts_and_subscribes_with_a_code(app, server):
    """Dodo's ``discounts`` resource, read strictly, and a subscription created with a code:
    its first payment discounted, the code refused for another product."""
    business = Business.create(name="Acme Software")
    c = DodoPayments(bearer_token=auth.create_api_key(business, "test")[1], base_url=server + "/api",
                     max_retries=0, _strict_response_validation=True)
    recurring = {"type": "recurring_price", "currency": "EUR", "price": 1500, "payment_frequency_count": 1,
                 "payment_frequency_interval": "Month", "subscription_period_count": 1,
                 "subscription_period_interval": "Year"}
    pro = c.products.create(name="Pro", tax_category="saas", price=recurring)
    team = c.products.create(name="Team", tax_category="saas", price={**recurring, "price": 4500})
    made = c.discounts.create(amount=2000, type="percentage", code="launch", name="Launch offer",
                              subscription_cycles=3, usage_limit=5, restricted_to=[pro.product_id])
    assert (made.code, made.amount, made.times_used, made.restricted_to) == ("LAUNCH", 2000, 0,
                                                                             [pro.product_id])
    assert c.discounts.retrieve(made.discount_id).subscription_cycles == 3
    assert c.discounts.retrieve_by_code("LAUNCH").discount_id == made.discount_id
    assert [d.discount_id for d in c.discounts.list(page_number=0).items] == [made.discount_id]
    assert c.discounts.update(made.discount_id, name="Launch").name == "Launch"
    cust = c.customers.create(email="eve@example.com", name="Eve")
    order = {"billing": {"country": "FR"}, "customer": {"customer_id": cust.customer_id},
             "quantity": 1, "payment_method_id": "pm_card_visa", "discount_code": "LAUNCH"}
    with pytest.deprecated_call():
        created = c.subscriptions.create(product_id=pro.product_id, **order)
    assert created.discount_id == made.discount_id
    sub = c.subscriptions.retrieve(created.subscription_id)
    assert (sub.discount_id, sub.discount_cycles_remaining) == (made.discount_id, 2)
    assert sub.discounts[0].code == "LAUNCH" and sub.discounts[0].cycles_remaining == 2
    assert c.subscriptions.list(page_number=0).items[0].discounts[0].discount_id == made.discount_id
    paid = c.payments.retrieve(created.payment_id)
    assert paid.total_amount == 1200 and paid.discount_id == made.discount_id
    assert c.discounts.retrieve(made.discount_id).times_used == 1
    with pytest.deprecated_call(), pytest.raises(UnprocessableEntityError) as refused:
        c.subscriptions.create(product_id=team.product_id, **order)
    assert refused.value.body["code"] == "DISCOUNT_NOT_APPLICABLE"
    c.discounts.delete(made.discount_id)
    with pytest.raises(NotFoundError):
        c.discounts.retrieve(made.discount_id)
    assert c.subscriptions.retrieve(created.subscription_id).discount_cycles_remaining == 2


def landing(link: str) -> str:
    """Where a portal link leads once used as a browser does (its page, then the POST)."""
    with httpx.Client() as browser:
        page = browser.get(link)
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
        return browser.post(link, data={"csrf_token": token[1]}).headers["location"]


def test_the_sdk_deep_links_into_each_portal_flow(app, server):
    """The portal session's ``flow`` and ``after_completion``, sent through the SDK's
    ``extra_body`` (and ``extra_query``), the portal's settings read and changed strictly."""
    business = Business.create(name="Acme Software")
    c = DodoPayments(bearer_token=auth.create_api_key(business, "test")[1], base_url=server + "/api",
                     max_retries=0, _strict_response_validation=True)
    recurring = {"type": "recurring_price", "currency": "EUR", "price": 1500, "payment_frequency_count": 1,
                 "payment_frequency_interval": "Month", "subscription_period_count": 1,
                 "subscription_period_interval": "Year"}
    pro = c.products.create(name="Pro", tax_category="saas", price=recurring)
    team = c.products.create(name="Team", tax_category="saas", price={**recurring, "price": 4500})
    cust = c.customers.create(email="dee@example.com", name="Dee")
    with pytest.deprecated_call():
        sub_id = c.subscriptions.create(billing={"country": "FR"}, customer={"customer_id": cust.customer_id},
                                        product_id=pro.product_id, quantity=1,
                                        payment_method_id="pm_card_visa").subscription_id
    portal = c.customers.customer_portal
    starts = {
        "payment_method_update": ({"subscription_id": sub_id},
                                  f"/portal/subscriptions/{sub_id}/payment-method"),
        "subscription_cancel": ({"subscription_id": sub_id}, f"/portal/subscriptions/{sub_id}/cancel"),
        "subscription_update": ({"subscription_id": sub_id}, f"/portal/subscriptions/{sub_id}/plan"),
        "subscription_update_confirm": ({"subscription_id": sub_id, "product_id": team.product_id,
                                         "quantity": 3},
                                        f"/portal/subscriptions/{sub_id}/plan/{team.product_id}?quantity=3"),
        "customer_update": ({}, "/portal/profile"),
    }
    for kind, (details, start) in starts.items():
        link = portal.create(cust.customer_id, return_url="https://acme.example/account", extra_body={
            "flow": {"type": kind, **details},
            "after_completion": {"type": "redirect", "url": "https://acme.example/done"}}).link
        assert landing(link) == start, kind
    link = portal.create(cust.customer_id, extra_query={
        "flow": {"type": "subscription_cancel", "subscription_id": sub_id}}).link
    assert landing(link) == f"/portal/subscriptions/{sub_id}/cancel"
    link = portal.create(cust.customer_id, extra_body={"flow": {"type": "payment_method_update"}}).link
    assert landing(link) == "/portal/payment-methods"  # no subscription: the saved methods

    configuration = c.get("/customer-portal/configuration", cast_to=httpx.Response).json()
    assert configuration["cancellation"]["enabled"] is True
    c.patch("/customer-portal/configuration", cast_to=httpx.Response,
            body={"cancellation": {"enabled": False}})
    with pytest.raises(ConflictError) as refused:
        portal.create(cust.customer_id, extra_body={"flow": {"type": "subscription_cancel",
                                                             "subscription_id": sub_id}})
    assert refused.value.body["code"] == "PORTAL_FEATURE_DISABLED"


def test_the_sdk_changes_plan_with_dodos_addons_and_effective_at(app, server):
    business = Business.create(name="Acme Software")
    c = DodoPayments(bearer_token=auth.create_api_key(business, "test")[1], base_url=server + "/api",
                     max_retries=0, _strict_response_validation=True)
    support = c.addons.create(currency="EUR", name="Priority support", price=2000, tax_category="saas")
    monthly = {"type": "recurring_price", "currency": "EUR", "price": 1500, "payment_frequency_count": 1,
               "payment_frequency_interval": "Month", "subscription_period_count": 20,
               "subscription_period_interval": "Year"}
    pro = c.products.create(name="Pro", tax_category="saas", price=monthly, addons=[support.id])
    yearly = c.products.create(name="Pro Yearly", tax_category="saas", addons=[support.id],
                               price={**monthly, "price": 15000, "payment_frequency_interval": "Year"})
    cust = c.customers.create(email="bob@example.com", name="Bob")
    with pytest.deprecated_call():
        created = c.subscriptions.create(billing={"country": "FR"},
                                         customer={"customer_id": cust.customer_id},
                                         product_id=pro.product_id, quantity=1,
                                         addons=[{"addon_id": support.id, "quantity": 1}],
                                         payment_method_id="pm_card_visa")
    assert created.recurring_pre_tax_amount == 3500
    preview = c.subscriptions.preview_change_plan(created.subscription_id, product_id=yearly.product_id,
                                                  quantity=1, proration_billing_mode="prorated_immediately")
    assert [(item.type, item.name) for item in preview.immediate_charge.line_items] == [
        ("subscription", "Pro Yearly"), ("addon", "Priority support")]  # a new cycle: each line
    later_on = c.subscriptions.change_plan(created.subscription_id, product_id=yearly.product_id,
                                           quantity=1, addons=[], effective_at="next_billing_date",
                                           proration_billing_mode="prorated_immediately")
    assert later_on.payment_id is None
    sub = c.subscriptions.retrieve(created.subscription_id)
    assert sub.scheduled_change.product_id == yearly.product_id and sub.scheduled_change.addons == []
    assert (sub.payment_frequency_interval, sub.recurring_pre_tax_amount) == ("Month", 3500)


def test_the_sdk_sends_an_idempotency_key_and_a_retried_order_is_made_once(app, server, receiver):
    """Through the SDK as Dodo's clients send one: ``extra_headers`` with the key (which the
    SDK repeats on its own retries), and the webhook endpoint's ``idempotency_key`` field."""
    business = Business.create(name="Acme Software")
    c = DodoPayments(bearer_token=auth.create_api_key(business, "test")[1], base_url=server + "/api",
                     max_retries=0, _strict_response_validation=True)
    p = c.products.create(name="Pro", tax_category="saas", price={
        "type": "recurring_price", "currency": "EUR", "price": 1500, "payment_frequency_count": 1,
        "payment_frequency_interval": "Month", "subscription_period_count": 1,
        "subscription_period_interval": "Year"})
    cust = c.customers.create(email="dana@example.com", name="Dana")
    order = {"billing": {"country": "FR"}, "customer": {"customer_id": cust.customer_id},
             "product_id": p.product_id, "quantity": 1, "payment_method_id": "pm_card_visa"}
    with pytest.deprecated_call():
        first = c.subscriptions.create(**order, extra_headers={"Idempotency-Key": "order-A-17"})
        again = c.subscriptions.create(**order, extra_headers={"Idempotency-Key": "order-A-17"})
        with pytest.raises(UnprocessableEntityError) as reused:
            c.subscriptions.create(**{**order, "quantity": 2},
                                   extra_headers={"Idempotency-Key": "order-A-17"})
    assert again.subscription_id == first.subscription_id and again.payment_id == first.payment_id
    assert reused.value.body["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert [s.subscription_id for s in c.subscriptions.list(page_number=0).items] == [first.subscription_id]
    assert len(c.payments.list(page_number=0).items) == 1
    hooks = {c.webhooks.create(url=receiver.url, idempotency_key="hook-1").id for _ in range(2)}
    assert len(hooks) == 1 and [w.id for w in c.webhooks.list()] == list(hooks)


def test_a_subscriptions_license_key_follows_it_through_the_sdk(app, server):
    """The key of a subscription whose product gives keys one day: valid after the renewal
    moved its expiry on, refused once the subscription is cancelled."""
    business = Business.create(name="Acme Software")
    c = DodoPayments(bearer_token=auth.create_api_key(business, "test")[1], base_url=server + "/api",
                     max_retries=0, _strict_response_validation=True)
    pub = DodoPayments(bearer_token="ignored", base_url=server + "/api", max_retries=0,
                       _strict_response_validation=True)
    p = c.products.create(name="Pro", tax_category="saas", price={
        "type": "recurring_price", "currency": "EUR", "price": 1500, "payment_frequency_count": 1,
        "payment_frequency_interval": "Month", "subscription_period_count": 1,
        "subscription_period_interval": "Year"}, license_key_enabled=True,
        license_key_duration={"count": 1, "interval": "Day"})
    cust = c.customers.create(email="erin@example.com", name="Erin")
    with pytest.deprecated_call():
        sub_id = c.subscriptions.create(billing={"country": "FR"}, customer={"customer_id": cust.customer_id},
                                        product_id=p.product_id, quantity=1,
                                        payment_method_id="pm_card_visa").subscription_id
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lk = c.license_keys.list(customer_id=cust.customer_id, page_number=0).items[0]
        sub = Subscription.get_by_id(sub_id)
        with time_machine.travel(sub.next_billing_date, tick=False):
            billing.sweep()  # the renewal, charged and paid
        renewed = c.license_keys.retrieve(lk.id)
        assert renewed.status == "active" and renewed.expires_at > lk.expires_at
        assert renewed.expires_at > Subscription.get_by_id(sub_id).next_billing_date
        assert pub.licenses.validate(license_key=lk.key).valid is True
        assert pub.licenses.activate(license_key=lk.key, name="laptop").name == "laptop"

        c.subscriptions.update(sub_id, status="cancelled")
        assert pub.licenses.validate(license_key=lk.key).valid is False
        with pytest.raises(PermissionDeniedError):
            pub.licenses.activate(license_key=lk.key, name="desktop")
        assert c.license_keys.retrieve(lk.id).status == "expired"


def test_the_sdk_starts_a_free_trial_and_reads_it_back(app, server):
    """A product's ``trial_period_days`` and the subscription's own override: active at once,
    nothing charged until the trial's end, then the first charge."""
    business = Business.create(name="Acme Software")
    c = DodoPayments(bearer_token=auth.create_api_key(business, "test")[1], base_url=server + "/api",
                     max_retries=0, _strict_response_validation=True)
    p = c.products.create(name="Pro", tax_category="saas", price={
        "type": "recurring_price", "currency": "EUR", "price": 1500, "payment_frequency_count": 1,
        "payment_frequency_interval": "Month", "subscription_period_count": 1,
        "subscription_period_interval": "Year", "trial_period_days": 14})
    assert c.products.retrieve(p.product_id).price.trial_period_days == 14
    cust = c.customers.create(email="fay@example.com", name="Fay")
    with pytest.deprecated_call():
        created = c.subscriptions.create(billing={"country": "FR"},
                                         customer={"customer_id": cust.customer_id},
                                         product_id=p.product_id, quantity=1,
                                         payment_method_id="pm_card_visa", trial_period_days=7)
    sub = c.subscriptions.retrieve(created.subscription_id)
    assert (sub.status, sub.trial_period_days) == ("active", 7)
    assert round((sub.next_billing_date - sub.created_at).total_seconds() / 86400) == 7
    assert created.payment_id == "" and c.payments.list(page_number=0).items == []
    listed = c.subscriptions.list(status="active", page_number=0).items
    assert [(s.subscription_id, s.trial_period_days) for s in listed] == [(sub.subscription_id, 7)]

    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()  # the trial's end: the first charge
    [first] = c.payments.list(subscription_id=sub.subscription_id, page_number=0).items
    assert (first.status, first.total_amount) == ("succeeded", 1500)
    assert c.subscriptions.retrieve(sub.subscription_id).next_billing_date > sub.next_billing_date
