"""License key activations respect the key's limit and status."""

import threading
from datetime import timedelta

import pytest

from core import licensing
from core.models import LicenseKey, LicenseKeyInstance, Product, db, init_db, utcnow
from core.plugins import registry


@pytest.fixture
def key(app, business, customer):
    product = Product.create(business=business, mode="test", name="Desktop", price=9900,
                             currency="EUR", license_key_enabled=True)
    return registry(app).license_source("licenses").issue(
        product=product, customer=customer, activations_limit=2, expires_at=None)


def test_a_key_activates_up_to_its_limit(key):
    licensing.activate(key.key, "Laptop")
    licensing.activate(key.key, "Desktop")
    with pytest.raises(licensing.LicenseError) as error:
        licensing.activate(key.key, "Third")
    assert error.value.code == "LICENSE_KEY_LIMIT_REACHED"
    assert key.refresh().instances_count == 2


def test_deactivating_an_instance_frees_an_activation(key):
    first = licensing.activate(key.key, "Laptop")
    licensing.activate(key.key, "Desktop")
    licensing.deactivate(key.key, first.id)
    assert licensing.activate(key.key, "New laptop").name == "New laptop"
    assert key.refresh().instances_count == 2


def test_concurrent_activations_never_exceed_the_limit(app, key, database_url):
    barrier = threading.Barrier(10)
    outcomes = []

    def activate(n):
        with app.app_context():
            barrier.wait()
            try:
                licensing.activate(key.key, f"machine {n}")
                outcomes.append("ok")
            except licensing.LicenseError as error:
                outcomes.append(error.code)
            finally:
                db.close()

    threads = [threading.Thread(target=activate, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    init_db(database_url)
    assert sorted(outcomes) == ["LICENSE_KEY_LIMIT_REACHED"] * 8 + ["ok"] * 2
    assert LicenseKeyInstance.select().count() == 2 == key.refresh().instances_count


def test_a_disabled_key_cannot_be_activated(app, key):
    registry(app).license_source("licenses").revoke(license_key=key)
    with pytest.raises(licensing.LicenseError, match="disabled") as error:
        licensing.activate(key.key, "Laptop")
    assert error.value.code == "INACTIVE_LICENSE_KEY"


def test_an_expired_key_cannot_be_activated(key):
    LicenseKey.update(expires_at=utcnow() - timedelta(seconds=1)).where(LicenseKey.id == key.id).execute()
    with pytest.raises(licensing.LicenseError, match="expired"):
        licensing.activate(key.key, "Laptop")
    assert licensing.validate(key.key) == (False, key.refresh())


def test_validate_checks_the_instance_belongs_to_the_key(key):
    instance = licensing.activate(key.key, "Laptop")
    assert licensing.validate(key.key, instance.id)[0] is True
    assert licensing.validate(key.key, "lki_other")[0] is False
    assert licensing.validate("NOPE-NOPE")[0] is False


def test_an_unknown_key_is_not_found(key):
    with pytest.raises(licensing.LicenseError) as error:
        licensing.activate("AAAAA-BBBBB", "Laptop")
    assert error.value.code == "LICENSE_KEY_NOT_FOUND"
