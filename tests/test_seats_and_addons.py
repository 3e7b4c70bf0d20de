"""Seats and add-ons in the portal: a customer changes the quantity of their plan within the
merchant's minimum and maximum, and adds or removes the plan's add-ons, each previewed before
it is confirmed; the amount shown is the amount charged and the invoice's, prorated now or at
the next renewal as the merchant's rule says; fewer seats or an add-on removed wait for the
renewal, like a downgrade."""

from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import time_machine
from conftest import csrf_token, text

from core import auth, billing, portal_settings
from core.models import Addon, Invoice, Payment, ProductAddon, Subscription
from plugins.sandbox import charges

START = datetime(2026, 3, 1, 10, tzinfo=UTC)  # a 31-day period: 1 March to 1 April
MID_PERIOD = datetime(2026, 3, 11, 10, tzinfo=UTC)  # 21 days of it left
RENEWAL = "April 1, 2026"


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def storage(business, product):
    """An add-on of the Pro plan (€3.00 a month before tax, like the plan's 20 % VAT)."""
    addon = Addon.create(business=business, mode="test", name="Extra storage", price=300,
                         currency="EUR")
    ProductAddon.create(product=product, addon=addon)
    return addon


def sign_in(client, customer):
    """``client`` signed in to the portal as ``customer``, now (the clock may have moved)."""
    path = urlsplit(auth.sign_in_link(customer)).path
    client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    return client


@pytest.fixture
def ann(client, customer):
    return sign_in(client, customer)


def post(client, path, data, page):
    """POST a portal form as the browser does from ``page``."""
    return client.post(path, data={"csrf_token": csrf_token(client.get(page).text), **data})


def euros(cents: int) -> str:
    return f"€{cents / 100:.2f}"


def prorated(net_per_period: int) -> int:
    """21 days of 31 of a net amount, plus 20 % VAT, each rounded half up to the cent: the
    rule the README states for a change charged now."""
    net = int(net_per_period * 21 / 31 + 0.5)
    return net + int(net * 0.2 + 0.5)


def test_two_to_three_seats_mid_period_charges_what_the_preview_shows_and_the_invoice_says_it(
        client, clock, customer, product, subscribe):
    sub, _ = subscribe(customer, product, quantity=2)
    clock.move_to(MID_PERIOD)
    ann = sign_in(client, customer)
    due = prorated(1500)  # one more seat of €15.00, for 21 days of 31
    path = f"/portal/subscriptions/{sub.id}/seats"
    preview = text(ann.get(f"{path}?quantity=3"))
    assert f"From 2 to 3. Quantity 3 Due now {euros(due)}" in preview
    assert f"Then €54.00 every month from {RENEWAL}" in preview
    assert f"we charge {euros(due)} to Visa •••• 4242" in preview

    answer = post(ann, path, {"quantity": "3"}, page=f"{path}?quantity=3")
    done = text(ann.get(answer.headers["Location"]))
    assert f"We charged {euros(due)} to Visa •••• 4242. You now have Pro × 3." in done
    payment = Payment.get(Payment.kind == "plan_change")
    assert payment.amount == due and payment.status == "succeeded"
    assert charges()[-1].amount == due
    invoice = Invoice.get(Invoice.payment == payment)
    assert invoice.total == due and sum(line["amount"] for line in invoice.lines) == invoice.subtotal
    assert f"Total {euros(due)}" in done
    assert "Pro × 3 (was Pro × 2), prorated until Apr 1, 2026 1 €10.16" in done  # net, then tax
    sub = sub.refresh()
    assert sub.quantity == 3 and sub.next_billing_date == datetime(2026, 4, 1, 10, tzinfo=UTC)
    assert "Next payment €54.00" in text(ann.get(f"/portal/subscriptions/{sub.id}"))


