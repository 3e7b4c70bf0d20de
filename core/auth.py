"""Credentials: merchant API keys and passwords, customer sign-in tokens and sessions.

Secrets are random and stored only as SHA-256 digests; the raw value is shown once.
"""

import hashlib
import secrets
from datetime import timedelta

from werkzeug.security import check_password_hash, generate_password_hash

from core.models import ApiKey, MerchantUser, PortalToken, db, utcnow


def digest(secret: str) -> str:
    """The stored form of a high-entropy secret (token or API key)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(business, mode: str, name: str = "") -> tuple[ApiKey, str]:
    """A new API key for ``business`` in ``mode``; returns the record and the raw key (shown once)."""
    raw = f"pk_{mode}_{secrets.token_urlsafe(32)}"
    key = ApiKey.create(business=business, mode=mode, name=name, prefix=raw[:12],
                        key_hash=digest(raw))
    return key, raw


def find_api_key(raw: str) -> ApiKey | None:
    """The live (not revoked) API key whose raw value is ``raw``."""
    return ApiKey.get_or_none((ApiKey.key_hash == digest(raw)) & ApiKey.revoked_at.is_null())


def create_merchant_user(business, email: str, password: str, name: str = "") -> MerchantUser:
    """A dashboard login for ``business``; the password is kept only as a salted hash."""
    if len(password) < 10:
        raise ValueError("the password must have at least 10 characters")
    return MerchantUser.create(business=business, email=email.strip().lower(), name=name,
                               password_hash=generate_password_hash(password))


def check_merchant_password(user: MerchantUser, password: str) -> bool:
    return check_password_hash(user.password_hash, password)


def issue_token(customer, purpose: str, ttl: int, data=None) -> str:
    """A single-use token for ``customer`` and ``purpose``; returns the raw token (never stored).

    A new sign-in token replaces the customer's older unused ones for the same purpose.
    """
    raw = secrets.token_urlsafe(32)
    with db.atomic():
        (PortalToken.delete()
         .where((PortalToken.customer == customer) & (PortalToken.purpose == purpose)
                & PortalToken.used_at.is_null())
         .execute())
        PortalToken.create(business=customer.business_id, mode=customer.mode, customer=customer,
                           purpose=purpose, token_hash=digest(raw), data=data or {},
                           expires_at=utcnow() + timedelta(seconds=ttl))
    return raw
