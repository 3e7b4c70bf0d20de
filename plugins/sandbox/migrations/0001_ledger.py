"""The sandbox's tables: tokenized test cards, the charge and refund ledger, injected faults."""
from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class SandboxToken(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        brand = CharField()
        last4 = CharField(max_length=4)
        exp_month = IntegerField()
        exp_year = IntegerField()
        outcome = CharField()
        class Meta:
            database = db
            table_name = 'sandbox_token'
    db.create_tables([SandboxToken])

    class SandboxCharge(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        kind = CharField(max_length=8)
        idempotency_key = CharField(unique=True)
        token = CharField(null=True)
        charge_reference = CharField(null=True, index=True)
        amount = BigIntegerField()
        currency = CharField(max_length=3)
        status = CharField()
        failure_code = CharField(null=True)
        failure_message = TextField(null=True)
        reference = CharField(null=True, unique=True)
        description = TextField(default='')
        class Meta:
            database = db
            table_name = 'sandbox_charge'
    db.create_tables([SandboxCharge])

    class SandboxFault(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        after_commit = BooleanField(default=False)
        class Meta:
            database = db
            table_name = 'sandbox_fault'
    db.create_tables([SandboxFault])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('sandbox_fault'))
    migrator.migrate(migrator.drop_table('sandbox_charge'))
    migrator.migrate(migrator.drop_table('sandbox_token'))