def test_an_add_on_added_mid_period_charges_what_the_preview_shows(client, clock, customer, product,
                                                                   storage, subscribe):
    sub, _ = subscribe(customer, product, quantity=2)
    clock.move_to(MID_PERIOD)
    ann = sign_in(client, customer)
    due = prorated(300)
    path = f"/portal/subscriptions/{sub.id}/addons"
    form = text(ann.get(path))
    assert "Extra storage €3.00 each every month plus tax" in form
    asked = {f"addon-{storage.id}": "1"}
    preview = text(ann.get(path, query_string=asked))
    assert f"Due now {euros(due)}" in preview and "Add-ons Extra storage × 1" in preview
    assert "Then €39.60 every month" in preview  # (2 × 15.00 + 3.00) + 20 %

    answer = post(ann, path, asked, page=f"{path}?addon-{storage.id}=1")
    paid = text(ann.get(answer.headers["Location"]))
    assert f"We charged {euros(due)}" in paid
    assert "You now have Pro × 2 with Extra storage × 1." in paid
    assert "Pro × 2 with Extra storage × 1 (was Pro × 2), prorated until Apr 1, 2026" in paid
    payment = Payment.get(Payment.kind == "plan_change")
    assert payment.amount == due == charges()[-1].amount
    assert Invoice.get(Invoice.payment == payment).total == due
    sub = sub.refresh()
    assert sub.quantity == 2
    assert [(a["addon_id"], a["quantity"], a["unit_amount"]) for a in sub.addons] == [
        (storage.id, 1, 300)]


def test_an_add_on_removed_takes_effect_at_the_next_renewal_which_charges_without_it(
        client, clock, customer, product, storage, subscribe):
    sub, _ = subscribe(customer, product, quantity=2, addons=[{"addon_id": storage.id, "quantity": 2}])
    clock.move_to(MID_PERIOD)
    ann = sign_in(client, customer)
    path = f"/portal/subscriptions/{sub.id}/addons"
    preview = text(ann.get(path, query_string={f"addon-{storage.id}": "0"}))
    assert "Due now €0.00" in preview and "Add-ons None" in preview
    assert f"Nothing to pay now: the change applies on {RENEWAL}" in preview

    answer = post(ann, path, {f"addon-{storage.id}": "0"}, page=f"{path}?addon-{storage.id}=0")
    page = text(ann.get(answer.headers["Location"]))
    assert f"Your subscription changes on {RENEWAL}, your next billing date." in page
    assert f"From {RENEWAL}, your next billing date: Pro × 2, add-ons: none." in page
    assert "Next payment €36.00" in page and "Extra storage × 2" in page  # until then
    assert Payment.select().count() == 1 and len(charges()) == 1

    clock.move_to(datetime(2026, 4, 1, 10, tzinfo=UTC))
    billing.sweep()
    renewal = Payment.get(Payment.kind == "renewal")
    assert renewal.amount == 3600 and charges()[-1].amount == 3600
    lines = Invoice.get(Invoice.payment == renewal).lines
    assert [(line["product_name"], line["quantity"]) for line in lines] == [("Pro", 2)]
    assert sub.refresh().addons == [] and sub.refresh().scheduled_change is None


def test_fewer_seats_wait_for_the_renewal(ann, customer, product, storage, subscribe):
    sub, _ = subscribe(customer, product, quantity=3, addons=[{"addon_id": storage.id, "quantity": 1}])
    path = f"/portal/subscriptions/{sub.id}/seats"
    post(ann, path, {"quantity": "2"}, page=f"{path}?quantity=2")
    sub = sub.refresh()
    assert sub.quantity == 3 and sub.scheduled_change["quantity"] == 2
    page = text(ann.get(f"/portal/subscriptions/{sub.id}"))
    assert "your next billing date: Pro × 2, add-ons: Extra storage × 1." in page
    assert "Next payment €39.60" in page  # (2 × 15.00 + 3.00) + 20 %
    assert len(charges()) == 1


def test_where_changes_are_charged_at_the_renewal_more_seats_wait_for_it_and_it_charges_them(
        client, clock, customer, product, subscribe):
    portal_settings.save(product.business_id, "test", {"plan_change": {"products": [
        {"product_id": product.id, "switch_to": [], "min_quantity": 1, "max_quantity": None,
         "proration": "next_billing_date"}]}})
    sub, _ = subscribe(customer, product, quantity=2)
    clock.move_to(MID_PERIOD)
    ann = sign_in(client, customer)
    path = f"/portal/subscriptions/{sub.id}/seats"
    preview = text(ann.get(f"{path}?quantity=3"))
    assert "Due now €0.00" in preview and f"Then €54.00 every month from {RENEWAL}" in preview
    post(ann, path, {"quantity": "3"}, page=f"{path}?quantity=3")
    page = text(ann.get(f"/portal/subscriptions/{sub.id}"))
    assert f"From {RENEWAL}, your next billing date: Pro × 3" in page and "Next payment €54.00" in page
    assert sub.refresh().quantity == 2 and len(charges()) == 1

    clock.move_to(datetime(2026, 4, 1, 10, tzinfo=UTC))
    billing.sweep()
    renewal = Payment.get(Payment.kind == "renewal")
    assert renewal.amount == 5400 == charges()[-1].amount
    assert Invoice.get(Invoice.payment == renewal).total == 5400
    assert sub.refresh().quantity == 3


