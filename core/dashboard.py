"""The merchant dashboard: sign-in, the test/live switch, Sales → Customers with "Share invite"
(and pausing or resuming their subscriptions), Sales → Products (moving subscribers to a
product's current price), API keys, webhook endpoints, branding and subscription settings.

Everything is scoped to the signed-in merchant's business and the mode their session shows;
another business's (or mode's) ids answer 404, exactly like ids that do not exist.
"""

import base64
import json
from datetime import UTC, datetime, time, timedelta
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    DateField,
    DecimalField,
    EmailField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    URLField,
    widgets,
)
from wtforms.validators import (
    Email,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

from core import auth, billing, endpoints, portal_flows, portal_settings, retention
from core.auth import client_ip, limiter, merchant_required
from core.jobs import enqueue
from core.models import (
    ApiKey,
    Business,
    Customer,
    Delivery,
    Discount,
    Event,
    Payment,
    Product,
    Refund,
    Subscription,
    WebhookEndpoint,
    utcnow,
)
from core.signin import duration
from core.text import SingleLine, local_path
from core.web import body_limit

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")

PAGE_SIZE = 25
LOGO_MAX_BYTES = 256 * 1024
LOGO_TYPES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg",
              b"GIF87a": "image/gif", b"GIF89a": "image/gif"}


ONE_LINE = "Use one line of text, without line breaks or control characters."


# --- Forms ------------------------------------------------------------------------------------


class SignInForm(FlaskForm):
    email = EmailField("E-mail address", validators=[InputRequired("Enter your e-mail address.")])
    password = PasswordField("Password", validators=[InputRequired("Enter your password.")])


class EraseForm(FlaskForm):
    """Erasing cannot be undone: the merchant types the customer's e-mail address to confirm."""

    email = StringField("Type the customer's e-mail address to confirm",
                        validators=[InputRequired("Type the customer's e-mail address.")])

    def __init__(self, customer, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.customer = customer

    def validate_email(self, field):
        if field.data.strip().lower() != self.customer.email:
            raise ValidationError("This is not the customer's e-mail address.")


class ApiKeyForm(FlaskForm):
    name = StringField("Name", validators=[Optional(), Length(max=100), SingleLine(ONE_LINE)],
                       description="What the key is for, e.g. \"Production server\".")


def _public_url(form, field):
    """Only public http(s) addresses: the check the webhooks plugin repeats at each delivery."""
    try:
        endpoints.check_url((field.data or "").strip())
    except ValueError as error:
        message = str(error)
        raise ValidationError(message[:1].upper() + message[1:] + ".") from None


class WebhookForm(FlaskForm):
    url = URLField("Endpoint URL", validators=[InputRequired("Enter the URL that receives the webhooks."),
                                               Length(max=2000), _public_url])
    description = StringField("Description", validators=[Optional(), Length(max=200),
                                                         SingleLine(ONE_LINE)])


def _https_url(form, field):
    parts = urlsplit(field.data or "")
    if parts.scheme != "https" or not parts.hostname:
        raise ValidationError("Use a full address starting with https://.")


def _logo(form, field):
    """Keep the upload as a ``data:`` URI, after checking it really is a small PNG, JPEG or GIF."""
    upload = field.data
    if not upload or not getattr(upload, "filename", ""):
        field.data_uri = None
        return
    content = upload.read(LOGO_MAX_BYTES + 1)
    if len(content) > LOGO_MAX_BYTES:
        raise ValidationError(f"The logo must be at most {LOGO_MAX_BYTES // 1024} KB.")
    kind = next((kind for magic, kind in LOGO_TYPES.items() if content.startswith(magic)), None)
    if kind is None:
        raise ValidationError("The logo must be a PNG, JPEG or GIF image.")
    field.data_uri = f"data:{kind};base64," + base64.b64encode(content).decode()


class BrandingForm(FlaskForm):
    name = StringField("Business name", validators=[InputRequired("Enter your business's name."),
                                                    Length(max=200), SingleLine(ONE_LINE)])
    logo = FileField("Logo", validators=[_logo],
                     description=f"PNG, JPEG or GIF, at most {LOGO_MAX_BYTES // 1024} KB.")
    remove_logo = BooleanField("Remove the logo")
    brand_color = StringField("Brand colour", validators=[
        InputRequired(), Regexp(r"^#[0-9a-fA-F]{6}$", message="Use a colour like #4f46e5.")])
    support_email = EmailField("Support e-mail", validators=[
        Optional(), Length(max=254), Email("Enter a valid e-mail address.")])
    default_return_url = URLField("Default return URL", validators=[Optional(), Length(max=2000), _https_url],
                                  description="Where \"Return to …\" in the portal leads.")


class SubscriptionSettingsForm(FlaskForm):
    renewal_reminders = SelectField("Renewal reminder e-mails", choices={
        "yearly": "For plans billed once a year or less often", "all": "For every plan",
        "off": "Never"}, validators=[InputRequired()],
        description="Auto-renewal laws in several US states and the EU ask for one before a long "
                    "term renews.")
    renewal_reminder_days = IntegerField("Days before the renewal", validators=[
        InputRequired("Enter a number of days."),
        NumberRange(min=1, max=90, message="Enter a number of days from 1 to 90.")])


# --- Signing in and out -------------------------------------------------------------------------


def _sign_in_limit():
    return current_app.config["DASHBOARD_SIGN_IN_LIMIT"]


def _failed(response):
    return response.status_code == 401


SIGN_IN_LIMITED = "Too many failed sign-ins. Please wait a few minutes, then try again."


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_sign_in_limit, methods=["POST"], deduct_when=_failed, error_message=SIGN_IN_LIMITED)
@limiter.limit(_sign_in_limit, methods=["POST"], deduct_when=_failed, error_message=SIGN_IN_LIMITED,
               key_func=lambda: "email:" + auth.email_hash(request.form.get("email", "")))
