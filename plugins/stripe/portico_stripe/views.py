"""The Stripe plugin's pages and endpoint, under ``/stripe``.

- ``cards/new``: the "add a card" page ``setup_url`` points at. The card is typed into Stripe's
  own element (Stripe.js); our script confirms a SetupIntent with Stripe and posts us only its
  id, which we check with Stripe before saving the card Stripe reports.
- ``payments/<token>``: where a customer completes 3-D Secure for a charge (``action_url``).
- ``webhook``: Stripe's signed events, each processed once, settling late outcomes.

Both pages send their own Content-Security-Policy: our scripts plus Stripe's origins only.
"""

import base64
import hashlib
import logging
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import stripe
from flask import Blueprint, abort, current_app, make_response, redirect, render_template, request
from flask_babel import lazy_gettext
from flask_wtf import FlaskForm
from itsdangerous import BadSignature
from wtforms import HiddenField
from wtforms.validators import InputRequired, Regexp

from core.hookspecs import TransientProviderError
from core.models import Customer, Payment
from core.money import format_money
from core.web import csrf
from portico_stripe.provider import page_policy, provider, save_method

log = logging.getLogger("portico.stripe")

bp = Blueprint("stripe", __name__, url_prefix="/stripe", template_folder="templates",
               static_folder="static")

SCRIPT = Path(__file__).parent / "static" / "portico-stripe.js"
SCRIPT_INTEGRITY = "sha384-" + base64.b64encode(hashlib.sha384(SCRIPT.read_bytes()).digest()).decode()
BAD_STATE = "This card page link is invalid or has expired: go back and start again."
UNAVAILABLE = lazy_gettext("Stripe cannot be reached right now. Please try again in a minute.")


class SetupForm(FlaskForm):
    """What our card page posts: the id of the SetupIntent Stripe confirmed, nothing else."""

    setup_intent = HiddenField(validators=[
        InputRequired(message=lazy_gettext("Enter your card details, then save the card.")),
        Regexp(r"^seti_\w+$", message=lazy_gettext("Enter your card details, then save the card."))])


def _with_query(url: str, **params) -> str:
    """``url`` with ``params`` added to its query string."""
    parts = urlsplit(url)
    query = urlencode(parse_qsl(parts.query, keep_blank_values=True) + list(params.items()))
    return urlunsplit(parts._replace(query=query))


def _page(template: str, status: int = 200, **context):
    """A Stripe page with its own CSP: self, Stripe.js, Stripe's frames and API; no one else."""
    config = current_app.config
    html = render_template(template, stripe_js=config["STRIPE_JS_URL"],
                           publishable_key=config["STRIPE_PUBLISHABLE_KEY"],
                           script_integrity=SCRIPT_INTEGRITY, **context)
    response = make_response(html, status)
    response.headers["Content-Security-Policy"] = page_policy(config)
    return response


@bp.route("/cards/new", methods=["GET", "POST"])
def new_card():
    """Show Stripe's card element; once Stripe confirmed the SetupIntent, save the card it
    reports and send the customer back to ``return_url`` with ``?payment_method=``."""
    gateway = provider()
    try:
        state = gateway.read_setup_state(request.args.get("state", ""))
    except BadSignature:
        return BAD_STATE, 400, {"Content-Type": "text/plain; charset=utf-8"}
    customer = Customer.get_or_none(Customer.id == state["customer_id"])
    if customer is None:
        return BAD_STATE, 400, {"Content-Type": "text/plain; charset=utf-8"}
    form, error = SetupForm(), None
    try:
        if form.validate_on_submit():
            try:
                card = gateway.tokenize(customer=customer,
                                        source=gateway.confirmed_setup(customer, form.setup_intent.data))
            except ValueError as refused:
                error = str(refused)
            else:
                method = save_method(customer, card)
                return redirect(_with_query(state["return_url"], payment_method=method.id), 303)
        elif form.is_submitted():
            error = form.setup_intent.errors[0] if form.setup_intent.errors else None
        intent = gateway.create_setup_intent(customer)
    except (TransientProviderError, stripe.StripeError) as failure:
        log.warning("stripe card page for %s: %s", customer.id, failure)
        return _page("stripe/unavailable.html", 503, message=UNAVAILABLE, business=customer.business,
                     mode=customer.mode)
    return _page("stripe/card.html", form=form, client_secret=intent.client_secret, error=error,
                 business=customer.business, mode=customer.mode)


@bp.route("/payments/<token>", methods=["GET", "POST"])
def authenticate(token):
    """Complete 3-D Secure for a charge. Whatever the browser says, the outcome is what Stripe
    answers us: checked against the payment, then settled once."""
    gateway = provider()
    try:
        named = gateway.read_action_token(token)
    except BadSignature:
        abort(404)
    payment = Payment.get_or_none(Payment.idempotency_key == named["key"])
    if payment is None:
        abort(404)
    context = {"payment": payment, "business": payment.business, "mode": payment.mode,
               "amount": format_money(payment.amount, payment.currency,
                                      payment.customer.preferred_locale or "en")}
    form = FlaskForm()
    if payment.status in ("processing", "requires_customer_action"):
        try:
            intent = gateway.retrieve_intent(named["intent"])
        except TransientProviderError as failure:
            log.warning("stripe payment page for %s: %s", payment.id, failure)
            return _page("stripe/unavailable.html", 503, message=UNAVAILABLE, **context)
        outcome, _detail = gateway.settle_intent(payment, intent)
        if outcome == "mismatch":
            abort(409, "This payment cannot be completed here: please contact us.")
        if outcome == "waiting":
            submitted = form.validate_on_submit()
            method = payment.payment_method
            return _page("stripe/authenticate.html", form=form, client_secret=intent["client_secret"],
                         payment_method=method.provider_token if method else intent["payment_method"],
                         not_yet=submitted, **context)
        context["payment"] = payment = payment.refresh()
    return _page("stripe/payment_result.html", **context)


@bp.post("/webhook")
@csrf.exempt
def webhook():
    """Stripe's events: refused unless signed with ``STRIPE_WEBHOOK_SECRET``; each event is
    processed once, however often Stripe sends it."""
    secret = current_app.config["STRIPE_WEBHOOK_SECRET"]
    if not secret:
        log.error("a Stripe event arrived but PORTICO_STRIPE_WEBHOOK_SECRET is not set")
        return {"error": "Stripe webhooks are not configured here"}, 503
    try:
        event = stripe.Webhook.construct_event(request.get_data(),
                                               request.headers.get("Stripe-Signature", ""), secret)
    except (ValueError, stripe.SignatureVerificationError):
        return {"error": "invalid payload or signature"}, 400
    return {"received": event["id"], "outcome": provider().receive(event)}
