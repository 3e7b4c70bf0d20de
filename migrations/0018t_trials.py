"""Free trials: a subscription knows it is in its trial (nothing paid yet, the first charge at
its next billing date), and a product says whether its trial may start without a payment
method (Dodo's ``trial_payment_method_optional``)."""

from peewee import BooleanField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("subscription", "in_trial", BooleanField(default=False)),
        migrator.add_column("product", "trial_payment_method_optional", BooleanField(default=False)),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_column("subscription", "in_trial"),
        migrator.drop_column("product", "trial_payment_method_optional"),
    )
