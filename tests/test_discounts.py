"""Discounts: Dodo's ``discounts`` resource through the API, and what a discount does to a
subscription's charges, invoices, portal page and renewal reminders."""

from datetime import timedelta

import pytest
import time_machine
from conftest import text
from test_dashboard import post as dashboard_post
from test_dashboard import sign_in as dashboard_sign_in
from test_portal import pdf_text, sign_in

from core import auth, billing
from core.billing import BillingError
from core.models import Discount, Event, Invoice, Payment, Product, Subscription, utcnow
from plugins.sandbox import charges


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app


def discount(business, code="SAVE20", **fields):
    fields = {"type": "percentage", "amount": 2000, **fields}
    return Discount.create(business=business, mode="test", code=code, **fields)


def renew(sub):
    """Let the subscription's next billing date come, and the sweep renew it."""
    sub = sub.refresh()
    with time_machine.travel(sub.next_billing_date, tick=False):
        billing.sweep()
    return sub.refresh()


def lines_of(payment):
    return Invoice.get(Invoice.payment == payment).lines


def subscribe_api(api, customer, product, **fields):
    return api.post("/subscriptions", {"billing": {"country": "FR"},
                                       "customer": {"customer_id": customer.id},
                                       "product_id": product.id, "quantity": 1,
                                       "payment_method_id": "pm_card_visa", **fields})


# --- The rules, on the billing core ----------------------------------------------------------


def test_a_20_percent_discount_for_3_cycles_is_on_invoices_1_to_3_and_not_the_4th(
        business, customer, product, subscribe):
    code = discount(business, subscription_cycles=3)
    sub, first = subscribe(customer, product, discount=code)
    for _ in range(3):
        sub = renew(sub)
    payments = list(Payment.select().where(Payment.subscription == sub).order_by(Payment.created_at))
    assert [p.status for p in payments] == ["succeeded"] * 4
    # 15.00 less 20 % is 12.00, plus 20 % VAT on what is left: 14.40; then 18.00 in full
    assert [p.amount for p in payments] == [1440, 1440, 1440, 1800]
    assert [p.tax for p in payments] == [240, 240, 240, 300]
    for payment in payments[:3]:
        assert [(line["kind"], line["amount"]) for line in lines_of(payment)][-1] == ("discount", -300)
    assert "discount" not in [line["kind"] for line in lines_of(payments[3])]
    assert sub.discount_cycles_remaining == 0


def test_a_discount_without_cycles_applies_to_every_renewal(business, customer, product, subscribe):
    sub, _ = subscribe(customer, product, discount=discount(business))
    for _ in range(4):
        sub = renew(sub)
    assert {p.amount for p in Payment.select()} == {1440}
    assert sub.discount_cycles_remaining is None


def test_a_flat_discount_takes_its_amount_off_before_tax(business, customer, product, subscribe):
    _, payment = subscribe(customer, product, discount=discount(business, type="flat", amount=500))
    assert (payment.amount, payment.tax) == (1200, 200)  # (15.00 - 5.00) + 20 % VAT
    invoice = Invoice.get(Invoice.payment == payment)
    assert (invoice.subtotal, invoice.tax, invoice.total) == (1000, 200, 1200)


def test_a_flat_discount_never_makes_an_invoice_negative(business, customer, product, subscribe):
    _, payment = subscribe(customer, product, discount=discount(business, type="flat", amount=99999))
    assert (payment.amount, payment.tax) == (0, 0)
    invoice = Invoice.get(Invoice.payment == payment)
    assert invoice.total == 0 and invoice.lines[-1]["amount"] == -1500


def test_a_discount_on_a_tax_inclusive_price_comes_off_the_gross_amount(
        business, customer, subscribe):
    gross = Product.create(business=business, mode="test", name="Gross", price=1200, currency="EUR",
                           is_recurring=True, tax_rate_bps=2000, tax_inclusive=True,
                           subscription_period_count=10)
    _, payment = subscribe(customer, gross, discount=discount(business, amount=5000))
    assert (payment.amount, payment.tax) == (600, 100)  # half of 12.00, its VAT split out


