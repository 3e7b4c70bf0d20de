"""Whether customers may pause and resume becomes a portal setting (``pause.enabled`` of each
``portal_configuration``, per business and mode) instead of the business-wide
``customers_may_pause``: a business that had it on gets it on in both modes, and the old
setting is removed."""

import json
import secrets
import string
from datetime import UTC, datetime


def _new_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "bpc_" + "".join(secrets.choice(alphabet) for _ in range(22))


def _businesses(db):
    return [(business_id, json.loads(settings or "{}")) for business_id, settings
            in db.execute_sql('SELECT "id", "settings" FROM "business"').fetchall()]


def _set_business(db, business_id, settings):
    db.execute_sql('UPDATE "business" SET "settings" = %s WHERE "id" = %s'.replace("%s", db.param),
                   (json.dumps(settings, sort_keys=True), business_id))


def _portal_rows(db, business_id):
    return {mode: (row_id, json.loads(settings or "{}")) for row_id, mode, settings in db.execute_sql(
        'SELECT "id", "mode", "settings" FROM "portal_configuration" WHERE "business_id" = %s'
        .replace("%s", db.param), (business_id,)).fetchall()}


def up(migrator, db):
    now = datetime.now(UTC).replace(tzinfo=None)
    for business_id, settings in _businesses(db):
        if "customers_may_pause" not in settings:
            continue
        on = bool(settings.pop("customers_may_pause"))
        if on:
            rows = _portal_rows(db, business_id)
            for mode in ("test", "live"):
                if mode in rows:
                    row_id, portal = rows[mode]
                    portal["pause"] = {"enabled": True}
                    db.execute_sql('UPDATE "portal_configuration" SET "settings" = %s, "updated_at" = %s '
                                   'WHERE "id" = %s'.replace("%s", db.param),
                                   (json.dumps(portal, sort_keys=True), now, row_id))
                else:
                    db.execute_sql('INSERT INTO "portal_configuration" ("id", "created_at", "business_id", '
                                   '"mode", "settings", "updated_at") VALUES (%s, %s, %s, %s, %s, %s)'
                                   .replace("%s", db.param),
                                   (_new_id(), now, business_id, mode,
                                    json.dumps({"pause": {"enabled": True}}, sort_keys=True), now))
        _set_business(db, business_id, settings)


def down(migrator, db):
    for business_id, settings in _businesses(db):
        rows = _portal_rows(db, business_id)
        on = any(portal.get("pause", {}).get("enabled") for _, portal in rows.values())
        for row_id, portal in rows.values():
            if portal.pop("pause", None) is not None:
                db.execute_sql('UPDATE "portal_configuration" SET "settings" = %s WHERE "id" = %s'
                               .replace("%s", db.param), (json.dumps(portal, sort_keys=True), row_id))
        if on:
            _set_business(db, business_id, {**settings, "customers_may_pause": True})