def test_a_quantity_outside_the_merchants_minimum_and_maximum_is_refused_with_a_field_message(
        ann, customer, product, subscribe):
    portal_settings.save(product.business_id, "test", {"plan_change": {"products": [
        {"product_id": product.id, "switch_to": [], "min_quantity": 2, "max_quantity": 5,
         "proration": "prorated_immediately"}]}})
    sub, _ = subscribe(customer, product, quantity=2)
    path = f"/portal/subscriptions/{sub.id}/seats"
    assert "Choose from 2 to 5" in text(ann.get(path))
    many = ann.get(f"{path}?quantity=6")
    assert many.status_code == 400 and "Enter a quantity from 2 to 5." in text(many)
    few = post(ann, path, {"quantity": "1"}, page=path)
    assert few.status_code == 400 and "Enter a quantity from 2 to 5." in text(few)
    same = ann.get(f"{path}?quantity=2")
    assert same.status_code == 400 and "You have 2 now: choose another quantity." in text(same)
    assert sub.refresh().quantity == 2 and sub.refresh().scheduled_change is None


def test_an_add_on_quantity_that_is_not_a_number_is_refused_with_a_field_message(
        ann, customer, product, storage, subscribe):
    sub, _ = subscribe(customer, product)
    answer = ann.get(f"/portal/subscriptions/{sub.id}/addons", query_string={f"addon-{storage.id}": "-1"})
    assert answer.status_code == 400 and "Enter a quantity from 0 to 1000." in text(answer)


def test_a_plan_without_add_ons_has_no_add_ons_page(ann, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    assert ann.get(f"/portal/subscriptions/{sub.id}/addons").status_code == 404
    assert "/addons" not in ann.get(f"/portal/subscriptions/{sub.id}").text


def test_with_seat_changes_off_a_plan_change_keeps_the_quantity(ann, business, customer, product,
                                                                subscribe):
    from core.models import Product

    team = Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True)
    sub, _ = subscribe(customer, product, quantity=2)
    portal_settings.save(business.id, "test", {"quantity_change": {"enabled": False}})
    plans = ann.get(f"/portal/subscriptions/{sub.id}/plan").text
    assert 'type="hidden" name="quantity" value="2"' in plans and "/seats" not in plans
    path = f"/portal/subscriptions/{sub.id}/plan/{team.id}"
    assert ann.get(f"{path}?quantity=3").status_code == 404
    assert ann.get(f"{path}?quantity=2").status_code == 200


def test_the_api_changes_add_ons_and_an_empty_list_removes_them(api, customer, product, storage,
                                                                subscribe):
    sub, _ = subscribe(customer, product, quantity=2)
    added = api.post(f"/subscriptions/{sub.id}/change-plan", {
        "product_id": product.id, "quantity": 2, "proration_billing_mode": "prorated_immediately",
        "addons": [{"addon_id": storage.id, "quantity": 1}]})
    assert added.status_code == 200, added.json
    assert Subscription.get_by_id(sub.id).addons[0]["addon_id"] == storage.id
    removed = api.post(f"/subscriptions/{sub.id}/change-plan", {
        "product_id": product.id, "quantity": 2, "proration_billing_mode": "prorated_immediately",
        "addons": []})
    assert removed.status_code == 200, removed.json
    assert Subscription.get_by_id(sub.id).scheduled_change["price"]["addons"] == []


def test_with_plan_changes_off_the_add_ons_page_is_gone_and_refused(ann, api, customer, product,
                                                                     storage, subscribe):
    sub, _ = subscribe(customer, product)
    path = f"/portal/subscriptions/{sub.id}/addons"
    assert f'href="{path}"' in ann.get(f"/portal/subscriptions/{sub.id}").text
    api.patch("/customer-portal/configuration", {"plan_change": {"enabled": False}})
    assert ann.get(path).status_code == 404
    assert post(ann, path, {f"addon-{storage.id}": "1"}, page="/portal/profile").status_code == 404
    assert f'href="{path}"' not in ann.get(f"/portal/subscriptions/{sub.id}").text
    api.patch("/customer-portal/configuration", {"plan_change": {"enabled": True}})
    assert ann.get(path).status_code == 200