def login():
    """Sign a merchant user in with e-mail and password (failures are limited per IP and per
    e-mail address, ``DASHBOARD_SIGN_IN_LIMIT``)."""
    if current_user.is_merchant:
        return redirect(url_for(".customers"))
    form = SignInForm()
    status = 200
    if form.validate_on_submit():
        record = auth.sign_in_merchant(form.email.data, form.password.data, client_ip(),
                                       request.user_agent.string)
        if record:
            auth.login(record)
            return redirect(_safe_next(request.args.get("next")), 303)
        form.password.errors.append("This e-mail address and password do not match.")
        status = 401
    elif form.errors:
        status = 400
    return render_template("dashboard/login.html", form=form), status


@bp.post("/logout")
def logout():
    """Sign out; the dashboard session ends on the server."""
    if current_user.is_merchant:
        auth.sign_out()
    response = redirect(url_for(".login"), 303)
    response.headers["Clear-Site-Data"] = '"cache", "cookies", "storage"'
    return response


@bp.post("/mode")
@merchant_required
def switch_mode():
    """Show test or live data from now on."""
    mode = request.form.get("mode")
    if mode not in ("test", "live"):
        abort(400)
    auth.switch_mode(current_user.session, mode)
    return redirect(_safe_next(request.form.get("next")), 303)


def _safe_next(target) -> str:
    """A dashboard page to go to next: only a path inside the dashboard, never another site."""
    return local_path(target, within="/dashboard") or url_for(".customers")


# --- Sales → Customers --------------------------------------------------------------------------


@bp.get("/")
@merchant_required
def index():
    return redirect(url_for(".customers"))


@bp.get("/customers")
@merchant_required
def customers():
    """The business's customers in the current mode, newest first; ``q`` searches e-mail and name."""
    query = request.args.get("q", "").strip()[:200]
    page = max(request.args.get("page", 1, type=int), 1)
    rows = _scoped(Customer).order_by(Customer.created_at.desc(), Customer.id)
    if query:
        rows = rows.where(Customer.email.contains(query.lower()) | Customer.name.contains(query))
    found = list(rows.offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1))
    return render_template("dashboard/customers.html", customers=found[:PAGE_SIZE], q=query,
                           page=page, has_next=len(found) > PAGE_SIZE)


@bp.get("/customers/<customer_id>")
@merchant_required
def customer(customer_id):
    """A customer, with "Share invite" (and the dynamic link just made, this once)."""
    found = _get(Customer, customer_id)
    return _customer_page(found, dynamic_link=_shown_once("dynamic-link", found.id))


