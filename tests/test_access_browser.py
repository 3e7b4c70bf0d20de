"""Customer access in headless Chromium: the static link and the e-mailed link (through a real
SMTP server), and the merchant's "Share invite" link opened in a fresh browser."""

import re
from pathlib import Path

import pytest
from conftest import csp_violations
from playwright.sync_api import expect

from core import auth
from core.auth import create_merchant_user
from core.models import PortalSession, PortalToken

pytestmark = pytest.mark.browser
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"


@pytest.fixture
def app(make_app, inbox):
    """The portal, sending its e-mails by SMTP to ``inbox``."""
    app = make_app({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": inbox.port, "SMTP_STARTTLS": False})
    with app.app_context():
        yield app


def test_customer_signs_in_with_the_link_emailed_from_the_static_link(served, browser, page, business,
                                                                    customer, inbox):
    violations = csp_violations(page)
    page.goto(f"{served}/test/login/{business.id}")
    expect(page.get_by_role("heading", name="Sign in to Acme Software")).to_be_visible()
    page.screenshot_as("static-link")
    page.get_by_label("E-mail address").fill("ann@example.com")
    page.get_by_role("button", name="Send me a sign-in link").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    page.screenshot_as("static-link-sent")

    [message] = inbox.messages()
    assert message["To"].addresses[0].addr_spec == "ann@example.com"
    text = message.get_body(("plain",)).get_content()
    link = re.search(r"http://127\.0\.0\.1:\d+/session/[A-Za-z0-9_-]+", text)[0]

    scanner = browser.new_context(java_script_enabled=False)  # a mail scanner, or a browser without script
    preview = scanner.new_page()
    preview.goto(link)
    expect(preview.get_by_role("button", name="Continue to your account")).to_be_visible()
    preview.set_viewport_size({"width": 375, "height": 700})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    preview.screenshot(path=str(SCREENSHOTS / "sign-in-continue-375.png"), full_page=True)
    scanner.close()
    assert PortalSession.select().count() == 0

    page.goto(link)
    page.get_by_role("button", name="Continue to your account").click()  # the one click
    page.wait_for_url(f"{served}/portal/")
    expect(page.get_by_role("heading", name="Hello Ann Example")).to_be_visible()
    assert "/session/" not in page.url
    page.screenshot_as("portal-home")
    assert violations == []


def test_merchant_shares_a_dynamic_link_that_opens_the_portal_in_a_fresh_browser(served, browser, page,
                                                                                  business, customer):
    create_merchant_user(business, "owner@acme.test", "correct horse battery")
    violations = csp_violations(page)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served)
    page.goto(f"{served}/dashboard")
    page.screenshot_as("dashboard-sign-in")
    page.get_by_label("E-mail address").fill("owner@acme.test")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Customers")).to_be_visible()
    page.screenshot_as("dashboard-customers")

    page.get_by_role("link", name="Ann Example").click()
    expect(page.get_by_role("heading", name="Share invite")).to_be_visible()
    page.get_by_role("button", name="Generate dynamic link").click()
    copy = page.locator("button[data-copy=dynamic-link]")
    copy.click()
    expect(copy).to_have_text("Copied")
    link = page.evaluate("navigator.clipboard.readText()")
    assert link == page.locator("#dynamic-link").input_value()
    assert link.startswith(f"{served}/session/")
    page.screenshot_as("dashboard-share-invite")

    customer_browser = browser.new_context()
    customer_page = customer_browser.new_page()
    customer_page.goto(link)
    customer_page.get_by_role("button", name="Continue to your account").click()
    customer_page.wait_for_url(f"{served}/portal/")
    expect(customer_page.get_by_role("heading", name="Hello Ann Example")).to_be_visible()
    customer_browser.close()
    assert violations == []



@pytest.mark.parametrize("purpose", ["sign_in", "email_change"])
def test_a_scanner_running_the_pages_scripts_uses_up_no_link_and_the_person_needs_one_click(
        served, browser, page, customer, purpose):
    """Link scanners in corporate mail open links in a real browser and run their scripts,
    clicking nothing: the link must still work for the person, with one click."""
    if purpose == "sign_in":
        link, button, landing = auth.sign_in_link(customer), "Continue to your account", "/portal/"
    else:
        raw = auth.issue_token(customer, "email_change", 3600, {"new_email": "ann.new@example.com"})
        link, button, landing = f"{served}/email/confirm/{raw}", "Confirm my new address", "/portal/"

    scanner = browser.new_context()  # JavaScript on, as in a scanner's "detonation" browser
    preview = scanner.new_page()
    preview.goto(link, wait_until="networkidle")
    preview.wait_for_timeout(1000)
    assert preview.url == link
    expect(preview.get_by_role("button", name=button)).to_be_visible()
    scanner.close()
    assert PortalSession.select().count() == 0
    assert PortalToken.get().used_at is None and customer.refresh().email == "ann@example.com"

    page.goto(link)
    page.get_by_role("button", name=button).click()
    page.wait_for_url(f"{served}{landing}")
    expect(page.get_by_role("heading", name="Hello Ann Example")).to_be_visible()
    assert PortalSession.select().count() == 1
    if purpose == "email_change":
        assert customer.refresh().email == "ann.new@example.com"


def test_a_french_customer_who_signs_out_finds_the_way_back_in_french(served, page, business,
                                                                      customer):
    """After "Sign out" (which clears the site's cookies), the page and later ``/portal/`` are
    the business's, in the customer's language, with its sign-in page one click away."""
    from core.models import Customer

    Customer.update(preferred_locale="fr").where(Customer.id == customer.id).execute()
    page.goto(auth.sign_in_link(customer))
    page.locator("form[data-continue] button").click()
    expect(page.get_by_role("heading", name="Bonjour Ann Example")).to_be_visible()
    page.locator("form.signout button").click()
    expect(page.get_by_role("heading", name="Vous êtes déconnecté")).to_be_visible()
    expect(page.locator(".brand")).to_have_text("Acme Software")
    page.screenshot_as("signed-out-fr")

    page.goto(f"{served}/portal/")
    expect(page.get_by_role("heading", name="Connexion à Acme Software")).to_be_visible()
    assert page.url == f"{served}/test/login/{business.id}"
    page.goto(f"{served}/signed-out")  # the same page, reached again, keeps the way back
    page.get_by_role("link", name="Se reconnecter").click()
    expect(page.get_by_role("heading", name="Connexion à Acme Software")).to_be_visible()
