"""The built-in ``sandbox`` payment provider: card payments in test mode, with no network.

It accepts the well-known test cards and test tokens (``4242 4242 4242 4242``,
``pm_card_chargeDeclined``…), keeps its own ledger of charges and refunds in the database, and
lets tests inject provider failures (``fail_next``) that any process, such as an RQ worker,
will hit.
"""

from pathlib import Path

from core.hookspecs import hookimpl
from plugins.sandbox.provider import SandboxProvider, charges, fail_next, ledger
from plugins.sandbox.views import bp

__all__ = ["SandboxProvider", "charges", "fail_next", "ledger"]


@hookimpl
def register_payment_providers(app):
    """The sandbox provider, bound to ``app``."""
    return [SandboxProvider(app)]


@hookimpl
def register_migrations(app):
    """The folder of the migrations creating the sandbox's own tables."""
    return str(Path(__file__).parent / "migrations")


@hookimpl
def register_blueprints(app):
    """The card form the provider's ``setup_url`` points at."""
    return [bp]
