"""What a customer is shown is what they are charged: a subscription keeps the price it was
sold at, plan changes across billing cycles, add-ons a new plan does not offer, merchant price
changes told ahead, and invoice lines that multiply out to the cent."""

import io
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import time_machine
from conftest import csrf_token, text
from pypdf import PdfReader

from core import auth, billing
from core.models import Addon, Invoice, Payment, Product, ProductAddon, Subscription
from plugins.mail import outbox_messages
from plugins.sandbox import charges

START = datetime(2026, 1, 1, 9, tzinfo=UTC)


def at(*when):
    return time_machine.travel(datetime(*when, 9, tzinfo=UTC), tick=False)



def sign_in(client, customer):
    path = urlsplit(auth.sign_in_link(customer)).path
    client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    return client


def confirm(client, path, data):
    """Post a portal form with the CSRF token of its own page."""
    return client.post(path, data={"csrf_token": csrf_token(client.get(path).text), **data})


def plan(business, name, price, interval="Month", **fields):
    return Product.create(business=business, mode="test", name=name, price=price, currency="EUR",
                          is_recurring=True, tax_rate_bps=fields.pop("tax_rate_bps", 2000),
                          payment_frequency_interval=interval, subscription_period_count=10,
                          **fields)


def offer(product, name, price):
    addon = Addon.create(business=product.business_id, mode="test", name=name, price=price,
                         currency="EUR")
    ProductAddon.create(product=product, addon=addon)
    return addon


def renew(when):
    """Run the billing sweep at ``when`` (renewals are charged in-process)."""
    with time_machine.travel(when, tick=False):
        billing.sweep()


def pdf_text(pdf: bytes) -> str:
    pages = PdfReader(io.BytesIO(pdf)).pages
    return " ".join(" ".join(page.extract_text() for page in pages).split())


@pytest.fixture
def pro(business):
    return plan(business, "Acme Pro", 1500)


@pytest.fixture
def pro_yearly(business):
    return plan(business, "Acme Pro Yearly", 15000, "Year")


# --- Plan changes across billing cycles --------------------------------------------------------


def test_a_monthly_subscriber_moving_to_a_yearly_plan_starts_a_yearly_cycle(
        client, customer, pro, pro_yearly, subscribe):
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, pro)
    page = f"/portal/subscriptions/{sub.id}/plan/{pro_yearly.id}"
    with at(2026, 1, 16):  # 16 of the period's 31 days are left: €9.29 of the €18.00 paid
        sign_in(client, customer)
        preview = text(client.get(page))
        assert "Due now €170.71" in preview
        assert "€180.00 less €9.29 of credit for the unused time of your current plan" in preview
        assert "Then €180.00 every year from January 16, 2027" in preview
        answer = confirm(client, page, {"quantity": "1"})
    assert answer.status_code == 303
    assert [c.amount for c in charges()] == [1800, 17071]
    sub = sub.refresh()
    assert (sub.product_id, sub.payment_frequency_interval) == (pro_yearly.id, "Year")
    assert sub.previous_billing_date == datetime(2026, 1, 16, 9, tzinfo=UTC)
    assert sub.next_billing_date == datetime(2027, 1, 16, 9, tzinfo=UTC)
    invoice = Invoice.get(Invoice.payment == Payment.get(Payment.kind == "plan_change"))
    assert [(line["quantity"], line["unit_amount"], line["amount"]) for line in invoice.lines] == [
        (1, 15000, 15000)]
    assert (invoice.total, invoice.credit_applied) == (18000, 929)

    renew(datetime(2027, 1, 16, 9, tzinfo=UTC))
    assert [c.amount for c in charges()] == [1800, 17071, 18000]
    assert sub.refresh().next_billing_date == datetime(2028, 1, 16, 9, tzinfo=UTC)