def test_a_free_trial_s_discount_starts_with_its_first_charge(business, customer, product, subscribe):
    product.trial_period_days = 14
    product.save()
    sub, nothing = subscribe(customer, product, discount=discount(business, subscription_cycles=1))
    assert nothing is None and sub.status == "active" and sub.discount_cycles_remaining == 1
    sub = renew(sub)  # the trial's end: the first charge
    sub = renew(sub)
    assert [p.amount for p in Payment.select().order_by(Payment.created_at)] == [1440, 1800]
    assert sub.discount_cycles_remaining == 0


def test_a_discount_limited_to_another_product_is_refused(business, customer, product, subscribe):
    other = Product.create(business=business, mode="test", name="Other", price=900, currency="EUR",
                           is_recurring=True)
    code = discount(business, restricted_to=[other.id])
    with pytest.raises(BillingError) as refused:
        subscribe(customer, product, discount=code)
    assert refused.value.code == "DISCOUNT_NOT_APPLICABLE"
    assert Subscription.select().count() == 0 and code.refresh().times_used == 0


def test_an_expired_or_used_up_code_is_refused(business, customer, product, subscribe):
    expired = discount(business, "OLD", expires_at=utcnow() - timedelta(days=1))
    once = discount(business, "ONCE", usage_limit=1)
    subscribe(customer, product, discount=once)
    for code, reason in ((expired, "DISCOUNT_CODE_EXPIRED"), (once, "DISCOUNT_USAGE_LIMIT_REACHED")):
        with pytest.raises(BillingError) as refused:
            subscribe(customer, product, discount=code)
        assert refused.value.code == reason
    assert once.refresh().times_used == 1 and Subscription.select().count() == 1


def test_a_discount_applied_to_an_existing_subscription_starts_with_its_next_renewal(
        business, customer, product, subscribe, heard):
    sub, first = subscribe(customer, product)
    code = discount(business, "STAY", subscription_cycles=1)
    billing.apply_discount(sub, code)
    assert first.refresh().amount == 1800
    assert billing.next_charge(sub.refresh())["amount"] == 1440
    assert billing.renewal_quote(sub.refresh()) == (1440, 240)
    sub = renew(sub)
    sub = renew(sub)
    renewals = Payment.select().where(Payment.kind == "renewal").order_by(Payment.created_at)
    assert [p.amount for p in renewals] == [1440, 1800]
    assert code.refresh().times_used == 1
    assert "subscription.updated" in [n.type for n in heard.notifications]


def test_a_declined_discounted_renewal_keeps_its_discount_for_the_arrears(
        business, customer, product, subscribe, save_card):
    sub, _ = subscribe(customer, product, discount=discount(business, subscription_cycles=2))
    billing.update_payment_method(sub, save_card(customer, "pm_card_chargeDeclined"))
    sub = renew(sub)
    assert sub.status == "on_hold" and sub.discount_cycles_remaining == 1
    arrears = billing.update_payment_method(sub, save_card(customer, "pm_card_mastercard"))
    assert arrears.refresh().status == "succeeded" and arrears.amount == 1440
    assert lines_of(arrears)[-1]["kind"] == "discount"
    assert sub.refresh().discount_cycles_remaining == 0


def test_moving_to_another_product_drops_the_discount_unless_it_is_preserved(
        business, customer, product, subscribe):
    team = Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)
    dropped, _ = subscribe(customer, product, discount=discount(business, "A"))
    kept, _ = subscribe(customer, product, discount=discount(business, "B",
                                                             preserve_on_plan_change=True))
    assert billing.preview_plan_change(dropped, team).drops_discount
    preview = billing.preview_plan_change(kept, team)
    assert not preview.drops_discount and preview.new_recurring_amount == 4320  # 45.00 - 20 % + VAT
    billing.change_plan(dropped, team)
    billing.change_plan(kept, team)
    assert dropped.refresh().discount is None
    assert billing.next_charge(kept.refresh())["amount"] == 4320


def test_a_paid_renewal_reminder_quotes_the_discounted_amount(business, customer, product, subscribe):
    yearly = Product.create(business=business, mode="test", name="Yearly", price=10000,
                            currency="EUR", is_recurring=True, tax_rate_bps=2000,
                            payment_frequency_interval="Year", subscription_period_count=5)
    sub, _ = subscribe(customer, yearly, discount=discount(business, subscription_cycles=2))
    billing.remind_renewal(sub.id, billing.payloads.iso(sub.next_billing_date))
    reminder = Event.get(Event.type == "subscription.renewal_reminder")
    assert reminder.data["renewal_amount"] == 9600  # 100.00 - 20 % + 20 % VAT


