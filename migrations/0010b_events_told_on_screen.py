"""Events whose outcome the customer saw on screen, so no e-mail repeats it."""

from peewee import BooleanField


def up(migrator, db):
    migrator.migrate(migrator.add_column("event", "told_on_screen", BooleanField(default=False)))


def down(migrator, db):
    migrator.migrate(migrator.drop_column("event", "told_on_screen"))
