"""Site-wide behaviour: the home page, security headers on every response, error pages."""

import re

import flask
from flask import Blueprint, abort, current_app, render_template, request
from flask_babel import gettext, lazy_gettext
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from core.models import Business

bp = Blueprint("web", __name__)
csrf = CSRFProtect()

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'; object-src 'none'")


@bp.get("/")
def home():
    """What Portico is; on a development install, the businesses' sign-in links to try."""
    businesses = []
    if current_app.config["ENV"] != "production":
        businesses = list(Business.select().order_by(Business.created_at))
    return render_template("home.html", businesses=businesses)


@bp.get("/healthz")
def health():
    """Liveness: the process answers (nothing else is asked, so a restart cannot fix more)."""
    return {"status": "ok"}


READINESS_DEADLINE = 1.0  # seconds; a load balancer's probe times out soon after


@bp.get("/readyz")
def ready():
    """Readiness: the database answers, its migrations are applied and Redis (when configured)
    answers, each within ``READINESS_DEADLINE``. 200 ``{"status": "ready", "checks": {…}}``,
    else 503 with ``"status": "unavailable"`` and what failed."""
    from core.checks import readiness_checks, run

    app = current_app._get_current_object()
    outcomes = run(app, readiness_checks(app), READINESS_DEADLINE)
    ready = all(outcome.ok for outcome in outcomes)
    body = {"status": "ready" if ready else "unavailable",
            "checks": {o.name: {"ok": o.ok, "detail": o.detail} for o in outcomes}}
    return body, 200 if ready else 503, {"Cache-Control": "no-store"}


BRAND_COLOR = re.compile(r"#[0-9a-fA-F]{6}")


@bp.get("/brand/<business_id>.css")
def brand_css(business_id):
    """The business's brand colour as a style sheet, since pages carry no inline style."""
    business = Business.get_or_none(Business.id == business_id)
    if business is None:
        abort(404)
    color = business.brand_color if BRAND_COLOR.fullmatch(business.brand_color or "") else "#4f46e5"
    return (f":root {{ --brand: {color}; }}\n", 200,
            {"Content-Type": "text/css; charset=utf-8", "Cache-Control": "public, max-age=300"})


ERRORS = {  # what each error page says, in the visitor's language
    400: (lazy_gettext("Bad request"), lazy_gettext("The request could not be understood.")),
    403: (lazy_gettext("Not allowed"), lazy_gettext("You are not allowed to see this page.")),
    404: (lazy_gettext("Page not found"),
          lazy_gettext("This page does not exist, or it is not yours to see.")),
    405: (lazy_gettext("Not allowed"), lazy_gettext("This page cannot be used that way.")),
    410: (lazy_gettext("Link no longer valid"), lazy_gettext("This link can no longer be used.")),
    413: (lazy_gettext("Too large"), lazy_gettext("What was sent is too large.")),
    429: (lazy_gettext("Too many requests"),
          lazy_gettext("Too many requests came from your network. Please wait a while, then try again.")),
    500: (lazy_gettext("Something went wrong"),
          lazy_gettext("Something went wrong on our side. Please try again in a moment.")),
}


def http_error(error):
    """Errors as a page (with ``Retry-After`` when rate limited), or as the API's JSON body
    ``{"code", "message"}`` under ``/api``."""
    json_errors = current_app.extensions.get("portico.json_errors")
    if json_errors and (request.path == "/api" or request.path.startswith("/api/")):
        return json_errors(error)
    title, message = ERRORS.get(error.code, ERRORS[500])
    if isinstance(error, CSRFError):
        message = gettext("This form has expired or was sent from another site. Go back, reload "
                          "the page and try again.")
    elif error.description != type(error).description:  # a message written for this case
        message = error.description
    response = current_app.make_response(
        (render_template("error.html", error=error, title=str(title), message=str(message)),
         error.code))
    if error.code == 429:
        from core.auth import retry_after

        seconds = retry_after()
        if seconds:
            response.headers["Retry-After"] = str(seconds)
    return response


def body_limit(max_bytes: int):
    """Let a view take a request body of up to ``max_bytes`` instead of ``MAX_CONTENT_LENGTH``
    (a logo upload). Put it under the route decorator."""

    def mark(view):
        view.max_content_length = max_bytes
        return view

    return mark


def _body_limit():
    """Apply the view's own body limit, before anything (the CSRF check) reads the body.
    Werkzeug enforces the limit on the bytes read, so it holds for chunked bodies too."""
    view = current_app.view_functions.get(request.endpoint)
    if getattr(view, "max_content_length", None):
        request.max_content_length = view.max_content_length


class Request(flask.Request):
    """Flask's request, with ``MAX_CONTENT_LENGTH`` enforced on chunked bodies read whole.

    Werkzeug stops reading a body without ``Content-Length`` at the limit, but ``get_data``
    (and so ``request.json``) then returns the first bytes as if they were all: here a body
    that reaches the limit is refused with 413 instead, never parsed truncated.
    """

    def get_data(self, *args, **kwargs):
        data = super().get_data(*args, **kwargs)
        limit = self.max_content_length
        if limit is not None and self.content_length is None and len(data) >= limit:
            raise RequestEntityTooLarge()
        return data


def same_site_forms():
    """Refuse a form posted from another site (Fetch Metadata), on top of the CSRF token.

    It stands in for Flask-WTF's HTTPS Referer check, which sign-in link pages defeat on
    purpose: they send no Referer, so the token in their URL goes nowhere.
    """
    if (request.method not in ("GET", "HEAD", "OPTIONS") and not request.path.startswith("/api/")
            and request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")):
        raise CSRFError("The form was sent from another site.")


def security_headers(response):
    """Headers every page carries: a strict CSP, no framing, no sniffing, HSTS in production."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    if current_app.config["ENV"] == "production" and request.is_secure:
        headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
    return response


def init_app(app):
    app.request_class = Request
    if app.config["PROXY_HOPS"]:
        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    app.config.setdefault("WTF_CSRF_SSL_STRICT", False)  # see same_site_forms
    app.before_request(_body_limit)
    csrf.init_app(app)
    app.before_request(same_site_forms)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, http_error)
    app.after_request(security_headers)
