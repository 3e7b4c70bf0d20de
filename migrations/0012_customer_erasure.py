"""When a customer's personal data was erased (GDPR article 17); their invoices and payments stay."""

from peewee import DateTimeField


def up(migrator, db):
    migrator.migrate(migrator.add_column("customer", "erased_at", DateTimeField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("customer", "erased_at"))
