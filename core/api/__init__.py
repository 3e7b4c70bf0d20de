"""The merchant REST API under ``/api``, shaped like the Dodo Payments API so that its official
SDK works against it (``DodoPayments(bearer_token=KEY, base_url="<host>/api")``).

Every call carries ``Authorization: Bearer <API key>``; the key decides the business and the
mode, and nothing outside them is ever found (404, as for ids that do not exist). Cookies
authenticate nothing here, which is why this blueprint alone is exempt from CSRF protection.
The license activation endpoints are public. ``GET /api/openapi.json`` is the OpenAPI 3.1
document, generated from the same route table and models that validate requests.

``wire`` holds the rules every operation shares; one module per resource family declares its
operations: ``customers``, ``products`` (and add-ons), ``subscriptions``, ``payments`` (and
invoices), ``licenses`` (keys, instances, activations) and ``webhooks`` (endpoints).
"""

from flask import jsonify

from core.api import (  # noqa: F401
    customers,
    discounts,
    licenses,
    payments,
    portal_configuration,
    products,
    refunds,
    subscriptions,
    webhooks,
)
from core.api.openapi import document
from core.api.wire import ROUTES, ApiError, api_key_required, bp, error_response, scoped

__all__ = ["ROUTES", "ApiError", "api_key_required", "bp", "error_response", "scoped"]


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI 3.1 document of this API (public: it holds no data)."""
    return jsonify(document())
