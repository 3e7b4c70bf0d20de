"""License key activations: a key is activated on a machine (an instance) up to its limit.

A key issued with a subscription may be used while the subscription pays for it
(``core.license_terms``); then the license source named on the key decides whether it may be
used (active, not expired, not revoked). This module keeps count of instances under a row
lock, so two activations at once never exceed the limit.
"""

from core.billing import BillingError
from core.jobs import transaction
from core.license_terms import follow_subscription, paid_until
from core.models import LicenseKey, LicenseKeyInstance, Subscription, for_update, utcnow


class LicenseError(BillingError):
    """A refused license action; ``code`` is Dodo's (``LICENSE_KEY_NOT_FOUND``, …)."""


def status_now(key: LicenseKey) -> str:
    """An enabled key's status by its expiry (set to its subscription's ``paid_until`` first,
    for a subscription's key): ``expired`` once past it, else ``active``."""
    if key.subscription_id is not None:
        key.expires_at = paid_until(Subscription.get_by_id(key.subscription_id))
    return "expired" if key.expires_at is not None and key.expires_at <= utcnow() else "active"


def _check(key: LicenseKey):
    """Refuse a key that may not be used now: its subscription no longer pays for it, or its
    license source says so (disabled, expired, revoked)."""
    from core.plugins import registry

    if key.subscription_id is not None and key.status != "disabled":
        sub = Subscription.get_by_id(key.subscription_id)
        if paid_until(sub) <= utcnow():
            follow_subscription(sub)  # its record says so too
            raise LicenseError("INACTIVE_LICENSE_KEY", "this license key is expired")
    check = registry().license_source(key.source).validate(license_key=key)
    if not check.valid:
        raise LicenseError("INACTIVE_LICENSE_KEY", f"this license key is {check.reason}")


def _locked_key(raw: str) -> LicenseKey:
    key = for_update(LicenseKey.select().where(LicenseKey.key == raw.strip())).get_or_none()
    if key is None:
        raise LicenseError("LICENSE_KEY_NOT_FOUND", "no such license key")
    return key


def activate(raw: str, name: str) -> LicenseKeyInstance:
    """Activate the key ``raw`` on an instance called ``name``, within its activations limit."""
    if not name or not name.strip():
        raise LicenseError("INVALID_REQUEST_PARAMETERS", "an instance needs a name")
    with transaction():
        key = _locked_key(raw)
        _check(key)
        if key.activations_limit is not None and key.instances_count >= key.activations_limit:
            raise LicenseError("LICENSE_KEY_LIMIT_REACHED",
                               f"this key is already active on {key.instances_count} of "
                               f"{key.activations_limit} instances")
        instance = LicenseKeyInstance.create(license_key=key, name=name.strip())
        key.instances_count += 1
        key.save()
    return instance


def deactivate(raw: str, instance_id: str) -> None:
    """Free the activation ``instance_id`` of the key ``raw``."""
    with transaction():
        key = _locked_key(raw)
        deleted = (LicenseKeyInstance.delete()
                   .where((LicenseKeyInstance.id == instance_id)
                          & (LicenseKeyInstance.license_key == key)).execute())
        if not deleted:
            raise LicenseError("NOT_FOUND", "no such instance of this license key")
        key.instances_count = max(key.instances_count - 1, 0)
        key.save()


def validate(raw: str, instance_id: str | None = None) -> tuple[bool, LicenseKey | None]:
    """Whether ``raw`` may be used now (and, given ``instance_id``, on that instance)."""
    key = LicenseKey.get_or_none(LicenseKey.key == raw.strip())
    if key is None:
        return False, None
    try:
        _check(key)
    except LicenseError:
        return False, key
    if instance_id is not None:
        known = (LicenseKeyInstance.select()
                 .where((LicenseKeyInstance.id == instance_id)
                        & (LicenseKeyInstance.license_key == key)).exists())
        return known, key
    return True, key
