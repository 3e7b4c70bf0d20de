"""The built-in e-mail notifier: tells customers what happened, by SMTP or into a local outbox.

A notification is mailed when ``templates/email/<type>.txt`` and ``.html`` exist (the type
with dots turned into underscores, e.g. ``payment_succeeded``); every other type is ignored.
The first line of the ``.txt`` template is the subject, the rest is the plain-text body; the
``.html`` template extends ``email/layout.html``. Templates see ``business``, ``customer``,
``recipient``, ``data`` (the event), ``secrets`` (e.g. ``secrets.link``, never stored),
``portal_url``, ``invoice`` (when its PDF is attached) and the ``money`` and ``day`` filters;
they are rendered in the customer's language (``_()`` is Flask-Babel's gettext).

With ``SMTP_HOST`` set, messages go out by SMTP; a transient failure raises so the delivery
job is retried, a permanent refusal is logged and recorded (an ``AuditLog`` row
``email.failed`` with its reason). Addresses travel as the wire needs them (RFC 6531/5890):
the domain in IDNA (``kim@xn--bcher-kva.de``, as ``email-validator`` gives it) while people
see it in Unicode; a non-ASCII local part needs a server offering SMTPUTF8, and without one
the message is recorded as failed, never as sent. Without it, they are appended to the mbox file
``MAIL_OUTBOX`` and summed up on the ``portico.mail`` log, sign-in link included, so a
developer running the demo can follow the links.
"""

import base64
import binascii
import importlib
import logging
import mailbox
import re
import smtplib
import ssl
from contextlib import contextmanager
from email import message_from_binary_file, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from pathlib import Path

from email_validator import EmailNotValidError, validate_email
from flask_babel import force_locale, get_locale
from jinja2 import TemplateNotFound

from core.hookspecs import hookimpl
from core.i18n import customer_locale, html_lang, text_direction
from core.models import AuditLog, Business, Customer, Invoice, utcnow
from core.signin import duration

log = logging.getLogger("portico.mail")

HEX_COLOR = re.compile(r"#[0-9a-fA-F]{3,8}")
DEFAULT_COLOR = "#4f46e5"


@hookimpl
def notify(notification, app):
    """E-mail the customer about ``notification`` when its type has templates; ignore it otherwise.

    The e-mail is written in the customer's language (``core.i18n.customer_locale``). What
    the customer already saw on screen (``told_on_screen``) is not e-mailed again."""
    if notification.told_on_screen:
        return None
    env = _environment(app)
    name = notification.type.replace(".", "_")
    try:
        templates = env.get_template(f"email/{name}.txt"), env.get_template(f"email/{name}.html")
    except TemplateNotFound:
        return None
    business = Business.get_or_none(Business.id == notification.business_id)
    customer = Customer.get_or_none(
        (Customer.id == notification.customer_id) & (Customer.business == notification.business_id)
        & (Customer.mode == notification.mode)) if notification.customer_id else None
    recipient = notification.data.get("email") or (customer.email if customer else None)
    if customer is not None and customer.erased_at is not None:
        return None  # nothing is sent to a customer whose personal data was erased
    if business is None or not recipient:
        log.warning("%s %s has no recipient; no e-mail sent", notification.type, notification.id)
        return None
    with force_locale(customer_locale(customer)):
        message = _compose(notification, app, templates, business, customer, recipient)
    if app.config["SMTP_HOST"]:
        failure = _send(message, app.config)
        if failure:
            log.warning("mail to %s not sent: %s", message["To"], failure)
            AuditLog.create(business=business.id, mode=notification.mode,
                            customer=customer.id if customer else None, event="email.failed",
                            outcome="failed", detail={"type": notification.type, "reason": failure})
    else:
        _append_to_outbox(message, app.config["MAIL_OUTBOX"])
        link = notification.secrets.get("link") if app.config["ENV"] != "production" else None
        log.info("mail to %s: %s%s", recipient, message["Subject"],
                 f" | link: {link}" if link else "")
    return None


def outbox_messages(app) -> list[EmailMessage]:
    """The messages in the mbox outbox of ``app``, oldest first (for the demo and tests)."""
    path = Path(app.config["MAIL_OUTBOX"])
    if not path.exists():
        return []
    box = mailbox.mbox(path, factory=lambda file: message_from_binary_file(
        file, policy=policy.default), create=False)
    try:
        return list(box)
    finally:
        box.close()


def wire_address(name: str, address: str) -> Address:
    """The mailbox ``name <address>`` as it travels in SMTP commands and headers: the domain in
    IDNA ASCII (``kim@bücher.de`` → ``kim@xn--bcher-kva.de``), the local part as it is
    (RFC 6531: a non-ASCII one needs SMTPUTF8)."""
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return Address(name, addr_spec=address)
    return Address(name, username=valid.local_part, domain=valid.ascii_domain)


def _environment(app):
    """The app's Jinja environment (with its ``money`` and ``day`` filters, which follow the
    locale), built once per app."""
    env = app.extensions.get("portico.mail")
    if env is None:
        env = app.jinja_env.overlay()
        app.extensions["portico.mail"] = env
    return env


