"""Demo data: a business with test- and live-mode customers, products, subscriptions in every
state, paid invoices and license keys, so a new install has something real to click through.

Seeding is idempotent: the records are made once, inside one transaction; each run then
hands out fresh magic links and a fresh test-mode API key (the previous demo key is removed).
"""

from datetime import timedelta

from dateutil.relativedelta import relativedelta

from core.auth import create_api_key, create_merchant_user, issue_token
from core.billing import issue_invoice, period_label, split_tax
from core.models import (
    ApiKey,
    Business,
    Customer,
    LicenseKeyInstance,
    MerchantUser,
    Payment,
    PaymentMethod,
    Product,
    Subscription,
    db,
    utcnow,
)
from core.plugins import registry

DEMO_BUSINESS = "Acme Software"
MERCHANT_EMAIL = "owner@acme.example"
MERCHANT_PASSWORD = "portico-demo"  # a demo login, printed for the developer
VAT_BPS = 2000

PRODUCTS = [
    {"name": "Acme Pro", "description": "Everything a freelancer needs.", "price": 1500,
     "is_recurring": True},
    {"name": "Acme Team", "description": "Pro for up to ten people.", "price": 4900,
     "is_recurring": True},
    {"name": "Acme Desktop", "description": "The desktop app, yours to keep.", "price": 9900,
     "is_recurring": False, "license_key_enabled": True, "license_key_activations_limit": 3},
]

# (mode, e-mail, name, locale, card, story)
CUSTOMERS = [
    ("test", "ann@example.com", "Ann Martin", "en", "pm_card_visa", "active"),
    ("test", "bruno@example.com", "Bruno Durand", "fr", "pm_card_visa", "on_hold"),
    ("test", "chloe@example.com", "Chloé Petit", "fr", "pm_card_mastercard", "cancelled"),
    ("live", "dana@example.com", "Dana Smith", "en", "pm_card_visa", "active"),
]


def seed(app) -> dict:
    """Make the demo records if they are missing; return links, login and a fresh API key."""
    with db.atomic():
        business = Business.get_or_none(Business.name == DEMO_BUSINESS)
        if business is None:
            business = _create_records()
        if MerchantUser.get_or_none(MerchantUser.email == MERCHANT_EMAIL) is None:
            create_merchant_user(business, MERCHANT_EMAIL, MERCHANT_PASSWORD, name="Acme owner")
        ApiKey.delete().where((ApiKey.business == business) & (ApiKey.name == "demo")).execute()
        _, api_key = create_api_key(business, "test", "demo")
    base = app.config["BASE_URL"]
    links = []
    for customer in Customer.select().where(Customer.business == business).order_by(
            Customer.mode, Customer.email):
        token = issue_token(customer, "magic_link", app.config["MAGIC_LINK_TTL"])
        links.append({"mode": customer.mode, "email": customer.email,
                      "customer_id": customer.id, "link": f"{base}/session/{token}"})
    return {
        "business": {"id": business.id, "name": business.name},
        "static_links": {"live": f"{base}/login/{business.id}",
                         "test": f"{base}/test/login/{business.id}"},
        "magic_links": links,
        "merchant": {"url": f"{base}/dashboard", "email": MERCHANT_EMAIL,
                     "password": MERCHANT_PASSWORD},
        "api_key": api_key,
        "api_base_url": f"{base}/api",
    }


def _create_records() -> Business:
    business = Business.create(
        name=DEMO_BUSINESS, legal_name="Acme Software SAS",
        address="12 rue de la Paix\n75002 Paris\nFrance", tax_id="FR12345678901",
        support_email="support@acme.example", brand_color="#0f766e",
        default_return_url="https://acme.example/account")
    products = {}
    for mode in ("test", "live"):
        for spec in PRODUCTS:
            products[mode, spec["name"]] = Product.create(
                business=business, mode=mode, currency="EUR", tax_rate_bps=VAT_BPS,
                subscription_period_count=10, **spec)
    for mode, email, name, locale, card, story in CUSTOMERS:
        customer = Customer.create(
            business=business, mode=mode, email=email, name=name, preferred_locale=locale,
            billing_address={"street": "1 Demo Street", "city": "Paris", "state": None,
                             "zipcode": "75001", "country": "FR"})
        method = _save_card(customer, card)
        _STORIES[story](customer, method, products)
    return business


