"""What the customer is told ahead of and around the end of a period: a reminder before a
renewal (with the amount and a link, once per renewal, in their language; on by default for
yearly plans), an e-mail when a cancellation is scheduled for the period end and another when
it takes effect. Notices Dodo has no event for never reach webhooks."""

import json
from datetime import UTC, datetime

import pytest
import time_machine
from test_api_sdk import receiver  # noqa: F401 (a fixture)

from core import billing
from core.endpoints import new_secret
from core.models import Business, Customer, Event, Payment, Product, WebhookEndpoint
from plugins.mail import outbox_messages


@pytest.fixture
def app(make_app):
    app = make_app({"WEBHOOK_ALLOW_PRIVATE_NETWORKS": True})
    with app.app_context():
        yield app


def at(text):
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def yearly(business):
    """A yearly EUR plan at 120.00 plus 20 % VAT."""
    return Product.create(business=business, mode="test", name="Pro yearly", price=12000,
                          currency="EUR", is_recurring=True, tax_rate_bps=2000,
                          payment_frequency_interval="Year", subscription_period_count=10)


def reminders(app):
    return [m for m in outbox_messages(app) if "renews on" in m["Subject"]]


def plain(message) -> str:
    return " ".join(message.get_body(("plain",)).get_content().split())


def sweep_on(day):
    with time_machine.travel(at(day), tick=False):
        billing.sweep()


def test_a_yearly_plan_is_reminded_once_30_days_before_it_renews_with_the_amount_and_a_link(
        app, customer, yearly, subscribe):
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        sub, _ = subscribe(customer, yearly)
    assert sub.next_billing_date == at("2027-03-01 10:00")
    sweep_on("2027-01-29 10:00")  # 31 days before
    assert reminders(app) == []
    for day in ("2027-01-30 10:00", "2027-01-30 10:01", "2027-02-15 10:00"):
        sweep_on(day)
    [reminder] = reminders(app)
    assert reminder["Subject"] == "Your Pro yearly subscription renews on March 1, 2027"
    body = plain(reminder)
    assert "we will then charge €144.00 to your payment method" in body
    assert "http://portal.test/session/" in body  # signs in on the subscription's page
    [event] = Event.select().where(Event.type == "subscription.renewal_reminder")
    assert event.customer_only and event.data["renewal_amount"] == 14400


def test_the_reminder_quotes_the_new_price_announced_for_that_renewal_and_that_is_charged(
        app, customer, yearly, subscribe):
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        sub, _ = subscribe(customer, yearly)
    with time_machine.travel(at("2026-12-01 10:00"), tick=False):
        yearly.price = 15000
        yearly.save()
        billing.announce_price(yearly, billing.price_change_notice())
    sweep_on("2027-02-15 10:00")
    [reminder] = reminders(app)
    assert "we will then charge €180.00 to your payment method" in plain(reminder)
    sweep_on("2027-03-01 10:00")
    [renewal] = sub.payments.where(Payment.kind == "renewal")
    assert renewal.amount == 18000


def test_each_renewal_gets_its_own_reminder(app, customer, yearly, subscribe):
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        sub, _ = subscribe(customer, yearly)
    for day in ("2027-02-15 10:00", "2027-03-01 10:00", "2028-02-15 10:00", "2028-02-20 10:00"):
        sweep_on(day)
    assert [m["Subject"] for m in reminders(app)] == [
        "Your Pro yearly subscription renews on March 1, 2027",
        "Your Pro yearly subscription renews on March 1, 2028"]


def test_the_reminder_is_written_in_the_customers_language(app, business, yearly, subscribe):
    claire = Customer.create(business=business, mode="test", email="claire@example.fr",
                             name="Claire", preferred_locale="fr")
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        subscribe(claire, yearly)
    sweep_on("2027-02-15 10:00")
    [reminder] = [m for m in outbox_messages(app) if "renouvelle" in m["Subject"]]
    assert reminder["Subject"] == "Votre abonnement Pro yearly se renouvelle le 1 mars 2027"
    assert "144,00" in plain(reminder) and "€" in plain(reminder)