def test_a_yearly_subscriber_moving_to_a_monthly_plan_pays_a_month_less_the_unused_time(
        client, customer, pro, pro_yearly, subscribe):
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, pro_yearly)
    page = f"/portal/subscriptions/{sub.id}/plan/{pro.id}"
    with at(2026, 12, 2):  # 30 of 365 days left: €14.79 of the €180.00 paid
        sign_in(client, customer)
        preview = text(client.get(page))
        assert "Due now €3.21" in preview and "Then €18.00 every month from January 2, 2027" in preview
        confirm(client, page, {"quantity": "1"})
    assert [c.amount for c in charges()] == [18000, 321]
    sub = sub.refresh()
    assert (sub.payment_frequency_interval, sub.credit_balance) == ("Month", 0)
    assert sub.next_billing_date == datetime(2027, 1, 2, 9, tzinfo=UTC)

    renew(datetime(2027, 1, 2, 9, tzinfo=UTC))
    assert [c.amount for c in charges()] == [18000, 321, 1800]
    assert sub.refresh().next_billing_date == datetime(2027, 2, 2, 9, tzinfo=UTC)


def test_credit_beyond_the_first_month_is_taken_off_the_next_renewals(
        client, customer, pro, pro_yearly, subscribe):
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, pro_yearly)
        billing.change_plan(sub, pro)  # 365 days left: €180.00 of credit, €18.00 used now
    sub = sub.refresh()
    assert [c.amount for c in charges()] == [18000]
    assert sub.credit_balance == 16200 and sub.payment_frequency_interval == "Month"
    with at(2026, 1, 10):
        sign_in(client, customer)
        page = text(client.get(f"/portal/subscriptions/{sub.id}"))
    assert "Next payment €0.00 €18.00 less €18.00 of credit" in page
    renew(sub.next_billing_date)
    assert [c.amount for c in charges()] == [18000] and sub.refresh().credit_balance == 14400


def test_a_plan_change_can_wait_for_the_next_billing_date(api, customer, pro, pro_yearly,
                                                          subscribe):
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, pro)
        answer = api.post(f"/subscriptions/{sub.id}/change-plan", {
            "product_id": pro_yearly.id, "quantity": 1,
            "proration_billing_mode": "prorated_immediately", "effective_at": "next_billing_date"})
    assert answer.status_code == 200 and answer.json["payment_id"] is None
    assert api.get(f"/subscriptions/{sub.id}").json["scheduled_change"]["product_id"] == pro_yearly.id
    renew(datetime(2026, 2, 1, 9, tzinfo=UTC))
    assert [c.amount for c in charges()] == [1800, 18000]
    shown = api.get(f"/subscriptions/{sub.id}").json
    assert (shown["product_id"], shown["payment_frequency_interval"]) == (pro_yearly.id, "Year")
    assert shown["next_billing_date"] == "2027-02-01T09:00:00Z"


def test_the_api_preview_shows_the_new_cycle_and_the_credit(api, customer, pro, pro_yearly,
                                                            subscribe):
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, pro)
    with at(2026, 1, 16):
        preview = api.post(f"/subscriptions/{sub.id}/change-plan/preview", {
            "product_id": pro_yearly.id, "quantity": 1,
            "proration_billing_mode": "prorated_immediately"}).json
    assert preview["immediate_charge"]["summary"]["total_amount"] == 17071
    assert preview["immediate_charge"]["summary"]["customer_credits"] == 929
    assert preview["new_plan"]["payment_frequency_interval"] == "Year"
    assert preview["new_plan"]["next_billing_date"] == "2027-01-16T09:00:00Z"
    assert charges()[-1].amount == 1800  # nothing charged


# --- Add-ons the new plan does not offer -------------------------------------------------------


@pytest.fixture
def team_plus(business):
    return plan(business, "Acme Team Plus", 3000)


@pytest.fixture
def lite(business):
    return plan(business, "Acme Lite", 900)


