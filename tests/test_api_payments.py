"""Payments and invoice PDFs through the merchant API."""

from core.models import Invoice, Payment, Product


def test_a_payment_shows_its_amount_card_and_invoice(api, customer, product, subscribe):
    sub, payment = subscribe(customer, product)
    shown = api.get(f"/payments/{payment.id}").json
    invoice = Invoice.get(Invoice.payment == payment)
    assert (shown["status"], shown["total_amount"], shown["tax"], shown["currency"]) == (
        "succeeded", 1800, 300, "EUR")
    assert shown["customer"]["customer_id"] == customer.id and shown["subscription_id"] == sub.id
    assert (shown["card_network"], shown["card_last_four"]) == ("visa", "4242")
    assert shown["invoice_id"] == invoice.id
    assert shown["invoice_url"] == f"http://portal.test/api/invoices/payments/{payment.id}"
    assert shown["metadata"] == {}  # the invoice lines kept beside it stay inside


def test_the_list_filters_by_subscription_and_status_and_flags_license_keys(api, business, customer,
                                                                            product, subscribe, on_hold):
    licensed = Product.create(business=business, mode="test", name="Desktop", price=900, currency="EUR",
                              is_recurring=True, license_key_enabled=True)
    _, with_key = subscribe(customer, licensed)
    sub = on_hold()
    items = api.get(f"/payments?subscription_id={sub.id}").json["items"]
    assert [p["status"] for p in items] == ["failed", "succeeded"]
    failed = api.get("/payments?status=failed").json["items"]
    assert [p["payment_id"] for p in failed] == [items[0]["payment_id"]]
    flagged = {p["payment_id"]: p["has_license_key"] for p in api.get("/payments").json["items"]}
    assert flagged[with_key.id] is True and flagged[items[1]["payment_id"]] is False


def test_the_invoice_pdf_is_served_as_an_attachment(api, customer, product, subscribe):
    _, payment = subscribe(customer, product)
    answer = api.get(f"/invoices/payments/{payment.id}", headers={"Accept": "application/pdf"})
    invoice = Invoice.get(Invoice.payment == payment)
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    assert answer.data[:5] == b"%PDF-"
    assert answer.headers["Content-Disposition"] == (
        f'attachment; filename="invoice-{invoice.display_number}.pdf"')


def test_a_failed_payment_has_no_invoice(api, customer, on_hold):
    on_hold()
    failed = Payment.get(Payment.status == "failed")
    answer = api.get(f"/invoices/payments/{failed.id}")
    assert answer.status_code == 404 and answer.json["code"] == "NOT_FOUND"
