"""Billing details owned by the customer: address and tax ID, set through the API (or the
billing given with a first subscription) and the portal's profile, printed on every invoice
as they were at issue, country names in the customer's language."""

import pytest
from test_portal import pdf_text, post, sign_in, text

from core import billing
from core.models import Customer, Invoice

LYON = {"country": "FR", "city": "Lyon", "street": "3 quai Saint-Antoine", "zipcode": "69002"}


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app


def invoice_text(invoice) -> str:
    return pdf_text(billing.invoice_pdf(Invoice.get_by_id(invoice.id)))


def test_billing_given_with_a_new_customers_subscription_is_on_their_invoice(api, product):
    answer = api.post("/subscriptions", {
        "billing": LYON, "customer": {"email": "camille@example.com", "name": "Camille Martin"},
        "product_id": product.id, "quantity": 1, "payment_method_id": "pm_card_visa",
        "tax_id": "FR 40 303 265 045"})
    assert answer.status_code == 200

    customer = Customer.get(Customer.email == "camille@example.com")
    assert customer.billing_address == {**LYON, "state": None}
    assert customer.tax_id == "FR40303265045"
    printed = invoice_text(Invoice.get(Invoice.customer == customer))
    assert "3 quai saint-antoine" in printed and "69002 lyon" in printed and "france" in printed
    assert "fr40303265045" in printed


def test_billing_given_with_a_subscription_never_replaces_the_customers_own(api, customer, product):
    Customer.update(billing_address={"country": "DE", "city": "Berlin"}).where(
        Customer.id == customer.id).execute()
    api.post("/subscriptions", {"billing": LYON, "customer": {"customer_id": customer.id},
                                "product_id": product.id, "quantity": 1,
                                "payment_method_id": "pm_card_visa"})

    assert customer.refresh().billing_address == {"country": "DE", "city": "Berlin"}


def test_the_api_sets_and_clears_a_customers_billing_details(api):
    created = api.post("/customers", {"email": "lena@example.com", "name": "Lena",
                                      "billing_address": {"country": "DE", "city": " Berlin ",
                                                          "zipcode": "10115", "state": "Berlin"},
                                      "tax_id": "DE 136 695 976"})
    assert created.status_code == 200
    assert created.json["billing_address"] == {"country": "DE", "city": "Berlin", "zipcode": "10115",
                                               "state": None, "street": None}
    assert created.json["tax_id"] == "DE136695976"

    cleared = api.patch(f"/customers/{created.json['customer_id']}",
                        {"billing_address": None, "tax_id": None})
    assert (cleared.json["billing_address"], cleared.json["tax_id"]) == (None, None)


def test_the_api_refuses_a_tax_id_that_does_not_fit_its_country(api):
    answer = api.post("/customers", {"email": "lena@example.com", "name": "Lena",
                                     "billing_address": {"country": "FR"}, "tax_id": "FR123"})
    assert answer.status_code == 422
    assert answer.json["code"] == "INVALID_TAX_ID" and "FR123" in answer.json["message"]
    assert Customer.select().count() == 0


def test_a_tax_id_of_a_country_without_a_known_format_is_kept_as_typed(api):
    answer = api.post("/customers", {"email": "sam@example.com", "name": "Sam",
                                     "billing_address": {"country": "US"}, "tax_id": "12-3456789"})
    assert answer.json["tax_id"] == "12-3456789"


def test_an_invoice_keeps_the_billing_details_it_was_issued_with(customer, product, subscribe):
    Customer.update(billing_address=LYON, tax_id="FR40303265045").where(
        Customer.id == customer.id).execute()
    _, payment = subscribe(customer.refresh(), product)
    Customer.update(billing_address={"country": "BE", "city": "Liège"}, tax_id=None).where(
        Customer.id == customer.id).execute()

    printed = invoice_text(Invoice.get(Invoice.payment == payment))
    assert "69002 lyon" in printed and "fr40303265045" in printed and "liège" not in printed


def test_the_country_is_named_in_the_customers_language_on_the_invoice(customer, product, subscribe):
    Customer.update(billing_address={"country": "DE", "city": "Berlin", "zipcode": "10115"},
                    preferred_locale="fr").where(Customer.id == customer.id).execute()
    _, payment = subscribe(customer.refresh(), product)

    assert "allemagne" in invoice_text(Invoice.get(Invoice.payment == payment))


def test_the_profile_saves_billing_details_and_reads_the_phone_with_their_country(client, customer):
    sign_in(client, customer)
    answer = post(client, "/portal/profile", {
        "name": "Lena Schmidt", "locale": "en", "phone": "030 12345678", "country": "DE",
        "street": "Unter den Linden 1", "city": "Berlin", "zipcode": "10117", "state": "",
        "tax_id": "DE136695976"})
    assert answer.status_code == 303

    saved = customer.refresh()
    assert saved.billing_address == {"country": "DE", "street": "Unter den Linden 1",
                                     "city": "Berlin", "zipcode": "10117", "state": None}
    assert (saved.tax_id, saved.phone_number) == ("DE136695976", "+493012345678")


def test_a_german_phone_is_read_as_german_once_a_subscription_gave_the_address(api, client, product):
    api.post("/subscriptions", {"billing": {"country": "DE", "city": "Berlin"},
                                "customer": {"email": "lena@example.com", "name": "Lena"},
                                "product_id": product.id, "quantity": 1,
                                "payment_method_id": "pm_card_visa"})
    customer = Customer.get(Customer.email == "lena@example.com")
    sign_in(client, customer)
    post(client, "/portal/profile", {"name": "Lena", "locale": "en", "phone": "030 12345678",
                                     "country": "DE", "city": "Berlin"})

    assert customer.refresh().phone_number == "+493012345678"


def test_the_profile_refuses_a_postal_code_or_tax_id_that_cannot_be_right(client, customer):
    sign_in(client, customer)
    answer = post(client, "/portal/profile", {"name": "Ann", "locale": "en", "country": "DE",
                                              "city": "Berlin", "zipcode": "ABC"})
    assert answer.status_code == 400 and "This postal code does not fit Germany." in text(answer)
    answer = post(client, "/portal/profile", {"name": "Ann", "locale": "en", "country": "FR",
                                              "tax_id": "FR123"})
    assert answer.status_code == 400 and "This tax ID is not valid for France." in text(answer)
    assert customer.refresh().billing_address is None


def test_the_profile_names_countries_in_the_customers_language_and_shows_a_state_only_where_used(
        client, customer):
    Customer.update(preferred_locale="fr", billing_address={"country": "FR"}).where(
        Customer.id == customer.id).execute()
    sign_in(client, customer)
    page = client.get("/portal/profile").text

    assert '<option selected value="FR">France</option>' in page
    assert '<option value="DE">Allemagne</option>' in page
    assert 'data-address-field="state" hidden' in page
    assert 'data-address-field="postal">' in page