def test_add_ons_the_new_plan_does_not_offer_are_dropped_and_the_preview_says_so(
        client, customer, team_plus, lite, subscribe):
    support = offer(team_plus, "Priority support", 2000)
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, team_plus, quantity=3,
                           addons=[{"addon_id": support.id, "quantity": 2}])
    page = f"/portal/subscriptions/{sub.id}/plan/{lite.id}"
    with at(2026, 1, 10):
        sign_in(client, customer)
        preview = text(client.get(page + "?quantity=1"))
        assert "Then €10.80 every month" in preview
        assert "Not offered with Acme Lite, so removed from your subscription: Priority support." \
            in preview
        confirm(client, page, {"quantity": "1"})
        assert "Next payment €10.80" in text(client.get(f"/portal/subscriptions/{sub.id}"))
    renew(datetime(2026, 2, 1, 9, tzinfo=UTC))
    assert [c.amount for c in charges()] == [(9000 + 4000) * 12 // 10, 1080]
    assert sub.refresh().addons == []


def test_change_plan_takes_dodos_addons_and_refuses_one_not_offered_by_name(
        api, customer, team_plus, lite, subscribe):
    support = offer(team_plus, "Priority support", 2000)
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, team_plus, quantity=3,
                           addons=[{"addon_id": support.id, "quantity": 2}])
        body = {"product_id": lite.id, "quantity": 1, "proration_billing_mode": "prorated_immediately"}
        refused = api.post(f"/subscriptions/{sub.id}/change-plan",
                           {**body, "addons": [{"addon_id": support.id, "quantity": 2}]})
        assert refused.status_code == 409 and refused.json["code"] == "ADDON_NOT_OFFERED"
        assert "Priority support" in refused.json["message"]
        preview = api.post(f"/subscriptions/{sub.id}/change-plan/preview", body).json
        assert preview["dropped_addons"] == ["Priority support"]
        removed = api.post(f"/subscriptions/{sub.id}/change-plan",
                           {"product_id": team_plus.id, "quantity": 3, "addons": [],
                            "proration_billing_mode": "prorated_immediately"})
    assert removed.status_code == 200
    assert api.get(f"/subscriptions/{sub.id}").json["scheduled_change"]["addons"] == []
    renew(datetime(2026, 2, 1, 9, tzinfo=UTC))
    assert charges()[-1].amount == 10800 and sub.refresh().addons == []


# --- A price change applies to new sales; subscribers are moved, told ahead ---------------------


def test_a_price_rise_applies_to_new_sales_not_to_existing_subscribers(
        api, client, customer, business, subscribe):
    basic = plan(business, "Acme Basic", 1000)
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, basic)
        assert api.patch(f"/products/{basic.id}", {"price": {
            "type": "recurring_price", "currency": "EUR", "price": 2000, "discount": 0,
            "purchasing_power_parity": False, "payment_frequency_count": 1,
            "payment_frequency_interval": "Month", "subscription_period_count": 10,
            "subscription_period_interval": "Year"}}).status_code == 200
        assert api.get(f"/subscriptions/{sub.id}").json["recurring_pre_tax_amount"] == 1000
        sign_in(client, customer)
        assert "€12.00 every month" in text(client.get(f"/portal/subscriptions/{sub.id}"))
    renew(datetime(2026, 2, 1, 9, tzinfo=UTC))
    assert [c.amount for c in charges()] == [1200, 1200]


def test_moving_subscribers_to_a_new_price_tells_them_ahead_then_charges_it(
        app, api, client, customer, business, subscribe):
    basic = plan(business, "Acme Basic", 1000)
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, basic)
    Product.update(price=2000).where(Product.id == basic.id).execute()
    with at(2026, 1, 10):
        moved = api.post(f"/products/{basic.id}/subscriptions/move-to-current-price", {})
        assert moved.status_code == 200
        # 30 days' notice: 1 February is too soon, 1 March is the first billing date after
        assert moved.json["items"] == [{"subscription_id": sub.id,
                                        "effective_at": "2026-03-01T09:00:00Z",
                                        "amount": 2400, "previous_amount": 1200}]
        sign_in(client, customer)
        page = text(client.get(f"/portal/subscriptions/{sub.id}"))
    assert "from March 1, 2026, it is €24.00 every month, tax included" in page
    [mail] = [m for m in outbox_messages(app) if "price" in m["Subject"]]
    body = mail.get_body(("plain",)).get_content()
    assert "From March 1, 2026" in body and "€24.00 every month" in body and "€12.00" in body
    renew(datetime(2026, 2, 1, 9, tzinfo=UTC))
    renew(datetime(2026, 3, 1, 9, tzinfo=UTC))
    assert [c.amount for c in charges()] == [1200, 1200, 2400]
    assert api.get(f"/subscriptions/{sub.id}").json["recurring_pre_tax_amount"] == 2000


