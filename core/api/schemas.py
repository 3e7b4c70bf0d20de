"""The shapes on the wire, as pydantic models: what each request may carry, and what each
answer holds (Dodo's models of SDK 1.123.0, every key always present).

Request bodies are strict and closed (``extra="forbid"``), so a typo is a 422 naming the field
rather than a silently ignored value; query parameters are read from strings. Anything the
billing core cannot honour (product-level discounts, trial amounts, pay-what-you-want) is allowed only at its
neutral value, so the document says exactly what is accepted.
"""

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    Tag,
)

from core.api import enums
from core.text import SINGLE_LINE
from core.text import WEB_URL as URL

# --- Building blocks -----------------------------------------------------------------------------

Currency = Literal[enums.CURRENCIES]
Country = Literal[enums.COUNTRIES]
Locale = Literal[enums.LOCALES]
TimeInterval = Literal[enums.TIME_INTERVALS]
TaxCategory = Literal[enums.TAX_CATEGORIES]
SubscriptionStatus = Literal[enums.SUBSCRIPTION_STATUSES]
IntentStatus = Literal[enums.INTENT_STATUSES]
LicenseKeyStatus = Literal[enums.LICENSE_KEY_STATUSES]
LicenseKeySource = Literal[enums.LICENSE_KEY_SOURCES]
CancellationFeedback = Literal[enums.CANCELLATION_FEEDBACK]
EventType = Literal[enums.WEBHOOK_EVENT_TYPES]

VISIBLE = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"  # and not blank
NO_NUL = r"^[^\x00]*$"
E164 = r"^\+[1-9][0-9]{6,14}$"
ITERATOR = r"^(next|prev):[A-Za-z0-9_]{1,64}$"
IDEMPOTENCY_KEY_CHARS = r"[!-~]{1,255}"  # 1 to 255 visible ASCII characters, such as a UUID
IDEMPOTENCY = f"^{IDEMPOTENCY_KEY_CHARS}$"

# What a value failing each pattern should have been, in words
PATTERN_MESSAGES = {
    SINGLE_LINE: "must be one line of text, without control characters",
    VISIBLE: "must be one line of text that is not blank, without control characters",
    NO_NUL: "must not contain NUL characters",
    E164: "must be a phone number in E.164 form, such as +15555550100",
    URL: "must be an absolute http:// or https:// URL",
    ITERATOR: "must be an iterator this API gave",
    IDEMPOTENCY: "must be 1 to 255 visible ASCII characters, such as a UUID",
}


def line(max_length: int, min_length: int = 0):
    """A single line of text of at most ``max_length`` characters."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length,
                                            pattern=SINGLE_LINE)]


def _strip(value: str) -> str:
    return value.strip()


Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=VISIBLE),
                 AfterValidator(_strip)]
Text = Annotated[str, StringConstraints(max_length=5000, pattern=NO_NUL)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=SINGLE_LINE)]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=IDEMPOTENCY)]
def _whole(value):
    """JSON has one number type: 12.0 is the integer 12, as JSON Schema reads it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _false(value: bool) -> bool:
    if value:
        raise ValueError("is not supported: false only")
    return value


Zero = Annotated[StrictInt, Field(ge=0, le=0), BeforeValidator(_whole)]
No = Annotated[StrictBool, Field(json_schema_extra={"const": False}), AfterValidator(_false)]


def whole(ge: int, le: int, description: str | None = None):
    """A whole number from ``ge`` to ``le``."""
    return Annotated[StrictInt, Field(ge=ge, le=le, description=description), BeforeValidator(_whole)]


Amount = whole(1, 10**12, "In minor units (cents).")
Quantity = whole(1, 1000)
Count = whole(1, 1000)
TrialDays = whole(0, 10000, "Days of free trial (Dodo allows 0 to 10000).")
Limit = whole(0, 1_000_000)


def _email(value: str) -> str:
    from core.auth import normalize_email

    return normalize_email(value)


Email = Annotated[str, StringConstraints(max_length=254), Field(json_schema_extra={"format": "email"}),
                  AfterValidator(_email)]


Phone = Annotated[str, StringConstraints(pattern=E164),
                  Field(description="E.164: a + and 7 to 15 digits, such as +15555550100.")]

Url = Annotated[str, StringConstraints(max_length=2000, pattern=URL)]

# Metadata is stored as JSON text, so any character is safe in it
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=40)]
MetadataText = Annotated[str, StringConstraints(max_length=500)]
MetadataValue = MetadataText | StrictBool | StrictInt | Annotated[float, Field(allow_inf_nan=False)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=50)]
StringMetadata = Annotated[dict[MetadataKey, MetadataText], Field(max_length=50)]


