"""Indexes in the order paginated lists show (newest first, ties by id), replacing the indexes
on ``created_at`` alone: a customer's payments in the portal and the API, and a business's
payments, subscriptions and customers in the API."""

INDEXES = {  # name: (table, scope columns)
    "payment_customer_newest": ("payment", ["customer_id"]),
    "payment_business_newest": ("payment", ["business_id", "mode"]),
    "subscription_business_newest": ("subscription", ["business_id", "mode"]),
    "customer_business_newest": ("customer", ["business_id", "mode"]),
}
REPLACED = {  # name: (table, columns)
    "payment_customer_id_created_at": ("payment", ["customer_id", "created_at"]),
    "payment_business_id_mode_created_at": ("payment", ["business_id", "mode", "created_at"]),
    "subscription_business_id_mode_created_at": ("subscription", ["business_id", "mode", "created_at"]),
}


def _columns(names):
    return ", ".join(f'"{name}"' for name in names)


def up(migrator, db):
    for name in REPLACED:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
    for name, (table, scope) in INDEXES.items():
        db.execute_sql(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" '
                       f'({_columns(scope)}, "created_at" DESC, "id" DESC)')


def down(migrator, db):
    for name in INDEXES:
        db.execute_sql(f'DROP INDEX IF EXISTS "{name}"')
    for name, (table, columns) in REPLACED.items():
        db.execute_sql(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ({_columns(columns)})')
