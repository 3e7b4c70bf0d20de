"""Idempotent writes through the merchant API: a POST sent again with the same
``Idempotency-Key`` (a client retrying after a timeout) does its work once and gets the first
answer back; the key with another request is refused; concurrent requests make one object."""

import threading
from datetime import timedelta

import httpx
import pytest
import time_machine

from core import auth, billing
from core.models import Customer, IdempotencyKey, Payment, Subscription, WebhookEndpoint, utcnow
from plugins.sandbox import charges

PUBLIC_IP = "93.184.216.34"


def order(customer, product, **fields):
    """A subscription order as a merchant's server sends it: Ann, Pro, the test Visa."""
    return {"billing": {"country": "FR", "city": "Paris"}, "customer": {"customer_id": customer.id},
            "product_id": product.id, "quantity": 1, "payment_method_id": "pm_card_visa", **fields}


def with_key(key):
    return {"headers": {"Idempotency-Key": key}}


@pytest.fixture
def public_dns(dns):
    dns["hooks.acme.example"] = PUBLIC_IP
    return dns


def test_a_subscription_sent_twice_with_one_key_is_made_and_charged_once(api, customer, product):
    first = api.post("/subscriptions", order(customer, product), **with_key("order-A-17"))
    again = api.post("/subscriptions", order(customer, product), **with_key("order-A-17"))
    assert first.status_code == again.status_code == 200
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert Subscription.select().count() == 1 and Payment.select().count() == 1
    assert [charge.amount for charge in charges()] == [1800]


def test_the_same_body_in_another_key_order_is_the_same_request(api, customer, product):
    body = order(customer, product)
    first = api.post("/subscriptions", body, **with_key("k-1"))
    again = api.post("/subscriptions", dict(reversed(body.items())), **with_key("k-1"))
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert len(charges()) == 1