def test_the_dashboard_moves_subscribers_to_the_current_price(client, customer, business, subscribe):
    basic = plan(business, "Acme Basic", 1000)
    sub, _ = subscribe(customer, basic)
    Product.update(price=2000).where(Product.id == basic.id).execute()
    auth.create_merchant_user(business, "owner@example.com", "correct horse battery")
    login = client.get("/dashboard/login")
    client.post("/dashboard/login", data={"csrf_token": csrf_token(login.text),
                                          "email": "owner@example.com",
                                          "password": "correct horse battery"})
    page = client.get("/dashboard/products")
    assert "Move 1 to this price" in page.text
    answer = client.post(f"/dashboard/products/{basic.id}/move-to-current-price",
                         data={"csrf_token": csrf_token(page.text)})
    assert answer.status_code == 303
    assert "1 subscriber(s) of Acme Basic were told" in client.get("/dashboard/products").text
    assert sub.refresh().price_change["amount"] == 2400


# --- Invoice lines that multiply out -------------------------------------------------------------


def test_tax_inclusive_lines_multiply_out_in_the_api_portal_pdf_and_email(
        app, api, client, customer, business, subscribe):
    widget = plan(business, "Widget", 380, tax_rate_bps=550, tax_inclusive=True)
    extra = offer(widget, "Extra", 199)
    sub, payment = subscribe(customer, widget, quantity=10,
                             addons=[{"addon_id": extra.id, "quantity": 3}])
    assert payment.amount == 4397 and payment.tax == 229
    shown = api.get(f"/payments/{payment.id}").json
    assert shown["tax_inclusive"] is True and shown["total_amount"] == 4397
    assert [(x["quantity"], x["unit_amount"], x["amount"]) for x in shown["invoice_lines"]] == [
        (10, 380, 3800), (3, 199, 597)]

    sign_in(client, customer)
    page = text(client.get(f"/portal/payments/{payment.id}"))
    assert "10 €3.80 €38.00" in page and "3 €1.99 €5.97" in page
    assert "Total excluding tax €41.68 Tax €2.29 Total €43.97" in page

    invoice = Invoice.get(Invoice.payment == payment)
    pdf = pdf_text(billing.invoice_pdf(invoice))
    assert "10 €3.80 €38.00" in pdf and "3 €1.99 €5.97" in pdf
    assert "Total excluding tax €41.68" in pdf and "€43.97" in pdf

    [mail] = [m for m in outbox_messages(app) if "Receipt" in m["Subject"]]
    body = mail.get_body(("plain",)).get_content()
    assert "10 × €3.80 = €38.00" in body and "3 × €1.99 = €5.97" in body
    assert "Total excluding tax: €41.68" in body and "Total: €43.97" in body


def test_tax_exclusive_lines_are_net_with_tax_apart(customer, business, subscribe):
    seats = plan(business, "Seats", 333)
    extra = offer(seats, "Extra", 199)
    _, payment = subscribe(customer, seats, quantity=7, addons=[{"addon_id": extra.id, "quantity": 3}])
    invoice = Invoice.get(Invoice.payment == payment)
    assert [(x["quantity"], x["unit_amount"], x["amount"]) for x in invoice.lines] == [
        (7, 333, 2331), (3, 199, 597)]
    assert (invoice.subtotal, invoice.tax, invoice.total) == (2928, 586, 3514)
    assert payment.amount == 3514


def test_the_subscription_page_shows_what_the_next_renewal_charges(client, customer, pro, subscribe):
    with at(2026, 1, 1):
        sub, _ = subscribe(customer, pro, quantity=2)
        sign_in(client, customer)
        page = text(client.get(f"/portal/subscriptions/{sub.id}"))
    assert "Price €36.00 every month" in page and "Next payment €36.00" in page
    renew(datetime(2026, 2, 1, 9, tzinfo=UTC))
    assert charges()[-1].amount == 3600
    assert Subscription.get_by_id(sub.id).next_billing_date == datetime(2026, 3, 1, 9, tzinfo=UTC)
