"""The portal in headless Chromium, in English and French, with screenshots of every page at
375 and 1280 px; and the on-hold flow end to end with a real RQ worker and a real SMTP server."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import csp_violations, dies_with_this_run
from playwright.sync_api import expect

from core import auth, billing, jobs, licensing
from core.models import Invoice, LicenseKey, Payment, Product, utcnow
from plugins.sandbox import charges

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent

WORDS = {
    "en": {"hello": "Hello Ann Example", "on_hold": "Your Pro subscription is on hold",
           "update": "Update payment method", "billing": "Billing", "history": "Billing history",
           "add": "Add a new card", "added": "Card added: Visa •••• 4242", "confirm": "Confirm changes",
           "active_again": "Your subscription is active again", "change_plan": "Change plan",
           "see_price": "See the price", "due_now": "Due now", "confirm_plan": "Confirm plan change",
           "plan_changed": "Your plan is changed", "cancel": "Cancel subscription",
           "cancel_title": "Cancel your Team subscription?", "confirm_cancel": "Confirm cancellation",
           "keep": "Keep my subscription", "licenses": "License keys", "copy": "Copy",
           "copied": "Copied", "deactivate": "Deactivate", "profile": "Profile", "phone": "Phone",
           "save": "Save", "saved": "Your profile is saved.", "subscriptions": "Subscriptions"},
    "fr": {"hello": "Bonjour Ann Example", "on_hold": "Votre abonnement Pro est suspendu",
           "update": "Mettre à jour le moyen de paiement", "billing": "Facturation",
           "history": "Historique de facturation", "add": "Ajouter une carte",
           "added": "Carte ajoutée : Visa •••• 4242", "confirm": "Confirmer les modifications",
           "active_again": "Votre abonnement est de nouveau actif",
           "change_plan": "Changer de formule", "see_price": "Voir le prix",
           "due_now": "À payer maintenant", "confirm_plan": "Confirmer le changement de formule",
           "plan_changed": "Votre formule est changée", "cancel": "Résilier l’abonnement",
           "cancel_title": "Résilier votre abonnement Team ?",
           "confirm_cancel": "Confirmer la résiliation", "keep": "Garder mon abonnement",
           "licenses": "Clés de licence", "copy": "Copier", "copied": "Copiée",
           "deactivate": "Désactiver", "profile": "Profil", "phone": "Téléphone",
           "save": "Enregistrer", "saved": "Votre profil est enregistré.",
           "subscriptions": "Abonnements"},
}


def add_test_card(page, number="4242 4242 4242 4242"):
    """Fill in the sandbox provider's own card form (the portal never sees the number); it
    speaks the customer's language, so its fields are found by name."""
    page.locator("input[name=number]").fill(number)
    page.locator("input[name=expiry]").fill("12/40")
    page.locator("input[name=cvc]").fill("123")
    page.locator("form.card button[type=submit]").click()


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_a_customer_manages_everything_in_the_portal(served, page, business, customer, product,
                                                      on_hold, lang):
    words = WORDS[lang]
    customer.preferred_locale = lang
    customer.save()
    sub = on_hold()
    team = Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True, tax_rate_bps=2000, subscription_period_count=10)
    desktop = Product.create(business=business, mode="test", name="Desktop", price=9900,
                             currency="EUR", license_key_enabled=True, license_key_activations_limit=3)
    key = LicenseKey.create(business=business, mode="test", customer=customer, product=desktop,
                            key="7K3QF-XM2PA-9RTVW-4HJKN-BC8DE", activations_limit=3)
    licensing.activate(key.key, "Work laptop")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served)
    violations = csp_violations(page)
    shot = lambda name: page.screenshot_as(f"portal-{name}-{lang}")  # noqa: E731

    page.goto(auth.sign_in_link(customer))
    page.locator("form[data-continue] button").click()
    page.wait_for_url(f"{served}/portal/")
    expect(page.get_by_role("heading", name=words["hello"])).to_be_visible()
    expect(page.get_by_role("heading", name=words["on_hold"])).to_be_visible()
    shot("overview")

    page.get_by_role("link", name=words["billing"], exact=True).click()
    expect(page.get_by_role("heading", name=words["history"])).to_be_visible()
    shot("billing")

    # The six steps: subscription → Edit → a new card on the provider's page → Confirm → done.
    page.goto(f"{served}/portal/subscriptions/{sub.id}")
    shot("subscription-on-hold")
    page.get_by_role("link", name=words["update"]).first.click()
    shot("payment-method")
    page.get_by_role("button", name=words["add"]).click()
    add_test_card(page)
    expect(page.get_by_text(words["added"])).to_be_visible()
    shot("card-added")
    page.get_by_role("button", name=words["confirm"]).click()
    expect(page.get_by_role("heading", name=words["active_again"])).to_be_visible()
    shot("reactivated")

    # Change plan: preview, then confirm (an upgrade is charged now).
    page.goto(f"{served}/portal/subscriptions/{sub.id}")
    page.get_by_role("link", name=words["change_plan"]).click()
    shot("plans")
    page.get_by_role("button", name=words["see_price"]).click()
    expect(page.get_by_text(words["due_now"])).to_be_visible()
    shot("plan-preview")
    page.get_by_role("button", name=words["confirm_plan"]).click()
    expect(page.get_by_role("heading", name=words["plan_changed"])).to_be_visible()
    assert sub.refresh().product_id == team.id

    # Cancel at the end of the period, after a confirmation; then keep it after all.
    page.goto(f"{served}/portal/subscriptions/{sub.id}")
    page.get_by_role("link", name=words["cancel"]).click()
    expect(page.get_by_role("heading", name=words["cancel_title"])).to_be_visible()
    shot("cancel")
    page.get_by_role("button", name=words["confirm_cancel"]).click()
    expect(page.get_by_role("button", name=words["keep"])).to_be_visible()
    assert sub.refresh().cancel_at_next_billing_date
    shot("subscription-ending")
    page.get_by_role("button", name=words["keep"]).click()
    expect(page.get_by_role("button", name=words["keep"])).to_have_count(0)
    assert not sub.refresh().cancel_at_next_billing_date

    page.get_by_role("link", name=words["licenses"], exact=True).click()
    copy = page.locator(f"button[data-copy=key-{key.id}]")
    expect(copy).to_have_text(words["copy"])
    copy.click()
    expect(copy).to_have_text(words["copied"])
    assert page.evaluate("navigator.clipboard.readText()") == key.key
    shot("licenses")
    page.get_by_role("button", name=f"{words['deactivate']} Work laptop").click()
    expect(page.get_by_text("Work laptop", exact=True)).to_have_count(0)
    assert key.refresh().instances_count == 0

    page.get_by_role("link", name=words["profile"], exact=True).click()
    page.get_by_label(words["phone"]).fill("+33 6 12 34 56 78")
    page.get_by_role("button", name=words["save"]).click()
    expect(page.get_by_text(words["saved"])).to_be_visible()
    assert customer.refresh().phone_number == "+33612345678"
    shot("profile")
    assert violations == []


