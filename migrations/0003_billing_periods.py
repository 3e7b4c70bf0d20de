"""Billing periods counted from an anchor, so renewal dates never drift across month ends."""

from peewee import DateTimeField, IntegerField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("subscription", "billing_anchor", DateTimeField(null=True)),
        migrator.add_column("subscription", "cycles", IntegerField(default=0)),
    )
    db.execute_sql("UPDATE subscription SET billing_anchor = previous_billing_date")
    migrator.migrate(migrator.add_not_null("subscription", "billing_anchor"))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("subscription", "billing_anchor"),
                     migrator.drop_column("subscription", "cycles"))