class In(BaseModel):
    """A request body: strict types, and no field it does not name."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _query_bool(value):
    if isinstance(value, bool):
        return value
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError("must be true or false")


ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _query_time(value):
    """An ISO 8601 date and time (a missing offset reads as UTC); never a bare number."""
    if isinstance(value, str):
        if not ISO_TIME.match(value):
            raise ValueError("must be an ISO 8601 date and time, such as 2025-01-01T00:00:00Z")
        value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return value


QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
QueryTime = Annotated[datetime, BeforeValidator(_query_time)]
QueryId = Annotated[str, StringConstraints(max_length=64)]


class Query(BaseModel):
    """Query parameters: strings read into their types; parameters not named are ignored."""

    model_config = ConfigDict(extra="ignore")


class Page(Query):
    page_number: int = Field(0, ge=0, le=1_000_000, description="The page, from 0.")
    page_size: int = Field(10, ge=1, le=100, description="Items per page.")


class CreatedPage(Page):
    created_at_gte: QueryTime | None = Field(None, description="Created at or after this time.")
    created_at_lte: QueryTime | None = Field(None, description="Created at or before this time.")


OutMetadata = dict[str, str | int | float | bool]


class Out(BaseModel):
    """An answer: every key listed is always present (``None`` where it has no value)."""

    model_config = ConfigDict(extra="allow")


class Error(Out):
    """Every error: a stable code (Dodo's where one exists) and a readable message."""

    code: str
    message: str


# --- Customers -----------------------------------------------------------------------------------


class BillingAddressIn(In):
    country: Country
    city: line(200) | None = None
    state: line(200) | None = None
    street: line(200) | None = None
    zipcode: line(40) | None = None


TaxId = Annotated[line(64), Field(description="Checked against the format of the billing "
                                            "country (or of an EU VAT prefix) where one is known.")]


class CustomerCreate(In):
    email: Email
    name: Name
    metadata: Metadata | None = None
    phone_number: Phone | None = None
    preferred_locale: Locale | None = None
    billing_address: BillingAddressIn | None = None
    tax_id: TaxId | None = None


class CustomerUpdate(In):
    """Only the fields sent change; ``null`` removes the phone number, locale, metadata,
    billing address or tax ID."""

    email: Email = None
    name: Name = None
    metadata: Metadata | None = None
    phone_number: Phone | None = None
    preferred_locale: Locale | None = None
    billing_address: BillingAddressIn | None = None
    tax_id: TaxId | None = None


class CustomerListQuery(CreatedPage):
    email: Annotated[str, StringConstraints(max_length=254)] | None = Field(
        None, description="Only the customer with this e-mail address.")
    name: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None, description="Customers whose name contains this, in any case.")


class PortalSessionQuery(Query):
    send_email: QueryBool = Field(False, description="Also e-mail the customer a sign-in link.")
    return_url: Url | None = Field(None, description="Shown in the portal as \"Return to {business}\"; "
                                                     "https only with a live key.")


class PortalFlow(In):
    type: Literal["payment_method_update", "subscription_cancel", "subscription_update",
                  "subscription_update_confirm", "customer_update"] = Field(
        description="The one task the session is limited to.")
    subscription_id: Id | None = Field(None, description="The customer's subscription it is "
                                                         "about: required but for customer_update "
                                                         "and payment_method_update, which "
                                                         "without one opens the saved payment "
                                                         "methods (adding a card or choosing the "
                                                         "default ends it).")
    product_id: Id | None = Field(None, description="subscription_update_confirm: the new plan.")
    quantity: Quantity | None = Field(None, description="subscription_update_confirm: the new "
                                                        "quantity (default: the current one).")


class AfterCompletion(In):
    type: Literal["redirect", "hosted_confirmation", "portal_homepage"]
    url: Url | None = Field(None, description="redirect: where to; https only with a live key.")
    message: line(500) | None = Field(None, description="hosted_confirmation: what it says.")


class PortalSessionBody(In):
    """Optional: a deep link into one flow of the portal (send it with the SDK's ``extra_body``)."""

    flow: PortalFlow | None = None
    after_completion: AfterCompletion | None = Field(
        None, description="Where the customer goes once the flow is done (default: a "
                          "confirmation page).")


class CustomerLimited(Out):
    customer_id: str
    email: str
    name: str
    metadata: OutMetadata | None
    phone_number: str | None


class Customer(CustomerLimited):
    business_id: str
    created_at: datetime
    preferred_locale: Locale | None
    billing_address: "BillingAddress | None"
    tax_id: str | None
    blocked_at: datetime | None
    blocklist_entry_id: str | None


class PortalSession(Out):
    link: str


class CustomerExport(Out):
    """Everything held about a customer (``core.privacy.export``): the stored records as they are."""

    format: str
    exported_at: datetime
    business: dict[str, Any]
    customer: dict[str, Any]
    subscriptions: list[dict[str, Any]]
    payments: list[dict[str, Any]]
    invoices: list[dict[str, Any]]
    license_keys: list[dict[str, Any]]
    license_key_instances: list[dict[str, Any]]
    payment_methods: list[dict[str, Any]]
    sessions: list[dict[str, Any]]
    sign_in_links: list[dict[str, Any]]
    audit_log: list[dict[str, Any]]


class Card(Out):
    card_holder_name: str | None
    card_issuing_country: Country | None
    card_network: str | None
    card_type: str | None
    expiry_month: str | None
    expiry_year: str | None
    last4_digits: str | None


class PaymentMethod(Out):
    payment_method: Literal["card"]
    payment_method_id: str
    card: Card | None
    last_used_at: datetime | None
    payment_method_type: str | None
    recurring_enabled: bool | None
    is_default: bool = Field(description="The customer's default method (Portico's own field).")
    subscription_ids: list[str] = Field(description="The pending, active and on-hold "
                                                    "subscriptions it pays for (Portico's own field).")


