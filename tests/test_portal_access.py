"""The portal's two rules: a customer sees and touches only their own records (every other id
answers 404, like a missing one), and a page's query count does not grow with their data."""

import logging
from contextlib import contextmanager
from itertools import count
from urllib.parse import urlsplit

import pytest
from conftest import csrf_token

from core import auth, portal_settings
from core.models import (
    Addon,
    Business,
    Customer,
    Invoice,
    InvoicePdf,
    LicenseKey,
    LicenseKeyInstance,
    Payment,
    PaymentMethod,
    Product,
    ProductAddon,
    Refund,
    Subscription,
    new_id,
    utcnow,
)

numbers = count(1)




def sign_in(client, customer):
    path = urlsplit(auth.sign_in_link(customer)).path
    assert client.post(path, data={"csrf_token": csrf_token(client.get(path).text)}).status_code == 303


def plan(business, mode, name="Pro", price=1500):
    return Product.create(business=business, mode=mode, name=name, price=price, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000)


def records(customer, product, payments=1, keys=1) -> dict:
    """A customer's subscription, card, payments (each invoiced) and license keys, written
    directly (fast, and possible in live mode too); returns the ids the portal's URLs take."""
    common = {"business": customer.business_id, "mode": customer.mode, "customer": customer}
    card = PaymentMethod.create(**common, provider="sandbox", provider_token="pm_card_visa",
                                brand="visa", last4="4242", exp_month=12, exp_year=2040)
    sub = Subscription.create(**common, product=product, status="active", currency="EUR",
                              recurring_pre_tax_amount=product.price, payment_method=card)
    rows = [{"id": new_id("pay"), "business": customer.business_id, "mode": customer.mode,
             "customer": customer.id, "subscription": sub.id, "product": product.id,
             "payment_method": card.id, "kind": "renewal", "status": "succeeded", "amount": 1800,
             "tax": 300, "currency": "EUR", "description": product.name,
             "idempotency_key": new_id("ik"), "metadata": {}} for _ in range(payments)]
    Payment.insert_many(rows).execute()
    Invoice.insert_many([{
        "id": new_id("inv"), "business": customer.business_id, "mode": customer.mode,
        "customer": customer.id, "payment": row["id"], "number": next(numbers), "currency": "EUR",
        "lines": [{"amount": 1500, "description": "Pro", "quantity": 1, "unit_amount": 1500}],
        "subtotal": 1500, "tax": 300, "total": 1800, "seller": {}, "buyer": {},
        "payment_details": {}} for row in rows]).execute()
    InvoicePdf.insert_many([{"invoice": invoice.id, "locale": "en", "pdf": b"%PDF-1.7 test"}
                            for invoice in Invoice.select().where(Invoice.customer == customer)
                            ]).on_conflict_ignore().execute()
    refund = Refund.create(**common, payment=rows[0]["id"], amount=100, tax=17, currency="EUR",
                           status="succeeded", idempotency_key=new_id("ik"),
                           credit_note_number=next(numbers), issued_at=utcnow(),
                           credit_note={"invoice_number": "T-000001", "lines": [], "subtotal": 83,
                                        "tax": 17, "total": 100, "seller": {}, "buyer": {}},
                           pdf=b"%PDF-1.7 test")
    key_ids = []
    for n in range(keys):
        key = LicenseKey.create(**common, product=product, key=new_id("key"), activations_limit=3,
                                instances_count=1)
        instance = LicenseKeyInstance.create(license_key=key, name=f"Laptop {n}")
        key_ids.append((key.id, instance.id))
    return {"subscription_id": sub.id, "payment_id": rows[0]["id"],
            "invoice_id": Invoice.get(Invoice.payment == rows[0]["id"]).id,
            "key_id": key_ids[0][0], "instance_id": key_ids[0][1], "product_id": None,
            "payment_method": card.id, "payment_method_id": card.id, "refund_id": refund.id}


