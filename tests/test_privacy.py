"""A customer's data rights: everything held about them as one JSON document (command line,
API, portal), and the erasure of their personal data (command line, API, dashboard) that keeps
their invoices and payments as tax law requires."""

import json
import uuid
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from conftest import csrf_token
from playhouse.shortcuts import model_to_dict

from core import auth, jobs
from core.cli import main
from core.models import (
    AuditLog,
    Business,
    CancellationRequest,
    Customer,
    Event,
    Invoice,
    LicenseKey,
    LicenseKeyInstance,
    Payment,
    PaymentMethod,
    PortalSession,
    PortalToken,
    Subscription,
)
from plugins.mail import outbox_messages

PASSWORD = "correct horse battery staple"


@pytest.fixture
def ann(business):
    return Customer.create(business=business, mode="test", email="ann@example.com", name="Ann Example",
                           phone_number="+33612345678", tax_id="FR12345678901",
                           billing_address={"street": "1 Rue de la Paix", "city": "Paris", "zipcode": "75002",
                                            "country": "FR"})


def sign_in(client, customer):
    path = urlsplit(auth.sign_in_link(customer)).path
    answer = client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    assert answer.status_code == 303
    return answer


@pytest.fixture
def everything(app, client, ann, product, subscribe):
    """Ann with every kind of record: a subscription, its payment, invoice and card, a request
    to cancel it that she later took back, a license key with an activation, a portal session,
    an unused sign-in link and audit entries."""
    sub, payment = subscribe(ann, product)
    CancellationRequest.create(business=ann.business_id, mode="test", subscription=sub, customer=ann,
                               feedback="other", comment="Call Ann Example on +33612345678",
                               when="period_end", outcome="cancelled")
    key = LicenseKey.create(business=ann.business_id, mode="test", customer=ann, product=product,
                            key="LIC-ANN-0001", payment=payment)
    LicenseKeyInstance.create(license_key=key, name="Ann's laptop")
    sign_in(client, ann)
    auth.sign_in_link(ann)
    return sub, payment


