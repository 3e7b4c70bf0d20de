"""The value sets of the Dodo Payments API (SDK 1.123.0) that requests and answers use."""

# ISO 4217 currencies Dodo accepts (145)
CURRENCIES = (
    "AED", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BWP", "BYN", "BZD", "CAD", "CHF", "CLP",
    "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ETB", "EUR",
    "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HRK",
    "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF",
    "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA",
    "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SEK", "SGD", "SHP", "SLE", "SLL", "SOS",
    "SRD", "SSP", "STN", "SVC", "SZL", "THB", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH",
    "UGX", "USD", "UYU", "UZS", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER",
    "ZAR", "ZMW",
)

# ISO 3166-1 alpha-2 country codes (249)
COUNTRIES = (
    "AF", "AX", "AL", "DZ", "AS", "AD", "AO", "AI", "AQ", "AG", "AR", "AM", "AW", "AU", "AT", "AZ",
    "BS", "BH", "BD", "BB", "BY", "BE", "BZ", "BJ", "BM", "BT", "BO", "BQ", "BA", "BW", "BV", "BR",
    "IO", "BN", "BG", "BF", "BI", "KH", "CM", "CA", "CV", "KY", "CF", "TD", "CL", "CN", "CX", "CC",
    "CO", "KM", "CG", "CD", "CK", "CR", "CI", "HR", "CU", "CW", "CY", "CZ", "DK", "DJ", "DM", "DO",
    "EC", "EG", "SV", "GQ", "ER", "EE", "ET", "FK", "FO", "FJ", "FI", "FR", "GF", "PF", "TF", "GA",
    "GM", "GE", "DE", "GH", "GI", "GR", "GL", "GD", "GP", "GU", "GT", "GG", "GN", "GW", "GY", "HT",
    "HM", "VA", "HN", "HK", "HU", "IS", "IN", "ID", "IR", "IQ", "IE", "IM", "IL", "IT", "JM", "JP",
    "JE", "JO", "KZ", "KE", "KI", "KP", "KR", "KW", "KG", "LA", "LV", "LB", "LS", "LR", "LY", "LI",
    "LT", "LU", "MO", "MK", "MG", "MW", "MY", "MV", "ML", "MT", "MH", "MQ", "MR", "MU", "YT", "MX",
    "FM", "MD", "MC", "MN", "ME", "MS", "MA", "MZ", "MM", "NA", "NR", "NP", "NL", "NC", "NZ", "NI",
    "NE", "NG", "NU", "NF", "MP", "NO", "OM", "PK", "PW", "PS", "PA", "PG", "PY", "PE", "PH", "PN",
    "PL", "PT", "PR", "QA", "RE", "RO", "RU", "RW", "BL", "SH", "KN", "LC", "MF", "PM", "VC", "WS",
    "SM", "ST", "SA", "SN", "RS", "SC", "SL", "SG", "SX", "SK", "SI", "SB", "SO", "ZA", "GS", "SS",
    "ES", "LK", "SD", "SR", "SJ", "SZ", "SE", "CH", "SY", "TW", "TJ", "TZ", "TH", "TL", "TG", "TK",
    "TO", "TT", "TN", "TR", "TM", "TC", "TV", "UG", "UA", "AE", "GB", "UM", "US", "UY", "UZ", "VU",
    "VE", "VN", "VG", "VI", "WF", "EH", "YE", "ZM", "ZW",
)

# Languages a customer may prefer (22)
LOCALES = (
    "ar", "ca", "zh", "nl", "en", "fr", "de", "he", "id", "it", "ja", "ka", "ko", "ms", "pl", "pt",
    "ro", "ru", "es", "sv", "th", "tr",
)

# Every event type Dodo names (48); an endpoint may filter on any of them
WEBHOOK_EVENT_TYPES = (
    "payment.succeeded", "payment.failed", "payment.processing", "payment.cancelled",
    "refund.succeeded", "refund.failed", "dispute.opened", "dispute.expired", "dispute.accepted",
    "dispute.cancelled", "dispute.challenged", "dispute.won", "dispute.lost", "subscription.active",
    "subscription.renewed", "subscription.on_hold", "subscription.past_due", "subscription.paused",
    "subscription.unpaused", "subscription.cancelled", "subscription.failed",
    "subscription.expired", "subscription.plan_changed", "subscription.updated",
    "subscription.update_payment_method", "license_key.created", "payout.created", "payout.on_hold",
    "payout.in_progress", "payout.failed", "payout.success", "credit.added", "credit.deducted",
    "credit.expired", "credit.rolled_over", "credit.rollover_forfeited", "credit.overage_charged",
    "credit.overage_reset", "credit.manual_adjustment", "credit.balance_low",
    "abandoned_checkout.detected", "abandoned_checkout.recovered", "dunning.started",
    "dunning.recovered", "entitlement_grant.created", "entitlement_grant.delivered",
    "entitlement_grant.failed", "entitlement_grant.revoked",
)

TIME_INTERVALS = ("Day", "Week", "Month", "Year")
TAX_CATEGORIES = ("digital_products", "saas", "e_book", "edtech", "live_tutoring")
SUBSCRIPTION_STATUSES = ("pending", "active", "on_hold", "paused", "cancelled", "failed", "expired",
                         "past_due")
INTENT_STATUSES = ("succeeded", "failed", "cancelled", "processing", "requires_customer_action",
                   "requires_merchant_action", "requires_payment_method", "requires_confirmation",
                   "requires_capture", "partially_captured", "partially_captured_and_capturable")
LICENSE_KEY_STATUSES = ("active", "expired", "disabled")
LICENSE_KEY_SOURCES = ("auto", "import", "manual")
CANCELLATION_FEEDBACK = ("too_expensive", "missing_features", "switched_service", "unused",
                         "customer_service", "low_quality", "too_complex", "other")
CHARGE_TYPES = ("new", "renewal", "plan_change", "on_demand")
