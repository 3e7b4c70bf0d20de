"""Signing customers in and out: the static link form, magic links (a page, then a POST),
the one page for links that can no longer be used, e-mail change confirmation, sign-out.

Token pages never sign anyone in on GET or HEAD, nor by script: mail scanners open links, and
some run the page's scripts, but none presses a button. The person presses "Continue" once,
which POSTs. Token pages send ``Referrer-Policy: no-referrer`` and, like every page here,
``Cache-Control: no-store``; after the POST the browser lands on a URL without the token.
"""

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
from flask_babel import lazy_gettext, refresh
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField
from wtforms.validators import Email, InputRequired, Length

from core import auth, portal_flows
from core.auth import client_ip, limiter
from core.i18n import current_locale, supported
from core.jobs import enqueue
from core.models import Business
from core.text import local_path

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
        session["link_sent_to"] = email
        return redirect(url_for(".link_sent", business_id=business.id, mode=mode), 303)
    status = 400 if form.errors else 200
    return render_template("signin/static_link.html", business=business, mode=mode, form=form), status


@bp.get("/login/<business_id>/sent", defaults={"mode": "live"})
@bp.get("/test/login/<business_id>/sent", defaults={"mode": "test"})
def link_sent(business_id, mode):
    """"Check your inbox", for the address last typed in this browser (reloading it sends
    nothing)."""
    business = Business.get_or_none(Business.id == business_id) or abort(404)
    email = session.get("link_sent_to")
    if not email:
        return redirect(url_for(".static_link", business_id=business.id, mode=mode), 303)
    return render_template("signin/link_sent.html", business=business, mode=mode, email=email,
                           valid_for=duration(current_app.config["MAGIC_LINK_TTL"]))


@bp.get("/session/<token>")
def magic_link(token):
    """A sign-in link's page: a "Continue" form that POSTs, sent automatically by script."""
    row = auth.find_token(token)
    if not auth.is_usable(row):
        return link_unusable(row)
    return token_page(render_template("signin/continue.html", business=row.business, mode=row.mode))


@bp.post("/session/<token>")
def use_magic_link(token):
    """Use the link: one session, however many requests race for it; then the portal."""
    record = auth.sign_in_with_token(token, client_ip(), request.user_agent.string)
    if record is None:
        return link_unusable(auth.find_token(token))
    locale = session.get("locale")  # a language chosen before signing in stays chosen
    auth.login(record)
    if locale:
        session["locale"] = locale
    flow = record.flow
    landing = portal_flows.start(flow) if flow else portal_path(auth.find_token(token).data.get("next"))
    return token_page(redirect(landing or url_for("portal.home"), 303))


@bp.get("/email/confirm/<token>")
def email_change_link(token):
    """An e-mail change link's page: confirming is a POST, like signing in."""
    row = auth.find_token(token)
    if not auth.is_usable(row, ("email_change",)):
        return link_unusable(row)
    return token_page(render_template("signin/confirm_email.html", business=row.business,
                                      mode=row.mode, new_email=row.data.get("new_email")))


@bp.post("/email/confirm/<token>")
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
    """Where a browser lands once signed out (``?business=&mode=&lang=&everywhere=1``, from
    the sign-out), or without a session (the business it last signed in to, when it knows).

    With a business, the page wears its brand, speaks the customer's language and has a
    button to its sign-in page; and this browser remembers both (only they: the sign-out has
    emptied everything else), so that ``/portal/`` later leads to that sign-in page too.
    """
    business_id, mode = ((request.args.get("business"), request.args.get("mode"))
                         if "business" in request.args else session.get("portal") or ("", None))
    business = Business.get_or_none(Business.id == business_id)
    mode = "test" if mode == "test" else "live"
    locale = supported(request.args.get("lang"))
    if locale and not session.get("locale"):  # a choice made on this page since wins
        session["locale"] = locale
        refresh()
    if business:
        session["portal"] = [business.id, mode]
    return render_template("signin/signed_out.html", business=business, mode=mode,
                           everywhere=request.args.get("everywhere") == "1")


def _signed_out(everywhere):
    """Sign out, then (POST/redirect/GET) the signed-out page of the customer's business, in
    their language."""
    user = current_user._get_current_object()
    where = {}
    if user.is_customer:
        where = {"business": user.business.id, "mode": user.session.mode,
                 "lang": current_locale(), "everywhere": "1" if everywhere else None}
    auth.sign_out(everywhere=everywhere)
    response = redirect(url_for(".signed_out", **where), 303)
    response.headers["Clear-Site-Data"] = CLEAR_SITE_DATA
    return response


def portal_path(path) -> str | None:
    """``path`` if it is a plain relative path inside the portal (where a sign-in link may
    lead), else ``None``: never another site, another area or a path that climbs out."""
    return local_path(path, within="/portal/")


def link_unusable(row):
    """The one answer for a link that is unknown, used, expired or meant for something else
    (410): it offers a new link from the business the link was for, when that is known.

    Such links opened from one address count together, whatever the page (guessing tokens):
    over ``TOKEN_FAILURE_LIMIT_PER_IP`` the answer is 429 instead, for invalid links only.
    """
    if auth.failure_limited("sign-in-token", client_ip(),
                            current_app.config["TOKEN_FAILURE_LIMIT_PER_IP"]):
        abort(429, _("Too many invalid sign-in links were opened from your network. "
                     "Please wait a while, then ask for a new link."))
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
