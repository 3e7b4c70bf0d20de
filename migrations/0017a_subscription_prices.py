"""A subscription keeps its own price (the plan's unit price, its tax rate, each add-on's
price), a credit balance for unused time, and a price change announced to its customer;
an invoice says whether its lines include tax and what credit it took off its total.

Existing subscriptions take the prices their product and add-ons have now: what their
renewals were charging until then."""

import json

from peewee import BigIntegerField, BooleanField, IntegerField, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("subscription", "unit_amount", BigIntegerField(default=0)),
        migrator.add_column("subscription", "tax_rate_bps", IntegerField(default=0)),
        migrator.add_column("subscription", "credit_balance", BigIntegerField(default=0)),
        migrator.add_column("subscription", "price_change", TextField(null=True)),
        migrator.add_column("invoice", "tax_inclusive", BooleanField(default=False)),
        migrator.add_column("invoice", "credit_applied", BigIntegerField(default=0)),
    )
    addon_prices = dict(db.execute_sql('SELECT "id", "price" FROM "addon"').fetchall())
    addon_names = dict(db.execute_sql('SELECT "id", "name" FROM "addon"').fetchall())
    rows = db.execute_sql(
        'SELECT s."id", p."price", p."tax_rate_bps", s."addons" FROM "subscription" s '
        'JOIN "product" p ON p."id" = s."product_id"').fetchall()
    for sub_id, price, rate, addons in rows:
        items = [{**item, "unit_amount": item.get("unit_amount", addon_prices.get(item["addon_id"], 0)),
                  "name": item.get("name", addon_names.get(item["addon_id"], ""))}
                 for item in json.loads(addons or "[]")]
        db.execute_sql('UPDATE "subscription" SET "unit_amount" = %s, "tax_rate_bps" = %s, '
                       '"addons" = %s WHERE "id" = %s'.replace("%s", db.param),
                       (price, rate, json.dumps(items, sort_keys=True), sub_id))


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("subscription", "unit_amount"),
        migrator.drop_column("subscription", "tax_rate_bps"),
        migrator.drop_column("subscription", "credit_balance"),
        migrator.drop_column("subscription", "price_change"),
        migrator.drop_column("invoice", "tax_inclusive"),
        migrator.drop_column("invoice", "credit_applied"),
    )