# --- What the customer sees ------------------------------------------------------------------


def test_the_portal_shows_the_discount_and_the_discounted_next_payment(
        client, business, customer, product, subscribe):
    sub, _ = subscribe(customer, product, discount=discount(business, subscription_cycles=3))
    sign_in(client, customer)
    page = text(client.get(f"/portal/subscriptions/{sub.id}"))
    assert "20% off each payment with the code SAVE20" in page
    assert "Payments left with this discount: 2" in page
    assert "€14.40" in page and "discount included" in page


def test_the_invoice_pdf_shows_the_discount_as_its_own_negative_line(
        business, customer, product, subscribe):
    _, payment = subscribe(customer, product, discount=discount(business, name="Launch offer"))
    words = pdf_text(billing.invoice_pdf(Invoice.get(Invoice.payment == payment)))
    assert "discount: launch offer" in words and "-€3.00" in words


def test_the_payment_page_and_the_receipt_show_the_discount_line(
        app, client, business, customer, product, subscribe):
    from plugins.mail import outbox_messages

    _, payment = subscribe(customer, product, discount=discount(business))
    receipt = [m for m in outbox_messages(app) if m["Subject"].startswith("Receipt")][-1]
    assert "Discount: SAVE20: 1 × -€3.00 = -€3.00" in receipt.get_body(("plain",)).get_content()
    sign_in(client, customer)
    page = text(client.get(f"/portal/payments/{payment.id}"))
    assert "Discount: SAVE20 1 -€3.00 -€3.00" in page and "€14.40" in page


def test_the_portal_plan_change_preview_says_the_discount_ends(
        client, business, customer, product, subscribe):
    Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                   is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)
    sub, _ = subscribe(customer, product, discount=discount(business))
    sign_in(client, customer)
    team = Product.get(Product.name == "Team")
    page = client.get(f"/portal/subscriptions/{sub.id}/plan/{team.id}")
    assert page.status_code == 200, page.status_code
    assert "Your discount ends with this change" in text(page)


# --- The API -------------------------------------------------------------------------------------


def test_the_api_creates_lists_retrieves_updates_and_deletes_discounts(api, product):
    created = api.post("/discounts", {"type": "percentage", "amount": 2000, "code": "welcome",
                                      "subscription_cycles": 3, "usage_limit": 10,
                                      "restricted_to": [product.id]})
    assert created.status_code == 200, created.json
    shown = created.json
    assert (shown["code"], shown["times_used"], shown["restricted_to"]) == ("WELCOME", 0, [product.id])
    discount_id = shown["discount_id"]
    assert api.get(f"/discounts/{discount_id}").json["code"] == "WELCOME"
    assert api.get("/discounts/code/welcome").json["discount_id"] == discount_id
    listed = api.get(f"/discounts?product_id={product.id}").json["items"]
    assert [item["discount_id"] for item in listed] == [discount_id]
    assert api.get("/discounts?product_id=pdt_other").json["items"] == []
    updated = api.patch(f"/discounts/{discount_id}", {"amount": 1500, "expires_at": None})
    assert updated.status_code == 200 and updated.json["amount"] == 1500
    assert api.delete(f"/discounts/{discount_id}").status_code == 200
    assert api.get(f"/discounts/{discount_id}").status_code == 404


def test_the_api_refuses_a_duplicate_code_and_a_percentage_above_100(api):
    assert api.post("/discounts", {"type": "flat", "amount": 500, "code": "FIVE"}).status_code == 200
    again = api.post("/discounts", {"type": "flat", "amount": 700, "code": "five"})
    assert (again.status_code, again.json["code"]) == (409, "DISCOUNT_CODE_ALREADY_EXISTS")
    too_much = api.post("/discounts", {"type": "percentage", "amount": 10001})
    assert (too_much.status_code, too_much.json["code"]) == (422, "INVALID_REQUEST_BODY")


