"""Tenancy: a key reaches its own business and mode only. With another business's key, or the
same business's key of the other mode, every operation of the route table answers exactly as
for an id that does not exist, changes nothing, and lists show none of the records."""

import pytest

from core import auth, billing, licensing
from core.api import ROUTES
from core.endpoints import new_secret
from core.models import (
    MODELS,
    Addon,
    ApiKey,
    AuditLog,
    Business,
    Customer,
    Discount,
    LicenseKey,
    Product,
    ProductAddon,
    WebhookEndpoint,
)

# Which record a path parameter names, by the path's first segment where the name is "id"
RECORDS = {"customer_id": "customer", "payment_method_id": "payment_method", "payment_id": "payment",
           "subscription_id": "subscription", "webhook_id": "webhook", "refund_id": "refund",
           "discount_id": "discount", "code": "discount_code",
           ("products", "id"): "product", ("addons", "id"): "addon",
           ("license_keys", "id"): "license_key", ("license_key_instances", "id"): "instance"}


def valid_bodies(records) -> dict:
    """A well-formed body for each operation that takes one, so only the ids can fail."""
    return {
        "update_customer": {"name": "Mallory"},
        "update_product": {"name": "Stolen"},
        "update_addon": {"name": "Stolen"},
        "update_subscription": {"cancel_at_next_billing_date": True},
        "change_plan": {"product_id": records["product"], "quantity": 2,
                        "proration_billing_mode": "prorated_immediately"},
        "preview_change_plan": {"product_id": records["product"], "quantity": 2,
                                "proration_billing_mode": "prorated_immediately"},
        "update_payment_method": {"type": "existing", "payment_method_id": records["payment_method"]},
        "update_license_key": {"disabled": True},
        "update_license_key_instance": {"name": "stolen"},
        "update_webhook": {"description": "stolen"},
        "update_discount": {"name": "stolen"},
    }


@pytest.fixture
def app(make_app):
    """The app, with a rate limit the matrix's hundreds of calls stay under."""
    app = make_app({"API_RATE_LIMIT": "10000 per second"})
    with app.app_context():
        yield app


@pytest.fixture
def records(business, customer, subscribe, save_card):
    """Business A's test-mode records: one of everything the API reaches."""
    product = Product.create(business=business, mode="test", name="Desktop", price=4900, currency="EUR",
                             is_recurring=True, license_key_enabled=True, license_key_activations_limit=3)
    addon = Addon.create(business=business, mode="test", name="Seat", price=500, currency="EUR")
    ProductAddon.create(product=product, addon=addon)
    sub, payment = subscribe(customer, product)
    key = LicenseKey.get(LicenseKey.customer == customer)
    instance = licensing.activate(key.key, "laptop")
    endpoint = WebhookEndpoint.create(business=business, mode="test", url="https://acme.example/hooks",
                                      secret=new_secret())
    refund = billing.refund_payment(payment, 100)
    discount = Discount.create(business=business, mode="test", code="SPRING", type="flat", amount=100)
    return {"discount": discount.id, "discount_code": discount.code, "customer": customer.id,
            "payment_method": save_card(customer).id, "payment": payment.id,
            "refund": refund.id,
            "subscription": sub.id, "webhook": endpoint.id, "product": product.id, "addon": addon.id,
            "license_key": key.id, "instance": instance.id}


@pytest.fixture
def keys(business):
    """The owner's key, and the keys that must find nothing of its records."""
    other = Business.create(name="Other Shop")
    Customer.create(business=other, mode="test", email="bob@example.com", name="Bob")
    return {"owner": auth.create_api_key(business, "test")[1],
            "same business, live mode": auth.create_api_key(business, "live")[1],
            "other business, test mode": auth.create_api_key(other, "test")[1],
            "other business, live mode": auth.create_api_key(other, "live")[1]}


def snapshot() -> dict:
    """Every row the API could change (not the keys' last use, nor the audit log)."""
    def row(values):
        return repr(tuple(bytes(v) if isinstance(v, memoryview) else v for v in values))

    return {model.__name__: sorted(map(row, model.select().tuples())) for model in MODELS
            if model not in (ApiKey, AuditLog)}