def test_a_customer_adds_a_seat_after_seeing_its_price(served, page, customer, product, subscribe):
    sub, _ = subscribe(customer, product, quantity=2)
    due = billing.preview_plan_change(sub, product, 3).amount_due
    violations = csp_violations(page)

    page.goto(auth.sign_in_link(customer))
    page.locator("form[data-continue] button").click()
    page.wait_for_url(f"{served}/portal/")
    page.goto(f"{served}/portal/subscriptions/{sub.id}")
    page.get_by_role("link", name="Change quantity").click()
    page.get_by_label("Quantity").fill("3")
    page.get_by_role("button", name="See the price").click()
    expect(page.locator(".due-now")).to_have_text(f"€{due / 100:.2f}")
    expect(page.locator(".then")).to_have_text("€54.00 every month")
    page.screenshot_as("portal-seats-preview-en")
    page.get_by_role("button", name="Confirm the change").click()
    expect(page.get_by_role("heading", name="Your subscription is changed")).to_be_visible()
    expect(page.get_by_text("You now have Pro × 3.")).to_be_visible()
    assert Payment.get(Payment.kind == "plan_change").amount == due == charges()[-1].amount
    assert sub.refresh().quantity == 3
    page.get_by_role("link", name="View the subscription").click()
    expect(page.locator(".next-payment")).to_contain_text("€54.00")
    assert violations == []


