"""The sandbox card form: where a customer adds a test card, reached through ``setup_url``."""

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, current_app, redirect, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from flask_wtf import FlaskForm
from itsdangerous import BadSignature
from wtforms import StringField
from wtforms.validators import InputRequired, Regexp, ValidationError

from core.i18n import decline_reason
from core.models import Customer, PaymentMethod, utcnow
from core.plugins import registry
from plugins.sandbox.provider import (
    DECLINES,
    SETUP_MAX_AGE,
    TEST_CARDS,
    find_test_card,
    luhn_valid,
    setup_serializer,
)

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox", template_folder="templates")

EXPIRY = re.compile(r"^\s*(\d{1,2})\s*/\s*(\d{2})\s*$")
BAD_STATE = "This card form link is invalid or has expired: go back and start again."


def _luhn(form, field):
    number = (field.data or "").replace(" ", "")
    if not (number.isdigit() and 12 <= len(number) <= 19 and luhn_valid(number)):
        raise ValidationError(_("Enter a valid card number."))


def _future_expiry(form, field):
    match = EXPIRY.match(field.data or "")
    if not match or not 1 <= int(match[1]) <= 12:
        raise ValidationError(_("Enter the expiry as MM/YY."))
    now = utcnow()
    if (2000 + int(match[2]), int(match[1])) < (now.year, now.month):
        raise ValidationError(_("This card has expired."))


class CardForm(FlaskForm):
    """A card number, its expiry and CVC; the CVC is checked, then forgotten."""

    number = StringField(lazy_gettext("Card number"), validators=[InputRequired(), _luhn])
    expiry = StringField(lazy_gettext("Expiry (MM/YY)"), validators=[InputRequired(), _future_expiry])
    cvc = StringField(lazy_gettext("CVC"), validators=[InputRequired(), Regexp(
        r"^\d{3,4}$", message=lazy_gettext("Enter the 3 or 4 digits on the back of the card."))])

    def expiry_month_year(self) -> tuple[int, int]:
        match = EXPIRY.match(self.expiry.data)
        return int(match[1]), 2000 + int(match[2])


def _with_query(url: str, **params) -> str:
    """``url`` with ``params`` added to its query string."""
    parts = urlsplit(url)
    query = urlencode(parse_qsl(parts.query, keep_blank_values=True) + list(params.items()))
    return urlunsplit(parts._replace(query=query))


def _bad_state():
    return BAD_STATE, 400, {"Content-Type": "text/plain; charset=utf-8"}


@bp.route("/cards/new", methods=["GET", "POST"])
def new_card():
    """Show the card form; on a valid test card, save it and send the customer back.

    A card is checked as it is saved, as a provider's verification does: a test card that
    declines (declined, insufficient funds, expired) is refused here and never saved."""
    try:
        state = setup_serializer(current_app).loads(request.args.get("state", ""),
                                                    max_age=SETUP_MAX_AGE)
    except BadSignature:
        return _bad_state()
    customer = Customer.get_or_none(Customer.id == state["customer_id"])
    if customer is None:
        return _bad_state()
    form = CardForm()
    if form.validate_on_submit():
        exp_month, exp_year = form.expiry_month_year()
        try:
            outcome = find_test_card(form.number.data).outcome
            if outcome in DECLINES:
                raise ValueError(_("%(reason)s The card is not saved: try another one.",
                                   reason=decline_reason(outcome)))
            card = registry().provider("sandbox").tokenize(
                customer=customer, source=form.number.data, exp_month=exp_month,
                exp_year=exp_year)
        except ValueError as error:
            form.number.errors.append(str(error))
        else:
            method = PaymentMethod.save_card(customer, "sandbox", card)
            return redirect(_with_query(state["return_url"], payment_method=method.id), 303)
    return render_template("sandbox/card_form.html", form=form, cards=TEST_CARDS), 200


@bp.route("/authenticate/<reference>", methods=["GET", "POST"])
def authenticate(reference):
    """The sandbox's 3-D Secure page: the customer completes (or fails) the bank's step, and
    the charge is settled at once, as a provider's webhook would settle it."""
    from flask import url_for

    from core import billing
    from core.models import Payment
    from plugins.sandbox.provider import finish_action

    payment = Payment.get_or_none((Payment.provider == "sandbox")
                                  & (Payment.provider_reference == reference))
    if payment is None:
        return "No sandbox payment waits for this step.", 404, {"Content-Type": "text/plain"}
    if request.method == "POST":
        form = FlaskForm()
        if not form.validate_on_submit():
            return _bad_state()
        result = finish_action(reference, succeed=request.form.get("outcome") == "complete")
        if result is not None and result.status != "requires_action":
            billing.settle(payment.id, result)
        return redirect(url_for("portal.payment", payment_id=payment.id), 303)
    return render_template("sandbox/authenticate.html", payment=payment, form=FlaskForm())