def portico(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_export_holds_every_kind_of_record_about_the_customer(cli_env, everything, ann):
    sub, payment = everything
    document = json.loads(portico("customers", "export", ann.id))
    assert document["format"] == "portico.customer-export/1"
    assert document["customer"]["email"] == "ann@example.com"
    assert document["customer"]["billing_address"]["city"] == "Paris"
    assert [row["id"] for row in document["subscriptions"]] == [sub.id]
    assert payment.id in [row["id"] for row in document["payments"]]
    assert [row["payment"] for row in document["invoices"]] == [payment.id]
    assert [row["key"] for row in document["license_keys"]] == ["LIC-ANN-0001"]
    assert [row["comment"] for row in document["cancellation_requests"]] == [
        "Call Ann Example on +33612345678"]
    assert [row["name"] for row in document["license_key_instances"]] == ["Ann's laptop"]
    assert [row["last4"] for row in document["payment_methods"]] == ["4242"]
    assert len(document["sessions"]) == 1 and len(document["sign_in_links"]) == 2
    assert "sign_in" in {row["event"] for row in document["audit_log"]}


def test_export_leaves_out_credentials_and_stored_files(cli_env, everything, ann):
    text = portico("customers", "export", ann.id)
    for model, field in ((PaymentMethod, "provider_token"), (PortalToken, "token_hash")):
        assert all(getattr(row, field) not in text for row in model.select())
    assert '"pdf"' not in text


def test_export_is_recorded_in_the_audit_log(cli_env, ann):
    portico("customers", "export", ann.id)
    [entry] = AuditLog.select().where(AuditLog.event == "customer.exported")
    assert entry.customer_id == ann.id and entry.detail == {"by": "cli"}


def test_the_api_exports_a_customer_of_the_keys_business_only(app, api, ann, everything):
    answer = api.get(f"/customers/{ann.id}/export")
    assert answer.status_code == 200
    assert answer.json["customer"]["id"] == ann.id and answer.json["invoices"]
    other = Customer.create(business=Business.create(name="Other"), mode="test", email="o@example.com")
    assert api.get(f"/customers/{other.id}/export").status_code == 404


def test_the_portal_profile_offers_download_my_data(client, everything, ann):
    profile = client.get("/portal/profile")
    assert "Download my data" in profile.text
    download = client.post("/portal/profile/my-data.json", data={"csrf_token": csrf_token(profile.text)})
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment")
    mine = json.loads(download.text)["customer"]
    assert mine["id"] == ann.id and mine["email"] == "ann@example.com"
    assert mine["phone_number"] == "+33612345678" and mine["tax_id"] == "FR12345678901"
    assert mine["billing_address"]["city"] == "Paris"


# --- Erasure -------------------------------------------------------------------------------


PERSONAL = ("ann@example.com", "Ann Example", "+33612345678", "Rue de la Paix", "FR12345678901",
            "Ann's laptop")


def personal_data_left(customer_id) -> list[str]:
    """The rows about the customer, other than invoices and payments, that still hold any of
    their personal data."""
    rows = [Customer.get_by_id(customer_id)]
    for model in (Subscription, CancellationRequest, PaymentMethod, PortalSession, PortalToken,
                  AuditLog, Event, LicenseKey):
        rows += list(model.select().where(model.customer == customer_id))
    rows += list(LicenseKeyInstance.select().join(LicenseKey).where(LicenseKey.customer == customer_id))
    text = json.dumps([model_to_dict(row, recurse=False) for row in rows], default=str)
    return [value for value in PERSONAL if value in text]


def test_erasure_leaves_no_personal_data_outside_invoices_and_payments(cli_env, everything, ann):
    assert personal_data_left(ann.id)
    portico("customers", "erase", ann.id, "--yes")
    assert personal_data_left(ann.id) == []
    erased = Customer.get_by_id(ann.id)
    assert erased.email == f"{ann.id}@erased.example.com" and erased.erased_at is not None


def test_erasure_keeps_invoices_readable_with_their_frozen_billing_details(cli_env, api, everything, ann):
    _, payment = everything
    portico("customers", "erase", ann.id, "--yes")
    invoice = Invoice.get(Invoice.payment == payment.id)
    assert invoice.buyer["email"] == "ann@example.com" and invoice.buyer["name"] == "Ann Example"
    assert Payment.get_by_id(payment.id).status == "succeeded"
    pdf = api.get(f"/invoices/payments/{payment.id}")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")


def test_erasure_cancels_active_subscriptions(cli_env, everything, ann):
    sub, _ = everything
    portico("customers", "erase", ann.id, "--yes")
    assert Subscription.get_by_id(sub.id).status == "cancelled"


def test_an_erased_customer_cannot_sign_in(cli_env, app, client, everything, ann):
    link = auth.sign_in_link(ann)
    portico("customers", "erase", ann.id, "--yes")
    assert client.get("/portal/").status_code in (302, 303)  # the session is gone
    path = urlsplit(link).path
    page = client.get(path)
    assert client.post(path, data={"csrf_token": csrf_token(page.text)}).status_code != 303
    fresh = auth.sign_in_link(Customer.get_by_id(ann.id)).rsplit("/", 1)[1]
    assert auth.sign_in_with_token(fresh) is None  # blocked for good


def test_erasure_sends_the_customer_no_e_mail(cli_env, app, everything, ann):
    before = len(outbox_messages(app))
    portico("customers", "erase", ann.id, "--yes")
    assert len(outbox_messages(app)) == before


def test_erasure_removes_the_customers_queued_e_mails(make_app, redis_url, ann):
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": f"test-{uuid.uuid4().hex[:8]}"})
    with app.app_context():
        customer = Customer.get_by_id(ann.id)
        jobs.enqueue(auth.send_email_change_link, customer.id, "ann.new@example.com")
        jobs.enqueue(auth.send_sign_in_link, customer.id)
        assert jobs.queue().count == 2
        from core.privacy import erase

        erase(customer, by="test")
        assert jobs.queue().count == 0
        [entry] = AuditLog.select().where(AuditLog.event == "customer.erased")
        assert entry.detail == {"by": "test", "jobs_removed": 2}


def test_the_api_erases_a_customer_and_erasing_again_changes_nothing(api, everything, ann):
    first = api.post(f"/customers/{ann.id}/erase")
    assert first.status_code == 200
    assert first.json["email"] == f"{ann.id}@erased.example.com" and first.json["name"] == ""
    again = api.post(f"/customers/{ann.id}/erase")
    assert again.status_code == 200 and again.json == first.json
    assert AuditLog.select().where(AuditLog.event == "customer.erased").count() == 1


@pytest.fixture
def merchant(app, client, business):
    auth.create_merchant_user(business, "owner@acme.test", PASSWORD)
    page = client.get("/dashboard/login")
    answer = client.post("/dashboard/login", data={"csrf_token": csrf_token(page.text),
                                                   "email": "owner@acme.test", "password": PASSWORD})
    assert answer.status_code == 303
    return client


def test_the_dashboard_erases_only_once_the_email_address_is_typed(merchant, ann):
    path = f"/dashboard/customers/{ann.id}/erase"
    assert "Erase personal data" in merchant.get(f"/dashboard/customers/{ann.id}").text
    wrong = merchant.post(path, data={"csrf_token": csrf_token(merchant.get(path).text),
                                      "email": "bob@example.com"})
    assert wrong.status_code == 400 and "This is not the customer" in wrong.text
    assert Customer.get_by_id(ann.id).erased_at is None
    done = merchant.post(path, data={"csrf_token": csrf_token(merchant.get(path).text),
                                     "email": "ann@example.com"})
    assert done.status_code == 303
    assert Customer.get_by_id(ann.id).erased_at is not None
    [entry] = AuditLog.select().where(AuditLog.event == "customer.erased")
    assert entry.detail["by"].startswith("usr_")


def test_the_dashboard_exports_a_customer(merchant, ann):
    page = merchant.get(f"/dashboard/customers/{ann.id}")
    download = merchant.post(f"/dashboard/customers/{ann.id}/export",
                             data={"csrf_token": csrf_token(page.text)})
    assert download.status_code == 200 and json.loads(download.text)["customer"]["id"] == ann.id
