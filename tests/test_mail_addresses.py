"""Internationalised e-mail addresses (RFC 6531, RFC 5890), through a real SMTP server
(aiosmtpd) that offers SMTPUTF8 and one that does not: domains travel in IDNA, people read
them in Unicode, a non-ASCII local part needs SMTPUTF8 or the send is recorded as failed."""

import pytest
from conftest import csrf_token
from test_mail import notification, notify

from core.models import AuditLog, Customer
from plugins.mail import outbox_messages


def smtp_app_for(make_app, server, **config):
    return make_app(config={"SMTP_HOST": "127.0.0.1", "SMTP_PORT": server.port,
                            "SMTP_STARTTLS": False, **config})


@pytest.fixture
def kim(business):
    return Customer.create(business=business, mode="test", email="kim@bücher.de", name="Kim")


@pytest.fixture
def jorg(business):
    return Customer.create(business=business, mode="test", email="jörg@bücher.de", name="Jörg")


def test_a_unicode_domain_is_sent_in_idna_through_a_server_without_smtputf8(
        make_app, ascii_inbox, business, kim):
    app = smtp_app_for(make_app, ascii_inbox)
    with app.app_context():
        notify(app, notification(business, kim, link="http://portal.test/session/x"))

    [envelope] = ascii_inbox.envelopes
    assert envelope.rcpt_tos == ["kim@xn--bcher-kva.de"]
    [message] = ascii_inbox.messages()
    assert message["To"] == "Kim <kim@xn--bcher-kva.de>"
    assert "=?utf-8?" not in envelope.content.decode("ascii")


def test_a_unicode_domain_is_sent_in_idna_through_a_server_with_smtputf8(
        make_app, inbox, business, kim):
    app = smtp_app_for(make_app, inbox)
    with app.app_context():
        notify(app, notification(business, kim, link="http://portal.test/session/x"))

    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["kim@xn--bcher-kva.de"]


def test_a_non_ascii_local_part_goes_out_with_smtputf8_when_the_server_offers_it(
        make_app, inbox, business, jorg):
    app = smtp_app_for(make_app, inbox)
    with app.app_context():
        notify(app, notification(business, jorg, link="http://portal.test/session/x"))

    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["jörg@xn--bcher-kva.de"]
    assert "SMTPUTF8" in envelope.mail_options
    assert "To: Jörg <jörg@xn--bcher-kva.de>".encode() in envelope.original_content
    assert AuditLog.select().where(AuditLog.event == "email.failed").count() == 0


def test_a_non_ascii_local_part_without_smtputf8_is_recorded_as_failed_not_sent(
        make_app, ascii_inbox, business, jorg):
    app = smtp_app_for(make_app, ascii_inbox)
    with app.app_context():
        notify(app, notification(business, jorg, link="http://portal.test/session/x"))

    assert ascii_inbox.envelopes == []
    [failure] = AuditLog.select().where(AuditLog.event == "email.failed")
    assert failure.customer_id == jorg.id and failure.outcome == "failed"
    assert failure.detail == {"type": "customer.sign_in_link",
                              "reason": "the SMTP server does not offer SMTPUTF8, "
                                        "which a non-ASCII address needs"}


def test_the_log_outbox_keeps_the_domain_in_idna_too(app, business, kim):
    notify(app, notification(business, kim, link="http://portal.test/session/x"))

    [message] = outbox_messages(app)
    assert message["To"] == "Kim <kim@xn--bcher-kva.de>"


def test_the_sign_in_form_finds_the_customer_whatever_the_case_or_form_of_the_domain(
        make_app, ascii_inbox, business, kim):
    app = smtp_app_for(make_app, ascii_inbox, SIGN_IN_LIMIT_PER_EMAIL="10 per minute")
    client = app.test_client()
    for typed in ("kim@BÜCHER.DE", "kim@xn--bcher-kva.de"):
        page = client.get(f"/test/login/{business.id}").get_data(as_text=True)
        client.post(f"/test/login/{business.id}", data={"email": typed,
                                                        "csrf_token": csrf_token(page)})

    assert [e.rcpt_tos for e in ascii_inbox.envelopes] == [["kim@xn--bcher-kva.de"]] * 2


def test_the_api_stores_the_address_in_unicode_and_refuses_the_same_one_in_idna(api, business):
    created = api.post("/customers", {"email": "Kim@Bücher.DE", "name": "Kim"})
    assert created.status_code == 200
    assert created.json["email"] == "kim@bücher.de"

    again = api.post("/customers", {"email": "kim@xn--bcher-kva.de", "name": "Kim"})
    assert again.status_code in (409, 422) or again.json["customer_id"] == created.json["customer_id"]