class PaymentMethods(Out):
    items: list[PaymentMethod]


# --- Products and add-ons ----------------------------------------------------------------------


class OneTimePriceIn(In):
    type: Literal["one_time_price"]
    currency: Currency
    price: Amount
    tax_inclusive: bool | None = None
    discount: Zero = Field(0, description="Discounts are not supported: 0 only.")
    discount_bps: Zero | None = None
    pay_what_you_want: No = False
    purchasing_power_parity: No = False
    suggested_price: None = None


class RecurringPriceIn(In):
    type: Literal["recurring_price"]
    currency: Currency
    price: Amount
    payment_frequency_count: Count = Field(description="The billing cycle: every N intervals.")
    payment_frequency_interval: TimeInterval
    subscription_period_count: Count = Field(description="The whole term, after which it expires.")
    subscription_period_interval: TimeInterval
    tax_inclusive: bool | None = None
    discount: Zero = Field(0, description="Discounts are not supported: 0 only.")
    discount_bps: Zero | None = None
    purchasing_power_parity: No = False
    trial_period_days: TrialDays | None = Field(
        None, description="Free days before the first charge of a new subscription (0: none).")
    trial_payment_method_optional: bool | None = Field(
        None, description="Whether a trial may start without a payment method (default: false).")
    trial_amount: Zero | None = Field(None, description="Paid trials are not supported: 0 only.")


PriceIn = Annotated[OneTimePriceIn | RecurringPriceIn, Field(discriminator="type")]


class LicenseKeyDuration(In):
    count: Count
    interval: TimeInterval


class ProductCreate(In):
    name: Name
    price: PriceIn
    tax_category: TaxCategory
    description: Text | None = None
    addons: Annotated[list[Id], Field(max_length=20)] | None = None
    brand_id: Id | None = None
    license_key_enabled: bool | None = None
    license_key_activations_limit: Limit | None = None
    license_key_duration: LicenseKeyDuration | None = None
    license_key_activation_message: Text | None = None
    metadata: Metadata | None = None
    tax_rate_bps: whole(0, 10000) = Field(
        0, description="Portico: the tax rate charged on top of (or included in) the price, in "
                       "basis points (2000 = 20 %).")


class ProductUpdate(In):
    """Only the fields sent change; ``null`` clears a nullable one."""

    name: Name = None
    price: PriceIn = None
    tax_category: TaxCategory = None
    description: Text | None = None
    addons: Annotated[list[Id], Field(max_length=20)] | None = None
    brand_id: Id | None = None
    license_key_enabled: bool | None = None
    license_key_activations_limit: Limit | None = None
    license_key_duration: LicenseKeyDuration | None = None
    license_key_activation_message: Text | None = None
    metadata: Metadata | None = None
    tax_rate_bps: whole(0, 10000) = None


class ProductListQuery(Page):
    archived: QueryBool = Field(False, description="List archived products instead.")
    brand_id: QueryId | None = None
    recurring: QueryBool | None = Field(None, description="true: subscriptions only; false: one-time only.")


class OneTimePrice(Out):
    type: Literal["one_time_price"]
    currency: Currency
    price: int
    discount: int | None
    discount_bps: int | None
    pay_what_you_want: bool | None
    purchasing_power_parity: bool | None
    suggested_price: int | None
    tax_inclusive: bool | None


class RecurringPrice(Out):
    type: Literal["recurring_price"]
    currency: Currency
    price: int
    payment_frequency_count: int
    payment_frequency_interval: TimeInterval
    subscription_period_count: int
    subscription_period_interval: TimeInterval
    discount: int | None
    discount_bps: int | None
    purchasing_power_parity: bool | None
    tax_inclusive: bool | None
    trial_period_days: int | None
    trial_payment_method_optional: bool | None


Price = Annotated[OneTimePrice | RecurringPrice, Field(discriminator="type")]


class LicenseKeyDurationOut(Out):
    count: int
    interval: TimeInterval


class Product(Out):
    product_id: str
    business_id: str
    brand_id: str
    name: str | None
    description: str | None
    image: str | None
    is_recurring: bool
    price: Price
    tax_category: TaxCategory
    tax_rate_bps: int
    license_key_enabled: bool
    license_key_activations_limit: int | None
    license_key_duration: LicenseKeyDurationOut | None
    license_key_activation_message: str | None
    addons: list[str] | None
    metadata: OutMetadata
    entitlements: list[Any]
    credit_entitlements: list[Any]
    digital_product_delivery: Any
    pricing_mode: Literal["by_currency", "by_country"] | None
    product_collection_id: str | None
    archived: bool
    created_at: datetime
    updated_at: datetime


class ProductListItem(Out):
    product_id: str
    business_id: str
    name: str | None
    description: str | None
    image: str | None
    is_recurring: bool
    price: int | None
    currency: Currency | None
    tax_inclusive: bool | None
    price_detail: Price | None
    tax_category: TaxCategory
    metadata: OutMetadata
    entitlements: list[Any]
    pricing_mode: Literal["by_currency", "by_country"] | None
    created_at: datetime
    updated_at: datetime


