"""Records as merchants see them: the Dodo Payments shapes used by webhooks and the merchant API.

One function per record, so an event recorded in the outbox and the API's answer for the same
record always agree. Times are ISO 8601 in UTC; money is integer minor units.
"""

from core.models import Customer, LicenseKey, Payment, Subscription


def iso(value):
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def customer_limited(customer: Customer) -> dict:
    return {"customer_id": customer.id, "email": customer.email, "name": customer.name,
            "metadata": customer.metadata or {}, "phone_number": customer.phone_number}


def customer(record: Customer) -> dict:
    return {**customer_limited(record), "business_id": record.business_id,
            "created_at": iso(record.created_at), "preferred_locale": record.preferred_locale,
            "blocked_at": iso(record.blocked_at), "blocklist_entry_id": None}


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
        "scheduled_change": sub.scheduled_change, "metadata": sub.metadata or {},
        "created_at": iso(sub.created_at), "on_demand": False, "meters": [],
        "credit_entitlement_cart": [], "meter_credit_entitlement_cart": [], "discounts": [],
        "tax_id": sub.customer.tax_id, "customer_business_name": None, "paused_at": None,
        "trial_amount": None, "discount_id": None, "discount_cycles_remaining": None,
        "custom_field_responses": None,
    }


PAYMENT_STATUS = {"processing": "processing", "succeeded": "succeeded", "failed": "failed",
                  "requires_customer_action": "requires_customer_action"}


def payment(pay: Payment) -> dict:
    """A ``Payment`` as Dodo's API and its ``payment.*`` webhooks show it."""
    method = pay.payment_method
    invoice = pay.invoices.first() if pay.status == "succeeded" else None
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
        "product_cart": [{"product_id": pay.product_id, "quantity": 1}] if pay.product_id else None,
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
        "invoice_url": None, "retry_attempt": max(pay.attempts - 1, 0),
        "service_periods": period, "refunds": [], "disputes": [], "metadata": pay.metadata or {},
        "digital_products_delivered": False, "includes_usage": False,
        "is_multi_subscription": False, "created_at": iso(pay.created_at),
        "updated_at": iso(pay.updated_at), "discount_id": None, "discounts": None,
        "checkout_session_id": None, "custom_field_responses": None, "refund_status": None,
        "three_ds_flow": None, "three_ds_status": None, "three_ds_version": None,
        "product_name": pay.product.name if pay.product_id else pay.description,
    }


def license_key(key: LicenseKey) -> dict:
    """A ``LicenseKey`` as Dodo's API and its ``license_key.created`` webhook show it."""
    return {"id": key.id, "business_id": key.business_id, "customer_id": key.customer_id,
            "product_id": key.product_id, "payment_id": key.payment_id,
            "subscription_id": key.subscription_id, "key": key.key, "status": key.status,
            "activations_limit": key.activations_limit, "instances_count": key.instances_count,
            "expires_at": iso(key.expires_at), "created_at": iso(key.created_at),
            "source": "auto"}
