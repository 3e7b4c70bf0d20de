"""The Stripe plugin's tables: Stripe customers of Portico customers, processed Stripe events."""
from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class Customer(Model):  # the core's table, for the foreign key only
        id = CharField(primary_key=True, max_length=40)
        class Meta:
            database = db
            table_name = 'customer'

    class Payment(Model):  # the core's table, for the foreign key only
        id = CharField(primary_key=True, max_length=40)
        class Meta:
            database = db
            table_name = 'payment'

    class StripeCustomer(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        customer = ForeignKeyField(Customer, unique=True, on_delete='CASCADE')
        stripe_id = CharField(unique=True)
        class Meta:
            database = db
            table_name = 'stripe_customer'

    class StripeEvent(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        event_id = CharField(unique=True)
        type = CharField()
        payment = ForeignKeyField(Payment, null=True, on_delete='SET NULL')
        outcome = CharField()
        detail = TextField(default='')
        class Meta:
            database = db
            table_name = 'stripe_event'

    db.create_tables([StripeCustomer, StripeEvent])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('stripe_event'))
    migrator.migrate(migrator.drop_table('stripe_customer'))
