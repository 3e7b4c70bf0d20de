"""Webhook deliveries: when the next attempt is due, and one row per event, endpoint and attempt."""

from peewee import DateTimeField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("delivery", "next_attempt_at", DateTimeField(null=True)),
        migrator.add_index("delivery", ("event_id", "endpoint_id", "attempt"), True),
        migrator.add_index("delivery", ("next_attempt_at",), False),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_index("delivery", "delivery_next_attempt_at"),
        migrator.drop_index("delivery", "delivery_event_id_endpoint_id_attempt"),
        migrator.drop_column("delivery", "next_attempt_at"),
    )
