"""The customer portal: overview, billing history and invoices, subscriptions (cancel, undo,
change plan, update the payment method), license keys, profile, in English and French."""

import html
import io
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import time_machine
from conftest import csrf_token, text
from pypdf import PdfReader

from core import auth, billing
from core.models import (
    Customer,
    Invoice,
    LicenseKey,
    LicenseKeyInstance,
    Payment,
    PortalToken,
    Product,
    Subscription,
    utcnow,
)
from core.signin import portal_path
from plugins.mail import outbox_messages
from plugins.sandbox import charges


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app




def sign_in(client, customer, **link):
    """Sign ``client`` in as ``customer`` through a sign-in link; returns where it landed."""
    path = urlsplit(auth.sign_in_link(customer, **link)).path
    answer = client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    assert answer.status_code == 303
    return answer.headers["Location"]


def post(client, path, data=None, page=None):
    """POST a portal form with the CSRF token of ``page`` (default: the form's own page)."""
    token = csrf_token(client.get(page or path).text)
    return client.post(path, data={"csrf_token": token, **(data or {})})



@pytest.fixture
def ann(client, customer):
    sign_in(client, customer)
    return client


@pytest.fixture
def team(business):
    """A dearer monthly plan of the same business, mode and currency."""
    return Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)


def pdf_text(pdf: bytes) -> str:
    """The PDF's words, case folded (headings are printed in capitals)."""
    pages = PdfReader(io.BytesIO(pdf)).pages
    return " ".join(" ".join(page.extract_text() for page in pages).split()).casefold()


# --- Overview and billing history ----------------------------------------------------------------


def test_overview_puts_an_on_hold_subscription_first_with_one_button_to_fix_it(ann, on_hold):
    sub = on_hold()
    page = ann.get("/portal/")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    words = text(page)
    assert words.index("Your Pro subscription is on hold") < words.index("Recent invoices")
    assert f'href="/portal/subscriptions/{sub.id}/payment-method"' in page.text
    assert "Update payment method" in words


def test_overview_shows_active_subscriptions_recent_invoices_and_license_keys(
        ann, customer, product, subscribe):
    sub, payment = subscribe(customer, product)
    key = LicenseKey.create(business=customer.business_id, mode="test", customer=customer,
                            product=product, key="ABCDE-FGHJK-MNPQR-STVWX-YZ012")
    words = text(ann.get("/portal/"))
    assert f"Pro Renews on {sub.next_billing_date:%B} {sub.next_billing_date.day}" in words
    assert "€18.00" in words and "Invoice T-000001" in words
    assert key.key in words


def test_billing_history_lists_every_payment_newest_first_a_page_at_a_time(ann, customer, product,
                                                                           subscribe):
    sub, first = subscribe(customer, product)
    start = utcnow()
    for n in range(24):
        Payment.create(business=customer.business_id, mode="test", customer=customer,
                       subscription=sub, product=product, kind="renewal", status="failed",
                       amount=1800 + n, currency="EUR", description="Pro", idempotency_key=f"k{n}",
                       created_at=start + timedelta(days=n + 1))
    page_one = text(ann.get("/portal/billing"))
    assert "Page 1 of 2" in page_one and "€18.23" in page_one and "Failed" in page_one
    assert page_one.index("€18.23") < page_one.index("€18.22")
    assert "€18.03" not in page_one
    page_two = text(ann.get("/portal/billing?page=2"))
    assert "€18.03" in page_two and "Invoice T-000001" in page_two and "Paid" in page_two
    assert ann.get("/portal/billing?page=3").status_code == 404


def pager_link(answer, rel: str) -> str | None:
    found = re.search(rf'href="([^"]+)" rel="{rel}"', answer.text)
    return html.unescape(found[1]) if found else None


def amounts(answer) -> list[str]:
    return re.findall(r"€\d+\.\d\d", text(answer))


