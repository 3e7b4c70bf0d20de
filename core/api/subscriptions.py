"""Subscriptions: create one (charging a saved payment method), retrieve and list them, cancel
now or at the next billing date, change plan, and change the payment method (which, for an
``on_hold`` subscription, charges the arrears). Every change goes through ``core.billing``."""

from datetime import UTC, datetime

from flask import current_app, g, url_for
from peewee import IntegrityError

from core import billing, payloads, payment_methods
from core.api import schemas
from core.api.customers import billing_details
from core.api.wire import ApiError, filtered, owned, paginate, route, scoped
from core.jobs import transaction
from core.models import Addon, Customer, PaymentMethod, Product, ProductAddon, Subscription, db
from core.plugins import MissingPlugin, registry

TAG = "Subscriptions"


def _payment_method(customer: Customer, method_id: str) -> PaymentMethod:
    """A saved payment method of ``customer``; in test mode also a test token of the test
    provider (such as ``pm_card_visa``), saved for the customer on first use."""
    method = (PaymentMethod.select()
              .where((PaymentMethod.id == method_id) & (PaymentMethod.customer == customer)
                     & PaymentMethod.deleted_at.is_null()).first())
    if method is not None:
        return method
    if g.mode == "test" and not method_id.replace(" ", "").isdigit():  # never a card number
        try:
            provider = registry().provider_for("test")
            card = provider.tokenize(customer=customer, source=method_id)
        except (MissingPlugin, ValueError):
            pass
        else:
            return PaymentMethod.save_card(customer, provider.name, card)
    hint = " (in test mode, a test token such as pm_card_visa works too)" if g.mode == "test" else ""
    raise ApiError(404, "NOT_FOUND", f"No such payment method for this customer{hint}.")


def _customer(spec) -> Customer:
    """The customer named by id, or the one with this e-mail address (created if new)."""
    if isinstance(spec, schemas.ExistingCustomer):
        return scoped(Customer, spec.customer_id, "customer")
    existing = owned(Customer).where(Customer.email == spec.email).first()
    if existing is not None:
        return existing
    try:
        with db.atomic():
            return Customer.create(business=g.business_id, mode=g.mode, email=spec.email,
                                   name=spec.name or "", phone_number=spec.phone_number)
    except IntegrityError:  # created by a concurrent call a moment ago
        return owned(Customer).where(Customer.email == spec.email).get()


def _fill_billing_details(customer: Customer, address: dict | None, tax_id: str | None):
    """The billing given with a subscription becomes the customer's when they have none yet
    (as Dodo does), so their invoices and profile show it; a customer's own is never replaced."""
    changes = {}
    if address and not customer.billing_address:
        changes["billing_address"] = customer.billing_address = address
    if tax_id and not customer.tax_id:
        changes["tax_id"] = customer.tax_id = tax_id
    if changes:
        Customer.update(**changes).where(Customer.id == customer.id).execute()


def _addons(product: Product, items) -> list[dict]:
    """The add-ons asked for, each offered with ``product`` and still on sale."""
    offered = {link.addon.id: link.addon for link in
               ProductAddon.select(ProductAddon, Addon).join(Addon).where(ProductAddon.product == product)}
    chosen = []
    for item in items or ():
        addon = offered.get(item.addon_id)
        if addon is None or addon.archived:
            raise ApiError(409, "INVALID_REQUEST_PARAMETERS",
                           f"Add-on {item.addon_id} is not offered with {product.name}.")
        chosen.append({"addon_id": addon.id, "quantity": item.quantity})
    return chosen


def _discount(body: schemas.SubscriptionCreate):
    """The discount named by ``discount_code`` or ``discount_codes`` (one of them, one code),
    else ``None``; 422 ``DISCOUNT_CODE_NOT_FOUND`` for a code this business does not have.
    Whether it may be used is ``core.billing``'s to say."""
    if body.discount_code is not None and body.discount_codes:
        raise ApiError(422, "INVALID_REQUEST_BODY", "Send discount_code or discount_codes, not both.")
    code = body.discount_code or (body.discount_codes or [None])[0]
    return billing.find_discount(g.business_id, g.mode, code) if code else None


def _show(sub: Subscription) -> dict:
    return payloads.subscription(sub.refresh())


@route("POST", "/subscriptions", tag=TAG, body=schemas.SubscriptionCreate,
       response=schemas.SubscriptionCreated, errors=(404, 409, 422), deprecated=True)
