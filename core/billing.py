"""Money movements and the subscription state machine; views, the API and jobs all call here.

Every change that moves money or status happens in one transaction that also records its
event (the outbox), so a notification exists exactly when the change does.
"""

from core.models import (
    Business,
    Customer,
    Invoice,
    InvoiceSequence,
    Payment,
    for_update,
    locked,
    utcnow,
)


def _next_invoice_number(business_id: str, mode: str) -> int:
    """Take the next invoice number of a business and mode; call inside ``locked()``."""
    where = (InvoiceSequence.business == business_id) & (InvoiceSequence.mode == mode)
    (InvoiceSequence.insert(business=business_id, mode=mode, last_number=0)
     .on_conflict_ignore().execute())
    sequence = for_update(InvoiceSequence.select().where(where)).get()
    number = sequence.last_number + 1
    InvoiceSequence.update(last_number=number).where(where).execute()
    return number


def _seller(business: Business) -> dict:
    return {"name": business.name, "legal_name": business.legal_name or business.name,
            "address": business.address, "tax_id": business.tax_id,
            "support_email": business.support_email, "logo": business.logo}


def _buyer(customer: Customer) -> dict:
    return {"name": customer.name, "email": customer.email, "address": customer.billing_address,
            "tax_id": customer.tax_id}


def card_label(method) -> str:
    """How a saved card reads to people: ``Visa •••• 4242``."""
    if method is None:
        return ""
    return f"{(method.brand or 'Card').title()} •••• {method.last4}"


def issue_invoice(payment: Payment, lines: list[dict]) -> Invoice:
    """The invoice of a succeeded payment: issued once, numbered without gaps per business and
    mode, with the seller's and buyer's details, lines, tax and totals frozen at issue.

    ``lines`` are ``{"description", "quantity", "unit_amount", "amount"}`` in minor units,
    pre-tax; their sum plus the payment's tax is the payment's amount.
    """
    if payment.status != "succeeded":
        raise ValueError(f"payment {payment.id} has not succeeded: no invoice")
    subtotal = sum(line["amount"] for line in lines)
    if subtotal + payment.tax != payment.amount:
        raise ValueError(f"invoice lines ({subtotal} + tax {payment.tax}) do not add up to "
                         f"the payment's {payment.amount}")
    with locked():
        existing = Invoice.get_or_none(Invoice.payment == payment)
        if existing:
            return existing
        number = _next_invoice_number(payment.business_id, payment.mode)
        return Invoice.create(
            business=payment.business_id, mode=payment.mode, customer=payment.customer_id,
            payment=payment, number=number, issued_at=utcnow(), currency=payment.currency,
            lines=lines, subtotal=subtotal, tax=payment.tax, total=payment.amount,
            seller=_seller(payment.business), buyer=_buyer(payment.customer),
            payment_details={"method": card_label(payment.payment_method), "status": "paid",
                             "paid_at": payment.updated_at.isoformat()})


def render_invoice_html(invoice: Invoice, locale: str | None = None) -> str:
    """The invoice as HTML, in the customer's language, for renderers and previews."""
    from flask import render_template

    from core.money import format_money

    locale = locale or invoice.customer.preferred_locale or "en"
    return render_template("invoice/invoice.html", invoice=invoice, locale=locale,
                           money=lambda amount, currency: format_money(amount, currency, locale))


def invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice's PDF: rendered once through the ``render_invoice`` hook, then kept in the
    database so every web process serves the same bytes."""
    if invoice.pdf:
        return bytes(invoice.pdf)
    from flask import current_app

    from core.plugins import registry

    pdf = registry().pm.hook.render_invoice(invoice=invoice, html=render_invoice_html(invoice),
                                            app=current_app._get_current_object())
    if not pdf:
        raise RuntimeError("no invoice renderer answered: enable the pdf plugin or install one")
    Invoice.update(pdf=pdf).where((Invoice.id == invoice.id) & Invoice.pdf.is_null()).execute()
    return pdf
