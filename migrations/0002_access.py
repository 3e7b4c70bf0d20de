"""Customer access: server-side dashboard sessions of merchant users."""
from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class MerchantUser(Model):
        id = CharField(primary_key=True, max_length=40)
        class Meta:
            database = db
            table_name = 'merchant_user'

    class MerchantSession(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        user = ForeignKeyField(MerchantUser, on_delete='CASCADE')
        mode = CharField(max_length=4, default='test')
        last_seen_at = DateTimeField()
        expires_at = DateTimeField()
        revoked_at = DateTimeField(null=True)
        ip = CharField(null=True)
        user_agent = TextField(null=True)
        class Meta:
            database = db
            table_name = 'merchant_session'
            indexes = ((('user', 'revoked_at'), False),)
    db.create_tables([MerchantSession])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('merchant_session'))
