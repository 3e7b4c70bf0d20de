"""License keys revoked for good by their license source, which no one can enable again."""

from peewee import DateTimeField


def up(migrator, db):
    migrator.migrate(migrator.add_column("license_key", "revoked_at", DateTimeField(null=True)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("license_key", "revoked_at"))
