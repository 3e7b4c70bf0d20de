"""The customer portal: what a signed-in customer sees and does, branded for their business.

Overview, billing history (with invoice PDFs), subscriptions (cancel, undo, change plan,
update the payment method, with a progress page while an arrears charge runs), license keys
and profile. Views stay thin: money and state changes go through ``core.billing``,
activations through ``core.licensing``, e-mail changes and links through ``core.auth``.

Every view is ``customer_required`` (the session is checked on the server each time) and
finds records only among the signed-in customer's own: another customer's id answers 404,
exactly like an id that does not exist. Each page makes a fixed number of queries, however
much history the customer has.
"""

import json
from datetime import UTC, datetime, time
from decimal import Decimal
from functools import wraps

import phonenumbers
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import format_percent, lazy_gettext, refresh
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf import FlaskForm
from peewee import JOIN, fn, prefetch
from wtforms import DateField, EmailField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import (
    Email,
    InputRequired,
    Length,
    Optional,
    ValidationError,
)

from core import auth, billing, licensing, payment_methods, portal_flows, portal_settings, retention
from core.auth import client_ip, customer_required
from core.billing_details import (
    InvalidBillingDetails,
    address_rules,
    check_tax_id,
    clean_address,
    countries,
    country_name,
)
from core.i18n import LOCALES, current_locale, day, decline_reason, language_code, once, supported
from core.jobs import enqueue
from core.models import (
    Addon,
    Customer,
    Invoice,
    LicenseKey,
    LicenseKeyInstance,
    Payment,
    PaymentMethod,
    Prepared,
    Product,
    ProductAddon,
    Refund,
    Subscription,
    instance,
    utcnow,
)
from core.money import format_money
from core.plugins import MissingPlugin, registry
from core.text import SingleLine

bp = Blueprint("portal", __name__, url_prefix="/portal")

PAGE_SIZE = 20
RECENT = 5
CURRENT = ("active", "on_hold", "paused", "pending")
FEEDBACK = {
    "too_expensive": lazy_gettext("It is too expensive"),
    "missing_features": lazy_gettext("Features I need are missing"),
    "switched_service": lazy_gettext("I switched to another service"),
    "unused": lazy_gettext("I don't use it enough"),
    "customer_service": lazy_gettext("I was unhappy with the support"),
    "low_quality": lazy_gettext("The quality was not good enough"),
    "too_complex": lazy_gettext("It is too complicated"),
    "other": lazy_gettext("Another reason"),
}
ONE_LINE = lazy_gettext("Use one line of text, without line breaks or control characters.")
WHEN = {"period_end": lazy_gettext("At the end of the current period"), "now": lazy_gettext("Now")}
REFUSALS = {  # BillingError codes a customer can meet here
    "SUBSCRIPTION_INACTIVE": lazy_gettext("This subscription can no longer be changed."),
    "INACTIVE_SUBSCRIPTION_PLAN_CHANGE_NOT_SUPPORTED":
        lazy_gettext("Only an active subscription can change plan."),
    "PREVIOUS_PAYMENT_PENDING": lazy_gettext(
        "A payment for this subscription is in progress: try again in a moment."),
    "NO_ELIGIBLE_PAYMENT_METHODS": lazy_gettext("Choose one of your payment methods."),
    "PRODUCT_IS_DELETED": lazy_gettext("This plan is no longer sold."),
    "CANCELLATION_SCHEDULED": lazy_gettext(
        "This subscription ends at its next billing date: keep it before pausing it."),
}


def portal_page(view):
    """A portal view: signed-in customers only, rendered with who they are and their business.
    A session limited to one flow (a deep link) opens only that flow's pages: others answer
    404, as pages that do not exist (``core.portal_flows``).

    The view gets the customer as the session check read it (``auth.CUSTOMER_COLUMNS``) to
    show a page, and their whole record to change something (any method but GET and HEAD),
    so billing, invoices and payment providers never see part of a customer."""

    @customer_required
    @wraps(view)
    def wrapper(*args, **kwargs):
        flow = current_user.session.flow
        if flow and not portal_flows.allows(flow, request.endpoint, request.view_args or {}):
            abort(404)
        showing = request.method in ("GET", "HEAD")
        customer = current_user.customer if showing else current_user.whole_customer()
        return view(customer, *args, **kwargs)

    return wrapper


def back_to(sub):
    """After a refusal or a no-op: the subscription's page, or in a flow session the flow's
    first page (the only ones it may open)."""
    flow = current_user.session.flow
    if flow and request.method == "GET":  # the flow's own page cannot be shown: say why
        return render("portal/flow_done.html", message=None, refused=True)
    if flow:
        return redirect(portal_flows.start(flow), 303)
    return redirect(url_for(".subscription", subscription_id=sub.id), 303)


def done(default: str):
    """Where a finished task leads: in a flow session, the flow's ending (its confirmation,
    redirect or the portal's home); otherwise ``default``."""
    if current_user.session.flow:
        portal_flows.complete(current_user.session)
        return redirect(url_for(".flow_done"), 303)
    return redirect(default, 303)


def render(template, **context):
    user = current_user
    return render_template(template, business=user.business, mode=user.session.mode,
                           customer=user.customer, return_url=return_url(user),
                           features=settings(), flow=user.session.flow, **context)


def settings() -> dict:
    """What the business lets its customers do in the portal (``core.portal_settings``), as
    stored now: a change applies to the next page."""
    return portal_settings.current(current_user.business.id, current_user.session.mode)


def requires(feature):
    """A portal view of one feature: 404 while the business has it off (``feature`` takes the
    settings and says whether it is on), exactly as for a page that does not exist."""

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not feature(settings()):
                abort(404)
            return view(*args, **kwargs)

        return wrapper

    return decorate


BILLING_HISTORY = requires(lambda s: s["billing_history"])
PAYMENT_METHODS = requires(lambda s: s["payment_method_update"])
CANCELLATION = requires(lambda s: s["cancellation"]["enabled"])
PLAN_CHANGE = requires(lambda s: s["plan_change"]["enabled"])
QUANTITY_CHANGE = requires(lambda s: s["quantity_change"]["enabled"])
PAUSE = requires(lambda s: s["pause"]["enabled"])
ACTIVATION_REMOVAL = requires(lambda s: s["license_activation_removal"])
EMAIL_CHANGE = requires(lambda s: s["profile_fields"]["email"])


def return_url(user) -> str | None:
    """The "Return to {business}" address: the session's own (from the API), else the
    business's default; only ever an http(s) URL."""
    url = user.session.return_url or user.business.default_return_url
    return url if url and url.startswith(("https://", "http://")) else None


def refusal(error: billing.BillingError) -> str:
    return str(REFUSALS.get(error.code, _("This change could not be made.")))


def failure_reason(payment: Payment) -> str:
    """Why a charge failed, in plain words and the customer's language (from its code)."""
    return decline_reason(payment.failure_code)


# --- Finding the customer's own records (else 404) ------------------------------------------------


def subscriptions_of(customer):
    """The customer's subscriptions with their product and payment method, in one query."""
    return (Subscription.select(Subscription, Product, PaymentMethod)
            .join(Product, on=(Subscription.product == Product.id))
            .switch(Subscription)
            .join(PaymentMethod, JOIN.LEFT_OUTER, on=(Subscription.payment_method == PaymentMethod.id))
            .where(Subscription.customer == customer))


