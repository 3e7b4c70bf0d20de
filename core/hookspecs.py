"""The whole plugin contract: every hook Portico calls, and the objects they exchange.

A plugin is any module or object with functions marked ``@hookimpl`` whose names match
the specs below. Built-in features are plugins too (``plugins/``), registered through the
``portico`` entry-point group exactly as a third-party package registers its own.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import pluggy

hookspec = pluggy.HookspecMarker("portico")
hookimpl = pluggy.HookimplMarker("portico")


# --- Objects exchanged through the hooks -------------------------------------------------


class TransientProviderError(Exception):
    """A payment provider could not answer (network, 5xx, timeout): retry with the same key."""


@dataclass(frozen=True)
class CardDetails:
    """What a provider tells us about a tokenized card; never the card number itself."""

    token: str
    brand: str
    last4: str
    exp_month: int | None = None
    exp_year: int | None = None
    fingerprint: str | None = None  # the same for every token of one card (no twins saved)


@dataclass(frozen=True)
class ChargeResult:
    """The outcome of a charge: a decline is a result, not an exception.

    ``status`` is ``succeeded``, ``declined`` or ``requires_action`` (the customer must
    complete a step at ``action_url``, e.g. 3-D Secure; the outcome arrives later).
    """

    status: str
    reference: str | None = None
    failure_code: str | None = None  # card_declined, insufficient_funds, expired_card, …
    failure_message: str | None = None
    action_url: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass(frozen=True)
class RefundResult:
    """The outcome of a refund: ``succeeded``, ``pending`` or ``failed``."""

    status: str
    reference: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class LicenseCheck:
    """Whether a key may be used now, and if not, a stable reason code."""

    valid: bool
    reason: str | None = None


@dataclass
class Notification:
    """What a notifier hears: a recorded event, or a one-off message such as a sign-in link.

    ``secrets`` carries values that must reach the recipient but are never stored or
    queued (a sign-in link); notifiers other than the one addressing the customer ignore it.
    ``told_on_screen`` says the customer saw this outcome on screen, having started it (a
    plan change or arrears charge that failed): a notifier writing to the customer stays
    silent, while webhooks still tell the merchant. ``customer_only`` marks the reverse: a
    notice for the customer that no Dodo event type names (a renewal reminder, a cancellation
    scheduled), which webhooks never carry.
    """

    id: str
    type: str
    business_id: str
    mode: str
    data: dict
    created_at: datetime
    customer_id: str | None = None
    secrets: dict = field(default_factory=dict)
    told_on_screen: bool = False
    customer_only: bool = False


class PaymentProvider(Protocol):
    """A payment provider, as returned by ``register_payment_providers``.

    The core dispatches on ``name``, the value stored on every saved payment method.
    """

    name: str
    modes: tuple[str, ...]  # the modes it serves: ("test",), ("live",) or both

    def setup_url(self, *, customer, return_url: str) -> str:
        """The provider's own page for adding a card; it ends by redirecting to
        ``return_url`` with ``?payment_method=<id>`` of the saved method."""

    def tokenize(self, *, customer, source: str) -> CardDetails:
        """Turn a provider token (or, for test providers, a test card) into a reusable
        card; raises ``ValueError`` with a plain message when it cannot."""

    def charge(self, *, payment_method, amount: int, currency: str, idempotency_key: str,
               description: str = "") -> ChargeResult:
        """Charge a saved method once per ``idempotency_key``; a repeat returns the first
        result. Raises ``TransientProviderError`` only when the outcome is unknown."""

    def refund(self, *, reference: str, amount: int, currency: str,
               idempotency_key: str) -> RefundResult:
        """Refund (part of) a charge once per ``idempotency_key``; never more than what is
        left of it (a refusal is a ``failed`` result)."""

    def lookup(self, *, idempotency_key: str, reference: str | None = None,
               cancel: bool = False) -> ChargeResult | None:
        """The outcome of the charge made with ``idempotency_key`` (or known as ``reference``),
        asked without charging: ``None`` when the provider never made such a charge. With
        ``cancel``, a charge still waiting for the customer (3-D Secure) is cancelled, so that
        it can never succeed later, and answers ``None`` (no money moved). The core calls it
        before it gives up on a charge whose answer it never got, or whose wait is over
        (Stripe keeps an idempotency key 24 hours: after that a retry would charge again)."""


class LicenseSource(Protocol):
    """A source of license keys, as returned by ``register_license_sources``. A key issued
    with a subscription follows it (``core.license_terms``): the core moves the record's
    ``expires_at`` and ``status`` with every change of the subscription, and refuses the key
    itself once the subscription no longer pays for it, before asking ``validate``."""

    name: str

    def issue(self, *, product, customer, activations_limit: int | None,
              expires_at: datetime | None, payment=None, subscription=None):
        """Issue a key for a purchase and return its ``LicenseKey`` record."""

    def validate(self, *, license_key) -> LicenseCheck:
        """Whether ``license_key`` may be used now."""

    def revoke(self, *, license_key) -> None:
        """Disable ``license_key`` for good, setting its ``revoked_at``: the merchant API
        then refuses to enable it again (409 ``LICENSE_KEY_REVOKED``)."""


# --- Hook specifications -------------------------------------------------------------------


@hookspec
def register_payment_providers(app):
    """Return a list of payment provider objects (see ``PaymentProvider``)."""


@hookspec
def register_license_sources(app):
    """Return a list of license source objects (see ``LicenseSource``)."""


@hookspec
def notify(notification, app):
    """Hear one event (a ``Notification``) and act on it: send an e-mail, deliver a webhook.

    Each notifier is called in its own job, so one that fails never blocks another;
    raising marks that delivery for retry.
    """


@hookspec(firstresult=True)
def render_invoice(invoice, html, app):
    """Render ``invoice`` (with ``html``, the rendered invoice template) and return PDF bytes.

    The first plugin that answers wins; the built-in ``pdf`` renderer runs last.
    """


@hookspec
def register_blueprints(app):
    """Return a list of Flask blueprints to mount (a provider's card form, its webhooks)."""


@hookspec
def register_migrations(app):
    """Return the folder of this plugin's own migrations, for the tables it keeps."""


@hookspec
def prepare_worker(app):
    """Called once in a worker process before it forks job processes: warm slow imports here."""


@hookspec
def production_checks(app):
    """Return ``{name: check}`` for ``portico check``: ``check(app)`` returns a one-line note
    when the plugin's settings and services would work in production, and raises with what
    to fix otherwise (see ``core.checks``)."""


@hookspec
def sweep(app, now):
    """Queue what this plugin still owes as of ``now`` (e.g. retries whose job was lost); runs
    with the billing sweep. Return a dict of counts for the log."""