def create_subscription(body: schemas.SubscriptionCreate):
    """Subscribe a customer to a recurring product, charging a saved payment method (in test
    mode, or a test token such as ``pm_card_visa``). The subscription is ``pending`` until its
    first charge settles it ``active`` (or ``failed``); ``payment_link`` is set when the
    customer must complete a step, such as 3-D Secure.

    With a free trial (``trial_period_days``, else the product's) nothing is charged: the
    subscription is ``active`` at once, its ``next_billing_date`` the trial's end, when the
    first charge is made; ``payment_id`` is then empty. A trial needs a payment method unless
    the product's price has ``trial_payment_method_optional``."""
    customer = _customer(body.customer)
    address, tax_id = billing_details(body.billing, body.tax_id)
    _fill_billing_details(customer, address, tax_id)
    product = scoped(Product, body.product_id, "product")
    addons = _addons(product, body.addons)
    method = (_payment_method(customer, body.payment_method_id) if body.payment_method_id
              else payment_methods.default_method(customer))
    trial = product.trial_period_days if body.trial_period_days is None else body.trial_period_days
    if method is None and not (trial and product.trial_payment_method_optional):
        raise ApiError(422, "NO_ELIGIBLE_PAYMENT_METHODS",
                       "This customer has no saved payment method: send payment_method_id.")
    discount = _discount(body)
    sub, payment = billing.create_subscription(
        customer, product, method, quantity=body.quantity, addons=addons,
        billing=address, metadata=body.metadata or {}, trial_period_days=body.trial_period_days,
        discount=discount)
    sub = sub.refresh()
    payment = payment.refresh() if payment is not None else None  # none in a free trial
    return {"subscription_id": sub.id, "payment_id": payment.id if payment else "",
            "customer": payloads.customer_limited(customer),
            "addons": [{"addon_id": a["addon_id"], "quantity": a["quantity"]} for a in sub.addons],
            "metadata": sub.metadata, "recurring_pre_tax_amount": sub.recurring_pre_tax_amount,
            "payment_method_required": False,
            "payment_link": payment.action_url if payment else None,
            "client_secret": None, "expires_on": None,
            "discount_id": sub.discount["discount_id"] if sub.discount else None,
            "discount_ids": [sub.discount["discount_id"]] if sub.discount else None,
            "one_time_product_cart": None, "trial_amount": None}


@route("GET", "/subscriptions/{subscription_id}", tag=TAG, response=schemas.Subscription)
def retrieve_subscription(subscription_id: str):
    """A subscription."""
    return payloads.subscription(scoped(Subscription, subscription_id, "subscription"))


@route("GET", "/subscriptions", tag=TAG, query=schemas.SubscriptionListQuery,
       response=schemas.items(schemas.SubscriptionListItem))
def list_subscriptions(query: schemas.SubscriptionListQuery):
    """Subscriptions, newest first; filter by customer, product, status, cancellation or
    creation time."""
    rows = (Subscription.select(Subscription, Customer, Product)
            .join(Customer, on=Subscription.customer).switch(Subscription)
            .join(Product, on=Subscription.product)
            .where((Subscription.business == g.business_id) & (Subscription.mode == g.mode)))
    rows = filtered(rows, Subscription, query, {
        "customer_id": Subscription.customer, "product_id": Subscription.product,
        "status": Subscription.status,
        "cancel_at_next_billing_date": Subscription.cancel_at_next_billing_date})
    return paginate(query, rows, payloads.subscription, Subscription.created_at.desc(),
                    Subscription.id.desc())


@route("PATCH", "/subscriptions/{subscription_id}", tag=TAG, body=schemas.SubscriptionUpdate,
       response=schemas.Subscription, errors=(409,))
