"""The built-in license source: keys kept in Portico's own database (the ``licenses`` source).

A key is 125 random bits from ``secrets``, written as five groups of five Crockford base32
characters (``7K3QF-…``): upper case, and without I, L, O or U, so it reads aloud and types
back without mix-ups.
"""

import secrets

import peewee as pw

from core.hookspecs import LicenseCheck, hookimpl
from core.models import LicenseKey, db, utcnow

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
GROUPS, GROUP_SIZE = 5, 5
ISSUE_ATTEMPTS = 3


def new_key() -> str:
    """A fresh random key such as ``7K3QF-XM2PA-…``: 25 characters of 5 bits, 125 bits in all."""
    return "-".join("".join(secrets.choice(ALPHABET) for _ in range(GROUP_SIZE))
                    for _ in range(GROUPS))


class DatabaseLicenseSource:
    """Issues, validates and revokes ``LicenseKey`` rows (see ``core.hookspecs.LicenseSource``)."""

    name = "licenses"

    def issue(self, *, product, customer, activations_limit, expires_at, payment=None,
              subscription=None):
        """Create an active key for ``customer``'s purchase of ``product`` and return it."""
        if (product.business_id, product.mode) != (customer.business_id, customer.mode):
            raise ValueError("the product and the customer belong to different businesses or modes")
        for attempt in range(ISSUE_ATTEMPTS):
            try:
                with db.atomic():  # a savepoint: a collision leaves the caller's transaction intact
                    return LicenseKey.create(
                        business=customer.business_id, mode=customer.mode, customer=customer,
                        product=product, payment=payment, subscription=subscription,
                        key=new_key(), source=self.name, status="active",
                        activations_limit=activations_limit, expires_at=expires_at)
            except pw.IntegrityError:
                if attempt == ISSUE_ATTEMPTS - 1:
                    raise

    def validate(self, *, license_key) -> LicenseCheck:
        """Whether the key may be used now: not disabled and not past its expiry.

        A key found past its expiry is marked ``expired`` (unless revoked meanwhile).
        """
        if license_key.status == "disabled":
            return LicenseCheck(valid=False, reason="disabled")
        if license_key.status == "expired":
            return LicenseCheck(valid=False, reason="expired")
        if license_key.expires_at is not None and license_key.expires_at <= utcnow():
            (LicenseKey.update(status="expired")
             .where(LicenseKey.id == license_key.id, LicenseKey.status == "active").execute())
            license_key.status = "expired"
            return LicenseCheck(valid=False, reason="expired")
        return LicenseCheck(valid=True)

    def revoke(self, *, license_key) -> None:
        """Disable the key for good: no one can enable it again."""
        now = utcnow()
        LicenseKey.update(status="disabled", revoked_at=now).where(
            LicenseKey.id == license_key.id).execute()
        license_key.status, license_key.revoked_at = "disabled", now


@hookimpl
def register_license_sources(app):
    """Offer the database license source."""
    return [DatabaseLicenseSource()]
