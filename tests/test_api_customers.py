"""Customers through the merchant API: create, retrieve, list, update, and their saved cards."""

from datetime import timedelta

import time_machine

from core import auth
from core.models import Business, Customer, PaymentMethod, PortalSession, utcnow


def test_a_created_customer_comes_back_in_dodos_shape(api, business):
    answer = api.post("/customers", {"email": " Ann@Example.com ", "name": "Ann",
                                     "phone_number": "+15555550100", "preferred_locale": "fr",
                                     "metadata": {"plan": "gold", "seats": 3}})
    assert answer.status_code == 200
    created = answer.json
    assert created["email"] == "ann@example.com" and created["business_id"] == business.id
    assert created["metadata"] == {"plan": "gold", "seats": 3} and created["preferred_locale"] == "fr"
    assert api.get(f"/customers/{created['customer_id']}").json == created
    assert Customer.get_by_id(created["customer_id"]).mode == "test"


def test_a_second_customer_with_the_same_email_is_a_conflict_naming_the_first(api):
    first = api.post("/customers", {"email": "ann@example.com", "name": "Ann"}).json
    again = api.post("/customers", {"email": "ANN@example.com", "name": "Ann again"})
    assert again.status_code == 409 and again.headers["x-should-retry"] == "false"
    assert again.json == {"code": "CUSTOMER_ALREADY_EXISTS",
                          "message": f"A customer with this e-mail address already exists: "
                                     f"{first['customer_id']}."}


def test_the_same_email_is_a_new_customer_in_the_other_mode(api, client, business):
    api.post("/customers", {"email": "ann@example.com", "name": "Ann"})
    live = auth.create_api_key(business, "live")[1]
    answer = client.post("/api/customers", json={"email": "ann@example.com", "name": "Ann"},
                         headers={"Authorization": f"Bearer {live}"})
    assert answer.status_code == 200 and Customer.select().count() == 2


def test_invalid_fields_are_refused_with_each_named(api):
    answer = api.post("/customers", {"email": "not-an-email", "name": " ", "phone_number": "555"})
    assert answer.status_code == 422 and answer.json["code"] == "INVALID_REQUEST_BODY"
    for name in ("email", "name", "phone_number"):
        assert name in answer.json["message"]
    assert Customer.select().count() == 0


def test_an_update_changes_only_the_fields_sent_and_null_removes(api, customer):
    Customer.update(phone_number="+33612345678", preferred_locale="fr").execute()
    updated = api.patch(f"/customers/{customer.id}", {"name": "Ann B", "phone_number": None}).json
    assert updated["name"] == "Ann B" and updated["phone_number"] is None
    assert updated["preferred_locale"] == "fr" and updated["email"] == "ann@example.com"


def test_an_empty_update_changes_nothing(api, customer):
    answer = api("PATCH", f"/customers/{customer.id}", data=b"",
                 headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json["name"] == "Ann Example"


def test_a_name_or_email_cannot_be_removed(api, customer):
    answer = api.patch(f"/customers/{customer.id}", {"name": None})
    assert answer.status_code == 422 and "name" in answer.json["message"]


def test_a_new_email_ends_the_customers_portal_sessions(api, customer):
    session = auth.sign_in_with_token(auth.sign_in_link(customer).rsplit("/", 1)[1])
    api.patch(f"/customers/{customer.id}", {"email": "ann.b@example.com"})
    assert PortalSession.get_by_id(session.id).revoked_at is not None
    assert customer.refresh().email == "ann.b@example.com"


def test_an_email_taken_by_another_customer_is_a_conflict(api, business, customer):
    Customer.create(business=business, mode="test", email="bob@example.com", name="Bob")
    answer = api.patch(f"/customers/{customer.id}", {"email": "bob@example.com"})
    assert answer.status_code == 409 and customer.refresh().email == "ann@example.com"


def test_the_list_filters_by_email_part_of_the_name_and_creation_time(api, business):
    now = utcnow()
    with time_machine.travel(now - timedelta(days=3), tick=False):
        old = Customer.create(business=business, mode="test", email="ann@example.com", name="Ann Smith")
    new = Customer.create(business=business, mode="test", email="bob@example.com", name="Bob Jones")

    def ids(query):
        return [c["customer_id"] for c in api.get("/customers" + query).json["items"]]

    assert ids("") == [new.id, old.id]
    assert ids("?email=ANN@example.com") == [old.id]
    assert ids("?name=smi") == [old.id]
    assert ids("?created_at_gte=" + (now - timedelta(days=1)).isoformat().replace("+", "%2B")) == [new.id]
    assert ids("?created_at_lte=" + (now - timedelta(days=1)).isoformat().replace("+", "%2B")) == [old.id]


def test_another_business_customers_are_never_listed(api, customer):
    Customer.create(business=Business.create(name="Other"), mode="test", email="eve@example.com", name="Eve")
    assert [c["email"] for c in api.get("/customers").json["items"]] == ["ann@example.com"]


# --- Payment methods ---------------------------------------------------------------------------


def test_saved_cards_are_listed_with_brand_last_four_and_expiry(api, customer, save_card):
    card = save_card(customer, "pm_card_mastercard")
    [item] = api.get(f"/customers/{customer.id}/payment-methods").json["items"]
    assert item["payment_method_id"] == card.id and item["payment_method"] == "card"
    assert item["card"]["card_network"] == "mastercard" and item["card"]["last4_digits"] == "4444"
    assert item["card"]["expiry_month"] == "12" and item["card"]["expiry_year"] == str(card.exp_year)


def test_a_deleted_card_is_no_longer_listed(api, customer, save_card):
    card = save_card(customer)
    assert api.delete(f"/customers/{customer.id}/payment-methods/{card.id}").status_code == 200
    assert api.get(f"/customers/{customer.id}/payment-methods").json == {"items": []}
    assert PaymentMethod.get_by_id(card.id).deleted_at is not None
    assert api.delete(f"/customers/{customer.id}/payment-methods/{card.id}").status_code == 404


def test_a_card_a_subscription_charges_cannot_be_deleted(api, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    answer = api.delete(f"/customers/{customer.id}/payment-methods/{sub.payment_method_id}")
    assert answer.status_code == 409 and answer.json["code"] == "PAYMENT_METHOD_IN_USE"
    assert PaymentMethod.get_by_id(sub.payment_method_id).deleted_at is None


def test_another_customers_card_is_not_found(api, business, customer, save_card):
    bob = Customer.create(business=business, mode="test", email="bob@example.com", name="Bob")
    card = save_card(bob)
    assert api.delete(f"/customers/{customer.id}/payment-methods/{card.id}").status_code == 404
    assert PaymentMethod.get_by_id(card.id).deleted_at is None
