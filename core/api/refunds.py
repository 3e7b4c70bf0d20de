"""Refunds of succeeded payments, through the payment's provider, as Dodo's ``refunds``
resource; and each succeeded refund's credit note PDF (``invoices.payments.retrieve_refund``)."""

from fractions import Fraction

from flask import Response, g

from core import billing, payloads
from core.api import schemas
from core.api.wire import ApiError, filtered, owned, paginate, route, scoped
from core.models import Payment, Refund

TAG = "Refunds"


def _amount(payment: Payment, body: schemas.RefundCreate) -> int | None:
    """What to refund, tax included: ``None`` (all that is left) without items, else the sum
    of the items' amounts, each for the payment's product (an amount without tax gets the
    payment's tax rate added)."""
    if body.currency is not None and body.currency != payment.currency:
        raise ApiError(422, "INVALID_REQUEST_PARAMETERS",
                       f"The payment was made in {payment.currency}, not {body.currency}.")
    if not body.items:
        return None
    total = 0
    for item in body.items:
        if item.item_id != payment.product_id:
            raise ApiError(422, "INVALID_REQUEST_PARAMETERS",
                           f"{item.item_id} is not an item of payment {payment.id}.")
        if item.amount is None:
            total += payment.amount
        elif item.tax_inclusive or payment.amount == payment.tax:
            total += item.amount
        else:
            net = payment.amount - payment.tax
            total += billing.round_half_up(Fraction(item.amount * payment.amount, net))
    return total


@route("POST", "/refunds", tag=TAG, body=schemas.RefundCreate, response=schemas.Refund,
       errors=(404, 409, 422))
def create_refund(body: schemas.RefundCreate):
    """Refund a succeeded payment, in full or in part, with a reason: never more than what is
    left of it, however many refunds are asked at once. The answer is ``pending`` until the
    provider answers; ``refund.succeeded`` or ``refund.failed`` follows (and, in-process, is
    already there)."""
    payment = scoped(Payment, body.payment_id, "payment")
    refund = billing.refund_payment(payment, _amount(payment, body), reason=body.reason,
                                    metadata=body.metadata)
    return payloads.refund(refund.refresh())


@route("GET", "/refunds/{refund_id}", tag=TAG, response=schemas.Refund)
def retrieve_refund(refund_id: str):
    """A refund."""
    return payloads.refund(scoped(Refund, refund_id, "refund"))


@route("GET", "/refunds", tag=TAG, query=schemas.RefundListQuery,
       response=schemas.items(schemas.RefundListItem))
def list_refunds(query: schemas.RefundListQuery):
    """Refunds, newest first; filter by customer, status, subscription or creation time."""
    rows = owned(Refund)
    rows = filtered(rows, Refund, query, {"customer_id": Refund.customer, "status": Refund.status})
    if query.subscription_id is not None:
        rows = rows.where(Refund.payment.in_(Payment.select(Payment.id).where(
            (Payment.subscription == query.subscription_id) & (Payment.business == g.business_id))))
    return paginate(query, rows, payloads.refund_list_item, Refund.created_at.desc(),
                    Refund.id.desc())


@route("GET", "/invoices/refunds/{refund_id}", tag="Invoices", media_type="application/pdf")
def retrieve_credit_note(refund_id: str):
    """The credit note of a succeeded refund, as a PDF (404 while the refund has none)."""
    refund = scoped(Refund, refund_id, "refund")
    if refund.status != "succeeded":
        raise ApiError(404, "NOT_FOUND", "This refund has no credit note: it has not succeeded.")
    return Response(billing.credit_note_pdf(refund), mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="credit-note-{refund.display_number}.pdf"'})