def test_the_api_lists_redeemable_discounts_apart_from_expired_or_used_up_ones(api, business):
    live = discount(business, "LIVE")
    discount(business, "OLD", expires_at=utcnow() - timedelta(days=1))
    discount(business, "GONE", usage_limit=2, times_used=2)
    discount(business, "SOON", starts_at=utcnow() + timedelta(days=1))
    assert [d["code"] for d in api.get("/discounts?active=true").json["items"]] == [live.code]
    assert sorted(d["code"] for d in api.get("/discounts?active=false").json["items"]) == [
        "GONE", "OLD", "SOON"]
    assert [d["code"] for d in api.get("/discounts?code=iv").json["items"]] == ["LIVE"]


def test_a_subscription_created_with_a_discount_code_shows_it(api, business, customer, product):
    discount(business, subscription_cycles=3)
    created = subscribe_api(api, customer, product, discount_code="save20")
    assert created.status_code == 200, created.json
    sub = api.get(f"/subscriptions/{created.json['subscription_id']}").json
    assert created.json["discount_id"] == sub["discount_id"]
    assert sub["discount_cycles_remaining"] == 2 and sub["discounts"][0]["code"] == "SAVE20"
    payment = api.get(f"/payments/{created.json['payment_id']}").json
    assert payment["total_amount"] == 1440 and payment["discount_id"] == sub["discount_id"]
    assert payment["invoice_lines"][-1]["amount"] == -300


@pytest.mark.parametrize("setup, code", [
    ({"expires_at": utcnow() - timedelta(minutes=1)}, "DISCOUNT_CODE_EXPIRED"),
    ({"usage_limit": 1, "times_used": 1}, "DISCOUNT_USAGE_LIMIT_REACHED"),
    ({"restricted_to": ["pdt_another"]}, "DISCOUNT_NOT_APPLICABLE"),
])
def test_the_api_refuses_a_code_that_cannot_be_used_and_charges_nothing(
        api, business, customer, product, setup, code):
    discount(business, **setup)
    refused = subscribe_api(api, customer, product, discount_code="SAVE20")
    assert (refused.status_code, refused.json["code"]) == (422, code)
    assert Subscription.select().count() == 0 and charges(status=None) == []


def test_an_unknown_code_is_refused(api, customer, product):
    refused = subscribe_api(api, customer, product, discount_codes=["NOPE"])
    assert (refused.status_code, refused.json["code"]) == (422, "DISCOUNT_CODE_NOT_FOUND")


def test_another_business_s_discount_is_not_found(api, business, customer, product):
    from core.models import Business

    other = Business.create(name="Other")
    elsewhere = Discount.create(business=other, mode="test", code="THEIRS", type="flat", amount=100)
    assert api.get(f"/discounts/{elsewhere.id}").status_code == 404
    refused = subscribe_api(api, customer, product, discount_code="THEIRS")
    assert refused.json["code"] == "DISCOUNT_CODE_NOT_FOUND"




# --- The dashboard -------------------------------------------------------------------------------


@pytest.fixture
def merchant(client, business):
    auth.create_merchant_user(business, "owner@acme.test", "correct horse battery", name="Owner")
    assert dashboard_sign_in(client, "owner@acme.test", "correct horse battery").status_code == 303
    return client


def test_the_dashboard_lists_and_adds_discount_codes(merchant, business, product):
    answer = dashboard_post(merchant, "/dashboard/discounts", code="spring", name="Spring sale",
                            type="percentage", amount="12.5", subscription_cycles="3",
                            usage_limit="100", valid_until="2031-04-30", restricted_to=product.id)
    assert answer.status_code == 303
    made = Discount.get(Discount.code == "SPRING")
    assert (made.type, made.amount, made.subscription_cycles, made.usage_limit) == (
        "percentage", 1250, 3, 100)
    assert made.restricted_to == [product.id] and made.expires_at.isoformat() == "2031-05-01T00:00:00+00:00"
    page = text(merchant.get("/dashboard/discounts"))
    assert "SPRING" in page and "12.5 %" in page and "0 of 100" in page and "Pro" in page


def test_the_dashboard_refuses_a_percentage_above_100_and_a_taken_code(merchant, business):
    discount(business, "TAKEN")
    too_much = dashboard_post(merchant, "/dashboard/discounts", type="percentage", amount="120")
    assert too_much.status_code == 400 and "at most 100" in text(too_much)
    taken = dashboard_post(merchant, "/dashboard/discounts", code="taken", type="flat", amount="500")
    assert taken.status_code == 400 and "Another discount has the code TAKEN" in text(taken)
    assert Discount.select().count() == 1