def test_the_language_switch_turns_the_sign_in_page_and_portal_french(served, page, business,
                                                                       customer):
    page.goto(f"{served}/test/login/{business.id}")
    page.get_by_label("Language").select_option(label="Français")
    expect(page.get_by_role("heading", name="Connexion à Acme Software")).to_be_visible()
    page.screenshot_as("sign-in-fr")
    page.goto(auth.sign_in_link(customer))
    page.locator("form[data-continue] button").click()
    page.wait_for_url(f"{served}/portal/")
    expect(page.get_by_role("heading", name="Bonjour Ann Example")).to_be_visible()
    page.get_by_label("Langue").select_option(label="English")
    expect(page.get_by_role("heading", name="Hello Ann Example")).to_be_visible()
    assert customer.refresh().preferred_locale == "en"


# --- The on-hold flow with a real worker -------------------------------------------------------------


@pytest.fixture
def worker_app(make_app, redis_url, cli_env, inbox):
    """The portal on a real RQ queue of its own and a real SMTP server, served over HTTP, and a
    ``portico worker`` process (started by the test) working that queue."""
    from werkzeug.serving import make_server

    queue_name = f"test-{uuid.uuid4().hex[:8]}"
    smtp = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": inbox.port, "SMTP_STARTTLS": False}
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": queue_name, **smtp})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    app.config["BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
    env = {**os.environ, **cli_env, "PORTICO_REDIS_URL": redis_url, "PORTICO_QUEUE_NAME": queue_name,
           "PORTICO_SMTP_HOST": "127.0.0.1", "PORTICO_SMTP_PORT": str(inbox.port),
           "PORTICO_SMTP_STARTTLS": "false", "PORTICO_BASE_URL": app.config["BASE_URL"]}
    workers = []

    def start_worker():
        workers.append(subprocess.Popen([sys.executable, "-m", "core.cli", "worker"], cwd=ROOT,
                                        env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=dies_with_this_run))

    app.start_worker = start_worker
    yield app
    for worker in workers:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    server.shutdown()
    with app.app_context():
        jobs.queue().empty()


