"""Signing customers in and out: the static link form, magic links (a page, then a POST),
the one page for links that can no longer be used, e-mail change confirmation, sign-out.

Token pages never sign anyone in on GET or HEAD (mail scanners open links): they continue with
a POST, automatically when JavaScript runs. They send ``Referrer-Policy: no-referrer`` and,
like every page here, ``Cache-Control: no-store``; after the POST the browser lands on a URL
without the token.
"""

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField
from wtforms.validators import Email, InputRequired, Length

from core import auth
from core.auth import client_ip, limiter
from core.jobs import enqueue
from core.models import Business

bp = Blueprint("signin", __name__)

CLEAR_SITE_DATA = '"cache", "cookies", "storage"'


class EmailForm(FlaskForm):
    """The e-mail address a customer used for their purchase."""

    email = EmailField(
        lazy_gettext("E-mail address"), filters=[lambda value: value.strip() if value else value],
        validators=[InputRequired(lazy_gettext("Enter the e-mail address you used for your purchase.")),
                    Length(max=254, message=lazy_gettext("This address is too long.")),
                    Email(lazy_gettext("Enter a valid e-mail address, such as name@example.com."))])


def _ip_limit():
    return current_app.config["SIGN_IN_LIMIT_PER_IP"]


def _token_failure_limit():
    return current_app.config["TOKEN_FAILURE_LIMIT_PER_IP"]


# Invalid links opened from one address count together, whatever the page (guessing tokens).
token_failures = limiter.shared_limit(
    _token_failure_limit, scope="sign-in-token", deduct_when=lambda response: response.status_code == 410,
    error_message=lambda: _("Too many invalid sign-in links were opened from your network. "
                                  "Please wait a while, then ask for a new link."))


@bp.route("/login/<business_id>", methods=["GET", "POST"], defaults={"mode": "live"})
@bp.route("/test/login/<business_id>", methods=["GET", "POST"], defaults={"mode": "test"})
@limiter.limit(_ip_limit, methods=["POST"],
               error_message=lambda: _("Too many sign-in links were requested from your "
                                             "network. Please wait a while, then try again."))
def static_link(business_id, mode):
    """A business's never-expiring sign-in page: the customer types their e-mail address and,
    if it has purchases here, receives a sign-in link.

    Every valid address gets the same answer, whether it is known, unknown, another business's
    customer's or over its own limit, and a job is queued for each (the job looks the customer
    up), so neither the page nor its timing tells which addresses exist. Limits: an address
    over ``SIGN_IN_LIMIT_PER_EMAIL`` silently gets nothing (saying so would reveal it); an IP
    over ``SIGN_IN_LIMIT_PER_IP`` gets a 429 page saying to wait, which tells nothing about
    any address. (Without Redis, jobs run inside the request, and the timing is not uniform.)
    """
    business = Business.get_or_none(Business.id == business_id) or abort(404)
    form = EmailForm()
    if form.validate_on_submit():
        email = auth.normalize_email(form.email.data)
        if auth.allow_sign_in_email(email):
            enqueue(auth.request_sign_in_link, business.id, mode, email, client_ip())
        else:
            auth.audit("sign_in_link.requested", outcome="rate_limited", business=business.id,
                       mode=mode, email_hash=auth.email_hash(email))
        return render_template("signin/link_sent.html", business=business, mode=mode, email=email,
                               valid_for=duration(current_app.config["MAGIC_LINK_TTL"]))
    status = 400 if form.errors else 200
    return render_template("signin/static_link.html", business=business, mode=mode, form=form), status


@bp.get("/session/<token>")
@token_failures
def magic_link(token):
    """A sign-in link's page: a "Continue" form that POSTs, sent automatically by script."""
    row = auth.find_token(token)
    if not auth.is_usable(row):
        return link_unusable(row)
    return token_page(render_template("signin/continue.html", business=row.business, mode=row.mode))


@bp.post("/session/<token>")
@token_failures
def use_magic_link(token):
    """Use the link: one session, however many requests race for it; then the portal."""
    record = auth.sign_in_with_token(token, client_ip(), request.user_agent.string)
    if record is None:
        return link_unusable(auth.find_token(token))
    locale = session.get("locale")  # a language chosen before signing in stays chosen
    auth.login(record)
    if locale:
        session["locale"] = locale
    landing = portal_path(auth.find_token(token).data.get("next"))
    return token_page(redirect(landing or url_for("portal.home"), 303))


@bp.get("/email/confirm/<token>")
@token_failures
def email_change_link(token):
    """An e-mail change link's page: confirming is a POST, like signing in."""
    row = auth.find_token(token)
    if not auth.is_usable(row, ("email_change",)):
        return link_unusable(row)
    return token_page(render_template("signin/confirm_email.html", business=row.business,
                                      mode=row.mode, new_email=row.data.get("new_email")))


@bp.post("/email/confirm/<token>")
@token_failures
def confirm_email_change(token):
    """Make the change: every other session and link ends, and this browser is signed in anew."""
    record = auth.confirm_email_change(token, client_ip(), request.user_agent.string)
    if record is None:
        return link_unusable(auth.find_token(token))
    auth.login(record)
    flash(_("Your e-mail address is now %(email)s.", email=record.customer.email))
    return token_page(redirect(url_for("portal.home"), 303))


@bp.post("/logout")
def logout():
    """Sign out this browser; its session ends on the server."""
    return _signed_out(everywhere=False)


@bp.post("/logout/everywhere")
def logout_everywhere():
    """Sign out every session of the customer, on every device, and cancel unused links."""
    return _signed_out(everywhere=True)


@bp.get("/signed-out")
def signed_out():
    """Where a browser without a session lands when nothing says which business it was for."""
    return render_template("signin/signed_out.html", business=None, mode=None)


def _signed_out(everywhere):
    user = current_user._get_current_object()
    business = user.business if user.is_customer else None
    mode = user.session.mode if user.is_customer else None
    auth.sign_out(everywhere=everywhere)
    response = make_response(render_template("signin/signed_out.html", business=business,
                                             mode=mode, everywhere=everywhere))
    response.headers["Clear-Site-Data"] = CLEAR_SITE_DATA
    return response


def portal_path(path) -> str | None:
    """``path`` if it is a plain relative path inside the portal (where a sign-in link may
    lead), else ``None``: never another site, another area or a path that climbs out."""
    if not isinstance(path, str) or not path.startswith("/portal/"):
        return None
    parts = urlsplit(path)
    if (parts.scheme or parts.netloc or "\\" in path or ".." in parts.path.split("/")
            or any(ord(char) < 33 for char in path)):
        return None
    return path


def link_unusable(row):
    """The one answer for a link that is unknown, used, expired or meant for something else
    (410): it offers a new link from the business the link was for, when that is known."""
    form = EmailForm() if row else None
    page = render_template("signin/link_unusable.html", business=row.business if row else None,
                           mode=row.mode if row else None, form=form)
    return token_page((page, 410))


def token_page(page):
    """Keep the token out of the Referer of anything the page loads or links to."""
    response = make_response(page)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def duration(seconds: int) -> str:
    """``86400`` → ``24 hours``; ``600`` → ``10 minutes`` (in the page's language)."""
    from flask_babel import ngettext

    if seconds % 3600 == 0:
        return ngettext("%(num)d hour", "%(num)d hours", seconds // 3600)
    return ngettext("%(num)d minute", "%(num)d minutes", seconds // 60)
