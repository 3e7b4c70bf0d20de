"""Customer access in headless Chromium: the static link and the e-mailed link (through a real
SMTP server), and the merchant's "Share invite" link opened in a fresh browser."""

import re
from pathlib import Path

import pytest
from conftest import csp_violations
from playwright.sync_api import expect

from core.auth import create_merchant_user
from core.models import PortalSession

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

    page.goto(link)  # the script continues by itself
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
    customer_page.wait_for_url(f"{served}/portal/")
    expect(customer_page.get_by_role("heading", name="Hello Ann Example")).to_be_visible()
    customer_browser.close()
    assert violations == []

