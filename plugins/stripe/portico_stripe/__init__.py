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


@hookimpl
def register_migrations(app):
    """The folder of the migrations creating the plugin's own tables."""
    return str(Path(__file__).parent / "migrations")
