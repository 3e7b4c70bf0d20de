"""The database license source: issuing, validating and revoking keys."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from core.models import Business, Customer, LicenseKey, Product
from core.plugins import registry
from plugins.licenses import ALPHABET, DatabaseLicenseSource, new_key

KEY_FORMAT = re.compile(r"[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){4}")


@pytest.fixture
def source(app):
    return registry(app).license_source("licenses")


@pytest.fixture
def product(business):
    return Product.create(business=business, mode="test", name="Acme Pro", price=4900,
                          currency="USD", license_key_enabled=True,
                          license_key_activations_limit=3)


def test_source_is_found_by_name_in_the_registry(source):
    assert isinstance(source, DatabaseLicenseSource)
    assert source.name == "licenses"


def test_keys_are_five_groups_of_five_unambiguous_characters():
    key = new_key()
    assert KEY_FORMAT.fullmatch(key), key
    assert not set("ILOU") & set(ALPHABET)
    assert len(ALPHABET) == 32  # 25 characters of 5 bits: 125 random bits


def test_a_thousand_keys_have_no_duplicates():
    keys = {new_key() for _ in range(1000)}
    assert len(keys) == 1000
    assert all(KEY_FORMAT.fullmatch(key) for key in keys)


def test_issue_creates_an_active_key_for_the_customer(source, product, customer):
    expires = datetime(2031, 1, 1, tzinfo=UTC)
    issued = source.issue(product=product, customer=customer, activations_limit=3,
                          expires_at=expires)
    row = LicenseKey.get_by_id(issued.id)
    assert (row.business_id, row.mode, row.customer_id, row.product_id) == (
        customer.business_id, "test", customer.id, product.id)
    assert (row.source, row.status, row.instances_count) == ("licenses", "active", 0)
    assert row.activations_limit == 3
    assert row.expires_at == expires
    assert KEY_FORMAT.fullmatch(row.key)


def test_issue_without_limit_or_expiry(source, product, customer):
    issued = source.issue(product=product, customer=customer, activations_limit=None,
                          expires_at=None)
    row = LicenseKey.get_by_id(issued.id)
    assert row.activations_limit is None and row.expires_at is None


def test_issue_retries_when_the_key_collides(source, product, customer, monkeypatch):
    taken = source.issue(product=product, customer=customer, activations_limit=None,
                         expires_at=None).key
    keys = iter([taken, "0000A-0000B-0000C-0000D-0000E"])
    monkeypatch.setattr("plugins.licenses.new_key", lambda: next(keys))
    issued = source.issue(product=product, customer=customer, activations_limit=None,
                          expires_at=None)
    assert issued.key == "0000A-0000B-0000C-0000D-0000E"
    assert LicenseKey.select().count() == 2


def test_issue_refuses_a_product_of_another_business(source, customer):
    other = Business.create(name="Other")
    product = Product.create(business=other, mode="test", name="Theirs", price=100,
                             currency="USD")
    with pytest.raises(ValueError):
        source.issue(product=product, customer=customer, activations_limit=None,
                     expires_at=None)
    assert LicenseKey.select().count() == 0


def test_issue_refuses_a_product_of_the_other_mode(source, business):
    customer = Customer.create(business=business, mode="live", email="live@example.com")
    product = Product.create(business=business, mode="test", name="Test only", price=100,
                             currency="USD")
    with pytest.raises(ValueError):
        source.issue(product=product, customer=customer, activations_limit=None,
                     expires_at=None)


def test_validate_accepts_an_active_key(source, product, customer):
    key = source.issue(product=product, customer=customer, activations_limit=1,
                       expires_at=datetime.now(UTC) + timedelta(days=30))
    assert source.validate(license_key=key).valid


def test_validate_refuses_a_disabled_key(source, product, customer):
    key = source.issue(product=product, customer=customer, activations_limit=1,
                       expires_at=None)
    LicenseKey.update(status="disabled").where(LicenseKey.id == key.id).execute()
    check = source.validate(license_key=LicenseKey.get_by_id(key.id))
    assert (check.valid, check.reason) == (False, "disabled")


def test_validate_refuses_an_expired_key_and_marks_it(source, product, customer):
    key = source.issue(product=product, customer=customer, activations_limit=1,
                       expires_at=datetime(2030, 6, 1, tzinfo=UTC))
    with time_machine.travel(datetime(2030, 5, 31, 23, 59, tzinfo=UTC), tick=False):
        assert source.validate(license_key=key).valid
    with time_machine.travel(datetime(2030, 6, 1, 0, 1, tzinfo=UTC), tick=False):
        check = source.validate(license_key=key)
    assert (check.valid, check.reason) == (False, "expired")
    assert LicenseKey.get_by_id(key.id).status == "expired"


def test_validate_refuses_a_key_already_marked_expired(source, product, customer):
    key = source.issue(product=product, customer=customer, activations_limit=1,
                       expires_at=datetime.now(UTC) - timedelta(seconds=1))
    source.validate(license_key=key)
    check = source.validate(license_key=LicenseKey.get_by_id(key.id))
    assert (check.valid, check.reason) == (False, "expired")


def test_revoke_disables_the_key_for_good(source, product, customer):
    key = source.issue(product=product, customer=customer, activations_limit=1,
                       expires_at=None)
    source.revoke(license_key=key)
    row = LicenseKey.get_by_id(key.id)
    assert row.status == "disabled"
    assert source.validate(license_key=row) == source.validate(license_key=key)
    assert source.validate(license_key=row).reason == "disabled"


def test_expiry_does_not_undo_a_revocation(source, product, customer):
    key = source.issue(product=product, customer=customer, activations_limit=1,
                       expires_at=datetime.now(UTC) - timedelta(days=1))
    stale = LicenseKey.get_by_id(key.id)
    source.revoke(license_key=key)
    assert source.validate(license_key=stale).reason == "expired"  # a stale copy says expired…
    assert LicenseKey.get_by_id(key.id).status == "disabled"  # …but the row stays revoked
