"""The Stripe payment provider: cards saved through SetupIntents, charged off-session with
PaymentIntents, refunded with Refunds, all through the official ``stripe`` library.

Our idempotency key is Stripe's idempotency key, so a retried charge is the same charge. A
decline is a result carrying Stripe's own words; a network error, a 5xx, a rate limit or a
refused API key raises ``TransientProviderError`` (the job is retried with the same key). A
charge that needs 3-D Secure is ``requires_action``: the customer completes it on our
``authenticate`` page, and the outcome is settled when Stripe confirms it (webhook or the
page's server-side check), after checking it matches the payment.
"""

import logging
from functools import cached_property
from urllib.parse import urlsplit

import peewee as pw
import stripe
from flask import current_app, has_request_context, url_for
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from core.config import ConfigError
from core.hookspecs import CardDetails, ChargeResult, RefundResult, TransientProviderError
from core.models import Payment, PaymentMethod, Refund, db, for_update
from portico_stripe.models import StripeCustomer, StripeEvent

log = logging.getLogger("portico.stripe")

SETTINGS = {
    "STRIPE_SECRET_KEY": None,  # sk_test_… serves Portico's test mode, sk_live_… its live mode
    "STRIPE_PUBLISHABLE_KEY": None,  # pk_… of the same account, for Stripe.js
    "STRIPE_WEBHOOK_SECRET": None,  # whsec_… of the endpoint <BASE_URL>/stripe/webhook
    "STRIPE_API_BASE": "https://api.stripe.com",  # another address for testing (localstripe)
    "STRIPE_JS_URL": "https://js.stripe.com/v3/",  # likewise, Stripe.js
    "STRIPE_MAX_NETWORK_RETRIES": 2,  # quick retries inside one call, before the job's own
    "STRIPE_TIMEOUT": 30,  # seconds per request to Stripe
}

SETUP_SALT = "stripe-setup"
SETUP_MAX_AGE = 3600
ACTION_SALT = "stripe-action"

# The events that can settle a payment; others are recorded and ignored.
HANDLED_EVENTS = ("payment_intent.succeeded", "payment_intent.payment_failed",
                  "payment_intent.canceled")

# The events that can settle a refund Stripe first answered ``pending`` (bank transfers, some
# cards): https://docs.stripe.com/refunds#refund-events
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")

# PaymentIntent statuses that wait for the customer or the bank, not for us.
WAITING = {"requires_action", "requires_confirmation", "processing", "requires_capture"}


def configure(app):
    """Fill in the ``STRIPE_*`` defaults, type the numbers, and stop start-up when Stripe is
    chosen to save cards in a mode (``PAYMENT_PROVIDER_TEST``/``_LIVE``) without fitting keys."""
    for name, default in SETTINGS.items():
        app.config.setdefault(name, default)
        if isinstance(default, int):
            try:
                app.config[name] = int(app.config[name])
            except (TypeError, ValueError):
                raise ConfigError(f"{name} expects a whole number, got {app.config[name]!r}") from None
    for mode in ("test", "live"):
        if app.config.get(f"PAYMENT_PROVIDER_{mode.upper()}") != "stripe":
            continue
        if not app.config["STRIPE_SECRET_KEY"] or not app.config["STRIPE_PUBLISHABLE_KEY"]:
            raise ConfigError(f"PAYMENT_PROVIDER_{mode.upper()} is stripe: set PORTICO_STRIPE_SECRET_KEY "
                              f"and PORTICO_STRIPE_PUBLISHABLE_KEY")
        if mode not in key_modes(app.config["STRIPE_SECRET_KEY"]):
            raise ConfigError(f"PAYMENT_PROVIDER_{mode.upper()} is stripe, but PORTICO_STRIPE_SECRET_KEY "
                              f"is not a {mode}-mode key (sk_{mode}_…)")


