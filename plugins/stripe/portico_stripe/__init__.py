"""``portico-stripe``: card payments through Stripe, installed like any third-party plugin.

``pip install portico-stripe`` registers the ``stripe`` entry point of the ``portico`` group;
Portico finds it there and never imports it by name. It offers a payment provider named
``stripe`` (Stripe Elements card page, off-session charges, 3-D Secure, refunds), its pages and
Stripe webhook endpoint (``/stripe/…``), and its own tables. Settings: ``PORTICO_STRIPE_*``.
"""

from pathlib import Path

from core.hookspecs import hookimpl
from portico_stripe.provider import StripeProvider
from portico_stripe.views import bp

__all__ = ["StripeProvider"]


@hookimpl
def register_payment_providers(app):
    """The Stripe provider, bound to ``app`` and its ``STRIPE_*`` settings."""
    return [StripeProvider(app)]


@hookimpl
def register_blueprints(app):
    """The card page, the 3-D Secure page and the webhook endpoint, under ``/stripe``."""
    return [bp]


def _check_webhook_secret(app):
    """A configured Stripe account has the signing secret its webhook endpoint needs."""
    if not app.config.get("STRIPE_SECRET_KEY"):
        return "not configured"
    if not app.config.get("STRIPE_WEBHOOK_SECRET"):
        raise RuntimeError("PORTICO_STRIPE_WEBHOOK_SECRET is not set: Stripe's events would be "
                           "refused and 3-D Secure payments never settle")
    return "set"


@hookimpl
def production_checks(app):
    return {"webhook secret": _check_webhook_secret}


@hookimpl
def register_migrations(app):
    """The folder of the migrations creating the plugin's own tables."""
    return str(Path(__file__).parent / "migrations")
