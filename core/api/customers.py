"""Customers: create, retrieve, list and update them; their saved payment methods; and the
portal session link that signs one in."""

from flask import g
from peewee import IntegrityError

from core import auth, payloads, payment_methods, privacy
from core.api import schemas
from core.api.wire import ApiError, filtered, owned, paginate, route, scoped
from core.billing_details import InvalidBillingDetails, check_tax_id, clean_address
from core.jobs import enqueue
from core.models import Customer, PaymentMethod, db

TAG = "Customers"


def billing_details(address, tax_id, country_on_file=None) -> tuple[dict | None, str | None]:
    """The billing address and tax ID of a request, cleaned and checked (``core.billing_details``);
    a 422 with ``INVALID_TAX_ID`` or ``INVALID_POSTAL_CODE`` for one that cannot be right."""
    try:
        address = clean_address(address.model_dump() if address is not None else None)
        country = (address or {}).get("country") or country_on_file
        return address, check_tax_id(tax_id, country)
    except InvalidBillingDetails as error:
        raise ApiError(422, error.code, f"{error.field}: {error.message}.") from None


def _taken(email: str) -> ApiError:
    existing = owned(Customer).where(Customer.email == email).first()
    return ApiError(409, "CUSTOMER_ALREADY_EXISTS",
                    f"A customer with this e-mail address already exists: {existing.id}."
                    if existing else "A customer with this e-mail address already exists.")


@route("POST", "/customers", tag=TAG, body=schemas.CustomerCreate, response=schemas.Customer,
       errors=(409, 422))
def create_customer(body: schemas.CustomerCreate):
    """Create a customer; the e-mail address is unique per business and mode (409 otherwise).
    A billing address and tax ID, when given, are printed on the customer's invoices."""
    address, tax_id = billing_details(body.billing_address, body.tax_id)
    try:
        with db.atomic():
            customer = Customer.create(business=g.business_id, mode=g.mode, email=body.email,
                                       name=body.name, phone_number=body.phone_number,
                                       preferred_locale=body.preferred_locale,
                                       metadata=body.metadata or {}, billing_address=address,
                                       tax_id=tax_id)
    except IntegrityError:
        raise _taken(body.email) from None
    return payloads.customer(customer)


@route("GET", "/customers/{customer_id}", tag=TAG, response=schemas.Customer)
def retrieve_customer(customer_id: str):
    """A customer."""
    return payloads.customer(scoped(Customer, customer_id, "customer"))


@route("PATCH", "/customers/{customer_id}", tag=TAG, body=schemas.CustomerUpdate,
       response=schemas.Customer, errors=(409, 422))
def update_customer(customer_id: str, body: schemas.CustomerUpdate):
    """Change a customer. A new e-mail address ends the customer's portal sessions and unused
    sign-in links, which were bound to the old one."""
    customer = scoped(Customer, customer_id, "customer")
    sent = body.model_fields_set
    changes = {name: getattr(body, name) for name in ("email", "name", "phone_number",
                                                      "preferred_locale") if name in sent}
    if "metadata" in sent:
        changes["metadata"] = body.metadata or {}
    if "billing_address" in sent or "tax_id" in sent:
        address, tax_id = billing_details(
            body.billing_address if "billing_address" in sent else None, body.tax_id,
            None if "billing_address" in sent else (customer.billing_address or {}).get("country"))
        if "billing_address" in sent:
            changes["billing_address"] = address
        if "tax_id" in sent:
            changes["tax_id"] = tax_id
    email_changed = "email" in changes and changes["email"] != customer.email
    try:
        with db.atomic():
            if changes:
                Customer.update(**changes).where(Customer.id == customer.id).execute()
    except IntegrityError:
        raise _taken(changes["email"]) from None
    customer = customer.refresh()
    if email_changed:
        auth.end_all_sessions(customer, reason="email_changed_by_api")
    return payloads.customer(customer)


@route("GET", "/customers/{customer_id}/export", tag=TAG, response=schemas.CustomerExport)
def export_customer(customer_id: str):
    """Everything held about a customer, as one JSON document (GDPR articles 15 and 20):
    profile, subscriptions, payments, invoices, license keys, payment methods, sessions and
    sign-in audit. Recorded in the audit log."""
    return privacy.export(scoped(Customer, customer_id, "customer"), by=f"api:{g.api_key.prefix}")