class PriceMove(In):
    not_before: datetime | None = Field(
        None, description="The new price applies from each subscription's first billing date "
                          "at least PRICE_CHANGE_NOTICE_DAYS from now, and not before this time.")


class PriceMoveItem(Out):
    subscription_id: str
    effective_at: datetime
    amount: int = Field(description="Each period's new amount, tax included.")
    previous_amount: int


class PriceMoves(Out):
    items: list[PriceMoveItem]


class AddonCreate(In):
    currency: Currency
    name: Name
    price: Amount
    tax_category: TaxCategory
    description: Text | None = None


class AddonUpdate(In):
    currency: Currency = None
    name: Name = None
    price: Amount = None
    tax_category: TaxCategory = None
    description: Text | None = None


class AddonListQuery(Page):
    archived: QueryBool = Field(False, description="List archived add-ons instead.")


class Addon(Out):
    id: str
    business_id: str
    name: str
    description: str | None
    image: str | None
    price: int
    currency: Currency
    tax_category: TaxCategory
    archived: bool
    created_at: datetime
    updated_at: datetime


# --- Subscriptions -------------------------------------------------------------------------------


class ExistingCustomer(In):
    customer_id: Id


class NewCustomer(In):
    email: Email
    name: Name | None = None
    phone_number: Phone | None = None


class AddonItem(In):
    addon_id: Id
    quantity: Quantity


def _customer_kind(value) -> str:
    """Which kind of customer reference: by id, or by e-mail address."""
    if isinstance(value, dict):
        return "existing" if "customer_id" in value else "new"
    return "existing" if isinstance(value, ExistingCustomer) else "new"


CustomerRef = Annotated[Annotated[ExistingCustomer, Tag("existing")] | Annotated[NewCustomer, Tag("new")],
                        Discriminator(_customer_kind)]


BodyTime = Annotated[datetime, BeforeValidator(_query_time)]

# --- Discounts -------------------------------------------------------------------------------------

DiscountCode = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
DiscountType = Literal["percentage", "flat"]
AMOUNT_HELP = ("percentage: basis points, 1 to 10000 (540 = 5.4 %); flat: minor units of the "
               "subscription's currency (100 = $1.00), never more than the charge")


def _upper(value: str) -> str:
    return value.upper()


class DiscountCreate(In):
    amount: whole(1, 10**12) = Field(description=AMOUNT_HELP)
    type: DiscountType
    code: Annotated[DiscountCode, AfterValidator(_upper)] | None = Field(
        None, description="Upper-cased; 3 to 64 letters, digits, - or _. Default: 16 random "
                          "characters.")
    name: line(200) | None = None
    expires_at: BodyTime | None = Field(None, description="After this, the code is refused.")
    starts_at: BodyTime | None = Field(None, description="Before this, the code is refused.")
    subscription_cycles: whole(1, 10_000) | None = Field(
        None, description="How many charges of a subscription it takes off (the first payment "
                          "and the renewals after it); default: all of them.")
    usage_limit: whole(1, 10**9) | None = Field(None, description="How many subscriptions may "
                                                                 "be given it.")
    restricted_to: Annotated[list[Id], Field(max_length=100)] | None = Field(
        None, description="The products it applies to (default: any).")
    preserve_on_plan_change: StrictBool = Field(False, description="Kept through a plan change "
                                                                   "(else the change drops it).")
    metadata: Metadata | None = None
    customer_eligibility: Literal["any"] | None = Field(None, description="any only.")
    per_customer_usage_limit: Zero | None = Field(None, description="Not supported: null only.")
    currency_options: Annotated[list[Any], Field(max_length=0)] | None = Field(
        None, description="Not supported: a flat amount is in the subscription's currency.")


class DiscountUpdate(In):
    """Only the fields sent change; ``null`` clears ``expires_at``, ``starts_at``,
    ``subscription_cycles``, ``usage_limit`` and ``name``. Subscriptions already given the
    discount keep it as it was."""

    amount: whole(1, 10**12) | None = Field(None, description=AMOUNT_HELP)
    type: DiscountType | None = None
    code: Annotated[DiscountCode, AfterValidator(_upper)] | None = None
    name: line(200) | None = None
    expires_at: BodyTime | None = None
    starts_at: BodyTime | None = None
    subscription_cycles: whole(1, 10_000) | None = None
    usage_limit: whole(1, 10**9) | None = None
    restricted_to: Annotated[list[Id], Field(max_length=100)] | None = None
    preserve_on_plan_change: StrictBool | None = None
    metadata: Metadata | None = None
    customer_eligibility: Literal["any"] | None = None
    per_customer_usage_limit: Zero | None = None
    currency_options: Annotated[list[Any], Field(max_length=0)] | None = None


class DiscountListQuery(Page):
    active: QueryBool | None = Field(None, description="true: redeemable now (started, not "
                                                       "expired, not used up); false: not.")
    code: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="Codes containing this, in any case.")
    discount_type: DiscountType | None = None
    product_id: QueryId | None = Field(None, description="Discounts that apply to this product.")


