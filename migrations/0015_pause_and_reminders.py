"""Pausing a subscription (when, and until when the customer asked), the renewal a reminder
was last sent for, and events meant for the customer alone (no webhook carries them)."""

from peewee import BooleanField, DateTimeField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("subscription", "paused_at", DateTimeField(null=True)),
        migrator.add_column("subscription", "resume_at", DateTimeField(null=True)),
        migrator.add_column("subscription", "renewal_reminded_for", DateTimeField(null=True)),
        migrator.add_column("event", "customer_only", BooleanField(default=False)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("subscription", "paused_at"),
        migrator.drop_column("subscription", "resume_at"),
        migrator.drop_column("subscription", "renewal_reminded_for"),
        migrator.drop_column("event", "customer_only"),
    )