def wait_for(condition, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_an_on_hold_subscription_is_reactivated_through_a_real_worker(worker_app, page, customer,
                                                                     on_hold, save_card, inbox):
    sub = on_hold()
    declined = save_card(customer, "pm_card_chargeDeclined")
    served = worker_app.config["BASE_URL"]
    with worker_app.app_context():
        link = auth.sign_in_link(customer, next=f"/portal/subscriptions/{sub.id}/payment-method")
    page.goto(link)
    page.locator("form[data-continue] button").click()
    page.wait_for_url(f"{served}/portal/subscriptions/{sub.id}/payment-method")

    page.locator(f"input[value={declined.id}]").check()
    page.get_by_role("button", name="Confirm changes").click()
    expect(page.get_by_role("heading", name="Processing your payment…")).to_be_visible()
    page.screenshot_as("portal-progress-en")
    worker_app.start_worker()  # the page moves on by itself once the job has run
    expect(page.get_by_role("heading", name="The payment did not go through")).to_be_visible(
        timeout=60_000)
    expect(page.get_by_role("alert")).to_contain_text("Your card was declined.")
    page.screenshot_as("portal-declined-en")
    assert sub.refresh().status == "on_hold"

    page.get_by_role("link", name="Use another payment method").click()
    page.get_by_role("button", name="Add a new card").click()
    add_test_card(page)
    page.get_by_role("button", name="Confirm changes").click()
    expect(page.get_by_role("heading", name="Your subscription is active again")).to_be_visible(
        timeout=60_000)

    arrears = [c for c in charges(status=None) if c.idempotency_key.startswith("arrears:")]
    assert [c.status for c in arrears] == ["declined", "succeeded"]
    paid = Payment.get((Payment.kind == "arrears") & (Payment.status == "succeeded"))
    assert Invoice.select().join(Payment).where(Payment.kind == "arrears").count() == 1
    assert Invoice.get(Invoice.payment == paid).total == paid.amount
    sub = sub.refresh()
    assert sub.status == "active" and sub.next_billing_date > utcnow() + timedelta(days=27)
    wait_for(lambda: len(inbox.messages()) == 2)  # the decline was on screen: no e-mail for it
    subjects = sorted(m["Subject"] for m in inbox.messages())
    assert subjects == ["Receipt for your payment to Acme Software", "Your Pro subscription is active"]
    assert all(m["To"].addresses[0].addr_spec == "ann@example.com" for m in inbox.messages())


# --- Deep links into one flow ------------------------------------------------------------------------


FLOWS = {  # flow type: (where it lands, how the customer completes it)
    "payment_method_update": ("/portal/subscriptions/{sub}/payment-method",
                              lambda page: (page.get_by_role("button", name="Add a new card").click(),
                                            add_test_card(page),
                                            page.get_by_role("button", name="Confirm changes").click())),
    "subscription_cancel": ("/portal/subscriptions/{sub}/cancel",
                            lambda page: page.get_by_role("button", name="Confirm cancellation").click()),
    "subscription_update": ("/portal/subscriptions/{sub}/plan",
                            lambda page: (page.get_by_role("button", name="See the price").click(),
                                          page.get_by_role("button", name="Confirm plan change").click(),
                                          page.get_by_role("link", name="Continue").click())),
    "subscription_update_confirm": (
        "/portal/subscriptions/{sub}/plan/{team}",
        lambda page: (page.get_by_role("button", name="Confirm plan change").click(),
                      page.get_by_role("link", name="Continue").click())),
    "customer_update": ("/portal/profile",
                        lambda page: (page.get_by_label("Phone").fill("+33 6 12 34 56 78"),
                                      page.get_by_role("button", name="Save").click())),
}
ENDINGS = {"payment_method_update": "hosted_confirmation", "subscription_cancel": "redirect",
           "subscription_update": "portal_homepage", "subscription_update_confirm": "hosted_confirmation",
           "customer_update": "redirect"}


@pytest.mark.parametrize("kind", FLOWS)
def test_a_deep_link_lands_in_its_flow_which_ends_where_the_merchant_said(served, page, api, business,
                                                                          customer, product, subscribe,
                                                                          kind):
    sub, _ = subscribe(customer, product)
    team = Product.create(business=business, mode="test", name="Team", price=4500, currency="EUR",
                          is_recurring=True)
    ending = ENDINGS[kind]
    after = {"type": ending, "url": f"{served}/healthz" if ending == "redirect" else None,
             "message": "Thank you, all set." if ending == "hosted_confirmation" else None}
    flow = {"type": kind, "subscription_id": sub.id if kind != "customer_update" else None,
            "product_id": team.id if kind == "subscription_update_confirm" else None,
            "quantity": 2 if kind == "subscription_update_confirm" else None}
    answer = api.post(f"/customers/{customer.id}/customer-portal/session?return_url={served}/healthz",
                      {"flow": {k: v for k, v in flow.items() if v is not None},
                       "after_completion": {k: v for k, v in after.items() if v is not None}})
    landing, complete = FLOWS[kind]
    violations = csp_violations(page)

    page.goto(answer.json["link"])
    page.locator("form[data-continue] button").click()
    page.wait_for_url(re.compile(re.escape(served + landing.format(sub=sub.id, team=team.id))))
    expect(page.locator("nav.portal-nav a")).to_have_count(0)  # only this flow: no way elsewhere
    page.screenshot_as(f"portal-flow-{kind}-en")
    complete(page)
    if ending == "redirect":
        page.wait_for_url(f"{served}/healthz")
    elif ending == "portal_homepage":
        page.wait_for_url(f"{served}/portal/")
        expect(page.get_by_role("link", name="Billing", exact=True)).to_be_visible()
    else:
        expect(page.get_by_role("heading", name="All done")).to_be_visible()
        expect(page.get_by_text("Thank you, all set.")).to_be_visible()
        expect(page.get_by_role("link", name="Return to Acme Software", exact=True)).to_be_visible()
        page.goto(f"{served}/portal/billing")
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    assert violations == []