def own_subscription(customer, subscription_id) -> Subscription:
    sub = subscriptions_of(customer).where(Subscription.id == subscription_id).first()
    if sub is None:
        abort(404)
    sub.customer = customer
    return sub


def own_method(customer, method_id) -> PaymentMethod:
    method = PaymentMethod.get_or_none((PaymentMethod.id == method_id)
                                       & (PaymentMethod.customer == customer)
                                       & PaymentMethod.deleted_at.is_null())
    return method or abort(404)


def saved_methods(customer) -> list[PaymentMethod]:
    return list(PaymentMethod.select()
                .where((PaymentMethod.customer == customer) & PaymentMethod.deleted_at.is_null())
                .order_by(PaymentMethod.created_at.desc()))


def other_plans(customer, sub: Subscription):
    """Plans this subscription may move to (``portal_settings.plans_to_switch_to``)."""
    return portal_settings.plans_to_switch_to(settings(), sub)


def with_invoices(query):
    """Payments with their invoice (number only: never the PDF bytes), in one query."""
    return (query.select_extend(Invoice.id, Invoice.number, Invoice.mode)
            .join(Invoice, JOIN.LEFT_OUTER, on=(Invoice.payment == Payment.id), attr="invoice"))


LISTED = (Payment.id, Payment.created_at, Payment.customer, Payment.subscription, Payment.kind,
          Payment.status, Payment.amount, Payment.currency, Payment.description,
          Payment.period_start, Payment.period_end)  # what a list of payments shows
LISTED_SUBSCRIPTION = (Subscription.id, Subscription.product, Subscription.status,
                       Subscription.next_billing_date, Subscription.cancel_at_next_billing_date,
                       Subscription.resume_at, Subscription.in_trial,
                       Subscription.cancelled_at, Subscription.expires_at)  # … of subscriptions
LISTED_REFUND = (Refund.id, Refund.created_at, Refund.mode, Refund.payment, Refund.amount,
                 Refund.currency, Refund.status, Refund.credit_note_number)  # … of refunds


# --- Overview and billing history ------------------------------------------------------------------
# Their queries' SQL is written once per app (``queries``, ``models.Prepared``): on these pages
# peewee would otherwise spend more time writing it than the database spends answering.

LISTED_INVOICE = (Invoice.id, Invoice.number, Invoice.mode)  # never the PDF bytes
LISTED_KEY = (LicenseKey.id, LicenseKey.key, LicenseKey.status, LicenseKey.product)
PRODUCT_NAME = (Product.id, Product.name)  # what the overview shows of a product
PAGE_SHAPES = ("page", "after", "before")  # how a billing history page is found


def queries() -> dict:
    """The overview's and the billing history's queries, as ``models.Prepared`` for the
    app's database; ``customer`` is a slot in each (a customer's id)."""
    customer = Prepared.slot("customer")
    found = {
        "subscriptions": Prepared(
            Subscription.select(*LISTED_SUBSCRIPTION, *PRODUCT_NAME)
            .join(Product, on=(Subscription.product == Product.id))
            .where((Subscription.customer == customer) & Subscription.status.in_(CURRENT))
            .order_by(Subscription.created_at.desc())),
        "every subscription": Prepared(
            Subscription.select(*LISTED_SUBSCRIPTION, Subscription.quantity, *PRODUCT_NAME)
            .join(Product, on=(Subscription.product == Product.id))
            .where(Subscription.customer == customer).order_by(Subscription.created_at.desc())),
        "recent payments": Prepared(
            with_invoices(Payment.select(*LISTED))
            .where((Payment.customer == customer) & (Payment.status == "succeeded"))
            .order_by(Payment.created_at.desc()).limit(RECENT)),
        "keys": Prepared(
            LicenseKey.select(*LISTED_KEY, *PRODUCT_NAME).join(Product)
            .where(LicenseKey.customer == customer)
            .order_by(LicenseKey.created_at.desc()).limit(RECENT)),
        "payment count": Prepared(Payment.select(fn.COUNT(Payment.id)).where(Payment.customer == customer)),
    }
    for shape in PAGE_SHAPES:
        page = page_of_payments(shape)
        found["payments", shape] = Prepared(
            with_invoices(Payment.select(*LISTED)).where(Payment.id.in_(page))
            .order_by(Payment.created_at.desc(), Payment.id.desc()))
        found["refunds", shape] = Prepared(
            Refund.select(*LISTED_REFUND)
            .where(Refund.payment.in_(page) & (Refund.status != "failed"))
            .order_by(Refund.created_at))
    return found


@bp.record_once
def _prepare_queries(state):
    state.app.extensions["portico.portal_queries"] = queries()
    portal_settings.init_app(state.app)


def run(name, **values) -> list[tuple]:
    """The rows of the prepared query ``name`` (``queries``) with ``values`` in its slots."""
    return current_app.extensions["portico.portal_queries"][name].rows(**values)


def listed_payments(rows) -> list[Payment]:
    """Payments read with ``with_invoices`` columns, each with its ``invoice`` (or ``None``)."""
    payments, split = [], len(LISTED)
    for row in rows:
        payment = instance(Payment, LISTED, row[:split])
        payment.invoice = instance(Invoice, LISTED_INVOICE, row[split:]) if row[split] else None
        payments.append(payment)
    return payments


def with_product(model, columns, rows) -> list:
    """``model`` records from ``rows`` (``columns``, then ``PRODUCT_NAME``), each with its
    ``product``."""
    records, split = [], len(columns)
    for row in rows:
        record = instance(model, columns, row[:split])
        record.product = instance(Product, PRODUCT_NAME, row[split:])
        records.append(record)
    return records


@bp.get("/")
@portal_page
def home(customer):
    """Overview: what needs action first, then subscriptions, recent invoices and license keys."""
    current = with_product(Subscription, LISTED_SUBSCRIPTION, run("subscriptions", customer=customer.id))
    payments = listed_payments(run("recent payments", customer=customer.id))
    keys = with_product(LicenseKey, LISTED_KEY, run("keys", customer=customer.id))
    return render("portal/home.html", on_hold=[s for s in current if s.status == "on_hold"],
                  subscriptions=current, payments=payments, keys=keys)


@bp.get("/billing")
@portal_page
@BILLING_HISTORY
def billing_history(customer):
    """Every payment, newest first, a page at a time, with a PDF for each invoice.

    The pager's links carry the payment they continue from (``after`` the last one shown,
    ``before`` the first), so a page is read from the ``(customer, created_at DESC, id DESC)``
    index at the same cost on page 1 and page 50, and a payment arriving meanwhile neither
    repeats nor skips a row. ``page`` numbers the page for display, and alone (a typed or
    bookmarked address) still finds it.
    """
    page = request.args.get("page", 1, type=int)
    total = run("payment count", customer=customer.id)[0][0]
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    if not 1 <= page <= pages:
        abort(404)
    after, before = request.args.get("after"), request.args.get("before")
    shape = "after" if after else "before" if before else "page"
    where = {"customer": customer.id, "mark": after or before, "offset": (page - 1) * PAGE_SIZE}
    payments = listed_payments(run(("payments", shape), **where))
    if not payments and total:
        abort(404)  # a cursor that is not one of the customer's payments
    refunds = {}
    if payments:
        for refund in run(("refunds", shape), **where):
            refund = instance(Refund, LISTED_REFUND, refund)
            refunds.setdefault(refund.payment_id, []).append(refund)
    for payment in payments:
        payment.shown_status = refunded_status(payment, refunds.get(payment.id, ()))
    return render("portal/billing.html", payments=payments, refunds=refunds, page=page,
                  pages=pages, total=total)


