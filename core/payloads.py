"""Records as merchants see them: the Dodo Payments shapes used by webhooks and the merchant API.

One function per record, so an event recorded in the outbox and the API's answer for the same
record always agree. Times are ISO 8601 in UTC; money is integer minor units.
"""

from flask import current_app

from core.models import (
    Addon,
    Customer,
    Discount,
    LicenseKey,
    LicenseKeyInstance,
    Payment,
    PaymentMethod,
    Product,
    Refund,
    Subscription,
    WebhookEndpoint,
)


def iso(value):
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def metadata(value) -> dict:
    """A record's metadata as Dodo shows it: its text, number and true/false values only (the
    billing core keeps its own details, such as invoice lines, beside the merchant's)."""
    return {key: item for key, item in (value or {}).items()
            if isinstance(item, str | int | float | bool)}


def customer_limited(customer: Customer) -> dict:
    return {"customer_id": customer.id, "email": customer.email, "name": customer.name,
            "metadata": metadata(customer.metadata), "phone_number": customer.phone_number}


def customer(record: Customer) -> dict:
    return {**customer_limited(record), "business_id": record.business_id,
            "created_at": iso(record.created_at), "preferred_locale": record.preferred_locale,
            "blocked_at": iso(record.blocked_at), "blocklist_entry_id": None,
            "billing_address": billing_address(record.billing_address) if record.billing_address
            else None, "tax_id": record.tax_id}


def billing_address(value) -> dict:
    value = value or {}
    return {"country": value.get("country") or "US", "city": value.get("city"),
            "state": value.get("state"), "street": value.get("street"),
            "zipcode": value.get("zipcode")}


def subscription(sub: Subscription) -> dict:
    """A ``Subscription`` as Dodo's API and its ``subscription.*`` webhooks show it."""
    return {
        "subscription_id": sub.id, "brand_id": sub.business_id, "status": sub.status,
        "product_id": sub.product_id, "product_name": sub.product.name,
        "customer": customer_limited(sub.customer), "quantity": sub.quantity,
        "addons": [{"addon_id": a["addon_id"], "quantity": a["quantity"]} for a in sub.addons],
        "currency": sub.currency, "recurring_pre_tax_amount": sub.recurring_pre_tax_amount,
        "tax_inclusive": sub.tax_inclusive, "billing": billing_address(sub.billing),
        "payment_frequency_count": sub.payment_frequency_count,
        "payment_frequency_interval": sub.payment_frequency_interval,
        "subscription_period_count": sub.subscription_period_count,
        "subscription_period_interval": sub.subscription_period_interval,
        "trial_period_days": sub.trial_period_days,
        "previous_billing_date": iso(sub.previous_billing_date),
        "next_billing_date": iso(sub.next_billing_date), "expires_at": iso(sub.expires_at),
        "cancel_at_next_billing_date": sub.cancel_at_next_billing_date,
        "cancelled_at": iso(sub.cancelled_at), "cancelled_by": sub.cancelled_by,
        "cancellation_feedback": sub.cancellation_feedback,
        "cancellation_comment": sub.cancellation_comment,
        "payment_method_id": sub.payment_method_id, "has_payment_method": bool(sub.payment_method_id),
        "scheduled_change": scheduled_change(sub), "metadata": metadata(sub.metadata),
        "created_at": iso(sub.created_at), "on_demand": False, "meters": [],
        "credit_entitlement_cart": [], "meter_credit_entitlement_cart": [],
        "discounts": subscription_discounts(sub),
        "tax_id": sub.customer.tax_id, "customer_business_name": None, "paused_at": iso(sub.paused_at),
        "trial_amount": None, "discount_id": sub.discount["discount_id"] if sub.discount else None,
        "discount_cycles_remaining": sub.discount_cycles_remaining if sub.discount else None,
        "custom_field_responses": None,
    }


def discount(record: Discount) -> dict:
    """A ``Discount`` as Dodo's API shows it (``amount``: basis points for ``percentage``,
    minor units for ``flat``)."""
    return {"discount_id": record.id, "business_id": record.business_id, "code": record.code,
            "name": record.name, "type": record.type, "amount": record.amount,
            "created_at": iso(record.created_at), "expires_at": iso(record.expires_at),
            "starts_at": iso(record.starts_at), "subscription_cycles": record.subscription_cycles,
            "usage_limit": record.usage_limit, "times_used": record.times_used,
            "per_customer_usage_limit": None, "customer_eligibility": "any",
            "restricted_to": list(record.restricted_to or []),
            "preserve_on_plan_change": record.preserve_on_plan_change,
            "metadata": metadata(record.metadata), "currency_options": []}