def key_modes(secret_key: str | None) -> tuple[str, ...]:
    """The Portico mode a Stripe key serves: a live key (``sk_live_``/``rk_live_``) live mode,
    any other key test mode; no key, none."""
    if not secret_key:
        return ()
    return ("live",) if "_live_" in secret_key else ("test",)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def page_policy(config) -> str:
    """The Content-Security-Policy of our Stripe pages: our own scripts plus Stripe.js, Stripe's
    frames (the card element, 3-D Secure) and Stripe's API; nothing else."""
    js, api = origin(config["STRIPE_JS_URL"]), origin(config["STRIPE_API_BASE"])
    scripts = [js, "https://*.js.stripe.com"] if js == "https://js.stripe.com" else [js]
    frames = scripts + ["https://hooks.stripe.com"]
    return (f"default-src 'self'; script-src 'self' {' '.join(scripts)}; style-src 'self'; "
            f"img-src 'self' data:; font-src 'self'; connect-src 'self' {api}; "
            f"frame-src {' '.join(frames)}; form-action 'self'; frame-ancestors 'none'; "
            f"base-uri 'none'; object-src 'none'")


def transient(error: stripe.StripeError) -> bool:
    """Whether Stripe's outcome is unknown or may change on a retry with the same key: no
    answer, a 5xx, a rate limit, or an API key it refused (the merchant can fix that)."""
    return (isinstance(error, (stripe.APIConnectionError, stripe.RateLimitError,
                               stripe.AuthenticationError, stripe.PermissionError))
            or (error.http_status or 0) >= 500)


def reason(error: stripe.StripeError) -> str:
    """Stripe's explanation, as Stripe words it for people (``Your card was declined.``)."""
    return error.user_message or "Stripe refused the request."


def plain(obj) -> dict | None:
    """A Stripe object as the plain dict of its fields (PaymentIntents are read as dicts)."""
    return obj.to_dict() if isinstance(obj, stripe.StripeObject) else obj


def _id(value) -> str | None:
    """The id of a Stripe field that is either an id or an expanded object."""
    return value if value is None or isinstance(value, str) else value["id"]


def refund_result(refund) -> RefundResult:
    """What a Stripe Refund means for ours: ``succeeded``, ``pending`` (Stripe's ``pending``
    and ``requires_action``) or ``failed`` (``failed``, ``canceled``)."""
    status = {"succeeded": "succeeded", "pending": "pending",
              "requires_action": "pending"}.get(refund["status"], "failed")
    reason = refund.get("failure_reason")
    message = None if status != "failed" else (
        f"Stripe could not refund it ({reason})." if reason else "Stripe could not refund it.")
    return RefundResult(status, reference=refund["id"], failure_message=message)


def intent_result(intent, action_url: str | None = None) -> ChargeResult:
    """What a PaymentIntent means for our payment: succeeded, declined (with Stripe's words),
    or still waiting for the customer or the bank (``requires_action``)."""
    status, error = intent["status"], intent.get("last_payment_error") or {}
    if status == "succeeded":
        return ChargeResult("succeeded", reference=intent["id"])
    if status in WAITING or error.get("code") == "authentication_required":
        return ChargeResult("requires_action", reference=intent["id"], action_url=action_url)
    if status == "canceled":
        return ChargeResult("declined", reference=intent["id"], failure_code="canceled",
                            failure_message="The payment was cancelled.")
    return ChargeResult("declined", reference=intent["id"],
                        failure_code=error.get("decline_code") or error.get("code") or "declined",
                        failure_message=error.get("message") or "The payment was declined.")


