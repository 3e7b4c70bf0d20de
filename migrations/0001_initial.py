"""The initial schema: every record of the product specification."""
from peewee import (
    BigIntegerField,
    BlobField,
    BooleanField,
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
        created_at = DateTimeField()
        name = CharField()
        legal_name = CharField(default='')
        address = TextField(default='')
        tax_id = CharField(null=True)
        support_email = CharField(null=True)
        logo = TextField(null=True)
        brand_color = CharField(default='#4f46e5')
        default_return_url = CharField(null=True)
        settings = TextField(default=dict)
        class Meta:
            database = db
            table_name = 'business'
    db.create_tables([Business])

    class Addon(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        name = CharField()
        description = TextField(null=True)
        price = BigIntegerField()
        currency = CharField(max_length=3)
        tax_category = CharField(default='saas')
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'addon'
    db.create_tables([Addon])

    class ApiKey(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        name = CharField(default='')
        prefix = CharField(max_length=24)
        key_hash = CharField(unique=True, max_length=64)
        last_used_at = DateTimeField(null=True)
        revoked_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'api_key'
    db.create_tables([ApiKey])

    class Customer(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        email = CharField()
        name = CharField(default='')
        phone_number = CharField(null=True)
        preferred_locale = CharField(null=True, max_length=8)
        billing_address = TextField(null=True)
        tax_id = CharField(null=True)
        metadata = TextField(default=dict)
        blocked_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'customer'
            indexes = ((('business', 'mode', 'email'), True), (('business', 'mode', 'name'), False))
    db.create_tables([Customer])

    class AuditLog(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, null=True, on_delete='CASCADE')
        mode = CharField(null=True, max_length=4)
        customer = ForeignKeyField(Customer, null=True, on_delete='SET NULL')
        event = CharField()
        outcome = CharField(default='ok')
        ip = CharField(null=True)
        detail = TextField(default=dict)
        class Meta:
            database = db
            table_name = 'audit_log'
            indexes = ((('business', 'created_at'), False),)
    db.create_tables([AuditLog])

    class Event(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        customer = ForeignKeyField(Customer, null=True, on_delete='SET NULL')
        type = CharField()
        data = TextField()
        dispatched_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'event'
            indexes = ((('dispatched_at', 'created_at'), False), (('business', 'mode', 'created_at'), False))
    db.create_tables([Event])

    class WebhookEndpoint(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        url = TextField()
        description = TextField(default='')
        secret = CharField()
        filter_types = TextField(default=list)
        disabled = BooleanField(default=False)
        rate_limit = IntegerField(null=True)
        metadata = TextField(default=dict)
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'webhook_endpoint'
    db.create_tables([WebhookEndpoint])

    class Delivery(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        event = ForeignKeyField(Event, on_delete='CASCADE')
        notifier = CharField()
        endpoint = ForeignKeyField(WebhookEndpoint, null=True, on_delete='CASCADE')
        attempt = IntegerField(default=1)
        status = CharField()
        response_status = IntegerField(null=True)
        error = TextField(null=True)
        duration_ms = IntegerField(null=True)
        class Meta:
            database = db
            table_name = 'delivery'
            indexes = ((('event', 'notifier'), False), (('endpoint', 'created_at'), False))
    db.create_tables([Delivery])

    class Product(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        name = CharField()
        description = TextField(null=True)
        is_recurring = BooleanField(default=False)
        price = BigIntegerField()
        currency = CharField(max_length=3)
        discount = IntegerField(default=0)
        tax_category = CharField(default='saas')
        tax_inclusive = BooleanField(default=False)
        tax_rate_bps = IntegerField(default=0)
        payment_frequency_count = IntegerField(default=1)
        payment_frequency_interval = CharField(default='Month')
        subscription_period_count = IntegerField(default=1)
        subscription_period_interval = CharField(default='Year')
        trial_period_days = IntegerField(default=0)
        license_key_enabled = BooleanField(default=False)
        license_key_activations_limit = IntegerField(null=True)
        license_key_duration_count = IntegerField(null=True)
        license_key_duration_interval = CharField(null=True)
        license_source = CharField(default='licenses')
        archived = BooleanField(default=False)
        metadata = TextField(default=dict)
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'product'
            indexes = ((('business', 'mode', 'archived'), False),)
    db.create_tables([Product])

    class PaymentMethod(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        customer = ForeignKeyField(Customer, on_delete='CASCADE')
        provider = CharField()
        provider_token = CharField()
        brand = CharField(default='')
        last4 = CharField(max_length=4, default='')
        exp_month = IntegerField(null=True)
        exp_year = IntegerField(null=True)
        last_used_at = DateTimeField(null=True)
        deleted_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'payment_method'
            indexes = ((('customer', 'deleted_at'), False), (('provider', 'provider_token'), False))
    db.create_tables([PaymentMethod])

    class Subscription(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        customer = ForeignKeyField(Customer, on_delete='CASCADE')
        product = ForeignKeyField(Product)
        quantity = IntegerField(default=1)
        addons = TextField(default=list)
        status = CharField(default='pending')
        currency = CharField(max_length=3)
        recurring_pre_tax_amount = BigIntegerField()
        tax_inclusive = BooleanField(default=False)
        payment_frequency_count = IntegerField(default=1)
        payment_frequency_interval = CharField(default='Month')
        subscription_period_count = IntegerField(default=1)
        subscription_period_interval = CharField(default='Year')
        trial_period_days = IntegerField(default=0)
        previous_billing_date = DateTimeField()
        next_billing_date = DateTimeField()
        expires_at = DateTimeField(null=True)
        cancel_at_next_billing_date = BooleanField(default=False)
        payment_method = ForeignKeyField(PaymentMethod, null=True, on_delete='SET NULL')
        cancelled_at = DateTimeField(null=True)
        cancelled_by = TextField(null=True)
        cancellation_feedback = CharField(null=True)
        cancellation_comment = TextField(null=True)
        scheduled_change = TextField(null=True)
        billing = TextField(null=True)
        metadata = TextField(default=dict)
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'subscription'
            indexes = ((('status', 'next_billing_date'), False), (('customer', 'status'), False), (('business', 'mode', 'created_at'), False))
    db.create_tables([Subscription])

    class Payment(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        customer = ForeignKeyField(Customer, on_delete='CASCADE')
        subscription = ForeignKeyField(Subscription, null=True)
        product = ForeignKeyField(Product, null=True)
        payment_method = ForeignKeyField(PaymentMethod, null=True, on_delete='SET NULL')
        kind = CharField(default='new')
        status = CharField(default='processing')
        amount = BigIntegerField()
        tax = BigIntegerField(default=0)
        currency = CharField(max_length=3)
        description = CharField(default='')
        provider = CharField(null=True)
        provider_reference = CharField(null=True)
        idempotency_key = CharField(unique=True)
        period_start = DateTimeField(null=True)
        period_end = DateTimeField(null=True)
        failure_code = CharField(null=True)
        failure_message = TextField(null=True)
        action_url = TextField(null=True)
        attempts = IntegerField(default=0)
        metadata = TextField(default=dict)
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'payment'
            indexes = ((('customer', 'created_at'), False), (('business', 'mode', 'created_at'), False), (('subscription', 'created_at'), False))
    db.create_tables([Payment])

    class Invoice(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        customer = ForeignKeyField(Customer, on_delete='CASCADE')
        payment = ForeignKeyField(Payment, unique=True)
        number = IntegerField()
        issued_at = DateTimeField()
        currency = CharField(max_length=3)
        lines = TextField()
        subtotal = BigIntegerField()
        tax = BigIntegerField()
        total = BigIntegerField()
        seller = TextField()
        buyer = TextField()
        payment_details = TextField(default=dict)
        pdf = BlobField(null=True)
        class Meta:
            database = db
            table_name = 'invoice'
            indexes = ((('business', 'mode', 'number'), True),)
    db.create_tables([Invoice])

    class InvoiceSequence(Model):
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        last_number = IntegerField(default=0)
        class Meta:
            database = db
            table_name = 'invoice_sequence'
            primary_key = CompositeKey('business', 'mode')
    db.create_tables([InvoiceSequence])

    class LicenseKey(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        customer = ForeignKeyField(Customer, on_delete='CASCADE')
        product = ForeignKeyField(Product)
        payment = ForeignKeyField(Payment, null=True)
        subscription = ForeignKeyField(Subscription, null=True)
        key = CharField(unique=True)
        source = CharField(default='licenses')
        status = CharField(default='active')
        activations_limit = IntegerField(null=True)
        instances_count = IntegerField(default=0)
        expires_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'license_key'
            indexes = ((('customer', 'created_at'), False),)
    db.create_tables([LicenseKey])

    class LicenseKeyInstance(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        license_key = ForeignKeyField(LicenseKey, on_delete='CASCADE')
        name = CharField()
        class Meta:
            database = db
            table_name = 'license_key_instance'
    db.create_tables([LicenseKeyInstance])

    class MerchantUser(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        email = CharField(unique=True)
        name = CharField(default='')
        password_hash = CharField()
        last_login_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'merchant_user'
    db.create_tables([MerchantUser])

    class PortalSession(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        customer = ForeignKeyField(Customer, on_delete='CASCADE')
        last_seen_at = DateTimeField()
        expires_at = DateTimeField()
        revoked_at = DateTimeField(null=True)
        return_url = TextField(null=True)
        ip = CharField(null=True)
        user_agent = TextField(null=True)
        class Meta:
            database = db
            table_name = 'portal_session'
            indexes = ((('customer', 'revoked_at'), False),)
    db.create_tables([PortalSession])

    class PortalToken(Model):
        id = CharField(primary_key=True, max_length=40)
        created_at = DateTimeField()
        business = ForeignKeyField(Business, on_delete='CASCADE')
        mode = CharField(max_length=4)
        customer = ForeignKeyField(Customer, on_delete='CASCADE')
        purpose = CharField()
        token_hash = CharField(unique=True, max_length=64)
        expires_at = DateTimeField()
        used_at = DateTimeField(null=True)
        data = TextField(default=dict)
        class Meta:
            database = db
            table_name = 'portal_token'
            indexes = ((('customer', 'purpose', 'used_at'), False),)
    db.create_tables([PortalToken])

    class ProductAddon(Model):
        product = ForeignKeyField(Product, on_delete='CASCADE')
        addon = ForeignKeyField(Addon, on_delete='CASCADE')
        class Meta:
            database = db
            table_name = 'product_addon'
            primary_key = CompositeKey('product', 'addon')
    db.create_tables([ProductAddon])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('product_addon'))
    migrator.migrate(migrator.drop_table('portal_token'))
    migrator.migrate(migrator.drop_table('portal_session'))
    migrator.migrate(migrator.drop_table('merchant_user'))
    migrator.migrate(migrator.drop_table('license_key_instance'))
    migrator.migrate(migrator.drop_table('license_key'))
    migrator.migrate(migrator.drop_table('invoice_sequence'))
    migrator.migrate(migrator.drop_table('invoice'))
    migrator.migrate(migrator.drop_table('payment'))
    migrator.migrate(migrator.drop_table('subscription'))
    migrator.migrate(migrator.drop_table('payment_method'))
    migrator.migrate(migrator.drop_table('product'))
    migrator.migrate(migrator.drop_table('delivery'))
    migrator.migrate(migrator.drop_table('webhook_endpoint'))
    migrator.migrate(migrator.drop_table('event'))
    migrator.migrate(migrator.drop_table('audit_log'))
    migrator.migrate(migrator.drop_table('customer'))
    migrator.migrate(migrator.drop_table('api_key'))
    migrator.migrate(migrator.drop_table('addon'))
    migrator.migrate(migrator.drop_table('business'))
