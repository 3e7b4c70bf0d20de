"""The merchant REST API under ``/api``, shaped like the Dodo Payments API.

Every call carries ``Authorization: Bearer <API key>``; the key decides the business and the
mode, and nothing outside them is ever found (404, as for ids that do not exist). Errors are
``{"code": ..., "message": ...}`` with the matching status. Cookies authenticate nothing here,
which is why this blueprint alone is exempt from CSRF protection.

For now: the customer portal session.
"""

from datetime import timedelta
from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from core import auth
from core.jobs import enqueue
from core.models import ApiKey, Customer, utcnow
from core.web import csrf

bp = Blueprint("api", __name__, url_prefix="/api")
csrf.exempt(bp)

CODES = {400: "INVALID_REQUEST_PARAMETERS", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
         405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 413: "INVALID_REQUEST_BODY",
         415: "INVALID_REQUEST_BODY", 422: "UNPROCESSABLE_ENTITY", 429: "TOO_MANY_REQUESTS",
         500: "INTERNAL_SERVER_ERROR"}


class ApiError(HTTPException):
    """An API answer other than success: its status, a stable ``code`` and a readable message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(description=message)
        self.code, self.error_code = status, code


def error_response(error: HTTPException):
    """The JSON body of an error: ``{"code", "message"}``, never a traceback."""
    status = error.code or 500
    code = getattr(error, "error_code", None) or CODES.get(status, "ERROR")
    if isinstance(error, ApiError) or status == 429:
        message = error.description
    elif status >= 500:
        message = "Something went wrong on our side."
    else:
        message = HTTP_STATUS_CODES.get(status, "Error") + "."
    response = jsonify(code=code, message=message)
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def not_found(what: str = "resource"):
    return ApiError(404, "NOT_FOUND", f"No such {what}.")


def api_key_required(view):
    """Authenticate the call by its bearer API key only (never a cookie, never the query
    string); ``g.business`` and ``g.mode`` then scope everything the view touches."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        key = auth.find_api_key(raw.strip()) if scheme.lower() == "bearer" and raw.strip() else None
        if key is None:
            raise ApiError(401, "UNAUTHORIZED", "Send a valid API key as 'Authorization: Bearer <key>'.")
        if key.last_used_at is None or key.last_used_at < utcnow() - timedelta(minutes=1):
            ApiKey.update(last_used_at=utcnow()).where(ApiKey.id == key.id).execute()
        g.api_key, g.business_id, g.mode = key, key.business_id, key.mode
        return view(*args, **kwargs)

    return wrapper


def scoped(model, record_id: str, what: str):
    """One ``model`` row of the calling key's business and mode, else 404 ``NOT_FOUND``."""
    row = model.get_or_none((model.id == record_id) & (model.business == g.business_id)
                            & (model.mode == g.mode))
    if row is None:
        raise not_found(what)
    return row


def query_bool(name: str, default: bool = False) -> bool:
    """A ``true``/``false`` query parameter (as the SDKs send them); 400 for anything else."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ApiError(400, "INVALID_QUERY_PARAMS", f"{name} must be true or false.")


def return_url_param(name: str = "return_url") -> str | None:
    """An absolute https URL (http too in test mode, for a merchant's local set-up), or 400."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    parts = urlsplit(raw)
    allowed = ("https", "http") if g.mode == "test" else ("https",)
    if parts.scheme not in allowed or not parts.hostname or len(raw) > 2000:
        raise ApiError(400, "INVALID_QUERY_PARAMS",
                       f"{name} must be an absolute https:// URL of at most 2000 characters.")
    return raw


@bp.post("/customers/<customer_id>/customer-portal/session")
@api_key_required
def customer_portal_session(customer_id):
    """Create a portal session link for a customer: ``{"link": ...}``. The link signs the
    customer in once, if visited within ``API_SESSION_LINK_TTL``; ``return_url`` becomes the
    portal's "Return to {business}" link; ``send_email=true`` also e-mails them a sign-in link."""
    customer = scoped(Customer, customer_id, "customer")
    send_email, return_url = query_bool("send_email"), return_url_param()
    link = auth.sign_in_link(customer, "api_session", return_url=return_url)
    auth.audit("sign_in_link.issued", customer=customer, via="api", key=g.api_key.prefix)
    if send_email:
        enqueue(auth.send_sign_in_link, customer.id, return_url, g.api_key.prefix)
    return jsonify(link=link)

