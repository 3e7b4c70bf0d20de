"""The merchant API's catalogue and imports: archived add-ons, a product's license activation
message, and where a license key came from (issued with a purchase, or imported)."""

from peewee import BooleanField, CharField, TextField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("addon", "archived", BooleanField(default=False)),
        migrator.add_column("product", "license_key_activation_message", TextField(null=True)),
        migrator.add_column("license_key", "origin", CharField(default="auto")),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("addon", "archived"),
        migrator.drop_column("product", "license_key_activation_message"),
        migrator.drop_column("license_key", "origin"),
    )
