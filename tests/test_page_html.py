"""The portal's pages read exactly as they did before the requests behind them were made
leaner: the HTML of each page, in English and French, against a copy kept in ``tests/pages/``.

A deliberate change of a page's wording or layout updates the copies with
``PORTICO_TEST_WRITE_PAGES=1 pytest tests/test_page_html.py`` (then review the diff).
"""

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import time_machine
from conftest import csrf_token

from core import auth
from core.models import (
    Business,
    Customer,
    Invoice,
    LicenseKey,
    LicenseKeyInstance,
    Payment,
    PaymentMethod,
    Product,
    Subscription,
)

PAGES = Path(__file__).resolve().parent / "pages"
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
PATHS = {"overview": "/portal/", "billing": "/portal/billing", "subscriptions": "/portal/subscriptions",
         "subscription": "/portal/subscriptions/sub_pages", "payment": "/portal/payments/pay_pages_2",
         "licenses": "/portal/licenses", "profile": "/portal/profile"}


def history(locale: str):
    """A customer with a subscription, a card, three payments (two invoiced, one declined) and
    a license key in use, all with fixed ids and times."""
    business = Business.create(id="bus_pages", name="Acme Software", legal_name="Acme Software SAS",
                               address="12 rue de la Paix\n75002 Paris", brand_color="#0f766e",
                               created_at=NOW - timedelta(days=400))
    common = {"business": business, "mode": "test"}
    customer = Customer.create(id="cus_pages", **common, email="ann@example.com", name="Ann Martin",
                               preferred_locale=locale, created_at=NOW - timedelta(days=300))
    product = Product.create(id="pdt_pages", **common, name="Acme Pro", price=1500, currency="EUR",
                             is_recurring=True, tax_rate_bps=2000, license_key_enabled=True)
    Product.create(id="pdt_pages_team", **common, name="Acme Team", price=4500, currency="EUR",
                   is_recurring=True, tax_rate_bps=2000)
    card = PaymentMethod.create(id="pm_pages", **common, customer=customer, provider="sandbox",
                                provider_token="pm_card_visa", brand="visa", last4="4242",
                                exp_month=12, exp_year=2040)
    sub = Subscription.create(id="sub_pages", **common, customer=customer, product=product,
                              status="active", currency="EUR", recurring_pre_tax_amount=1500,
                              payment_method=card, billing_anchor=NOW - timedelta(days=45),
                              previous_billing_date=NOW - timedelta(days=14),
                              next_billing_date=NOW + timedelta(days=17), cycles=1,
                              created_at=NOW - timedelta(days=45))
    for n, (kind, status, days) in enumerate([("new", "succeeded", 45), ("renewal", "succeeded", 14),
                                              ("renewal", "failed", 13)], start=1):
        payment = Payment.create(
            id=f"pay_pages_{n}", **common, customer=customer, subscription=sub, product=product,
            payment_method=card, kind=kind, status=status, amount=1800, tax=300, currency="EUR",
            description="Acme Pro", idempotency_key=f"ik_pages_{n}",
            period_start=NOW - timedelta(days=days), period_end=NOW + timedelta(days=30 - days),
            failure_code="card_declined" if status == "failed" else None,
            created_at=NOW - timedelta(days=days), updated_at=NOW - timedelta(days=days))
        if status == "succeeded":
            Invoice.create(id=f"inv_pages_{n}", **common, customer=customer, payment=payment,
                           number=n, issued_at=payment.created_at, currency="EUR",
                           lines=[{"amount": 1500, "description": "Acme Pro", "quantity": 1,
                                   "unit_amount": 1500}], subtotal=1500, tax=300, total=1800,
                           seller={"name": "Acme Software"}, buyer={"name": "Ann Martin"},
                           payment_details={"method": "Visa •••• 4242", "status": "paid"})
    key = LicenseKey.create(id="lic_pages", **common, customer=customer, product=product,
                            key="7K3QF-XM2PA-9RTVW-4HJKN-BC8DE", activations_limit=3,
                            instances_count=1, created_at=NOW - timedelta(days=45))
    LicenseKeyInstance.create(id="lki_pages", license_key=key, name="Ann's laptop",
                              created_at=NOW - timedelta(days=40))
    return customer


def normalised(html: str) -> str:
    """The page without what differs on every load: CSRF tokens."""
    return re.sub(r'(name="csrf_token"[^>]*value=")[^"]+"', r'\1…"', html)


@pytest.mark.parametrize("locale", ["en", "fr"])
def test_each_portal_page_reads_exactly_as_before(app, client, locale):
    with time_machine.travel(NOW, tick=False):
        customer = history(locale)
        path = urlsplit(auth.sign_in_link(customer)).path
        assert client.post(path, data={"csrf_token": csrf_token(client.get(path).text)}).status_code == 303
        for name, page in PATHS.items():
            answer = client.get(page)
            assert answer.status_code == 200, page
            kept = PAGES / f"{name}.{locale}.html"
            html = normalised(answer.text)
            if os.environ.get("PORTICO_TEST_WRITE_PAGES"):
                kept.write_text(html)
            assert html == kept.read_text(), f"{page} ({locale}) differs from {kept.name}"


def test_amounts_and_dates_formatted_once_per_request_still_follow_a_forced_locale(app):
    from flask_babel import force_locale

    from core.i18n import day, money

    with app.test_request_context(headers={"Accept-Language": "en"}):
        assert money(1800, "EUR") == "€18.00" and day(NOW) == "March 15, 2026"
        with force_locale("fr"):  # an invoice in its customer's language, inside this request
            assert money(1800, "EUR") == "18,00\u00a0€" and day(NOW) == "15 mars 2026"
        assert money(1800, "EUR") == "€18.00" and day(NOW) == "March 15, 2026"
