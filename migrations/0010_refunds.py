"""Refunds through the payment provider, each with a credit note numbered without gaps."""
from peewee import (
    BigIntegerField,
    BlobField,
    CharField,
    CompositeKey,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


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

    class Payment(Model):
        id = CharField(primary_key=True, max_length=40)
        class Meta:
            database = db
            table_name = 'payment'

    class CreditNoteSequence(Model):
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        last_number = IntegerField(default=0)
        class Meta:
            database = db
            table_name = 'credit_note_sequence'
            primary_key = CompositeKey('business', 'mode')

    class Refund(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        customer = ForeignKeyField(Customer, on_delete='CASCADE')
        payment = ForeignKeyField(Payment)
        amount = BigIntegerField()
        tax = BigIntegerField(default=0)
        currency = CharField(max_length=3)
        reason = TextField(null=True)
        initiated_by = CharField(default='merchant')
        status = CharField(default='pending')
        idempotency_key = CharField(unique=True)
        provider_reference = CharField(null=True)
        failure_message = TextField(null=True)
        attempts = IntegerField(default=0)
        credit_note_number = IntegerField(null=True)
        credit_note = TextField(null=True)
        issued_at = DateTimeField(null=True)
        pdf = BlobField(null=True)
        metadata = TextField(default='{}')
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'refund'
            indexes = ((('business', 'mode', 'credit_note_number'), True),
                       (('payment', 'status'), False), (('business', 'mode', 'created_at'), False),
                       (('status', 'updated_at'), False))
    db.create_tables([CreditNoteSequence, Refund])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('refund'), migrator.drop_table('credit_note_sequence'))
