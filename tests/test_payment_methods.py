"""Saved payment methods: the portal's page and the API's list and removal follow one set of
rules (the default, what each card pays for, no twins, no declined cards, never leaving a
subscription without a card)."""

import re
from urllib.parse import urlsplit

import pytest
from conftest import csrf_token, text

from core import auth, billing, payment_methods
from core.models import Payment, PaymentMethod, Subscription


def post(client, path, data=None, page="/portal/payment-methods"):
    token = csrf_token(client.get(page).text)
    return client.post(path, data={"csrf_token": token, **(data or {})})


@pytest.fixture
def ann(client, customer):
    path = urlsplit(auth.sign_in_link(customer)).path
    client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    return client


def live(customer):
    return list(PaymentMethod.select().where((PaymentMethod.customer == customer)
                                             & PaymentMethod.deleted_at.is_null()))


def add_card_through_the_form(client, number, expiry="12/40"):
    """Add a card as a customer does: the portal's button, the sandbox's card form, back."""
    answer = post(client, "/portal/payment-methods/new")
    form = answer.headers["Location"]
    page = client.get(form)
    answer = client.post(form, data={"csrf_token": csrf_token(page.text), "number": number,
                                     "expiry": expiry, "cvc": "123"})
    if answer.status_code != 303:
        return answer
    return client.get(answer.headers["Location"], follow_redirects=True)


def test_the_page_lists_each_card_with_expiry_default_and_what_it_pays_for(ann, customer, product,
                                                                          subscribe, save_card):
    sub, _ = subscribe(customer, product)
    spare = save_card(customer, "pm_card_mastercard")
    page = text(ann.get("/portal/payment-methods"))
    assert "Visa •••• 4242" in page and "Mastercard •••• 4444" in page
    assert "default" in page and "Pays for: Pro" in page and "Pays for no subscription" in page
    assert re.search(r"expires \d\d/\d\d", page)
    assert 'href="/portal/payment-methods"' in ann.get("/portal/").text
    assert spare.id in ann.get("/portal/payment-methods").text


def test_declined_cards_are_not_saved_and_the_same_card_twice_is_saved_once(ann, customer):
    for number in ("4000 0000 0000 0002", "4000 0000 0000 0069", "4000 0000 0000 9995"):
        refused = add_card_through_the_form(ann, number)
        assert refused.status_code == 200 and "The card is not saved" in refused.text
    first = add_card_through_the_form(ann, "4242 4242 4242 4242")
    assert "Card saved: Visa •••• 4242." in text(first)
    again = add_card_through_the_form(ann, "4242 4242 4242 4242")
    assert "Card saved: Visa •••• 4242." in text(again)
    [card] = live(customer)
    assert card.last4 == "4242" and card.is_default
    assert ann.get("/portal/payment-methods").text.count('<li class="row" id="method-') == 1


def test_the_same_card_with_another_expiry_is_another_card(ann, customer):
    add_card_through_the_form(ann, "4242 4242 4242 4242", "12/40")
    add_card_through_the_form(ann, "4242 4242 4242 4242", "11/41")
    assert sorted((m.exp_month, m.exp_year) for m in live(customer)) == [(11, 2041), (12, 2040)]