@bp.post("/customers/<customer_id>/invite-link")
@merchant_required
def invite_link(customer_id):
    """Make a dynamic sign-in link, shown once (on the page this redirects to), to copy and
    hand to the customer."""
    found = _get(Customer, customer_id)
    form = request.form
    flow = None
    if form.get("flow"):  # a deep link into one task, as the API's portal session makes
        wanted = {"type": form["flow"], "subscription_id": form.get("subscription_id") or None,
                  "product_id": form.get("product_id") or None,
                  "quantity": form.get("quantity", type=int)}
        after = {"type": form.get("after_completion") or "hosted_confirmation",
                 "url": (form.get("url") or "").strip() or None,
                 "message": " ".join((form.get("message") or "").split())[:500] or None}
        try:
            if wanted["type"] not in portal_flows.TYPES or after["type"] not in portal_flows.AFTER:
                raise portal_flows.FlowError("INVALID_REQUEST_BODY", "Choose a task and an ending.")
            flow = portal_flows.check(found, wanted, after, live=found.mode == "live")
        except portal_flows.FlowError as error:
            flash(f"No link was made. {error.message}", "error")
            return redirect(url_for(".customer", customer_id=found.id) + "#share-invite", 303)
    link = auth.sign_in_link(found, flow=flow)
    auth.audit("sign_in_link.issued", customer=found, by=current_user.user.id,
               flow=flow["type"] if flow else None)
    _show_once("dynamic-link", found.id, link)
    return redirect(url_for(".customer", customer_id=found.id), 303)


@bp.post("/customers/<customer_id>/invite-email")
@merchant_required
def invite_email(customer_id):
    """E-mail the customer a dynamic sign-in link (within ``auth.limit_emails``, and at most
    ``SIGN_IN_LIMIT_PER_EMAIL``)."""
    found = _get(Customer, customer_id)
    auth.limit_emails(found.id, client_ip())
    if auth.allow_sign_in_email(found.email):
        enqueue(auth.send_sign_in_link, found.id, None, current_user.user.id)
        flash(f"A sign-in link is on its way to {found.email}.")
    else:
        flash(f"A link was sent to {found.email} very recently. Please wait before sending another.")
    return redirect(url_for(".customer", customer_id=found.id), 303)


@bp.post("/customers/<customer_id>/export")
@merchant_required
def export_customer(customer_id):
    """Everything held about the customer, as a JSON download (GDPR articles 15 and 20)."""
    from core.privacy import export

    found = _get(Customer, customer_id)
    document = export(found, by=current_user.user.id)
    return (json.dumps(document, indent=2, ensure_ascii=False), 200,
            {"Content-Type": "application/json; charset=utf-8",
             "Content-Disposition": f'attachment; filename="{found.id}.json"'})


@bp.route("/customers/<customer_id>/erase", methods=["GET", "POST"])
@merchant_required
def erase_customer(customer_id):
    """Erase the customer's personal data once the merchant has confirmed (GDPR article 17)."""
    from core.privacy import erase

    found = _get(Customer, customer_id)
    form = EraseForm(found)
    if found.erased_at is None and form.validate_on_submit():
        erase(found, by=current_user.user.id)
        flash("The customer's personal data is erased. Their invoices and payments are kept.")
        return redirect(url_for(".customer", customer_id=found.id), 303)
    return render_template("dashboard/erase.html", customer=found, form=form), 400 if form.errors else 200


class RefundForm(FlaskForm):
    amount = StringField("Amount", validators=[Optional(), Regexp(
        r"^\d{1,9}([.,]\d{1,2})?$", message="Enter an amount such as 12.50, or leave it empty.")])
    reason = StringField("Reason", validators=[Optional(), Length(max=3000)])


@bp.post("/customers/<customer_id>/payments/<payment_id>/refund")
@merchant_required
def refund(customer_id, payment_id):
    """Refund a payment of this customer, in full (amount left empty) or in part."""
    from core.money import format_money, to_minor

    found = _get(Customer, customer_id)
    payment = _scoped(Payment).where((Payment.id == payment_id)
                                     & (Payment.customer == found)).first() or abort(404)
    form = RefundForm()
    if not form.validate_on_submit():
        flash(" ".join(e for errors in form.errors.values() for e in errors), "error")
        return redirect(url_for(".customer", customer_id=found.id) + "#payments", 303)
    try:
        amount = to_minor(form.amount.data.replace(",", "."), payment.currency) \
            if form.amount.data else None
        made = billing.refund_payment(payment, amount, reason=form.reason.data or None,
                                      metadata={"refunded_by": current_user.user.id})
    except ValueError as error:
        flash(f"No refund was made: {error}.", "error")
    except billing.BillingError as error:
        left = billing.refundable(payment.refresh())
        if error.code != "REFUND_AMOUNT_INVALID":
            flash(f"No refund was made: {error.message}.", "error")
        elif left:
            flash(f"No refund was made: at most {format_money(left, payment.currency)} is left "
                  "to refund on this payment.", "error")
        else:
            flash("No refund was made: this payment has been refunded in full already.", "error")
    else:
        flash(f"Refund of {format_money(made.amount, made.currency)}: {made.refresh().status}.")
    return redirect(url_for(".customer", customer_id=found.id) + "#payments", 303)


