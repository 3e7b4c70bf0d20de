"""Idempotency keys of the merchant API: a request sent again with the same key does its work
once, however often and however concurrently it is sent (Stripe's ``Idempotency-Key``, and
the IETF draft "The Idempotency-Key HTTP Header Field").

A key is claimed before the work runs by inserting its unique row (business, mode, key) in a
transaction of its own: of concurrent requests, on SQLite as on PostgreSQL, exactly one
inserts it and works; the others find the row. The row keeps a fingerprint of the request
(method, path, body) and, once given, its answer (status and body), for ``KEPT_FOR``; after
that the key is free again and the billing sweep deletes the row. ``core.api.wire`` decides
what each case answers.
"""

import hashlib
import json
from datetime import datetime, timedelta

from peewee import IntegrityError

from core.jobs import transaction
from core.models import IdempotencyKey, utcnow

KEPT_FOR = timedelta(hours=24)
CLAIM_ATTEMPTS = 3


def fingerprint(method: str, path: str, body: dict | None) -> str:
    """The SHA-256 (hex) of a request's method, path and JSON body, its keys sorted: two
    requests are "the same" when these are equal, whatever the order or spacing of the JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def claim(business_id: str, mode: str, key: str, digest: str) -> tuple[IdempotencyKey, bool]:
    """Claim ``key`` of a business and mode for a request whose ``fingerprint`` is ``digest``.

    Returns ``(record, True)`` when this request claimed it: do the work, then ``remember``
    its answer (or ``release`` the key when the work was refused and changed nothing). Returns
    ``(earlier, False)`` when a request with this key came first, less than ``KEPT_FOR`` ago:
    its record, answered or still running (``response_status`` is ``None``). A record past
    its time is deleted and the key claimed anew."""
    where = ((IdempotencyKey.business == business_id) & (IdempotencyKey.mode == mode)
             & (IdempotencyKey.key == key))
    earlier = None
    for _attempt in range(CLAIM_ATTEMPTS):
        now = utcnow()
        try:
            with transaction():
                return IdempotencyKey.create(business=business_id, mode=mode, key=key,
                                             fingerprint=digest, created_at=now,
                                             expires_at=now + KEPT_FOR), True
        except IntegrityError:
            pass
        earlier = IdempotencyKey.get_or_none(where)
        if earlier is not None and earlier.expires_at > now:
            return earlier, False
        if earlier is not None:  # past its time: the key is free again
            IdempotencyKey.delete().where(
                (IdempotencyKey.id == earlier.id) & (IdempotencyKey.expires_at <= now)).execute()
    if earlier is None:
        raise RuntimeError(f"idempotency key {key!r} could not be claimed nor found")
    return earlier, False


def remember(record: IdempotencyKey, status: int, body: str) -> None:
    """Keep the answer given to the request that claimed ``record``, for its retries."""
    (IdempotencyKey.update(response_status=status, response_body=body)
     .where(IdempotencyKey.id == record.id).execute())


def release(record: IdempotencyKey) -> None:
    """Free a claimed key whose request was refused before it changed anything (a 4xx), so
    that the request, corrected, can be sent again with the same key."""
    (IdempotencyKey.delete()
     .where((IdempotencyKey.id == record.id) & IdempotencyKey.response_status.is_null()).execute())


def sweep(now: datetime) -> int:
    """Delete the records kept past ``KEPT_FOR``; returns how many."""
    return IdempotencyKey.delete().where(IdempotencyKey.expires_at <= now).execute()