def update_subscription(subscription_id: str, body: schemas.SubscriptionUpdate):
    """Cancel now (``status: cancelled``), at the next billing date
    (``cancel_at_next_billing_date: true``, revoked with ``false``), with optional feedback;
    pause (``status: paused``) or resume (``status: active``), each sent alone; move the next
    billing date (``next_billing_date``: never in the past; an earlier date makes the renewal
    due then); and/or replace the billing address or metadata. Only the fields sent change."""
    sub = scoped(Subscription, subscription_id, "subscription")
    sent = body.model_fields_set
    if "pause" in sent:
        raise ApiError(422, "INVALID_REQUEST_BODY", "pause is removed: send status: paused to "
                       "pause and status: active to resume, alone.")
    if "status" in sent and body.status is None:
        raise ApiError(422, "INVALID_REQUEST_BODY", "status: send cancelled, paused or active "
                       "(or leave it out).")
    if body.status in ("paused", "active"):
        others = sorted(sent - {"status"})
        if others:
            raise ApiError(422, "INVALID_REQUEST_BODY", f"status: {body.status} is sent alone, "
                           f"without {', '.join(others)}.")
        (billing.pause if body.status == "paused" else billing.resume)(sub)
        return _show(sub)
    if "next_billing_date" in sent and body.next_billing_date is None:
        raise ApiError(422, "INVALID_REQUEST_BODY", "next_billing_date: a subscription always "
                       "has one; send a date and time.")
    at_next = body.cancel_at_next_billing_date is True
    cancelling = body.status == "cancelled" or at_next
    details = {"feedback": body.cancellation_feedback, "comment": body.cancellation_comment}
    if not cancelling and any(value is not None for value in details.values()):
        raise ApiError(409, "SUBSCRIPTION_NOT_CANCELLING",
                       "Cancellation feedback goes with a cancellation: send status: cancelled or "
                       "cancel_at_next_billing_date: true with it.")
    with transaction():  # all the changes asked for, or none
        if "next_billing_date" in sent:
            billing.move_next_billing_date(sub, body.next_billing_date)
        if cancelling and not (at_next and sub.cancel_at_next_billing_date and not any(details.values())):
            actor = {"actor_type": "api_key", "email": None, "name": g.api_key.name or g.api_key.prefix}
            billing.cancel(sub, at_next_billing_date=at_next, actor=actor, **details)
        elif body.cancel_at_next_billing_date is False and sub.cancel_at_next_billing_date:
            billing.undo_cancel(sub)
        if "billing" in sent or "metadata" in sent:
            billing.update_details(sub, billing=body.billing.model_dump() if body.billing else None,
                                   metadata=(body.metadata or {}) if "metadata" in sent else None)
    return _show(sub)


def _payment_answer(payment) -> dict:
    payment = payment.refresh() if payment is not None else None
    return {"payment_id": payment.id if payment else None,
            "payment_link": payment.action_url if payment else None,
            "client_secret": None, "expires_on": None}


@route("POST", "/subscriptions/{subscription_id}/change-plan", tag=TAG, body=schemas.ChangePlan,
       response=schemas.PaymentLinkAnswer, errors=(409,))
def change_plan(subscription_id: str, body: schemas.ChangePlan):
    """Move to another recurring product or quantity. An upgrade is charged now, prorated to
    the day, and applies once paid (``payment_id``); a downgrade applies at the next billing
    date."""
    sub, product, options = _plan_change(subscription_id, body)
    return _payment_answer(billing.change_plan(sub, product, body.quantity, **options))


def _plan_change(subscription_id: str, body: schemas.ChangePlan):
    """The subscription, the product it would move to and the change's options (``addons``,
    ``effective_at``); 409 ``PLAN_UNCHANGED`` when that is the product, quantity and add-ons
    it already has (the portal offers only other plans)."""
    sub = scoped(Subscription, subscription_id, "subscription")
    product = scoped(Product, body.product_id, "product")
    addons = ([{"addon_id": item.addon_id, "quantity": item.quantity} for item in body.addons]
              if body.addons is not None else None)
    same_addons = addons is None or sorted((a["addon_id"], a["quantity"]) for a in addons) == sorted(
        (a["addon_id"], a["quantity"]) for a in sub.addons)
    if product.id == sub.product_id and body.quantity == sub.quantity and same_addons:
        raise ApiError(409, "PLAN_UNCHANGED",
                       "The subscription already has this product, quantity and add-ons.")
    return sub, product, {"addons": addons, "effective_at": body.effective_at or "immediately"}


@route("DELETE", "/subscriptions/{subscription_id}/change-plan/scheduled", tag=TAG, errors=(409,))
def cancel_change_plan(subscription_id: str):
    """Drop a downgrade scheduled for the next billing date (409 when there is none)."""
    billing.cancel_scheduled_change(scoped(Subscription, subscription_id, "subscription"))


@route("POST", "/subscriptions/{subscription_id}/change-plan/preview", tag=TAG,
       body=schemas.ChangePlan, response=schemas.PlanChangePreview, errors=(409,))