def subscription_discounts(sub: Subscription) -> list[dict]:
    """The discount a subscription was given, as Dodo's ``DiscountDetail`` list (one at most):
    the code as it is now (as it was given, once deleted), with the cycles it has left."""
    if not sub.discount:
        return []
    given = sub.discount
    record = Discount.get_or_none(Discount.id == given["discount_id"])
    shown = discount(record) if record is not None else {
        "discount_id": given["discount_id"], "business_id": sub.business_id, "code": given["code"],
        "name": given.get("name"), "type": given["type"], "amount": given["amount"],
        "created_at": iso(sub.created_at), "expires_at": None, "usage_limit": None,
        "times_used": 0, "restricted_to": [], "metadata": {},
        "preserve_on_plan_change": bool(given.get("preserve_on_plan_change"))}
    return [{key: shown[key] for key in (
        "discount_id", "business_id", "code", "name", "type", "amount", "created_at",
        "expires_at", "usage_limit", "times_used", "restricted_to", "metadata",
        "preserve_on_plan_change")}
        | {"position": 0, "subscription_cycles": given.get("subscription_cycles"),
           "cycles_remaining": sub.discount_cycles_remaining,
           "discount_cycles_remaining": sub.discount_cycles_remaining}]  # the list's name for it


def scheduled_change(sub: Subscription) -> dict | None:
    """A downgrade waiting for the next billing date, as Dodo's ``ScheduledPlanChange``."""
    change = sub.scheduled_change
    if not change:
        return None
    addons = (change.get("price") or {}).get("addons", sub.addons)
    names = {a.id: a.name for a in Addon.select(Addon.id, Addon.name).where(
        Addon.id.in_([item["addon_id"] for item in addons]))} if addons else {}
    return {"id": change.get("id") or f"spc_{sub.id}", "product_id": change["product_id"],
            "product_name": change.get("product_name"), "product_description": None,
            "quantity": change["quantity"], "effective_at": change["effective_at"],
            "created_at": change.get("created_at") or iso(sub.updated_at),
            "addons": [{"addon_id": item["addon_id"], "name": names.get(item["addon_id"], ""),
                        "quantity": item["quantity"]} for item in addons]}


def invoice_url(payment_id: str) -> str:
    """Where the invoice PDF of a payment is fetched with an API key."""
    return f"{current_app.config['BASE_URL']}/api/invoices/payments/{payment_id}"


PAYMENT_STATUS = {"processing": "processing", "succeeded": "succeeded", "failed": "failed",
                  "requires_customer_action": "requires_customer_action"}


