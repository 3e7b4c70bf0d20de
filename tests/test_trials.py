"""Free trials: a product's ``trial_period_days`` (or the subscription's own, from the API)
starts a subscription active without a charge; its first charge falls at the trial's end,
through the renewal path; a customer who cancels during the trial is never charged; the
customer is told three days before the trial ends, and the portal says when it ends."""

import html
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from conftest import csrf_token, text
from test_portal import sign_in

from core import billing
from core.models import (
    Customer,
    Event,
    Invoice,
    LicenseKey,
    Payment,
    Product,
    Subscription,
)
from plugins.mail import outbox_messages

DAY_0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def day(n: int) -> datetime:
    return DAY_0 + timedelta(days=n)


@pytest.fixture
def trial(business):
    """A monthly EUR plan at 15.00 plus 20 % VAT, with a 14-day free trial and a license key."""
    return Product.create(business=business, mode="test", name="Pro", price=1500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10,
                          trial_period_days=14, license_key_enabled=True)


@pytest.fixture
def start_trial(subscribe):
    """A subscription to ``product`` started on day 0 (with a card, as the product asks)."""

    def start(customer, product, source="pm_card_visa", **kwargs):
        with time_machine.travel(DAY_0, tick=False):
            sub, payment = subscribe(customer, product, source, **kwargs)
        assert payment is None  # nothing charged
        return sub

    return start


def sweep_on(when: datetime):
    with time_machine.travel(when, tick=False):
        return billing.sweep()


def charges(sub) -> list[Payment]:
    return list(Payment.select().where(Payment.subscription == sub.id).order_by(Payment.created_at))


def test_a_14_day_trial_charges_nothing_on_day_0_and_once_on_day_14(app, customer, trial,
                                                                   start_trial):
    sub = start_trial(customer, trial)
    assert (sub.status, sub.in_trial, sub.trial_period_days) == ("active", True, 14)
    assert sub.next_billing_date == day(14)
    assert charges(sub) == [] and Invoice.select().count() == 0
    for when in (day(0) + timedelta(minutes=1), day(7), day(13) + timedelta(hours=23)):
        sweep_on(when)
    assert charges(sub) == []

    sweep_on(day(14))
    sweep_on(day(14) + timedelta(minutes=5))  # a second sweep charges nothing more
    [first] = charges(sub)
    assert (first.status, first.amount, first.kind) == ("succeeded", 1800, "renewal")
    assert (first.period_start, first.period_end) == (day(14), datetime(2026, 4, 16, 10, tzinfo=UTC))
    invoice = Invoice.get(Invoice.payment == first)
    assert invoice.total == 1800 and invoice.lines[0]["kind"] == "first_payment"
    sub = sub.refresh()
    assert (sub.status, sub.in_trial) == ("active", False)
    assert sub.next_billing_date == datetime(2026, 4, 16, 10, tzinfo=UTC)

    sweep_on(datetime(2026, 4, 16, 10, tzinfo=UTC))  # and the periods go on from there
    assert [p.amount for p in charges(sub)] == [1800, 1800]


def test_a_trial_is_active_at_once_and_its_first_charge_renews_it(app, customer, trial,
                                                                 start_trial):
    sub = start_trial(customer, trial)
    [active] = Event.select().where(Event.type == "subscription.active")
    assert active.data["subscription_id"] == sub.id and active.data["trial_period_days"] == 14
    assert active.data["trial_ends_at"] == "2026-03-16T10:00:00Z"
    assert active.data["next_billing_date"] == "2026-03-16T10:00:00Z"
    assert not Event.select().where(Event.type == "payment.succeeded").exists()
    [told] = [m for m in outbox_messages(app) if m["Subject"] == "Your Pro subscription is active"]
    assert ("Your free trial ends on March 16, 2026: your first payment is charged then, unless "
            "you cancel before.") in " ".join(told.get_body(("plain",)).get_content().split())
    sweep_on(day(14))
    assert [e.type for e in Event.select().where(Event.type.in_(
        ("payment.succeeded", "subscription.renewed", "subscription.active")))
        .order_by(Event.created_at)] == ["subscription.active", "payment.succeeded",
                                         "subscription.renewed"]


def test_cancelled_on_day_10_a_trial_is_never_charged(app, customer, trial, start_trial):
    sub = start_trial(customer, trial)
    with time_machine.travel(day(10), tick=False):
        billing.cancel(sub)
    for when in (day(14), day(15), day(45)):
        sweep_on(when)
    assert sub.refresh().status == "cancelled"
    assert charges(sub) == [] and Invoice.select().count() == 0


