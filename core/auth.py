"""Credentials and who is signed in.

Merchant API keys and passwords; customer sign-in tokens (magic links, API portal sessions,
e-mail changes); server-side sessions of customers and merchant users behind one flask-login
``LoginManager``; the rate limits on signing in; and the sign-in audit log. Views live in the
blueprints (``signin``, ``portal``, ``dashboard``, ``api``) and call these functions.

Secrets are random and stored only as SHA-256 digests. A raw API key is shown once; a raw
sign-in token exists only in the e-mail or API answer that delivers it: never in the database,
a log line or a queued job (the jobs below mint their token themselves).
"""

import hashlib
import hmac
import logging
import re
import secrets
import time
from datetime import timedelta
from functools import cache, wraps

from email_validator import EmailNotValidError, validate_email
from flask import abort, current_app, g, has_request_context, redirect, request, session, url_for
from flask_babel import gettext
from flask_limiter import Limiter
from flask_login import AnonymousUserMixin, LoginManager, UserMixin, current_user, login_user, logout_user
from limits import parse_many
from peewee import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from core.events import link_for, send
from core.i18n import supported
from core.models import (
    ApiKey,
    AuditLog,
    Business,
    Customer,
    MerchantSession,
    MerchantUser,
    PortalSession,
    PortalToken,
    Prepared,
    db,
    instance,
    locked,
    utcnow,
)

log = logging.getLogger("portico.auth")
audit_log = logging.getLogger("portico.audit")

SIGN_IN_PURPOSES = ("magic_link", "api_session")  # the tokens /session/<token> accepts
TOKEN_RETENTION = timedelta(days=30)  # expired tokens are kept this long, then deleted
TOUCH_INTERVAL = timedelta(minutes=1)  # how often a session's last-seen time is written


# --- Secrets, API keys, merchant passwords ---------------------------------------------------


def digest(secret: str) -> str:
    """The stored form of a high-entropy secret (token or API key)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def email_hash(email: str) -> str:
    """A keyed hash of an e-mail address: what the audit log and rate limits keep instead of
    an address that may belong to nobody we know."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