def test_removing_the_only_card_of_an_active_subscription_is_refused_with_the_reason(
        ann, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    answer = post(ann, f"/portal/payment-methods/{sub.payment_method_id}/remove")
    page = text(ann.get(answer.headers["Location"]))
    assert ("Visa •••• 4242 cannot be removed: it is the only payment method of your Pro "
            "subscription. Add another card first.") in page
    assert len(live(customer)) == 1


def test_removing_the_only_card_of_an_on_hold_subscription_is_refused(ann, customer, on_hold):
    sub = on_hold()
    for method in live(customer):
        if method.id != sub.payment_method_id:
            PaymentMethod.update(deleted_at=method.created_at).where(PaymentMethod.id == method.id).execute()
    answer = post(ann, f"/portal/payment-methods/{sub.payment_method_id}/remove")
    assert answer.status_code == 303
    page = text(ann.get(answer.headers["Location"]))
    assert ("cannot be removed: it is the only payment method of your "
            f"{sub.product.name} subscription. Add another card first.") in page
    assert [m.id for m in live(customer)] == [sub.payment_method_id]


def test_removing_a_card_moves_its_subscription_to_the_default(ann, customer, product, subscribe,
                                                             save_card):
    sub, _ = subscribe(customer, product)
    spare = save_card(customer, "pm_card_mastercard")
    post(ann, f"/portal/payment-methods/{spare.id}/default")
    assert spare.refresh().is_default
    assert sub.refresh().payment_method_id == spare.id  # it followed the default
    old = PaymentMethod.get(PaymentMethod.last4 == "4242")
    billing.update_payment_method(sub, old)
    answer = post(ann, f"/portal/payment-methods/{old.id}/remove")
    page = text(ann.get(answer.headers["Location"]))
    assert "Visa •••• 4242 is removed. Pro is now paid with Mastercard •••• 4444." in page
    assert sub.refresh().payment_method_id == spare.id and sub.status == "active"
    assert [m.id for m in live(customer)] == [spare.id]
    assert not Payment.select().where(Payment.kind != "new").exists()  # nothing was charged


def test_removing_a_card_that_pays_for_nothing_works(ann, customer, product, subscribe, save_card):
    subscribe(customer, product)
    spare = save_card(customer, "pm_card_mastercard")
    answer = post(ann, f"/portal/payment-methods/{spare.id}/remove")
    assert "Mastercard •••• 4444 is removed." in text(ann.get(answer.headers["Location"]))
    assert [m.last4 for m in live(customer)] == ["4242"]


def test_a_subscription_is_given_another_saved_card_from_the_page(ann, customer, product, subscribe,
                                                                 save_card):
    sub, _ = subscribe(customer, product)
    spare = save_card(customer, "pm_card_mastercard")
    answer = post(ann, f"/portal/subscriptions/{sub.id}/payment-method",
                  {"payment_method": spare.id, "back": "payment-methods"})
    assert answer.headers["Location"] == "/portal/payment-methods"
    assert sub.refresh().payment_method_id == spare.id


def test_another_customers_card_answers_404(ann, business, customer, save_card):
    from core.models import Customer

    bob = Customer.create(business=business, mode="test", email="bob@example.com")
    card = save_card(bob, "pm_card_visa")
    assert post(ann, f"/portal/payment-methods/{card.id}/remove").status_code == 404
    assert post(ann, f"/portal/payment-methods/{card.id}/default").status_code == 404


# --- The API -----------------------------------------------------------------------------------


def test_the_api_lists_the_default_first_with_the_subscriptions_each_pays_for(api, customer, product,
                                                                           subscribe, save_card):
    sub, _ = subscribe(customer, product)
    spare = save_card(customer, "pm_card_mastercard")
    items = api.get(f"/customers/{customer.id}/payment-methods").json["items"]
    assert [(i["card"]["last4_digits"], i["is_default"], i["subscription_ids"]) for i in items] == [
        ("4242", True, [sub.id]), ("4444", False, [])]
    assert items[0]["card"]["expiry_month"] == "12"
    assert spare.id == items[1]["payment_method_id"]


def test_the_api_refuses_to_delete_the_only_card_of_an_active_subscription(api, customer, product,
                                                                          subscribe):
    sub, _ = subscribe(customer, product)
    answer = api.delete(f"/customers/{customer.id}/payment-methods/{sub.payment_method_id}")
    assert answer.status_code == 409 and answer.json["code"] == "PAYMENT_METHOD_IN_USE"
    assert "only payment method of Pro" in answer.json["message"]
    assert len(live(customer)) == 1


def test_the_api_deletes_another_card_and_moves_what_it_paid_for(api, customer, product, subscribe,
                                                                save_card):
    sub, _ = subscribe(customer, product)
    spare = save_card(customer, "pm_card_mastercard")
    answer = api.delete(f"/customers/{customer.id}/payment-methods/{sub.payment_method_id}")
    assert answer.status_code == 200
    assert sub.refresh().payment_method_id == spare.id and spare.refresh().is_default
    assert api.delete(f"/customers/{customer.id}/payment-methods/{sub.payment_method_id}"
                      ).status_code == 404


def test_the_api_refuses_to_delete_a_card_with_a_charge_in_flight(api, customer, product, subscribe,
                                                                 save_card):
    sub, _ = subscribe(customer, product)
    save_card(customer, "pm_card_mastercard")
    Payment.create(business=customer.business_id, mode="test", customer=customer, subscription=sub,
                   payment_method=sub.payment_method_id, kind="renewal", amount=1800,
                   currency="EUR", idempotency_key="renewal:in-flight", status="processing")
    answer = api.delete(f"/customers/{customer.id}/payment-methods/{sub.payment_method_id}")
    assert answer.status_code == 409 and answer.json["code"] == "PREVIOUS_PAYMENT_PENDING"


def test_the_same_test_token_saved_twice_through_the_api_is_one_card(api, customer, product):
    for _ in range(2):
        answer = api.post("/subscriptions", {"billing": {"country": "FR"},
                                                 "customer": {"customer_id": customer.id},
                                                 "product_id": product.id, "quantity": 1,
                                                 "payment_method_id": "pm_card_visa"})
        assert answer.status_code == 200
    assert len(api.get(f"/customers/{customer.id}/payment-methods").json["items"]) == 1
    assert len({s.payment_method_id for s in Subscription.select()}) == 1


def test_a_new_subscription_without_a_payment_method_uses_the_default(api, customer, product,
                                                                      save_card):
    save_card(customer, "pm_card_visa")
    default = save_card(customer, "pm_card_mastercard")
    payment_methods.make_default(customer, default)
    answer = api.post("/subscriptions", {"billing": {"country": "FR"},
                                         "customer": {"customer_id": customer.id},
                                         "product_id": product.id, "quantity": 1})
    assert answer.status_code == 200
    assert Subscription.get_by_id(answer.json["subscription_id"]).payment_method_id == default.id


def test_a_new_subscription_without_any_payment_method_is_refused(api, customer, product):
    answer = api.post("/subscriptions", {"billing": {"country": "FR"},
                                         "customer": {"customer_id": customer.id},
                                         "product_id": product.id, "quantity": 1})
    assert answer.status_code == 422 and answer.json["code"] == "NO_ELIGIBLE_PAYMENT_METHODS"
