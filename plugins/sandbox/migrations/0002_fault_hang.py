"""Injected faults that stall after recording a charge, for tests that kill a worker mid-charge."""

from peewee import IntegerField


def up(migrator, db):
    migrator.migrate(migrator.add_column("sandbox_fault", "hang_seconds", IntegerField(default=0)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("sandbox_fault", "hang_seconds"))