@bp.post("/subscriptions/<subscription_id>/pause")
@merchant_required
def pause_subscription(subscription_id):
    """Pause a subscription: no renewals until it is resumed; the paid time it has left is kept."""
    sub = _get(Subscription, subscription_id)
    return _after(sub, billing.pause, "The subscription is paused: it is not renewed until it is resumed.")


@bp.post("/subscriptions/<subscription_id>/resume")
@merchant_required
def resume_subscription(subscription_id):
    """Resume a paused subscription, with the paid time it had left."""
    sub = _get(Subscription, subscription_id)
    return _after(sub, billing.resume, "The subscription is active again.")


def _after(sub, change, done: str):
    """Apply ``change`` to ``sub`` and go back to its customer's page, saying what happened."""
    try:
        change(sub)
    except billing.BillingError as error:
        flash(f"Nothing changed: {error.message}.", "error")
    else:
        flash(done)
    return redirect(url_for(".customer", customer_id=sub.customer_id) + "#subscriptions", 303)


def _customer_page(found, dynamic_link=None):
    prefix = "/test" if found.mode == "test" else ""
    static_link = f"{current_app.config['BASE_URL']}{prefix}/login/{found.business_id}"
    payments = list(_scoped(Payment).where(Payment.customer == found)
                    .order_by(Payment.created_at.desc()).limit(50))
    refunds = {}
    for row in Refund.select().where(Refund.payment.in_([p.id for p in payments])).order_by(
            Refund.created_at):
        refunds.setdefault(row.payment_id, []).append(row)
    subscriptions = list(_scoped(Subscription).where(Subscription.customer == found)
                         .order_by(Subscription.created_at.desc()))
    plans = list(_scoped(Product).where((Product.is_recurring == True)  # noqa: E712
                                        & (Product.archived == False)).order_by(Product.name))  # noqa: E712
    return render_template("dashboard/customer.html", customer=found, static_link=static_link,
                           subscriptions=subscriptions, plans=plans,
                           dynamic_link=dynamic_link, payments=payments, refunds=refunds,
                           refundable={p.id: billing.refundable(p) for p in payments
                                       if p.status == "succeeded"},
                           refund_form=RefundForm(),
                           valid_for=duration(current_app.config["MAGIC_LINK_TTL"]))


# --- Developers: API keys and webhooks ---------------------------------------------------------


# --- Sales → Products -----------------------------------------------------------------------------


@bp.get("/products")
@merchant_required
def products():
    """The recurring products on sale, each with how many subscribers still pay an older price."""
    rows = _scoped(Product).where((Product.is_recurring == True)  # noqa: E712
                                  & (Product.archived == False)).order_by(Product.name)  # noqa: E712
    return render_template("dashboard/products.html",
                           products=[(p, billing.subscriptions_on_older_price(p)) for p in rows],
                           notice_days=current_app.config["PRICE_CHANGE_NOTICE_DAYS"])


@bp.post("/products/<product_id>/move-to-current-price")
@merchant_required
def move_to_current_price(product_id):
    """Move a product's subscribers to its current price: each is e-mailed the new amount and
    the date it applies, at least the configured notice ahead."""
    product = _get(Product, product_id)
    moved = billing.announce_price(product, billing.price_change_notice())
    auth.audit("product.price_moved", business=product.business_id, mode=product.mode,
               by=current_user.user.id, product=product.id, subscriptions=len(moved))
    flash(f"{len(moved)} subscriber(s) of {product.name} were told of the new price; "
          f"it applies from their first billing date at least "
          f"{current_app.config['PRICE_CHANGE_NOTICE_DAYS']} days from now."
          if moved else f"Every subscriber of {product.name} already pays its current price.")
    return redirect(url_for(".products"), 303)


# --- Sales → Discounts ----------------------------------------------------------------------------


