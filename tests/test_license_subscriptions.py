"""A license key bought with a subscription follows what pays for it: valid while the
subscription is paid (each renewal moves its expiry on, whatever the product's license
duration), ended by a cancellation (at the period end for one at the next billing date), a
failed renewal or the end of the term, and back when the subscription is reactivated. Checked
as a merchant's software sees it: the public ``/api/licenses/validate`` and ``activate``."""

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from conftest import csrf_token

from core import auth, billing, license_terms, payloads
from core.i18n import day
from core.models import LicenseKey, Product

MONTH_LONG_KEYS = {"license_key_enabled": True, "license_key_activations_limit": 3,
                   "license_key_duration_count": 1, "license_key_duration_interval": "Month"}


@pytest.fixture
def licensed(business):
    """A monthly plan whose license keys last one month, as its license settings say."""
    return Product.create(business=business, mode="test", name="Acme Pro", price=1500,
                          currency="EUR", is_recurring=True, tax_rate_bps=2000,
                          subscription_period_count=10, **MONTH_LONG_KEYS)


@pytest.fixture
def grace(app):
    """How long after its billing date a renewal may take to be charged."""
    return license_terms.renewal_time()


def validate(client, key):
    return client.post("/api/licenses/validate", json={"license_key": key.key}).json["valid"]


def activate(client, key, name="laptop"):
    return client.post("/api/licenses/activate", json={"license_key": key.key, "name": name})


def key_of(sub):
    return LicenseKey.get(LicenseKey.subscription == sub.id)


def renew(sub):
    """Let the subscription's billing date pass, with the sweep that renews it."""
    with time_machine.travel(sub.refresh().next_billing_date, tick=False):
        billing.sweep()
    return sub.refresh()


def test_a_subscriptions_key_lasts_its_paid_period_and_the_time_to_renew(customer, licensed,
                                                                          subscribe, grace):
    sub, _ = subscribe(customer, licensed)
    key = key_of(sub)
    assert key.status == "active" and key.expires_at == sub.next_billing_date + grace


def test_each_paid_renewal_moves_the_expiry_on_and_the_key_keeps_validating(
        client, customer, licensed, subscribe, grace):
    sub, _ = subscribe(customer, licensed)
    for _month in range(3):
        sub = renew(sub)
        assert key_of(sub).expires_at == sub.next_billing_date + grace
    with time_machine.travel(sub.previous_billing_date + timedelta(days=3), tick=False):
        assert validate(client, key_of(sub)) is True
        assert activate(client, key_of(sub)).status_code == 201
    assert key_of(sub).status == "active"


def test_a_license_duration_shorter_than_the_cycle_never_expires_a_paid_key(
        client, business, customer, subscribe, grace):
    yearly = Product.create(business=business, mode="test", name="Acme Pro Yearly", price=15000,
                            currency="EUR", is_recurring=True, payment_frequency_interval="Year",
                            subscription_period_count=10, subscription_period_interval="Year",
                            **{**MONTH_LONG_KEYS, "license_key_duration_interval": "Week"})
    sub, _ = subscribe(customer, yearly)
    with time_machine.travel(sub.next_billing_date - timedelta(days=1), tick=False):
        assert validate(client, key_of(sub)) is True
    sub = renew(sub)
    with time_machine.travel(sub.previous_billing_date + timedelta(days=200), tick=False):
        assert validate(client, key_of(sub)) is True
    assert key_of(sub).expires_at == sub.next_billing_date + grace


def test_the_key_validates_while_its_renewal_is_being_charged(client, customer, licensed,
                                                               subscribe):
    sub, _ = subscribe(customer, licensed)
    with time_machine.travel(sub.next_billing_date + timedelta(hours=6), tick=False):
        assert validate(client, key_of(sub)) is True  # the sweep has not renewed it yet


def test_a_declined_renewal_ends_the_key_and_paying_the_arrears_brings_it_back(
        client, customer, licensed, subscribe, save_card, grace):
    sub, _ = subscribe(customer, licensed)
    billing.update_payment_method(sub, save_card(customer, "pm_card_chargeDeclined"))
    sub = renew(sub)
    assert sub.status == "on_hold"
    assert validate(client, key_of(sub)) is False
    refused = activate(client, key_of(sub))
    assert refused.status_code == 403 and refused.json["code"] == "INACTIVE_LICENSE_KEY"
    assert "expired" in refused.json["message"] and key_of(sub).status == "expired"

    billing.update_payment_method(sub, save_card(customer, "pm_card_visa"))
    sub = sub.refresh()
    assert sub.status == "active"
    assert key_of(sub).status == "active" and key_of(sub).expires_at == sub.next_billing_date + grace
    assert validate(client, key_of(sub)) is True and activate(client, key_of(sub)).status_code == 201


def test_cancelling_now_ends_the_key_at_once(client, api, customer, licensed, subscribe):
    sub, _ = subscribe(customer, licensed)
    assert activate(client, key_of(sub)).status_code == 201
    assert api.patch(f"/subscriptions/{sub.id}", {"status": "cancelled"}).status_code == 200
    assert validate(client, key_of(sub)) is False
    assert activate(client, key_of(sub), "desktop").status_code == 403
    shown = api.get(f"/license_keys/{key_of(sub).id}").json
    assert shown["status"] == "expired"
    assert shown["expires_at"] == payloads.iso(sub.refresh().cancelled_at)


