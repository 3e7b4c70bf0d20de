"""Cancellation requests from the portal: the reason given, the retention offer shown and what
came of it, for the dashboard's counts."""
from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class Business(Model):
        id = CharField(primary_key=True, max_length=40)
        class Meta:
            database = db
            table_name = 'business'

    class Customer(Model):
        id = CharField(primary_key=True, max_length=40)
        class Meta:
            database = db
            table_name = 'customer'

    class Subscription(Model):
        id = CharField(primary_key=True, max_length=40)
        class Meta:
            database = db
            table_name = 'subscription'

    class CancellationRequest(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        subscription = ForeignKeyField(Subscription, on_delete='CASCADE')
        customer = ForeignKeyField(Customer, on_delete='CASCADE')
        feedback = CharField(max_length=32, null=True)
        comment = TextField(null=True)
        when = CharField(max_length=16)
        offered_discount = CharField(max_length=40, null=True)
        outcome = CharField(max_length=16)
        class Meta:
            database = db
            table_name = 'cancellation_request'
            indexes = ((('business', 'mode', 'created_at'), False),)
    db.create_tables([CancellationRequest])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('cancellation_request'))