class DiscountForm(FlaskForm):
    code = StringField("Code", validators=[Optional(), Regexp(r"^[A-Za-z0-9_-]{3,64}$", message=(
        "3 to 64 letters, digits, - or _."))], description="Upper-cased. Empty: 16 random characters.")
    name = StringField("Name", validators=[Optional(), Length(max=200), SingleLine(ONE_LINE)],
                       description="Printed on invoices instead of the code.")
    type = SelectField("Type", choices={"percentage": "Percentage", "flat": "Flat amount"})
    amount = DecimalField("Amount", places=None, validators=[InputRequired("Enter the amount."),
                                                            NumberRange(min=0.01)],
                          description="Percentage: 20 is 20 % (up to 100, two decimals). Flat: "
                                      "minor units of the subscription's currency (500 is 5.00).")
    subscription_cycles = IntegerField("Payments discounted", validators=[
        Optional(), NumberRange(min=1, max=10000)], description="Empty: every payment.")
    usage_limit = IntegerField("Usage limit", validators=[Optional(), NumberRange(min=1, max=10**9)],
                               description="How many subscriptions may use it. Empty: no limit.")
    valid_until = DateField("Valid until", validators=[Optional()],
                            description="The last day (UTC) the code is accepted. Empty: always.")
    restricted_to = SelectMultipleField("Only for", description="None chosen: every product.")

    def validate_amount(self, field):
        if self.type.data == "percentage" and (field.data > 100 or field.data * 100 % 1):
            raise ValidationError("A percentage is at most 100, with two decimals at most.")
        if self.type.data == "flat" and field.data % 1:
            raise ValidationError("A flat amount is a whole number of minor units (cents).")


@bp.get("/cancellations")
@merchant_required
def cancellations():
    """What customers said when they asked to cancel in the portal over the last 30 days,
    and how many took the retention offer instead (``core.retention``)."""
    summary = retention.summary(current_user.business.id, current_user.mode)
    return render_template("dashboard/cancellations.html", summary=summary, labels=REASON_LABELS)


@bp.route("/discounts", methods=["GET", "POST"])
@merchant_required
def discounts():
    """The discount codes of the current mode, with how often each was used; add one."""
    recurring = list(_scoped(Product).where((Product.is_recurring == True)  # noqa: E712
                                            & (Product.archived == False))  # noqa: E712
                     .order_by(Product.name))
    form = DiscountForm()
    form.restricted_to.choices = {p.id: p.name for p in recurring}
    if form.validate_on_submit():
        data = form.data
        amount = int(data["amount"] * 100 if data["type"] == "percentage" else data["amount"])
        until = data["valid_until"]
        try:
            made = billing.save_discount(Discount(
                business=current_user.business, mode=current_user.mode, code=data["code"] or None,
                name=(data["name"] or "").strip() or None, type=data["type"], amount=amount,
                subscription_cycles=data["subscription_cycles"], usage_limit=data["usage_limit"],
                restricted_to=sorted(data["restricted_to"] or ()),
                expires_at=(datetime.combine(until, time(), UTC) + timedelta(days=1)) if until else None))
        except billing.BillingError as error:
            form.code.errors.append(error.message[:1].upper() + error.message[1:] + ".")
        else:
            flash(f"The discount code {made.code} is ready.")
            return redirect(url_for(".discounts"), 303)
    names = {p.id: p.name for p in recurring}
    listed = _scoped(Discount).order_by(Discount.created_at.desc())
    return render_template("dashboard/discounts.html", form=form, discounts=list(listed),
                           names=names), 400 if form.errors else 200


@bp.route("/api-keys", methods=["GET", "POST"])
@merchant_required
def api_keys():
    """The API keys of the current mode; a new key is shown once, then only its prefix."""
    form = ApiKeyForm()
    if form.validate_on_submit():
        key, raw = auth.create_api_key(current_user.business, current_user.mode, form.name.data or "")
        auth.audit("api_key.created", business=key.business_id, mode=key.mode,
                   by=current_user.user.id, key=key.prefix)
        _show_once("new-key", current_user.mode, raw)
        return redirect(url_for(".api_keys"), 303)
    keys = _scoped(ApiKey).order_by(ApiKey.revoked_at.is_null(False), ApiKey.created_at.desc())
    return render_template("dashboard/api_keys.html", form=form, keys=list(keys),
                           new_key=_shown_once("new-key", current_user.mode)), \
        400 if form.errors else 200


@bp.post("/api-keys/<key_id>/revoke")
@merchant_required
def revoke_api_key(key_id):
    """Revoke a key: the next request made with it is refused."""
    key = _get(ApiKey, key_id)
    if key.revoked_at is None:
        ApiKey.update(revoked_at=utcnow()).where(ApiKey.id == key.id).execute()
        auth.audit("api_key.revoked", business=key.business_id, mode=key.mode,
                   by=current_user.user.id, key=key.prefix)
    flash(f"The key {key.prefix}… is revoked.")
    return redirect(url_for(".api_keys"), 303)