def test_set_to_end_at_the_trials_end_it_ends_then_without_a_charge(app, customer, trial,
                                                                    start_trial):
    sub = start_trial(customer, trial)
    with time_machine.travel(day(10), tick=False):
        billing.cancel(sub, at_next_billing_date=True)
    sweep_on(day(14))
    sub = sub.refresh()
    assert (sub.status, sub.cancelled_at) == ("cancelled", day(14))
    assert charges(sub) == []


def test_the_trial_override_of_the_subscription_wins_over_the_products(app, customer, product,
                                                                       trial, start_trial):
    seven = start_trial(customer, product, trial_period_days=7)
    assert (seven.status, seven.next_billing_date, seven.trial_period_days) == ("active", day(7), 7)
    with time_machine.travel(DAY_0, tick=False):
        sub, payment = billing.create_subscription(customer, trial, seven.payment_method,
                                                   trial_period_days=0)
    assert payment.refresh().status == "succeeded" and sub.refresh().in_trial is False


def test_the_term_counts_from_the_trials_end(app, customer, trial, start_trial):
    sub = start_trial(customer, trial)
    assert sub.expires_at == datetime(2036, 3, 16, 10, tzinfo=UTC)


def test_a_declined_first_charge_puts_the_subscription_on_hold_like_a_renewal(
        app, customer, trial, start_trial, save_card):
    sub = start_trial(customer, trial, "pm_card_chargeDeclined")
    sweep_on(day(14))
    [declined] = charges(sub)
    assert declined.status == "failed"
    sub = sub.refresh()
    assert (sub.status, sub.in_trial) == ("on_hold", False)
    assert LicenseKey.get(LicenseKey.subscription == sub.id).status == "expired"
    with time_machine.travel(day(15), tick=False):  # the customer pays with another card
        billing.update_payment_method(sub, save_card(customer, "pm_card_visa"))
    assert sub.refresh().status == "active"
    assert [p.status for p in charges(sub)] == ["failed", "succeeded"]


def test_a_trial_gives_its_license_key_valid_until_the_first_charge_is_due(
        app, customer, trial, start_trial):
    sub = start_trial(customer, trial)
    key = LicenseKey.get(LicenseKey.subscription == sub.id)
    assert key.status == "active" and key.expires_at > day(14)
    with time_machine.travel(day(10), tick=False):
        billing.cancel(sub)
    assert key.refresh().status == "expired"


def test_three_days_before_the_trial_ends_the_customer_is_told_once_what_is_then_charged(
        app, customer, trial, start_trial):
    sub = start_trial(customer, trial)
    sweep_on(day(10))  # four days before
    assert not Event.select().where(Event.type == "subscription.trial_ending").exists()
    for when in (day(11), day(11) + timedelta(minutes=1), day(13)):
        sweep_on(when)
    [notice] = [m for m in outbox_messages(app) if "free trial" in m["Subject"]]
    assert notice["Subject"] == "Your free trial of Pro ends on March 16, 2026"
    body = " ".join(notice.get_body(("plain",)).get_content().split())
    assert "we will then charge €18.00 to your payment method" in body
    assert "cancel before that date and you will not be charged" in body
    assert "http://portal.test/session/" in body
    [event] = Event.select().where(Event.type == "subscription.trial_ending")
    assert event.customer_only and event.data["renewal_amount"] == 1800
    assert sub.refresh().renewal_reminded_for == day(14)


def test_no_trial_notice_after_a_cancellation(app, customer, trial, start_trial):
    sub = start_trial(customer, trial)
    with time_machine.travel(day(5), tick=False):
        billing.cancel(sub, at_next_billing_date=True)
    sweep_on(day(12))
    assert not Event.select().where(Event.type == "subscription.trial_ending").exists()


def test_a_yearly_plans_renewal_reminder_waits_for_after_the_trial(app, business, customer,
                                                                   start_trial):
    yearly = Product.create(business=business, mode="test", name="Pro yearly", price=12000,
                            currency="EUR", is_recurring=True, payment_frequency_interval="Year",
                            subscription_period_count=10, trial_period_days=14)
    start_trial(customer, yearly)
    sweep_on(day(1))  # within 30 days of the trial's end: the trial notice is what is due
    assert not Event.select().where(Event.type == "subscription.renewal_reminder").exists()
    sweep_on(day(12))
    assert Event.select().where(Event.type == "subscription.trial_ending").count() == 1