class Discount(Out):
    discount_id: str
    business_id: str
    code: str
    name: str | None
    type: DiscountType
    amount: int
    created_at: datetime
    expires_at: datetime | None
    starts_at: datetime | None
    subscription_cycles: int | None
    usage_limit: int | None
    times_used: int
    per_customer_usage_limit: int | None
    customer_eligibility: Literal["any"]
    restricted_to: list[str]
    preserve_on_plan_change: bool
    metadata: OutMetadata
    currency_options: list[Any]


class DiscountDetail(Out):
    discount_id: str
    business_id: str
    code: str
    name: str | None
    type: DiscountType
    amount: int
    created_at: datetime
    expires_at: datetime | None
    usage_limit: int | None
    times_used: int
    restricted_to: list[str]
    metadata: OutMetadata
    preserve_on_plan_change: bool
    position: int
    subscription_cycles: int | None
    cycles_remaining: int | None
    discount_cycles_remaining: int | None = Field(description="cycles_remaining, as the "
                                                              "subscription list names it.")


class SubscriptionCreate(In):
    """``trial_period_days`` overrides the product's trial (0: none), as in Dodo's API."""

    billing: BillingAddressIn
    customer: CustomerRef = Field(description="An existing customer by id, or one found (or "
                                              "created) by e-mail address.")
    product_id: Id
    quantity: Quantity
    payment_method_id: Id = Field(None, description="A saved payment method of the customer; in "
                                                    "test mode, a sandbox test token such as "
                                                    "pm_card_visa. Default: the customer's default "
                                                    "payment method.")
    addons: Annotated[list[AddonItem], Field(max_length=20)] | None = None
    metadata: Metadata | None = None
    tax_id: TaxId | None = Field(None, description="Kept as the customer's tax ID when they have none.")
    trial_period_days: TrialDays | None = Field(
        None, description="Free days before the first charge, instead of the product's (0: none).")
    discount_code: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="A discount code (any case) for this subscription (deprecated by Dodo "
                          "for discount_codes).")
    discount_codes: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
                              Field(max_length=1)] | None = Field(
        None, description="One discount code at most: discounts do not stack.")



class SubscriptionUpdate(In):
    """Only the fields sent change. ``status: cancelled`` cancels now (at the next billing
    date with ``cancel_at_next_billing_date: true``); that flag alone schedules or revokes.
    ``status: paused`` pauses an active subscription and ``status: active`` resumes a paused
    one: either is sent alone (422 otherwise)."""

    status: Literal["cancelled", "paused", "active"] = None
    next_billing_date: BodyTime | None = Field(
        None, description="Move the next renewal, earlier (down to now) or later (up to the end "
                          "of the term); never in the past. A missing offset reads as UTC.")
    pause: Any = Field(None, description="Removed, as in Dodo's API: always 422. Send "
                                         "status: paused to pause, status: active to resume.")
    cancel_at_next_billing_date: StrictBool = None
    cancellation_feedback: CancellationFeedback | None = None
    cancellation_comment: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None
    billing: BillingAddressIn = None
    metadata: Metadata | None = None


class ChangePlan(In):
    product_id: Id
    quantity: Quantity
    proration_billing_mode: Literal["prorated_immediately"] = Field(
        description="Within one billing cycle an upgrade is charged now, prorated to the day, and "
                    "a downgrade applies at the next billing date. Across cycles (monthly to "
                    "yearly or back) the new cycle starts at the change: its first period is "
                    "charged now, less the unused time of the current one (credited; what is "
                    "left of the credit is taken off the next charges).")
    addons: list[AddonItem] | None = Field(
        None, description="The add-ons after the change (an empty list removes them all); each "
                          "must be offered with the new product (409 ADDON_NOT_OFFERED otherwise). "
                          "Left out: the subscription keeps those the new product offers and "
                          "drops the others.")
    effective_at: Literal["immediately", "next_billing_date"] | None = Field(
        None, description="immediately (the default), or next_billing_date: nothing is charged "
                          "now and the change applies with the next renewal.")
    on_payment_failure: Literal["prevent_change"] | None = None


class ExistingPaymentMethod(In):
    type: Literal["existing"]
    payment_method_id: Id


class NewPaymentMethod(In):
    type: Literal["new"]
    return_url: Url | None = Field(None, description="Where the card form sends the customer back, "
                                                     "with ?payment_method=<id> added; default: the portal.")


UpdatePaymentMethod = Annotated[ExistingPaymentMethod | NewPaymentMethod, Field(discriminator="type")]


class SubscriptionListQuery(CreatedPage):
    brand_id: QueryId | None = None
    cancel_at_next_billing_date: QueryBool | None = None
    customer_id: QueryId | None = None
    product_id: QueryId | None = None
    status: SubscriptionStatus | None = None


class BillingAddress(Out):
    country: Country
    city: str | None
    state: str | None
    street: str | None
    zipcode: str | None


Customer.model_rebuild()  # its billing_address is a BillingAddress


class AddonCartItem(Out):
    addon_id: str
    quantity: int


class CancelledBy(Out):
    actor_type: Literal["customer", "merchant_user", "api_key", "dodo_team"]
    email: str | None
    name: str | None


class ScheduledAddon(Out):
    addon_id: str
    name: str
    quantity: int


