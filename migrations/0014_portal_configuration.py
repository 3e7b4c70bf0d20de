"""The portal each merchant configures: its settings per business and mode, a saved card's
provider fingerprint (the same card is saved once) and default flag, and the one flow a
deep-linked portal session is limited to."""

from peewee import BooleanField, CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class Business(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = "business"

    class PortalConfiguration(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete="CASCADE")
        mode = CharField(max_length=4)
        settings = TextField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "portal_configuration"
            indexes = ((("business", "mode"), True),)

    db.create_tables([PortalConfiguration])
    migrator.migrate(
        migrator.add_column("payment_method", "fingerprint", CharField(null=True)),
        migrator.add_column("payment_method", "is_default", BooleanField(default=False)),
        migrator.add_column("portal_session", "flow", TextField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("portal_session", "flow"),
        migrator.drop_column("payment_method", "is_default"),
        migrator.drop_column("payment_method", "fingerprint"),
    )
    db.execute_sql('DROP TABLE IF EXISTS "portal_configuration"')
