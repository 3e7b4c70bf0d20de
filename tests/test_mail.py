"""The built-in mail notifier, against a real SMTP server (aiosmtpd) and the mbox outbox."""

import base64
import logging
import re
import smtplib
import sys
import types
from pathlib import Path

import pytest
from conftest import free_port

from core.events import dispatch
from core.hookspecs import Notification
from core.models import Business, Customer, Event, Invoice, Payment, new_id, utcnow
from core.plugins import registry
from plugins.mail import outbox_messages

SUBSCRIPTION = {"subscription_id": "sub_123", "product_id": "pdt_123", "product_name": "Pro plan",
                "status": "cancelled", "next_billing_date": "2025-03-01T00:00:00Z",
                "recurring_pre_tax_amount": 1200, "currency": "EUR",
                "cancelled_at": "2025-02-14T10:00:00Z", "cancel_at_next_billing_date": False}
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nlogo").decode()


@pytest.fixture
def smtp_app(app, make_app, inbox):
    """An application sending by SMTP to ``inbox``, inside its own app context."""
    smtp_app = make_app(config={"SMTP_HOST": "127.0.0.1", "SMTP_PORT": inbox.port,
                                "SMTP_STARTTLS": False})
    with smtp_app.app_context():
        yield smtp_app


def notification(business, customer=None, type="customer.sign_in_link", data=None, **secrets):
    return Notification(id=new_id("evt"), type=type, business_id=business.id, mode="test",
                        data=data or {}, created_at=utcnow(),
                        customer_id=customer.id if customer else None, secrets=secrets)


def notify(app, note):
    return registry(app).call_one("notify", "mail", notification=note, app=app)


def payment(amount, currency, **extra):
    return {"payment_id": "pay_123", "total_amount": amount, "currency": currency,
            "status": "succeeded", "error_message": None, "subscription_id": None,
            "product_name": "Pro plan", **extra}


def test_sign_in_link_is_sent_by_smtp_to_the_customer(smtp_app, inbox, business, customer):
    link = "http://portal.test/session/abc123"
    notify(smtp_app, notification(business, customer, link=link))

    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["ann@example.com"]
    [message] = inbox.messages()
    assert message["To"] == "Ann Example <ann@example.com>"
    assert message["From"] == "Acme Software <no-reply@localhost>"
    assert message["Reply-To"] == "support@acme.test"
    assert message["Subject"] == "Your sign-in link for Acme Software"
    assert message["Message-ID"] and message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert link in text and "24 hours" in text
    assert f'href="{link}"' in html and "#4f46e5" in html


def test_email_change_confirmation_goes_to_the_new_address(smtp_app, inbox, business, customer):
    note = notification(business, customer, type="customer.email_change",
                        data={"email": "ann@new.example"}, link="http://portal.test/confirm/x")
    notify(smtp_app, note)

    [message] = inbox.messages()
    assert inbox.envelopes[0].rcpt_tos == ["ann@new.example"]
    assert "ann@new.example" in message.get_body(("plain",)).get_content()


@pytest.mark.parametrize("amount, currency, shown", [
    (1999, "USD", "$19.99"), (1500, "JPY", "¥1,500"), (12345, "KWD", "KWD12.345")])
def test_receipt_shows_the_amount_in_the_currency_minor_units(
        smtp_app, inbox, business, customer, amount, currency, shown):
    notify(smtp_app, notification(business, customer, type="payment.succeeded",
                                  data=payment(amount, currency)))

    [message] = inbox.messages()
    assert message["Subject"] == "Receipt for your payment to Acme Software"
    assert f"Amount paid: {shown}" in message.get_body(("plain",)).get_content()
    assert shown in message.get_body(("html",)).get_content()