def test_cancelling_at_the_period_end_ends_the_key_at_that_date(client, api, customer, licensed,
                                                                 subscribe):
    sub, _ = subscribe(customer, licensed)
    api.patch(f"/subscriptions/{sub.id}", {"cancel_at_next_billing_date": True})
    assert key_of(sub).expires_at == sub.next_billing_date
    with time_machine.travel(sub.next_billing_date - timedelta(minutes=1), tick=False):
        assert validate(client, key_of(sub)) is True
        assert activate(client, key_of(sub)).status_code == 201
    with time_machine.travel(sub.next_billing_date + timedelta(seconds=1), tick=False):
        assert validate(client, key_of(sub)) is False  # before the sweep cancels it, too
    sub = renew(sub)
    assert sub.status == "cancelled" and key_of(sub).status == "expired"
    assert validate(client, key_of(sub)) is False


def test_undoing_a_cancellation_at_the_period_end_keeps_the_key_through_the_renewal(
        client, api, customer, licensed, subscribe, grace):
    sub, _ = subscribe(customer, licensed)
    api.patch(f"/subscriptions/{sub.id}", {"cancel_at_next_billing_date": True})
    api.patch(f"/subscriptions/{sub.id}", {"cancel_at_next_billing_date": False})
    assert key_of(sub).expires_at == sub.next_billing_date + grace
    sub = renew(sub)
    with time_machine.travel(sub.previous_billing_date + timedelta(days=1), tick=False):
        assert validate(client, key_of(sub)) is True


def test_the_end_of_the_term_ends_the_key(client, business, customer, subscribe):
    short = Product.create(business=business, mode="test", name="Acme Pro 3 months", price=1500,
                           currency="EUR", is_recurring=True, subscription_period_count=3,
                           subscription_period_interval="Month", **MONTH_LONG_KEYS)
    sub, _ = subscribe(customer, short)
    sub = renew(renew(sub))
    assert key_of(sub).expires_at == sub.expires_at
    sub = renew(sub)
    assert sub.status == "expired" and validate(client, key_of(sub)) is False


def test_a_key_the_merchant_disabled_stays_disabled_through_renewals(client, api, customer,
                                                                     licensed, subscribe):
    sub, _ = subscribe(customer, licensed)
    api.patch(f"/license_keys/{key_of(sub).id}", {"disabled": True})
    sub = renew(sub)
    assert key_of(sub).status == "disabled" and validate(client, key_of(sub)) is False
    enabled = api.patch(f"/license_keys/{key_of(sub).id}", {"disabled": False}).json
    assert enabled["status"] == "active" and validate(client, key_of(sub)) is True


def test_the_expiry_of_a_subscriptions_key_cannot_be_set(api, customer, licensed, subscribe):
    sub, _ = subscribe(customer, licensed)
    answer = api.patch(f"/license_keys/{key_of(sub).id}", {"expires_at": "2030-01-01T00:00:00Z"})
    assert answer.status_code == 422 and answer.json["code"] == "NO_EXPIRY_ON_SUBSCRIPTION_LICENSE_KEYS"
    assert key_of(sub).expires_at.year != 2030


def test_a_key_sold_once_still_lasts_its_license_duration(customer, business, save_card):
    desktop = Product.create(business=business, mode="test", name="Acme Desktop", price=4900,
                             currency="EUR", **MONTH_LONG_KEYS)
    card = save_card(customer)
    with time_machine.travel(datetime(2027, 1, 31, 10, tzinfo=UTC), tick=False):
        payment = billing.purchase(customer, desktop, card, idempotency_key="order-1")
    key = LicenseKey.get(LicenseKey.payment == payment.id)
    assert key.subscription_id is None and key.expires_at == datetime(2027, 2, 28, 10, tzinfo=UTC)


def test_the_portal_says_the_key_lasts_as_long_as_the_subscription(client, api, customer, licensed,
                                                                   subscribe):
    sub, _ = subscribe(customer, licensed)
    path = urlsplit(auth.sign_in_link(customer)).path
    client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    assert "Expires</dt><dd>When your subscription ends" in client.get("/portal/licenses").text
    api.patch(f"/subscriptions/{sub.id}", {"cancel_at_next_billing_date": True})
    assert f"Expires</dt><dd>{day(sub.next_billing_date)}<" in client.get("/portal/licenses").text


def test_a_paused_subscriptions_key_stops_validating_and_comes_back_on_resume(
        client, customer, licensed, subscribe, grace):
    sub, _ = subscribe(customer, licensed)
    billing.pause(sub)
    assert key_of(sub).status == "expired" and validate(client, key_of(sub)) is False
    sub = billing.resume(sub.refresh())
    assert key_of(sub).status == "active" and validate(client, key_of(sub)) is True
    assert key_of(sub).expires_at == sub.next_billing_date + grace