def refunded_status(payment, refunds) -> str:
    """A payment's status as its billing history row says it: ``refunded`` once its
    succeeded refunds add up to its amount, ``partially_refunded`` when some of it is
    refunded, else its own status (a refund still pending changes nothing yet)."""
    refunded = sum(r.amount for r in refunds if r.status == "succeeded")
    if payment.status != "succeeded" or not refunded:
        return payment.status
    return "refunded" if refunded >= payment.amount else "partially_refunded"


@bp.get("/credit-notes/<refund_id>.pdf")
@portal_page
@BILLING_HISTORY
def credit_note_pdf(customer, refund_id):
    """A refund's credit note as a PDF."""
    refund = Refund.get_or_none((Refund.id == refund_id) & (Refund.customer == customer)
                                & (Refund.status == "succeeded"))
    if refund is None:
        abort(404)
    name = f"credit-note-{refund.display_number}.pdf"
    return current_app.response_class(billing.credit_note_pdf(refund), mimetype="application/pdf",
                                      headers={"Content-Disposition": f'attachment; filename="{name}"'})


def page_of_payments(shape: str):
    """The ids of one page of a customer's payments (slot ``customer``), as a subquery:
    ``after`` (or ``before``) the payment in slot ``mark``, or for ``page`` the ``offset``-th
    and the next; invoices are joined to these rows only, after the limit."""
    customer = Prepared.slot("customer")
    mine = Payment.select(Payment.id).where(Payment.customer == customer).limit(PAGE_SIZE)
    if shape == "page":
        return mine.order_by(Payment.created_at.desc(), Payment.id.desc()).offset(Prepared.slot("offset"))
    mark_id = Prepared.slot("mark")
    mark = Payment.select(Payment.created_at).where((Payment.id == mark_id) & (Payment.customer == customer))
    if shape == "after":
        return mine.where((Payment.created_at < mark)
                          | ((Payment.created_at == mark) & (Payment.id < mark_id))
                          ).order_by(Payment.created_at.desc(), Payment.id.desc())
    return mine.where((Payment.created_at > mark)
                      | ((Payment.created_at == mark) & (Payment.id > mark_id))
                      ).order_by(Payment.created_at, Payment.id)


@bp.get("/invoices/<invoice_id>.pdf")
@portal_page
@BILLING_HISTORY
def invoice_pdf(customer, invoice_id):
    """An invoice as a PDF, in the language of the page (rendered once per language, then kept)."""
    invoice = Invoice.get_or_none((Invoice.id == invoice_id) & (Invoice.customer == customer))
    if invoice is None:
        abort(404)
    name = f"invoice-{invoice.display_number}.pdf"
    return current_app.response_class(billing.invoice_pdf(invoice, current_locale()),
                                      mimetype="application/pdf",
                                      headers={"Content-Disposition": f'attachment; filename="{name}"'})


# --- Subscriptions -------------------------------------------------------------------------------


@bp.get("/subscriptions")
@portal_page
def subscriptions(customer):
    """Active subscriptions first, then past ones (read with only the columns the list shows)."""
    subs = with_product(Subscription, (*LISTED_SUBSCRIPTION, Subscription.quantity),
                        run("every subscription", customer=customer.id))
    return render("portal/subscriptions.html", current=[s for s in subs if s.status in CURRENT],
                  past=[s for s in subs if s.status not in CURRENT])


@bp.get("/subscriptions/<subscription_id>")
@portal_page
def subscription(customer, subscription_id):
    """A subscription: plan, price, quantity, add-ons, status, renewal, payment method."""
    sub = own_subscription(customer, subscription_id)
    ids = [item["addon_id"] for item in sub.addons if not item.get("name")]
    names = dict(Addon.select(Addon.id, Addon.name).where(Addon.id.in_(ids)).tuples()) if ids else {}
    addons = [(item.get("name") or names.get(item["addon_id"], item["addon_id"]), item["quantity"])
              for item in sub.addons]
    period = billing.price_charge(billing.recorded_price(sub))  # the price it records
    renews = sub.status == "active" and not sub.cancel_at_next_billing_date
    policy = settings()["cancellation"]
    discount = billing.current_discount(sub)
    return render("portal/subscription.html", sub=sub, addons=addons, renewal_total=period["total"],
                  discount=discount, discount_off=discount_off(discount, sub.currency),
                  renewal_tax=period["tax"], next_charge=billing.next_charge(sub) if renews else None,
                  price_change=sub.price_change if renews and not sub.scheduled_change else None,
                  unpaid=unpaid_renewal(sub) if sub.status == "on_hold" else None,
                  cancellable=policy["enabled"] and bool(cancel_whens(sub, policy)),
                  may_pause=settings()["pause"]["enabled"],
                  addons_offered=bool(offered_addons(sub)),
                  scheduled=scheduled_change(sub) if sub.status == "active" else None)


def scheduled_change(sub) -> dict | None:
    """A change waiting for the next billing date, as the subscription page tells it: the
    plan, its quantity and add-ons (``None``: nothing waits)."""
    change = sub.scheduled_change
    if not change:
        return None
    price = change.get("price") or {}
    return {"plan": change.get("product_name") or price.get("product_name"),
            "same_plan": change["product_id"] == sub.product_id,
            "quantity": change["quantity"], "date": change["effective_at"],
            "addons": [(item.get("name") or item["addon_id"], item["quantity"])
                       for item in price.get("addons", sub.addons)]}


def discount_off(discount: dict | None, currency: str) -> str:
    """What a subscription's discount takes off each charge, in the current locale: "20 %"
    (its basis points) or "€5.00" (its flat amount)."""
    if not discount:
        return ""
    if discount["type"] == "percentage":
        return format_percent(Decimal(discount["amount"]) / 10000, "#,##0.##%")
    return format_money(discount["amount"], currency, current_locale())


def unpaid_renewal(sub) -> Payment | None:
    return (Payment.select().where((Payment.subscription == sub) & (Payment.kind == "renewal")
                                   & (Payment.status == "failed"))
            .order_by(Payment.created_at.desc()).first())