class ScheduledChange(Out):
    id: str
    addons: list[ScheduledAddon]
    created_at: datetime
    effective_at: datetime
    product_id: str
    quantity: int
    product_name: str | None
    product_description: str | None


class SubscriptionListItem(Out):
    subscription_id: str
    status: SubscriptionStatus
    product_id: str
    product_name: str | None
    customer: CustomerLimited
    quantity: int
    currency: Currency
    recurring_pre_tax_amount: int
    tax_inclusive: bool
    billing: BillingAddress
    payment_frequency_count: int
    payment_frequency_interval: TimeInterval
    subscription_period_count: int
    subscription_period_interval: TimeInterval
    trial_period_days: int
    previous_billing_date: datetime
    next_billing_date: datetime
    cancel_at_next_billing_date: bool
    cancelled_at: datetime | None
    cancelled_by: CancelledBy | None
    payment_method_id: str | None
    has_payment_method: bool
    scheduled_change: ScheduledChange | None
    metadata: OutMetadata
    on_demand: bool
    discounts: list[DiscountDetail]
    tax_id: str | None
    customer_business_name: str | None
    paused_at: datetime | None
    trial_amount: int | None
    discount_id: str | None
    discount_cycles_remaining: int | None
    created_at: datetime


class Subscription(SubscriptionListItem):
    brand_id: str
    addons: list[AddonCartItem]
    expires_at: datetime | None
    cancellation_feedback: CancellationFeedback | None
    cancellation_comment: str | None
    meters: list[Any]
    credit_entitlement_cart: list[Any]
    meter_credit_entitlement_cart: list[Any]
    custom_field_responses: list[Any] | None


class SubscriptionCreated(Out):
    subscription_id: str
    payment_id: str
    customer: CustomerLimited
    addons: list[AddonCartItem]
    metadata: OutMetadata
    recurring_pre_tax_amount: int
    payment_method_required: bool
    payment_link: str | None
    client_secret: str | None
    expires_on: datetime | None
    discount_id: str | None
    discount_ids: list[str] | None
    one_time_product_cart: list[Any] | None
    trial_amount: int | None


class PaymentLinkAnswer(Out):
    """A change that may need a payment: the payment made, or where the customer completes it."""

    payment_id: str | None
    payment_link: str | None
    client_secret: str | None
    expires_on: datetime | None


class ChargeLine(Out):
    id: str
    type: Literal["subscription"]
    product_id: str
    name: str | None
    description: str | None
    currency: Currency
    quantity: int
    unit_price: int
    proration_factor: float
    tax_inclusive: bool
    tax: int | None
    tax_rate: float | None


class AddonChargeLine(Out):
    id: str = Field(description="The add-on's id.")
    type: Literal["addon"]
    name: str
    description: str | None
    currency: Currency
    quantity: int
    unit_price: int
    proration_factor: float
    tax_category: str
    tax_inclusive: bool
    tax: int | None
    tax_rate: float


class ChargeSummary(Out):
    currency: Currency
    total_amount: int
    tax: int | None
    settlement_amount: int
    settlement_currency: Currency
    settlement_tax: int | None
    customer_credits: int
    customer_credits_currency: Currency


class ImmediateCharge(Out):
    effective_at: datetime
    line_items: list[Annotated[ChargeLine | AddonChargeLine, Field(discriminator="type")]]
    summary: ChargeSummary


class PlanChangePreview(Out):
    immediate_charge: ImmediateCharge
    new_plan: Subscription
    dropped_addons: list[str] = Field(description="Portico's own: the names of the add-ons the "
                                                  "change drops, which the new product does not offer.")
    replaces_scheduled_change: ScheduledChange | None = Field(
        description="Portico's own: the change waiting for the next billing date that this one "
                    "replaces (it is built on it: see change-plan).")


# --- Payments ---------------------------------------------------------------------------------------


class PaymentListQuery(CreatedPage):
    brand_id: QueryId | None = None
    currency: Currency | None = None
    customer_id: QueryId | None = None
    product_id: QueryId | None = None
    status: IntentStatus | None = None
    subscription_id: QueryId | None = None


class ServicePeriod(Out):
    subscription_id: str
    starts_at: datetime
    ends_at: datetime
    proration_factor: str


class InvoiceLine(Out):
    description: str
    quantity: int
    unit_amount: int
    amount: int


class ProductCartItem(Out):
    product_id: str
    quantity: int


class PaymentCommon(Out):
    """What a payment shows in a list and on its own."""

    payment_id: str
    brand_id: str
    status: IntentStatus | None
    total_amount: int
    currency: Currency
    customer: CustomerLimited
    subscription_id: str | None
    subscription_ids: list[str]
    charge_type: Literal[enums.CHARGE_TYPES] | None
    payment_method: str | None
    payment_method_type: str | None
    card_network: str | None
    card_last_four: str | None
    card_exp_month: str | None
    card_exp_year: str | None
    card_type: str | None
    payment_provider: Literal["stripe", "adyen", "dodo"]
    invoice_id: str | None
    invoice_url: str | None
    retry_attempt: int
    service_periods: list[ServicePeriod]
    metadata: OutMetadata
    digital_products_delivered: bool
    includes_usage: bool
    is_multi_subscription: bool
    checkout_session_id: str | None
    refund_status: Literal["partial", "full"] | None
    three_ds_flow: str | None
    three_ds_status: str | None
    three_ds_version: str | None
    created_at: datetime


