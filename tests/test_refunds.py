"""Refunds for merchants: through the payment's provider, from the API (Dodo's ``refunds``
resource) and the dashboard, with gapless credit notes, in the customer's billing history, with
``refund.*`` webhooks and an e-mail; never more than was paid, however many at once."""

import io
import re
import threading
from urllib.parse import urlsplit

import pytest
from conftest import csrf_token
from pypdf import PdfReader
from test_portal import sign_in, text

from core import billing
from core.models import Event, Payment, Refund, db, init_db
from plugins.mail import outbox_messages
from plugins.sandbox import ledger


def refunded_in_ledger(payment):
    return sum(e.amount for e in ledger() if e.kind == "refund" and e.status == "succeeded"
               and e.charge_reference == payment.provider_reference)


@pytest.fixture
def paid(customer, product, subscribe):
    """A succeeded first payment of 18.00 EUR (15.00 + 20 % VAT)."""
    _sub, payment = subscribe(customer, product)
    assert payment.status == "succeeded" and payment.amount == 1800
    return payment


def test_the_api_refunds_a_payment_in_full_with_a_reason(api, paid):
    answer = api.post("/refunds", {"payment_id": paid.id, "reason": "Asked by the customer"})
    assert answer.status_code == 200, answer.json
    refund = api.get(f"/refunds/{answer.json['refund_id']}").json
    assert refund["status"] == "succeeded" and refund["amount"] == 1800
    assert refund["is_partial"] is False and refund["reason"] == "Asked by the customer"
    assert refunded_in_ledger(paid) == 1800
    assert api.get(f"/payments/{paid.id}").json["refund_status"] == "full"


def test_the_api_refunds_part_of_an_item_and_then_the_rest(api, paid):
    part = api.post("/refunds", {"payment_id": paid.id, "items": [
        {"item_id": paid.product_id, "amount": 500, "tax_inclusive": False}]}).json
    assert part["amount"] == 600 and part["is_partial"] is True  # 5.00 + 20 % VAT
    assert api.get(f"/payments/{paid.id}").json["refund_status"] == "partial"
    rest = api.post("/refunds", {"payment_id": paid.id}).json
    assert rest["amount"] == 1200
    assert api.post("/refunds", {"payment_id": paid.id}).status_code == 422
    assert refunded_in_ledger(paid) == 1800


@pytest.mark.parametrize(("body", "status"), [
    ({"items": [{"item_id": "pdt_other", "amount": 100}]}, 422),
    ({"items": [{"amount": 100}]}, 422),
    ({"currency": "USD"}, 422),
    ({"payment_id": "pay_unknown"}, 404),
])
def test_a_refund_the_api_cannot_make_is_refused_and_changes_nothing(api, paid, body, status):
    answer = api.post("/refunds", {"payment_id": paid.id, **body})
    assert answer.status_code == status and answer.json["code"]
    assert Refund.select().count() == 0


def test_a_refund_beyond_what_was_paid_is_refused(api, paid):
    answer = api.post("/refunds", {"payment_id": paid.id, "items": [
        {"item_id": paid.product_id, "amount": 1801}]})
    assert answer.status_code == 422 and answer.json["code"] == "REFUND_AMOUNT_INVALID"


def test_refunds_are_listed_newest_first_and_filtered(api, paid, customer):
    first = api.post("/refunds", {"payment_id": paid.id, "items": [
        {"item_id": paid.product_id, "amount": 100}]}).json
    second = api.post("/refunds", {"payment_id": paid.id, "items": [
        {"item_id": paid.product_id, "amount": 200}]}).json
    listed = api.get("/refunds").json["items"]
    assert [r["refund_id"] for r in listed] == [second["refund_id"], first["refund_id"]]
    assert api.get(f"/refunds?customer_id={customer.id}&status=succeeded").json["items"] == listed
    assert api.get("/refunds?status=failed").json["items"] == []
    assert len(api.get(f"/refunds?subscription_id={paid.subscription_id}").json["items"]) == 2


def test_credit_notes_are_numbered_without_gaps_and_a_failed_refund_takes_no_number(
        api, paid, customer, product, subscribe):
    _sub, other = subscribe(customer, product)
    first = api.post("/refunds", {"payment_id": paid.id, "items": [
        {"item_id": paid.product_id, "amount": 100}]}).json
    Payment.update(provider="acmepay").where(Payment.id == other.id).execute()  # plugin gone
    failed = api.post("/refunds", {"payment_id": other.id}).json
    assert failed["status"] == "failed"
    Payment.update(provider="sandbox").where(Payment.id == other.id).execute()
    third = api.post("/refunds", {"payment_id": other.id}).json
    numbers = [Refund.get_by_id(r["refund_id"]).display_number for r in (first, failed, third)]
    assert numbers == ["T-CN-000001", None, "T-CN-000002"]
    events = [e.type for e in Event.select().order_by(Event.created_at)]
    assert events.count("refund.succeeded") == 2 and events.count("refund.failed") == 1


