"""Discount codes (Dodo's ``discounts``), and the discount a subscription was given with the
charges it still takes off."""
from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
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

    class Discount(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        code = CharField(max_length=64)
        name = CharField(null=True)
        type = CharField(max_length=16)
        amount = BigIntegerField()
        subscription_cycles = IntegerField(null=True)
        starts_at = DateTimeField(null=True)
        expires_at = DateTimeField(null=True)
        usage_limit = IntegerField(null=True)
        times_used = IntegerField(default=0)
        restricted_to = TextField()
        preserve_on_plan_change = BooleanField(default=False)
        metadata = TextField()
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'discount'
            indexes = ((('business', 'mode', 'code'), True),)
    db.create_tables([Discount])
    migrator.migrate(
        migrator.add_column("subscription", "discount", TextField(null=True)),
        migrator.add_column("subscription", "discount_cycles_remaining", IntegerField(null=True)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("subscription", "discount"),
        migrator.drop_column("subscription", "discount_cycles_remaining"),
        migrator.drop_table('discount'),
    )
