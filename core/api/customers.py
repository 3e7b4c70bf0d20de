"""Customers: create, retrieve, list and update them; their saved payment methods; and the
portal session link that signs one in."""

from flask import g, request
from peewee import IntegrityError
from pydantic import ValidationError

from core import auth, payloads, payment_methods, portal_flows, privacy
from core.api import schemas
from core.api.wire import ApiError, describe, filtered, owned, paginate, route, scoped
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


def _bracketed(name: str) -> dict | None:
    """``name[key]=value`` query parameters as ``{key: value}`` (how the SDK's ``extra_query``
    sends an object), whole numbers read as numbers; ``None`` when there are none."""
    found = {key[len(name) + 1:-1]: value for key, value in request.args.items()
             if key.startswith(name + "[") and key.endswith("]")}
    return {key: int(value) if value.isdigit() else value
            for key, value in found.items()} or None


def _flow_of(body: schemas.PortalSessionBody):
    """The deep link asked for, by the JSON body or else by ``flow[...]`` query parameters."""
    if body.flow is None and body.after_completion is None and _bracketed("flow"):
        body = schemas.PortalSessionBody.model_validate(
            {"flow": _bracketed("flow"), "after_completion": _bracketed("after_completion")})
    return body


@route("POST", "/customers/{customer_id}/customer-portal/session", tag=TAG,
       query=schemas.PortalSessionQuery, body=schemas.PortalSessionBody,
       response=schemas.PortalSession, errors=(409,), idempotent=False)
def customer_portal_session(customer_id: str, query: schemas.PortalSessionQuery,
                            body: schemas.PortalSessionBody):
    """Create a portal session link for a customer: ``{"link": ...}``. The link signs the
    customer in once, if visited within ``API_SESSION_LINK_TTL``; ``return_url`` becomes the
    portal's "Return to {business}" link; ``send_email=true`` also e-mails them a sign-in link
    (429 over ``EMAIL_LIMIT_PER_CUSTOMER``). An optional body ``{"flow", "after_completion"}``
    limits the session to one task (update a subscription's payment method, cancel it, change
    its plan, confirm a given plan change, update the profile) and says where the customer
    goes once it is done: a confirmation page, a redirect (checked like ``return_url``) or the
    portal's home. A flow the business has switched off is refused (409
    ``PORTAL_FEATURE_DISABLED``). An ``Idempotency-Key`` is not honoured here: the answer is a
    secret link Portico never keeps, so each call makes another link (each one works once)."""
    customer = scoped(Customer, customer_id, "customer")
    return_url = query.return_url or None
    if return_url and g.mode == "live" and not return_url.startswith("https://"):
        raise ApiError(400, "INVALID_QUERY_PARAMS",
                       "return_url must be an absolute https:// URL of at most 2000 characters.")
    try:
        body = _flow_of(body)
        flow = portal_flows.check(customer, body.flow.model_dump() if body.flow else None,
                                  body.after_completion.model_dump() if body.after_completion else None,
                                  live=g.mode == "live")
    except ValidationError as error:
        raise ApiError(400, "INVALID_QUERY_PARAMS", describe(error)) from None
    except portal_flows.FlowError as error:
        status = {"NOT_FOUND": 404, "PORTAL_FEATURE_DISABLED": 409}.get(error.code, 422)
        raise ApiError(status, error.code, error.api_message) from None
    if query.send_email:
        auth.limit_emails(customer.id, None)
    link = auth.sign_in_link(customer, "api_session", return_url=return_url, flow=flow)
    auth.audit("sign_in_link.issued", customer=customer, via="api", key=g.api_key.prefix)
    if query.send_email:
        enqueue(auth.send_sign_in_link, customer.id, return_url, g.api_key.prefix)
    return {"link": link}