def normalize_email(address: str) -> str:
    """The form addresses are stored and compared in: validated, then lower-cased.

    Raises ``ValueError`` with a readable message for an address that cannot be one.
    """
    try:
        return validate_email((address or "").strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None


def create_api_key(business, mode: str, name: str = "") -> tuple[ApiKey, str]:
    """A new API key for ``business`` in ``mode``; returns the record and the raw key (shown once)."""
    raw = f"pk_{mode}_{secrets.token_urlsafe(32)}"
    key = ApiKey.create(business=business, mode=mode, name=name, prefix=raw[:12],
                        key_hash=digest(raw))
    return key, raw


def find_api_key(raw: str) -> ApiKey | None:
    """The live (not revoked) API key whose raw value is ``raw``."""
    return ApiKey.get_or_none((ApiKey.key_hash == digest(raw)) & ApiKey.revoked_at.is_null())


def create_merchant_user(business, email: str, password: str, name: str = "") -> MerchantUser:
    """A dashboard login for ``business``; the password is kept only as a salted hash."""
    if len(password) < 10:
        raise ValueError("the password must have at least 10 characters")
    return MerchantUser.create(business=business, email=email.strip().lower(), name=name,
                               password_hash=generate_password_hash(password))


def check_merchant_password(user: MerchantUser, password: str) -> bool:
    return check_password_hash(user.password_hash, password)


# --- Sign-in tokens -----------------------------------------------------------------------------


def issue_token(customer, purpose: str, ttl: int, data=None) -> str:
    """A single-use token for ``customer`` and ``purpose``; returns the raw token (never stored).

    The token is bound to the customer's business, mode and current e-mail address. It ends
    the customer's unused tokens of the same purpose: they now read as expired, so their page
    can still offer a new link. Tokens expired for a month are deleted.
    """
    raw = secrets.token_urlsafe(32)
    now = utcnow()
    same = (PortalToken.customer == customer) & (PortalToken.purpose == purpose)
    with db.atomic():
        PortalToken.delete().where(same & (PortalToken.expires_at < now - TOKEN_RETENTION)).execute()
        (PortalToken.update(expires_at=now)
         .where(same & PortalToken.used_at.is_null() & (PortalToken.expires_at > now))
         .execute())
        PortalToken.create(business=customer.business_id, mode=customer.mode, customer=customer,
                           purpose=purpose, token_hash=digest(raw),
                           data={**(data or {}), "issued_to": customer.email},
                           expires_at=now + timedelta(seconds=ttl))
    return raw


def sign_in_link(customer, purpose: str = "magic_link", return_url: str | None = None,
                 next: str | None = None, flow: dict | None = None) -> str:
    """A fresh sign-in URL for ``customer``, ``{BASE_URL}/session/{token}``.

    Built from the configured base URL, never the request's ``Host``. A ``magic_link`` lives
    ``MAGIC_LINK_TTL``; an ``api_session`` link, handed to the merchant's server to redirect
    the customer at once, lives ``API_SESSION_LINK_TTL`` unless visited. ``next`` is the
    portal page the customer lands on once signed in (a ``/portal/`` path). ``flow`` (checked
    by ``core.portal_flows.check``) limits the session the link starts to that one flow.
    """
    config = current_app.config
    ttl = config["API_SESSION_LINK_TTL"] if purpose == "api_session" else config["MAGIC_LINK_TTL"]
    data = {name: value for name, value in (("return_url", return_url), ("next", next),
                                            ("flow", flow)) if value}
    raw = issue_token(customer, purpose, ttl, data or None)
    return f"{config['BASE_URL']}/session/{raw}"


def find_token(raw: str) -> PortalToken | None:
    """The token whose raw value is ``raw``, usable or not (its page is branded after it)."""
    return PortalToken.get_or_none(PortalToken.token_hash == digest(raw)) if raw else None


def is_usable(token: PortalToken | None, purposes=SIGN_IN_PURPOSES) -> bool:
    """Whether ``token`` could be used now for one of ``purposes`` (a read; nothing is consumed)."""
    return (token is not None and token.purpose in purposes and token.used_at is None
            and token.expires_at > utcnow())


def _consume(raw: str, purposes) -> PortalToken | None:
    """Mark the token used if it still may be, with one conditional UPDATE, so that of any
    number of concurrent callers exactly one gets it. Call inside a transaction."""
    now = utcnow()
    hashed = digest(raw)
    claimed = (PortalToken.update(used_at=now)
               .where((PortalToken.token_hash == hashed) & PortalToken.used_at.is_null()
                      & (PortalToken.expires_at > now) & PortalToken.purpose.in_(purposes))
               .execute())
    return PortalToken.get(PortalToken.token_hash == hashed) if claimed == 1 else None


def _bound_customer(token: PortalToken) -> Customer | None:
    """The token's customer, if still the one it was issued to: same business, mode and
    e-mail address, and not blocked."""
    customer = Customer.get_or_none(Customer.id == token.customer_id)
    if (customer is None or customer.business_id != token.business_id
            or customer.mode != token.mode or customer.blocked_at is not None
            or customer.email != token.data.get("issued_to")):
        return None
    return customer


def _audit_rejection(event: str, raw: str, purposes, outcome=None, ip=None):
    """Record why a token was refused: ``outcome`` when the caller knows, else what its row
    says (unknown, wrong purpose, used, expired)."""
    token = find_token(raw)
    if outcome is None:
        outcome = ("unknown" if token is None else "wrong_purpose" if token.purpose not in purposes
                   else "used" if token.used_at is not None else "expired")
    audit(event, outcome=outcome, business=token.business_id if token else None,
          mode=token.mode if token else None, customer=token.customer_id if token else None, ip=ip)


# --- Customer sessions ----------------------------------------------------------------------------


def _start_session(customer, return_url=None, ip=None, user_agent=None, flow=None) -> PortalSession:
    return PortalSession.create(
        business=customer.business_id, mode=customer.mode, customer=customer,
        expires_at=utcnow() + timedelta(seconds=current_app.config["SESSION_TTL"]),
        return_url=return_url, flow=flow, ip=ip, user_agent=(user_agent or "")[:512] or None)


def sign_in_with_token(raw: str, ip=None, user_agent=None) -> PortalSession | None:
    """Use a sign-in link: consume the token and start the customer's session in one
    transaction. ``None`` when the link is unknown, used, expired, meant for something else,
    or no longer matches its customer."""
    with locked():
        token = _consume(raw, SIGN_IN_PURPOSES)
        customer = _bound_customer(token) if token else None
        record = (_start_session(customer, token.data.get("return_url"), ip, user_agent,
                                 token.data.get("flow")) if customer else None)
    if record:
        audit("sign_in", customer=customer, ip=ip, via=token.purpose, session=record.id)
    else:
        _audit_rejection("sign_in", raw, SIGN_IN_PURPOSES, "mismatch" if token else None, ip)
    return record


SESSION_COLUMNS = (PortalSession.id, PortalSession.created_at, PortalSession.business,
                   PortalSession.mode, PortalSession.customer, PortalSession.last_seen_at,
                   PortalSession.expires_at, PortalSession.return_url, PortalSession.flow)
CUSTOMER_COLUMNS = (Customer.id, Customer.business, Customer.mode, Customer.email, Customer.name,
                    Customer.preferred_locale)  # what every portal page uses of its customer
BUSINESS_COLUMNS = (Business.id, Business.name, Business.logo, Business.brand_color,
                    Business.default_return_url, Business.support_email)  # what portal pages show


def session_check() -> Prepared:
    """The session check's query, its SQL written once per app (``init_app``): the session,
    its customer's ``CUSTOMER_COLUMNS`` and its business's ``BUSINESS_COLUMNS``, if the session
    is usable at ``now`` and was seen after ``idle_since``."""
    return Prepared(PortalSession.select(*SESSION_COLUMNS, *CUSTOMER_COLUMNS, *BUSINESS_COLUMNS)
                    .join(Customer, on=PortalSession.customer)
                    .switch(PortalSession).join(Business, on=PortalSession.business)
                    .where((PortalSession.id == Prepared.slot("id"))
                           & PortalSession.revoked_at.is_null()
                           & (PortalSession.expires_at > Prepared.slot("now", PortalSession.expires_at))
                           & (PortalSession.last_seen_at
                              > Prepared.slot("idle_since", PortalSession.last_seen_at))
                           & Customer.blocked_at.is_null())
                    .limit(1))


def active_session(session_id: str) -> PortalSession | None:
    """The customer session ``session_id`` if it may still be used: not revoked, within its
    lifetime and idle timeout, its customer not blocked. Notes the activity.

    Its ``customer`` holds only ``CUSTOMER_COLUMNS`` and its ``business`` only
    ``BUSINESS_COLUMNS``: what needs more of the customer reads it
    (``CustomerUser.whole_customer``).
    """
    now = utcnow()
    rows = current_app.extensions["portico.session_check"].rows(
        id=session_id, now=now, idle_since=now - _idle_timeout())
    if not rows:
        return None
    row, customer_at = rows[0], len(SESSION_COLUMNS)
    business_at = customer_at + len(CUSTOMER_COLUMNS)
    record = instance(PortalSession, SESSION_COLUMNS, row[:customer_at])
    record.customer = instance(Customer, CUSTOMER_COLUMNS, row[customer_at:business_at])
    record.business = instance(Business, BUSINESS_COLUMNS, row[business_at:])
    if record.last_seen_at < now - TOUCH_INTERVAL:
        PortalSession.update(last_seen_at=now).where(PortalSession.id == record.id).execute()
    return record


def end_session(record: PortalSession, ip=None):
    """Sign one customer session out, on the server."""
    PortalSession.update(revoked_at=utcnow()).where(
        (PortalSession.id == record.id) & PortalSession.revoked_at.is_null()).execute()
    audit("sign_out", customer=record.customer, ip=ip, session=record.id)


def end_all_sessions(customer, ip=None, reason="sign_out_everywhere"):
    """End every session of ``customer`` and every sign-in link still waiting to be used."""
    _end_everything(customer)
    audit(reason, customer=customer, ip=ip)


def _end_everything(customer):
    now = utcnow()
    with db.atomic():
        PortalSession.update(revoked_at=now).where(
            (PortalSession.customer == customer) & PortalSession.revoked_at.is_null()).execute()
        PortalToken.update(expires_at=now).where(
            (PortalToken.customer == customer) & PortalToken.used_at.is_null()
            & (PortalToken.expires_at > now)).execute()


def _idle_timeout() -> timedelta:
    return timedelta(seconds=current_app.config["SESSION_IDLE_TTL"])


# --- Sending links (jobs) ----------------------------------------------------------------------
# Jobs take ids and addresses, never a token: each mints its own and hands it straight to
# the notifiers, so the raw value never reaches Redis.


def request_sign_in_link(business_id: str, mode: str, email: str, ip=None):
    """Job behind the static link form: e-mail a sign-in link if ``email`` belongs to a
    customer of the business in ``mode``, and record the request either way.

    The form enqueues it for every address, known or not, so its answer and timing tell
    nothing; only here is the customer looked up.
    """
    customer = Customer.get_or_none((Customer.business == business_id) & (Customer.mode == mode)
                                    & (Customer.email == email))
    if customer is None or customer.blocked_at is not None:
        audit("sign_in_link.requested", outcome="blocked" if customer else "unknown_email",
              business=business_id, mode=mode, ip=ip, email_hash=email_hash(email))
        return
    audit("sign_in_link.requested", customer=customer, ip=ip)
    send(customer, "customer.sign_in_link", link=sign_in_link(customer))


def send_sign_in_link(customer_id: str, return_url: str | None = None, requested_by: str | None = None,
                      next: str | None = None):
    """Job: e-mail a fresh magic link to a customer (dashboard "Send by e-mail", API
    ``send_email``, the portal's "sign in again"); ``requested_by`` names the merchant user,
    API key or portal for the audit log; ``next`` is the portal page to land on."""
    customer = Customer.get_or_none(Customer.id == customer_id)
    if customer is None or customer.blocked_at is not None:
        return
    audit("sign_in_link.sent", customer=customer, by=requested_by)
    send(customer, "customer.sign_in_link",
            link=sign_in_link(customer, return_url=return_url, next=next))


@link_for("payment.failed")
def payment_method_link(event) -> str | None:
    """A fresh sign-in link that lands on updating the payment method of the subscription a
    failed payment belongs to (minted only when a notifier shows it)."""
    subscription_id = event.data.get("subscription_id")
    customer = Customer.get_or_none(Customer.id == event.customer_id)
    if not subscription_id or customer is None or customer.blocked_at is not None:
        return None
    path = current_app.url_map.bind("").build("portal.payment_method",
                                              {"subscription_id": subscription_id})
    return sign_in_link(customer, next=path)


@link_for("subscription.renewal_reminder")
@link_for("subscription.trial_ending")
def subscription_link(event) -> str | None:
    """A fresh sign-in link that lands on the subscription a renewal reminder (or the notice
    of a trial's end) is about."""
    customer = Customer.get_or_none(Customer.id == event.customer_id)
    if customer is None or customer.blocked_at is not None:
        return None
    path = current_app.url_map.bind("").build("portal.subscription",
                                              {"subscription_id": event.data["subscription_id"]})
    return sign_in_link(customer, next=path)


def allow_sign_in_email(email: str) -> bool:
    """Count one sign-in e-mail to ``email`` against ``SIGN_IN_LIMIT_PER_EMAIL``; ``False``
    when the address is over it. Counted per address (hashed), known or not, in the limiter's
    storage, so the limit holds across web processes."""
    strategy = limiter.limiter
    key = email_hash(email)
    return all(strategy.hit(item, "sign-in-email", key)
               for item in parse_many(current_app.config["SIGN_IN_LIMIT_PER_EMAIL"]))


# --- E-mail change --------------------------------------------------------------------------------


class ReauthenticationRequired(Exception):
    """The session is older than ``EMAIL_CHANGE_FRESHNESS``: the customer must first sign in
    again with a link sent to the current address."""


def request_email_change(record: PortalSession, new_email: str, ip=None):
    """Ask to move a signed-in customer to ``new_email``: a confirmation link goes to the new
    address (by a job) and nothing changes until it is used. The caller answers "check your
    inbox" whatever happens next, so an address taken by another customer is never revealed.

    Raises ``ReauthenticationRequired`` for a session that is not fresh, ``ValueError`` for
    an address that cannot be one; answers 429 over the e-mail limits (``limit_emails``).
    """
    from core.jobs import enqueue

    fresh_since = utcnow() - timedelta(seconds=current_app.config["EMAIL_CHANGE_FRESHNESS"])
    if record.created_at < fresh_since:
        raise ReauthenticationRequired
    new_email = normalize_email(new_email)
    limit_emails(record.customer_id, ip)
    enqueue(send_email_change_link, record.customer_id, new_email, ip)


def send_email_change_link(customer_id: str, new_email: str, ip=None):
    """Job: e-mail a confirmation link to the new address, unless another customer of the
    same business and mode already uses it (then nothing is sent, to anyone)."""
    customer = Customer.get_or_none(Customer.id == customer_id)
    if customer is None or customer.blocked_at is not None:
        return
    if _email_taken(customer, new_email):
        audit("email_change.requested", outcome="address_taken", customer=customer, ip=ip)
        return
    audit("email_change.requested", customer=customer, ip=ip)
    raw = issue_token(customer, "email_change", current_app.config["MAGIC_LINK_TTL"],
                      {"new_email": new_email})
    send(customer, "customer.email_change", data={"email": new_email},
            link=f"{current_app.config['BASE_URL']}/email/confirm/{raw}")


def confirm_email_change(raw: str, ip=None, user_agent=None) -> PortalSession | None:
    """Use an e-mail change link: the address changes, every other session and sign-in link of
    the customer ends, and a new session starts for this browser; a notice goes to the old
    address. ``None`` when the link cannot be used or the address was taken meanwhile."""
    from core.jobs import enqueue

    record = outcome = None
    try:
        with locked():
            token = _consume(raw, ("email_change",))
            customer = _bound_customer(token) if token else None
            new_email = token.data.get("new_email") if token else None
            if token and customer is None:
                outcome = "mismatch"
            elif customer and (not new_email or _email_taken(customer, new_email)):
                outcome = "address_taken"
            elif customer:
                old_email = customer.email
                Customer.update(email=new_email).where(Customer.id == customer.id).execute()
                customer.email = new_email
                _end_everything(customer)
                record = _start_session(customer, None, ip, user_agent)
    except IntegrityError:  # a concurrent change took the address first
        outcome = "address_taken"
    if record is None:
        _audit_rejection("email_change", raw, ("email_change",), outcome, ip)
        return None
    audit("email_change", customer=customer, ip=ip, session=record.id)
    enqueue(notify_email_changed, customer.id, old_email)
    return record


def notify_email_changed(customer_id: str, old_email: str):
    """Job: tell the old address that the account now uses another one (no link, no secret)."""
    customer = Customer.get_or_none(Customer.id == customer_id)
    if customer is not None:
        send(customer, "customer.email_changed", data={"email": old_email})


def _email_taken(customer, email: str) -> bool:
    return (Customer.select().where((Customer.business == customer.business_id)
                                    & (Customer.mode == customer.mode) & (Customer.email == email)
                                    & (Customer.id != customer.id)).exists())


# --- Merchant sessions ------------------------------------------------------------------------------

@cache
def _dummy_password_hash() -> str:
    """A hash to check unknown e-mails against, so they cost what a wrong password costs."""
    return generate_password_hash(secrets.token_urlsafe(16))


def sign_in_merchant(email: str, password: str, ip=None, user_agent=None) -> MerchantSession | None:
    """Check a dashboard login and start a session (in test mode). An unknown e-mail costs
    the same password check as a wrong password, and gets the same ``None``."""
    user = MerchantUser.get_or_none(MerchantUser.email == (email or "").strip().lower())
    valid = check_password_hash(user.password_hash if user else _dummy_password_hash(), password or "")
    if not (valid and user):
        audit("merchant.sign_in", outcome="failed", business=user.business_id if user else None,
              ip=ip, email_hash=email_hash(email or ""))
        return None
    now = utcnow()
    with db.atomic():
        MerchantUser.update(last_login_at=now).where(MerchantUser.id == user.id).execute()
        record = MerchantSession.create(
            user=user, expires_at=now + timedelta(seconds=current_app.config["SESSION_TTL"]),
            ip=ip, user_agent=(user_agent or "")[:512] or None)
    audit("merchant.sign_in", business=user.business_id, ip=ip, user=user.id, session=record.id)
    return record


def active_merchant_session(session_id: str) -> MerchantSession | None:
    """The dashboard session ``session_id`` if it may still be used; notes the activity."""
    now = utcnow()
    record = (MerchantSession.select(MerchantSession, MerchantUser, Business)
              .join(MerchantUser).join(Business)
              .where((MerchantSession.id == session_id) & MerchantSession.revoked_at.is_null()
                     & (MerchantSession.expires_at > now)
                     & (MerchantSession.last_seen_at > now - _idle_timeout()))
              .first())
    if record and record.last_seen_at < now - TOUCH_INTERVAL:
        MerchantSession.update(last_seen_at=now).where(MerchantSession.id == record.id).execute()
    return record


def end_merchant_session(record: MerchantSession, ip=None):
    """Sign a dashboard session out, on the server."""
    MerchantSession.update(revoked_at=utcnow()).where(MerchantSession.id == record.id).execute()
    audit("merchant.sign_out", business=record.user.business_id, ip=ip, user=record.user_id,
          session=record.id)


def switch_mode(record: MerchantSession, mode: str):
    """Show the dashboard session ``test`` or ``live`` data from now on."""
    if mode not in ("test", "live"):
        raise ValueError(f"unknown mode {mode!r}")
    MerchantSession.update(mode=mode).where(MerchantSession.id == record.id).execute()
    record.mode = mode


# --- Who is signed in (flask-login) ----------------------------------------------------------------


class CustomerUser(UserMixin):
    """A signed-in customer: their portal session, its customer and business, as the session
    check read them (``customer`` holds ``CUSTOMER_COLUMNS`` until ``whole_customer``)."""

    is_customer, is_merchant = True, False

    def __init__(self, record: PortalSession):
        self.session, self.customer, self.business = record, record.customer, record.business
        self._whole = False

    def whole_customer(self) -> Customer:
        """The customer's whole record (address, tax id, metadata…), read from the database on
        the first call of the request and kept as ``customer``: for what shows or changes more
        than ``CUSTOMER_COLUMNS``, or hands the customer to billing or a payment provider."""
        if not self._whole:
            self.customer, self._whole = Customer.get_by_id(self.customer.id), True
        return self.customer

    def get_id(self):
        return self.session.id


class DashboardUser(UserMixin):
    """A signed-in merchant user: their dashboard session, business and current mode."""

    is_customer, is_merchant = False, True

    def __init__(self, record: MerchantSession):
        self.session, self.user, self.business = record, record.user, record.user.business

    @property
    def mode(self) -> str:
        return self.session.mode

    def get_id(self):
        return self.session.id


class Anonymous(AnonymousUserMixin):
    is_customer = is_merchant = False


login_manager = LoginManager()
login_manager.anonymous_user = Anonymous
login_manager.session_protection = None  # the server-side session records decide


@login_manager.user_loader
def _load_user(user_id: str):
    """The user behind a session cookie, checked against its session record on every request."""
    if user_id.startswith("ses_"):
        record = active_session(user_id)
        return CustomerUser(record) if record else None
    if user_id.startswith("mse_"):
        record = active_merchant_session(user_id)
        return DashboardUser(record) if record else None
    return None


def login(record: PortalSession | MerchantSession):
    """Sign this browser in as the owner of ``record``, in a Flask session emptied first:
    nothing set before sign-in (a planted value, an old CSRF token) survives it."""
    _empty_session()
    if isinstance(record, PortalSession):
        login_user(CustomerUser(record), remember=False)
        session["portal"] = [record.business_id, record.mode]  # where to sign in again
        locale = supported(record.customer.preferred_locale)
        if locale:  # … and in which language, once this session has ended
            session["locale"] = locale
    else:
        login_user(DashboardUser(record), remember=False)


def sign_out(everywhere: bool = False):
    """End the current user's session on the server (with ``everywhere``, every session of
    the customer), then empty this browser's session."""
    user = current_user._get_current_object()
    ip = client_ip()
    if user.is_customer:
        if everywhere:
            end_all_sessions(user.customer, ip)
        else:
            end_session(user.session, ip)
    elif user.is_merchant:
        end_merchant_session(user.session, ip)
    logout_user()
    _empty_session()


def _empty_session():
    session.clear()
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)  # the old session's