@bp.route("/webhooks", methods=["GET", "POST"])
@merchant_required
def webhooks():
    """The webhook endpoints of the current mode; add one."""
    form = WebhookForm()
    if form.validate_on_submit():
        endpoint = WebhookEndpoint.create(
            business=current_user.business, mode=current_user.mode, url=form.url.data.strip(),
            description=form.description.data or "", secret=endpoints.new_secret())
        flash("The endpoint is added. Use its signing secret to verify the webhooks it receives.")
        return redirect(url_for(".webhook", endpoint_id=endpoint.id), 303)
    listed = _scoped(WebhookEndpoint).order_by(WebhookEndpoint.created_at.desc())
    return render_template("dashboard/webhooks.html", form=form, endpoints=list(listed)), \
        400 if form.errors else 200


@bp.get("/webhooks/<endpoint_id>")
@merchant_required
def webhook(endpoint_id):
    """An endpoint: its signing secret and its recent deliveries."""
    endpoint = _get(WebhookEndpoint, endpoint_id)
    deliveries = (Delivery.select(Delivery, Event).join(Event)
                  .where(Delivery.endpoint == endpoint)
                  .order_by(Delivery.created_at.desc()).limit(20))
    return render_template("dashboard/webhook.html", endpoint=endpoint, deliveries=list(deliveries))


@bp.post("/webhooks/<endpoint_id>/rotate-secret")
@merchant_required
def rotate_webhook_secret(endpoint_id):
    """Replace the signing secret (the old one stops working at once)."""
    endpoint = _get(WebhookEndpoint, endpoint_id)
    (WebhookEndpoint.update(secret=endpoints.new_secret(), updated_at=utcnow())
     .where(WebhookEndpoint.id == endpoint.id).execute())
    flash("The signing secret is replaced: update your receiver with the new one.")
    return redirect(url_for(".webhook", endpoint_id=endpoint.id), 303)


@bp.post("/webhooks/<endpoint_id>/<any(disable, enable):action>")
@merchant_required
def toggle_webhook(endpoint_id, action):
    """Stop or resume sending webhooks to an endpoint."""
    endpoint = _get(WebhookEndpoint, endpoint_id)
    disabled = action == "disable"
    (WebhookEndpoint.update(disabled=disabled, updated_at=utcnow())
     .where(WebhookEndpoint.id == endpoint.id).execute())
    flash("The endpoint is disabled: it receives nothing until you enable it." if disabled
          else "The endpoint is enabled.")
    return redirect(url_for(".webhook", endpoint_id=endpoint.id), 303)


# --- Settings: branding ------------------------------------------------------------------------


@bp.route("/branding", methods=["GET", "POST"])
@body_limit(4 * LOGO_MAX_BYTES)
@merchant_required
def branding():
    """How the portal and e-mails show the business: name, logo, colour, support e-mail and
    where "Return to …" leads (the same in test and live mode)."""
    business = Business.get_by_id(current_user.business.id)
    form = BrandingForm(obj=business)
    if form.validate_on_submit():
        logo = None if form.remove_logo.data else (form.logo.data_uri or business.logo)
        (Business.update(name=form.name.data.strip(), logo=logo,
                         brand_color=form.brand_color.data.lower(),
                         support_email=(form.support_email.data or "").strip().lower() or None,
                         default_return_url=(form.default_return_url.data or "").strip() or None)
         .where(Business.id == business.id).execute())
        flash("Branding saved.")
        return redirect(url_for(".branding"), 303)
    return render_template("dashboard/branding.html", form=form, business=business), \
        400 if form.errors else 200


# --- Settings: the customer portal ------------------------------------------------------------


class MultiCheckboxField(SelectMultipleField):
    """Several choices, each a checkbox."""

    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class ProductRuleForm(Form):
    """Where a subscription of one product may change to, and the quantities (seats) a
    subscription of it may have, whichever plan it comes from (one per recurring product)."""

    product_id = HiddenField()
    limited = BooleanField("Limit the plans it may change to")
    switch_to = MultiCheckboxField("May change to", choices=[])
    min_quantity = IntegerField("Fewest seats on this plan", default=1, validators=[
        Optional(), NumberRange(min=1, max=1000, message="Enter a quantity from 1 to 1000.")])
    max_quantity = IntegerField("Most seats on this plan", validators=[
        Optional(), NumberRange(min=1, max=1000, message="Enter a quantity from 1 to 1000.")])
    proration = SelectField("A change is charged", choices={
        "prorated_immediately": "now, prorated to the day", "next_billing_date": "at the next renewal"})

    def validate_max_quantity(self, field):
        if field.data and self.min_quantity.data and field.data < self.min_quantity.data:
            raise ValidationError("The maximum cannot be below the minimum.")