def payment(pay: Payment) -> dict:
    """A ``Payment`` as Dodo's API and its ``payment.*`` webhooks show it."""
    method = pay.payment_method
    invoice = next(iter(pay.invoices), None) if pay.status == "succeeded" else None
    refunds = list(pay.refunds.order_by(Refund.created_at, Refund.id)) if pay.status == "succeeded" else []
    refunded = sum(r.amount for r in refunds if r.status == "succeeded")
    period = ([{"subscription_id": pay.subscription_id, "starts_at": iso(pay.period_start),
                "ends_at": iso(pay.period_end), "proration_factor": "1"}]
              if pay.subscription_id and pay.period_start else [])
    return {
        "payment_id": pay.id, "business_id": pay.business_id, "brand_id": pay.business_id,
        "status": PAYMENT_STATUS[pay.status], "total_amount": pay.amount, "tax": pay.tax,
        "currency": pay.currency, "settlement_amount": pay.amount,
        "settlement_currency": pay.currency, "settlement_tax": pay.tax,
        "customer": customer_limited(pay.customer), "billing": billing_address(pay.customer.billing_address),
        "subscription_id": pay.subscription_id,
        "subscription_ids": [pay.subscription_id] if pay.subscription_id else [],
        "charge_type": {"arrears": "renewal"}.get(pay.kind, pay.kind),
        "is_update_payment_method": pay.kind == "arrears",
        "product_cart": [{"product_id": pay.product_id, "quantity": _plan_quantity(pay)}]
        if pay.product_id else None,
        "invoice_lines": [{key: item.get(key) for key in ("description", "quantity", "unit_amount",
                                                           "amount")}
                          for item in (pay.metadata or {}).get("lines", ())],
        "tax_inclusive": bool(((pay.metadata or {}).get("charge") or {}).get("tax_inclusive")),
        "credit_applied": int(((pay.metadata or {}).get("charge") or {}).get("credit_applied") or 0),
        "payment_method_id": pay.payment_method_id,
        "payment_method": "card" if method else None, "payment_method_type": "card" if method else None,
        "card_network": method.brand if method else None,
        "card_last_four": method.last4 if method else None,
        "card_exp_month": f"{method.exp_month:02d}" if method and method.exp_month else None,
        "card_exp_year": str(method.exp_year) if method and method.exp_year else None,
        "card_type": "credit" if method else None, "card_holder_name": None,
        "card_issuing_country": None, "payment_provider": "dodo",
        "error_code": pay.failure_code, "error_message": pay.failure_message,
        "payment_link": pay.action_url, "invoice_id": invoice.id if invoice else None,
        "invoice_url": invoice_url(pay.id) if invoice else None,
        "retry_attempt": max(pay.attempts - 1, 0),
        "service_periods": period, "refunds": [refund_list_item(r) for r in refunds],
        "disputes": [], "metadata": metadata(pay.metadata),
        "digital_products_delivered": False, "includes_usage": False,
        "is_multi_subscription": False, "created_at": iso(pay.created_at),
        "updated_at": iso(pay.updated_at),
        "discount_id": next((item.get("discount_id") for item in (pay.metadata or {}).get("lines", ())
                             if item.get("kind") == "discount"), None),
        "discounts": None,
        "checkout_session_id": None, "custom_field_responses": None,
        "refund_status": (None if not refunded else "full" if refunded >= pay.amount else "partial"),
        "three_ds_flow": None, "three_ds_status": None, "three_ds_version": None,
        "product_name": pay.product.name if pay.product_id else pay.description,
    }


def _plan_quantity(pay: Payment) -> int:
    """How many of its product a payment paid for (its first line's quantity)."""
    lines = (pay.metadata or {}).get("lines") or [{}]
    return int(lines[0].get("plan_quantity") or lines[0].get("quantity") or 1)


REFUND_STATUS = {"pending": "pending", "succeeded": "succeeded", "failed": "failed"}


def refund_list_item(record: Refund) -> dict:
    """A ``Refund`` as Dodo lists it (``RefundListItem``)."""
    return {"refund_id": record.id, "business_id": record.business_id,
            "created_at": iso(record.created_at), "payment_id": record.payment_id,
            "is_partial": record.amount < record.payment.amount,
            "status": REFUND_STATUS[record.status], "amount": record.amount,
            "currency": record.currency, "reason": record.reason, "network_reference": None,
            "network_reference_type": None, "network_reference_updated_at": None}


def refund(record: Refund) -> dict:
    """A ``Refund`` as Dodo's API and its ``refund.*`` webhooks show it."""
    return {**refund_list_item(record), "brand_id": record.business_id,
            "customer": customer_limited(record.customer), "metadata": metadata(record.metadata)}


def license_key(key: LicenseKey) -> dict:
    """A ``LicenseKey`` as Dodo's API and its ``license_key.created`` webhook show it."""
    return {"id": key.id, "business_id": key.business_id, "brand_id": key.business_id,
            "customer_id": key.customer_id, "product_id": key.product_id,
            "payment_id": key.payment_id, "subscription_id": key.subscription_id, "key": key.key,
            "status": key.status, "activations_limit": key.activations_limit,
            "instances_count": key.instances_count, "expires_at": iso(key.expires_at),
            "created_at": iso(key.created_at), "source": key.origin}


def license_key_instance(instance: LicenseKeyInstance, business_id: str) -> dict:
    """An activation of a license key, as Dodo's ``LicenseKeyInstance``."""
    return {"id": instance.id, "business_id": business_id, "license_key_id": instance.license_key_id,
            "name": instance.name, "created_at": iso(instance.created_at)}