def _forget_previous_request():
    """Load the user and CSRF token afresh for each request, even when requests share an
    application context (as they do in tests), so every request is checked on its own."""
    g.pop("_login_user", None)
    g.pop(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"), None)


def customer_required(view):
    """Let signed-in customers through; send anyone else to their business's sign-in page."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_customer:
            return redirect(sign_in_page())
        return view(*args, **kwargs)

    return wrapper


def merchant_required(view):
    """Let signed-in merchant users through; send anyone else to the dashboard sign-in."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_merchant:
            target = request.full_path.rstrip("?") if request.method == "GET" else None
            return redirect(url_for("dashboard.login", next=target))
        return view(*args, **kwargs)

    return wrapper


def sign_in_page() -> str:
    """Where a signed-out customer gets a new link: the static link of the business they last
    signed in to from this browser, else a page explaining how to get one."""
    business_id, mode = session.get("portal") or (None, None)
    if business_id:
        return url_for("signin.static_link", business_id=business_id, mode=mode)
    return url_for("signin.signed_out")


# --- Rate limits ----------------------------------------------------------------------------------


def client_ip() -> str:
    """The client's address (``PROXY_HOPS`` says how many proxies' forwarded headers count)."""
    return (request.remote_addr if has_request_context() else None) or "unknown"


limiter = Limiter(key_func=client_ip)


def limit_emails(customer_id: str, ip: str | None):
    """Count one e-mail asked for to customer ``customer_id`` (an e-mail change, a new sign-in
    link, an invite) against ``EMAIL_LIMIT_PER_CUSTOMER`` and, from ``ip``, against
    ``EMAIL_LIMIT_PER_IP``; over either, nothing is counted and a 429 page says to wait.

    Call it just before queueing the e-mail. ``ip`` is ``None`` for the API, whose caller is
    the merchant's server: its key has its own rate limit.
    """
    config = current_app.config
    counters = [(item, "email-per-customer", customer_id)
                for item in parse_many(config["EMAIL_LIMIT_PER_CUSTOMER"])]
    if ip is not None:
        counters += [(item, "email-per-ip", ip) for item in parse_many(config["EMAIL_LIMIT_PER_IP"])]
    strategy = limiter.limiter
    over = [counter for counter in counters if not strategy.test(*counter)]
    if over:
        _wait_until_reset(over)
        abort(429, gettext("Too many e-mails were asked for. Please wait a while, then try again."))
    for counter in counters:
        strategy.hit(*counter)


def _wait_until_reset(counters) -> int:
    """Note (for ``Retry-After``) and return the seconds until every counter is under its limit."""
    strategy = limiter.limiter
    reset = max(strategy.get_window_stats(*counter).reset_time for counter in counters)
    g.retry_after = max(1, int(reset - time.time()))
    return g.retry_after


def retry_after() -> int | None:
    """Seconds until the limit that refused the current request lets it through again."""
    limit = limiter.current_limit
    if limit:
        return max(1, int(limit.reset_at - time.time()))
    return g.get("retry_after")


def failure_limited(scope: str, key: str, limits: str) -> int | None:
    """Count one failure (an invalid sign-in link, an unknown API key) of ``key`` (an IP
    address) against ``limits`` (``"30 per hour"``); the seconds to wait when it is over them,
    else ``None``.

    Only failures count and only failures are refused: people sharing an address (an office
    behind one NAT) are never locked out of their own valid links or keys by someone else's
    bad ones, while guessing stops at the limit.
    """
    over = [(item, scope, key) for item in parse_many(limits)
            if not limiter.limiter.hit(item, scope, key)]
    return _wait_until_reset(over) if over else None


# --- Audit log --------------------------------------------------------------------------------------


def audit(event: str, outcome: str = "ok", *, customer=None, business=None, mode=None, ip=None,
          **detail):
    """Record a sign-in event: an ``AuditLog`` row and one ``portico.audit`` log line.

    Callers pass ids, hashes and outcomes only: never a token, cookie, password or key.
    """
    if isinstance(customer, Customer):
        business, mode, customer = customer.business_id, customer.mode, customer.id
    if ip is None and has_request_context():
        ip = client_ip()
    detail = {name: value for name, value in detail.items() if value is not None}
    AuditLog.create(business=business, mode=mode, customer=customer, event=event,
                    outcome=outcome, ip=ip, detail=detail)
    fields = {"event": event, "outcome": outcome, "business": business, "mode": mode,
              "customer": customer, "ip": ip, **detail}
    audit_log.info(" ".join(f"{name}={value}" for name, value in fields.items() if value))


# --- Application set-up -----------------------------------------------------------------------------

NO_STORE_BLUEPRINTS = {"signin", "portal", "dashboard", "api"}


class RedactTokens(logging.Filter):
    """Blank out tokens in log lines, such as the development server's access log: sign-in
    and e-mail change links, and the signed ``state`` of a card form."""

    TOKEN_PATH = re.compile(r"(/session/|/email/confirm/|[?&]state=)[A-Za-z0-9_.%-]+")

    @classmethod
    def redact(cls, text: str) -> str:
        """``text`` with the token of any sign-in link path blanked out."""
        return cls.TOKEN_PATH.sub(r"\1[redacted]", text)

    def filter(self, record):
        message = record.getMessage()
        if self.TOKEN_PATH.search(message):
            record.msg, record.args = self.redact(message), ()
        return True


def _no_store(response):
    """Pages about a signed-in user or a token are never cached, by the browser or a proxy."""
    if request.endpoint not in ("static", "web.brand_css") and (
            request.blueprint in NO_STORE_BLUEPRINTS or "_user_id" in session):
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app):
    """Sign-in for ``app``: the login manager and the session check's SQL, rate limits (in
    Redis when ``REDIS_URL`` is set, so every web process counts together), ``no-store`` on
    private pages, and tokens kept out of the development server's access log."""
    login_manager.init_app(app)
    app.extensions["portico.session_check"] = session_check()
    app.before_request(_forget_previous_request)
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"] or "memory://")
    limiter.init_app(app)
    app.after_request(_no_store)
    werkzeug_log = logging.getLogger("werkzeug")
    if not any(isinstance(f, RedactTokens) for f in werkzeug_log.filters):
        werkzeug_log.addFilter(RedactTokens())