@pytest.fixture
def worlds(business, customer, product):
    """Ann's records, and those of Bob (same business and mode), Dana (same business, live
    mode) and Zed (another business); ``product_id`` is a plan each may change to. Both
    businesses let their customers pause, so that every portal page is there."""
    for mode in ("test", "live"):
        portal_settings.save(business.id, mode, {"pause": {"enabled": True}})
    seats = Addon.create(business=business, mode="test", name="Extra storage", price=300,
                         currency="EUR")
    ProductAddon.create(product=product, addon=seats)  # so that its add-ons page is there
    ann = records(customer, product)
    ann["product_id"] = plan(business, "test", "Team", 4500).id
    bob = records(Customer.create(business=business, mode="test", email="bob@example.com"), product)
    live_plan = plan(business, "live")
    dana = records(Customer.create(business=business, mode="live", email="ann@example.com"), live_plan)
    dana["product_id"] = plan(business, "live", "Team", 4500).id
    other = Business.create(name="Other Shop")
    portal_settings.save(other.id, "test", {"pause": {"enabled": True}})
    zed = records(Customer.create(business=other, mode="test", email="ann@example.com"),
                  plan(other, "test"))
    zed["product_id"] = plan(other, "test", "Team", 4500).id
    missing = {name: f"{name.split('_')[0][:3]}_missing" for name in ann if name != "payment_method"}
    return ann, {"same business": bob, "live mode": dana, "other business": zed, "missing": missing}


def portal_rules(app):
    return [rule for rule in app.url_map.iter_rules()
            if rule.endpoint.startswith("portal.") and rule.arguments]


def test_every_portal_url_with_another_customers_id_answers_404_like_a_missing_one(
        app, client, customer, worlds):
    ann, others = worlds
    sign_in(client, customer)
    token = csrf_token(client.get("/portal/profile").text)
    rules = portal_rules(app)
    assert len(rules) >= 12
    checked = 0
    for rule in rules:
        query = f"?payment_method={ann['payment_method']}" if rule.endpoint == "portal.card_added" else ""
        path = rule.build(ann, append_unknown=False)[1] + query
        if "GET" in rule.methods:
            assert client.get(path).status_code < 400, path
        for argument in rule.arguments:
            for world, ids in others.items():
                if ids.get(argument) in (None, ann[argument]):
                    continue
                path = rule.build({**ann, argument: ids[argument]}, append_unknown=False)[1] + query
                for method in {"GET", "POST"} & rule.methods:
                    answer = client.open(path, method=method, data={"csrf_token": token})
                    assert answer.status_code == 404, (method, path, world)
                    checked += 1
    assert checked >= 60
    assert Subscription.get_by_id(others["same business"]["subscription_id"]).status == "active"
    assert LicenseKeyInstance.select().count() == 4


@contextmanager
def counting_queries():
    """Count the SQL statements peewee sends while the block runs."""
    statements = []

    class Counter(logging.Handler):
        def emit(self, record):
            statements.append(record.getMessage())

    logger, handler = logging.getLogger("peewee"), Counter(logging.DEBUG)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield statements
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


PAGES = ["/portal/", "/portal/billing", "/portal/subscriptions",
         "/portal/subscriptions/{subscription_id}", "/portal/subscriptions/{subscription_id}/plan",
         "/portal/subscriptions/{subscription_id}/cancel",
         "/portal/subscriptions/{subscription_id}/payment-method",
         "/portal/subscriptions/{subscription_id}/plan/{product_id}",
         "/portal/payments/{payment_id}", "/portal/licenses", "/portal/profile"]


def queries_per_page(app, customer, ids) -> dict:
    client = app.test_client()
    sign_in(client, customer)
    found = {}
    for page in PAGES:
        path = page.format(**ids)
        assert client.get(path).status_code == 200, path
        with counting_queries() as statements:
            assert client.get(path).status_code == 200, path
        found[page] = len(statements)
    return found


def test_no_page_makes_more_queries_for_a_customer_with_more_data(app, business, customer, product):
    team = plan(business, "test", "Team", 4500).id
    few = records(customer, product, payments=5, keys=5)
    many_customer = Customer.create(business=business, mode="test", email="many@example.com")
    many = records(many_customer, product, payments=500, keys=50)
    small = queries_per_page(app, customer, {**few, "product_id": team})
    large = queries_per_page(app, many_customer, {**many, "product_id": team})
    assert small == large
    assert max(small.values()) <= 8, small