def license_activation(instance: LicenseKeyInstance, key: LicenseKey) -> dict:
    """A fresh activation as the public ``/licenses/activate`` answers it."""
    return {**license_key_instance(instance, key.business_id),
            "customer": customer_limited(key.customer),
            "product": {"product_id": key.product_id, "name": key.product.name}}


# --- Catalogue ---------------------------------------------------------------------------------


def price(product: Product) -> dict:
    """A product's price as Dodo's ``Price`` union: ``one_time_price`` or ``recurring_price``."""
    common = {"currency": product.currency, "price": product.price, "discount": 0,
              "discount_bps": None, "purchasing_power_parity": False,
              "tax_inclusive": product.tax_inclusive}
    if not product.is_recurring:
        return {"type": "one_time_price", **common, "pay_what_you_want": False,
                "suggested_price": None}
    return {"type": "recurring_price", **common,
            "payment_frequency_count": product.payment_frequency_count,
            "payment_frequency_interval": product.payment_frequency_interval,
            "subscription_period_count": product.subscription_period_count,
            "subscription_period_interval": product.subscription_period_interval,
            "trial_period_days": product.trial_period_days,
            "trial_payment_method_optional": product.trial_payment_method_optional}


def _product_common(record: Product) -> dict:
    return {"product_id": record.id, "business_id": record.business_id, "name": record.name,
            "description": record.description, "image": None, "is_recurring": record.is_recurring,
            "tax_category": record.tax_category, "metadata": metadata(record.metadata),
            "entitlements": [], "pricing_mode": None, "created_at": iso(record.created_at),
            "updated_at": iso(record.updated_at)}


def product(record: Product, addon_ids: list[str]) -> dict:
    """A ``Product`` as Dodo's API shows one; ``tax_rate_bps`` is Portico's own."""
    duration = ({"count": record.license_key_duration_count,
                 "interval": record.license_key_duration_interval}
                if record.license_key_duration_count and record.license_key_duration_interval else None)
    return {**_product_common(record), "brand_id": record.business_id, "price": price(record),
            "tax_rate_bps": record.tax_rate_bps, "license_key_enabled": record.license_key_enabled,
            "license_key_activations_limit": record.license_key_activations_limit,
            "license_key_duration": duration,
            "license_key_activation_message": record.license_key_activation_message,
            "addons": addon_ids, "credit_entitlements": [], "digital_product_delivery": None,
            "product_collection_id": None, "archived": record.archived}


def product_list_item(record: Product) -> dict:
    """A product as Dodo's product list shows it: the price flattened, and in ``price_detail``."""
    return {**_product_common(record), "price": record.price, "currency": record.currency,
            "tax_inclusive": record.tax_inclusive, "price_detail": price(record)}


def addon(record: Addon) -> dict:
    """An add-on as Dodo's ``AddonResponse``."""
    return {"id": record.id, "business_id": record.business_id, "name": record.name,
            "description": record.description, "image": None, "price": record.price,
            "currency": record.currency, "tax_category": record.tax_category,
            "archived": record.archived, "created_at": iso(record.created_at),
            "updated_at": iso(record.updated_at)}


def payment_method(method: PaymentMethod) -> dict:
    """A saved card as Dodo lists a customer's payment methods: display details only."""
    return {"payment_method_id": method.id, "payment_method": "card",
            "payment_method_type": "credit", "recurring_enabled": True,
            "last_used_at": iso(method.last_used_at),
            "card": {"card_network": method.brand or None, "last4_digits": method.last4 or None,
                     "expiry_month": f"{method.exp_month:02d}" if method.exp_month else None,
                     "expiry_year": str(method.exp_year) if method.exp_year else None,
                     "card_type": "credit", "card_holder_name": None, "card_issuing_country": None}}


def webhook_endpoint(endpoint: WebhookEndpoint) -> dict:
    """A webhook endpoint as Dodo's ``WebhookDetails`` (its secret has its own call)."""
    return {"id": endpoint.id, "url": endpoint.url, "description": endpoint.description or "",
            "metadata": {k: str(v) for k, v in (endpoint.metadata or {}).items()},
            "disabled": endpoint.disabled, "filter_types": endpoint.filter_types or [],
            "rate_limit": endpoint.rate_limit, "created_at": iso(endpoint.created_at),
            "updated_at": iso(endpoint.updated_at)}