def call(client, key, method, path, body=None):
    return client.open("/api" + path, method=method, json=body,
                       headers={"Authorization": f"Bearer {key}"})


def fill(path: str, ids: dict) -> str:
    """``path`` with each parameter replaced by the id of the record it names."""
    first = path.strip("/").split("/")[0]
    for name in [part[1:-1] for part in path.split("/") if part.startswith("{")]:
        path = path.replace("{" + name + "}", ids[RECORDS.get(name) or RECORDS[(first, "id")]])
    return path


OPERATIONS = [spec for spec in ROUTES if spec.path_params and not spec.public]


@pytest.mark.parametrize("stranger", ["same business, live mode", "other business, test mode",
                                      "other business, live mode"])
def test_no_operation_reaches_another_tenants_records(client, records, keys, stranger):
    bodies = valid_bodies(records)
    missing = {name: f"{value[:4]}missing000000000000000" for name, value in records.items()}
    before = snapshot()
    for spec in OPERATIONS:
        body = bodies.get(spec.operation_id)
        theirs = call(client, keys[stranger], spec.method, fill(spec.path, records), body)
        absent = call(client, keys[stranger], spec.method, fill(spec.path, missing), body)
        assert theirs.status_code == 404, (spec.method, spec.path, theirs.json)
        assert theirs.data == absent.data, (spec.method, spec.path)
        assert theirs.json["code"] == "NOT_FOUND"
    assert snapshot() == before


def test_the_owner_reaches_every_record_the_matrix_uses(client, records, keys):
    for spec in OPERATIONS:
        if spec.method == "GET":
            answer = call(client, keys["owner"], "GET", fill(spec.path, records))
            assert answer.status_code == 200, (spec.path, answer.data[:200])


@pytest.mark.parametrize("stranger", ["same business, live mode", "other business, test mode"])
def test_ids_in_a_body_do_not_reach_another_tenants_records(client, records, keys, stranger):
    before = snapshot()
    subscribe = call(client, keys[stranger], "POST", "/subscriptions", {
        "billing": {"country": "FR"}, "customer": {"customer_id": records["customer"]},
        "product_id": records["product"], "quantity": 1, "payment_method_id": records["payment_method"]})
    assert subscribe.status_code == 404 and subscribe.json == {"code": "NOT_FOUND",
                                                               "message": "No such customer."}
    license_key = call(client, keys[stranger], "POST", "/license_keys", {
        "customer_id": records["customer"], "product_id": records["product"], "key": "AAAA-BBBB"})
    assert license_key.status_code == 404
    product = call(client, keys[stranger], "POST", "/products", {
        "name": "Bundle", "tax_category": "saas", "addons": [records["addon"]],
        "price": {"type": "one_time_price", "currency": "EUR", "price": 100}})
    assert product.status_code == 404 and product.json["message"] == f"No such add-on: {records['addon']}."
    assert snapshot() == before


LISTS = ["/customers", "/products", "/addons", "/subscriptions", "/payments", "/license_keys",
         "/license_key_instances", "/discounts"]


@pytest.mark.parametrize("stranger", ["same business, live mode", "other business, test mode",
                                      "other business, live mode"])
def test_lists_show_none_of_another_tenants_records(client, records, keys, stranger):
    mine = set(records.values())
    for path in LISTS:
        for query in ("", f"customer_id={records['customer']}&", f"license_key_id={records['license_key']}&"):
            answer = call(client, keys[stranger], "GET", f"{path}?{query}page_size=100")
            assert answer.status_code == 200, path
            assert not {value for item in answer.json["items"] for value in item.values()
                        if isinstance(value, str)} & mine, path
    webhooks = call(client, keys[stranger], "GET", "/webhooks?limit=100").json
    assert webhooks["data"] == [] and webhooks["done"] is True


def test_lists_show_the_owner_its_records(client, records, keys):
    for path in LISTS:
        assert call(client, keys["owner"], "GET", path).json["items"], path
    assert [w["id"] for w in call(client, keys["owner"], "GET", "/webhooks").json["data"]] == [
        records["webhook"]]