class StripeProvider:
    """Card payments through Stripe (see the module's docstring)."""

    name = "stripe"

    def __init__(self, app):
        self.app = app
        configure(app)

    @property
    def modes(self) -> tuple[str, ...]:
        return key_modes(self.app.config["STRIPE_SECRET_KEY"])

    @cached_property
    def http_client(self) -> stripe.HTTPClient:
        return stripe.RequestsClient(timeout=self.app.config["STRIPE_TIMEOUT"])

    @cached_property
    def client(self) -> stripe.StripeClient:
        """The Stripe API client of this app's keys; ``TransientProviderError`` without a key."""
        config = self.app.config
        if not config["STRIPE_SECRET_KEY"]:
            raise TransientProviderError("stripe: PORTICO_STRIPE_SECRET_KEY is not set")
        return stripe.StripeClient(config["STRIPE_SECRET_KEY"],
                                   base_addresses={"api": config["STRIPE_API_BASE"]},
                                   max_network_retries=config["STRIPE_MAX_NETWORK_RETRIES"],
                                   http_client=self.http_client)

    def _url(self, endpoint: str, **values) -> str:
        """An absolute address of one of our pages, with or without a request."""
        if has_request_context():
            return url_for(endpoint, _external=True, **values)
        return self.app.config["BASE_URL"] + self.app.url_map.bind("").build(endpoint, values)

    # --- Customers and cards ----------------------------------------------------------------

    def stripe_customer(self, customer) -> str:
        """The id of the Stripe customer holding ``customer``'s cards, made the first time; a
        race makes one Stripe customer (same idempotency key) and one row (unique column)."""
        row = StripeCustomer.get_or_none(StripeCustomer.customer == customer.id)
        if row:
            return row.stripe_id
        made = self.client.v1.customers.create(
            {"email": customer.email, "name": customer.name or "",
             "metadata": {"portico_customer": customer.id, "portico_business": customer.business_id}},
            {"idempotency_key": f"portico-customer-{customer.id}"})
        try:
            with db.atomic():
                StripeCustomer.create(customer=customer.id, stripe_id=made.id)
        except pw.IntegrityError:  # another request recorded it first: the same Stripe customer
            pass
        return StripeCustomer.get(StripeCustomer.customer == customer.id).stripe_id

    def setup_url(self, *, customer, return_url: str) -> str:
        """Our card page for ``customer`` (Stripe's card element), with a signed state valid
        for an hour; it ends by redirecting to ``return_url`` with ``?payment_method=``."""
        state = URLSafeTimedSerializer(self.app.secret_key, salt=SETUP_SALT).dumps(
            {"customer_id": customer.id, "return_url": return_url})
        return self._url("stripe.new_card", state=state)

    def read_setup_state(self, state: str) -> dict:
        """The customer id and return URL a ``setup_url`` carries; ``BadSignature`` if forged
        or older than an hour."""
        return URLSafeTimedSerializer(self.app.secret_key, salt=SETUP_SALT).loads(
            state, max_age=SETUP_MAX_AGE)

    def create_setup_intent(self, customer):
        """A SetupIntent saving a card of ``customer``'s for later off-session charges."""
        return self.client.v1.setup_intents.create(
            {"customer": self.stripe_customer(customer), "usage": "off_session",
             "payment_method_types": ["card"], "metadata": {"portico_customer": customer.id}})

    def confirmed_setup(self, customer, setup_intent_id: str) -> str:
        """The card a SetupIntent of ``customer``'s saved, as Stripe reports it (never the
        browser); ``ValueError`` with a plain message when it did not save one."""
        try:
            intent = self.client.v1.setup_intents.retrieve(setup_intent_id)
        except stripe.InvalidRequestError:
            raise ValueError("Stripe does not know this card set-up: please try again.") from None
        if _id(intent.customer) != self.stripe_customer(customer):
            raise ValueError("This card set-up belongs to someone else: please try again.")
        if intent.status != "succeeded" or not intent.payment_method:
            raise ValueError("The card was not confirmed: please try again.")
        return _id(intent.payment_method)

    def tokenize(self, *, customer, source: str) -> CardDetails:
        """Attach a Stripe PaymentMethod (``pm_…``) to ``customer``'s Stripe customer and
        return its card as Stripe reports it; ``ValueError`` with Stripe's words if refused."""
        if not (isinstance(source, str) and source.startswith("pm_")):
            raise ValueError("That is not a Stripe payment method (pm_…).")
        try:
            method = self.client.v1.payment_methods.retrieve(source)
            owner = self.stripe_customer(customer)
            if _id(method.customer) is None:
                method = self.client.v1.payment_methods.attach(method.id, {"customer": owner})
            elif _id(method.customer) != owner:
                raise ValueError("That card belongs to another customer.")
        except stripe.StripeError as error:
            if transient(error):
                raise TransientProviderError(f"stripe: {error}") from error
            raise ValueError(reason(error)) from None
        if method.type != "card":
            raise ValueError("Only cards can be saved here.")
        card = method.card
        return CardDetails(token=method.id, brand=card.brand, last4=card.last4,
                           exp_month=card.exp_month, exp_year=card.exp_year,
                           fingerprint=plain(card).get("fingerprint"))

    # --- Charges and refunds ----------------------------------------------------------------

    def action_url(self, idempotency_key: str, intent_id: str) -> str:
        """Our page where the customer completes 3-D Secure for one charge."""
        token = URLSafeSerializer(self.app.secret_key, salt=ACTION_SALT).dumps(
            {"key": idempotency_key, "intent": intent_id})
        return self._url("stripe.authenticate", token=token)

    def read_action_token(self, token: str) -> dict:
        """The charge an ``action_url`` names; ``itsdangerous.BadSignature`` if forged."""
        return URLSafeSerializer(self.app.secret_key, salt=ACTION_SALT).loads(token)

    def charge(self, *, payment_method, amount: int, currency: str, idempotency_key: str,
               description: str = "") -> ChargeResult:
        """Charge a saved card off-session once per ``idempotency_key`` (Stripe's own)."""
        if payment_method.provider != self.name:
            raise ValueError(f"payment method {payment_method.id} belongs to {payment_method.provider!r}")
        params = {"amount": amount, "currency": currency.lower(),
                  "payment_method": payment_method.provider_token, "confirm": True,
                  "off_session": True,
                  "metadata": {"portico_idempotency_key": idempotency_key,
                               "portico_payment_method": payment_method.id,
                               "portico_description": description}}
        try:
            params["customer"] = self.stripe_customer(payment_method.customer)
            intent = self.client.v1.payment_intents.create(params, {"idempotency_key": idempotency_key})
        except stripe.CardError as error:
            details = error.error
            intent = plain(details.payment_intent) if details else None
            if error.code == "authentication_required" and intent:  # 3-D Secure, off-session
                return intent_result(intent, self.action_url(idempotency_key, intent["id"]))
            code = (details.decline_code if details else None) or error.code or "card_declined"
            return ChargeResult("declined", reference=_id(intent), failure_code=code,
                                failure_message=reason(error))
        except stripe.StripeError as error:
            if transient(error):
                raise TransientProviderError(f"stripe: {error}") from error
            log.warning("stripe refused charge %s: %s", idempotency_key, error)
            return ChargeResult("declined", failure_code=error.code or "invalid_request",
                                failure_message=reason(error))
        return intent_result(plain(intent), self.action_url(idempotency_key, intent.id))

    def refund(self, *, reference: str, amount: int, currency: str,
               idempotency_key: str) -> RefundResult:
        """Refund (part of) a PaymentIntent once per ``idempotency_key``. Asked again (a
        refund Stripe answered ``pending``, retried by the sweep), it answers how that refund
        stands now: Stripe would replay its first answer to the same key for 24 hours."""
        if not reference:
            return RefundResult("failed", failure_message="There is no Stripe charge to refund.")
        try:
            intent = self.client.v1.payment_intents.retrieve(reference)
            charged = intent.currency.upper()
            if charged != currency.upper():
                return RefundResult("failed", failure_message=f"The charge was made in {charged}, "
                                                              f"not {currency.upper()}.")
            refund = self._refund_by_key(reference, idempotency_key) or plain(
                self.client.v1.refunds.create(
                    {"payment_intent": reference, "amount": amount,
                     "metadata": {"portico_idempotency_key": idempotency_key}},
                    {"idempotency_key": idempotency_key}))
        except stripe.StripeError as error:
            if transient(error):
                raise TransientProviderError(f"stripe: {error}") from error
            return RefundResult("failed", failure_message=reason(error))
        return refund_result(refund)

    def _refund_by_key(self, intent_id: str, idempotency_key: str) -> dict | None:
        """The refund of ``intent_id`` made with ``idempotency_key`` (in its metadata), if any."""
        for refund in self.client.v1.refunds.list({"payment_intent": intent_id,
                                                    "limit": 100}).auto_paging_iter():
            refund = plain(refund)
            if (refund.get("metadata") or {}).get("portico_idempotency_key") == idempotency_key:
                return refund
        return None

    def lookup(self, *, idempotency_key: str, reference: str | None = None,
               cancel: bool = False) -> ChargeResult | None:
        """The PaymentIntent made with ``idempotency_key`` (its id is ``reference`` when we
        got an answer; otherwise found by the key we put in its metadata), without charging:
        ``None`` if Stripe never made one. With ``cancel``, an intent still waiting for the
        customer is cancelled (``None``: no money moved)."""
        try:
            intent = (plain(self.client.v1.payment_intents.retrieve(reference)) if reference
                      else self._intent_by_key(idempotency_key))
            if intent is None:
                return None
            if cancel and intent["status"] in WAITING - {"processing"}:
                intent = plain(self.client.v1.payment_intents.cancel(intent["id"]))
                if intent["status"] == "canceled":
                    return None
        except stripe.StripeError as error:
            if transient(error):
                raise TransientProviderError(f"stripe: {error}") from error
            if getattr(error, "http_status", None) == 404:
                return None
            raise
        if intent["status"] == "canceled":
            return None
        return intent_result(intent, self.action_url(idempotency_key, intent["id"]))

    def _intent_by_key(self, idempotency_key: str) -> dict | None:
        """The PaymentIntent whose metadata carries ``idempotency_key``: by Stripe's search,
        else (a Stripe without search, such as localstripe) by listing the account's intents."""
        query = f"metadata['portico_idempotency_key']:'{idempotency_key}'"
        try:
            found = self.client.v1.payment_intents.search({"query": query, "limit": 1}).data
            return plain(found[0]) if found else None
        except stripe.InvalidRequestError:
            pass
        for intent in self.client.v1.payment_intents.list({"limit": 100}).auto_paging_iter():
            intent = plain(intent)
            if (intent.get("metadata") or {}).get("portico_idempotency_key") == idempotency_key:
                return intent
        return None

    # --- Late outcomes ----------------------------------------------------------------------

    def payment_for(self, intent) -> Payment | None:
        """Our payment a PaymentIntent is for (locked): by the idempotency key in its metadata,
        else by its id as the payment's provider reference."""
        key = (intent.get("metadata") or {}).get("portico_idempotency_key")
        query = Payment.select().where(
            (Payment.idempotency_key == key) if key
            else (Payment.provider == self.name) & (Payment.provider_reference == intent["id"]))
        return for_update(query).first()

    def mismatch(self, payment: Payment, intent) -> str | None:
        """What in a PaymentIntent disagrees with our payment (amount, currency, customer,
        mode, reference), or ``None``: only a matching intent may settle a payment."""
        problems = []
        if payment.provider != self.name:
            problems.append(f"the payment is not a Stripe payment ({payment.provider})")
        if intent.get("amount") != payment.amount:
            problems.append(f"amount {intent.get('amount')} instead of {payment.amount}")
        if str(intent.get("currency", "")).upper() != payment.currency.upper():
            problems.append(f"currency {intent.get('currency')} instead of {payment.currency}")
        owner = StripeCustomer.get_or_none(StripeCustomer.customer == payment.customer_id)
        if owner is None or _id(intent.get("customer")) != owner.stripe_id:
            problems.append(f"customer {_id(intent.get('customer'))} is not the payment's")
        if bool(intent.get("livemode")) != (payment.mode == "live"):
            problems.append(f"a {'live' if intent.get('livemode') else 'test'}-mode intent "
                            f"for a {payment.mode}-mode payment")
        if payment.provider_reference and payment.provider_reference != intent["id"]:
            problems.append(f"intent {intent['id']} is not the payment's {payment.provider_reference}")
        return "; ".join(problems) or None

    def settle_intent(self, payment: Payment, intent) -> tuple[str, str]:
        """Settle ``payment`` from a PaymentIntent Stripe sent or answered, if it matches:
        returns ``(outcome, detail)`` with outcome ``settled``, ``waiting``, ``unchanged`` or
        ``mismatch`` (logged, never trusted)."""
        from core import billing

        problem = self.mismatch(payment, intent)
        if problem:
            log.warning("stripe intent %s does not match payment %s: %s", intent["id"], payment.id,
                        problem)
            return "mismatch", problem
        result = intent_result(intent)
        if result.status == "requires_action":
            return "waiting", intent["status"]
        if payment.status not in ("processing", "requires_customer_action"):
            return "unchanged", f"the payment was already {payment.status}"
        settled = billing.settle(payment.id, result)
        return "settled", settled.status

    def settle_refund(self, stripe_refund) -> tuple[str, str, Payment | None]:
        """Settle our pending refund from a Stripe Refund an event carried, if it is ours and
        matches (amount, currency, PaymentIntent): ``(outcome, detail, payment)`` with outcome
        ``settled``, ``waiting``, ``unchanged``, ``mismatch`` (logged, never trusted) or
        ``ignored``."""
        from core import billing

        key = (stripe_refund.get("metadata") or {}).get("portico_idempotency_key")
        refund = for_update(Refund.select().where(
            (Refund.idempotency_key == key) if key
            else (Refund.provider_reference == stripe_refund["id"]))).first()
        if refund is None:
            return "ignored", f"refund {stripe_refund['id']} is not one of ours", None
        payment = refund.payment
        problems = [name for name, theirs, ours in (
            ("provider", self.name, payment.provider),
            ("amount", stripe_refund.get("amount"), refund.amount),
            ("currency", (stripe_refund.get("currency") or "").upper(), refund.currency),
            ("payment_intent", _id(stripe_refund.get("payment_intent")), payment.provider_reference),
        ) if theirs != ours]
        if problems:
            problem = f"{', '.join(problems)} differ"
            log.warning("stripe refund %s does not match refund %s: %s", stripe_refund["id"],
                        refund.id, problem)
            return "mismatch", problem, payment
        result = refund_result(stripe_refund)
        if result.status == "pending":
            return "waiting", stripe_refund["status"], payment
        if refund.status != "pending":
            return "unchanged", f"the refund was already {refund.status}", payment
        return "settled", billing.settle_refund(refund.id, result).status, payment

    def receive(self, event) -> str:
        """Process a verified Stripe event exactly once: the event id is recorded in the same
        transaction as what it settles, so a repeat (or a concurrent twin) finds it and does
        nothing. Returns the outcome (``duplicate`` for a repeat)."""
        from core.jobs import transaction

        with transaction():
            try:
                with db.atomic():
                    record = StripeEvent.create(event_id=event["id"], type=event["type"],
                                                outcome="received")
            except pw.IntegrityError:
                return "duplicate"
            outcome, detail, payment = "ignored", "not about a payment", None
            if event["type"] in HANDLED_EVENTS:
                intent = plain(event["data"]["object"])
                payment = self.payment_for(intent)
                if payment is None:
                    detail = f"intent {intent['id']} is not one of our payments"
                else:
                    outcome, detail = self.settle_intent(payment, intent)
            elif event["type"] in REFUND_EVENTS:
                outcome, detail, payment = self.settle_refund(plain(event["data"]["object"]))
            record.outcome, record.detail, record.payment = outcome, detail, payment
            record.save()
        return outcome

    def retrieve_intent(self, intent_id: str) -> dict:
        """A PaymentIntent as Stripe holds it now."""
        try:
            return plain(self.client.v1.payment_intents.retrieve(intent_id))
        except stripe.StripeError as error:
            raise TransientProviderError(f"stripe: {error}") from error


def save_method(customer, card: CardDetails) -> PaymentMethod:
    """Save a card Stripe reported as ``customer``'s payment method, once per Stripe card."""
    return PaymentMethod.save_card(customer, StripeProvider.name, card)


def provider():
    """This app's Stripe provider."""
    from core.plugins import registry

    return registry(current_app).provider(StripeProvider.name)