def test_a_second_change_waiting_for_the_renewal_is_built_on_the_first_and_says_it_replaces_it(
        client, clock, customer, product, storage, subscribe):
    portal_settings.save(product.business_id, "test", {"plan_change": {"products": [
        {"product_id": product.id, "switch_to": [], "min_quantity": 1, "max_quantity": None,
         "proration": "next_billing_date"}]}})
    sub, _ = subscribe(customer, product, quantity=2, addons=[{"addon_id": storage.id, "quantity": 1}])
    clock.move_to(MID_PERIOD)
    ann = sign_in(client, customer)
    addons = f"/portal/subscriptions/{sub.id}/addons"
    post(ann, addons, {f"addon-{storage.id}": "0"}, page=f"{addons}?addon-{storage.id}=0")
    assert 'value="0"' in ann.get(addons).text  # the form starts from the removal waiting

    seats = f"/portal/subscriptions/{sub.id}/seats"
    assert 'name="quantity" value="2"' in ann.get(seats).text
    preview = text(ann.get(f"{seats}?quantity=3"))
    assert f"This replaces the change planned for {RENEWAL}: Pro × 2 without add-ons." in preview
    assert "Add-ons None" in preview and f"Then €54.00 every month from {RENEWAL}" in preview
    post(ann, seats, {"quantity": "3"}, page=f"{seats}?quantity=3")
    page = text(ann.get(f"/portal/subscriptions/{sub.id}"))
    assert f"From {RENEWAL}, your next billing date: Pro × 3, add-ons: none." in page

    clock.move_to(datetime(2026, 4, 1, 10, tzinfo=UTC))
    billing.sweep()
    renewal = Payment.get(Payment.kind == "renewal")
    assert renewal.amount == 5400 == charges()[-1].amount  # 3 × €15.00 + 20 %, no add-on
    sub = sub.refresh()
    assert (sub.quantity, sub.addons, sub.scheduled_change) == (3, [], None)


def test_a_change_charged_now_says_it_replaces_the_change_waiting_for_the_renewal(
        ann, customer, product, storage, subscribe):
    sub, _ = subscribe(customer, product, quantity=3)
    seats = f"/portal/subscriptions/{sub.id}/seats"
    post(ann, seats, {"quantity": "2"}, page=f"{seats}?quantity=2")
    form = ann.get(seats)
    assert 'name="quantity" value="2"' in form.text and "You have 3, and 2 from" in text(form)
    same = ann.get(f"{seats}?quantity=2")
    assert same.status_code == 400 and "You will have 2 from" in text(same)

    addons = f"/portal/subscriptions/{sub.id}/addons"
    preview = text(ann.get(addons, query_string={f"addon-{storage.id}": "1"}))
    assert "This replaces the change planned for" in preview and ": Pro × 2." in preview
    assert "Quantity 2" in preview and "Add-ons Extra storage × 1" in preview


def test_with_the_billing_history_off_the_payment_page_says_what_was_charged_without_the_invoice(
        ann, api, customer, product, subscribe):
    sub, _ = subscribe(customer, product, quantity=2)
    api.patch("/customer-portal/configuration", {"billing_history": False})
    path = f"/portal/subscriptions/{sub.id}/seats"
    answer = post(ann, path, {"quantity": "3"}, page=f"{path}?quantity=3")
    paid = text(ann.get(answer.headers["Location"]))
    assert "We charged" in paid and "You now have Pro × 3." in paid
    assert "Invoice" not in paid and "Subtotal" not in paid


def test_through_the_api_a_change_without_add_ons_keeps_those_of_the_change_waiting_and_says_it_replaces_it(
        api, customer, product, storage, subscribe):
    sub, _ = subscribe(customer, product, quantity=2, addons=[{"addon_id": storage.id, "quantity": 1}])
    api.post(f"/subscriptions/{sub.id}/change-plan", {
        "product_id": product.id, "quantity": 2, "proration_billing_mode": "prorated_immediately",
        "addons": []})
    waiting = {"product_id": product.id, "quantity": 3, "proration_billing_mode": "prorated_immediately",
               "effective_at": "next_billing_date"}
    preview = api.post(f"/subscriptions/{sub.id}/change-plan/preview", waiting).json
    assert preview["replaces_scheduled_change"]["quantity"] == 2
    assert preview["replaces_scheduled_change"]["addons"] == [] and preview["new_plan"]["addons"] == []
    assert api.post(f"/subscriptions/{sub.id}/change-plan", waiting).status_code == 200
    change = Subscription.get_by_id(sub.id).scheduled_change
    assert change["quantity"] == 3 and change["price"]["addons"] == []
