"""The catalogue through the merchant API: products with one-time or recurring prices, and
add-ons; deleting archives."""

from core.models import Addon, Product, ProductAddon

MONTHLY = {"type": "recurring_price", "currency": "EUR", "price": 1500, "payment_frequency_count": 1,
           "payment_frequency_interval": "Month", "subscription_period_count": 20,
           "subscription_period_interval": "Year", "tax_inclusive": True}
ONCE = {"type": "one_time_price", "currency": "EUR", "price": 4900}


def create(api, **fields):
    return api.post("/products", {"name": "Pro", "tax_category": "saas", "price": MONTHLY, **fields})


def test_a_recurring_product_keeps_its_billing_cycle_and_term(api, business):
    product = create(api, tax_rate_bps=2000, description="Everything", license_key_enabled=True,
                     license_key_activations_limit=3,
                     license_key_duration={"count": 1, "interval": "Year"}).json
    assert product["is_recurring"] and product["brand_id"] == business.id
    assert product["price"] == {**MONTHLY, "discount": 0, "discount_bps": None,
                                "purchasing_power_parity": False, "trial_period_days": 0,
                                "trial_payment_method_optional": False}
    assert product["license_key_duration"] == {"count": 1, "interval": "Year"}
    row = Product.get_by_id(product["product_id"])
    assert (row.price, row.tax_rate_bps, row.subscription_period_count) == (1500, 2000, 20)
    assert api.get(f"/products/{row.id}").json == product


def test_a_one_time_product_is_not_recurring(api):
    product = create(api, price=ONCE).json
    assert not product["is_recurring"] and product["price"]["type"] == "one_time_price"


def test_unsupported_pricing_is_refused_not_ignored(api):
    for price in ({**ONCE, "discount": 10}, {**ONCE, "pay_what_you_want": True},
                  {**MONTHLY, "trial_amount": 100}, {**MONTHLY, "trial_period_days": 10001},
                  {**ONCE, "type": "usage_based_price"}):
        answer = create(api, price=price)
        assert answer.status_code == 422, price
    assert Product.select().count() == 0


def test_the_list_flattens_the_price_and_filters_by_kind(api):
    monthly = create(api).json
    once = create(api, name="Book", price=ONCE).json
    items = api.get("/products").json["items"]
    assert [p["product_id"] for p in items] == [once["product_id"], monthly["product_id"]]
    assert items[1]["price"] == 1500 and items[1]["currency"] == "EUR"
    assert items[1]["price_detail"]["type"] == "recurring_price"
    assert [p["product_id"] for p in api.get("/products?recurring=true").json["items"]] == [
        monthly["product_id"]]
    assert [p["product_id"] for p in api.get("/products?recurring=false").json["items"]] == [
        once["product_id"]]


def test_an_update_changes_only_what_is_sent(api):
    product = create(api, description="Everything").json
    answer = api.patch(f"/products/{product['product_id']}", {"name": "Pro 2", "description": None})
    assert answer.status_code == 200 and answer.data == b""
    after = api.get(f"/products/{product['product_id']}").json
    assert (after["name"], after["description"], after["price"]) == ("Pro 2", None, product["price"])


def test_a_product_with_subscriptions_keeps_its_kind_of_price(api, customer, product, subscribe):
    subscribe(customer, product)
    answer = api.patch(f"/products/{product.id}", {"price": ONCE})
    assert answer.status_code == 409 and answer.json["code"] == "PRODUCT_HAS_SUBSCRIPTIONS"
    assert api.patch(f"/products/{product.id}", {"price": {**MONTHLY, "price": 1900}}).status_code == 200
    assert product.refresh().price == 1900


def test_an_archived_product_leaves_the_list_and_can_come_back(api):
    product_id = create(api).json["product_id"]
    assert api.delete(f"/products/{product_id}").status_code == 200
    assert api.get("/products").json["items"] == []
    assert [p["product_id"] for p in api.get("/products?archived=true").json["items"]] == [product_id]
    assert api.get(f"/products/{product_id}").json["archived"] is True
    assert api.post(f"/products/{product_id}/unarchive").status_code == 200
    assert [p["product_id"] for p in api.get("/products").json["items"]] == [product_id]


def test_an_archived_product_cannot_be_subscribed_to(api, customer, product):
    api.delete(f"/products/{product.id}")
    answer = api.post("/subscriptions", {"billing": {"country": "FR"},
                                         "customer": {"customer_id": customer.id},
                                         "product_id": product.id, "quantity": 1,
                                         "payment_method_id": "pm_card_visa"})
    assert answer.status_code == 409 and answer.json["code"] == "PRODUCT_IS_DELETED"


# --- Add-ons ------------------------------------------------------------------------------------


def test_add_ons_are_created_updated_listed_and_archived(api):
    addon = api.post("/addons", {"name": "Seat", "price": 500, "currency": "EUR",
                                 "tax_category": "saas"}).json
    assert (addon["name"], addon["price"], addon["currency"]) == ("Seat", 500, "EUR")
    updated = api.patch(f"/addons/{addon['id']}", {"price": 700, "description": "One more user"}).json
    assert (updated["price"], updated["description"], updated["name"]) == (700, "One more user", "Seat")
    assert [a["id"] for a in api.get("/addons").json["items"]] == [addon["id"]]
    api.delete(f"/addons/{addon['id']}")
    assert api.get("/addons").json["items"] == [] and Addon.get_by_id(addon["id"]).archived
    api.post(f"/addons/{addon['id']}/unarchive")
    assert api.get(f"/addons/{addon['id']}").json["archived"] is False


def test_a_product_offers_add_ons_of_its_currency(api):
    eur = api.post("/addons", {"name": "Seat", "price": 500, "currency": "EUR", "tax_category": "saas"}).json
    usd = api.post("/addons", {"name": "Seat", "price": 500, "currency": "USD", "tax_category": "saas"}).json
    product = create(api, addons=[eur["id"]]).json
    assert product["addons"] == [eur["id"]]
    assert [link.addon_id for link in ProductAddon.select()] == [eur["id"]]
    refused = api.patch(f"/products/{product['product_id']}", {"addons": [usd["id"]]})
    assert refused.status_code == 409 and "USD" in refused.json["message"]
    api.patch(f"/products/{product['product_id']}", {"addons": []})
    assert api.get(f"/products/{product['product_id']}").json["addons"] == []