def _compose(notification, app, templates, business, customer, recipient) -> EmailMessage:
    """Render the templates and build the multipart/alternative message, with its inline logo
    and, for a receipt, the invoice PDF."""
    sender = parseaddr(app.config["MAIL_FROM"])[1]
    domain = sender.rpartition("@")[2] or None
    logo = _data_uri_image(business.logo)
    logo_cid = make_msgid(domain=domain) if logo else None
    invoice, pdf = _invoice_pdf(notification)
    login = "/test/login/" if notification.mode == "test" else "/login/"
    context = {
        "notification": notification, "data": notification.data, "secrets": notification.secrets,
        "business": business, "customer": customer, "recipient": recipient, "invoice": invoice,
        "brand_color": business.brand_color if HEX_COLOR.fullmatch(business.brand_color or "")
        else DEFAULT_COLOR,
        "logo_src": f"cid:{logo_cid[1:-1]}" if logo else None,
        "portal_url": f"{app.config['BASE_URL']}{login}{business.id}",
        "link_valid_for": duration(app.config["MAGIC_LINK_TTL"]),
        "lang": html_lang(str(get_locale() or "en")), "dir": text_direction(str(get_locale() or "en")),
    }
    text_template, html_template = templates
    subject, _, text = text_template.render(context).strip().partition("\n")
    subject = " ".join(subject.split())
    html = html_template.render(context, subject=subject)

    message = EmailMessage()
    message["From"] = wire_address(business.name, sender)
    message["To"] = wire_address(customer.name if customer else "", recipient)
    message["Subject"] = subject
    message["Date"] = utcnow()
    message["Message-ID"] = make_msgid(domain=domain)
    if business.support_email:
        message["Reply-To"] = business.support_email
    message.set_content(text.strip() + "\n")
    message.add_alternative(html, subtype="html")
    if logo:
        data, maintype, subtype = logo
        message.get_payload()[1].add_related(data, maintype, subtype, cid=logo_cid)
    if pdf:
        message.add_attachment(pdf, maintype="application", subtype="pdf",
                               filename=f"invoice-{invoice.display_number}.pdf")
    return message


def _data_uri_image(uri):
    """``(bytes, maintype, subtype)`` of a base64 ``data:image/…`` URI, else ``None``.

    The logo travels as an inline part, because many mail clients block ``data:`` images.
    """
    header, _, payload = (uri or "").partition(",")
    if not (header.startswith("data:image/") and header.endswith(";base64")):
        return None
    maintype, _, subtype = header[len("data:"):-len(";base64")].partition("/")
    try:
        return base64.b64decode(payload, validate=True), maintype, subtype
    except binascii.Error:
        return None


def _invoice_pdf(notification):
    """``(invoice, pdf bytes)`` for a receipt naming an invoice, once ``core.billing`` offers
    ``invoice_pdf``; ``(None, None)`` otherwise."""
    if notification.type != "payment.succeeded" or not notification.data.get("invoice_id"):
        return None, None
    try:
        billing = importlib.import_module("core.billing")
    except ModuleNotFoundError as error:
        if error.name != "core.billing":
            raise
        return None, None
    invoice_pdf = getattr(billing, "invoice_pdf", None)
    invoice = Invoice.get_or_none((Invoice.id == notification.data["invoice_id"])
                                  & (Invoice.business == notification.business_id))
    if invoice_pdf is None or invoice is None:
        return None, None
    pdf = invoice_pdf(invoice)
    return (invoice, pdf) if pdf else (None, None)


@contextmanager
def _smtp(config):
    """An SMTP connection, secured and logged in as ``SMTP_*`` say."""
    smtp_class = smtplib.SMTP_SSL if config["SMTP_SSL"] else smtplib.SMTP
    options = {"context": ssl.create_default_context()} if config["SMTP_SSL"] else {}
    with smtp_class(config["SMTP_HOST"], config["SMTP_PORT"], timeout=config["SMTP_TIMEOUT"],
                    **options) as smtp:
        if config["SMTP_STARTTLS"] and not config["SMTP_SSL"]:
            smtp.starttls(context=ssl.create_default_context())
        if config["SMTP_USERNAME"]:
            smtp.login(config["SMTP_USERNAME"], config["SMTP_PASSWORD"] or "")
        yield smtp


def _check_smtp(app):
    """The SMTP server answers, secures the connection and accepts the login."""
    if not app.config["SMTP_HOST"]:
        raise RuntimeError("PORTICO_SMTP_HOST is not set: e-mails (sign-in links) would only "
                           "reach the log outbox")
    with _smtp(app.config) as smtp:
        smtp.noop()
    login = " and accepts the login" if app.config["SMTP_USERNAME"] else ""
    return f"{app.config['SMTP_HOST']}:{app.config['SMTP_PORT']} answers{login}"


@hookimpl
def production_checks(app):
    return {"smtp": _check_smtp}


def _send(message, config) -> str | None:
    """Send by SMTP; raise on a transient failure. Returns why the message could not be sent
    for good (a 5xx refusal, or a non-ASCII address the server cannot take without SMTPUTF8),
    or ``None`` once the server accepted it. ``smtplib`` asks for SMTPUTF8 by itself when an
    address needs it and the server offers it."""
    try:
        with _smtp(config) as smtp:
            smtp.send_message(message)
    except smtplib.SMTPNotSupportedError as error:
        if "SMTPUTF8" not in str(error):  # e.g. no AUTH: the settings are wrong, so retry
            raise
        return "the SMTP server does not offer SMTPUTF8, which a non-ASCII address needs"
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as error:
        if not _refused_for_good(error):
            raise
        log.warning("mail to %s refused for good: %s", message["To"], error)
        return f"refused for good: {error}"
    return None


def _refused_for_good(error) -> bool:
    """Whether the server refused the message with a 5xx answer, so a retry cannot help."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in error.recipients.values())
    return error.smtp_code >= 500


def _append_to_outbox(message, path):
    """Append ``message`` to the mbox file at ``path``, locked against concurrent writers."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    box = mailbox.mbox(path)
    box.lock()
    try:
        box.add(message)
    finally:
        box.close()