def preview_change_plan(subscription_id: str, body: schemas.ChangePlan):
    """What a plan change would charge now and the subscription it would leave, changing
    nothing."""
    sub, product, options = _plan_change(subscription_id, body)
    preview = billing.preview_plan_change(sub, product, body.quantity, **options)
    lines = []
    if preview.charge:
        period = (sub.next_billing_date - sub.previous_billing_date).days or 1
        left = max((sub.next_billing_date - datetime.now(UTC)).days, 0)
        factor = 1 if preview.new_cycle else round(left / period, 4)
        ids = [item["addon_id"] for item in preview.charge["lines"] if item.get("addon_id")]
        addons = {a.id: a for a in Addon.select().where(Addon.id.in_(ids))} if ids else {}
        for item in preview.charge["lines"]:
            common = {"currency": sub.currency, "quantity": item["quantity"],
                      "unit_price": item["unit_amount"], "proration_factor": factor,
                      "tax_inclusive": preview.charge["tax_inclusive"],
                      "tax": preview.tax_due if item is preview.charge["lines"][0] else 0,
                      "tax_rate": preview.price["tax_rate_bps"] / 10000}
            addon = addons.get(item.get("addon_id"))
            if addon is not None:  # Dodo's add-on line item
                lines.append({**common, "id": addon.id, "type": "addon", "name": addon.name,
                              "description": addon.description, "tax_category": addon.tax_category})
            else:
                lines.append({**common, "id": sub.id, "type": "subscription", "product_id": product.id,
                              "name": item["product_name"], "description": product.description})
    credits = preview.charge["credit_applied"] if preview.charge else 0
    summary = {"currency": sub.currency, "total_amount": preview.amount_due, "tax": preview.tax_due,
               "settlement_amount": preview.amount_due, "settlement_currency": sub.currency,
               "settlement_tax": preview.tax_due, "customer_credits": credits,
               "customer_credits_currency": sub.currency}
    price = preview.price
    new_plan = {**payloads.subscription(sub), "product_id": product.id, "product_name": product.name,
                "quantity": body.quantity, "tax_inclusive": price["tax_inclusive"],
                "recurring_pre_tax_amount": preview.new_recurring_pre_tax_amount,
                "addons": [{"addon_id": a["addon_id"], "quantity": a["quantity"]}
                           for a in price["addons"]],
                "payment_frequency_count": price["payment_frequency_count"],
                "payment_frequency_interval": price["payment_frequency_interval"],
                "next_billing_date": payloads.iso(preview.next_billing_date)}
    if preview.new_cycle and preview.upgrade:
        new_plan["previous_billing_date"] = payloads.iso(preview.effective_at)
    return {"immediate_charge": {"effective_at": payloads.iso(preview.effective_at),
                                 "line_items": lines, "summary": summary},
            "new_plan": new_plan, "dropped_addons": list(preview.dropped_addons),
            "replaces_scheduled_change": payloads.scheduled_change(sub)}


@route("POST", "/subscriptions/{subscription_id}/update-payment-method", tag=TAG,
       body=schemas.UpdatePaymentMethod, response=schemas.PaymentLinkAnswer, errors=(409,))
def update_payment_method(subscription_id: str, body):
    """Charge the subscription to another payment method. ``existing``: a saved method of the
    customer; for an ``on_hold`` subscription this charges the arrears (``payment_id``) and,
    once paid, makes it active again. ``new``: ``payment_link`` is the provider's card form,
    which sends the customer back to ``return_url`` (default: this subscription's page in the
    portal) with ``?payment_method=<id>``."""
    sub = scoped(Subscription, subscription_id, "subscription")
    if isinstance(body, schemas.ExistingPaymentMethod):
        method = _payment_method(sub.customer, body.payment_method_id)
        return _payment_answer(billing.update_payment_method(sub, method))
    if sub.status not in ("active", "on_hold"):
        raise ApiError(409, "SUBSCRIPTION_INACTIVE",
                       f"The subscription is {sub.status}: its payment method cannot change.")
    try:
        provider = registry().provider_for(g.mode)
    except MissingPlugin as error:
        raise ApiError(409, "NO_PAYMENT_PROVIDER", str(error)) from None
    base = current_app.config["BASE_URL"]
    back = body.return_url or base + url_for("portal.card_added", subscription_id=sub.id)
    link = provider.setup_url(customer=sub.customer, return_url=back)
    return {"payment_id": None, "payment_link": base + link if link.startswith("/") else link,
            "client_secret": None, "expires_on": None}
