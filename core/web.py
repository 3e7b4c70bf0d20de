"""Site-wide behaviour: the home page, security headers on every response, error pages."""

from flask import Blueprint, current_app, render_template, request
from flask_wtf.csrf import CSRFProtect

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
    return {"status": "ok"}


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
    csrf.init_app(app)
    app.register_blueprint(bp)
    app.after_request(security_headers)
