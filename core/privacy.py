"""A customer's data rights (GDPR articles 15, 17 and 20): everything Portico holds about them
as one JSON document, and the erasure of their personal data.

Erasure keeps what tax and accounting law requires a business to keep (GDPR article 17(3)(b):
invoices and the payments they record, for up to 10 years, e.g. France's Code de commerce
L123-22, Germany's HGB §257): those rows stay, invoices with the buyer's details frozen at
issue. Everything else personal is anonymised or removed: the customer's row, payment methods,
sessions and sign-in links, sign-in audit entries, the events still to be delivered about them,
and their jobs waiting in the queue. Active subscriptions are cancelled at once. Both the
export and the erasure are recorded in the audit log (by whom, never what).
"""

import json
import logging
from datetime import date, datetime

from playhouse.shortcuts import model_to_dict

from core import billing
from core.auth import audit, email_hash
from core.jobs import queue
from core.models import (
    AuditLog,
    Business,
    CancellationRequest,
    Customer,
    Event,
    Invoice,
    LicenseKey,
    LicenseKeyInstance,
    Payment,
    PaymentMethod,
    PortalSession,
    PortalToken,
    Subscription,
    db,
    utcnow,
)

log = logging.getLogger("portico.privacy")

EXPORT_FORMAT = "portico.customer-export/1"
ACTIVE = ("pending", "active", "on_hold", "paused")
# Fields never exported: credentials, not facts about the person (invoice PDFs live apart).
WITHHELD = {PaymentMethod: {"provider_token"}, PortalToken: {"token_hash"}}


def _rows(model, query) -> list[dict]:
    exclude = [getattr(model, name) for name in WITHHELD.get(model, ())]
    return [model_to_dict(row, recurse=False, exclude=exclude)
            for row in query.order_by(model.created_at, model.id)]


def _jsonable(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return None
    raise TypeError(f"cannot export {type(value).__name__}")


def export(customer: Customer, by: str) -> dict:
    """Everything held about ``customer``: profile, subscriptions (and requests to cancel them),
    payments, invoices (without
    their PDF), license keys and activations, payment methods (display details), portal
    sessions, sign-in links (without their token) and the audit entries about them.
    ``by`` (``cli``, an API key prefix, ``portal``) goes to the audit log."""
    keys = LicenseKey.select().where(LicenseKey.customer == customer)
    document = {
        "format": EXPORT_FORMAT,
        "exported_at": utcnow(),
        "business": {"id": customer.business_id, "name": Business.get_by_id(customer.business_id).name},
        "customer": model_to_dict(customer, recurse=False),
        "subscriptions": _rows(Subscription, Subscription.select().where(Subscription.customer == customer)),
        "cancellation_requests": _rows(CancellationRequest, CancellationRequest.select()
                                       .where(CancellationRequest.customer == customer)),
        "payments": _rows(Payment, Payment.select().where(Payment.customer == customer)),
        "invoices": _rows(Invoice, Invoice.select().where(Invoice.customer == customer)),
        "license_keys": _rows(LicenseKey, keys),
        "license_key_instances": _rows(LicenseKeyInstance, LicenseKeyInstance.select()
                                       .where(LicenseKeyInstance.license_key.in_(keys))),
        "payment_methods": _rows(PaymentMethod, PaymentMethod.select()
                                 .where(PaymentMethod.customer == customer)),
        "sessions": _rows(PortalSession, PortalSession.select().where(PortalSession.customer == customer)),
        "sign_in_links": _rows(PortalToken, PortalToken.select().where(PortalToken.customer == customer)),
        "audit_log": _rows(AuditLog, AuditLog.select().where(AuditLog.customer == customer)),
    }
    audit("customer.exported", customer=customer, by=by)
    return json.loads(json.dumps(document, default=_jsonable))


ADDRESSES = ("billing", "billing_address")  # keys of a postal address in stored JSON (Dodo's shape)


def _scrub(value, personal: dict):
    """``value`` (JSON) with every string found in ``personal`` replaced by its stand-in, and
    each postal address blanked but for its country."""
    if isinstance(value, dict):
        return {key: ({part: "" if part != "country" and isinstance(text, str) else text
                       for part, text in item.items()}
                      if key in ADDRESSES and isinstance(item, dict) else _scrub(item, personal))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, personal) for item in value]
    return personal.get(value, value) if isinstance(value, str) else value


def erase(customer: Customer, by: str) -> Customer:
    """Erase ``customer``'s personal data (see the module's docstring); returns the anonymised
    customer. Safe to run again: an erased customer is left as it is."""
    if customer.erased_at is not None:
        return customer
    stand_in = f"{customer.id}@erased.example.com"  # reserved (RFC 2606), takes no mail (null MX)
    personal = {value: replacement for value, replacement in
                ((customer.email, stand_in), (customer.name, ""), (customer.phone_number, ""),
                 (customer.tax_id, "")) if value}
    now = utcnow()
    with db.atomic():
        PortalSession.delete().where(PortalSession.customer == customer).execute()
        PortalToken.delete().where(PortalToken.customer == customer).execute()
        PaymentMethod.delete().where(PaymentMethod.customer == customer).execute()
        for event in Event.select().where(Event.customer == customer):
            Event.update(data=_scrub(event.data, personal)).where(Event.id == event.id).execute()
        for sub in Subscription.select().where(Subscription.customer == customer):
            Subscription.update(billing=None, cancellation_comment=None,
                                cancelled_by=_scrub(sub.cancelled_by, personal)).where(
                Subscription.id == sub.id).execute()
        CancellationRequest.update(comment=None).where(
            CancellationRequest.customer == customer).execute()
        LicenseKeyInstance.update(name="erased").where(LicenseKeyInstance.license_key.in_(
            LicenseKey.select(LicenseKey.id).where(LicenseKey.customer == customer))).execute()
        AuditLog.update(ip=None, detail={}).where(
            (AuditLog.customer == customer)
            | AuditLog.detail.contains(email_hash(customer.email))).execute()
        Customer.update(email=stand_in, name="", phone_number=None, billing_address=None, tax_id=None,
                        metadata={}, preferred_locale=None, blocked_at=now, erased_at=now).where(
            Customer.id == customer.id).execute()
    removed_jobs = _cancel_queued_jobs(customer, set(personal))
    for sub in Subscription.select().where((Subscription.customer == customer)
                                           & Subscription.status.in_(ACTIVE)):
        billing.cancel(sub, actor={"actor_type": "merchant", "email": None, "name": "erasure"})
    audit("customer.erased", customer=customer, by=by, jobs_removed=removed_jobs or None)
    return Customer.get_by_id(customer.id)


def _cancel_queued_jobs(customer: Customer, personal: set) -> int:
    """Remove the queue's waiting and scheduled jobs about ``customer`` (their arguments name
    the customer's id or hold their personal data), such as an e-mail not sent yet."""
    q = queue()
    if q is None:
        return 0
    wanted = personal | {customer.id}
    removed = 0
    for job in q.jobs + [q.fetch_job(job_id) for job_id in q.scheduled_job_registry.get_job_ids()]:
        if job is not None and wanted & {arg for arg in job.args if isinstance(arg, str)}:
            job.delete()
            removed += 1
    return removed