def test_the_key_with_another_body_is_refused_and_does_nothing(api, customer, product):
    api.post("/subscriptions", order(customer, product), **with_key("order-A-17"))
    other = api.post("/subscriptions", order(customer, product, quantity=2), **with_key("order-A-17"))
    assert other.status_code == 422 and other.json["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert "new key" in other.json["message"]
    elsewhere = api.post("/customers", {"email": "bob@example.com", "name": "Bob"},
                         **with_key("order-A-17"))
    assert elsewhere.status_code == 422 and elsewhere.json["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert Subscription.select().count() == 1 and len(charges()) == 1
    assert Customer.select().where(Customer.email == "bob@example.com").count() == 0


def test_without_a_key_each_request_does_its_work(api, customer, product):
    api.post("/subscriptions", order(customer, product))
    api.post("/subscriptions", order(customer, product))
    assert Subscription.select().count() == 2 and len(charges()) == 2


def test_keys_belong_to_one_business_and_mode(client, api, business, customer, product):
    api.post("/subscriptions", order(customer, product), **with_key("shared"))
    live = auth.create_api_key(business, "live")[1]
    answer = client.post("/api/customers", json={"email": "bob@example.com", "name": "Bob"},
                         headers={"Authorization": f"Bearer {live}", "Idempotency-Key": "shared"})
    assert answer.status_code == 200 and "Idempotent-Replayed" not in answer.headers
    assert Customer.get_by_id(answer.json["customer_id"]).mode == "live"
    assert IdempotencyKey.select().where(IdempotencyKey.key == "shared").count() == 2


def test_a_refused_request_frees_its_key_for_the_corrected_one(api, customer, product):
    refused = api.post("/subscriptions", order(customer, product, product_id="pdt_nothing"),
                       **with_key("order-B-2"))
    assert refused.status_code == 404
    corrected = api.post("/subscriptions", order(customer, product), **with_key("order-B-2"))
    assert corrected.status_code == 200 and "Idempotent-Replayed" not in corrected.headers
    assert Subscription.select().count() == 1 and len(charges()) == 1


def test_a_key_is_kept_24_hours_then_the_sweep_deletes_it(api, customer, product):
    first = api.post("/subscriptions", order(customer, product), **with_key("order-C-3"))
    with time_machine.travel(utcnow() + timedelta(hours=23, minutes=59), tick=False):
        again = api.post("/subscriptions", order(customer, product), **with_key("order-C-3"))
        assert again.json == first.json
    with time_machine.travel(utcnow() + timedelta(hours=24, seconds=1), tick=False):
        billing.sweep()
        assert IdempotencyKey.select().count() == 0
        later = api.post("/subscriptions", order(customer, product), **with_key("order-C-3"))
    assert later.json["subscription_id"] != first.json["subscription_id"]
    assert Subscription.select().count() == 2


def test_a_key_past_its_24_hours_is_free_before_any_sweep(api, customer, product):
    api.post("/subscriptions", order(customer, product), **with_key("order-D-4"))
    with time_machine.travel(utcnow() + timedelta(hours=24, seconds=1), tick=False):
        answer = api.post("/subscriptions", order(customer, product, quantity=2), **with_key("order-D-4"))
    assert answer.status_code == 200 and Subscription.select().count() == 2


def test_a_malformed_key_is_refused(api, customer, product):
    for key in ("", "x" * 256, "café"):
        answer = api.post("/subscriptions", order(customer, product),
                          headers={"Idempotency-Key": key.encode().decode("latin-1")})
        assert answer.status_code == 400 and answer.json["code"] == "INVALID_IDEMPOTENCY_KEY", key
    assert Subscription.select().count() == 0 and charges(status=None) == []


def test_a_plan_change_sent_twice_with_one_key_charges_once(api, customer, product, business,
                                                            subscribe):
    from core.models import Product

    sub, _ = subscribe(customer, product)
    team = Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)
    body = {"product_id": team.id, "quantity": 1, "proration_billing_mode": "prorated_immediately"}
    first = api.post(f"/subscriptions/{sub.id}/change-plan", body, **with_key("upgrade-1"))
    again = api.post(f"/subscriptions/{sub.id}/change-plan", body, **with_key("upgrade-1"))
    assert first.status_code == 200 and again.json == first.json
    assert Payment.select().where(Payment.kind == "plan_change").count() == 1


# --- Concurrency --------------------------------------------------------------------------------


def test_ten_concurrent_requests_with_one_key_make_one_subscription_and_one_charge(
        live_server, business, customer, product):
    """Ten retries of one order arrive at the same instant, over real HTTP: one subscription,
    one charge; each answer is that subscription or "still in progress, retry"."""
    key = auth.create_api_key(business, "test")[1]
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "order-E-5"}
    barrier = threading.Barrier(10)
    answers = []

    def merchant_server():
        with httpx.Client(base_url=live_server.url, timeout=30) as http:
            barrier.wait()
            answers.append(http.post("/api/subscriptions", json=order(customer, product),
                                     headers=headers))

    threads = [threading.Thread(target=merchant_server) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Subscription.select().count() == 1 and len(charges(status=None)) == 1
    made = Subscription.get().id
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["code"] == "IDEMPOTENCY_KEY_IN_USE"
            assert answer.headers["x-should-retry"] == "true" and answer.headers["Retry-After"] == "1"
        else:
            assert answer.status_code == 200 and answer.json()["subscription_id"] == made
    first_answers = [answer for answer in answers
                     if answer.status_code == 200 and "Idempotent-Replayed" not in answer.headers]
    assert len(answers) == 10 and len(first_answers) == 1
    retried = httpx.post(f"{live_server.url}/api/subscriptions", json=order(customer, product),
                         headers=headers)
    assert retried.status_code == 200 and retried.json()["subscription_id"] == made


# --- Webhook endpoints: Dodo's idempotency_key field ------------------------------------------


def test_a_webhook_endpoint_created_twice_with_one_idempotency_key_is_made_once(api, public_dns):
    body = {"url": "https://hooks.acme.example/dodo", "idempotency_key": "hook-1"}
    first = api.post("/webhooks", body)
    again = api.post("/webhooks", body)
    assert first.status_code == 200 and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert WebhookEndpoint.select().count() == 1


def test_the_webhook_idempotency_key_field_means_the_header(api, public_dns):
    body = {"url": "https://hooks.acme.example/dodo", "idempotency_key": "hook-2"}
    first = api.post("/webhooks", body, **with_key("hook-2"))
    other = api.post("/webhooks", {**body, "description": "Orders"})
    assert other.status_code == 422 and other.json["code"] == "IDEMPOTENCY_KEY_REUSED"
    both = api.post("/webhooks", body, **with_key("hook-3"))
    assert both.status_code == 422 and "differs from the Idempotency-Key header" in both.json["message"]
    assert WebhookEndpoint.select().count() == 1 and first.status_code == 200
