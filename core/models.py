"""The data model: every record Portico keeps, as peewee models on one database proxy.

Every record belongs to one business and one mode (``test`` or ``live``). Ids are prefixed
random strings, money is integer minor units with an ISO-4217 currency, times are UTC.
"""

import json
import logging
import secrets
import string
from contextlib import contextmanager
from datetime import UTC, datetime

import peewee as pw
from playhouse.db_url import connect as connect_url
from playhouse.pool import PooledDatabase

db = pw.DatabaseProxy()
log = logging.getLogger("portico.db")

MODES = ("test", "live")
_ALPHABET = string.ascii_letters + string.digits


def utcnow() -> datetime:
    """The current time, UTC-aware."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A fresh prefixed id such as ``cus_3xQ…``: 22 random base62 characters (~131 bits)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


# --- Database -------------------------------------------------------------------------------

SQLITE_PRAGMAS = {"journal_mode": "wal", "busy_timeout": 10000, "foreign_keys": 1,
                  "synchronous": "normal"}


class UnsupportedDatabase(ValueError):
    """The database URL names a scheme Portico does not run on."""


_pool = {"key": None}  # the pool init_db made last, and what it was made from


def init_db(url: str, pool_size: int = 20, recycle: int = 300, wait: int = 10):
    """Point the proxy at a connection pool (``playhouse.pool``) on the database named by ``url``
    (sqlite:/// or postgresql://), and return it.

    A process keeps up to ``pool_size`` connections (0: no limit); one older than ``recycle``
    seconds is closed instead of reused (0: never), so a server-side restart or timeout is
    outlived; with every connection in use, a caller waits up to ``wait`` seconds, then gets
    ``playhouse.pool.MaxConnectionsExceeded``. Called again with the same arguments, the same
    pool is kept; a different database gets a new pool, and the old one's idle connections
    are closed. A connection goes back to the pool with ``release``.

    Raises ``UnsupportedDatabase`` for any other scheme.
    """
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    options = {"max_connections": pool_size or None, "stale_timeout": recycle or None,
               "timeout": wait or None}
    key = (url, pool_size, recycle, wait)
    if key == _pool["key"] and db.obj is not None:
        return db.obj
    if scheme == "sqlite":
        # A pooled connection serves one thread at a time, though not always the same one.
        # Every transaction begins IMMEDIATE, taking the write lock at once: a deferred one
        # that reads, then writes after another connection committed, fails at once with
        # "database is locked" (SQLITE_BUSY_SNAPSHOT), which busy_timeout does not wait out
        # (https://sqlite.org/wal.html#sometimes_queries_return_sqlite_busy_in_wal_mode;
        # Django's SQLite "transaction_mode" option exists for the same reason).
        database = connect_url("sqlite+pool:" + rest, pragmas=SQLITE_PRAGMAS,
                               check_same_thread=False, lock_type="IMMEDIATE", **options)
    elif scheme in ("postgres", "postgresql"):
        database = connect_url("postgresql+pool:" + rest, **options)
    else:
        raise UnsupportedDatabase(
            f"unsupported database URL scheme {scheme!r}: use sqlite:///path or postgresql://…")
    if isinstance(db.obj, PooledDatabase):
        db.obj.close_idle()
    db.initialize(database)
    _pool["key"] = key
    return database


def release():
    """Give this thread's connection back to the pool, as a request or job ends.

    A transaction left open (an exception escaping between ``BEGIN`` and ``COMMIT``, a
    forgotten ``atomic``) is rolled back first, so nothing half-done is ever committed by the
    connection's next user and no lock outlives the request.
    """
    if db.obj is None or db.is_closed():
        return
    if db.in_transaction():
        log.warning("a transaction was left open; rolling it back")
        db.rollback()
        while db.in_transaction():
            db.pop_transaction()
    db.close()  # the pool rolls back what a raw BEGIN left open as it takes the connection back


def disconnect():
    """Close every connection of this process (before forking: a child must open its own)."""
    release()
    if isinstance(db.obj, PooledDatabase):
        db.obj.close_all()


def is_sqlite() -> bool:
    return isinstance(db.obj, pw.SqliteDatabase)


class Prepared:
    """A query whose SQL peewee writes once, then run many times with fresh values.

    Peewee writes a query's SQL from its model expressions each time it runs, which costs a
    portal page more than the database does. Build the query once, with ``Prepared.slot(name,
    field)`` wherever a value changes between runs, on the database it will run on (SQLite
    writes ``?``, PostgreSQL ``%s``): ``Prepared(query)`` keeps the SQL text and the place of
    each slot among its parameters. ``rows(**values)`` sends that text with the values in
    their places (each converted by its slot's field, as peewee would) and returns the rows
    as tuples, one value per selected column converted by its field (``python_value``);
    ``instance`` makes a model instance of the columns a page needs as one.

    Build them as the app is created, never in a request (a request changes no shared state).
    """

    class Slot:
        """Where the value named ``name`` goes; ``field`` converts it (``db_value``)."""

        def __init__(self, name: str, field: pw.Field | None):
            self.name, self.field = name, field

    @classmethod
    def slot(cls, name: str, field: pw.Field | None = None) -> pw.Value:
        """A parameter of the query, to place where a value would go (``Payment.id == slot``)."""
        return pw.Value(cls.Slot(name, field), converter=False)

    def __init__(self, query):
        self.sql, self.params = query.sql()
        self.converters = [column.python_value if isinstance(column, pw.Field) else None
                           for column in query.selected_columns or ()]

    def values(self, given: dict) -> list:
        """The parameters to send with ``given`` (``{slot name: value}``) in their places."""
        return [(p.field.db_value(given[p.name]) if p.field else given[p.name])
                if isinstance(p, Prepared.Slot) else p for p in self.params]

    def rows(self, **given) -> list[tuple]:
        """Run the query with ``given`` slot values; its rows, converted column by column."""
        cursor = db.execute_sql(self.sql, self.values(given))
        converters = self.converters
        return [tuple(value if convert is None or value is None else convert(value)
                      for convert, value in zip(converters, row, strict=True))
                for row in cursor.fetchall()]


def instance(model, columns, values):
    """A ``model`` instance holding ``values`` of ``columns`` (fields of ``model``), as peewee
    builds one from a row: no defaults, no new id; a foreign key holds the related id."""
    return model(__no_default__=True,
                 **{column.name: value for column, value in zip(columns, values, strict=True)})


@contextmanager
def locked():
    """A write transaction that serialises with other writers: ``BEGIN IMMEDIATE`` on SQLite;
    on PostgreSQL a plain transaction in which callers lock rows with ``for_update``."""
    with db.atomic("IMMEDIATE") if is_sqlite() else db.atomic() as txn:
        yield txn


def for_update(query):
    """Lock the selected rows until the transaction ends (PostgreSQL; SQLite locks the file)."""
    return query if is_sqlite() else query.for_update()


# --- Fields ---------------------------------------------------------------------------------


class UTCDateTimeField(pw.DateTimeField):
    """A timestamp stored as naive UTC and read back UTC-aware."""

    def db_value(self, value):
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value):
        value = super().python_value(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class JSONField(pw.TextField):
    """A JSON document kept as text, portable across SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class MoneyField(pw.BigIntegerField):
    """An amount in minor units of its row's currency (cents, yen, fils); never a float."""


class BaseModel(pw.Model):
    """Common base: a prefixed string id and a creation time."""

    id = pw.CharField(primary_key=True, max_length=40)
    created_at = UTCDateTimeField(default=utcnow)

    class Meta:
        database = db
        legacy_table_names = False
        id_prefix = None

    def __init__(self, *args, **kwargs):
        loading = kwargs.get("__no_default__")  # peewee building a row read from the database
        super().__init__(*args, **kwargs)
        if not loading and self.id is None and self._meta.id_prefix:
            self.id = new_id(self._meta.id_prefix)
            self._pk_set_by_default = True

    def refresh(self):
        """This record as the database holds it now."""
        return type(self).get_by_id(self.id)

    def save(self, *args, **kwargs):
        if getattr(self, "_pk_set_by_default", False):
            kwargs.setdefault("force_insert", True)
            self._pk_set_by_default = False
        return super().save(*args, **kwargs)


class Business(BaseModel):
    """A merchant running the portal: identity, invoice details, branding, portal settings."""

    name = pw.CharField()
    legal_name = pw.CharField(default="")
    address = pw.TextField(default="")
    tax_id = pw.CharField(null=True)
    support_email = pw.CharField(null=True)
    logo = pw.TextField(null=True)  # a data: URI, so rendering never fetches anything
    brand_color = pw.CharField(default="#4f46e5")
    default_return_url = pw.CharField(null=True)
    settings = JSONField(default=dict)  # portal and subscription settings (core.billing reads them)

    class Meta:
        id_prefix = "bus"


class PortalConfiguration(BaseModel):
    """What customers of a business may do in its portal, in one mode (``core.portal_settings``
    reads and checks ``settings``; a business without a row has the defaults)."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    settings = JSONField(default=dict)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        id_prefix = "bpc"
        indexes = ((("business", "mode"), True),)


class MerchantUser(BaseModel):
    """A dashboard login of a business."""

    business = pw.ForeignKeyField(Business, backref="users", on_delete="CASCADE")
    email = pw.CharField(unique=True)
    name = pw.CharField(default="")
    password_hash = pw.CharField()
    last_login_at = UTCDateTimeField(null=True)

    class Meta:
        id_prefix = "usr"


class ApiKey(BaseModel):
    """A merchant API key for one business and mode; only a hash and a visible prefix are kept."""

    business = pw.ForeignKeyField(Business, backref="api_keys", on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    name = pw.CharField(default="")
    prefix = pw.CharField(max_length=24)
    key_hash = pw.CharField(max_length=64, unique=True)
    last_used_at = UTCDateTimeField(null=True)
    revoked_at = UTCDateTimeField(null=True)

    class Meta:
        id_prefix = "key"


class Customer(BaseModel):
    """A customer of a business in one mode; the e-mail is unique per business and mode."""

    business = pw.ForeignKeyField(Business, backref="customers", on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    email = pw.CharField()  # stored lower-cased
    name = pw.CharField(default="")
    phone_number = pw.CharField(null=True)  # E.164
    preferred_locale = pw.CharField(max_length=8, null=True)
    billing_address = JSONField(null=True)  # {street, city, state, zipcode, country}
    tax_id = pw.CharField(null=True)
    metadata = JSONField(default=dict)
    blocked_at = UTCDateTimeField(null=True)
    erased_at = UTCDateTimeField(null=True)  # personal data erased (core.privacy)

    class Meta:
        id_prefix = "cus"
        indexes = ((("business", "mode", "email"), True), (("business", "mode", "name"), False))


class Product(BaseModel):
    """Something a business sells: a one-time or recurring price, tax, license-key settings."""

    business = pw.ForeignKeyField(Business, backref="products", on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    name = pw.CharField()
    description = pw.TextField(null=True)
    is_recurring = pw.BooleanField(default=False)
    price = MoneyField()  # pre-tax unit price in minor units
    currency = pw.CharField(max_length=3)
    discount = pw.IntegerField(default=0)  # basis points
    tax_category = pw.CharField(default="saas")
    tax_inclusive = pw.BooleanField(default=False)
    tax_rate_bps = pw.IntegerField(default=0)  # tax rate in basis points (2000 = 20 %)
    payment_frequency_count = pw.IntegerField(default=1)
    payment_frequency_interval = pw.CharField(default="Month")  # Day, Week, Month, Year
    subscription_period_count = pw.IntegerField(default=1)
    subscription_period_interval = pw.CharField(default="Year")
    trial_period_days = pw.IntegerField(default=0)  # a new subscription's free days (Dodo's)
    # whether a trial may start without a payment method (Dodo's ``trial_payment_method_optional``)
    trial_payment_method_optional = pw.BooleanField(default=False)
    license_key_enabled = pw.BooleanField(default=False)
    license_key_activations_limit = pw.IntegerField(null=True)
    license_key_duration_count = pw.IntegerField(null=True)
    license_key_duration_interval = pw.CharField(null=True)
    license_key_activation_message = pw.TextField(null=True)
    license_source = pw.CharField(default="licenses")
    archived = pw.BooleanField(default=False)
    metadata = JSONField(default=dict)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        id_prefix = "pdt"
        indexes = ((("business", "mode", "archived"), False),)


class Addon(BaseModel):
    """An add-on that can be bought with a recurring product."""

    business = pw.ForeignKeyField(Business, backref="addons", on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    name = pw.CharField()
    description = pw.TextField(null=True)
    price = MoneyField()
    currency = pw.CharField(max_length=3)
    tax_category = pw.CharField(default="saas")
    archived = pw.BooleanField(default=False)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        id_prefix = "adn"


class ProductAddon(pw.Model):
    """Which add-ons a product offers."""

    product = pw.ForeignKeyField(Product, backref="addon_links", on_delete="CASCADE")
    addon = pw.ForeignKeyField(Addon, backref="product_links", on_delete="CASCADE")

    class Meta:
        database = db
        legacy_table_names = False
        primary_key = pw.CompositeKey("product", "addon")


class PaymentMethod(BaseModel):
    """A customer's saved payment method at a provider: a token and display details only."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    customer = pw.ForeignKeyField(Customer, backref="payment_methods", on_delete="CASCADE")
    provider = pw.CharField()
    provider_token = pw.CharField()
    brand = pw.CharField(default="")
    last4 = pw.CharField(max_length=4, default="")
    exp_month = pw.IntegerField(null=True)
    exp_year = pw.IntegerField(null=True)
    fingerprint = pw.CharField(null=True)  # the provider's: the same card saved again has the same
    is_default = pw.BooleanField(default=False)  # the customer's default method (one at most)
    last_used_at = UTCDateTimeField(null=True)
    deleted_at = UTCDateTimeField(null=True)

    class Meta:
        id_prefix = "pm"
        indexes = ((("customer", "deleted_at"), False),
                   (("provider", "provider_token"), False))

    @classmethod
    def save_card(cls, customer, provider: str, card) -> "PaymentMethod":
        """The one way a payment method is saved: ``card`` (a ``hookspecs.CardDetails`` a
        provider returned) as ``customer``'s method at ``provider``. A card already saved (the
        same provider token, or the same provider fingerprint) returns the method already
        saved, so neither a repeated return from a card form nor the same card typed twice
        makes a twin. The customer's first method becomes their default."""
        same = cls.provider_token == card.token
        if card.fingerprint:
            same |= cls.fingerprint == card.fingerprint
        live = (cls.customer == customer) & (cls.provider == provider) & cls.deleted_at.is_null()
        with db.atomic():
            existing = cls.select().where(live & same).order_by(cls.created_at).first()
            if existing:
                return existing
            has_default = cls.select().where((cls.customer == customer) & cls.deleted_at.is_null()
                                             & (cls.is_default == True)).exists()  # noqa: E712
            return cls.create(
                business=customer.business_id, mode=customer.mode, customer=customer,
                provider=provider, provider_token=card.token, brand=card.brand, last4=card.last4,
                exp_month=card.exp_month, exp_year=card.exp_year, fingerprint=card.fingerprint,
                is_default=not has_default)


class Discount(BaseModel):
    """A discount code (Dodo's ``discounts``): a percentage (``amount`` in basis points) or a
    flat amount (``amount`` in minor units of the charge's currency) off a subscription's
    charges, for ``subscription_cycles`` of them (None: all), until ``expires_at``, for at most
    ``usage_limit`` subscriptions, and only for the products in ``restricted_to`` (empty: any)."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    code = pw.CharField(max_length=64)  # upper case, unique per business and mode
    name = pw.CharField(null=True)
    type = pw.CharField(max_length=16)  # percentage, flat
    amount = pw.BigIntegerField()
    subscription_cycles = pw.IntegerField(null=True)
    starts_at = UTCDateTimeField(null=True)
    expires_at = UTCDateTimeField(null=True)
    usage_limit = pw.IntegerField(null=True)
    times_used = pw.IntegerField(default=0)  # subscriptions given it
    restricted_to = JSONField(default=list)  # product ids
    preserve_on_plan_change = pw.BooleanField(default=False)
    metadata = JSONField(default=dict)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        id_prefix = "dsc"
        indexes = ((("business", "mode", "code"), True),)


class Subscription(BaseModel):
    """A customer's recurring purchase of a product, moved between states by ``core.billing``."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    customer = pw.ForeignKeyField(Customer, backref="subscriptions", on_delete="CASCADE")
    product = pw.ForeignKeyField(Product, backref="subscriptions")
    quantity = pw.IntegerField(default=1)
    # the subscription's own price, copied from the catalogue at purchase and at each plan
    # change (a later catalogue change applies to new sales): the plan's unit price as sold
    # (tax included when ``tax_inclusive``), its tax rate, and each add-on's price
    addons = JSONField(default=list)  # [{"addon_id", "quantity", "unit_amount", "name"}]
    status = pw.CharField(default="pending")
    currency = pw.CharField(max_length=3)
    unit_amount = MoneyField(default=0)
    tax_rate_bps = pw.IntegerField(default=0)
    recurring_pre_tax_amount = MoneyField()  # every line of one period, as sold
    tax_inclusive = pw.BooleanField(default=False)
    credit_balance = MoneyField(default=0)  # unused time credited, taken off the next charges
    price_change = JSONField(null=True)  # a new price announced to the customer, and from when
    payment_frequency_count = pw.IntegerField(default=1)
    payment_frequency_interval = pw.CharField(default="Month")
    subscription_period_count = pw.IntegerField(default=1)
    subscription_period_interval = pw.CharField(default="Year")
    trial_period_days = pw.IntegerField(default=0)  # the free days it started with
    # in its free trial: nothing paid yet, the first charge falls at ``next_billing_date``
    in_trial = pw.BooleanField(default=False)
    billing_anchor = UTCDateTimeField(default=utcnow)  # periods are counted from here
    cycles = pw.IntegerField(default=0)  # periods renewed since the anchor
    previous_billing_date = UTCDateTimeField(default=utcnow)
    next_billing_date = UTCDateTimeField(default=utcnow)
    expires_at = UTCDateTimeField(null=True)  # end of the term
    cancel_at_next_billing_date = pw.BooleanField(default=False)
    payment_method = pw.ForeignKeyField(PaymentMethod, null=True, on_delete="SET NULL")
    cancelled_at = UTCDateTimeField(null=True)
    cancelled_by = JSONField(null=True)  # {"actor_type": ..., "email": ..., "name": ...}
    cancellation_feedback = pw.CharField(null=True)
    cancellation_comment = pw.TextField(null=True)
    scheduled_change = JSONField(null=True)  # a downgrade waiting for the next billing date
    paused_at = UTCDateTimeField(null=True)  # set while paused
    resume_at = UTCDateTimeField(null=True)  # while paused: when it resumes by itself, if asked
    renewal_reminded_for = UTCDateTimeField(null=True)  # the renewal date last reminded of
    # the discount it was given, as it was then ({discount_id, code, name, type, amount, ...},
    # see ``core.billing.apply_discount``), and the charges it still takes off (None: all)
    discount = JSONField(null=True)
    discount_cycles_remaining = pw.IntegerField(null=True)
    billing = JSONField(null=True)
    metadata = JSONField(default=dict)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        id_prefix = "sub"
        indexes = ((("status", "next_billing_date"), False),
                   (("customer", "status"), False))


class CancellationRequest(BaseModel):
    """A customer's "cancel" in the portal (``core.retention``): the reason and comment they
    gave, when they wanted it to end (``now``, ``period_end``), the retention offer shown
    (a discount, if any) and the ``outcome``: ``cancelled``, ``undone`` (a cancellation at
    the period's end taken back before it) or ``offer_accepted`` (the subscription stays, with
    the discount). The dashboard counts them."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    subscription = pw.ForeignKeyField(Subscription, on_delete="CASCADE")
    customer = pw.ForeignKeyField(Customer, on_delete="CASCADE")
    feedback = pw.CharField(max_length=32, null=True)  # Dodo's cancellation_feedback value
    comment = pw.TextField(null=True)
    when = pw.CharField(max_length=16)
    offered_discount = pw.CharField(max_length=40, null=True)  # the discount offered to stay
    outcome = pw.CharField(max_length=16)

    class Meta:
        id_prefix = "cxr"
        indexes = ((("business", "mode", "created_at"), False),)


class Payment(BaseModel):
    """One charge attempt of an amount: its kind, status, provider reference and idempotency key.

    The idempotency key is unique: it is written before the provider is called and passed
    to it, so a retried job finds the same row and the provider the same charge.
    """

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    customer = pw.ForeignKeyField(Customer, backref="payments", on_delete="CASCADE")
    subscription = pw.ForeignKeyField(Subscription, backref="payments", null=True)
    product = pw.ForeignKeyField(Product, null=True)
    payment_method = pw.ForeignKeyField(PaymentMethod, null=True, on_delete="SET NULL")
    kind = pw.CharField(default="new")  # new, renewal, arrears, plan_change
    status = pw.CharField(default="processing")  # processing, succeeded, failed, requires_customer_action
    amount = MoneyField()  # total charged, tax included
    tax = MoneyField(default=0)
    currency = pw.CharField(max_length=3)
    description = pw.CharField(default="")
    provider = pw.CharField(null=True)
    provider_reference = pw.CharField(null=True)
    idempotency_key = pw.CharField(unique=True)
    period_start = UTCDateTimeField(null=True)  # the billing period this payment pays for
    period_end = UTCDateTimeField(null=True)
    failure_code = pw.CharField(null=True)
    failure_message = pw.TextField(null=True)
    action_url = pw.TextField(null=True)
    attempts = pw.IntegerField(default=0)
    metadata = JSONField(default=dict)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        id_prefix = "pay"
        indexes = ((("subscription", "created_at"), False),)


class InvoiceSequence(pw.Model):
    """The last invoice number issued per business and mode, locked while the next is taken."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    last_number = pw.IntegerField(default=0)

    class Meta:
        database = db
        legacy_table_names = False
        primary_key = pw.CompositeKey("business", "mode")


class Invoice(BaseModel):
    """The invoice of one succeeded payment: numbered without gaps, its contents frozen."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    customer = pw.ForeignKeyField(Customer, backref="invoices", on_delete="CASCADE")
    payment = pw.ForeignKeyField(Payment, backref="invoices", unique=True)
    number = pw.IntegerField()
    issued_at = UTCDateTimeField(default=utcnow)
    currency = pw.CharField(max_length=3)
    lines = JSONField()  # [{"description", "quantity", "unit_amount", "amount"}]
    tax_inclusive = pw.BooleanField(default=False)  # lines are gross (tax included), else net
    subtotal = MoneyField()  # net: total less tax
    tax = MoneyField()
    total = MoneyField()  # tax included
    credit_applied = MoneyField(default=0)  # credit taken off the total: paid = total - this
    seller = JSONField()  # the business's details at issue
    buyer = JSONField()  # the customer's details at issue
    payment_details = JSONField(default=dict)  # method and status at issue

    class Meta:
        id_prefix = "inv"
        indexes = ((("business", "mode", "number"), True),)

    @property
    def display_number(self) -> str:
        prefix = "T-" if self.mode == "test" else ""
        return f"{prefix}{self.number:06d}"


class InvoicePdf(pw.Model):
    """An invoice's PDF in one language, rendered once and then served from here: a customer
    who changes language downloads the same invoice, worded in the new one."""

    invoice = pw.ForeignKeyField(Invoice, backref="pdfs", on_delete="CASCADE")
    locale = pw.CharField(max_length=16)
    pdf = pw.BlobField()
    created_at = UTCDateTimeField(default=utcnow)

    class Meta:
        database = db
        legacy_table_names = False
        primary_key = pw.CompositeKey("invoice", "locale")


class CreditNoteSequence(pw.Model):
    """The last credit note number issued per business and mode (gapless, like invoices)."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    last_number = pw.IntegerField(default=0)

    class Meta:
        database = db
        legacy_table_names = False
        primary_key = pw.CompositeKey("business", "mode")


class Refund(BaseModel):
    """Money given back on a succeeded payment through its provider, once per idempotency key.

    ``pending`` until the provider answers, then ``succeeded`` (with a credit note numbered
    without gaps per business and mode, its contents frozen like an invoice's) or ``failed``.
    ``initiated_by`` is ``merchant`` (dashboard or API) or ``portico`` (money that arrived for
    a subscription that no longer wanted it).
    """

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    customer = pw.ForeignKeyField(Customer, backref="refunds", on_delete="CASCADE")
    payment = pw.ForeignKeyField(Payment, backref="refunds")
    amount = MoneyField()  # tax included
    tax = MoneyField(default=0)  # the part of ``amount`` that was tax
    currency = pw.CharField(max_length=3)
    reason = pw.TextField(null=True)
    initiated_by = pw.CharField(default="merchant")  # merchant, portico
    status = pw.CharField(default="pending")  # pending, succeeded, failed
    idempotency_key = pw.CharField(unique=True)
    provider_reference = pw.CharField(null=True)
    failure_message = pw.TextField(null=True)
    attempts = pw.IntegerField(default=0)
    credit_note_number = pw.IntegerField(null=True)
    credit_note = JSONField(null=True)  # {invoice_number, lines, subtotal, tax, total, seller, buyer}
    issued_at = UTCDateTimeField(null=True)
    pdf = pw.BlobField(null=True)
    metadata = JSONField(default=dict)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        id_prefix = "ref"
        indexes = ((("business", "mode", "credit_note_number"), True),
                   (("payment", "status"), False), (("business", "mode", "created_at"), False),
                   (("status", "updated_at"), False))

    @property
    def display_number(self) -> str | None:
        if self.credit_note_number is None:
            return None
        prefix = "T-CN-" if self.mode == "test" else "CN-"
        return f"{prefix}{self.credit_note_number:06d}"


class LicenseKey(BaseModel):
    """A license key bought with a purchase, issued by a license source plugin."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    customer = pw.ForeignKeyField(Customer, backref="license_keys", on_delete="CASCADE")
    product = pw.ForeignKeyField(Product)
    payment = pw.ForeignKeyField(Payment, null=True)
    subscription = pw.ForeignKeyField(Subscription, null=True)
    key = pw.CharField(unique=True)
    source = pw.CharField(default="licenses")  # the license source plugin that validates it
    origin = pw.CharField(default="auto")  # auto (issued with a purchase) or import (by the API)
    status = pw.CharField(default="active")  # active, expired, disabled
    revoked_at = UTCDateTimeField(null=True)  # revoked for good by its license source
    activations_limit = pw.IntegerField(null=True)
    instances_count = pw.IntegerField(default=0)
    expires_at = UTCDateTimeField(null=True)

    class Meta:
        id_prefix = "lic"
        indexes = ((("customer", "created_at"), False),)


class LicenseKeyInstance(BaseModel):
    """One activation of a license key."""

    license_key = pw.ForeignKeyField(LicenseKey, backref="instances", on_delete="CASCADE")
    name = pw.CharField()

    class Meta:
        id_prefix = "lki"


class PortalToken(BaseModel):
    """A sign-in or confirmation token, stored only as its hash, bound to a purpose."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    customer = pw.ForeignKeyField(Customer, on_delete="CASCADE")
    purpose = pw.CharField()  # magic_link, api_session, email_change
    token_hash = pw.CharField(max_length=64, unique=True)
    expires_at = UTCDateTimeField()
    used_at = UTCDateTimeField(null=True)
    data = JSONField(default=dict)  # e.g. the return URL, or the new e-mail address

    class Meta:
        id_prefix = "tok"
        indexes = ((("customer", "purpose", "used_at"), False),)


class PortalSession(BaseModel):
    """A customer's server-side portal session; ending it here signs the browser out."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    customer = pw.ForeignKeyField(Customer, backref="sessions", on_delete="CASCADE")
    last_seen_at = UTCDateTimeField(default=utcnow)
    expires_at = UTCDateTimeField()
    revoked_at = UTCDateTimeField(null=True)
    return_url = pw.TextField(null=True)
    flow = JSONField(null=True)  # a deep link's one flow: {"type", ..., "after_completion"}
    ip = pw.CharField(null=True)
    user_agent = pw.TextField(null=True)

    class Meta:
        id_prefix = "ses"
        indexes = ((("customer", "revoked_at"), False),)


class MerchantSession(BaseModel):
    """A merchant user's server-side dashboard session, and the mode (test or live) it shows."""

    user = pw.ForeignKeyField(MerchantUser, backref="sessions", on_delete="CASCADE")
    mode = pw.CharField(max_length=4, default="test")
    last_seen_at = UTCDateTimeField(default=utcnow)
    expires_at = UTCDateTimeField()
    revoked_at = UTCDateTimeField(null=True)
    ip = pw.CharField(null=True)
    user_agent = pw.TextField(null=True)

    class Meta:
        id_prefix = "mse"
        indexes = ((("user", "revoked_at"), False),)


class AuditLog(BaseModel):
    """A sign-in related event: who, from where, what happened; never a token."""

    business = pw.ForeignKeyField(Business, null=True, on_delete="CASCADE")
    mode = pw.CharField(max_length=4, null=True)
    customer = pw.ForeignKeyField(Customer, null=True, on_delete="SET NULL")
    event = pw.CharField()
    outcome = pw.CharField(default="ok")
    ip = pw.CharField(null=True)
    detail = JSONField(default=dict)

    class Meta:
        id_prefix = "aud"
        indexes = ((("business", "created_at"), False),)


class WebhookEndpoint(BaseModel):
    """A merchant's URL that receives signed webhooks for one mode."""

    business = pw.ForeignKeyField(Business, backref="webhook_endpoints", on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    url = pw.TextField()
    description = pw.TextField(default="")
    secret = pw.CharField()  # whsec_…
    filter_types = JSONField(default=list)  # empty: every event
    disabled = pw.BooleanField(default=False)
    rate_limit = pw.IntegerField(null=True)
    metadata = JSONField(default=dict)
    updated_at = UTCDateTimeField(default=utcnow)

    class Meta:
        id_prefix = "whk"


class Event(BaseModel):
    """An event recorded in the same transaction as the change it describes (the outbox);
    ``dispatched_at`` is set once its deliveries are queued."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    customer = pw.ForeignKeyField(Customer, null=True, on_delete="SET NULL")
    type = pw.CharField()
    data = JSONField()
    dispatched_at = UTCDateTimeField(null=True)
    told_on_screen = pw.BooleanField(default=False)  # the customer saw this outcome on screen
    customer_only = pw.BooleanField(default=False)  # a notice for the customer: no webhook

    class Meta:
        id_prefix = "evt"
        indexes = ((("dispatched_at", "created_at"), False),
                   (("business", "mode", "created_at"), False))

    def notification(self):
        """This event as notifiers hear it."""
        from core.hookspecs import Notification

        return Notification(id=self.id, type=self.type, business_id=self.business_id,
                            mode=self.mode, data=self.data, created_at=self.created_at,
                            customer_id=self.customer_id, told_on_screen=self.told_on_screen,
                            customer_only=self.customer_only)


class Delivery(BaseModel):
    """One attempt to hand an event to a notifier (and, for webhooks, to one endpoint); one row
    per event, endpoint and attempt, so an attempt is never made twice. ``next_attempt_at`` is
    set while another attempt is owed and none has started."""

    event = pw.ForeignKeyField(Event, backref="deliveries", on_delete="CASCADE")
    notifier = pw.CharField()
    endpoint = pw.ForeignKeyField(WebhookEndpoint, null=True, backref="deliveries",
                                  on_delete="CASCADE")
    attempt = pw.IntegerField(default=1)
    status = pw.CharField()  # sending, succeeded, failed
    response_status = pw.IntegerField(null=True)
    error = pw.TextField(null=True)
    duration_ms = pw.IntegerField(null=True)
    next_attempt_at = UTCDateTimeField(null=True)

    class Meta:
        id_prefix = "dlv"
        indexes = ((("event", "notifier"), False), (("endpoint", "created_at"), False),
                   (("event", "endpoint", "attempt"), True), (("next_attempt_at",), False))


class IdempotencyKey(BaseModel):
    """A merchant API request sent with an ``Idempotency-Key``, claimed before its work runs and
    holding its answer once given, so a retry with that key replays the answer instead of doing
    the work again (see ``core.idempotency``). One per business, mode and key."""

    business = pw.ForeignKeyField(Business, on_delete="CASCADE")
    mode = pw.CharField(max_length=4)
    key = pw.CharField(max_length=255)
    fingerprint = pw.CharField(max_length=64)  # SHA-256 of the method, path and body
    response_status = pw.IntegerField(null=True)  # null while the first request runs
    response_body = pw.TextField(null=True)
    expires_at = UTCDateTimeField()

    class Meta:
        id_prefix = "idk"
        indexes = ((("business", "mode", "key"), True), (("expires_at",), False))


def newest_first(model, *scope, name: str):
    """An index on ``scope`` then ``created_at DESC, id DESC``: the order every paginated list
    shows, so a page (by keyset or by page number) is read from the index, however long the
    table, and never sorted."""
    model.add_index(model.index(*scope, model.created_at.desc(), model.id.desc(), name=name))


newest_first(Payment, Payment.customer, name="payment_customer_newest")
newest_first(Payment, Payment.business, Payment.mode, name="payment_business_newest")
newest_first(Subscription, Subscription.business, Subscription.mode, name="subscription_business_newest")
newest_first(Customer, Customer.business, Customer.mode, name="customer_business_newest")

MODELS = [Business, PortalConfiguration, MerchantUser, ApiKey, Customer, Product, Addon, ProductAddon,
          PaymentMethod, Subscription, Payment, InvoiceSequence, Invoice, InvoicePdf, CreditNoteSequence,
          Refund, LicenseKey, LicenseKeyInstance, PortalToken, PortalSession, MerchantSession, AuditLog,
          WebhookEndpoint, Event, Delivery, IdempotencyKey, Discount, CancellationRequest]


def _migration_runners(app):
    """``(source name, Runner)`` for the core's migrations (``migrations/``), then each
    plugin's own folder; each source keeps its own history table, so names never collide.

    Raises ``ConfigError`` when a source has no migration at all: a broken install must not
    pass for an up-to-date database.
    """
    from pathlib import Path

    from playhouse.migrations import Runner

    from core.config import ConfigError, shipped
    from core.plugins import registry

    sources = [("", shipped("migrations"))]
    for plugin_name, folder in registry(app).call_each("register_migrations", app=app):
        if folder:
            sources.append((plugin_name, Path(folder)))
    for name, folder in sources:
        table = f"schema_migration_{name}" if name else "schema_migration"
        runner = Runner(db.obj, directory=str(folder), table_name=table)
        if not runner.migrations():
            raise ConfigError(f"no migrations found in {folder} ({name or 'core'}): "
                              f"this installation is incomplete; reinstall Portico")
        yield name or "core", runner


def migrate(app) -> list[str]:
    """Apply pending migrations, the core's then each plugin's; returns the names applied
    (``core:0001_initial``). Raises ``ConfigError`` as ``_migration_runners`` says."""
    applied = []
    for name, runner in _migration_runners(app):
        with db.connection_context():
            applied += [f"{name}:{migration}" for migration in runner.up()]
    return applied


def pending_migrations(app) -> list[str]:
    """The migrations not applied yet, named like ``migrate``'s answer."""
    return [f"{name}:{migration.name}" for name, runner in _migration_runners(app)
            for migration in runner.status() if migration.applied is None]