class CancelForm(FlaskForm):
    """When to cancel (one of ``whens``) and why (one of ``reasons``, required or not): both
    depend on the subscription and the business's settings, so each form has its own."""

    when = StringField(lazy_gettext("When"), validators=[
        InputRequired(lazy_gettext("Choose when to cancel."))])
    feedback = StringField(lazy_gettext("Reason"))
    comment = TextAreaField(lazy_gettext("Anything you would like to tell us? (optional)"),
                            validators=[Optional(), Length(max=1000)])

    def __init__(self, *args, whens=WHEN, reasons=tuple(FEEDBACK), reason_required=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.whens, self.reasons, self.reason_required = whens, reasons, reason_required
        if not self.is_submitted():
            self.when.data = next(iter(whens))

    def validate_when(self, field):
        if field.data not in self.whens:
            raise ValidationError(_("Choose when to cancel."))

    def validate_feedback(self, field):
        if not field.data:
            if self.reason_required:
                raise ValidationError(_("Choose a reason."))
        elif field.data not in self.reasons:
            raise ValidationError(_("Choose one of the reasons offered."))


@bp.route("/subscriptions/<subscription_id>/cancel", methods=["GET", "POST"])
@portal_page
@CANCELLATION
def cancel(customer, subscription_id):
    """Confirm what cancelling does and when, then cancel (now, or at the next billing date)."""
    sub = own_subscription(customer, subscription_id)
    if sub.status not in ("active", "on_hold", "paused"):
        flash(_("This subscription is already %(status)s.", status=status_label(sub.status)))
        return back_to(sub)
    policy = settings()["cancellation"]
    whens = cancel_whens(sub, policy)
    if not whens:
        abort(404)  # only at the period's end, which an on-hold subscription does not have
    reasons = {code: FEEDBACK[code] for code in policy["reasons"] if code in FEEDBACK}
    form = CancelForm(whens=whens, reasons=tuple(reasons),
                      reason_required=policy["reason_required"] and bool(reasons))
    if form.validate_on_submit():
        later_on = form.when.data == "period_end"
        feedback, comment = form.feedback.data or None, (form.comment.data or "").strip() or None
        offer, choice = retention.offer_for(sub, settings()), request.form.get("offer")
        if offer is not None and choice not in ("accept", "decline"):
            return render("portal/retention_offer.html", sub=sub, form=form,
                          offer=offer_words(offer, sub.currency))
        if choice == "accept":
            return stay_with_offer(sub, offer, feedback, comment, form.when.data)
        try:
            retention.cancel(sub, feedback, comment, form.when.data,
                             offer if choice == "decline" else None,
                             actor={"actor_type": "customer", "email": customer.email,
                                    "name": customer.name})
        except billing.BillingError as error:
            flash(refusal(error), "error")
        else:
            refund = (portal_settings.refund_unused_period(sub)
                      if not later_on and policy["prorated_refund"] else None)
            flash(_("Your subscription will end on %(date)s. You can change your mind until then.",
                    date=format_day(sub.next_billing_date)) if later_on
                  else _("Your subscription is cancelled. You will not be charged for it again.")
                  if refund is None
                  else _("Your subscription is cancelled. %(amount)s for the unused part of the "
                         "period is refunded to %(card)s.",
                         amount=format_money(refund.amount, refund.currency, current_locale()),
                         card=billing.card_label(refund.payment.payment_method)))
        return done(url_for(".subscription", subscription_id=sub.id))
    refund_due = (portal_settings.unused_period(sub)
                  if "now" in whens and policy["prorated_refund"] else None)
    return render("portal/cancel.html", sub=sub, form=form, whens=whens, feedback=reasons,
                  refund_due=refund_due), 400 if form.errors else 200


def offer_words(discount, currency: str) -> dict:
    """The retention offer as the page words it: ``{"off": "20 %", "payments": "your next 3
    payments"}``, in the page's language."""
    from flask_babel import ngettext

    cycles = discount.subscription_cycles
    return {"off": discount_off({"type": discount.type, "amount": discount.amount}, currency),
            "payments": (ngettext("your next payment", "your next %(num)d payments", cycles)
                         if cycles else _("every payment"))}


def stay_with_offer(sub, offer, feedback, comment, when):
    """The customer took the retention offer: the discount is theirs, nothing is cancelled.
    An offer that is no longer there (used up meanwhile) cancels nothing either."""
    if offer is None:
        flash(_("This offer is no longer available. Your subscription is not cancelled."), "error")
        return back_to(sub)
    try:
        retention.accept(sub, offer, feedback, comment, when)
    except billing.BillingError as error:
        flash(refusal(error), "error")
    else:
        words = offer_words(offer, sub.currency)
        flash(_("Thank you for staying. %(off)s comes off %(payments)s.", **words))
    return done(url_for(".subscription", subscription_id=sub.id))


def cancel_whens(sub, policy) -> dict:
    """When this subscription may be cancelled, as the business allows: ``{value: label}``."""
    whens = {when: WHEN[when] for when in portal_settings.cancel_whens({"cancellation": policy})}
    if sub.status != "active" or sub.cancel_at_next_billing_date:
        whens.pop("period_end", None)
    return whens


@bp.post("/subscriptions/<subscription_id>/undo-cancel")
@portal_page
def undo_cancel(customer, subscription_id):
    """Keep a subscription that was set to end at its next billing date."""
    sub = own_subscription(customer, subscription_id)
    try:
        billing.undo_cancel(sub)
    except billing.BillingError as error:
        flash(refusal(error), "error")
    else:
        flash(_("Your subscription continues. It renews on %(date)s.",
                date=format_day(sub.next_billing_date)))
    return back_to(sub)


def tomorrow_or_later(form, field):
    """A day after today (UTC)."""
    if field.data is not None and field.data <= utcnow().date():
        raise ValidationError(_("Choose a date after today."))


class PauseForm(FlaskForm):
    """Pause, until a date or until the customer resumes."""

    resume_on = DateField(
        lazy_gettext("Resume on (optional)"), validators=[Optional(), tomorrow_or_later],
        description=lazy_gettext("Leave it empty to resume it yourself, whenever you like."))


@bp.route("/subscriptions/<subscription_id>/pause", methods=["GET", "POST"])
@portal_page
@PAUSE
def pause(customer, subscription_id):
    """Say what pausing does (no charge, the paid time left kept), then pause, until a date
    or until the customer resumes."""
    sub = own_subscription(customer, subscription_id)
    if sub.status != "active":
        flash(_("Only an active subscription can be paused."), "error")
        return redirect(url_for(".subscription", subscription_id=sub.id), 303)
    form = PauseForm()
    if form.validate_on_submit():
        resume_at = (datetime.combine(form.resume_on.data, time(), tzinfo=UTC)
                     if form.resume_on.data else None)
        try:
            billing.pause(sub, resume_at=resume_at)
        except billing.BillingError as error:
            flash(refusal(error), "error")
        else:
            flash(_("Your subscription is paused. You will not be charged while it is paused."))
        return redirect(url_for(".subscription", subscription_id=sub.id), 303)
    return render("portal/pause.html", sub=sub, form=form), 400 if form.errors else 200


@bp.post("/subscriptions/<subscription_id>/resume")
@portal_page
@PAUSE
def resume(customer, subscription_id):
    """Resume a paused subscription: billing restarts with the paid time it had left."""
    sub = own_subscription(customer, subscription_id)
    try:
        sub = billing.resume(sub)
    except billing.BillingError as error:
        flash(refusal(error), "error")
    else:
        flash(_("Your subscription is active again. It renews on %(date)s.",
                date=format_day(sub.next_billing_date)))
    return redirect(url_for(".subscription", subscription_id=sub.id), 303)


class QuantityForm(FlaskForm):
    """A quantity within ``bounds`` (the merchant's minimum and maximum for this plan)."""

    quantity = IntegerField(lazy_gettext("Quantity"), default=1, validators=[
        InputRequired(lazy_gettext("Enter a quantity."))])

    def __init__(self, *args, bounds=(1, 1000), **kwargs):
        super().__init__(*args, **kwargs)
        self.bounds = bounds

    def validate_quantity(self, field):
        low, high = self.bounds
        if field.data is not None and not low <= field.data <= high:
            raise ValidationError(_("Enter a quantity from %(low)d to %(high)d.", low=low, high=high))


def offered_addons(sub) -> list[Addon]:
    """The add-ons the subscription's plan offers (still on sale), by name."""
    return list(Addon.select().join(ProductAddon, on=(ProductAddon.addon == Addon.id))
                .where((ProductAddon.product == sub.product_id) & (Addon.archived == False))  # noqa: E712
                .order_by(Addon.name))


def change_terms(sub, product=None) -> tuple[tuple[int, int], str]:
    """The quantities this subscription may have (on ``product``, by default its own plan)
    and when a change of it takes effect (``portal_settings.change_terms``)."""
    return portal_settings.change_terms(settings(), sub.product_id, product and product.id)


@bp.get("/subscriptions/<subscription_id>/plan")
@portal_page
@PLAN_CHANGE
def plans(customer, subscription_id):
    """The plans this subscription can change to, and links to change its quantity (seats)
    and add-ons."""
    sub = own_subscription(customer, subscription_id)
    plans = list(other_plans(customer, sub))
    bounds = {plan.id: change_terms(sub, plan)[0] for plan in plans}
    return render("portal/plans.html", sub=sub, plans=plans, bounds=bounds,
                  addons_offered=bool(offered_addons(sub)))


@bp.route("/subscriptions/<subscription_id>/plan/<product_id>", methods=["GET", "POST"])
@portal_page
@PLAN_CHANGE
def change_plan(customer, subscription_id, product_id):
    """Preview a plan change (amount due now, new renewal amount), then confirm it: an upgrade
    is charged at once (its outcome is shown), a downgrade waits for the next billing date,
    and so does any change where the merchant says changes are charged at the next renewal.
    While seat changes are off, the quantity stays what it is (another answers 404)."""
    sub = own_subscription(customer, subscription_id)
    product = other_plans(customer, sub).where(Product.id == product_id).first() or abort(404)
    sent = request.form if request.method == "POST" else request.args
    bounds, effective_at = change_terms(sub, product)
    form = QuantityForm(sent if "quantity" in sent else None, data={"quantity": sub.quantity},
                        meta={"csrf": False},  # CSRFProtect checks every POST already
                        bounds=bounds)
    if "quantity" in sent and not form.validate():
        return render("portal/plan_change.html", sub=sub, product=product, form=form,
                      preview=None), 400
    if not settings()["quantity_change"]["enabled"] and form.quantity.data != sub.quantity:
        abort(404)
    return preview_then_change(sub, product, form.quantity.data, None, effective_at,
                               "portal/plan_change.html", form=form)


def preview_then_change(sub, product, quantity, addons, effective_at, template, **context):
    """A GET shows what the change costs (``billing.preview_plan_change``), a POST makes it
    (``billing.change_plan``, with the same terms, so the amount charged is the one shown):
    to the payment page when something is charged now, else back with what happens when."""
    try:
        preview = billing.preview_plan_change(sub, product, quantity, addons=addons,
                                              effective_at=effective_at)
    except billing.BillingError as error:
        flash(refusal(error), "error")
        return back_to(sub)
    if request.method == "GET":
        return render(template, sub=sub, product=product, preview=preview, **context)
    try:
        payment = billing.change_plan(sub, product, quantity, addons=addons,
                                      effective_at=effective_at)
    except billing.BillingError as error:
        flash(refusal(error), "error")
        return back_to(sub)
    if payment is not None:
        return redirect(url_for(".payment", payment_id=payment.id), 303)
    if product.id != sub.product_id:
        flash(_("Your plan is now %(plan)s.", plan=product.name) if preview.upgrade
              else _("Your plan changes to %(plan)s on %(date)s.", plan=product.name,
                     date=format_day(preview.effective_at)))
    else:
        flash(_("Your subscription is changed.") if preview.upgrade
              else _("Your subscription changes on %(date)s, your next billing date.",
                     date=format_day(preview.effective_at)))
    return done(url_for(".subscription", subscription_id=sub.id))


@bp.route("/subscriptions/<subscription_id>/seats", methods=["GET", "POST"])
@portal_page
@QUANTITY_CHANGE
def change_seats(customer, subscription_id):
    """Change the quantity (seats) of the current plan, within the merchant's minimum and
    maximum: the form, then (with ``quantity``) its preview, then (POST) the change, charged
    now and prorated or at the next renewal as the merchant says (fewer seats: at the next
    renewal, like a downgrade)."""
    sub = own_subscription(customer, subscription_id)
    if sub.status != "active":
        flash(str(REFUSALS["INACTIVE_SUBSCRIPTION_PLAN_CHANGE_NOT_SUPPORTED"]), "error")
        return back_to(sub)
    sent = request.form if request.method == "POST" else request.args
    bounds, effective_at = change_terms(sub)
    quantity, _addons = billing.planned_plan(sub)  # a waiting change is built on
    form = QuantityForm(sent if "quantity" in sent else None, data={"quantity": quantity},
                        meta={"csrf": False}, bounds=bounds)
    asked = "quantity" in sent and form.validate()
    if asked and form.quantity.data == quantity:
        form.quantity.errors = [
            _("You have %(quantity)d now: choose another quantity.", quantity=quantity)
            if quantity == sub.quantity else
            _("You will have %(quantity)d from %(date)s: choose another quantity.",
              quantity=quantity, date=format_day(sub.next_billing_date))]
        asked = False
    if not asked:
        if request.method == "POST" and not form.errors:
            abort(400)
        return render("portal/seats.html", sub=sub, form=form, bounds=bounds, planned=quantity,
                      preview=None), 400 if form.errors else 200
    return preview_then_change(sub, sub.product, form.quantity.data, None, effective_at,
                               "portal/seats.html", form=form, bounds=bounds)


ADDON_MAX = 1000


def asked_addons(sent, offered) -> tuple[list[dict] | None, dict]:
    """The add-ons a form asks for (``addon-<id>`` = quantity, 0 or empty: none), as
    ``[{addon_id, quantity}]``, and a message per add-on whose quantity is not a whole number
    from 0 to ``ADDON_MAX``; ``None`` when the form sent no add-on."""
    if not any(f"addon-{addon.id}" in sent for addon in offered):
        return None, {}
    asked, errors = [], {}
    for addon in offered:
        raw = (sent.get(f"addon-{addon.id}") or "0").strip()
        if not raw.isdigit() or int(raw) > ADDON_MAX:
            errors[addon.id] = _("Enter a quantity from %(low)d to %(high)d.", low=0, high=ADDON_MAX)
        elif int(raw):
            asked.append({"addon_id": addon.id, "quantity": int(raw)})
    return asked, errors


@bp.route("/subscriptions/<subscription_id>/addons", methods=["GET", "POST"])
@portal_page
@PLAN_CHANGE
def change_addons(customer, subscription_id):
    """Add or remove the add-ons the plan offers, and change their quantities: the form, then
    (with ``addon-<id>`` quantities) its preview, then (POST) the change, charged now and
    prorated or at the next renewal as the merchant says (an add-on removed: at the next
    renewal, like a downgrade)."""
    sub = own_subscription(customer, subscription_id)
    offered = offered_addons(sub)
    if not offered:
        abort(404)
    if sub.status != "active":
        flash(str(REFUSALS["INACTIVE_SUBSCRIPTION_PLAN_CHANGE_NOT_SUPPORTED"]), "error")
        return back_to(sub)
    sent = request.form if request.method == "POST" else request.args
    quantity, addons = billing.planned_plan(sub)  # a waiting change is built on
    current = {item["addon_id"]: item["quantity"] for item in addons}
    asked, errors = asked_addons(sent, offered)
    unchanged = asked is not None and not errors and (
        {item["addon_id"]: item["quantity"] for item in asked} == current)
    if asked is None or errors or unchanged:
        if request.method == "POST" and asked is None:
            abort(400)
        values = {addon.id: sent.get(f"addon-{addon.id}", current.get(addon.id, 0))
                  for addon in offered}
        message = None if not unchanged else (
            _("These are your add-ons now: change a quantity to see the price.")
            if addons == sub.addons else
            _("These are your add-ons from %(date)s: change a quantity to see the price.",
              date=format_day(sub.next_billing_date)))
        return render("portal/addons.html", sub=sub, offered=offered, values=values, errors=errors,
                      message=message, preview=None), 400 if errors or unchanged else 200
    _bounds, effective_at = change_terms(sub)
    return preview_then_change(sub, sub.product, quantity, asked, effective_at,
                               "portal/addons.html", offered=offered,
                               values={item["addon_id"]: item["quantity"] for item in asked})


# --- Updating the payment method -----------------------------------------------------------------


class MethodForm(FlaskForm):
    payment_method = StringField(lazy_gettext("Payment method"),
                                 validators=[InputRequired(lazy_gettext("Choose a payment method."))])


def method_page(customer, sub, selected=None, added=None, status=200):
    """The "Edit payment method" page: saved methods to choose from, or a new card."""
    methods = saved_methods(customer)
    form = MethodForm()
    if not form.is_submitted():
        form.payment_method.data = selected or sub.payment_method_id
    open_charge = unpaid = None
    if sub.status == "on_hold":
        open_charge = (Payment.select().where((Payment.subscription == sub) & (Payment.kind == "arrears")
                                              & (Payment.status == "processing")).first())
        unpaid = unpaid_renewal(sub)
    try:
        registry().provider_for(customer.mode)
        can_add = True
    except MissingPlugin:
        can_add = False
    return render("portal/payment_method.html", sub=sub, form=form, methods=methods, added=added,
                  open_charge=open_charge, unpaid=unpaid, can_add=can_add), status


@bp.route("/subscriptions/<subscription_id>/payment-method", methods=["GET", "POST"])
@portal_page
@PAYMENT_METHODS
def payment_method(customer, subscription_id):
    """Choose a saved method (or add a card), then "Confirm changes": for an on-hold
    subscription that charges the arrears, and the progress page follows."""
    sub = own_subscription(customer, subscription_id)
    if request.method == "GET":
        return method_page(customer, sub)
    form = MethodForm()
    if not form.validate_on_submit():
        return method_page(customer, sub, status=400)
    method = own_method(customer, form.payment_method.data)
    try:
        payment = billing.update_payment_method(sub, method)
    except billing.BillingError as error:
        flash(refusal(error), "error")
        return back_to(sub)
    if payment is not None:
        return redirect(url_for(".payment", payment_id=payment.id), 303)
    flash(_("Your payment method is now %(card)s.", card=billing.card_label(method)))
    if request.form.get("back") == "payment-methods":  # chosen on the payment methods page
        return redirect(url_for(".payment_methods_page"), 303)
    return done(url_for(".subscription", subscription_id=sub.id))


@bp.post("/subscriptions/<subscription_id>/payment-method/new")
@portal_page
@PAYMENT_METHODS
def add_card(customer, subscription_id):
    """Send the customer to the payment provider's own card form; it comes back to ``card_added``."""
    sub = own_subscription(customer, subscription_id)
    try:
        provider = registry().provider_for(customer.mode)
    except MissingPlugin:
        flash(_("Adding a card is not available at the moment. Please contact %(business)s.",
                business=current_user.business.name), "error")
        return redirect(url_for(".payment_method", subscription_id=sub.id), 303)
    back = url_for(".card_added", subscription_id=sub.id, _external=True)
    return redirect(provider.setup_url(customer=customer, return_url=back), 303)


@bp.get("/subscriptions/<subscription_id>/payment-method/added")
@portal_page
@PAYMENT_METHODS
def card_added(customer, subscription_id):
    """Back from the provider with ``?payment_method=``: the new card, selected, to confirm."""
    sub = own_subscription(customer, subscription_id)
    method = own_method(customer, request.args.get("payment_method", ""))
    return method_page(customer, sub, selected=method.id, added=method)


# --- Payment methods -----------------------------------------------------------------------------


@bp.get("/payment-methods")
@portal_page
@PAYMENT_METHODS
def payment_methods_page(customer):
    """Every saved method: brand, last four, expiry, the default, the subscriptions each pays
    for; make one the default, remove one, add a card, and choose which card pays for each
    subscription."""
    methods = payment_methods.saved(customer)
    current = list(subscriptions_of(customer).where(Subscription.status.in_(("active", "on_hold")))
                   .order_by(Subscription.created_at.desc()))
    return render("portal/payment_methods.html", methods=methods, current=current,
                  can_add=can_add_card(customer))


def can_add_card(customer) -> bool:
    try:
        registry().provider_for(customer.mode)
    except MissingPlugin:
        return False
    return True


@bp.post("/payment-methods/new")
@portal_page
@PAYMENT_METHODS
def add_saved_card(customer):
    """Send the customer to the payment provider's own card form; it comes back to
    ``saved_card_added``."""
    if not can_add_card(customer):
        flash(_("Adding a card is not available at the moment. Please contact %(business)s.",
                business=current_user.business.name), "error")
        return redirect(url_for(".payment_methods_page"), 303)
    back = url_for(".saved_card_added", _external=True)
    return redirect(registry().provider_for(customer.mode).setup_url(customer=customer,
                                                                       return_url=back), 303)


@bp.get("/payment-methods/added")
@portal_page
@PAYMENT_METHODS
def saved_card_added(customer):
    """Back from the provider with ``?payment_method=``: the card is saved (once)."""
    method = own_method(customer, request.args.get("payment_method", ""))
    flash(_("Card saved: %(card)s.", card=billing.card_label(method)))
    return done(url_for(".payment_methods_page"))


@bp.post("/payment-methods/<payment_method_id>/default")
@portal_page
@PAYMENT_METHODS
def make_default_method(customer, payment_method_id):
    """Make a method the default: new subscriptions use it, and the active ones charged to the
    previous default follow."""
    method = own_method(customer, payment_method_id)
    payment_methods.make_default(customer, method)
    flash(_("%(card)s is now your default payment method.", card=billing.card_label(method)))
    return done(url_for(".payment_methods_page"))


@bp.post("/payment-methods/<payment_method_id>/remove")
@portal_page
@PAYMENT_METHODS
def remove_method(customer, payment_method_id):
    """Remove a saved method; the subscriptions it paid for move to the default. Refused, with
    the reason, when it is the only method of a current subscription."""
    method = own_method(customer, payment_method_id)
    try:
        moved = payment_methods.remove(customer, method)
    except payment_methods.MethodRefused as error:
        if error.code == "PAYMENT_METHOD_IN_USE":
            flash(_("%(card)s cannot be removed: it is the only payment method of your %(plans)s "
                    "subscription. Add another card first.", card=billing.card_label(method),
                    plans=", ".join(sub.product.name for sub in error.subscriptions)), "error")
        else:
            flash(refusal(error), "error")
        return redirect(url_for(".payment_methods_page"), 303)
    flash(_("%(card)s is removed.", card=billing.card_label(method)) if not moved else
          _("%(card)s is removed. %(plans)s is now paid with %(other)s.", card=billing.card_label(method),
            plans=", ".join(sub.product.name for sub in moved),
            other=billing.card_label(moved[0].refresh().payment_method)))
    return redirect(url_for(".payment_methods_page"), 303)


@bp.get("/payments/<payment_id>")
@portal_page
def payment(customer, payment_id):
    """A charge the customer started (arrears, plan upgrade): in progress (the page refreshes
    itself until the job ends), then what happened, with its invoice unless the merchant has
    switched the billing history off."""
    payment = (Payment.select(Payment, PaymentMethod)
               .join(PaymentMethod, JOIN.LEFT_OUTER, on=(Payment.payment_method == PaymentMethod.id))
               .where((Payment.id == payment_id) & (Payment.customer == customer)).first())
    if payment is None or not in_flow(payment):
        abort(404)
    sub = own_subscription(customer, payment.subscription_id) if payment.subscription_id else None
    refunded = (Refund.select(fn.COALESCE(fn.SUM(Refund.amount), 0))
                .where((Refund.payment == payment.id) & (Refund.status != "failed")).scalar()
                if payment.status == "succeeded" else 0)
    invoice = (Invoice.get_or_none(Invoice.payment == payment.id)  # part of the billing history
               if payment.status == "succeeded" and settings()["billing_history"] else None)
    return render("portal/payment.html", payment=payment, sub=sub, refunded=refunded,
                  invoice=invoice,
                  reason=failure_reason(payment) if payment.status == "failed" else None)


def in_flow(payment) -> bool:
    """Whether a flow session (if this is one) may see ``payment``: its subscription's only."""
    flow = current_user.session.flow
    return not flow or payment.subscription_id == flow.get("subscription_id")


@bp.get("/flow/done")
@portal_page
def flow_done(customer):
    """The end of a deep-linked flow: its confirmation page (the merchant's message, and the
    way back to them), a redirect to the merchant's URL, or the whole portal's home."""
    flow = current_user.session.flow
    if not flow:
        return redirect(url_for(".home"), 303)
    if not flow.get("completed") and not portal_flows.paid_for(current_user.session):
        return redirect(portal_flows.start(flow), 303)  # the task is not done: back to it
    after = flow["after_completion"] if flow.get("completed") else portal_flows.complete(
        current_user.session)
    if after["type"] == "redirect":
        return redirect(after["url"], 303)
    if after["type"] == "portal_homepage":
        return redirect(url_for(".home"), 303)
    return render("portal/flow_done.html", message=after.get("message"))


@bp.get("/payments/<payment_id>/status")
@portal_page
def payment_status(customer, payment_id):
    """The charge's status, for the progress page's script."""
    payment = (Payment.select(Payment.status, Payment.subscription)
               .where((Payment.id == payment_id) & (Payment.customer == customer)).first())
    if payment is None or not in_flow(payment):
        abort(404)
    status = payment.status
    return jsonify(status=status, done=status != "processing")


# --- License keys --------------------------------------------------------------------------------


@bp.get("/licenses")
@portal_page
def licenses(customer):
    """Each key: product, status, expiry, activations used of the limit, and its instances. A
    subscription's key, while the subscription goes on, expires "when your subscription ends"
    (``core.license_terms``), not at the technical date that the next renewal moves on."""
    keys = (LicenseKey.select(LicenseKey, Product, Subscription).join(Product).switch(LicenseKey)
            .join(Subscription, JOIN.LEFT_OUTER)
            .where(LicenseKey.customer == customer).order_by(LicenseKey.created_at.desc()))
    instances = LicenseKeyInstance.select().order_by(LicenseKeyInstance.created_at)
    return render("portal/licenses.html", keys=prefetch(keys, instances))


@bp.post("/licenses/<key_id>/instances/<instance_id>/deactivate")
@portal_page
@ACTIVATION_REMOVAL
def deactivate(customer, key_id, instance_id):
    """Free one activation of the customer's key."""
    instance = (LicenseKeyInstance.select(LicenseKeyInstance, LicenseKey).join(LicenseKey)
                .where((LicenseKeyInstance.id == instance_id) & (LicenseKey.id == key_id)
                       & (LicenseKey.customer == customer)).first())
    if instance is None:
        abort(404)
    try:
        licensing.deactivate(instance.license_key.key, instance.id)
    except licensing.LicenseError:
        abort(404)
    flash(_("%(name)s is no longer activated.", name=instance.name))
    return redirect(url_for(".licenses"), 303)


# --- Profile -------------------------------------------------------------------------------------


class ProfileForm(FlaskForm):
    """Name, phone, language and billing details. The phone is read with the billing country
    as its default country; the country picker lists names in the page's language."""

    name = StringField(lazy_gettext("Name"), validators=[
        InputRequired(lazy_gettext("Enter your name.")), Length(max=200), SingleLine(ONE_LINE)])
    phone = StringField(lazy_gettext("Phone"), validators=[Optional(), Length(max=40)])
    locale = SelectField(lazy_gettext("Language"), choices=LOCALES)
    country = SelectField(lazy_gettext("Country"), validators=[Optional()], choices=[])
    street = StringField(lazy_gettext("Street address"),
                         validators=[Optional(), Length(max=200), SingleLine(ONE_LINE)])
    city = StringField(lazy_gettext("City"),
                       validators=[Optional(), Length(max=200), SingleLine(ONE_LINE)])
    zipcode = StringField(lazy_gettext("Postal code"),
                          validators=[Optional(), Length(max=40), SingleLine(ONE_LINE)])
    state = StringField(lazy_gettext("State, province or region"),
                        validators=[Optional(), Length(max=200), SingleLine(ONE_LINE)])
    tax_id = StringField(lazy_gettext("Tax ID"),
                         validators=[Optional(), Length(max=64), SingleLine(ONE_LINE)])

    EDITABLE = {"name": ("name",), "phone": ("phone",), "tax_id": ("tax_id",),
                "billing_address": ("country", "street", "city", "zipcode", "state")}

    def __init__(self, *args, region=None, editable=None, **kwargs):
        """``editable``: the business's profile-field settings; the fields it turns off are
        not on this form at all (neither shown nor read)."""
        super().__init__(*args, **kwargs)
        self.region, self.e164, self.address, self.checked_tax_id = region, None, None, None
        for setting, names in self.EDITABLE.items():
            if editable is not None and not editable.get(setting, True):
                for name in names:
                    delattr(self, name)
        if "country" in self:
            self.country.choices = {"": _("Choose a country"), **dict(countries(current_locale()))}

    def validate_name(self, field):
        if not (field.data or "").strip():
            raise ValidationError(_("Enter your name."))

    def validate_phone(self, field):
        """Keep the number in E.164 (``+33612345678``), read with the billing country (the one
        chosen on this form, else the one on file)."""
        try:
            number = phonenumbers.parse(field.data, ("country" in self and self.country.data)
                                        or self.region)
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_valid_number(number):
            raise ValidationError(_("Enter a valid phone number with its country code, "
                                    "such as +33 6 12 34 56 78."))
        self.e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def validate(self, extra_validators=None):
        """The field checks, then the billing address and tax ID (``core.billing_details``)."""
        if not super().validate(extra_validators):
            return False
        if "country" not in self:  # the address is not the customer's to change here
            country = self.region
        else:
            country = self.country.data or None
            fields = {name: getattr(self, name).data for name in ("street", "city", "zipcode", "state")}
            if any((value or "").strip() for value in fields.values()) and not country:
                self.country.errors.append(_("Choose the country of this address."))
                return False
            try:
                self.address = clean_address({**fields, "country": country}, check_postal_code=True)
            except InvalidBillingDetails:
                self.zipcode.errors.append(_("This postal code does not fit %(country)s.",
                                             country=country_name(country, current_locale())))
                return False
        if "tax_id" not in self:
            return True
        try:
            self.checked_tax_id = check_tax_id(self.tax_id.data, country)
        except InvalidBillingDetails:
            self.tax_id.errors.append(
                _("This tax ID is not valid for %(country)s.",
                  country=country_name(country, current_locale())) if country
                else _("This tax ID is not valid."))
            return False
        return True


class EmailChangeForm(FlaskForm):
    email = EmailField(lazy_gettext("New e-mail address"), validators=[
        InputRequired(lazy_gettext("Enter your new e-mail address.")), Length(max=254),
        Email(lazy_gettext("Enter a valid e-mail address, such as name@example.com."))])


def profile_page(form=None, email_form=None, reauthenticate=False, status=200):
    """The profile: the signed-in customer's whole record, in a form."""
    customer = current_user.whole_customer()
    address = customer.billing_address or {}
    if form is None:
        form = ProfileForm(region=address.get("country"), editable=settings()["profile_fields"], data={
            "name": customer.name, "locale": lang_of(customer),
            "phone": phone_for_people(customer.phone_number), "tax_id": customer.tax_id or "",
            **{name: address.get(name) or "" for name in ("country", "street", "city", "zipcode", "state")}})
    return render("portal/profile.html", form=form, email_form=email_form or EmailChangeForm(),
                  reauthenticate=reauthenticate, address_rules=address_rules_by_country()), status


def address_rules_by_country() -> dict:
    """``{country: [has postal code, has state]}``: which address fields the profile shows."""
    return {code: list(address_rules(code)[:2]) for code, _ in countries("en")}


def lang_of(customer) -> str:
    return supported(customer.preferred_locale) or current_locale()


def phone_for_people(e164: str | None) -> str:
    if not e164:
        return ""
    try:
        return phonenumbers.format_number(phonenumbers.parse(e164),
                                          phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    except phonenumbers.NumberParseException:
        return e164


@bp.route("/profile", methods=["GET", "POST"])
@portal_page
def profile(customer):
    """Name, phone (stored E.164), language and billing details; the e-mail address has its
    own form."""
    if request.method == "GET":
        return profile_page()
    form = ProfileForm(region=(customer.billing_address or {}).get("country"),
                       editable=settings()["profile_fields"])
    if not form.validate_on_submit():
        return profile_page(form=form, status=400)
    changes = {"preferred_locale": language_code(form.locale.data)}
    for name, value in (("name", lambda: form.name.data.strip()), ("phone", lambda: form.e164),
                        ("country", lambda: form.address), ("tax_id", lambda: form.checked_tax_id)):
        if name in form:
            column = {"phone": "phone_number", "country": "billing_address"}.get(name, name)
            changes[column] = value()
    Customer.update(**changes).where(Customer.id == customer.id).execute()
    customer.preferred_locale = form.locale.data
    refresh()  # say it in the language just chosen
    flash(_("Your profile is saved."))
    return done(url_for(".profile"))


@bp.post("/profile/my-data.json")
@portal_page
def export_my_data(customer):
    """"Download my data": everything held about the signed-in customer, as a JSON file
    (GDPR articles 15 and 20)."""
    from core.privacy import export

    document = export(customer, by="portal")
    return (json.dumps(document, indent=2, ensure_ascii=False), 200,
            {"Content-Type": "application/json; charset=utf-8",
             "Content-Disposition": 'attachment; filename="my-data.json"'})


@bp.post("/profile/email")
@portal_page
@EMAIL_CHANGE
def change_email(customer):
    """Ask for a new address: a confirmation link goes there; nothing changes until it is used."""
    form = EmailChangeForm()
    if not form.validate_on_submit():
        return profile_page(email_form=form, status=400)
    try:
        auth.request_email_change(current_user.session, form.email.data, client_ip())
    except auth.ReauthenticationRequired:
        return profile_page(email_form=form, reauthenticate=True, status=403)
    except ValueError:
        form.email.errors.append(_("Enter a valid e-mail address, such as name@example.com."))
        return profile_page(email_form=form, status=400)
    flash(_("We sent a confirmation link to %(email)s. Your address changes when you open it.",
            email=form.email.data.strip()))
    return redirect(url_for(".profile"), 303)


@bp.post("/profile/sign-in-again")
@portal_page
@EMAIL_CHANGE
def sign_in_again(customer):
    """E-mail a fresh sign-in link to the current address, leading back to the profile (an
    e-mail change needs a recent sign-in)."""
    auth.limit_emails(customer.id, client_ip())
    if auth.allow_sign_in_email(customer.email):
        enqueue(auth.send_sign_in_link, customer.id, current_user.session.return_url, "portal",
                url_for(".profile"))
    flash(_("We sent a sign-in link to %(email)s. Open it, then change your address.",
            email=customer.email))
    return redirect(url_for(".profile"), 303)


# --- Words shared by the templates ---------------------------------------------------------------


def format_day(value) -> str:
    return day(value)


STATUS = {
    "active": lazy_gettext("Active"), "on_hold": lazy_gettext("On hold"), "paused": lazy_gettext("Paused"),
    "pending": lazy_gettext("Pending"), "cancelled": lazy_gettext("Cancelled"),
    "expired": lazy_gettext("Expired"), "failed": lazy_gettext("Failed"),
    "succeeded": lazy_gettext("Paid"), "processing": lazy_gettext("Processing"),
    "refunded": lazy_gettext("Refunded"), "partially_refunded": lazy_gettext("Partially refunded"),
    "requires_customer_action": lazy_gettext("Action needed"), "disabled": lazy_gettext("Disabled"),
}
KIND = {"new": lazy_gettext("Purchase"), "first": lazy_gettext("First payment"),
        "renewal": lazy_gettext("Renewal"),
        "arrears": lazy_gettext("Overdue payment"), "plan_change": lazy_gettext("Plan change")}


def status_label(status: str) -> str:
    return str(STATUS.get(status, status))


def every(count: int, interval: str) -> str:
    """``every month``, ``every 3 months``… in the page's language."""
    from flask_babel import ngettext

    words = {
        "Day": lambda n: ngettext("every day", "every %(num)d days", n),
        "Week": lambda n: ngettext("every week", "every %(num)d weeks", n),
        "Month": lambda n: ngettext("every month", "every %(num)d months", n),
        "Year": lambda n: ngettext("every year", "every %(num)d years", n),
    }
    return words.get(interval, words["Month"])(count)


@bp.app_template_filter("status")
def _status_filter(status):
    return once("status", status, lambda: status_label(status))


@bp.app_template_filter("kind")
def _kind_filter(payment):
    """What a payment was for: a purchase, a subscription's first payment, a renewal…"""
    kind = "first" if payment.kind == "new" and payment.subscription_id else payment.kind
    return once("kind", kind, lambda: str(KIND.get(kind, kind)))


@bp.app_template_filter("card")
def _card_filter(method):
    return billing.card_label(method)


@bp.app_template_global("invoice_pdf_url")
def _invoice_pdf_url(invoice_id: str) -> str:
    """The address of an invoice's PDF, the route built once per request (a billing page
    links twenty): ids are URL-safe, so the rest is plain text."""
    route = once("url", "invoice_pdf", lambda: url_for("portal.invoice_pdf", invoice_id="~").rsplit("~", 1))
    return invoice_id.join(route)


@bp.app_template_global("every")
def _every(count, interval):
    return every(count, interval)


@bp.app_template_global("feedback_label")
def _feedback_label(code):
    return str(FEEDBACK.get(code, code or ""))