class PaymentListItem(PaymentCommon):
    has_license_key: bool
    dispute_status: str | None


class Payment(PaymentCommon):
    business_id: str
    tax: int | None
    settlement_amount: int
    settlement_currency: Currency
    settlement_tax: int | None
    billing: BillingAddress
    is_update_payment_method: bool
    product_cart: list[ProductCartItem] | None
    invoice_lines: list[InvoiceLine] = Field(description="Portico's own: what the payment charges, "
                                                         "line by line; each quantity × unit_amount "
                                                         "is its amount, to the minor unit.")
    tax_inclusive: bool = Field(description="Portico's own: whether invoice_lines include tax "
                                            "(else tax is added to their sum).")
    credit_applied: int = Field(description="Portico's own: credit taken off the total charged.")
    payment_method_id: str | None
    card_holder_name: str | None
    card_issuing_country: Country | None
    error_code: str | None
    error_message: str | None
    payment_link: str | None
    refunds: list[Any]
    disputes: list[Any]
    discount_id: str | None
    discounts: list[Any] | None
    custom_field_responses: list[Any] | None
    updated_at: datetime | None


# --- License keys ---------------------------------------------------------------------------------


LicenseKeyText = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=VISIBLE),
                           AfterValidator(_strip)]


class LicenseKeyCreate(In):
    customer_id: Id
    product_id: Id
    key: LicenseKeyText = Field(description="The key to import, as the customer will type it.")
    activations_limit: Limit | None = Field(None, description="null: unlimited.")
    expires_at: datetime | None = None


class LicenseKeyUpdate(In):
    """Only the fields sent change; ``null`` removes the limit or the expiry."""

    activations_limit: Limit | None = None
    disabled: StrictBool = None
    expires_at: datetime | None = None


class LicenseKeyListQuery(CreatedPage):
    customer_id: QueryId | None = None
    product_id: QueryId | None = None
    source: LicenseKeySource | None = None
    status: LicenseKeyStatus | None = None


class LicenseKey(Out):
    id: str
    business_id: str
    brand_id: str
    customer_id: str
    product_id: str
    payment_id: str | None
    subscription_id: str | None
    key: str
    status: LicenseKeyStatus
    source: LicenseKeySource
    activations_limit: int | None
    instances_count: int
    expires_at: datetime | None = Field(
        description="When the key stops validating; for a subscription's key, when it would "
                    "without the next paid renewal, which moves it on.")
    created_at: datetime


class InstanceUpdate(In):
    name: Name


class InstanceListQuery(Page):
    license_key_id: QueryId | None = None


class LicenseKeyInstance(Out):
    id: str
    business_id: str
    license_key_id: str
    name: str
    created_at: datetime


class Activate(In):
    license_key: LicenseKeyText
    name: Name = Field(description="What the key is activated on, such as a machine's name.")


class Validate(In):
    license_key: LicenseKeyText
    license_key_instance_id: Id | None = None


class Deactivate(In):
    license_key: LicenseKeyText
    license_key_instance_id: Id


class ActivatedProduct(Out):
    product_id: str
    name: str | None


class Activation(Out):
    id: str
    business_id: str
    license_key_id: str
    name: str
    customer: CustomerLimited
    product: ActivatedProduct
    created_at: datetime


class Validity(Out):
    valid: bool


# --- Webhook endpoints -------------------------------------------------------------------------


EventTypes = Annotated[list[EventType], Field(max_length=len(enums.WEBHOOK_EVENT_TYPES))]


class WebhookCreate(In):
    url: Url = Field(description="A public http(s) address; it must resolve outside private networks.")
    description: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = None
    disabled: bool | None = None
    filter_types: EventTypes | None = Field(None, description="Only these events; empty: every event.")
    metadata: StringMetadata | None = None
    idempotency_key: IdempotencyKey | None = Field(
        None, description="Dodo's field for the request's idempotency key: the same as the "
                          "Idempotency-Key header (send either, or the same in both).")


class WebhookUpdate(In):
    url: Url = None
    description: Annotated[str, StringConstraints(max_length=200, pattern=NO_NUL)] | None = None
    disabled: bool | None = None
    filter_types: EventTypes | None = None
    metadata: StringMetadata | None = None


class WebhookListQuery(Query):
    iterator: Annotated[str, StringConstraints(pattern=ITERATOR)] | None = Field(
        None, description="The `iterator` (or `prev_iterator`) of the page before.")
    limit: int = Field(10, ge=1, le=100)


class Webhook(Out):
    id: str
    url: str
    description: str
    metadata: dict[str, str]
    disabled: bool | None
    filter_types: list[str] | None
    rate_limit: int | None
    created_at: str
    updated_at: str


class Webhooks(Out):
    data: list[Webhook]
    iterator: str | None
    prev_iterator: str | None
    done: bool


class WebhookSecret(Out):
    secret: str


def items(model) -> type:
    """The page envelope ``{"items": [...]}`` of ``model``."""
    return type(f"{model.__name__}Page", (Out,), {"__annotations__": {"items": list[model]},
                                                  "__doc__": f"A page of {model.__name__} items.",
                                                  "__module__": __name__})