def test_receipt_attaches_the_invoice_pdf_when_billing_renders_it(
        smtp_app, inbox, business, customer, monkeypatch):
    paid = Payment.create(business=business, mode="test", customer=customer, amount=1999,
                          currency="USD", status="succeeded", idempotency_key=new_id("idem"))
    invoice = Invoice.create(business=business, mode="test", customer=customer, payment=paid,
                             number=7, currency="USD", lines=[], subtotal=1999, tax=0,
                             total=1999, seller={}, buyer={})
    billing = types.SimpleNamespace(invoice_pdf=lambda record: b"%PDF-1.7 " + record.id.encode())
    monkeypatch.setitem(sys.modules, "core.billing", billing)

    notify(smtp_app, notification(business, customer, type="payment.succeeded",
                                  data=payment(1999, "USD", invoice_id=invoice.id)))

    [message] = inbox.messages()
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "invoice-T-000007.pdf"
    assert attachment.get_content() == b"%PDF-1.7 " + invoice.id.encode()
    assert "Invoice T-000007 is attached" in message.get_body(("plain",)).get_content()


def test_receipt_is_sent_without_attachment_while_billing_is_missing(
        smtp_app, inbox, business, customer, monkeypatch):
    monkeypatch.setitem(sys.modules, "core.billing", None)  # importing it now fails
    notify(smtp_app, notification(business, customer, type="payment.succeeded",
                                  data=payment(1999, "USD", invoice_id="inv_missing")))

    [message] = inbox.messages()
    assert list(message.iter_attachments()) == []


def test_payment_failed_links_to_the_payment_method_update(smtp_app, inbox, business, customer):
    link = "http://portal.test/session/update"
    data = payment(1999, "USD", status="failed", error_code="card_declined",
                   error_message="Card declined by the issuing bank (raw provider text)")
    notify(smtp_app, notification(business, customer, type="payment.failed", data=data, link=link))

    text = inbox.messages()[0].get_body(("plain",)).get_content()
    assert "$19.99" in text and "Your card was declined." in text and link in text
    assert "raw provider text" not in text


def test_brand_logo_travels_as_an_inline_image(smtp_app, inbox, business, customer):
    business.logo, business.brand_color = PNG, "#112233"
    business.save()
    notify(smtp_app, notification(business, customer, link="http://portal.test/session/x"))

    [message] = inbox.messages()
    html_part = message.get_body(("html",))
    [logo] = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert f'src="cid:{logo["Content-ID"][1:-1]}"' in html_part.get_content()
    assert "#112233" in html_part.get_content()


def test_without_smtp_host_mail_lands_in_the_outbox_and_the_log(app, business, customer, caplog):
    link = "http://portal.test/session/demo"
    with caplog.at_level(logging.INFO, logger="portico.mail"):
        notify(app, notification(business, customer, link=link))

    [message] = outbox_messages(app)
    assert message["To"] == "Ann Example <ann@example.com>"
    assert link in message.get_body(("plain",)).get_content()
    assert "mail to ann@example.com: Your sign-in link for Acme Software" in caplog.text
    assert link in caplog.text


def test_unknown_event_type_sends_nothing(smtp_app, inbox, business, customer):
    assert notify(smtp_app, notification(business, customer, type="license_key.created")) is None
    assert inbox.envelopes == []
    assert outbox_messages(smtp_app) == []


def test_smtp_server_down_raises_so_the_job_retries(make_app, app, business, customer):
    down = make_app(config={"SMTP_HOST": "127.0.0.1", "SMTP_PORT": free_port(),
                            "SMTP_STARTTLS": False, "SMTP_TIMEOUT": 2})
    with down.app_context(), pytest.raises(OSError):
        notify(down, notification(business, customer, link="http://portal.test/session/x"))


def test_temporary_refusal_raises_so_the_job_retries(smtp_app, inbox, business, customer):
    inbox.rcpt_reply = "451 Try again later"
    with pytest.raises(smtplib.SMTPRecipientsRefused, match="Try again later"):
        notify(smtp_app, notification(business, customer, link="http://portal.test/session/x"))


def test_permanent_refusal_is_logged_not_raised(smtp_app, inbox, business, customer, caplog):
    inbox.rcpt_reply = "550 No such user"
    notify(smtp_app, notification(business, customer, link="http://portal.test/session/x"))

    assert inbox.envelopes == []
    assert "refused for good" in caplog.text


