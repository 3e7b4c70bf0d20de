"""License key activations: a key is activated on a machine (an instance) up to its limit.

The license source named on the key decides whether it may be used (active, not expired,
not revoked); this module keeps count of instances under a row lock, so two activations at
once never exceed the limit.
"""

from core.billing import BillingError
from core.jobs import transaction
from core.models import LicenseKey, LicenseKeyInstance, for_update


class LicenseError(BillingError):
    """A refused license action; ``code`` is Dodo's (``LICENSE_KEY_NOT_FOUND``, …)."""


def _check(key: LicenseKey):
    from core.plugins import registry

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