def test_monthly_plans_get_no_reminder_unless_the_merchant_asks(app, business, customer, product,
                                                                subscribe):
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        subscribe(customer, product)
    sweep_on("2026-03-28 10:00")
    assert reminders(app) == []
    Business.update(settings={"renewal_reminders": "all", "renewal_reminder_days": 3}).where(
        Business.id == business.id).execute()
    sweep_on("2026-03-28 09:00")  # 3 days and one hour before
    assert reminders(app) == []
    sweep_on("2026-03-29 10:00")
    [reminder] = reminders(app)
    assert "€18.00" in plain(reminder)


def test_no_reminder_when_the_merchant_turned_them_off(app, business, customer, yearly, subscribe):
    Business.update(settings={"renewal_reminders": "off"}).where(Business.id == business.id).execute()
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        subscribe(customer, yearly)
    sweep_on("2027-02-15 10:00")
    assert reminders(app) == []


def test_a_subscription_set_to_end_is_not_reminded_of_a_renewal(app, customer, yearly, subscribe):
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        sub, _ = subscribe(customer, yearly)
        billing.cancel(sub, at_next_billing_date=True)
    sweep_on("2027-02-15 10:00")
    assert reminders(app) == []


def test_the_merchant_sets_reminders_in_the_dashboard(client, business):
    from conftest import csrf_token

    from core import auth

    auth.create_merchant_user(business, "owner@acme.test", "correct horse battery")
    page = client.get("/dashboard/login")
    client.post("/dashboard/login", data={"csrf_token": csrf_token(page.text),
                                          "email": "owner@acme.test", "password": "correct horse battery"})
    page = client.get("/dashboard/subscription-settings")
    assert page.status_code == 200 and '<option selected value="yearly">' in page.text
    bad = client.post("/dashboard/subscription-settings", data={
        "csrf_token": csrf_token(page.text), "renewal_reminders": "all", "renewal_reminder_days": "0"})
    assert bad.status_code == 400 and "Enter a number of days from 1 to 90." in bad.text
    client.post("/dashboard/subscription-settings", data={
        "csrf_token": csrf_token(page.text), "renewal_reminders": "all", "renewal_reminder_days": "7"})
    assert business.refresh().settings == {"renewal_reminders": "all", "renewal_reminder_days": 7}


def test_a_subscription_whose_term_ends_at_that_date_is_not_reminded(app, business, customer,
                                                                      subscribe):
    one_year = Product.create(business=business, mode="test", name="One year", price=12000,
                              currency="EUR", is_recurring=True, payment_frequency_interval="Year",
                              subscription_period_count=1, subscription_period_interval="Year")
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        subscribe(customer, one_year)
    sweep_on("2027-02-15 10:00")
    assert reminders(app) == []


# --- Cancellations at the period end ------------------------------------------------------


def test_scheduling_a_cancellation_for_the_period_end_is_e_mailed_with_the_end_date(
        app, customer, product, subscribe):
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        sub, _ = subscribe(customer, product)
        billing.cancel(sub, at_next_billing_date=True)
    [mail] = [m for m in outbox_messages(app) if m["Subject"].startswith("Cancellation")]
    assert "will end on April 1, 2026" in plain(mail)


def test_the_cancellation_taking_effect_at_the_period_end_is_e_mailed(app, customer, product, subscribe):
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        sub, _ = subscribe(customer, product)
        billing.cancel(sub, at_next_billing_date=True)
    sweep_on("2026-04-01 10:00")
    assert sub.refresh().status == "cancelled"
    mails = [m for m in outbox_messages(app) if m["Subject"].startswith("Cancellation")]
    assert len(mails) == 2 and "is cancelled as of April 1, 2026" in plain(mails[1])


def test_notices_dodo_has_no_event_for_never_reach_webhooks(app, business, customer, yearly, subscribe,
                                                            receiver):  # noqa: F811
    WebhookEndpoint.create(business=business, mode="test", url=receiver.url, secret=new_secret())
    with time_machine.travel(at("2026-03-01 10:00"), tick=False):
        sub, _ = subscribe(customer, yearly)
    sweep_on("2027-02-15 10:00")
    with time_machine.travel(at("2027-02-16 10:00"), tick=False):
        billing.cancel(sub, at_next_billing_date=True)
    sent = [json.loads(body)["type"] for _, body in receiver.received]
    assert "subscription.updated" in sent and "payment.succeeded" in sent
    assert not {"subscription.renewal_reminder", "subscription.cancellation_scheduled"} & set(sent)
    assert len(reminders(app)) == 1