REASON_LABELS = dict(zip(portal_settings.REASONS, (
    "Too expensive", "Missing features", "Switched to another service", "Not used enough",
    "Customer service", "Quality too low", "Too complicated", "Another reason"), strict=True))


class PortalSettingsForm(FlaskForm):
    """Settings → Customer portal: what the business's customers may do (``core.portal_settings``)."""

    billing_history = BooleanField("Billing history and invoice downloads")
    payment_method_update = BooleanField("Payment methods: add, remove, choose which card pays")
    license_activation_removal = BooleanField("Removing a license key activation")
    profile_name = BooleanField("Name")
    profile_email = BooleanField("E-mail address")
    profile_phone = BooleanField("Phone")
    profile_billing_address = BooleanField("Billing address")
    profile_tax_id = BooleanField("Tax ID")
    cancellation_enabled = BooleanField("Customers may cancel")
    cancellation_mode = SelectField("When a cancellation takes effect", choices={
        "customer_choice": "The customer chooses: now or at the end of the period",
        "immediately": "Immediately", "at_period_end": "At the end of the period"})
    prorated_refund = BooleanField("Refund the unused part of the period on an immediate cancel")
    reasons = MultiCheckboxField("Reasons offered", choices=REASON_LABELS)
    reason_required = BooleanField("A reason is required")
    retention_discount_id = SelectField(
        "Offer to stay", choices=[], default="",
        description="A discount offered to a customer about to cancel, instead of cancelling "
                    "(once per subscription). Create it under Sales → Discounts.")
    plan_change_enabled = BooleanField("Customers may change plan")
    quantity_change_enabled = BooleanField("Customers may change the quantity (seats)")
    pause_enabled = BooleanField(
        "Customers may pause and resume their subscriptions",
        description="Paused subscriptions are not renewed; a customer may choose a date to resume.")
    products = FieldList(FormField(ProductRuleForm))

    def validate_reason_required(self, field):
        if field.data and not self.reasons.data:
            raise ValidationError("Choose at least one reason to require one.")

    @classmethod
    def of(cls, settings: dict, plans: list):
        """The form filled in from ``settings``, one rule per plan of ``plans``."""
        rules = {rule["product_id"]: rule for rule in settings["plan_change"]["products"]}
        data = {name: settings[name] for name in
                ("billing_history", "payment_method_update", "license_activation_removal")}
        data.update({f"profile_{name}": on for name, on in settings["profile_fields"].items()})
        cancellation = settings["cancellation"]
        data.update(cancellation_enabled=cancellation["enabled"], cancellation_mode=cancellation["mode"],
                    prorated_refund=cancellation["prorated_refund"], reasons=cancellation["reasons"],
                    reason_required=cancellation["reason_required"],
                    retention_discount_id=cancellation["retention_discount_id"] or "",
                    plan_change_enabled=settings["plan_change"]["enabled"],
                    quantity_change_enabled=settings["quantity_change"]["enabled"],
                    pause_enabled=settings["pause"]["enabled"])
        data["products"] = [{"product_id": plan.id,
                             "limited": rules.get(plan.id, {}).get("switch_to") is not None,
                             "switch_to": rules.get(plan.id, {}).get("switch_to") or [],
                             "min_quantity": rules.get(plan.id, {}).get("min_quantity", 1),
                             "max_quantity": rules.get(plan.id, {}).get("max_quantity"),
                             "proration": rules.get(plan.id, {}).get("proration", "prorated_immediately")}
                            for plan in plans]
        return cls(data=data) if request.method == "GET" else cls()

    def settings(self, plans: list) -> dict:
        """The settings this form says (rules only for the business's plans)."""
        known = {plan.id for plan in plans}
        rules = [{"product_id": entry.product_id.data,
                  "switch_to": ([pid for pid in entry.switch_to.data if pid in known]
                                if entry.limited.data else None),
                  "min_quantity": entry.min_quantity.data or 1,
                  "max_quantity": entry.max_quantity.data or None,
                  "proration": entry.proration.data}
                 for entry in (item.form for item in self.products)
                 if entry.product_id.data in known and (
                     entry.limited.data or (entry.min_quantity.data or 1) != 1
                     or entry.max_quantity.data or entry.proration.data != "prorated_immediately")]
        return {"billing_history": self.billing_history.data,
                "payment_method_update": self.payment_method_update.data,
                "license_activation_removal": self.license_activation_removal.data,
                "profile_fields": {name: getattr(self, f"profile_{name}").data
                                   for name in portal_settings.PROFILE_FIELDS},
                "cancellation": {"enabled": self.cancellation_enabled.data,
                                 "mode": self.cancellation_mode.data,
                                 "prorated_refund": self.prorated_refund.data,
                                 "reasons": [r for r in portal_settings.REASONS if r in self.reasons.data],
                                 "reason_required": self.reason_required.data,
                                 "retention_discount_id": self.retention_discount_id.data or None},
                "plan_change": {"enabled": self.plan_change_enabled.data, "products": rules},
                "quantity_change": {"enabled": self.quantity_change_enabled.data},
                "pause": {"enabled": self.pause_enabled.data}}