def _save_card(customer, source):
    provider = registry().provider("sandbox")
    card = provider.tokenize(customer=customer, source=source)
    return PaymentMethod.save_card(customer, provider.name, card)


def _pay(customer, method, product, kind, when, period=None, subscription=None):
    """A charge through the sandbox provider, recorded as a payment, invoiced when it succeeds."""
    label = period_label(product.name, *period) if period else product.name
    lines = [{"description": label, "quantity": 1, "unit_amount": product.price,
              "amount": product.price}]  # as sold: tax included for a tax-inclusive price
    total, tax = split_tax(product.price, product.tax_rate_bps, product.tax_inclusive)
    payment = Payment.create(
        business=customer.business_id, mode=customer.mode, customer=customer,
        subscription=subscription, product=product, payment_method=method, kind=kind,
        amount=total, tax=tax, currency=product.currency, description=product.name,
        provider=method.provider, idempotency_key=f"demo-{customer.id}-{product.id}-{when:%Y%m%d}",
        period_start=period[0] if period else None, period_end=period[1] if period else None,
        metadata={"lines": lines, "charge": {"tax_inclusive": product.tax_inclusive}},
        created_at=when, updated_at=when)
    result = registry().provider(method.provider).charge(
        payment_method=method, amount=payment.amount, currency=payment.currency,
        idempotency_key=payment.idempotency_key, description=product.name)
    payment.status = "succeeded" if result.succeeded else "failed"
    payment.provider_reference = result.reference
    payment.failure_code, payment.failure_message = result.failure_code, result.failure_message
    payment.attempts = 1
    payment.save()
    if result.succeeded:
        issue_invoice(payment, lines)
    return payment


def _subscribe(customer, method, product, started, paid_periods, **fields):
    """A monthly subscription started at ``started`` with ``paid_periods`` paid so far."""
    periods = [(started + relativedelta(months=n), started + relativedelta(months=n + 1))
               for n in range(paid_periods)]
    subscription = Subscription.create(
        business=customer.business_id, mode=customer.mode, customer=customer, product=product,
        status="active", currency=product.currency, recurring_pre_tax_amount=product.price,
        unit_amount=product.price, tax_rate_bps=product.tax_rate_bps,
        tax_inclusive=product.tax_inclusive,
        expires_at=started + relativedelta(years=product.subscription_period_count),
        payment_method=method, billing_anchor=started, cycles=paid_periods - 1,
        previous_billing_date=periods[-1][0],
        next_billing_date=periods[-1][1], created_at=started,
        billing=customer.billing_address, **fields)
    for number, period in enumerate(periods):
        _pay(customer, method, product, "new" if number == 0 else "renewal", period[0],
             period, subscription)
    return subscription


def _active(customer, method, products):
    now = utcnow()
    _subscribe(customer, method, products[customer.mode, "Acme Pro"], now - timedelta(days=70), 3)
    desktop = products[customer.mode, "Acme Desktop"]
    payment = _pay(customer, method, desktop, "new", now - timedelta(days=40))
    key = registry().license_source(desktop.license_source).issue(
        product=desktop, customer=customer, activations_limit=desktop.license_key_activations_limit,
        expires_at=None, payment=payment)
    LicenseKeyInstance.create(license_key=key, name="Work laptop")
    key.instances_count = 1
    key.save()


def _on_hold(customer, method, products):
    """Two paid months, then a switch to a card that declined the renewal: on hold, waiting
    for the customer to pick a working card."""
    team = products[customer.mode, "Acme Team"]
    started = utcnow() - timedelta(days=65)
    subscription = _subscribe(customer, method, team, started, 2)
    declined = _save_card(customer, "pm_card_chargeDeclined")
    due = subscription.next_billing_date
    _pay(customer, declined, team, "renewal", due, (due, due + relativedelta(months=1)),
         subscription)
    subscription.payment_method = declined
    subscription.status = "on_hold"
    subscription.save()


def _cancelled(customer, method, products):
    started = utcnow() - timedelta(days=100)
    subscription = _subscribe(customer, method, products[customer.mode, "Acme Pro"], started, 2)
    subscription.status = "cancelled"
    subscription.cancelled_at = subscription.next_billing_date - timedelta(days=3)
    subscription.cancelled_by = {"actor_type": "customer", "email": customer.email,
                                 "name": customer.name}
    subscription.cancellation_feedback = "unused"
    subscription.save()


_STORIES = {"active": _active, "on_hold": _on_hold, "cancelled": _cancelled}