@route("POST", "/customers/{customer_id}/erase", tag=TAG, response=schemas.Customer)
def erase_customer(customer_id: str):
    """Erase a customer's personal data (GDPR article 17): active subscriptions are cancelled,
    sessions and sign-in links end, the profile is anonymised; invoices and payments stay, as
    tax law requires. Cannot be undone; erasing again changes nothing."""
    customer = scoped(Customer, customer_id, "customer")
    return payloads.customer(privacy.erase(customer, by=f"api:{g.api_key.prefix}"))


@route("GET", "/customers", tag=TAG, query=schemas.CustomerListQuery,
       response=schemas.items(schemas.Customer))
def list_customers(query: schemas.CustomerListQuery):
    """Customers, newest first; filter by creation time, exact e-mail or part of the name."""
    rows = filtered(owned(Customer), Customer, query, {})
    if query.email:
        rows = rows.where(Customer.email == query.email.strip().lower())
    if query.name:
        rows = rows.where(Customer.name.contains(query.name))
    return paginate(query, rows, payloads.customer, Customer.created_at.desc(), Customer.id.desc())


# --- Payment methods ----------------------------------------------------------------------------


def _method_payload(method) -> dict:
    return {**payloads.payment_method(method), "is_default": method.default,
            "subscription_ids": [sub.id for sub in method.subscriptions]}


@route("GET", "/customers/{customer_id}/payment-methods", tag=TAG, response=schemas.PaymentMethods)
def list_payment_methods(customer_id: str):
    """A customer's saved payment methods (cards: brand, last four, expiry), the default
    first, then newest first; each with the subscriptions it pays for."""
    customer = scoped(Customer, customer_id, "customer")
    return {"items": [_method_payload(method) for method in payment_methods.saved(customer)]}


@route("DELETE", "/customers/{customer_id}/payment-methods/{payment_method_id}", tag=TAG,
       errors=(409,))
def delete_payment_method(customer_id: str, payment_method_id: str):
    """Remove a saved payment method. The subscriptions it paid for move to the customer's
    default method (or the newest other one), without a charge. Refused (409
    ``PAYMENT_METHOD_IN_USE``) when it is the only method of a pending, active or on-hold
    subscription, and (409 ``PREVIOUS_PAYMENT_PENDING``) while a charge on it is in flight."""
    customer = scoped(Customer, customer_id, "customer")
    method = (PaymentMethod.select()
              .where((PaymentMethod.customer == customer) & PaymentMethod.deleted_at.is_null()
                     & (PaymentMethod.id == payment_method_id)).first())
    if method is None:
        raise ApiError(404, "NOT_FOUND", "No such payment method.")
    payment_methods.remove(customer, method)


# --- Portal sessions ----------------------------------------------------------------------------


@route("POST", "/customers/{customer_id}/customer-portal/session", tag=TAG,
       query=schemas.PortalSessionQuery, response=schemas.PortalSession)
def customer_portal_session(customer_id: str, query: schemas.PortalSessionQuery):
    """Create a portal session link for a customer: ``{"link": ...}``. The link signs the
    customer in once, if visited within ``API_SESSION_LINK_TTL``; ``return_url`` becomes the
    portal's "Return to {business}" link; ``send_email=true`` also e-mails them a sign-in link
    (429 over ``EMAIL_LIMIT_PER_CUSTOMER``)."""
    customer = scoped(Customer, customer_id, "customer")
    return_url = query.return_url or None
    if return_url and g.mode == "live" and not return_url.startswith("https://"):
        raise ApiError(400, "INVALID_QUERY_PARAMS",
                       "return_url must be an absolute https:// URL of at most 2000 characters.")
    if query.send_email:
        auth.limit_emails(customer.id, None)
    link = auth.sign_in_link(customer, "api_session", return_url=return_url)
    auth.audit("sign_in_link.issued", customer=customer, via="api", key=g.api_key.prefix)
    if query.send_email:
        enqueue(auth.send_sign_in_link, customer.id, return_url, g.api_key.prefix)
    return {"link": link}