def test_a_plan_change_in_the_trial_charges_nothing_and_the_first_charge_is_the_new_plans(
        app, business, customer, trial, start_trial):
    team = Product.create(business=business, mode="test", name="Team", price=4000, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)
    sub = start_trial(customer, trial)
    with time_machine.travel(day(3), tick=False):
        assert billing.change_plan(sub, team) is None
    assert charges(sub) == []
    sweep_on(day(14))
    [first] = charges(sub)
    assert (first.amount, first.status) == (4800, "succeeded")
    assert sub.refresh().product_id == team.id


def test_cancelled_while_the_first_charge_waits_for_3d_secure_nothing_is_kept(
        app, customer, trial, start_trial):
    sub = start_trial(customer, trial, "4000002760003184")
    sweep_on(day(14))
    [first] = charges(sub)
    assert first.status == "requires_customer_action"
    with time_machine.travel(day(14) + timedelta(minutes=2), tick=False):
        with pytest.raises(billing.BillingError) as refused:
            billing.cancel(sub, at_next_billing_date=True)
        assert refused.value.code == "PREVIOUS_PAYMENT_PENDING"
        billing.cancel(sub)
    assert sub.refresh().status == "cancelled"
    assert first.refresh().status == "failed" and Invoice.select().count() == 0


def test_a_trial_paused_keeps_its_days_left_for_when_it_resumes(app, customer, trial,
                                                                start_trial):
    sub = start_trial(customer, trial)
    with time_machine.travel(day(4), tick=False):
        billing.pause(sub)
    sweep_on(day(14))
    assert charges(sub) == []
    with time_machine.travel(day(20), tick=False):
        billing.resume(sub)
    sub = sub.refresh()
    assert (sub.status, sub.in_trial, sub.next_billing_date) == ("active", True, day(30))
    sweep_on(day(29))
    assert charges(sub) == []
    sweep_on(day(30))
    assert [p.status for p in charges(sub)] == ["succeeded"]


def test_a_trial_without_a_card_where_the_product_allows_it_goes_on_hold_at_its_end(
        app, client, business, customer, trial):
    trial.trial_payment_method_optional = True
    trial.save()
    with time_machine.travel(DAY_0, tick=False):
        sub, payment = billing.create_subscription(customer, trial, None)
        sign_in(client, customer)
        page = visible(client.get(f"/portal/subscriptions/{sub.id}"))
    assert payment is None and sub.refresh().status == "active"
    assert "No payment method" in page and "Trial ends on March 16, 2026" in page
    sweep_on(day(14))
    [unpaid] = charges(sub)
    assert (unpaid.status, unpaid.failure_code) == ("failed", "no_payment_method")
    assert sub.refresh().status == "on_hold"


def test_a_trial_needs_a_card_unless_the_product_says_otherwise(app, customer, trial):
    with pytest.raises(billing.BillingError) as refused:
        billing.create_subscription(customer, trial, None)
    assert refused.value.code == "NO_ELIGIBLE_PAYMENT_METHODS"
    assert Subscription.select().count() == 0


# --- The API ---------------------------------------------------------------------------------

MONTHLY = {"type": "recurring_price", "currency": "EUR", "price": 1500,
           "payment_frequency_count": 1, "payment_frequency_interval": "Month",
           "subscription_period_count": 1, "subscription_period_interval": "Year"}


def test_the_api_sells_a_product_with_a_trial_and_overrides_it_per_subscription(app, api):
    made = api.post("/products", {"name": "Pro", "tax_category": "saas",
                                      "price": {**MONTHLY, "trial_period_days": 14}})
    assert made.status_code == 200 and made.json["price"]["trial_period_days"] == 14
    order = {"billing": {"country": "FR"}, "customer": {"email": "bo@example.com", "name": "Bo"},
             "product_id": made.json["product_id"], "quantity": 1,
             "payment_method_id": "pm_card_visa"}
    with time_machine.travel(DAY_0, tick=False):
        created = api.post("/subscriptions", order)
        short = api.post("/subscriptions", {**order, "trial_period_days": 3})
        none = api.post("/subscriptions", {**order, "trial_period_days": 0})
    assert created.status_code == 200 and created.json["payment_id"] == ""
    sub = api.get(f"/subscriptions/{created.json['subscription_id']}").json
    assert (sub["status"], sub["trial_period_days"], sub["next_billing_date"]) == (
        "active", 14, "2026-03-16T10:00:00Z")
    assert api.get(f"/subscriptions/{short.json['subscription_id']}").json[
        "next_billing_date"] == "2026-03-05T10:00:00Z"
    assert none.json["payment_id"].startswith("pay_")
    assert len(api.get("/payments").json["items"]) == 1  # only the one without a trial
    too_long = api.post("/subscriptions", {**order, "trial_period_days": 10001})
    assert too_long.status_code == 422