def test_the_credit_note_pdf_names_the_invoice_it_corrects(api, paid):
    refund = api.post("/refunds", {"payment_id": paid.id, "reason": "Duplicate"}).json
    answer = api.get(f"/invoices/refunds/{refund['refund_id']}")
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    words = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(answer.data)).pages).casefold()
    assert "credit note" in words and "t-cn-000001" in words and "t-000001" in words


def test_the_customer_is_emailed_and_sees_the_refund_in_billing_history(app, api, client, paid,
                                                                        customer):
    refund = api.post("/refunds", {"payment_id": paid.id}).json
    [mail] = [m for m in outbox_messages(app) if "refund" in m["Subject"].lower()]
    assert "€18.00" in mail.get_body(("plain",)).get_content()
    sign_in(client, customer)
    history = client.get("/portal/billing")
    assert "Refund" in text(history) and "Credit note T-CN-000001" in text(history)
    pdf = client.get(f"/portal/credit-notes/{refund['refund_id']}.pdf")
    assert pdf.status_code == 200 and pdf.data[:5] == b"%PDF-"


def test_billing_history_says_a_payment_is_partially_then_wholly_refunded(api, client, paid,
                                                                          customer):
    def payment_status():
        """The words of the payment's own row (refunds have rows of their own)."""
        page = client.get("/portal/billing").text
        row = [row for row in page.split("<tr>")[1:] if paid.description in row][0]
        return " ".join(re.sub(r"<[^>]+>", " ", row.split("</tr>")[0]).split())

    sign_in(client, customer)
    assert "Paid" in payment_status()
    api.post("/refunds", {"payment_id": paid.id, "items": [{"item_id": paid.product_id, "amount": 500}]})
    assert "Partially refunded" in payment_status()
    api.post("/refunds", {"payment_id": paid.id})
    assert "Refunded" in payment_status() and "Paid" not in payment_status()


def test_the_dashboard_refund_button_refunds_part_of_a_payment(client, business, paid, customer):
    from core.auth import create_merchant_user

    create_merchant_user(business, "owner@acme.test", "correct horse battery")
    page = client.get("/dashboard/login")
    client.post("/dashboard/login", data={"csrf_token": csrf_token(page.text),
                                          "email": "owner@acme.test",
                                          "password": "correct horse battery"})
    page = client.get(f"/dashboard/customers/{customer.id}")
    assert "Refund" in page.text
    action = f"/dashboard/customers/{customer.id}/payments/{paid.id}/refund"
    answer = client.post(action, data={"csrf_token": csrf_token(page.text), "amount": "4.50",
                                       "reason": "Goodwill"})
    assert answer.status_code == 303
    [refund] = Refund.select()
    assert (refund.amount, refund.status, refund.reason) == (450, "succeeded", "Goodwill")
    assert "T-CN-000001" in client.get(urlsplit(answer.headers["Location"]).path).text


def test_the_dashboard_says_in_money_how_much_is_left_when_a_refund_asks_too_much(client, business,
                                                                                  paid, customer):
    from core.auth import create_merchant_user

    create_merchant_user(business, "owner@acme.test", "correct horse battery")
    page = client.get("/dashboard/login")
    client.post("/dashboard/login", data={"csrf_token": csrf_token(page.text),
                                          "email": "owner@acme.test",
                                          "password": "correct horse battery"})
    action = f"/dashboard/customers/{customer.id}/payments/{paid.id}/refund"
    token = csrf_token(client.get(f"/dashboard/customers/{customer.id}").text)
    too_much = client.post(action, data={"csrf_token": token, "amount": "25.00"}, follow_redirects=True)
    assert "at most €18.00 is left to refund on this payment" in too_much.text
    client.post(action, data={"csrf_token": token, "amount": ""})
    again = client.post(action, data={"csrf_token": token, "amount": "1.00"}, follow_redirects=True)
    assert "this payment has been refunded in full already" in again.text
    assert "minor units" not in too_much.text + again.text
    assert Refund.select().count() == 1


def test_thirty_concurrent_refunds_never_exceed_the_payment(app, paid, database_url):
    barrier, refused, errors = threading.Barrier(30), [], []

    def refund():
        with app.app_context():
            try:
                barrier.wait()
                billing.refund_payment(paid, 100)
            except billing.BillingError as error:
                refused.append(error.code)
            except Exception as error:  # noqa: BLE001 - any other error fails the test
                errors.append(error)
            finally:
                db.close()

    threads = [threading.Thread(target=refund) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    init_db(database_url)
    assert errors == []
    succeeded = Refund.select().where(Refund.status == "succeeded").count()
    assert succeeded == 18 and refused == ["REFUND_AMOUNT_INVALID"] * 12
    assert refunded_in_ledger(paid) == 1800
    numbers = sorted(r.credit_note_number for r in Refund.select())
    assert numbers == list(range(1, 19))