def test_recorded_event_is_mailed_through_dispatch(smtp_app, inbox, business, customer):
    event = Event.create(business=business, mode="test", customer=customer,
                         type="subscription.cancelled", data=SUBSCRIPTION)
    dispatch(event.id)

    [message] = inbox.messages()
    assert message["Subject"] == "Cancellation confirmed: your Pro plan subscription"
    assert "cancelled as of February 14, 2025" in message.get_body(("plain",)).get_content()
    assert Event.get_by_id(event.id).dispatched_at is not None


def test_the_old_address_hears_of_an_email_change_without_any_link(smtp_app, inbox, business, customer):
    registry(smtp_app).call_one("notify", "mail", app=smtp_app, notification=notification(
        business, customer, type="customer.email_changed", data={"email": "old@example.com"}))
    [message] = inbox.messages()
    assert message["To"].addresses[0].addr_spec == "old@example.com"
    assert "now uses another e-mail address" in message["Subject"]
    assert "http" not in message.get_body(("plain",)).get_content()


# --- Nothing typed by a customer, a merchant or a provider is live HTML ------------------------

HOSTILE = '<a href="https://evil.example/refund">Claim your refund</a>'
HOSTILE_ADDRESS = "o'brien&co@example.com"  # a valid address, with characters HTML escapes
EMAIL_TYPES = sorted(path.stem.replace("_", ".", 1) for path in
                     (Path(__file__).resolve().parent.parent / "templates" / "email").glob("*.html")
                     if not path.stem.startswith("_") and path.stem != "layout")


def test_every_email_template_is_checked_for_hostile_values():
    assert EMAIL_TYPES == ["customer.email_change", "customer.email_changed",
                           "customer.sign_in_link", "payment.failed", "payment.succeeded",
                           "refund.succeeded", "subscription.active",
                           "subscription.cancellation_scheduled", "subscription.cancelled",
                           "subscription.paused", "subscription.price_change_scheduled",
                           "subscription.renewal_reminder", "subscription.trial_ending",
                           "subscription.unpaused"]


@pytest.mark.parametrize("type_", EMAIL_TYPES)
@pytest.mark.parametrize("cancelling", [False, True])
def test_every_html_email_escapes_hostile_values_in_every_field(app, business, customer, type_,
                                                                 cancelling):
    Business.update(name=HOSTILE, support_email=HOSTILE_ADDRESS).where(
        Business.id == business.id).execute()
    Customer.update(name=HOSTILE).where(Customer.id == customer.id).execute()
    data = {**SUBSCRIPTION, **payment(1500, "EUR"), "product_name": HOSTILE,
            "error_message": HOSTILE, "payment_id": HOSTILE, "subscription_id": HOSTILE,
            "amount": 500, "reason": HOSTILE, "renewal_amount": 1800,
            "resume_at": "2025-04-01T00:00:00Z" if cancelling else None,
            "trial_ends_at": "2025-04-01T00:00:00Z" if cancelling else None,
            "status": "active" if cancelling else "cancelled", "cancel_at_next_billing_date": cancelling,
            "cancelled_at": None if cancelling else SUBSCRIPTION["cancelled_at"],
            "price_change": {"effective_at": "2025-03-01T00:00:00Z", "amount": 2400,
                             "previous_amount": 1200, "payment_frequency_count": 1,
                             "payment_frequency_interval": "Month"}}
    if type_.startswith("customer.email_change"):
        data["email"] = HOSTILE_ADDRESS
    notify(app, notification(business, customer, type=type_, data=data,
                             link=f"http://portal.test/session/x?{HOSTILE}"))

    [message] = outbox_messages(app)
    html = message.get_body(("html",)).get_content()
    assert "<a href=\"https://evil.example" not in html and "Claim your refund</a>" not in html
    assert "&lt;a href=&#34;https://evil.example/refund&#34;&gt;Claim your refund&lt;/a&gt;" in html
    assert "o'brien&co" not in html
    text = message.get_body(("plain",)).get_content()
    assert "&lt;" not in text and "&#34;" not in text  # the plain text stays plain


def test_html_emails_take_their_macros_from_html_templates():
    """A macro imported from a .txt template prints unescaped text into an .html e-mail."""
    folder = Path(__file__).resolve().parent.parent / "templates"
    for path in folder.rglob("*.html"):
        assert not re.search(r'(import|include|extends)\s*"[^"]+\.txt"', path.read_text()), path