def discount_label(discount: Discount) -> str:
    """A discount as the dashboard names it: "20 % off, 3 payments"."""
    off = (f"{discount.amount / 100:g} % off" if discount.type == "percentage"
           else f"{discount.amount} (minor units) off")
    cycles = discount.subscription_cycles
    return off + (f", {cycles} payment{'s' if cycles != 1 else ''}" if cycles else ", every payment")


@bp.route("/customer-portal", methods=["GET", "POST"])
@merchant_required
def customer_portal():
    """What customers may do in the portal, in the mode shown (the API's
    ``/customer-portal/configuration`` changes the same settings). Customers see a change on
    the next page they open."""
    plans = list(_scoped(Product).where((Product.is_recurring == True)  # noqa: E712
                                        & (Product.archived == False)).order_by(Product.name))  # noqa: E712
    settings, _updated = portal_settings.load(current_user.business.id, current_user.mode)
    form = PortalSettingsForm.of(settings, plans)
    offer = settings["cancellation"]["retention_discount_id"]
    form.retention_discount_id.choices = [("", "No offer")] + [
        (d.id, f"{d.code}: {discount_label(d)}")
        for d in _scoped(Discount).order_by(Discount.code)
        if retention.offerable(d) or d.id == offer]  # a spent code is not offered anew
    names = {plan.id: plan.name for plan in plans}
    for entry in form.products:
        entry.form.switch_to.choices = {plan.id: plan.name for plan in plans
                                        if plan.id != entry.form.product_id.data}
    if form.validate_on_submit():
        portal_settings.save(current_user.business.id, current_user.mode, form.settings(plans))
        flash("Customer portal settings saved. Customers see them on the next page they open.")
        return redirect(url_for(".customer_portal"), 303)
    return render_template("dashboard/customer_portal.html", form=form, names=names), \
        400 if form.errors else 200


@bp.route("/subscription-settings", methods=["GET", "POST"])
@merchant_required
def subscription_settings():
    """The renewal reminders customers receive (the same in test and live mode); whether they
    may pause is a portal setting (``customer_portal``)."""
    business = Business.get_by_id(current_user.business.id)
    plans, days = billing.reminder_settings(business)
    form = SubscriptionSettingsForm(data={"renewal_reminders": plans, "renewal_reminder_days": days})
    if form.validate_on_submit():
        settings = {**(business.settings or {}), "renewal_reminders": form.renewal_reminders.data,
                    "renewal_reminder_days": form.renewal_reminder_days.data}
        Business.update(settings=settings).where(Business.id == business.id).execute()
        flash("Subscription settings saved.")
        return redirect(url_for(".subscription_settings"), 303)
    return render_template("dashboard/subscription_settings.html", form=form), \
        400 if form.errors else 200


# --- Secrets shown once, after a redirect ------------------------------------------------------


def _show_once(kind: str, owner: str, secret: str):
    """Keep a secret just made (a dynamic link, an API key) for the page the POST redirects to,
    so that reloading that page never makes another; like a flashed message, it lives in this
    browser's session until shown."""
    session["shown_once"] = [kind, owner, secret]


def _shown_once(kind: str, owner: str) -> str | None:
    """The secret kept by ``_show_once`` for ``kind`` and ``owner`` (a customer, a mode), once."""
    kept = session.get("shown_once")
    if not kept or kept[:2] != [kind, owner]:
        return None
    session.pop("shown_once")
    return kept[2]


# --- Scoping ---------------------------------------------------------------------------------


def _scoped(model):
    """Rows of ``model`` in the merchant's business and current mode."""
    return model.select().where((model.business == current_user.business.id)
                                & (model.mode == current_user.mode))


def _get(model, record_id):
    """One row of ``model`` in the merchant's business and mode, else 404."""
    return _scoped(model).where(model.id == record_id).first() or abort(404)