# --- Refunds ----------------------------------------------------------------------------------------


RefundStatus = Literal["succeeded", "failed", "pending", "review"]


class RefundItem(In):
    item_id: Id = Field(description="The product (or add-on) of the payment to refund.")
    amount: Amount | None = Field(None, description="Minor units to refund of this item; "
                                                    "null: the whole item.")
    tax_inclusive: StrictBool = Field(True, description="Whether ``amount`` includes its tax.")


class RefundCreate(In):
    payment_id: Id
    items: Annotated[list[RefundItem], Field(max_length=50)] | None = Field(
        None, description="Parts to refund; null: everything left of the payment.")
    reason: Annotated[str, StringConstraints(max_length=3000)] | None = None
    metadata: Metadata | None = None
    currency: Currency | None = Field(None, description="The currency of the items' amounts: "
                                                        "the payment's.")


class RefundListQuery(CreatedPage):
    customer_id: QueryId | None = None
    status: RefundStatus | None = None
    subscription_id: QueryId | None = None


class RefundListItem(Out):
    business_id: str
    created_at: datetime
    is_partial: bool
    payment_id: str
    refund_id: str
    status: RefundStatus
    amount: int | None
    currency: Currency | None
    network_reference: str | None
    network_reference_type: Literal["ARN", "STAN", "RRN"] | None
    network_reference_updated_at: datetime | None
    reason: str | None


class Refund(RefundListItem):
    brand_id: str
    customer: CustomerLimited
    metadata: OutMetadata


# --- The customer portal's configuration (Portico's own resource) -------------------------------

Reason = CancellationFeedback
CancellationMode = Literal["customer_choice", "immediately", "at_period_end"]
Proration = Literal["prorated_immediately", "next_billing_date"]


class ProfileFieldsIn(In):
    name: StrictBool = None
    email: StrictBool = None
    phone: StrictBool = None
    billing_address: StrictBool = None
    tax_id: StrictBool = None


class CancellationIn(In):
    enabled: StrictBool = None
    mode: CancellationMode = Field(None, description="When a customer may cancel: now, at the end "
                                                     "of the period, or their choice.")
    prorated_refund: StrictBool = Field(None, description="Refund the unused part of the period "
                                                          "on an immediate cancel.")
    reasons: Annotated[list[Reason], Field(max_length=8)] = Field(
        None, description="The reasons offered, in this order; empty: none asked.")
    reason_required: StrictBool = None
    retention_discount_id: Id | None = Field(None, description="A discount (its id) offered "
                                             "to a customer who is about to cancel, instead of "
                                             "cancelling; null: no offer.")


class ProductRule(In):
    product_id: Id
    switch_to: Annotated[list[Id], Field(max_length=100)] | None = Field(
        None, description="The products a subscription of this product may change to; null or "
                          "left out: any other plan (the rule sets only quantities and proration).")
    min_quantity: Quantity = Field(1, description="The fewest a subscription of this product "
                                   "may have: its seat changes, and changes to it from another plan.")
    max_quantity: Quantity | None = Field(None, description="The most (null: 1,000), as "
                                          "min_quantity.")
    proration: Proration = Field("prorated_immediately", description="Whether a change is charged "
                                                                    "now (prorated) or at the next renewal.")


class PlanChangeIn(In):
    enabled: StrictBool = None
    products: Annotated[list[ProductRule], Field(max_length=100)] = Field(
        None, description="Rules per product; a product without one may change to any other "
                          "plan. Replaces the whole list.")


class Enabled(In):
    enabled: StrictBool


class PortalConfigurationUpdate(In):
    """Only what is sent changes; objects are merged, lists replaced."""

    billing_history: StrictBool = None
    payment_method_update: StrictBool = None
    license_activation_removal: StrictBool = None
    profile_fields: ProfileFieldsIn = None
    cancellation: CancellationIn = None
    plan_change: PlanChangeIn = None
    quantity_change: Enabled = Field(None, description="Customers may change the quantity "
                                                       "(seats) of their plan.")
    pause: Enabled = Field(None, description="Customers may pause and resume their subscriptions "
                                             "(off unless turned on).")


class ProfileFields(Out):
    name: bool
    email: bool
    phone: bool
    billing_address: bool
    tax_id: bool


class Cancellation(Out):
    enabled: bool
    mode: CancellationMode
    prorated_refund: bool
    reasons: list[Reason]
    reason_required: bool
    retention_discount_id: str | None


class ProductRuleOut(Out):
    product_id: str
    switch_to: list[str] | None
    min_quantity: int
    max_quantity: int | None
    proration: Proration


class PlanChange(Out):
    enabled: bool
    products: list[ProductRuleOut]


class EnabledOut(Out):
    enabled: bool


class PortalConfiguration(Out):
    business_id: str
    mode: Literal["test", "live"]
    updated_at: datetime | None
    billing_history: bool
    payment_method_update: bool
    license_activation_removal: bool
    profile_fields: ProfileFields
    cancellation: Cancellation
    plan_change: PlanChange
    quantity_change: EnabledOut
    pause: EnabledOut