def test_billing_history_pages_continue_from_the_last_payment_shown_as_new_ones_arrive(
        ann, customer, product):
    start = utcnow() - timedelta(days=100)
    for n in range(45):  # pairs share a creation time: ties are ordered by id
        Payment.create(business=customer.business_id, mode="test", customer=customer,
                       product=product, kind="new", status="failed", amount=1000 + n, currency="EUR",
                       description="Pro", idempotency_key=f"k{n}", created_at=start + timedelta(days=n // 2))
    newest_first = [f"€{(1000 + n) / 100:.2f}" for n in range(45)]
    by_time = sorted(Payment.select(), key=lambda p: (p.created_at, p.id), reverse=True)
    expected = [f"€{p.amount / 100:.2f}" for p in by_time]
    assert sorted(expected) == sorted(newest_first)
    pages, link = [], "/portal/billing"
    while link:
        answer = ann.get(link)
        assert answer.status_code == 200
        pages.append(amounts(answer))
        if len(pages) == 1:  # a payment arriving meanwhile shifts nothing on the next pages
            Payment.create(business=customer.business_id, mode="test", customer=customer,
                           product=product, kind="new", status="failed", amount=9999, currency="EUR",
                           description="Pro", idempotency_key="late")
        link = pager_link(answer, "next")
    assert [len(page) for page in pages] == [20, 20, 5]
    assert [a for page in pages for a in page] == expected
    assert "after=" in pager_link(ann.get("/portal/billing?page=2"), "next")
    back = ann.get(pager_link(ann.get(f"/portal/billing?page=2&after={by_time[19].id}"), "next"))
    assert "Page 3 of 3" in text(back) and amounts(back) == pages[2]
    newer = ann.get(pager_link(back, "prev"))
    assert "Page 2 of 3" in text(newer) and amounts(newer) == pages[1]


def test_a_billing_history_cursor_that_is_not_the_customers_own_payment_answers_404(
        ann, customer, business, product):
    from core.models import Customer

    other = Customer.create(business=business, mode="test", email="eve@example.com")
    theirs = Payment.create(business=business, mode="test", customer=other, kind="new",
                            status="failed", amount=1000, currency="EUR", idempotency_key="eve")
    Payment.create(business=business, mode="test", customer=customer, kind="new", status="failed",
                   amount=1000, currency="EUR", idempotency_key="ann")
    assert ann.get(f"/portal/billing?after={theirs.id}").status_code == 404
    assert ann.get("/portal/billing?before=pay_unknown").status_code == 404


def test_an_invoice_downloads_as_a_pdf_with_its_number_amounts_and_names(ann, customer, product,
                                                                        subscribe):
    _, payment = subscribe(customer, product)
    invoice = Invoice.get(Invoice.payment == payment)
    answer = ann.get(f"/portal/invoices/{invoice.id}.pdf")
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    assert answer.headers["Cache-Control"] == "no-store"
    assert 'filename="invoice-T-000001.pdf"' in answer.headers["Content-Disposition"]
    words = pdf_text(answer.data)
    for expected in ("Invoice", "T-000001", "€15.00", "€3.00", "€18.00", "Acme Software Ltd",
                     "Ann Example", "Visa •••• 4242", "Paid"):
        assert expected.casefold() in words, expected


def test_a_french_customer_gets_the_invoice_pdf_in_french(client, business, product, save_card):
    marie = Customer.create(business=business, mode="test", email="marie@example.fr",
                            name="Marie Curie", preferred_locale="fr")
    _, payment = billing.create_subscription(marie, product, save_card(marie))
    invoice = Invoice.get(Invoice.payment == payment)
    sign_in(client, marie)
    words = pdf_text(client.get(f"/portal/invoices/{invoice.id}.pdf").data)
    for expected in ("Facture", "T-000001", "Facturé à", "Marie Curie", "Acme Software Ltd",
                     "Sous-total", "15,00 €", "3,00 €", "18,00 €", "Payé"):
        assert expected.casefold() in words, expected


# --- Subscriptions -------------------------------------------------------------------------------


def test_subscription_page_shows_plan_price_quantity_addons_status_renewal_and_card(
        ann, customer, business, product, subscribe):
    from core.models import Addon

    seats = Addon.create(business=business, mode="test", name="Extra seat", price=500, currency="EUR")
    sub, _ = subscribe(customer, product, quantity=2, addons=[{"addon_id": seats.id, "quantity": 3}])
    words = text(ann.get(f"/portal/subscriptions/{sub.id}"))
    renewal = f"{sub.next_billing_date:%B} {sub.next_billing_date.day}, {sub.next_billing_date.year}"
    for expected in ("Plan Pro", "Price €54.00 every month", "including €9.00 tax", "Quantity 2",
                     "Extra seat × 3", "Status Active", f"Next renewal {renewal}",
                     "Visa •••• 4242", "Edit"):
        assert expected in words, expected


def test_subscriptions_are_split_into_current_and_past(ann, customer, product, subscribe):
    kept, _ = subscribe(customer, product)
    gone, _ = subscribe(customer, product)
    billing.cancel(gone)
    words = text(ann.get("/portal/subscriptions"))
    assert words.index("Current") < words.index("Renews on") < words.index("Past") < words.index(
        "Cancelled on")


def test_cancelling_at_the_next_billing_date_says_when_and_can_be_undone(ann, customer, product,
                                                                         subscribe):
    sub, _ = subscribe(customer, product)
    page = ann.get(f"/portal/subscriptions/{sub.id}/cancel")
    date = f"{sub.next_billing_date:%B} {sub.next_billing_date.day}, {sub.next_billing_date.year}"
    assert f"It ends on {date}. Until then everything keeps working" in text(page)
    answer = post(ann, f"/portal/subscriptions/{sub.id}/cancel",
                  {"when": "period_end", "feedback": "too_expensive", "comment": "Too dear"})
    assert answer.status_code == 303
    sub = sub.refresh()
    assert sub.status == "active" and sub.cancel_at_next_billing_date
    assert (sub.cancellation_feedback, sub.cancellation_comment) == ("too_expensive", "Too dear")
    assert sub.cancelled_by == {"actor_type": "customer", "email": "ann@example.com",
                                "name": "Ann Example"}
    detail = text(ann.get(f"/portal/subscriptions/{sub.id}"))
    assert f"This subscription ends on {date}" in detail
    post(ann, f"/portal/subscriptions/{sub.id}/undo-cancel", page=f"/portal/subscriptions/{sub.id}")
    assert not sub.refresh().cancel_at_next_billing_date
    assert "Your subscription continues" in text(ann.get(f"/portal/subscriptions/{sub.id}"))


def test_cancelling_now_ends_the_subscription_at_once(ann, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    post(ann, f"/portal/subscriptions/{sub.id}/cancel", {"when": "now"})
    assert sub.refresh().status == "cancelled"
    assert "Your subscription is cancelled" in text(ann.get(f"/portal/subscriptions/{sub.id}"))


def test_cancel_without_choosing_when_is_refused_with_a_message(ann, customer, product, subscribe):
    sub, _ = subscribe(customer, product)
    answer = post(ann, f"/portal/subscriptions/{sub.id}/cancel", {"when": "someday"})
    assert answer.status_code == 400 and "Choose when to cancel." in answer.text
    assert sub.refresh().status == "active" and not sub.refresh().cancel_at_next_billing_date


def form_classes_state():
    """Every validator of every form class, with its attributes: what no request may change."""
    from flask_wtf import FlaskForm

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    return {(form.__module__, form.__name__, name): repr([vars(v) for v in
                                                         field.kwargs.get("validators") or ()])
            for form in subclasses(FlaskForm) for name, field in vars(form).items()
            if hasattr(field, "kwargs")}


def test_one_customers_cancel_form_never_changes_anothers(app, business, customer, product, on_hold,
                                                         subscribe):
    """Customer X's on-hold subscription can only be cancelled now; customer Y's active one may
    still end at its period end, whatever X's form did just before."""
    before = form_classes_state()
    held = on_hold()
    x = app.test_client()
    sign_in(x, customer)
    assert "At the end of the current period" not in text(x.get(f"/portal/subscriptions/{held.id}/cancel"))
    refused = post(x, f"/portal/subscriptions/{held.id}/cancel", {"when": "period_end"})
    assert refused.status_code == 400 and "Choose when to cancel." in refused.text

    bob = Customer.create(business=business, mode="test", email="bob@example.com", name="Bob")
    sub, _ = subscribe(bob, product)
    y = app.test_client()
    sign_in(y, bob)
    assert post(y, f"/portal/subscriptions/{sub.id}/cancel", {"when": "period_end"}).status_code == 303
    assert sub.refresh().cancel_at_next_billing_date and sub.status == "active"
    assert form_classes_state() == before


def test_only_recurring_plans_of_the_same_business_mode_and_currency_are_offered(
        ann, customer, business, product, team, subscribe):
    sub, _ = subscribe(customer, product)
    hidden = [Product.create(business=business, mode="test", name=name, price=900, currency=currency,
                             is_recurring=recurring, archived=archived)
              for name, currency, recurring, archived in (
                  ("Dollar plan", "USD", True, False), ("Desktop app", "EUR", False, False),
                  ("Old plan", "EUR", True, True))]
    Product.create(business=business, mode="live", name="Live plan", price=900, currency="EUR",
                   is_recurring=True)
    words = text(ann.get(f"/portal/subscriptions/{sub.id}/plan"))
    assert "Team" in words
    for name in ("Dollar plan", "Desktop app", "Old plan", "Live plan"):
        assert name not in words
    assert ann.get(f"/portal/subscriptions/{sub.id}/plan/{hidden[0].id}").status_code == 404


def test_an_upgrade_shows_the_amount_due_then_is_charged_at_once(ann, customer, product, team,
                                                                 subscribe):
    sub, _ = subscribe(customer, product)
    preview = text(ann.get(f"/portal/subscriptions/{sub.id}/plan/{team.id}?quantity=1"))
    expected = billing.preview_plan_change(sub, team, 1)
    due = f"€{expected.amount_due / 100:.2f}"
    assert f"Due now {due}" in preview and "Then €54.00 every month" in preview
    answer = post(ann, f"/portal/subscriptions/{sub.id}/plan/{team.id}", {"quantity": "1"},
                  page=f"/portal/subscriptions/{sub.id}/plan/{team.id}")
    assert answer.status_code == 303 and "/portal/payments/" in answer.headers["Location"]
    assert "Your plan is now Team" in text(ann.get(answer.headers["Location"]))
    assert sub.refresh().product_id == team.id


def test_a_downgrade_is_scheduled_for_the_next_billing_date(ann, customer, product, team, subscribe):
    sub, _ = subscribe(customer, team)
    page = f"/portal/subscriptions/{sub.id}/plan/{product.id}"
    assert "Nothing to pay now" in text(ann.get(page))
    post(ann, page, {"quantity": "1"})
    assert sub.refresh().product_id == team.id and sub.refresh().scheduled_change["product_id"] == product.id
    assert "Your plan changes to Pro on" in text(ann.get(f"/portal/subscriptions/{sub.id}"))
    assert len(charges()) == 1


# --- The payment method -------------------------------------------------------------------------


def test_a_new_card_that_declines_the_arrears_is_not_kept_and_the_page_says_so(ann, customer, on_hold,
                                                                              save_card):
    sub = on_hold()
    card = save_card(customer, "pm_card_insufficientFunds")  # as the provider's card form saves it
    page = f"/portal/subscriptions/{sub.id}/payment-method"
    answer = post(ann, page, {"payment_method": card.id},
                  page=f"{page}/added?payment_method={card.id}")
    result = text(ann.get(answer.headers["Location"]))
    assert "The payment did not go through" in result
    assert "Visa •••• 9995 is not kept among your payment methods." in result
    assert "•••• 9995" not in text(ann.get("/portal/payment-methods"))
    assert ann.get(f"{page}/added?payment_method={card.id}").status_code == 404
    assert sub.refresh().status == "on_hold" and sub.payment_method_id != card.id



def test_an_active_subscription_switches_to_a_saved_card(ann, customer, product, subscribe, save_card):
    sub, _ = subscribe(customer, product)
    card = save_card(customer, "pm_card_mastercard")
    page = f"/portal/subscriptions/{sub.id}/payment-method"
    assert "Mastercard •••• 4444" in text(ann.get(page))
    answer = post(ann, page, {"payment_method": card.id})
    assert answer.status_code == 303
    assert sub.refresh().payment_method_id == card.id
    assert "Your payment method is now Mastercard •••• 4444." in text(ann.get(answer.headers["Location"]))
    assert len(charges()) == 1


def test_a_new_card_is_added_on_the_providers_page_and_comes_back_selected(ann, customer, product,
                                                                            subscribe):
    sub, _ = subscribe(customer, product)
    answer = post(ann, f"/portal/subscriptions/{sub.id}/payment-method/new",
                  page=f"/portal/subscriptions/{sub.id}/payment-method")
    card_form = answer.headers["Location"]
    assert answer.status_code == 303 and card_form.startswith("/sandbox/cards/new")
    saved = ann.post(card_form, data={"csrf_token": csrf_token(ann.get(card_form).text),
                                      "number": "5555 5555 5555 4444", "expiry": "12/40", "cvc": "123"})
    back = saved.headers["Location"]
    assert back.startswith(f"http://localhost/portal/subscriptions/{sub.id}/payment-method/added?payment_method=pm_")
    page = ann.get(back)
    assert "Card added: Mastercard •••• 4444" in text(page)
    method_id = back.rsplit("=", 1)[1]
    assert re.search(rf'value="{method_id}" checked', page.text)
    assert sub.refresh().payment_method_id != method_id  # nothing changes until confirmed


def test_a_card_of_another_customer_cannot_come_back_from_the_provider(ann, business, customer,
                                                                        product, subscribe, save_card):
    sub, _ = subscribe(customer, product)
    bob = Customer.create(business=business, mode="test", email="bob@example.com")
    foreign = save_card(bob)
    answer = ann.get(f"/portal/subscriptions/{sub.id}/payment-method/added?payment_method={foreign.id}")
    assert answer.status_code == 404
    confirm = post(ann, f"/portal/subscriptions/{sub.id}/payment-method", {"payment_method": foreign.id})
    assert confirm.status_code == 404 and sub.refresh().payment_method_id != foreign.id


def test_without_a_provider_for_the_mode_the_page_says_so(make_app, business, save_card):
    app = make_app({"PAYMENT_PROVIDER_TEST": None})
    with app.app_context():
        customer = Customer.create(business=business, mode="test", email="ann@example.com")
        client = app.test_client()
        product = Product.create(business=business, mode="test", name="Pro", price=1500,
                                 currency="EUR", is_recurring=True)
        sub, _ = billing.create_subscription(customer, product, save_card(customer))
        sign_in(client, customer)
        page = f"/portal/subscriptions/{sub.id}/payment-method"
        assert "Adding a card is not available at the moment" in text(client.get(page))
        answer = post(client, f"/portal/subscriptions/{sub.id}/payment-method/new", page=page)
        assert answer.status_code == 303 and answer.headers["Location"] == page


def test_an_on_hold_subscription_stays_on_hold_after_a_declined_card_then_a_good_one_reactivates_it(
        ann, customer, on_hold, save_card):
    sub = on_hold()
    page = f"/portal/subscriptions/{sub.id}/payment-method"
    assert "we charge the €18.00 due" in text(ann.get(page))
    declined = save_card(customer, "4000 0000 0000 9995")
    answer = post(ann, page, {"payment_method": declined.id})
    result = text(ann.get(answer.headers["Location"]))
    assert "The payment did not go through" in result
    assert "We could not charge €18.00 to Visa •••• 9995: Your card has insufficient funds." in result
    assert "Use another payment method" in result and sub.refresh().status == "on_hold"

    good = save_card(customer, "pm_card_mastercard")
    answer = post(ann, page, {"payment_method": good.id})
    result = text(ann.get(answer.headers["Location"]))
    assert "Your subscription is active again" in result
    assert ("Your payment method is now Mastercard •••• 4444 and your Pro subscription is active again"
            in result)
    sub = sub.refresh()
    assert sub.status == "active" and sub.payment_method_id == good.id


def test_the_progress_page_refreshes_itself_until_the_charge_ends(ann, customer, on_hold, save_card):
    sub = on_hold()
    payment = Payment.create(business=customer.business_id, mode="test", customer=customer,
                             subscription=sub, product=sub.product_id, kind="arrears",
                             payment_method=save_card(customer), amount=1800, currency="EUR",
                             idempotency_key="arrears:test", status="processing")
    page = ann.get(f"/portal/payments/{payment.id}")
    assert '<meta http-equiv="refresh" content="3">' in page.text
    assert f'data-poll="/portal/payments/{payment.id}/status"' in page.text
    assert "Processing your payment" in text(page)
    assert ann.get(f"/portal/payments/{payment.id}/status").json == {"status": "processing", "done": False}
    Payment.update(status="failed", failure_code="card_declined").where(Payment.id == payment.id).execute()
    assert ann.get(f"/portal/payments/{payment.id}/status").json == {"status": "failed", "done": True}
    assert "refresh" not in ann.get(f"/portal/payments/{payment.id}").text


# --- The payment-failed e-mail's link ------------------------------------------------------------


def test_the_payment_failed_email_signs_in_straight_to_updating_that_payment_method(
        app, client, customer, on_hold, heard):
    sub = on_hold()
    [failed] = heard.of_type("payment.failed")
    landing = sign_in_with(client, failed.secrets["link"])
    assert landing == f"/portal/subscriptions/{sub.id}/payment-method"
    assert "Payment method for Pro" in text(client.get(landing))


def sign_in_with(client, link):
    path = urlsplit(link).path
    answer = client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    return answer.headers["Location"]


def test_a_failed_payment_mails_one_link_and_no_on_hold_email(make_app, customer, product, subscribe,
                                                             save_card):
    app = make_app()
    with app.app_context():
        sub, _ = subscribe(customer, product)
        billing.update_payment_method(sub, save_card(customer, "pm_card_chargeDeclined"))
        before = len(outbox_messages(app))
        with time_machine.travel(sub.next_billing_date, tick=False):
            billing.sweep()
        [mail] = outbox_messages(app)[before:]
        assert mail["Subject"] == "Your payment to Acme Software did not go through"
        assert "/session/" in mail.get_body(("plain",)).get_content()
        assert PortalToken.select().where(PortalToken.purpose == "magic_link").count() == 1


def test_notifiers_that_never_read_the_link_mint_no_token(make_app, customer, product, subscribe,
                                                          save_card, heard):
    app = make_app({"DISABLED_PLUGINS": ["mail"]}, plugins=[heard])
    with app.app_context():
        sub, _ = subscribe(customer, product)
        billing.update_payment_method(sub, save_card(customer, "pm_card_chargeDeclined"))
        with time_machine.travel(sub.next_billing_date, tick=False):
            billing.sweep()
        assert heard.of_type("payment.failed") and PortalToken.select().count() == 0


@pytest.mark.parametrize("path", ["https://evil.example/portal/", "//evil.example/portal/", "/dashboard",
                                  "/portal/../dashboard", "/portal\\..\\x", "portal/", None])
def test_a_link_only_ever_leads_inside_the_portal(path):
    assert portal_path(path) is None


def test_a_sign_in_link_with_a_foreign_next_lands_on_the_overview(client, customer):
    assert sign_in(client, customer, next="https://evil.example/") == "/portal/"


# --- License keys ----------------------------------------------------------------------------


def test_license_keys_show_product_status_expiry_activations_and_instances(ann, customer, product):
    key = LicenseKey.create(business=customer.business_id, mode="test", customer=customer,
                            product=product, key="ABCDE-FGHJK-MNPQR-STVWX-YZ012", activations_limit=3,
                            instances_count=1, expires_at=utcnow() + timedelta(days=30))
    LicenseKeyInstance.create(license_key=key, name="Work laptop")
    page = ann.get("/portal/licenses")
    words = text(page)
    for expected in ("Pro", "Active", "Expires", "1 of 3 used", "Work laptop", "Deactivate"):
        assert expected in words, expected
    assert f'value="{key.key}" readonly' in page.text and f'data-copy="key-{key.id}"' in page.text


def test_deactivating_an_instance_frees_an_activation(ann, customer, product):
    from core import licensing

    key = LicenseKey.create(business=customer.business_id, mode="test", customer=customer,
                            product=product, key="ABCDE-FGHJK-MNPQR-STVWX-YZ012", activations_limit=3)
    instance = licensing.activate(key.key, "Work laptop")
    answer = post(ann, f"/portal/licenses/{key.id}/instances/{instance.id}/deactivate",
                  page="/portal/licenses")
    assert answer.status_code == 303
    assert LicenseKeyInstance.select().count() == 0 and key.refresh().instances_count == 0
    assert "Work laptop is no longer activated." in text(ann.get("/portal/licenses"))


# --- Profile ---------------------------------------------------------------------------------


def test_profile_saves_name_language_and_phone_in_e164(ann, customer):
    answer = post(ann, "/portal/profile", {"name": "Ann Smith", "phone": "06 12 34 56 78",
                                            "locale": "fr"})
    assert answer.status_code == 400 and "Enter a valid phone number" in answer.text
    assert customer.refresh().name == "Ann Example"
    post(ann, "/portal/profile", {"name": "Ann Smith", "phone": "+33 6 12 34 56 78", "locale": "fr"})
    saved = customer.refresh()
    assert (saved.name, saved.phone_number, saved.preferred_locale) == ("Ann Smith", "+33612345678", "fr")
    assert "Votre profil est enregistré." in text(ann.get("/portal/profile"))


def test_a_phone_number_is_read_with_the_customers_country(ann, customer):
    Customer.update(billing_address={"country": "FR"}).where(Customer.id == customer.id).execute()
    post(ann, "/portal/profile", {"name": "Ann", "phone": "06 12 34 56 78", "locale": "en"})
    assert customer.refresh().phone_number == "+33612345678"


def test_a_new_email_address_is_confirmed_by_link_before_it_changes(ann, customer, heard):
    answer = post(ann, "/portal/profile/email", {"email": "ann.new@example.com"}, page="/portal/profile")
    assert answer.status_code == 303
    assert "We sent a confirmation link to ann.new@example.com" in text(ann.get("/portal/profile"))
    [note] = heard.of_type("customer.email_change")
    assert note.data["email"] == "ann.new@example.com"
    assert customer.refresh().email == "ann@example.com"


def test_a_name_with_markup_reaches_the_email_as_words_not_a_link(ann, customer):
    name = '<a href="https://evil.example/refund">Claim your refund</a>'
    post(ann, "/portal/profile", {"name": name, "phone": "", "locale": "en"})
    assert customer.refresh().name == name
    post(ann, "/portal/profile/email", {"email": "ann.new@example.com"}, page="/portal/profile")
    [message] = outbox_messages(ann.application)
    html = message.get_body(("html",)).get_content()
    assert 'href="https://evil.example' not in html
    assert "Hello &lt;a href=&#34;https://evil.example/refund&#34;&gt;Claim your refund&lt;/a&gt;," in html


@pytest.mark.parametrize("name", ["Ann\r\nBcc: victim@example.com", "Ann\nExample", "Ann\tExample",
                                  "Ann\x00", "Ann\x85"])
def test_a_name_must_be_one_line_of_text(ann, customer, name):
    answer = post(ann, "/portal/profile", {"name": name, "phone": "", "locale": "en"})
    assert answer.status_code == 400
    assert "Use one line of text, without line breaks or control characters." in text(answer)
    assert customer.refresh().name == "Ann Example"
    post(ann, "/portal/profile/email", {"email": "ann.new@example.com"}, page="/portal/profile")
    assert len(outbox_messages(ann.application)) == 1  # later e-mails can still be written


def test_email_changes_are_limited_per_customer_with_a_clear_message(ann, customer, heard):
    answers = [post(ann, "/portal/profile/email", {"email": f"ann.{n}@example.com"},
                    page="/portal/profile") for n in range(12)]
    assert [a.status_code for a in answers] == [303] * 3 + [429] * 9
    assert "Too many e-mails were asked for. Please wait a while, then try again." in text(answers[-1])
    assert answers[-1].headers["Retry-After"]
    assert len(heard.of_type("customer.email_change")) == 3


def test_email_changes_are_limited_per_ip_across_customers(make_app, heard, business):
    app = make_app({"EMAIL_LIMIT_PER_IP": "4 per hour"}, plugins=[heard])
    with app.app_context():
        statuses = []
        for n in range(3):
            person = Customer.create(business=business, mode="test", email=f"c{n}@example.com")
            browser = app.test_client()
            sign_in(browser, person)
            statuses += [post(browser, "/portal/profile/email", {"email": f"new{n}.{i}@example.com"},
                              page="/portal/profile").status_code for i in range(2)]
    assert statuses == [303] * 4 + [429] * 2
    assert len(heard.of_type("customer.email_change")) == 4


def test_the_new_refusals_speak_french_to_a_french_customer(ann, customer):
    Customer.update(preferred_locale="fr").where(Customer.id == customer.id).execute()
    answer = post(ann, "/portal/profile", {"name": "Ann\nExample", "phone": "", "locale": "fr"})
    assert "Saisissez une seule ligne de texte, sans retour à la ligne" in text(answer)
    for n in range(4):
        answer = post(ann, "/portal/profile/email", {"email": f"ann.{n}@example.com"},
                      page="/portal/profile")
    assert answer.status_code == 429
    assert "Trop d’e-mails ont été demandés. Veuillez patienter un moment" in text(answer)


def test_send_me_a_sign_in_link_is_limited_per_customer(make_app, heard, customer):
    app = make_app({"SIGN_IN_LIMIT_PER_EMAIL": "100 per minute"}, plugins=[heard])
    with app.app_context():
        browser = app.test_client()
        sign_in(browser, customer)
        statuses = [post(browser, "/portal/profile/sign-in-again", page="/portal/profile").status_code
                    for _ in range(5)]
    assert statuses == [303] * 3 + [429] * 2
    assert len(heard.links()) == 3


def test_an_old_session_signs_in_again_before_changing_the_email(client, customer, heard):
    with time_machine.travel(utcnow(), tick=False) as clock:
        sign_in(client, customer)
        clock.shift(timedelta(minutes=16))
        answer = post(client, "/portal/profile/email", {"email": "ann.new@example.com"},
                      page="/portal/profile")
        assert answer.status_code == 403 and "first confirm it is you" in text(answer)
        post(client, "/portal/profile/sign-in-again", page="/portal/profile")
    assert heard.of_type("customer.email_change") == []
    assert sign_in_with(client.application.test_client(), heard.links()[0]) == "/portal/profile"


# --- Languages ---------------------------------------------------------------------------------


def test_the_browser_language_is_used_until_the_customer_has_one(client, customer):
    sign_in(client, customer)
    french = {"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}
    assert "Bonjour Ann Example" in text(client.get("/portal/", headers=french))
    Customer.update(preferred_locale="en").where(Customer.id == customer.id).execute()
    assert "Hello Ann Example" in text(client.get("/portal/", headers=french))


def test_the_language_switch_is_remembered_for_the_customer(ann, customer):
    answer = post(ann, "/language", {"locale": "fr", "next": "/portal/billing"}, page="/portal/")
    assert answer.status_code == 303 and answer.headers["Location"] == "/portal/billing"
    assert customer.refresh().preferred_locale == "fr"
    assert "Historique de facturation" in text(ann.get("/portal/billing"))


def test_sign_in_pages_follow_the_switch_before_anyone_signs_in(client, business):
    page = f"/test/login/{business.id}"
    post(client, "/language", {"locale": "fr", "next": page}, page=page)
    assert "Connexion à Acme Software" in text(client.get(page))


def test_dates_and_money_are_written_for_the_language(client, business, product, save_card):
    marie = Customer.create(business=business, mode="test", email="marie@example.fr",
                            preferred_locale="fr")
    sub, _ = billing.create_subscription(marie, product, save_card(marie))
    sign_in(client, marie)
    words = text(client.get(f"/portal/subscriptions/{sub.refresh().id}"))
    months = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre",
              "octobre", "novembre", "décembre"]
    renewal = sub.refresh().next_billing_date
    assert f"{renewal.day} {months[renewal.month - 1]} {renewal.year}" in words
    assert "18,00 € par mois" in words and "Mode test" in words


def test_a_french_customer_is_mailed_in_french(make_app, business, product, save_card):
    app = make_app()
    with app.app_context():
        marie = Customer.create(business=business, mode="test", email="marie@example.fr",
                                name="Marie", preferred_locale="fr")
        billing.create_subscription(marie, product, save_card(marie))
        subjects = [m["Subject"] for m in outbox_messages(app)]
        assert "Reçu de votre paiement à Acme Software" in subjects
        receipt = next(m for m in outbox_messages(app) if m["Subject"].startswith("Reçu"))
        assert "Montant payé : 18,00 €" in " ".join(receipt.get_body(("plain",)).get_content().split())


def test_every_demo_customer_finds_real_data_on_every_page(app):
    from core.demo import seed

    for entry in seed(app)["magic_links"]:
        client = app.test_client()
        sign_in_with(client, entry["link"])
        customer = Customer.get_by_id(entry["customer_id"])
        pages = ["/portal/", "/portal/billing", "/portal/subscriptions", "/portal/licenses",
                 "/portal/profile"]
        for sub in Subscription.select().where(Subscription.customer == customer):
            pages += [f"/portal/subscriptions/{sub.id}", f"/portal/subscriptions/{sub.id}/payment-method"]
        for path in pages:
            assert client.get(path).status_code == 200, (entry["email"], path)
        history = text(client.get("/portal/billing"))
        assert "Invoice" in history or "Facture" in history, entry["email"]
        if entry["email"] == "bruno@example.com":  # French, with a subscription on hold
            assert "Votre abonnement Acme Team est suspendu" in text(client.get("/portal/"))
