"""Merchant API requests sent with an ``Idempotency-Key``: claimed before their work runs, then
holding their answer for 24 hours, so a retry replays it instead of doing the work again."""
from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField


def up(migrator, db):
    class Business(Model):
        id = CharField(primary_key=True, max_length=40)
        class Meta:
            database = db
            table_name = 'business'

    class IdempotencyKey(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        key = CharField(max_length=255)
        fingerprint = CharField(max_length=64)
        response_status = IntegerField(null=True)
        response_body = TextField(null=True)
        expires_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'idempotency_key'
            indexes = ((('business', 'mode', 'key'), True), (('expires_at',), False))
    db.create_tables([IdempotencyKey])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('idempotency_key'))
