"""Payments (every charge attempt: new, renewal, arrears, plan change) and the invoice PDF of a
succeeded one."""

from flask import Response, g
from peewee import JOIN, prefetch

from core import billing, payloads
from core.api import schemas
from core.api.wire import ApiError, filtered, route, scoped
from core.models import Customer, Invoice, LicenseKey, Payment, PaymentMethod, Product

TAG = "Payments"


@route("GET", "/payments/{payment_id}", tag=TAG, response=schemas.Payment)
def retrieve_payment(payment_id: str):
    """A payment."""
    return payloads.payment(scoped(Payment, payment_id, "payment"))


@route("GET", "/payments", tag=TAG, query=schemas.PaymentListQuery,
       response=schemas.items(schemas.PaymentListItem))
def list_payments(query: schemas.PaymentListQuery):
    """Payments, newest first; filter by customer, subscription, product, status, currency or
    creation time. The page's ids are found on a newest-first index (the customer's, or the
    business's) before any row is joined, so a deep page skips index entries, not rows."""
    newest_first = (Payment.created_at.desc(), Payment.id.desc())
    ids = filtered(Payment.select(Payment.id).where((Payment.business == g.business_id)
                                                    & (Payment.mode == g.mode)), Payment, query, {
        "customer_id": Payment.customer, "subscription_id": Payment.subscription,
        "product_id": Payment.product, "currency": Payment.currency, "status": Payment.status})
    ids = ids.order_by(*newest_first).offset(query.page_number * query.page_size).limit(query.page_size)
    rows = (Payment.select(Payment, Customer, Product, PaymentMethod)  # joined to the page's rows only
            .join(Customer, on=Payment.customer).switch(Payment)
            .join(Product, JOIN.LEFT_OUTER, on=Payment.product).switch(Payment)
            .join(PaymentMethod, JOIN.LEFT_OUTER, on=Payment.payment_method)
            .where(Payment.id.in_(ids)).order_by(*newest_first))
    page = list(prefetch(rows, Invoice.select(Invoice.id, Invoice.payment)))
    keyed = {key.payment_id for key in LicenseKey.select(LicenseKey.payment).where(
        LicenseKey.payment.in_([payment.id for payment in page]))}
    return {"items": [{**payloads.payment(payment), "has_license_key": payment.id in keyed,
                       "dispute_status": None}
                      for payment in page]}


@route("GET", "/invoices/payments/{payment_id}", tag="Invoices", media_type="application/pdf")
def retrieve_invoice(payment_id: str):
    """The invoice of a succeeded payment, as a PDF (404 while the payment has none)."""
    payment = scoped(Payment, payment_id, "payment")
    invoice = Invoice.get_or_none(Invoice.payment == payment)
    if invoice is None:
        raise ApiError(404, "NOT_FOUND", "This payment has no invoice: it has not succeeded.")
    return Response(billing.invoice_pdf(invoice), mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="invoice-{invoice.display_number}.pdf"'})