def test_the_api_starts_a_cardless_trial_only_where_the_product_allows_it(app, api):
    strict = api.post("/products", {"name": "Pro", "tax_category": "saas",
                                        "price": {**MONTHLY, "trial_period_days": 14}}).json
    relaxed = api.post("/products", {"name": "Lite", "tax_category": "saas", "price": {
        **MONTHLY, "trial_period_days": 14, "trial_payment_method_optional": True}}).json
    assert relaxed["price"]["trial_payment_method_optional"] is True
    order = {"billing": {"country": "FR"}, "customer": {"email": "cy@example.com"}, "quantity": 1}
    refused = api.post("/subscriptions", {**order, "product_id": strict["product_id"]})
    assert refused.status_code == 422 and refused.json["code"] == "NO_ELIGIBLE_PAYMENT_METHODS"
    made = api.post("/subscriptions", {**order, "product_id": relaxed["product_id"]})
    assert made.status_code == 200
    sub = api.get(f"/subscriptions/{made.json['subscription_id']}").json
    assert (sub["status"], sub["has_payment_method"]) == ("active", False)


# --- The portal ------------------------------------------------------------------------------


def visible(answer) -> str:
    """A page's visible words, its entities read as characters."""
    return html.unescape(text(answer))


def test_the_portal_says_when_the_trial_ends_and_what_is_then_charged(app, client, customer,
                                                                      trial, start_trial):
    sub = start_trial(customer, trial)
    with time_machine.travel(day(2), tick=False):
        sign_in(client, customer)
        listed = visible(client.get("/portal/subscriptions"))
        page = visible(client.get(f"/portal/subscriptions/{sub.id}"))
        home = visible(client.get("/portal/"))
    assert "Trial ends on March 16, 2026" in listed, listed
    assert "Trial ends on March 16, 2026" in home, home
    assert "Free trial: it ends on March 16, 2026" in page
    assert ("Nothing is charged during the trial. On March 16, 2026 your first payment of "
            "€18.00 is charged, unless you cancel before.") in page
    assert "Trial ends on March 16, 2026" in page
    sweep_on(day(14))
    with time_machine.travel(day(15), tick=False):
        sign_in(client, customer)
        page = visible(client.get(f"/portal/subscriptions/{sub.id}"))
        billing_page = visible(client.get("/portal/billing"))
    assert "Free trial" not in page and "Renews on" not in page
    assert "Next renewal April 16, 2026" in page
    assert "€18.00 Paid Invoice T-000001" in billing_page


def test_the_portal_says_when_the_trial_ends_in_the_customers_language(app, client, business,
                                                                       trial, start_trial):
    claire = Customer.create(business=business, mode="test", email="claire@example.fr",
                             name="Claire", preferred_locale="fr")
    sub = start_trial(claire, trial)
    with time_machine.travel(day(2), tick=False):
        sign_in(client, claire)
        listed = visible(client.get("/portal/subscriptions"))
        page = visible(client.get(f"/portal/subscriptions/{sub.id}"))
    assert "Fin de l’essai le 16 mars 2026" in listed
    assert "Essai gratuit : il se termine le 16 mars 2026" in page


def test_cancelling_in_the_portal_during_the_trial_charges_nothing(app, client, customer, trial,
                                                                   start_trial):
    sub = start_trial(customer, trial)
    with time_machine.travel(day(10), tick=False):
        sign_in(client, customer)
        path = f"/portal/subscriptions/{sub.id}/cancel"
        answer = client.post(path, data={"csrf_token": csrf_token(client.get(path).text),
                                         "when": "now"})
        assert answer.status_code in (302, 303)
    sweep_on(day(14))
    assert sub.refresh().status == "cancelled" and charges(sub) == []


def test_the_dashboard_lists_each_products_free_trial(client, business, product, trial):
    from test_portal_flows import sign_in_to_dashboard

    sign_in_to_dashboard(client, business)
    page = text(client.get("/dashboard/products"))
    assert f"{trial.name} " in page and "14 days" in page and "none" in page
